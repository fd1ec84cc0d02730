"""
Provides the security headers of the package's pages, and a middleware that
gives a whole site the same (the demo uses it; the admin works under it).

(docs/architecture.md, "Why the modules are as they are")
"""

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase


def policy(*, inline_styles: bool = False) -> str:
    """The Content-Security-Policy. `inline_styles` only for the API docs page:
    Swagger UI inserts style elements (its scripts stay 'self' only)."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'" if inline_styles else "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


CONTENT_SECURITY_POLICY = policy()
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def add_headers(response: HttpResponseBase) -> HttpResponseBase:
    """HEADERS on `response`, except those it has already."""
    for name, value in HEADERS.items():
        if name not in response:
            response[name] = value
    return response


class SecurityHeadersMiddleware:
    """add_headers() on every response of the site, sync or async (so an async
    view, an SSE stream, costs no hop to a thread)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return add_headers(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        return add_headers(await self.get_response(request))
