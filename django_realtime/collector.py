"""
Provides install(): a server process's garbage collector, paced (an opt-in,
the collector being the whole process's): what survives a full collection is
frozen so the next scans only what is new, and everything is thawed and
scanned at most every GC_FULL_COLLECTION_SECONDS. Why: docs/architecture.md,
"collector"; the pauses it avoids: docs/performance.md.
"""

import gc
import time

from .conf import realtime_settings

_state: dict[str, float] = {}


def install(full_every_seconds: float | None = None) -> None:
    """Pace this process's collector, scanning everything at most every
    `full_every_seconds` (default: GC_FULL_COLLECTION_SECONDS; 0 leaves
    Python's own pacing). Idempotent; the last interval counts. The objects
    alive now (the site's modules, settings and apps) are frozen at once."""
    if full_every_seconds is None:
        full_every_seconds = float(realtime_settings.GC_FULL_COLLECTION_SECONDS)
    if not full_every_seconds:
        return
    _state["every"] = full_every_seconds
    if "last_full" not in _state:
        _state["last_full"] = time.monotonic()
        gc.callbacks.append(_paced)
        gc.collect()
        gc.freeze()


def installed() -> bool:
    return "last_full" in _state


def _paced(phase: str, info: dict) -> None:
    if info["generation"] != 2:
        return
    if phase == "start":
        now = time.monotonic()
        if now - _state["last_full"] >= _state["every"]:
            _state["last_full"] = now
            gc.unfreeze()  # this collection scans everything, cycles among the frozen too
    else:
        gc.freeze()
