"""
Three server hosts, a data host and nginx, on one machine, with real network
links that can be cut: each host is a Linux network namespace whose one
interface (`eth0`, a veth) is plugged into a bridge in the root namespace.

    root namespace   bridge rtb<pid>  10.213.N.1/24    nginx on 127.0.0.1
      ├─ rt-data-<pid>   eth0  10.213.N.10 (Redis)  10.213.N.11 (PostgreSQL)
      ├─ rt-h1-<pid>     eth0  10.213.N.21  daphne
      ├─ rt-h2-<pid>     eth0  10.213.N.22  daphne
      └─ rt-h3-<pid>     eth0  10.213.N.23  daphne

N is the first /24 of 10.213.0.0/16 that nothing on the machine uses yet, so
two runs side by side do not collide; every name carries the pid. The
namespaces have no default route: they reach each other and the root
namespace's bridge address, nothing else. Redis and PostgreSQL have separate
addresses so that a server can be cut off one of them only.

Faults, each undone by its opposite:

- `cut(host)` / `heal(host)`: the host's veth in the root namespace goes down
  (up): its packets go nowhere, without a reset, as with a pulled cable.
- `blackhole(host, addr)` / `unblackhole(host, addr)`: the host and the
  address `addr` (of another host) stop hearing each other, both ways, while
  the rest goes on: a blackhole route to `addr` in the host's namespace, and
  a blackhole rule for what `addr` sends to the host in the other's. A new
  connection fails at once; an open one hears nothing more, with no reset.

`Cluster` starts everything (tests.servers' Redis and PostgreSQL, the live
tests' ServerProcess for daphne, tests.hosts.nginx) and `close()` removes
everything, processes, namespaces and links, whatever happened before; it is
a context manager. Needs root and iproute2 (`ip`); `unavailable()` says why
not otherwise. Used by tests/hosts/test_three_hosts.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.live.conftest import ROOT, ServerProcess, manage_shell
from tests.servers import PostgresServer, RedisServer

from .nginx import MISSING as NGINX_MISSING
from .nginx import Nginx

IP = shutil.which("ip") or "/usr/sbin/ip"
PREFIX = "10.213"
LOCK = "/run/lock/django-realtime-hosts.lock"
SERVER_HOSTS = ("rt-h1", "rt-h2", "rt-h3")
DATA_HOST = "rt-data"

# Production settings, with the timeouts that decide how fast a fault is
# seen and healed shortened so that the tests take seconds (each is a
# documented setting; nothing else differs from production).
SERVER_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "hosts-harness-secret-key-not-for-production-0123456789abcdef",
    "CHAT_MESSAGE_RATE": "off",
    "GROUP_REFRESH_SECONDS": "2",
    "PRESENCE_TTL_SECONDS": "6",
    "PRESENCE_HEARTBEAT_SECONDS": "2",
    "PRESENCE_SWEEP_SECONDS": "1",
    "LAYER_SEND_TIMEOUT_SECONDS": "2",
    "DATABASE_STATEMENT_TIMEOUT_MS": "3000",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
}


def unavailable() -> str | None:
    """Why the harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root: it creates network namespaces and veth links (CI runs as root)"
    if not os.path.exists(IP):
        return "needs iproute2's `ip` (Debian/Ubuntu: apt-get install iproute2)"
    if not Nginx.available():
        return NGINX_MISSING
    if subprocess.run([IP, "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` does not work here (no CAP_SYS_ADMIN?)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass
class Host:
    name: str  # rt-h1
    netns: str  # rt-h1-<pid>
    veth: str  # its link's end in the root namespace (the one cut() takes down)
    addrs: list[str]
    blackholes: set[str] = field(default_factory=set)

    @property
    def addr(self) -> str:
        return self.addrs[0]

    @property
    def wrap(self) -> list[str]:
        """The prefix that runs a command on this host."""
        return [IP, "netns", "exec", self.netns]


class Network:
    """A bridge in the root namespace and hosts plugged into it."""

    def __init__(self) -> None:
        self.tag = str(os.getpid())
        self.bridge = f"rtb{self.tag}"
        self.hosts: dict[str, Host] = {}
        self.net = ""  # "10.213.N"

    def up(self) -> Network:
        # Two runs on one machine: pick the subnet and claim it (by giving the
        # bridge its address) under one lock.
        os.makedirs(os.path.dirname(LOCK), exist_ok=True)
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = ip("-4", "-o", "addr", "show").stdout + ip("-4", "route", "show").stdout
            for n in range(256):
                if f"{PREFIX}.{n}." not in used:
                    self.net = f"{PREFIX}.{n}"
                    break
            else:
                raise RuntimeError(f"every /24 of {PREFIX}.0.0/16 is in use")
            ip("link", "add", self.bridge, "type", "bridge", "forward_delay", "0")
            ip("addr", "add", f"{self.net}.1/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str, octets: list[int]) -> Host:
        host = Host(
            name=name,
            netns=f"{name}-{self.tag}",
            veth=f"rt{self.tag}{name.removeprefix('rt-')}"[:15],
            addrs=[f"{self.net}.{o}" for o in octets],
        )
        self.hosts[name] = host
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        inside = ["-n", host.netns]
        for addr in host.addrs:
            ip(*inside, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")
        ip(*inside, "link", "set", "lo", "up")
        return host

    def cut(self, host: Host) -> None:
        ip("link", "set", host.veth, "down")

    def heal(self, host: Host) -> None:
        ip("link", "set", host.veth, "up")

    def owner(self, addr: str) -> Host:
        return next(h for h in self.hosts.values() if addr in h.addrs)

    def _rule(self, op: str, host: Host, addr: str) -> list[str]:
        return ["-n", self.owner(addr).netns, "rule", op, "from", addr, "to", host.addr]

    def blackhole(self, host: Host, addr: str) -> None:
        ip("-n", host.netns, "route", "add", "blackhole", f"{addr}/32")
        host.blackholes.add(addr)
        ip(*self._rule("add", host, addr), "blackhole")

    def unblackhole(self, host: Host, addr: str) -> None:
        ip(*self._rule("del", host, addr), "blackhole", check=False)
        ip("-n", host.netns, "route", "del", "blackhole", f"{addr}/32")
        host.blackholes.discard(addr)

    def down(self) -> None:
        """Remove every namespace (ending what still runs in it), link and the bridge."""
        for host in self.hosts.values():
            pids = ip("netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:  # started in a namespace this run made: ours
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", host.netns, check=False)  # takes its veth pair along
            ip("link", "del", host.veth, check=False)
        self.hosts.clear()
        ip("link", "del", self.bridge, check=False)


class Cluster:
    """The data host (Redis, PostgreSQL), three daphne hosts and nginx in front."""

    def __init__(self, *, env: dict[str, str] | None = None, root: Path = ROOT) -> None:
        self.root = root  # the checkout the servers run (a benchmark's baseline: another)
        self.net = Network()
        self.env = {**SERVER_ENV, **(env or {})}
        self.redis: RedisServer | None = None
        self.pg: PostgresServer | None = None
        self.servers: dict[str, ServerProcess] = {}
        self.nginx: Nginx | None = None
        self.tokens: dict[str, str] = {}  # username -> API token, by users()
        # The servers' logs; kept after close() with RT_HOSTS_KEEP_LOGS=1.
        self.logdir = Path(tempfile.mkdtemp(prefix=f"rt-hosts-{self.net.tag}-"))
        self.keep_logs = os.environ.get("RT_HOSTS_KEEP_LOGS") == "1"

    # --- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Cluster:
        net = self.net.up()
        data = net.add_host(DATA_HOST, [10, 11])
        for i, name in enumerate(SERVER_HOSTS, start=1):
            net.add_host(name, [20 + i])
        self.redis = RedisServer(host=data.addrs[0], wrap=data.wrap).start()
        self.pg = PostgresServer(host=data.addrs[1], wrap=data.wrap).start()
        self.shell("", migrate=True)
        hosts = [net.hosts[name] for name in SERVER_HOSTS]
        allowed = ",".join(["127.0.0.1", "localhost", *(h.addr for h in hosts)])
        for host in hosts:
            self.servers[host.name] = ServerProcess(
                redis_url=self.redis.url,
                database=self.pg.url,
                host=host.addr,
                wrap=host.wrap,
                env={**self.env, "ALLOWED_HOSTS": allowed},
                root=self.root,
            )
            self.servers[host.name].log_path = self.logdir / f"{host.name}.log"
        for server in self.servers.values():  # start all, then wait for each
            server.start()
        self.nginx = Nginx([(s.host, s.port) for s in self.servers.values()]).start()
        return self

    def close(self) -> None:
        """Stop everything and remove the network; safe to call at any point."""
        with contextlib.suppress(Exception):
            if self.nginx is not None:
                self.nginx.stop()
        for host in list(self.net.hosts.values()):  # a cut host cannot say goodbye
            with contextlib.suppress(Exception):
                self.net.heal(host)
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        for store in (self.redis, self.pg):
            with contextlib.suppress(Exception):
                if store is not None:
                    store.stop()
        self.net.down()
        if not self.keep_logs:
            shutil.rmtree(self.logdir, ignore_errors=True)

    def logs(self, name: str) -> str:
        return self.servers[name].log_text()

    # --- what tests use ----------------------------------------------------------------
    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    @property
    def data(self) -> Host:
        return self.net.hosts[DATA_HOST]

    @property
    def redis_addr(self) -> str:
        return self.data.addrs[0]

    @property
    def pg_addr(self) -> str:
        return self.data.addrs[1]

    def shell(self, code: str, *, migrate: bool = False) -> str:
        """Python in `manage.py shell`, from the root namespace, on the data host."""
        assert self.pg is not None and self.redis is not None
        if migrate:
            env = {**os.environ, "DATABASE_URL": self.pg.url, "REDIS_URL": self.redis.url}
            result = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=self.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode != 0:
                raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")
            if not code:
                return ""
        return manage_shell(code, redis_url=self.redis.url, database=self.pg.url)

    def users(self, names: list[str]) -> dict[str, str]:
        """Users with these names (created if new) and their API tokens."""
        code = (
            "import json\n"
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "tokens = {}\n"
            f"for name in {names!r}:\n"
            "    user, _ = get_user_model().objects.get_or_create(username=name)\n"
            "    tokens[name] = Token.objects.get_or_create(user=user)[0].key\n"
            "print(json.dumps(tokens))\n"
        )
        self.tokens.update(json.loads(self.shell(code).strip().splitlines()[-1]))
        return {name: self.tokens[name] for name in names}

    @contextlib.contextmanager
    def cut(self, name: str) -> Iterator[Host]:
        """The host `name` off the network while inside; healed after, whatever happens."""
        host = self.host(name)
        self.net.cut(host)
        try:
            yield host
        finally:
            self.net.heal(host)

    @contextlib.contextmanager
    def blackholed(self, name: str, addr: str) -> Iterator[Host]:
        """What `name` sends to `addr` dropped while inside; restored after."""
        host = self.host(name)
        self.net.blackhole(host, addr)
        try:
            yield host
        finally:
            self.net.unblackhole(host, addr)


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Poll `predicate` until it is true or `timeout` passes (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
