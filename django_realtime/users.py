"""
Provides what the package asks of the site's user model (AUTH_USER_MODEL,
custom or not): the lookup path of its username field, for sorting and search.
"""

from django.contrib.auth import get_user_model


def username_path(prefix: str) -> str:
    """`prefix__<USERNAME_FIELD>`: "user__username" for Django's own user."""
    return f"{prefix}__{get_user_model().USERNAME_FIELD}"
