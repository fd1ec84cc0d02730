"""
Provides the presence writes: a user's last-seen time.
"""

from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import connections, router, transaction
from django.utils import timezone

from .models import UserPresence

# A last-seen time is worth less than anything it could hold up. Giving up on
# a lock after this long, well inside PostgreSQL's deadlock_timeout (1 s),
# makes this write, never the other party (a TRUNCATE, a migration), the one
# that yields when the two lock the user and presence tables in opposite order.
LOCK_TIMEOUT_MS = 200


def last_seen_record(*, user_ids: Iterable[int], at: datetime | None = None) -> int:
    """Set the users' last-seen time (now by default); users that no longer
    exist are skipped. Returns how many rows were written. On the database
    the site's routers pick for presence writes, users read there too."""
    at = at or timezone.now()
    alias = router.db_for_write(UserPresence)
    with transaction.atomic(using=alias):
        if connections[alias].vendor == "postgresql":
            with connections[alias].cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, true)", [f"{LOCK_TIMEOUT_MS}ms"]
                )
        users = get_user_model()._default_manager.db_manager(alias)
        existing = list(users.filter(pk__in=set(user_ids)).values_list("pk", flat=True))
        UserPresence.objects.db_manager(alias).bulk_create(
            [UserPresence(user_id=pk, last_seen_at=at) for pk in existing],
            update_conflicts=True,
            unique_fields=["user"],
            update_fields=["last_seen_at"],
        )
    return len(existing)
