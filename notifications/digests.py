"""
Provides the e-mail digest (contract §11): when a user's oldest notification
that is still unread and not yet e-mailed turns EMAIL_DIGEST_AFTER_SECONDS
old and the user has no connection open, one e-mail carries every such
notification of theirs, through the site's EMAIL_BACKEND.

Why it is shaped so: docs/architecture.md, "notifications.digests".
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail, signing
from django.db import connections, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from django_realtime import redisconn
from django_realtime.conf import realtime_settings
from django_realtime.limits import users_connected

from . import events
from .models import Notification, NotificationPreference

logger = logging.getLogger(__name__)

# Due rows claimed per transaction (their users' other pending rows come too).
BATCH = 500
# Most notifications listed in one e-mail; the rest are counted ("and N more").
MAX_LISTED = 50
UNSUBSCRIBE_SALT = "notifications.digests.unsubscribe"


def after_seconds() -> float:
    return float(realtime_settings.EMAIL_DIGEST_AFTER_SECONDS)


def poll_seconds() -> float:
    """How often a server process looks for due digests: a tenth of the
    delay, between half a second and half a minute."""
    return min(30.0, max(0.5, after_seconds() / 10))


def site_url() -> str:
    """REALTIME["SITE_URL"], else http:// and the first ALLOWED_HOSTS name."""
    configured = realtime_settings.SITE_URL
    if configured:
        return str(configured).rstrip("/")
    for host in settings.ALLOWED_HOSTS:
        host = host.lstrip(".")
        if host and host != "*":
            return f"http://{host}"
    return "http://localhost"


# --- unsubscribe ------------------------------------------------------------------------
def unsubscribe_token(user_id: int) -> str:
    """A token naming one user, signed with the site's SECRET_KEY."""
    return signing.dumps({"u": user_id}, salt=UNSUBSCRIBE_SALT, compress=False)


def unsubscribe_user_id(token: str) -> int | None:
    """The user a token names, or None if it is not one this site signed."""
    try:
        value = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    except signing.BadSignature:
        return None
    user_id = value.get("u") if isinstance(value, dict) else None
    return user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None


def unsubscribe_url(user_id: int) -> str:
    path = reverse("notifications:unsubscribe", args=[unsubscribe_token(user_id)])
    return site_url() + path


def unsubscribe(token: str) -> bool:
    """Turn e-mail off for the token's user; False for a token not ours."""
    user_id = unsubscribe_user_id(token)
    if user_id is None or not get_user_model().objects.filter(pk=user_id).exists():
        return False
    NotificationPreference.objects.update_or_create(user_id=user_id, defaults={"email": False})
    return True


# --- the digest --------------------------------------------------------------------------
def send_due(*, connection: Any = None) -> int:
    """Send every due digest; how many e-mails went out. Raises what the
    mail server raised (nothing of that round is marked: it is retried)."""
    sent = 0
    while True:
        done, claimed = _round(connection)
        sent += done
        if not claimed:
            return sent


def _round(connection: Any) -> tuple[int, int]:
    """One transaction: claim up to BATCH due rows, send, mark. (sent, claimed)."""
    alias = Notification.objects.db
    skip_locked = connections[alias].features.has_select_for_update_skip_locked
    cutoff = timezone.now() - timedelta(seconds=after_seconds())
    pending = Notification.objects.filter(read_at__isnull=True, email_state__isnull=True)
    with transaction.atomic(using=alias):
        due = pending.filter(created_at__lte=cutoff).order_by("created_at")
        if skip_locked:
            due = due.select_for_update(skip_locked=True)
        user_ids = set(due.values_list("recipient_id", flat=True)[:BATCH])
        if not user_ids:
            return 0, 0
        rows = pending.filter(recipient_id__in=user_ids).order_by("recipient_id", "pk")
        if skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        by_user: dict[int, list[Notification]] = {}
        for notification in rows:
            by_user.setdefault(notification.recipient_id, []).append(notification)
        try:
            online = users_connected(user_ids=by_user)
        except redisconn.ERRORS as exc:
            logger.warning("digests: cannot tell who is offline (%r); retrying later", exc)
            return 0, 0
        muted = set(
            NotificationPreference.objects.filter(user_id__in=by_user, email=False).values_list(
                "user_id", flat=True
            )
        )
        User = get_user_model()
        email_field = User.get_email_field_name()
        users = {u.pk: u for u in User.objects.filter(pk__in=by_user, is_active=True)}
        skipped: list[int] = []
        messages: list[tuple[list[int], mail.EmailMultiAlternatives]] = []
        for user_id, notifications in by_user.items():
            user = users.get(user_id)
            address = getattr(user, email_field, "") if user is not None else ""
            if user is None or not address or user_id in online or user_id in muted:
                skipped += [n.pk for n in notifications]
            else:
                messages.append(([n.pk for n in notifications], message(user, notifications)))
        emailed: list[int] = []
        failure: Exception | None = None
        if messages:
            smtp = connection or mail.get_connection(fail_silently=False)
            try:
                with smtp:
                    for ids, email in messages:
                        smtp.send_messages([email])
                        emailed += ids
            except Exception as exc:  # noqa: BLE001 - any mail error: retried next round
                failure = exc
        if skipped:
            Notification.objects.filter(pk__in=skipped).update(email_state=Notification.SKIPPED)
        if emailed:
            Notification.objects.filter(pk__in=emailed).update(email_state=Notification.EMAILED)
    if failure is not None:
        raise failure
    return len(messages), len(by_user)


def message(user: Any, notifications: list[Notification]) -> mail.EmailMultiAlternatives:
    """One user's digest: subject, plain text and HTML from the templates."""
    site = site_url()
    listed = [_entry(n, site) for n in notifications[:MAX_LISTED]]
    unsubscribe = unsubscribe_url(user.pk)
    context = {
        "user": user,
        "notifications": listed,
        "count": len(notifications),
        "more": max(0, len(notifications) - MAX_LISTED),
        "site_url": site + "/",
        "unsubscribe_url": unsubscribe,
    }
    subject = " ".join(render_to_string("notifications/digest_subject.txt", context).split())
    email = mail.EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("notifications/digest.txt", context),
        to=[getattr(user, user.get_email_field_name())],
        headers={
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
    )
    email.attach_alternative(render_to_string("notifications/digest.html", context), "text/html")
    return email


def _entry(notification: Notification, site: str) -> dict[str, Any]:
    """What the templates show of one notification."""
    payload = events.notification_payload(notification)
    data = notification.data if isinstance(notification.data, dict) else {}
    room = data.get("room")
    sender = data.get("from")
    return {
        **payload,
        "room": room if isinstance(room, str) else None,
        "url": f"{site}{reverse('chat:room', args=[room])}" if isinstance(room, str) else None,
        "sender": sender.get("username") if isinstance(sender, dict) else None,
        "text": str(data.get("excerpt") or data.get("text") or ""),
    }
