"""Send the due e-mail digests (and Web Pushes) once, for sites that run the
offline reach from cron rather than in their server processes
(REALTIME["OFFLINE_REACH_IN_PROCESS"] = False); `--forever` keeps running as
a worker. Safe beside the servers' own loops and other runs: every digest
and push is claimed in the database first (notifications.digests,
notifications.push), so each is sent once."""

import asyncio
import time

from django.core.management.base import BaseCommand

from django_realtime.asyncdb import db
from notifications import digests, push


class Command(BaseCommand):
    help = "Send the due notification e-mail digests and Web Pushes."

    def add_arguments(self, parser):
        parser.add_argument(
            "--forever", action="store_true", help="keep sending, as a worker (Ctrl-C ends it)"
        )

    def handle(self, *args, forever, **options):
        while True:
            emails = digests.send_due()
            pushes = asyncio.run(self._push()) if push.enabled() else 0
            if not forever:
                self.stdout.write(f"sent {emails} digests and {pushes} pushes")
                return
            time.sleep(min(push.RECHECK_SECONDS, digests.poll_seconds()))

    @staticmethod
    async def _push() -> int:
        async with push.client() as http:
            return await push.send_due(http, db)
