"""
Provides RealtimeAPIView, the base of every REST view of the package: its own
authentication, permissions, JSON, throttles, schema and exception handler,
so a site's REST_FRAMEWORK neither breaks nor loosens it (docs/integration.md,
"Your own code"; docs/architecture.md, "django_realtime.rest").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db import Error as DatabaseError
from django.http import HttpRequest
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema as spectacular_extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.exceptions import NotAuthenticated
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from .conf import realtime_settings
from .errors import BadRequest, ClientError, RateLimited
from .limits import limiter
from .logcontext import RequestContextMiddleware
from .strictjson import StrictJSONParser
from .types import User

MAX_PAGE = 100
# An address longer than this (none is) is cut, so a key stays bounded.
MAX_ADDRESS_CHARS = 64
DEFAULT_PAGE = 50


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """ClientError → its status and code; a database outage → 503 UNAVAILABLE;
    anything else as DRF's own handler says."""
    # `_user`, not `user`: reading `user` would authenticate again, and the
    # error being handled may be the database failing to do just that.
    RequestContextMiddleware.note_user(getattr(context.get("request"), "_user", None))
    if isinstance(exc, ClientError):
        response = Response({"detail": exc.message, "code": exc.code}, status=exc.status)
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(max(1, round(exc.retry_after_seconds)))
        return response
    if isinstance(exc, DatabaseError):
        return Response(
            {"detail": "storage is unavailable; retry shortly", "code": "UNAVAILABLE"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return drf_exception_handler(exc, context)


def client_address(meta: Mapping[str, Any]) -> str:
    """The client's address as the server sees it (contract §2): the socket's
    (REMOTE_ADDR), or, with REALTIME["TRUSTED_PROXY_COUNT"] = N, the address N
    hops from the right of X-Forwarded-For (the one the outermost trusted proxy
    saw), as DRF's NUM_PROXIES reads it. A client's own X-Forwarded-For,
    Forwarded or X-Real-IP moves nothing by default."""
    remote = str(meta.get("REMOTE_ADDR") or "")
    hops = int(realtime_settings.TRUSTED_PROXY_COUNT or 0)
    if hops > 0:
        chain = [a.strip() for a in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
        chain = [a for a in chain if a]
        if chain:
            return chain[-min(hops, len(chain))][:MAX_ADDRESS_CHARS]
    return remote[:MAX_ADDRESS_CHARS] or "unknown"


class RealtimeRateThrottle(BaseThrottle):
    """A throttle whose rate is a REALTIME key, read at call time, counted by
    the package's limiter: in Redis across every process when the package has
    one (failing open to this process's count while Redis does not answer),
    else per process. Past the rate: 429 RATE_LIMITED with Retry-After."""

    scope: str = ""
    setting: str = ""

    def key(self, request: Request) -> tuple | None:
        """The window a request counts in; None: not counted."""
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        rate = getattr(realtime_settings, self.setting)
        key = self.key(request)
        if rate in (None, "") or key is None:
            return True
        limiter.hit((self.scope, *key), str(rate))  # RateLimited: 429 with Retry-After
        return True


class UserThrottle(RealtimeRateThrottle):
    """Calls per authenticated user (REALTIME["API_USER_RATE"])."""

    scope = "realtime_user"
    setting = "API_USER_RATE"

    def key(self, request: Request) -> tuple | None:
        if not (request.user and request.user.is_authenticated):
            return None  # refused by the permission check anyway
        return (request.user.pk,)


class LoginThrottle(RealtimeRateThrottle):
    """Token logins per client address (REALTIME["API_LOGIN_RATE"])."""

    scope = "realtime_login"
    setting = "API_LOGIN_RATE"

    def key(self, request: Request) -> tuple | None:
        return (client_address(request.META),)


class RealtimeAPIView(APIView):
    """An APIView that takes none of its policies from the site's defaults."""

    # Token first, so an anonymous request gets 401 with WWW-Authenticate.
    authentication_classes: list = [TokenAuthentication, SessionAuthentication]
    permission_classes: list = [IsAuthenticated]
    renderer_classes: list = [JSONRenderer]
    parser_classes: list[type[BaseParser]] = [StrictJSONParser]
    throttle_classes: list = [UserThrottle]
    schema = AutoSchema()

    def get_exception_handler(self) -> Any:
        return exception_handler


def extend_schema(**kwargs: Any) -> Any:
    """drf-spectacular's extend_schema, built on drf-spectacular's AutoSchema
    whatever the site's DEFAULT_SCHEMA_CLASS (which it would take otherwise)."""

    def decorator(method: Any) -> Any:
        method.schema = AutoSchema  # the base extend_schema looks for first
        return spectacular_extend_schema(**kwargs)(method)

    return decorator


def request_user(request: Request | HttpRequest) -> User:
    """The user of a request its view requires to be signed in (RealtimeAPIView's
    IsAuthenticated, or login_required, ran before)."""
    user = request.user
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        raise NotAuthenticated()
    return user


def body_object(request: Request) -> dict:
    """The request's JSON body, which must be an object."""
    if not isinstance(request.data, dict):
        raise BadRequest("the body must be a JSON object")
    return request.data


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit() is True
        raise BadRequest(f"'{name}' must be a non-negative integer")
    return int(raw)


def page_params(request: Request) -> tuple[int | None, int | None, int]:
    """A cursor page's `before`, `after` and `limit` (1 to 100, larger capped)."""
    before, after = int_param(request, "before"), int_param(request, "after")
    limit = int_param(request, "limit", DEFAULT_PAGE)
    assert limit is not None
    if limit < 1:
        raise BadRequest("'limit' must be at least 1")
    return before, after, min(limit, MAX_PAGE)
