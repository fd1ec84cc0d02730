"""
Provides install(): a server process's garbage collector, paced so that a
process holding thousands of connections does not stop for a full
collection each time it grows by a quarter.

A process opts in by calling install() (the demo's project/asgi.py does;
docs/integration.md recommends it for server processes): the collector is
the whole process's, the site's too, so importing the package never
changes it.

Python's collector scans every tracked object in a full (generation 2)
collection, and runs one whenever the objects promoted since the last grew
by 25 %. A connection here holds ~260 tracked objects, so at 3,000
connections a full collection scans ~800,000 objects and stops the event
loop for 0.4–0.6 s; a process growing from 0 to 3,000 connections runs nine
(about 2 s of CPU, a quarter of the connections' setup), and every frame in
flight waits through each.

Paced: whatever survives a full collection is frozen (gc.freeze), so the
next scans only what came since: each full collection costs what is new,
not what is there. A frozen object is never collected, so cycles among
them (a closed connection's, ~20 objects) would stay; at most every
`GC_FULL_COLLECTION_SECONDS` the next full collection thaws everything first
and scans it all, collecting them. Memory held by such cycles is bounded by
what that many seconds of closed connections leave.
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
