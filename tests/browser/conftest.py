"""
The pages and static/realtime/client.js in a real browser: headless Chromium
(the Debian package `chromium`, /usr/bin/chromium; `make test` installs it)
driven by Playwright's sync API, against real daphne processes on the test
PostgreSQL and Redis.

Playwright's own browser downloads are never used: CHROMIUM_PATH, or the
system's chromium, is launched instead. Without one these tests are skipped,
saying which package to install.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.live.conftest import ROOT, DaphneProcess
from tests.servers import free_port

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in CI, no user namespaces in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
# Long enough for a reconnect after a restart: the client's backoff ceiling
# reaches 8 s after a few failed attempts (0.5 s · 2^n, full jitter).
RECONNECT_TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    """Playwright's sync API keeps an event loop running in a greenlet of this
    thread, so Django takes every ORM call in these tests for one made from
    async code. They are plain synchronous calls; say so."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser() -> Iterator:
    """A headless Chromium, started for one test and stopped after it (so the
    Playwright event loop never outlives the browser tests)."""
    if not Path(CHROMIUM).exists():
        # In CI (`make test` as root installs it) a missing browser is a failure.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            f"no Chromium at {CHROMIUM}: install the Debian/Ubuntu package `chromium` "
            "(`make test` does as root) or set CHROMIUM_PATH"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def site(django_db_setup) -> Iterator[DaphneProcess]:
    """One daphne for the browser tests, on the test database and Redis."""
    proc = DaphneProcess(redis_url=os.environ["REALTIME_TEST_REDIS_URL"]).start()
    yield proc
    proc.stop()


class Restartable:
    """A daphne that a test stops (SIGKILL: a crash; SIGTERM: a drain with
    1012) and starts again on the same port, as a restart behind a proxy looks
    to a browser."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = self._new().start()

    def _new(self) -> DaphneProcess:
        return DaphneProcess(redis_url=os.environ["REALTIME_TEST_REDIS_URL"], port=self.port)

    @property
    def http(self) -> str:
        return self.proc.http

    def stop(self, sig: int = signal.SIGKILL) -> None:
        self.proc.signal(sig)
        self.proc.wait_exit(15)
        self.proc.stop()

    def start(self) -> None:
        self.proc = self._new().start()


@pytest.fixture
def restartable(django_db_setup) -> Iterator[Restartable]:
    server = Restartable()
    yield server
    server.proc.stop()


@dataclass
class Tab:
    """One signed-in browser page, with what a user would look at."""

    page: object
    base: str
    errors: list[str] = field(default_factory=list)  # page errors, dialogs, HTTP >= 400
    console_errors: list[str] = field(default_factory=list)

    def network_errors_only(self) -> bool:
        """Whether every console error is the browser reporting a refused
        connection (expected while a server is down)."""
        return all(
            "WebSocket connection" in e or "Failed to load resource" in e
            for e in self.console_errors
        )

    def open_room(self, slug: str) -> Tab:
        self.page.goto(f"{self.base}/rooms/{slug}/")
        self.wait_online()
        return self

    def wait_online(self, timeout: float = RECONNECT_TIMEOUT_MS) -> None:
        # A selector, not wait_for_function: the pages' CSP forbids the eval
        # that a JavaScript predicate needs.
        self.page.locator("#room[data-conn='online']").wait_for(state="attached", timeout=timeout)

    def say(self, text: str) -> None:
        box = self.page.locator("#composer-input")
        box.fill(text)
        box.press("Enter")

    def stored(self) -> list[str]:
        """The texts of the stored messages shown, top to bottom."""
        return self.page.locator("#messages .msg[data-seq] .msg-body").all_text_contents()

    def pending(self) -> list[str]:
        return self.page.locator("#messages .msg.pending .msg-body").all_text_contents()

    def wait_for_text(self, text: str, timeout: float = 10_000) -> None:
        self.page.locator("#messages .msg[data-seq] .msg-body", has_text=text).first.wait_for(
            timeout=timeout
        )

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture
def sign_in(browser):
    """sign_in(server, username) → a Tab logged in through /accounts/login/,
    in its own browser context (its own cookies and localStorage)."""
    contexts = []

    def make(server, username: str, password: str = "pw") -> Tab:
        context = browser.new_context(viewport={"width": 1100, "height": 700})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        tab = Tab(page=page, base=server.http)
        page.on("pageerror", lambda exc: tab.errors.append(f"pageerror: {exc}"))
        page.on(
            "response",
            lambda r: r.status >= 400 and tab.errors.append(f"HTTP {r.status} {r.url}"),
        )
        page.on(
            "console",
            lambda m: m.type == "error" and tab.console_errors.append(m.text),
        )
        page.on(
            "dialog",
            lambda dialog: (tab.errors.append(f"dialog: {dialog.message}"), dialog.dismiss()),
        )
        page.goto(f"{server.http}/accounts/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{server.http}/")
        return tab

    yield make
    for context in contexts:
        context.close()
