"""The settings a site sets apart from the tuning knobs, in conf.py's DEFAULTS
and in docs/integration.md's two tables."""

import re
from pathlib import Path

from django_realtime.conf import DEFAULTS, SITE_SETTINGS

DOC = Path(__file__).resolve().parents[1] / "docs" / "integration.md"


def table_keys(section: str) -> list[str]:
    text = DOC.read_text().split(f"\n### {section}\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `([A-Z_]+)` \|", text, re.M)


def test_a_site_sees_its_settings_first_and_the_tuning_after():
    assert list(DEFAULTS)[: len(SITE_SETTINGS)] == list(SITE_SETTINGS)
    assert table_keys("Settings a site sets") == list(SITE_SETTINGS)


def test_every_tuning_knob_is_documented():
    documented = set(table_keys("Tuning")) | set(
        re.findall(r"^\| `(DOCS_[A-Z_]+)` \|", DOC.read_text(), re.M)
    )
    assert set(DEFAULTS) - set(SITE_SETTINGS) == documented
