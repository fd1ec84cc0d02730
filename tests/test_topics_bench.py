"""The live-data bench itself (bench/topics.py): it counts what it claims to
count, for the project's server and for the bare floor beside it. Timings
are its output, never asserted here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", ["bare", "realtime"])
def test_the_topics_bench_counts_every_publication_once(tmp_path, target):
    """30 subscribers (26 read in a Node process, 4 stop reading for a second)
    of one process, 20 publications/s over 20 keys for 3 s: every reader ends
    with every publication once, in order, and the latest of every key."""
    out = tmp_path / "runs.json"
    subprocess.run(
        [
            sys.executable,
            "bench/topics.py",
            "--target",
            target,
            "--scales",
            "30x20x4",
            "--duration",
            "3",
            "--stall-seconds",
            "1",
            "--processes",
            "1",
            "--node-readers",
            "1",
            "--no-pin",
            "--drain",
            "20",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
    )
    (run,) = json.loads(out.read_text())["runs"]
    assert run["target"] == target
    assert run["published"] == 60 and run["publish_errors"] == 0
    assert run["readers"] == 26
    assert run["readers_latest"] == 26 and run["resumed_latest"] == 4
    assert run["readers_missed_max"] == 0 and run["resumed_missed_max"] == 0
    assert run["delivered"] == 30 * 60
    assert run["duplicates"] == 0 and run["out_of_order"] == 0
    assert run["latency_ms"]["p99"] > 0
