"""
The baseline of bench/topics.py: live data the plain Channels way. One
AsyncJsonWebsocketConsumer per connection joins one group per topic and
forwards every `group_send` event to its socket; nothing is stored,
sequenced or conflated, and daphne is not adjusted (its output to a client
that stopped reading piles up in Twisted's buffer, and the channel layer
drops what a full channel cannot take).

It speaks the subset of the project's topic protocol the benchmark uses, so
one client measures both: `{"type": "subscribe", "topic": T}` answers
`{"type": "subscribed", "topic": T}`, then each publication arrives as
`{"type": "publication", "topic", "offset", "key", "data"}`, with the offset
the publisher gave it (a gap is a publication the layer dropped).

Run: daphne bench.plain_topic_consumer:application, with REDIS_URL and
CHANNEL_LAYER_BACKEND=core (channels_redis' RedisChannelLayer as shipped);
publish with `await get_channel_layer().group_send(group_name(topic), event(...))`.
No authentication: it is accepted once per connection, nothing the
steady-state figures depend on.
"""

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402


def group_name(topic: str) -> str:
    """The group of a topic (group names allow no ':')."""
    return "topic." + topic.replace(":", ".")


def event(topic: str, offset: int, key: str | None, data: Any) -> dict:
    """What the publisher sends to the group."""
    return {"type": "topic.publication", "topic": topic, "offset": offset, "key": key, "data": data}


class PlainTopicConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.topic_groups: set[str] = set()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.topic_groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "subscribe":
            await self.send_json({"type": "error", "code": "BAD_REQUEST"})
            return
        topic = str(content.get("topic"))
        group = group_name(topic)
        await self.channel_layer.group_add(group, self.channel_name)
        self.topic_groups.add(group)
        await self.send_json({"type": "subscribed", "topic": topic})

    async def topic_publication(self, event: dict) -> None:
        await self.send_json(
            {
                "type": "publication",
                "topic": event["topic"],
                "offset": event["offset"],
                "key": event["key"],
                "data": event["data"],
            }
        )


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([re_path(r"^ws/$", PlainTopicConsumer.as_asgi())]),
    }
)
