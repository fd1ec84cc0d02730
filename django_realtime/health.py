"""
Provides healthz (the process is up), readyz (the database and Redis answer)
and metrics (Prometheus), served by django_realtime.urls. The probes are
public and cheap; metrics answers a staff user or `Authorization: Bearer
<REALTIME["METRICS_TOKEN"]>`, and 404 to anyone else.
"""

import hmac

import redis
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from django_realtime.conf import realtime_settings, redis_url

PROBE_TIMEOUT_SECONDS = 2


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _check_database(), "redis": _check_redis()}
    ready = all(value in {"ok", "not configured"} for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status=200 if ready else 503
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text for a staff user or the bearer of METRICS_TOKEN; a 404
    (as for a path that does not exist) for anyone else."""
    if not (_bearer_ok(request) or _staff(request)):
        raise Http404("no such page")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


def _bearer_ok(request: HttpRequest) -> bool:
    token = realtime_settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), str(token).encode())


def _staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)  # None without AuthenticationMiddleware
    return bool(user is not None and user.is_active and user.is_staff)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001
        connection.close()
        return f"error: {type(exc).__name__}"


def _check_redis() -> str:
    url = redis_url()
    if not url:
        return "not configured"
    client = redis.Redis.from_url(
        url,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"
    finally:
        client.close()
