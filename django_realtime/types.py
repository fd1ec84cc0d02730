"""
Provides the types the package's signatures share.

`User` is the site's user model (AUTH_USER_MODEL, custom or not). The type
checker sees the model of the settings it checks with (the demo's, Django's
own `auth.User`); at run time it is only a name.
"""

from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from django.contrib.auth.models import User as _User

    User: TypeAlias = _User
else:
    User = Any

__all__ = ["User"]
