"""django_realtime/collector.py: in a server process that opts in (the demo's
asgi.py calls install()), what survives a full garbage collection is frozen,
so later ones skip it, and cycles among the frozen are still collected within
GC_FULL_COLLECTION_SECONDS; importing the package's routing alone changes
nothing of a process's collector. Each case runs in a subprocess, so this
one's collector is left as it is."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROUTING = """
import gc
import django
django.setup()
before = (gc.get_threshold(), gc.get_freeze_count(), len(gc.callbacks))
import chat.routing  # noqa: F401  (prepares the server, as a site's asgi.py does)
from django_realtime import collector
after = (gc.get_threshold(), gc.get_freeze_count(), len(gc.callbacks))
print("unchanged" if before == after and not collector.installed() else f"{before} -> {after}")
"""

DEMO_SERVER = """
import project.asgi  # noqa: F401  (what daphne and uvicorn load)
from django_realtime import collector
print("paced" if collector.installed() else "python's own")
"""

CYCLES = """
import gc, sys, time, weakref
from django_realtime import collector

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)

collector.install(float(sys.argv[1]))
old, old_ref = cycle()
gc.collect()  # it survives a full collection: frozen
del old
young, young_ref = cycle()
del young
gc.collect()
print("young cycle collected:", young_ref() is None)
print("frozen cycle kept:", old_ref() is not None)
time.sleep(float(sys.argv[1]))
gc.collect()  # the first full collection past the interval scans everything
print("frozen cycle collected later:", old_ref() is None)
"""


def run(code: str, *args: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("every", ["600", "0"])
def test_importing_the_routing_leaves_the_collector_alone(every):
    """A management command, a worker or a site's tests that import the
    routing keep Python's own collector: no freeze, no callback, the same
    thresholds, whatever GC_FULL_COLLECTION_SECONDS says."""
    assert run(ROUTING, GC_FULL_COLLECTION_SECONDS=every).strip() == "unchanged"


@pytest.mark.parametrize(("every", "expected"), [("600", "paced"), ("0", "python's own")])
def test_the_demos_server_process_opts_in_unless_turned_off(every, expected):
    assert run(DEMO_SERVER, GC_FULL_COLLECTION_SECONDS=every).strip() == expected


def test_this_test_process_keeps_pythons_own():
    import chat.routing  # noqa: F401  (prepares, as in a server)
    from django_realtime import collector

    assert not collector.installed()


def test_cycles_are_collected_young_at_once_and_frozen_ones_within_the_interval():
    assert run(CYCLES, "0.3").splitlines() == [
        "young cycle collected: True",
        "frozen cycle kept: True",
        "frozen cycle collected later: True",
    ]
