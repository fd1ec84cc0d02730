"""
Provides rates as settings spell them: "20/10s", "1/1s", "60/min", "off".
"""

import functools
import re
from dataclasses import dataclass

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|m|min|h|hour)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    count: int
    period_seconds: float


@functools.lru_cache(maxsize=256)  # read on every limited frame; settings rarely change
def parse_rate(text: str) -> Rate | None:
    """'20/10s' -> Rate(20, 10.0); 'off' -> None (no limit)."""
    if text.strip().lower() in {"off", "none", "0", ""}:
        return None
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError(f"bad rate {text!r}; use e.g. '20/10s', '60/min' or 'off'")
    count, multiplier, unit = match.groups()
    return Rate(int(count), float(multiplier or 1) * _UNIT_SECONDS[unit])
