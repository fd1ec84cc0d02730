"""One close-code enumeration, and docs/protocol.md's one table of it."""

import re
from pathlib import Path

from django_realtime.closecodes import CloseCode

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def documented() -> set[tuple[int, str]]:
    text = PROTOCOL.read_text()
    section = text.split("\n## Close codes\n", 1)[1].split("\n## ", 1)[0]
    return {
        (int(code), name) for code, name in re.findall(r"^\| (\d{4}) \| `(\w+)` \|", section, re.M)
    }


def test_the_protocol_table_lists_every_close_code_by_its_name():
    assert documented() == {(int(code), code.name) for code in CloseCode}


def test_close_codes_are_ints_with_their_reasons():
    assert CloseCode.OUTPUT_OVER_LIMIT == 4413
    assert CloseCode(4401) is CloseCode.UNAUTHENTICATED
    assert CloseCode.FLOODING.reason == "policy: too many requests"
    assert CloseCode.TRY_AGAIN.reason == "try again later"


def test_no_module_defines_a_close_code_of_its_own():
    root = PROTOCOL.parent.parent
    own = re.compile(r"^\s*\w*CLOSE\w* = (1\d{3}|4\d{3})\b", re.M)
    offenders = [
        str(path.relative_to(root))
        for package in ("chat", "django_realtime", "presence", "notifications")
        for path in (root / package).rglob("*.py")
        if own.search(path.read_text())
    ]
    assert offenders == []
