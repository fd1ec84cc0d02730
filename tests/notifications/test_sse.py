"""The SSE streams in-process, on the in-memory layer: the wire format, the
Last-Event-ID rules and what a stream leaves behind when its client goes.
Over real sockets they are tested in tests/live/test_notifications_live.py."""

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import RequestFactory

from chat.sse import RoomStream
from django_realtime import sse
from django_realtime.bus import room_group, user_group
from notifications import services
from notifications.sse import NotificationStream


def test_an_event_is_id_event_and_one_line_of_json():
    chunk = sse.sse_event(event="message", data={"content": "two\nlines é"}, event_id=7)
    assert chunk == 'id: 7\nevent: message\ndata: {"content":"two\\nlines é"}\n\n'.encode()


def test_an_event_without_an_id_leaves_last_event_id_alone():
    assert not sse.sse_event(event="kicked", data={}).startswith(b"id:")


def test_the_head_suggests_a_retry_of_at_least_a_second():
    assert sse.stream_head(42) == b"retry: 3000\nid: 42\n\n"
    assert sse.stream_head(None) == b"retry: 3000\n\n"
    assert sse.RETRY_MS >= 1000


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        ("17", None, 17),
        (" 17 ", None, 17),
        ("0", None, 0),
        (None, "5", 5),
        ("3", "5", 3),
        ("abc", None, None),
        ("-1", None, None),
        ("1.5", None, None),
        ("9" * 19, None, None),
        ("١٢", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_last_event_id_is_a_non_negative_integer_or_none(header, query, expected):
    headers = {} if header is None else {"HTTP_LAST_EVENT_ID": header}
    params = {} if query is None else {"last_event_id": query}
    request = RequestFactory().get("/events/notifications/", params, **headers)
    assert sse.last_event_id(request) == expected


@pytest.mark.django_db(transaction=True)
async def test_a_stream_leaves_its_groups_when_the_client_goes(make_user, general):
    """Django cancels the response when the client disconnects: the stream's
    channel leaves every group and the user's stream count drops."""
    bob = await sync_to_async(make_user)("bob")
    layer = get_channel_layer()
    stream = RoomStream(user=bob, room=general, since=None)
    body = sse.pump(stream)
    assert await anext(body) == b"retry: 3000\nid: 0\n\n"
    groups = [room_group(general.pk), user_group(bob.pk)]
    assert all(len(layer.groups.get(g, {})) == 1 for g in groups)
    assert sse.open_streams.held(bob.pk) == 1
    waiting = asyncio.ensure_future(anext(body))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert not any(layer.groups.get(g) for g in groups)
    assert sse.open_streams.held(bob.pk) == 0


@pytest.mark.django_db(transaction=True)
async def test_a_doorbell_overtaken_by_a_later_one_loses_nothing(make_user):
    """Two notifications whose doorbells arrive in the wrong order (two server
    processes): the stream answers the first doorbell from the database with
    both, in id order, and drops the second."""
    bob = await sync_to_async(make_user)("bob")
    stream = NotificationStream(user_id=bob.pk, last=None)
    await stream.start()
    first = await sync_to_async(services.notify)(recipient=bob, kind="k", data={})
    second = await sync_to_async(services.notify)(recipient=bob, kind="k", data={})
    late = await stream.on_event({"type": "notify.notification", "id": second.pk})
    assert [c.split(b"\n")[0] for c in late] == [
        f"id: {first.pk}".encode(),
        f"id: {second.pk}".encode(),
    ]
    assert await stream.on_event({"type": "notify.notification", "id": first.pk}) == []
