"""Structured logs: every line about a user or a room says which."""

import contextvars
import json
import logging

from django_realtime.logcontext import ContextFilter, JsonFormatter, log_room, log_user


def test_a_log_line_carries_the_user_and_room_of_its_context():
    record = logging.LogRecord(
        "chat", logging.WARNING, __file__, 1, "send failed: %s", ("x",), None
    )
    user_token, room_token = log_user.set("42"), log_room.set("general")
    try:
        ContextFilter().filter(record)
    finally:
        log_user.reset(user_token)
        log_room.reset(room_token)
    line = json.loads(JsonFormatter().format(record))
    assert line["user"] == "42" and line["room"] == "general"
    assert line["message"] == "send failed: x" and line["level"] == "WARNING"


def test_outside_any_context_the_fields_say_so():
    record = logging.LogRecord("chat", logging.INFO, __file__, 1, "boot", (), None)
    contextvars.Context().run(ContextFilter().filter, record)
    assert (record.user, record.room) == ("-", "-")


def test_a_request_names_its_user_and_room_in_the_log(client, alice, general, caplog):
    """The middleware sets the context for the whole request."""
    client.force_login(alice)
    seen = {}

    class Spy(logging.Handler):
        def emit(self, record):
            seen["user"], seen["room"] = record.user, record.room

    handler = Spy()
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = client.get("/api/rooms/general/messages/?limit=abc")
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 400
    assert seen == {"user": str(alice.pk), "room": "general"}
