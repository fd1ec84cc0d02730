"""
Provides the demo's own views: its login page, Django's LoginView with the
package's login throttle (django_realtime.logins), as a site would wire it.
"""

from django.contrib.auth import views as auth_views

from django_realtime.logins import ThrottledAuthenticationForm, ThrottledLoginMixin


class LoginView(ThrottledLoginMixin, auth_views.LoginView):
    """Failed attempts per address and per username; past either, 429 and the message."""

    authentication_form = ThrottledAuthenticationForm
