"""Moderation: the services that hide messages and ban or mute members, what
they send after commit, the audit trail they leave, and the admin that calls
them."""

import re
import uuid

import pytest

from chat import events, selectors, services
from chat.models import Membership, Message, ModerationAction
from django_realtime.errors import Forbidden, NotFound

Action = ModerationAction.Action


def send(user, slug="general", content="hi"):
    """The stored message (its row)."""
    sent = services.message_send(user=user, slug=slug, content=content, client_id=str(uuid.uuid4()))
    return Message.objects.get(pk=sent.id)


@pytest.fixture
def sent(monkeypatch):
    """What the services hand to the channel layer (after commit), by event."""
    record = {"message_deleted": [], "kicked": []}
    monkeypatch.setattr(
        events, "broadcast_message_deleted", lambda **kw: record["message_deleted"].append(kw)
    )
    monkeypatch.setattr(events, "notify_kicked", lambda **kw: record["kicked"].append(kw))
    return record


@pytest.fixture
def staff(make_user):
    return make_user("mod", is_staff=True)


# --- message_delete -----------------------------------------------------------------


def test_a_deleted_message_is_hidden_and_the_room_told_after_commit(
    staff, alice, general, sent, django_capture_on_commit_callbacks
):
    message = send(alice, content="spam")
    with django_capture_on_commit_callbacks() as callbacks:
        services.message_delete(moderator=staff, message_id=message.pk, reason="spam")
        assert sent["message_deleted"] == [], "nothing is sent before the commit"
    for callback in callbacks:
        callback()
    assert sent["message_deleted"] == [
        {"room_id": general.pk, "room_slug": "general", "message_id": message.pk, "seq": 1}
    ]
    message.refresh_from_db()
    assert message.is_deleted, "hidden, not deleted: the row and its seq stay"


def test_a_hidden_message_leaves_history_and_unread_counts_and_seqs_stay_gap_free(
    staff, alice, bob, general, api, django_capture_on_commit_callbacks
):
    services.room_join(user=bob, slug="general")
    first, second = send(alice, content="one"), send(alice, content="two")
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(moderator=staff, message_id=first.pk)
    history = api(bob).get("/api/rooms/general/messages/").json()["results"]
    assert [m["content"] for m in history] == ["two"]
    assert selectors.rooms_visible(user=bob).get(slug="general").unread_count == 1
    assert send(alice, content="three").seq == second.seq + 1


def test_the_audit_trail_records_who_deleted_what_and_why(
    staff, alice, general, django_capture_on_commit_callbacks
):
    message = send(alice, content="rude")
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(moderator=staff, message_id=message.pk, reason="  rude  ")
    row = ModerationAction.objects.get()
    assert (row.moderator, row.action, row.room, row.target_user, row.message, row.reason) == (
        staff,
        Action.MESSAGE_DELETE,
        general,
        alice,
        message,
        "rude",
    )


def test_deleting_a_deleted_message_sends_and_records_nothing_more(
    staff, alice, general, sent, django_capture_on_commit_callbacks
):
    message = send(alice)
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(moderator=staff, message_id=message.pk)
        services.message_delete(moderator=staff, message_id=message.pk)
    assert len(sent["message_deleted"]) == 1
    assert ModerationAction.objects.count() == 1


def test_only_staff_and_the_rooms_moderators_may_delete(
    alice, bob, carol, general, sent, django_capture_on_commit_callbacks
):
    """A member is refused with FORBIDDEN; a room moderator may delete a
    member's message but not the owner's."""
    message = send(alice)
    with pytest.raises(Forbidden):
        services.message_delete(moderator=bob, message_id=message.pk)
    Membership.objects.create(room=general, user=carol, role=Membership.Role.MODERATOR)
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(moderator=carol, message_id=message.pk)
    assert len(sent["message_deleted"]) == 1
    owners = send(bob)
    Membership.objects.filter(room=general, user=bob).update(role=Membership.Role.OWNER)
    with pytest.raises(Forbidden):
        services.message_delete(moderator=carol, message_id=owners.pk)


def test_an_unknown_message_is_not_found(staff, db):
    with pytest.raises(NotFound):
        services.message_delete(moderator=staff, message_id=10**9)


# --- bans and mutes ---------------------------------------------------------------------


def test_a_ban_kicks_every_connection_of_the_user_and_refuses_the_room(
    staff, alice, general, sent, django_capture_on_commit_callbacks
):
    send(alice)
    with django_capture_on_commit_callbacks(execute=True):
        services.member_ban(moderator=staff, room=general, user=alice, reason="flooding")
    assert sent["kicked"] == [
        {"user_id": alice.pk, "room_id": general.pk, "room_slug": "general", "reason": "flooding"}
    ]
    for attempt in (
        lambda: services.room_join(user=alice, slug="general"),
        lambda: send(alice),
        lambda: services.read_mark(user=alice, slug="general", seq=1),
    ):
        with pytest.raises(Forbidden):
            attempt()
    row = ModerationAction.objects.get()
    assert (row.action, row.target_user, row.reason) == (Action.BAN, alice, "flooding")


def test_a_user_who_never_joined_a_public_room_can_be_banned_from_it(
    staff, alice, general, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.member_ban(moderator=staff, room=general, user=alice)
    with pytest.raises(Forbidden):
        services.room_join(user=alice, slug="general")


def test_an_unbanned_user_may_join_again(staff, alice, general, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.member_ban(moderator=staff, room=general, user=alice)
        services.member_unban(moderator=staff, room=general, user=alice)
    services.room_join(user=alice, slug="general")
    assert list(ModerationAction.objects.order_by("id").values_list("action", flat=True)) == [
        Action.BAN,
        Action.UNBAN,
    ]


def test_a_muted_member_may_read_but_not_post_until_unmuted(staff, alice, general):
    send(alice, content="before")
    services.member_mute(moderator=staff, room=general, user=alice)
    with pytest.raises(Forbidden, match="muted"):
        send(alice, content="during")
    assert services.room_join(user=alice, slug="general")[1].is_muted
    assert services.read_mark(user=alice, slug="general", seq=1) == 1
    services.member_unmute(moderator=staff, room=general, user=alice)
    assert send(alice, content="after").seq == 2
    assert list(ModerationAction.objects.order_by("id").values_list("action", flat=True)) == [
        Action.MUTE,
        Action.UNMUTE,
    ]


def test_muting_a_stranger_to_a_private_room_grants_nothing(staff, bob, secret):
    with pytest.raises(NotFound):
        services.member_mute(moderator=staff, room=secret, user=bob)
    assert not Membership.objects.filter(room=secret, user=bob).exists()
    assert services.member_unmute(moderator=staff, room=secret, user=bob) is None
    assert not ModerationAction.objects.exists()


def test_a_member_may_not_ban_and_a_moderator_may_not_ban_staff(alice, bob, carol, staff, general):
    with pytest.raises(Forbidden):
        services.member_ban(moderator=bob, room=general, user=alice)
    Membership.objects.create(room=general, user=carol, role=Membership.Role.MODERATOR)
    with pytest.raises(Forbidden):
        services.member_ban(moderator=carol, room=general, user=staff)
    assert not Membership.objects.filter(is_banned=True).exists()


def test_removing_a_member_of_a_private_room_kicks_them_out(
    staff, alice, bob, secret, sent, django_capture_on_commit_callbacks
):
    services.member_invite(inviter=alice, slug="secret", username="bob")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.member_remove(moderator=staff, room=secret, user=bob)
    assert [k["user_id"] for k in sent["kicked"]] == [bob.pk]
    with pytest.raises(NotFound):  # for bob the room no longer exists
        services.room_join(user=bob, slug="secret")
    assert ModerationAction.objects.get().action == Action.REMOVE


# --- the admin ---------------------------------------------------------------------------


def changelist_action(client, model, action, ids, **extra):
    return client.post(
        f"/admin/chat/{model}/",
        {"action": action, "_selected_action": [str(i) for i in ids], "index": 0, **extra},
    )


def test_the_admin_hide_action_hides_and_broadcasts_with_the_given_reason(
    admin_client, admin_user, alice, general, sent, django_capture_on_commit_callbacks
):
    a, b = send(alice, content="a"), send(alice, content="b")
    with django_capture_on_commit_callbacks(execute=True):
        response = changelist_action(
            admin_client, "message", "hide_selected", [a.pk, b.pk], reason="off topic"
        )
    assert response.status_code == 302
    assert sorted(e["seq"] for e in sent["message_deleted"]) == [1, 2]
    assert Message.objects.filter(is_deleted=True).count() == 2
    assert set(ModerationAction.objects.values_list("moderator", "reason")) == {
        (admin_user.pk, "off topic")
    }


def test_deleting_a_message_in_the_admin_hides_it_instead(
    admin_client, alice, general, sent, django_capture_on_commit_callbacks
):
    """From its page and with the bulk delete action alike, the row stays
    (is_deleted) and the room is told."""
    a, b = send(alice, content="a"), send(alice, content="b")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/chat/message/{a.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        changelist_action(admin_client, "message", "delete_selected", [b.pk], post="yes")
    assert Message.objects.count() == 2
    assert Message.objects.filter(is_deleted=True).count() == 2
    assert sorted(e["message_id"] for e in sent["message_deleted"]) == sorted([a.pk, b.pk])


def test_the_admin_cannot_add_or_edit_messages(admin_client, alice, general):
    message = send(alice)
    assert admin_client.get("/admin/chat/message/add/").status_code == 403
    admin_client.post(
        f"/admin/chat/message/{message.pk}/change/", {"content": "edited", "is_deleted": "on"}
    )
    message.refresh_from_db()
    assert (message.content, message.is_deleted) == ("hi", False)


def test_message_content_is_escaped_in_the_admin_list(admin_client, alice, general):
    send(alice, content='<script>alert("x")</script><img src=x onerror=alert(1)>')
    html = admin_client.get("/admin/chat/message/").content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "<img src=x onerror" not in html
    assert '<script>alert("x")' not in html


def test_messages_are_searchable_and_filterable_by_room_and_user(
    admin_client, alice, bob, general, secret
):
    send(alice, content="needle in general")
    send(bob, content="hay")
    send(alice, slug="secret", content="needle in secret")
    found = admin_client.get("/admin/chat/message/", {"q": "needle"}).content.decode()
    assert "needle in general" in found and "needle in secret" in found and "hay" not in found
    by_room = admin_client.get("/admin/chat/message/", {"room__id__exact": general.pk})
    assert "needle in secret" not in by_room.content.decode()
    by_user = admin_client.get("/admin/chat/message/", {"user__id__exact": bob.pk})
    assert "hay" in by_user.content.decode() and "needle" not in by_user.content.decode()


def test_membership_actions_ban_and_mute_through_the_services(
    admin_client, alice, bob, general, sent, django_capture_on_commit_callbacks
):
    services.room_join(user=alice, slug="general")
    services.room_join(user=bob, slug="general")
    alice_m = Membership.objects.get(user=alice)
    bob_m = Membership.objects.get(user=bob)
    with django_capture_on_commit_callbacks(execute=True):
        changelist_action(admin_client, "membership", "ban", [alice_m.pk], reason="abuse")
        changelist_action(admin_client, "membership", "mute", [bob_m.pk])
    assert sent["kicked"] == [
        {"user_id": alice.pk, "room_id": general.pk, "room_slug": "general", "reason": "abuse"}
    ]
    alice_m.refresh_from_db()
    bob_m.refresh_from_db()
    assert alice_m.is_banned and bob_m.is_muted
    with pytest.raises(Forbidden):
        send(bob)
    assert sorted(ModerationAction.objects.values_list("action", flat=True)) == [
        Action.BAN,
        Action.MUTE,
    ]


def test_ticking_banned_on_a_membership_page_kicks_the_user(
    admin_client, alice, general, sent, django_capture_on_commit_callbacks
):
    services.room_join(user=alice, slug="general")
    membership = Membership.objects.get(user=alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/chat/membership/{membership.pk}/change/",
            {"role": "moderator", "is_banned": "on"},
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    membership.refresh_from_db()
    assert membership.is_banned and membership.role == "moderator"
    assert [k["user_id"] for k in sent["kicked"]] == [alice.pk]
    assert ModerationAction.objects.get().action == Action.BAN


def inline_form(room, rows):
    data = {
        "slug": room.slug,
        "name": room.name,
        "memberships-TOTAL_FORMS": str(len(rows)),
        "memberships-INITIAL_FORMS": str(sum(1 for r in rows if r.get("id"))),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    if room.is_private:
        data["is_private"] = "on"
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"memberships-{i}-{key}"] = value
        data[f"memberships-{i}-room"] = str(room.pk)
    return data


def test_the_room_pages_member_inline_moderates_through_the_services(
    admin_client, alice, bob, carol, secret, sent, django_capture_on_commit_callbacks
):
    """Muting one member, deleting another and adding a banned third, in one save."""
    services.member_invite(inviter=alice, slug="secret", username="bob")
    owner = Membership.objects.get(user=alice)
    invited = Membership.objects.get(user=bob)
    rows = [
        {"id": str(owner.pk), "user": str(alice.pk), "role": "owner", "is_muted": "on"},
        {"id": str(invited.pk), "user": str(bob.pk), "role": "member", "DELETE": "on"},
        {"user": str(carol.pk), "role": "member", "is_banned": "on"},
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/chat/room/{secret.pk}/change/", inline_form(secret, rows)
        )
    assert response.status_code == 302, re.findall(r"errorlist.*?</ul>", response.content.decode())
    assert Membership.objects.get(user=alice).is_muted
    assert not Membership.objects.filter(user=bob).exists()
    assert Membership.objects.get(user=carol).is_banned
    assert sorted(k["user_id"] for k in sent["kicked"]) == sorted([bob.pk, carol.pk])
    assert sorted(ModerationAction.objects.values_list("action", flat=True)) == sorted(
        [Action.MUTE, Action.REMOVE, Action.BAN]
    )


def test_the_audit_trail_is_read_only_searchable_and_filterable(
    admin_client, admin_user, alice, general
):
    services.member_mute(moderator=admin_user, room=general, user=alice, reason="shouting")
    row = ModerationAction.objects.get()
    listing = admin_client.get("/admin/chat/moderationaction/", {"q": "shouting"})
    assert listing.status_code == 200 and "shouting" in listing.content.decode()
    filtered = admin_client.get("/admin/chat/moderationaction/", {"action__exact": "ban"})
    assert "shouting" not in filtered.content.decode()
    assert admin_client.get("/admin/chat/moderationaction/add/").status_code == 403
    page = admin_client.get(f"/admin/chat/moderationaction/{row.pk}/change/").content.decode()
    assert 'name="_save"' not in page, "shown, not editable"
    assert admin_client.post(f"/admin/chat/moderationaction/{row.pk}/delete/").status_code == 403
    assert ModerationAction.objects.count() == 1
