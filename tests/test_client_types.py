"""client.d.ts types client.js for a TypeScript site (contract §0): a file
using every part of the client type-checks under `tsc --strict`, and one
reading a field a message frame lacks does not."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TSC = ROOT / "node_modules" / ".bin" / "tsc"


def tsc(project: str) -> subprocess.CompletedProcess:
    if not TSC.exists():
        # `make test` installs node_modules (npm ci); in CI a missing tsc is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "node_modules/.bin/tsc missing: `make install` runs `npm ci`"
        )
    return subprocess.run(
        [str(TSC), "-p", project], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_typescript_site_using_the_client_type_checks_strictly():
    result = tsc("tsconfig.json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_field_a_message_frame_lacks_is_a_type_error():
    result = tsc("tests/js/types_fail")
    assert result.returncode != 0
    assert "lacks_a_field.ts(4," in result.stdout, result.stdout
    assert "Property 'body' does not exist on type 'MessageFrame'" in result.stdout
