"""
Provides Web Push (contract §11): the application server key, users'
subscriptions, and the delivery of a notification to the subscriptions of a
recipient with no connection open.

Why it is shaped so: docs/architecture.md, "notifications.push".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone
from py_vapid import Vapid02

from django_realtime import redisconn
from django_realtime.conf import realtime_settings
from django_realtime.errors import BadRequest
from django_realtime.limits import users_connected
from django_realtime.types import User

from . import events
from .models import Notification, NotificationPreference, PendingPush, PushSubscription

logger = logging.getLogger(__name__)

# Every server process looks for pushes nobody has sent this often: the
# bound on the delay of a push stored outside a server (a command, a worker).
RECHECK_SECONDS = 1.0
# A claim is held this long; a process that died holding it lets it lapse.
CLAIM_SECONDS = 30.0
MAX_ATTEMPTS = 3
# Rows claimed at once.
BATCH = 1000
MAX_ENDPOINT_CHARS = 2048
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# The JWT lives 12 h (RFC 8292 allows 24); a header is reused for an hour.
JWT_SECONDS = 12 * 3600
JWT_REUSE_SECONDS = 3600


# --- the key --------------------------------------------------------------------------
def enabled() -> bool:
    return bool(realtime_settings.WEBPUSH_VAPID_PRIVATE_KEY)


@cache
def _vapid(pem: str) -> Vapid02:
    return Vapid02.from_pem(pem.encode())


def vapid() -> Vapid02:
    """The VAPID key of REALTIME["WEBPUSH_VAPID_PRIVATE_KEY"]."""
    return _vapid(str(realtime_settings.WEBPUSH_VAPID_PRIVATE_KEY).strip())


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_key() -> str:
    """The application server key a browser subscribes with (base64url, uncompressed point)."""
    raw = vapid().public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


def generate_private_key_pem() -> str:
    """A new P-256 key as PEM (docs/integration.md: `python -m notifications.push`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# --- subscriptions --------------------------------------------------------------------
def endpoint_allowed(endpoint: str) -> bool:
    """Whether `endpoint` lies under one of REALTIME["WEBPUSH_ENDPOINTS"]:
    same scheme, host (a `*.` prefix matches subdomains) and port, and a path
    under the prefix's. https only, but for loopback (a test's stand-in)."""
    try:
        url = urlsplit(endpoint)
        port = url.port
    except ValueError:
        return False
    if url.username or url.password or not url.hostname or url.fragment:
        return False
    for prefix in realtime_settings.WEBPUSH_ENDPOINTS:
        try:
            allowed = urlsplit(str(prefix))
            allowed_port = allowed.port
        except ValueError:
            continue
        host = (allowed.hostname or "").lower()
        if allowed.scheme != url.scheme or allowed_port != port:
            continue
        if url.scheme == "http" and host not in LOOPBACK:
            continue
        if url.scheme not in ("http", "https"):
            continue
        if host.startswith("*."):
            if not url.hostname.lower().endswith(host[1:]):
                continue
        elif url.hostname.lower() != host:
            continue
        if url.path.startswith(allowed.path or "/"):
            return True
    return False


def _key_field(keys: dict, name: str, size: int) -> str:
    value = keys.get(name)
    if not isinstance(value, str) or len(value) > 128:
        raise BadRequest(f"keys.{name} must be a base64url string")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest(f"keys.{name} must be base64url") from None
    if len(raw) != size:
        raise BadRequest(f"keys.{name} must be {size} bytes")
    if name == "p256dh":
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise BadRequest("keys.p256dh is not a P-256 public key") from None
    return value


def subscribe(*, user: User, body: dict) -> PushSubscription:
    """Store a browser's PushSubscription.toJSON() for `user`. An endpoint
    outside WEBPUSH_ENDPOINTS, bad keys or one subscription past
    WEBPUSH_MAX_SUBSCRIPTIONS_PER_USER is BadRequest; nothing is sent."""
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or not 1 <= len(endpoint) <= MAX_ENDPOINT_CHARS:
        raise BadRequest(f"endpoint must be a URL of at most {MAX_ENDPOINT_CHARS} characters")
    if not endpoint_allowed(endpoint):
        raise BadRequest("endpoint is not a push service this site sends to (WEBPUSH_ENDPOINTS)")
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise BadRequest("keys must be an object with p256dh and auth")
    p256dh = _key_field(keys, "p256dh", 65)
    auth = _key_field(keys, "auth", 16)
    with transaction.atomic():
        # The user's row serialises their subscribes, so the cap holds.
        type(user).objects.select_for_update().filter(pk=user.pk).exists()
        existing = PushSubscription.objects.filter(endpoint=endpoint).first()
        if existing is None or existing.user_id != user.pk:
            cap = int(realtime_settings.WEBPUSH_MAX_SUBSCRIPTIONS_PER_USER)
            if cap and PushSubscription.objects.filter(user=user).count() >= cap:
                raise BadRequest(f"at most {cap} push subscriptions per user")
        # An endpoint is one browser's: subscribing it again (another user
        # signed in there) moves it.
        subscription, _ = PushSubscription.objects.update_or_create(
            endpoint=endpoint, defaults={"user": user, "p256dh": p256dh, "auth": auth}
        )
    return subscription


def unsubscribe(*, user: User, body: dict) -> int:
    """Remove the user's subscription of `endpoint` (how many were removed)."""
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or len(endpoint) > MAX_ENDPOINT_CHARS:
        raise BadRequest("endpoint must be a URL")
    deleted, _ = PushSubscription.objects.filter(user=user, endpoint=endpoint).delete()
    return deleted


# --- the queue ------------------------------------------------------------------------
def enqueue(stored: list[Notification], using: str) -> None:
    """In notify()'s transaction: a PendingPush for each notification whose
    recipient has a subscription and push on. One query when nobody has one."""
    if not enabled() or not stored:
        return
    recipients = {n.recipient_id for n in stored}
    subscribed = set(
        PushSubscription.objects.using(using)
        .filter(user_id__in=recipients)
        .exclude(user__notification_preference__push=False)
        .values_list("user_id", flat=True)
        .distinct()
    )
    if subscribed:
        PendingPush.objects.using(using).bulk_create(
            [PendingPush(notification_id=n.pk) for n in stored if n.recipient_id in subscribed]
        )


@dataclass
class Request:
    notification_id: int
    subscription_id: int
    endpoint: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Batch:
    claimed: list[int] = field(default_factory=list)  # PendingPush ids, deleted once done
    requests: list[Request] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)  # left to lapse: Redis did not answer


def claim(limit: int = BATCH) -> list[int]:
    """Claim up to `limit` due pushes no other process holds (SKIP LOCKED)."""
    now = timezone.now()
    alias = PendingPush.objects.db
    with transaction.atomic(using=alias):
        qs = PendingPush.objects.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        if connections[alias].features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True)
        ids = list(qs.order_by("pk").values_list("pk", flat=True)[:limit])
        if ids:
            PendingPush.objects.filter(pk__in=ids).update(
                claimed_until=now + timedelta(seconds=CLAIM_SECONDS), attempts=F("attempts") + 1
            )
    return ids


def prepare(limit: int = BATCH) -> Batch:
    """Claim due pushes and build their requests: only for unread
    notifications of recipients still offline with push on."""
    batch = Batch(claimed=claim(limit))
    if not batch.claimed:
        return batch
    spent = set(
        PendingPush.objects.filter(pk__in=batch.claimed, attempts__gt=MAX_ATTEMPTS).values_list(
            "pk", flat=True
        )
    )
    rows = list(
        Notification.objects.filter(pk__in=batch.claimed, read_at__isnull=True).exclude(
            pk__in=spent
        )
    )
    recipients = {n.recipient_id for n in rows}
    try:
        online = users_connected(user_ids=recipients)
    except redisconn.ERRORS as exc:
        logger.warning("push: cannot tell who is offline (%r); retrying later", exc)
        batch.retry = [n.pk for n in rows]
        batch.claimed = [pk for pk in batch.claimed if pk not in set(batch.retry)]
        return batch
    muted = set(
        NotificationPreference.objects.filter(user_id__in=recipients, push=False).values_list(
            "user_id", flat=True
        )
    )
    offline = recipients - online - muted
    subscriptions: dict[int, list[PushSubscription]] = {}
    for sub in PushSubscription.objects.filter(user_id__in=offline):
        subscriptions.setdefault(sub.user_id, []).append(sub)
    for notification in rows:
        for sub in subscriptions.get(notification.recipient_id, []):
            try:
                batch.requests.append(_request(notification, sub))
            except Exception:  # noqa: BLE001 - one bad subscription never stops the rest
                logger.exception("push: cannot encrypt for subscription %s", sub.pk)
    return batch


def _request(notification: Notification, sub: PushSubscription) -> Request:
    payload = json.dumps(
        events.notification_frame(notification), ensure_ascii=False, separators=(",", ":")
    ).encode()
    body = http_ece.encrypt(
        payload,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=base64.urlsafe_b64decode(sub.p256dh + "=" * (-len(sub.p256dh) % 4)),
        auth_secret=base64.urlsafe_b64decode(sub.auth + "=" * (-len(sub.auth) % 4)),
        version="aes128gcm",
    )
    headers = {
        "TTL": str(int(realtime_settings.WEBPUSH_TTL_SECONDS)),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Urgency": "normal",
        "Authorization": _authorization(sub.endpoint),
    }
    return Request(notification.pk, sub.pk, sub.endpoint, headers, body)


_jwts: dict[str, tuple[float, str]] = {}


def _authorization(endpoint: str) -> str:
    """`vapid t=<JWT>,k=<key>` for the endpoint's origin (the JWT's `aud`)."""
    url = urlsplit(endpoint)
    audience = f"{url.scheme}://{url.netloc}"
    now = time.time()
    held = _jwts.get(audience)
    if held is not None and held[0] > now:
        return held[1]
    subject = realtime_settings.WEBPUSH_VAPID_SUBJECT or f"mailto:{settings.DEFAULT_FROM_EMAIL}"
    header = vapid().sign({"aud": audience, "sub": subject, "exp": int(now) + JWT_SECONDS})
    value = str(header["Authorization"])
    _jwts[audience] = (now + JWT_REUSE_SECONDS, value)
    return value


def finish(*, claimed: list[int], gone: list[int]) -> None:
    """The claimed pushes are done; the subscriptions a push service said are gone, removed."""
    if claimed:
        PendingPush.objects.filter(pk__in=claimed).delete()
    if gone:
        PushSubscription.objects.filter(pk__in=gone).delete()


async def post_all(requests: list[Request], client: httpx.AsyncClient) -> list[int]:
    """One POST per request, WEBPUSH_CONCURRENCY at a time, each bounded by
    WEBPUSH_TIMEOUT_SECONDS; the ids of subscriptions answered 404 or 410."""
    limit = asyncio.Semaphore(max(1, int(realtime_settings.WEBPUSH_CONCURRENCY)))
    gone: list[int] = []

    async def post(request: Request) -> None:
        async with limit:
            try:
                response = await client.post(
                    request.endpoint, content=request.body, headers=request.headers
                )
            except httpx.HTTPError as exc:
                logger.info("push to subscription %s failed: %r", request.subscription_id, exc)
                return
        if response.status_code in (404, 410):
            gone.append(request.subscription_id)
        elif response.status_code >= 300:
            logger.info(
                "push to subscription %s: %s %s",
                request.subscription_id,
                response.status_code,
                response.text[:200],
            )

    await asyncio.gather(*(post(r) for r in requests))
    return gone


def client() -> httpx.AsyncClient:
    """An HTTP client for push services: bounded pool and timeouts, no redirects
    (a push service that redirects is not followed anywhere)."""
    concurrency = max(1, int(realtime_settings.WEBPUSH_CONCURRENCY))
    return httpx.AsyncClient(
        timeout=float(realtime_settings.WEBPUSH_TIMEOUT_SECONDS),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        follow_redirects=False,
        trust_env=False,
    )


async def send_due(http: httpx.AsyncClient, db: Any) -> int:
    """Send every due push, batch by batch; how many requests were made.
    `db` runs a function off the event loop (django_realtime.asyncdb.db)."""
    made = 0
    while True:
        batch: Batch = await db(prepare)
        if not batch.claimed and not batch.retry:
            return made
        gone = await post_all(batch.requests, http) if batch.requests else []
        made += len(batch.requests)
        await db(finish, claimed=batch.claimed, gone=gone)
        if not batch.claimed:
            return made  # only retries left: they wait for their claim to lapse
