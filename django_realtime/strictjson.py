"""
Provides the one rule for text that clients send, on the WebSocket and REST
alike: no string anywhere in a frame or a JSON body, keys included, may hold
NUL (PostgreSQL cannot store it, and a lookup with it fails) or a lone
surrogate (`"\\ud800"` is valid JSON but not Unicode: it can be neither stored
nor sent back). Either is BAD_REQUEST, before anything else looks at the data.

(docs/architecture.md, "Why the modules are as they are")
"""

from typing import Any

from rest_framework.parsers import JSONParser

from django_realtime.errors import BadRequest

# Arrays and objects within each other; no message, frame or setting needs
# more than a few.
MAX_DEPTH = 64
TOO_DEEP = f"JSON is nested too deep (more than {MAX_DEPTH} levels)"


def check_text(value: Any) -> None:
    """BadRequest if any string in `value` holds NUL or a lone surrogate, or
    if it nests deeper than MAX_DEPTH. Iterative (level by level), so that
    nesting as deep as the JSON parser allows is fine."""
    level = [value]
    depth = 0
    while level:
        below: list = []
        for item in level:
            if isinstance(item, str):
                if "\x00" in item:
                    raise BadRequest("text must not contain NUL characters")
                if not item.isascii():
                    try:
                        item.encode("utf-8")
                    except UnicodeEncodeError:
                        raise BadRequest("text is not valid Unicode (lone surrogate)") from None
            elif isinstance(item, dict):
                if depth >= MAX_DEPTH:
                    raise BadRequest(TOO_DEEP)
                below.extend(item.keys())
                below.extend(item.values())
            elif isinstance(item, list):
                if depth >= MAX_DEPTH:
                    raise BadRequest(TOO_DEEP)
                below.extend(item)
        depth += 1
        level = below


class StrictJSONParser(JSONParser):
    """DRF's JSON parser (NaN and Infinity refused), plus check_text; a body
    nested past the parser's stack is 400 too, not a RecursionError."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise BadRequest(TOO_DEEP) from None
        check_text(data)
        return data
