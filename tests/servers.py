"""
Provides throwaway PostgreSQL and Redis servers for the test suite.

Loaded as a pytest plugin (`-p tests.servers`) so that it runs before Django
reads its settings. TEST_DATABASE_URL / TEST_REDIS_URL name servers to use
instead; otherwise each is started from the local binaries on a free port in a
temporary directory, and removed at the end. Nothing touches other databases:
Django's test database is created inside the server named here.

PostgreSQL refuses to run as root, so as root the cluster runs as the
`postgres` user.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_PACKAGES = "postgresql (Debian/Ubuntu: apt-get install postgresql)"
REDIS_PACKAGES = "redis-server (Debian/Ubuntu: apt-get install redis-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int,
    timeout: float = 30.0,
    proc: subprocess.Popen | None = None,
    host: str = "127.0.0.1",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {host}:{port} within {timeout} s")


def _pg_bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if directory and Path(directory, "initdb").exists():
            return Path(directory)
    raise RuntimeError(f"PostgreSQL binaries (initdb) not found; install {PG_PACKAGES}")


class RedisServer:
    """One redis-server on a free port, keeping nothing on disk. `host` is the
    address it binds; `wrap` prefixes its command (tests/hosts runs it inside
    a network namespace with `ip netns exec NAME`)."""

    def __init__(
        self, port: int | None = None, *, host: str = "127.0.0.1", wrap: list[str] | None = None
    ):
        self.port = port or free_port()
        self.host = host
        self.wrap = wrap or []
        self.proc: subprocess.Popen | None = None
        self.dir = tempfile.mkdtemp(prefix="rt-redis-")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"redis-server not found; install {REDIS_PACKAGES}")
        self.proc = subprocess.Popen(
            [
                *self.wrap,
                binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--logfile",
                "",
                # Bound to another address than loopback (tests/hosts), Redis
                # without a password refuses every client unless told not to.
                "--protected-mode",
                "yes" if self.host == "127.0.0.1" else "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc, host=self.host)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A throwaway cluster: initdb, pg_ctl start on a free port, trust auth.
    `host` and `wrap` as for RedisServer."""

    def __init__(self, *, host: str = "127.0.0.1", wrap: list[str] | None = None) -> None:
        self.host = host
        self.wrap = wrap or []
        self.port = free_port()
        self.bindir = _pg_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="rt-pg-"))
        self.data = self.dir / "data"
        self.as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgres://postgres@{self.host}:{self.port}/realtime"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        cmd = [*self.wrap, *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresServer:
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )
        if self.host != "127.0.0.1":
            # initdb trusts loopback only; this cluster serves its own subnet.
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write("host all all samenet trust\n")
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "start",
        )
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", "postgres", "realtime")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


_started: list = []


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Point DATABASE_URL at a throwaway PostgreSQL before settings load.

    The pytest process itself uses the in-memory channel layer; Redis is for
    the real daphne processes that live tests start (REALTIME_TEST_REDIS_URL).
    """
    os.environ.pop("REDIS_URL", None)
    database_url = os.environ.get("TEST_DATABASE_URL")
    if not database_url:
        pg = PostgresServer().start()
        _started.append(pg)
        database_url = pg.url
    os.environ["DATABASE_URL"] = database_url
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        redis = RedisServer().start()
        _started.append(redis)
        redis_url = redis.url
    os.environ["REALTIME_TEST_REDIS_URL"] = redis_url


def pytest_configure(config):
    """The test process keeps Python's own garbage collector pacing (its
    tests collect cycles when they ask); the servers it starts pace theirs."""
    from django.conf import settings

    settings.REALTIME = {**settings.REALTIME, "GC_FULL_COLLECTION_SECONDS": 0}


def pytest_unconfigure(config):
    while _started:
        _started.pop().stop()
