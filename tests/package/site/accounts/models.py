from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """The site's own user model, set before its first migration."""

    nickname = models.CharField(max_length=50, blank=True)
