"""
Provides mentions: the users a message names with `@username` are notified
(a `mention` notification, through notifications.services), if they may read
its room.
"""

import re

from django.contrib.auth import get_user_model
from django.db import transaction

from django_realtime.payloads import user_payload
from notifications.models import Notification
from notifications.services import db_alias, no_key_lock, notify_user_ids

from .models import Message, Room
from .selectors import users_who_may_read

MENTION = "mention"
EXCERPT_CHARS = 200
# A message may name at most this many users; more are ignored, so one
# message cannot fan out to a whole directory.
MAX_MENTIONS_PER_MESSAGE = 50

# `@name` not preceded by a word character or one of @.+- (so an e-mail
# address in a sentence is no mention), made of what Django's usernames may
# hold (\w and @.+-, so "@bob@example.com" names the user "bob@example.com"),
# ending on a word character (so "@bob." and "@bob," mention bob).
MENTION_RE = re.compile(r"(?<![\w@.+-])@([\w.@+-]*\w)")
LOCAL_NAME_RE = re.compile(r"[\w.+-]*\w")


def may_mention(content: str) -> bool:
    """False when `content` surely mentions no one (it has no @): the
    send's quick test, before any pattern runs."""
    return "@" in content


def mentions(content: str) -> list[str]:
    """The names `content` mentions, once each, in order, at most
    MAX_MENTIONS_PER_MESSAGE. A name with an @ in it also stands for what
    comes before its first @: "@bob@example.com" names "bob@example.com" and,
    where usernames are no addresses, "bob"."""
    names: list[str] = []
    for name in MENTION_RE.findall(content):
        names.append(name)
        local = name.split("@", 1)[0]
        if local != name and LOCAL_NAME_RE.fullmatch(local):
            names.append(local)
    return list(dict.fromkeys(names))[:MAX_MENTIONS_PER_MESSAGE]


def mentions_notify(*, message: Message, room: Room) -> list[Notification]:
    """Notify each user that `message` mentions and who may read `room`.

    Called by chat.services.message_send inside the storing transaction, for
    new messages only, so a retried send notifies nobody again. Never the
    author; at most once per user per message. Three queries at most: the
    names (locking those users, as notifications.services.lock_users does),
    their memberships, the insert.
    """
    names = mentions(message.content)
    if not names:
        return []
    User = get_user_model()
    with transaction.atomic(using=db_alias(), savepoint=False):
        user_ids = list(
            User.objects.filter(**{f"{User.USERNAME_FIELD}__in": names}, is_active=True)
            .exclude(pk=message.user_id)
            .select_for_update(no_key=no_key_lock())
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not user_ids:
            return []
        readers = users_who_may_read(room=room, user_ids=user_ids)
        data = {
            "room": room.slug,
            "message_id": message.pk,
            "seq": message.seq,
            "from": user_payload(message.user),
            "excerpt": message.content[:EXCERPT_CHARS],
        }
        return notify_user_ids(
            user_ids=[uid for uid in user_ids if uid in readers],
            kind=MENTION,
            data=data,
            locked=True,
        )
