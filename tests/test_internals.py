"""django_realtime/internals.py: every private name of another library the
package relies on is checked at start-up, and a missing one refuses to start,
naming it. Each case removes a name (or changes a copied function) in a
subprocess, as an upgrade would, and imports the WebSocket routing."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from django_realtime import internals

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, inspect, sys
import django
django.setup()
from django.core.exceptions import ImproperlyConfigured
module, path, name = sys.argv[1:4]
target = importlib.import_module(module)
for part in filter(None, path.split(".")):
    target = getattr(target, part)
if name == "<source>":
    # A new upstream version of a copied function: same name, other source.
    owner_path, _, func = path.rpartition(".")
    owner = importlib.import_module(module)
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    namespace = {}
    exec("async def " + func + "(self, message):\\n    return 'changed upstream'", namespace)
    setattr(owner, func, namespace[func])
elif path.endswith("__init__"):
    # An attribute a constructor sets: a constructor that no longer sets it.
    owner = importlib.import_module(module)
    for part in path.split(".")[:-1]:
        owner = getattr(owner, part)
    def __init__(self, *args, **kwargs):
        pass
    owner.__init__ = __init__
elif inspect.isfunction(target):
    # A function that no longer says what the package relies on.
    target.__code__ = (lambda *args, **kwargs: None).__code__
else:
    for owner in (target.__mro__ if isinstance(target, type) else [target]):
        if name in vars(owner):
            delattr(owner, name)
from django.core import checks
ids = sorted({m.id for m in checks.run_checks() if m.id.startswith("realtime.")})
print("checks:", ids)
try:
    importlib.import_module("chat.routing")
    print("started")
except ImproperlyConfigured as exc:
    print("refused:", exc)
"""


def run_check(module: str, path: str, name: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module, path, name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_installed_versions_have_everything():
    assert internals.problems() == []


@pytest.mark.parametrize(
    "entry",
    internals.LAYER_INTERNALS
    + internals.ASGIREF_INTERNALS
    + internals.CHANNELS_INTERNALS
    + internals.SOURCE_INTERNALS,
    ids=lambda entry: ".".join(filter(None, entry)),
)
def test_a_missing_name_refuses_to_start_naming_it(entry):
    module, path, name = entry
    out = run_check(module, path, name)
    dotted = ".".join(filter(None, (module, path, name)))
    assert "refused:" in out and dotted in out, out
    assert "realtime.E009" in out  # manage.py check says so too


@pytest.mark.parametrize("copied", sorted(internals.COPIED), ids=lambda c: f"{c[0]}.{c[1]}")
def test_a_copied_function_that_changed_upstream_refuses_to_start(copied):
    module, path = copied
    out = run_check(module, path, "<source>")
    assert "refused:" in out and f"{module}.{path} (source" in out, out


def test_with_nothing_missing_it_starts():
    out = run_check("json", "", "no-such-name")
    assert "started" in out and "realtime.E009" not in out, out
