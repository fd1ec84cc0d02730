"""
The offline reach at scale (contract §11): one announcement (notify_many) to
N offline recipients, each with an e-mail address and one push subscription
to a push-service stand-in on loopback. Measured: the time until every push
request is made and every digest is sent, this process's CPU, and the
database rows written per notification (pg_stat_user_tables: inserts +
updates + deletes on the notifications tables).

    python bench/offline_reach.py                      # 10,000 recipients, SMTP sink
    python bench/offline_reach.py --recipients 1000 --mail locmem

It runs the code the server processes' loops run (notifications.push
send_due, notifications.digests send_due) in this process, against a
throwaway PostgreSQL and Redis (tests.servers), with
EMAIL_DIGEST_AFTER_SECONDS = 0. The push stand-in (answers 201 to every POST)
and the SMTP sink (aiosmtpd, accepts every message) are separate processes,
so their CPU is not counted; `--mail locmem` measures the digest without
SMTP round trips. Everything stays on 127.0.0.1; every step has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEADLINE_SECONDS = 600.0  # for each of the push and the digest rounds


def stand_in(port: int, count: Any) -> None:
    """A push service: 201 to every POST (HTTP/1.1 keep-alive), counted."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                with count.get_lock():
                    count.value += 1
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def smtp_sink(port: int, count: Any) -> None:
    """A mail server that accepts and counts every message."""
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            with count.get_lock():
                count.value += 1
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    time.sleep(DEADLINE_SECONDS * 3)  # terminated by the parent long before


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_port(port: int) -> None:
    import socket

    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--mail", choices=["smtp", "locmem"], default="smtp")
    args = parser.parse_args()

    from tests.servers import PostgresServer, RedisServer, free_port

    pg, rd = PostgresServer().start(), RedisServer().start()
    push_port, smtp_port = free_port(), free_port()
    pushes, mails = multiprocessing.Value("i", 0), multiprocessing.Value("i", 0)
    helpers = [
        multiprocessing.Process(target=stand_in, args=(push_port, pushes), daemon=True),
        multiprocessing.Process(target=smtp_sink, args=(smtp_port, mails), daemon=True),
    ]
    try:
        for helper in helpers:
            helper.start()
        wait_for_port(push_port)
        wait_for_port(smtp_port)
        os.environ.update(
            DJANGO_SETTINGS_MODULE="project.settings",
            DATABASE_URL=pg.url,
            REDIS_URL=rd.url,
            WEBPUSH_ENDPOINTS=f"http://127.0.0.1:{push_port}/",
            EMAIL_DIGEST_AFTER_SECONDS="0",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(smtp_port),
            LOG_LEVEL="WARNING",
        )
        run(args.recipients, args.mail, push_port, pushes, mails)
    finally:
        for helper in helpers:
            helper.terminate()
            helper.join(5)
        pg.stop()
        rd.stop()


def run(n: int, mail_to: str, port: int, pushes: Any, mails: Any) -> None:
    import django

    django.setup()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core import mail
    from django.core.management import call_command
    from django.db import connection

    from django_realtime.asyncdb import db
    from notifications import digests, push, services
    from notifications.models import PushSubscription

    if mail_to == "locmem":
        settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    else:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.REALTIME = {
        **settings.REALTIME,
        "WEBPUSH_VAPID_PRIVATE_KEY": push.generate_private_key_pem(),
    }
    mail.outbox = []
    call_command("migrate", verbosity=0)
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"u{i}", email=f"u{i}@example.com") for i in range(n)]
    )
    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    p256dh, auth = push.b64url(public), push.b64url(b"0123456789abcdef")
    PushSubscription.objects.bulk_create(
        [
            PushSubscription(
                user=u, endpoint=f"http://127.0.0.1:{port}/{u.pk}", p256dh=p256dh, auth=auth
            )
            for u in users
        ]
    )

    def written() -> dict[str, int]:
        # Other backends (db()'s threads) flush their statistics within a
        # second of going idle (PostgreSQL 15+); this one's, on request.
        time.sleep(1.5)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute(
                "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
                " WHERE relname LIKE 'notifications_%%'"
            )
            return {name: int(rows) for name, rows in cursor.fetchall()}

    rows_before = written()
    answered = 0

    async def count_answer(response: Any) -> None:
        nonlocal answered
        answered += response.status_code == 201

    async def send_pushes() -> int:
        async with push.client() as http, asyncio.timeout(DEADLINE_SECONDS):
            http.event_hooks["response"].append(count_answer)
            return await push.send_due(http, db)

    cpu0, t0 = cpu(), time.perf_counter()
    services.notify_many(
        recipients=users, kind="announcement", data={"text": "maintenance at 17:00"}
    )
    t_stored = time.perf_counter()
    made = asyncio.run(send_pushes())
    t_pushed = time.perf_counter()
    sent = digests.send_due()
    t_mailed = time.perf_counter()
    cpu_used = cpu() - cpu0
    after = written()
    rows = {name: after.get(name, 0) - rows_before.get(name, 0) for name in after}
    delivered = len(mail.outbox) if mail_to == "locmem" else mails.value
    print(f"recipients                  {n}")
    print(f"notify_many (stored)        {t_stored - t0:.2f} s")
    print(f"every push request made     {t_pushed - t0:.2f} s  ({made} requests, {answered} 201s)")
    print(f"every digest sent ({mail_to:6}) {t_mailed - t0:.2f} s  ({sent} e-mails)")
    print(f"CPU, this process           {cpu_used:.2f} s  ({cpu_used / n * 1000:.2f} ms/recipient)")
    print(f"rows written/notification   {sum(rows.values()) / n:.2f}")
    for name, count in sorted(rows.items()):
        if count:
            print(f"  {name:26}  {count / n:.2f}")
    if not made == answered == pushes.value == sent == delivered == n:
        sys.exit(
            f"incomplete: {made} pushes made, {answered} answered, {pushes.value} received,"
            f" {sent} digests sent, {delivered} delivered, of {n}"
        )


if __name__ == "__main__":
    main()
