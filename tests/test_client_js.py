"""The browser client's own unit tests (tests/js/*.test.mjs, on
node:test) run as part of the suite, so `make test` counts them."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "js"


def test_the_browser_clients_unit_tests_pass_under_node():
    node = shutil.which("node")
    if node is None:
        # In CI (`make test` as root installs it) a missing Node is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "node not found: install the Debian/Ubuntu package `nodejs` (make test does)"
        )
    # Files, not the directory: newer Node versions take globs, older ones directories.
    files = sorted(str(path) for path in TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs in {TESTS}"
    result = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    output = result.stdout + result.stderr
    summary = {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail) (\d+)$", output, re.M)}
    assert result.returncode == 0, output[-6000:]
    assert summary.get("fail") == 0 and summary.get("pass", 0) > 0, output[-6000:]
    assert summary["pass"] == summary["tests"], output[-6000:]
