"""The index page stays bounded however many rooms the site has (issue 28)."""

import re
import uuid

from chat import services
from chat.models import Room
from chat.pages import INDEX_ROOMS


def slugs_listed(html: str) -> list[str]:
    room_list = html.split('id="room-list"', 1)[1].split("</ul>", 1)[0]
    return re.findall(r'class="room-item[^"]*" data-slug="([^"]+)"', room_list)


def test_the_index_shows_a_page_of_rooms_and_a_way_to_the_next(client, alice):
    Room.objects.bulk_create(Room(slug=f"r{i:03}", name=f"Room {i}") for i in range(120))
    client.force_login(alice)
    first = client.get("/").content.decode()
    assert slugs_listed(first) == [f"r{i:03}" for i in range(INDEX_ROOMS)]
    more = re.search(r'id="more-rooms" href="([^"]+)"', first)
    assert more is not None
    second = client.get(more.group(1).replace("&amp;", "&")).content.decode()
    assert slugs_listed(second) == [f"r{i:03}" for i in range(INDEX_ROOMS, 2 * INDEX_ROOMS)]
    assert len(first) < 60_000


def test_rooms_with_unread_messages_come_first(client, alice, bob):
    Room.objects.bulk_create(Room(slug=f"r{i:03}", name=f"Room {i}") for i in range(80))
    services.room_join(user=alice, slug="r079")
    services.message_send(user=bob, slug="r079", content="hi", client_id=str(uuid.uuid4()))
    client.force_login(alice)
    html = client.get("/").content.decode()
    unread = html.split('id="unread-rooms"', 1)[1].split("</ul>", 1)[0]
    assert 'data-slug="r079"' in unread and ">1</span>" in unread
