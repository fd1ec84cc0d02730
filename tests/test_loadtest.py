"""The load tool itself (bench/loadtest.py): it counts what it claims to count.
Timings are its output, never asserted here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, "bench/loadtest.py", "--no-pin", "--json", str(out), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return json.loads(out.read_text())["results"]


@pytest.mark.parametrize("target", ["bare", "realtime"])
def test_the_load_tool_counts_every_delivery_once(tmp_path, target):
    """20 clients in 2 rooms, one sender each at 5/s for 2 s: every message is
    owed to all 10 members of its room, and every one arrives, once, in order."""
    (result,) = run_tool(
        tmp_path,
        "--target",
        target,
        "--clients",
        "20",
        "--rooms",
        "2",
        "--rate",
        "5",
        "--duration",
        "2",
        "--drain",
        "10",
    )
    assert result["connected"] == 20
    assert result["sent"] > 0
    assert result["expected"] == result["sent"] * 10
    assert result["delivered"] == result["expected"]
    assert result["loss_percent"] == 0 and result["duplicates"] == 0
    assert result["out_of_order"] == 0
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max", "mean"}
    assert result["server_rss_mb"] > 0


def test_the_load_tool_measures_a_reconnect_storm(tmp_path):
    (result,) = run_tool(
        tmp_path,
        "--target",
        "realtime",
        "--mode",
        "storm",
        "--clients",
        "20",
        "--rooms",
        "2",
        "--storm-messages",
        "5",
    )
    assert result["expected"] == 20 * 5
    assert result["delivered"] == result["expected"] and result["duplicates"] == 0
    assert result["extra"]["recovered_seconds"] > 0


def test_the_load_tool_spreads_clients_over_server_processes(tmp_path):
    """Two daphne processes on one Redis: each room's members are split
    between them, so every delivery to the other half crossed processes."""
    (result,) = run_tool(
        tmp_path,
        "--target",
        "realtime",
        "--processes",
        "2",
        "--clients",
        "20",
        "--rooms",
        "2",
        "--rate",
        "5",
        "--duration",
        "2",
    )
    assert result["processes"] == 2 and result["connected"] == 20
    assert result["sent"] > 0 and result["delivered"] == result["expected"] == result["sent"] * 10
    assert result["loss_percent"] == 0 and result["duplicates"] == 0
    assert result["out_of_order"] == 0
