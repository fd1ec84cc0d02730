"""
The wheel's one build step beyond pyproject.toml: the room page's Notes panel
is a bundle of notes.js with Yjs and y-websocket (package.json), built by
esbuild, never committed. `make install` builds it; so does building the
wheel (`pip install <a clone>`, `pip wheel .`) when it is missing and npm is
on the PATH (`npm ci` first if node_modules is missing). Without npm the
wheel carries notes-unavailable.js in its place, and says so: the page then
shows the Notes panel as unavailable, and everything else works.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLE = Path("chat/static/realtime/build/notes.bundle.js")
FALLBACK = Path("chat/static/realtime/notes-unavailable.js")


def say(message: str) -> None:
    print(f"django-realtime: {message}", file=sys.stderr, flush=True)


def build_bundle() -> str | None:
    """Build the Notes bundle in the source tree; why not, or None once built."""
    if not (ROOT / "package.json").is_file() or not (ROOT / "package-lock.json").is_file():
        return "package.json or package-lock.json is missing"
    npm = os.environ.get("NPM") or shutil.which("npm")
    if npm is None:
        return "npm is not on the PATH (install Node.js and npm, or run `make install`)"
    try:
        if not (ROOT / "node_modules" / ".bin" / "esbuild").exists():
            say("npm ci (the Notes panel's JavaScript, by package-lock.json)")
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True)
        say("npm run build (chat/static/realtime/build/notes.bundle.js)")
        subprocess.run([npm, "run", "build"], cwd=ROOT, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"npm failed: {exc}"
    return None if (ROOT / BUNDLE).is_file() else f"npm run build made no {BUNDLE}"


class BuildPy(build_py):
    """build_py, with the Notes bundle built first when it is missing."""

    def run(self) -> None:
        reason = None if (ROOT / BUNDLE).is_file() else build_bundle()
        super().run()
        if reason is not None:
            target = Path(self.build_lib) / BUNDLE
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / FALLBACK, target)
            say(
                f"WARNING: the Notes panel's bundle was not built ({reason}); this "
                "build carries a stand-in, and the room page shows the Notes panel "
                "as unavailable. Shared documents themselves (/ws/docs/, REST) work."
            )


setup(cmdclass={"build_py": BuildPy})
