"""
Real server processes (daphne, and uvicorn for the protocol tests) on real
sockets, sharing the test PostgreSQL database and a real Redis. Tests here use
`transactional_db`, so what they create is committed and visible to the server
processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings

from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = settings.DATABASES["default"]  # NAME is the test database by now
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    user = quote(db["USER"], safe="")
    return f"postgres://{user}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


# The bearer that reads a test server's /metrics (REALTIME["METRICS_TOKEN"]);
# a bench that set one in the environment (bench/loadtest.py) keeps it.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN") or "test-metrics-token"
METRICS_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}

# The ASGI servers the protocol tests run under (the `protocol_server` fixture).
SERVER_KINDS = ("daphne", "uvicorn")


class ServerProcess:
    """`project.asgi:application` served by daphne or uvicorn in a subprocess,
    with the command line production uses (docs/integration.md). `host` is
    the address it binds; `wrap` prefixes its command (tests/hosts runs it in
    a network namespace with `ip netns exec NAME`)."""

    def __init__(
        self,
        *,
        redis_url: str | None,
        env: dict[str, str] | None = None,
        database: str | None = None,
        port: int | None = None,
        kind: str = "daphne",
        host: str = "127.0.0.1",
        wrap: list[str] | None = None,
        root: Path = ROOT,
    ):
        if kind not in SERVER_KINDS:
            raise ValueError(f"kind must be one of {SERVER_KINDS}, not {kind!r}")
        self.kind = kind
        self.host = host
        self.wrap = wrap or []
        self.root = root  # the checkout it serves (a benchmark's baseline: another)
        self.port = port or free_port()
        self.redis_url = redis_url
        self.database = database
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{kind}-{self.port}.log"

    def __repr__(self) -> str:
        return f"<{self.kind} on {self.host}:{self.port}>"

    def command(self) -> list[str]:
        app = "project.asgi:application"
        if self.kind == "uvicorn":
            # --ws websockets-sansio is what `--ws auto` picks with websockets
            # installed; named so the tests do not depend on that choice.
            # On SIGTERM uvicorn closes every WebSocket with 1012 itself, then
            # waits for open responses: without a timeout an SSE stream would
            # hold the process forever (docs/integration.md).
            return [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--ws",
                "websockets-sansio",
                "--timeout-graceful-shutdown",
                "5",
            ]
        # As production runs it (docs/integration.md): a WebSocket may take
        # 30 s, not daphne's 5, to handshake and be accepted.
        return [
            sys.executable,
            "-m",
            "daphne",
            "--websocket_connect_timeout",
            "30",
            "-b",
            self.host,
            "-p",
            str(self.port),
            app,
        ]

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/"

    def start(self) -> ServerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database or database_url(),
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            # A server that will not exit is sent SIGABRT (wait_exit): this
            # writes where every thread stands into its log first.
            "PYTHONFAULTHANDLER": "1",
            "METRICS_TOKEN": METRICS_TOKEN,
            **self.extra_env,
        }
        env.pop("REDIS_URL", None)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*self.wrap, *self.command()],
            cwd=self.root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=60, proc=self.proc, host=self.host)
        return self

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Its exit status once it has exited (after a signal). Past `timeout`
        it is aborted, and the failure carries its log with the stack of every
        thread, to tell what held it up."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._end(signal.SIGABRT)
            tail = self.log_text()[-20000:]
            raise AssertionError(
                f"{self!r} had not exited {timeout} s after the signal; its log:\n{tail}"
            ) from None

    def _end(self, sig: int) -> None:
        """Send `sig`, and kill it if it has not exited 10 s later."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self._end(signal.SIGTERM)
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# The name the tests have always used; a daphne unless given kind="uvicorn".
DaphneProcess = ServerProcess


# What a client that stops reading is given: a receive buffer this small (set
# before the SYN, so the kernel does not autotune it to megabytes) and a
# library queue of one frame, so that not reading leaves the output with the
# server, as a phone on a slow link would.
SMALL_RCVBUF = 16 * 1024


async def slow_client(
    server: ServerProcess, token: str, *, path: str = "/ws/"
) -> websockets.ClientConnection:
    """A WebSocket to `server` (at `path`) with a small receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    sock.connect((server.host, server.port))
    return await websockets.connect(
        f"ws://{server.host}:{server.port}{path}",
        sock=sock,
        additional_headers={"Authorization": f"Token {token}"},
        max_queue=1,
        max_size=2**20,
        open_timeout=10,
        ping_interval=None,  # its own keepalive would give up on the server meanwhile
    )


def manage_shell(code: str, *, redis_url: str, database: str | None = None) -> str:
    """Run Python in `manage.py shell` as a separate process on the test
    database (or `database`) and the given Redis (an operator's shell, a
    worker): what it broadcasts reaches the daphne processes. Returns its stdout."""
    env = {
        **os.environ,
        "DATABASE_URL": database or database_url(),
        "REDIS_URL": redis_url,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py shell failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["REALTIME_TEST_REDIS_URL"]


@pytest.fixture(scope="session")
def server(django_db_setup, redis_url):
    """One daphne on Redis for the session; rate limits as in production."""
    proc = ServerProcess(redis_url=redis_url).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def uvicorn_server(django_db_setup, redis_url):
    """One uvicorn on Redis for the session, configured as `server` is."""
    proc = ServerProcess(kind="uvicorn", redis_url=redis_url).start()
    yield proc
    proc.stop()


@pytest.fixture(params=SERVER_KINDS)
def protocol_server(request) -> ServerProcess:
    """`server` (daphne), then `uvicorn_server`: for the tests of protocol
    behaviour (close codes, resume, SSE) that every supported server must show."""
    return request.getfixturevalue("server" if request.param == "daphne" else "uvicorn_server")


@pytest.fixture(scope="session")
def server_b(django_db_setup, redis_url):
    """A second daphne on the same Redis and database, without message rate limits."""
    proc = ServerProcess(redis_url=redis_url, env={"CHAT_MESSAGE_RATE": "off"}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def unlimited_server(django_db_setup, redis_url):
    """A daphne with CHAT_MESSAGE_RATE=off, for bursts."""
    proc = ServerProcess(redis_url=redis_url, env={"CHAT_MESSAGE_RATE": "off"}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def unlimited_uvicorn_server(django_db_setup, redis_url):
    """A uvicorn with CHAT_MESSAGE_RATE=off, for bursts."""
    proc = ServerProcess(
        kind="uvicorn", redis_url=redis_url, env={"CHAT_MESSAGE_RATE": "off"}
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(params=SERVER_KINDS)
def unlimited_protocol_server(request) -> ServerProcess:
    """`unlimited_server` (daphne), then `unlimited_uvicorn_server`."""
    name = "unlimited_server" if request.param == "daphne" else "unlimited_uvicorn_server"
    return request.getfixturevalue(name)


class Ws:
    """A WebSocket client over a real socket, speaking the JSON protocol."""

    def __init__(self, conn: websockets.ClientConnection):
        self.conn = conn
        self.backlog: list[dict] = []

    @classmethod
    async def connect(
        cls, url: str, *, token: str | None = None, origin: str | None = None, **kwargs: Any
    ) -> Ws:
        headers = {"Authorization": f"Token {token}"} if token else {}
        conn = await websockets.connect(
            url, additional_headers=headers, origin=origin, open_timeout=10, **kwargs
        )
        return cls(conn)

    async def send(self, frame: dict | str | bytes) -> None:
        await self.conn.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict:
        if self.backlog:
            return self.backlog.pop(0)
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        return json.loads(raw)

    async def recv_type(self, *types: str, timeout: float = 10.0) -> dict:
        """The next frame of one of `types`; others are kept for later."""
        deadline = time.monotonic() + timeout
        for i, frame in enumerate(self.backlog):
            if frame["type"] in types:
                return self.backlog.pop(i)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {types} frame within {timeout} s; kept {self.backlog}")
            frame = json.loads(await asyncio.wait_for(self.conn.recv(), remaining))
            if frame["type"] in types:
                return frame
            self.backlog.append(frame)

    async def request(self, frame: dict, *types: str, timeout: float = 10.0) -> dict:
        await self.send(frame)
        return await self.recv_type(*types, timeout=timeout)

    async def join(self, room: str, since: int | None = None) -> dict:
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        return await self.request(frame, "joined", "error")

    async def post(self, room: str, content: str, client_id: str | None = None) -> dict:
        return await self.request(
            {
                "type": "message",
                "room": room,
                "content": content,
                "client_id": client_id or str(uuid.uuid4()),
            },
            "ack",
            "error",
        )

    async def messages(self, room: str, count: int, timeout: float = 20.0) -> list[dict]:
        """The next `count` message frames of a room."""
        got = []
        while len(got) < count:
            frame = await self.recv_type("message", timeout=timeout)
            if frame["room"] == room:
                got.append(frame)
            else:
                self.backlog.append(frame)
        return got

    async def quiet(self, seconds: float = 0.5) -> list[dict]:
        """Every frame that arrives within `seconds` (to check that none does)."""
        frames, self.backlog = list(self.backlog), []
        try:
            while True:
                frames.append(json.loads(await asyncio.wait_for(self.conn.recv(), seconds)))
        except TimeoutError:
            return frames

    async def close(self) -> None:
        await self.conn.close()


@pytest.fixture
def http():
    def make(server: ServerProcess, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Token {token}"} if token else {}
        return httpx.Client(base_url=server.http, headers=headers, timeout=10)

    return make


@pytest.fixture
def daphnes():
    """Start server processes for one test (daphne unless kind="uvicorn");
    all are stopped after it."""
    started: list[ServerProcess] = []

    def start(**kwargs) -> ServerProcess:
        proc = ServerProcess(**kwargs).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def _set_password(user, password: str) -> None:
    user.set_password(password)
    user.save()


async def session_cookie(server: ServerProcess, user, password: str = "pw") -> str:
    """Log `user` in through the login form, as a browser does: the session cookie."""
    await sync_to_async(_set_password)(user, password)
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        await client.get("/accounts/login/")
        response = await client.post(
            "/accounts/login/",
            data={
                "username": user.get_username(),
                "password": password,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
            headers={"Referer": server.http + "/accounts/login/"},
        )
        assert response.status_code == 302, response.text
        return f"sessionid={client.cookies['sessionid']}"
