"""
deploy/nginx.conf rendered and run for real (Debian's nginx, package
`nginx-light`) in front of any list of server addresses: two processes on
127.0.0.1 (tests/live/test_nginx_live.py) or three hosts (tests/hosts).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MISSING = "nginx not found: install the Debian/Ubuntu package `nginx-light`"


def render(upstreams: list[tuple[str, int]], *, listen_port: int, workdir: Path) -> str:
    """deploy/nginx.conf with its placeholders filled; every one must be."""
    servers = "\n".join(
        f"        server {host}:{port} max_fails=1 fail_timeout=2s;" for host, port in upstreams
    )
    config = (ROOT / "deploy/nginx.conf").read_text()
    for key, value in {
        "PID_FILE": workdir / "nginx.pid",
        "ERROR_LOG": workdir / "error.log",
        "TEMP_DIR": workdir,
        "UPSTREAMS": servers,
        "LISTEN_PORT": listen_port,
    }.items():
        config = config.replace("{{" + key + "}}", str(value))
    left = re.findall(r"\{\{[A-Z_0-9]+\}\}", config)
    if left:
        raise ValueError(f"deploy/nginx.conf has placeholders nobody fills: {left}")
    return config


class Nginx:
    """nginx on 127.0.0.1 (a free port) in front of `upstreams` (host, port)."""

    def __init__(self, upstreams: list[tuple[str, int]]):
        self.upstreams = upstreams
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.workdir: Path | None = None

    @staticmethod
    def available() -> bool:
        return Path(NGINX).exists()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def start(self) -> Nginx:
        self.workdir = Path(tempfile.mkdtemp(prefix="rt-nginx-"))
        self.workdir.chmod(0o777)  # nginx's workers drop root and still need their temp dirs
        conf = self.workdir / "nginx.conf"
        conf.write_text(render(self.upstreams, listen_port=self.port, workdir=self.workdir))
        self.proc = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
