"""
Provides the one rule for text that clients send, on the WebSocket and REST
alike: no string anywhere in a frame or a JSON body, keys included, may hold
NUL (PostgreSQL cannot store it, and a lookup with it fails) or a lone
surrogate (`"\\ud800"` is valid JSON but not Unicode: it can be neither stored
nor sent back). Either is BAD_REQUEST, before anything else looks at the data.
"""

from typing import Any

from rest_framework.parsers import JSONParser

from django_realtime.errors import BadRequest


def check_text(value: Any) -> None:
    """BadRequest if any string in `value` holds NUL or a lone surrogate.
    Iterative, so that nesting as deep as the JSON parser allows is fine."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise BadRequest("text must not contain NUL characters")
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadRequest("text is not valid Unicode (lone surrogate)") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class StrictJSONParser(JSONParser):
    """DRF's JSON parser (NaN and Infinity refused), plus check_text."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        check_text(data)
        return data
