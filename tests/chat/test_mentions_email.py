"""Mentions where usernames are e-mail addresses (contract §3): `@bob@example.com`
notifies the user bob@example.com, through the one-statement send's check as
well; an address written in a sentence still mentions nobody."""

import uuid

import pytest

from chat import mentions
from chat import services as chat_services
from notifications.models import Notification


def send(user, content):
    return chat_services.message_send(
        user=user, slug="general", content=content, client_id=str(uuid.uuid4())
    )


def mentioned(user) -> int:
    return Notification.objects.filter(recipient=user, kind="mention").count()


@pytest.fixture
def addressed(make_user):
    return make_user("alice@example.com"), make_user("bob@example.com")


@pytest.mark.parametrize(
    "content",
    ["@bob@example.com", "hi @bob@example.com, look", "(@bob@example.com)", "@bob@example.com."],
)
def test_a_username_that_is_an_email_address_is_mentioned(addressed, general, content):
    alice, bob = addressed
    send(alice, content)
    assert mentioned(bob) == 1


@pytest.mark.parametrize("content", ["mail bob@example.com", "@bob", "@bob@example.org"])
def test_an_address_in_a_sentence_or_another_name_mentions_nobody(addressed, general, content):
    alice, bob = addressed
    send(alice, content)
    assert mentioned(bob) == 0


def test_a_plain_username_followed_by_a_domain_is_still_mentioned(alice, bob, general):
    """Where usernames are no addresses, `@bob@example.com` names bob as it did."""
    send(alice, "@bob@example.com")
    assert mentioned(bob) == 1


def test_the_names_found():
    assert mentions.mentions("@a.b+c@mail.example.com and @carol: hi x@y.z") == [
        "a.b+c@mail.example.com",
        "a.b+c",
        "carol",
    ]
