"""
Shared documents under load: stock `yjs` + `y-websocket` clients (Node,
tests/js/docs_driver.mjs) editing DOCS documents with EDITORS editors each,
every editor making RATE updates a second for SECONDS, spread over two daphne
processes on a throwaway PostgreSQL and Redis (tests/servers.py).

Reports: p50/p99 of the time for an update to reach every other editor of its
document (target: p99 <= 100 ms), updates stored per second, the log's size
before and after a final compaction, and server memory per open document
(RSS growth of both processes over the run / documents open; it includes the
editors' connections).

    .venv/bin/python bench/docs.py                       # 10 x 50 x 5/s x 60 s
    .venv/bin/python bench/docs.py --docs 4 --editors 10 --seconds 20
    .venv/bin/python bench/docs.py --also 10x10            # full scale, then 10 x 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live.conftest import ServerProcess, manage_shell  # noqa: E402
from tests.live.docs_clients import NodeDocs  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402

SETUP = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from chat.models import Room
User = get_user_model()
tokens = []
for i in range({n}):
    user, _ = User.objects.get_or_create(username=f"editor{{i}}")
    tokens.append(Token.objects.get_or_create(user=user)[0].key)
for d in range({docs}):
    Room.objects.get_or_create(slug=f"bench{{d}}", defaults={{"name": f"Bench {{d}}"}})
print(json.dumps(tokens))
"""

LOG = """
from django.db.models import Count, Sum
from django.db.models.functions import Length
from chat.collab.services import document_compact
from chat.models import Document, DocumentUpdate
def size():
    return {{"stored_bytes": Document.objects.aggregate(s=Sum("stored_bytes"))["s"] or 0,
             "log_rows": DocumentUpdate.objects.count()}}
before = size()
if {compact}:
    for pk in Document.objects.values_list("pk", flat=True):
        document_compact(document_id=pk)
print(json.dumps({{"before": before, "after": size(),
                   "stored_total": Document.objects.aggregate(s=Sum("last_seq"))["s"] or 0}}))
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def shell(code: str, redis: str, database: str) -> Any:
    out = manage_shell("import json\n" + code, redis_url=redis, database=database)
    return json.loads(out.strip().splitlines()[-1])


async def run(args: argparse.Namespace) -> dict:
    redis, pg = RedisServer().start(), PostgresServer().start()
    servers: list[ServerProcess] = []
    drivers: list[NodeDocs] = []
    try:
        env = {"CHAT_JOIN_RATE": "off", "WS_MAX_CONNECTIONS_PER_USER": "0"}
        subprocess_env_migrate(pg.url)
        tokens = shell(SETUP.format(n=args.docs * args.editors, docs=args.docs), redis.url, pg.url)
        servers = [
            ServerProcess(redis_url=redis.url, database=pg.url, env=env).start() for _ in range(2)
        ]
        rss_before = sum(rss_kib(s.proc.pid) for s in servers if s.proc)
        # One Node process per document: its editors' clocks are one clock.
        drivers = [await NodeDocs().start() for _ in range(args.docs)]
        editors = []
        for d, node in enumerate(drivers):
            for e in range(args.editors):
                i = d * args.editors + e
                server = servers[i % 2]
                await node.open(
                    f"e{e}", ws=server.ws, room=f"bench{d}", name="notes", token=tokens[i]
                )
                editors.append((node, f"e{e}"))
        for node, id in editors:
            assert (await node.call("wait_synced", id=id, timeout=120))["ok"], id
        rss_open = sum(rss_kib(s.proc.pid) for s in servers if s.proc)

        interval = 1 / args.rate
        started = time.monotonic()
        sent = 0

        async def editor_loop(node: NodeDocs, id: str, offset: float) -> None:
            nonlocal sent
            await asyncio.sleep(offset)
            n = 0
            while time.monotonic() - started < args.seconds:
                await node.call("stamp", id=id, key=f"{id}:{n}")
                n += 1
                sent += 1
                await asyncio.sleep(interval)

        await asyncio.gather(
            *(
                editor_loop(node, id, (k * 0.0137) % interval)
                for k, (node, id) in enumerate(editors)
            )
        )
        elapsed = time.monotonic() - started
        await asyncio.sleep(3)  # the last updates land
        rss_after = sum(rss_kib(s.proc.pid) for s in servers if s.proc)
        # Per update: the slowest of its document's other editors.
        worst: dict[tuple[int, str], float] = {}
        receivers: dict[tuple[int, str], int] = {}
        for d, node in enumerate(drivers):
            for e in range(args.editors):
                stamps = (await node.call("stamps", id=f"e{e}"))["stamps"]
                for key, ms in stamps.items():
                    worst[(d, key)] = max(worst.get((d, key), 0.0), ms)
                    receivers[(d, key)] = receivers.get((d, key), 0) + 1
        everyone = [k for k, n in receivers.items() if n == args.editors - 1]
        latencies = sorted(worst[k] for k in everyone)
        log = shell(LOG.format(compact=True), redis.url, pg.url)

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

        return {
            "docs": args.docs,
            "editors_per_doc": args.editors,
            "rate_per_editor": args.rate,
            "seconds": round(elapsed, 1),
            "updates_sent": sent,
            "updates_seen_by_every_other_editor": len(latencies),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": latencies[-1] if latencies else 0.0,
            "stored_per_second": round(log["stored_total"] / elapsed, 1),
            "log_before_compaction": log["before"],
            "log_after_compaction": log["after"],
            "rss_kib_before": rss_before,
            "rss_kib_docs_open": rss_open,
            "rss_kib_after_run": rss_after,
            "kib_per_open_document": round((rss_after - rss_before) / args.docs, 1),
        }
    finally:
        for node in drivers:
            await node.stop()
        for server in servers:
            server.stop()
        redis.stop()
        pg.stop()


def subprocess_env_migrate(database: str) -> None:
    import subprocess

    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database, "DJANGO_SETTINGS_MODULE": "project.settings"},
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--editors", type=int, default=50, help="editors per document")
    parser.add_argument("--rate", type=float, default=5.0, help="updates per editor per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="DOCSxEDITORS",
        help="another scale to run after the first, on fresh servers (e.g. 10x10): on a "
        "shared machine, compare scales within one run",
    )
    args = parser.parse_args()
    scales = [(args.docs, args.editors)]
    scales += [tuple(int(n) for n in scale.split("x")) for scale in args.also]  # type: ignore[misc]
    results = []
    for docs, editors in scales:
        result = asyncio.run(
            run(argparse.Namespace(**{**vars(args), "docs": docs, "editors": editors}))
        )
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    for result in results:
        ok = result["p99_ms"] <= 100
        print(
            f"{result['docs']} docs x {result['editors_per_doc']} editors:"
            f" p99 {result['p99_ms']:.0f} ms, {'within' if ok else 'over'} the 100 ms target;"
            f" {result['stored_per_second']} updates stored/s"
        )


if __name__ == "__main__":
    main()
