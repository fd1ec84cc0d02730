"""
Provides a throttle for a site's own login form (contract §2): failed
attempts per client address (REALTIME["LOGIN_FORM_RATE"]) and per username
(REALTIME["LOGIN_FORM_USERNAME_RATE"]), counted by the package's limiter, so
across every process once the package has a Redis.

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import math
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpResponse

from .conf import realtime_settings
from .errors import RateLimited
from .limits import limiter
from .rest import client_address

THROTTLED = "throttled"
# A username longer than this is cut in its key (a key stays bounded).
MAX_USERNAME_KEY_CHARS = 150


def attempt_keys(request: Any, username: str) -> list[tuple[tuple, str]]:
    """The windows (key, rate) one login attempt counts in; rates set to off are left out."""
    windows = [
        (
            ("login-form", "address", client_address(request.META)),
            realtime_settings.LOGIN_FORM_RATE,
        ),
        (
            ("login-form", "username", username.casefold()[:MAX_USERNAME_KEY_CHARS]),
            realtime_settings.LOGIN_FORM_USERNAME_RATE,
        ),
    ]
    return [(key, str(rate)) for key, rate in windows if rate not in (None, "")]


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's AuthenticationForm whose attempts count against the login rates."""

    retry_after_seconds: float = 0.0

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password or self.request is None:
            return super().clean()  # the field errors say what is missing; nothing tried
        taken: list[tuple] = []
        try:
            for key, rate in attempt_keys(self.request, username):
                limiter.hit(key, rate)
                taken.append(key)
        except RateLimited as exc:
            for key in taken:
                limiter.refund(key)  # a refused attempt counts nowhere
            self.retry_after_seconds = exc.retry_after_seconds
            raise forms.ValidationError(
                "Too many failed attempts; try again in %(seconds)d s.",
                code=THROTTLED,
                params={"seconds": max(1, math.ceil(exc.retry_after_seconds))},
            ) from None
        cleaned = super().clean()  # ValidationError: a failed attempt, and it stays counted
        for key in taken:
            limiter.refund(key)
        return cleaned


class ThrottledLoginMixin:
    """For a LoginView whose form is a ThrottledAuthenticationForm: a
    throttled attempt is answered 429 with Retry-After, the form shown again."""

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)  # type: ignore[misc]
        if form.has_error(NON_FIELD_ERRORS, THROTTLED):
            response.status_code = 429
            response["Retry-After"] = str(max(1, math.ceil(form.retry_after_seconds)))
        return response
