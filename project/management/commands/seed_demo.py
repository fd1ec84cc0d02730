"""Seed the demo: users alice, bob, carol (password demo), admin (admin),
public rooms general and random. Safe to run again: it changes nothing that exists."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from chat.models import Membership, Room

USERS = [("alice", "demo", False), ("bob", "demo", False), ("carol", "demo", False)]
ROOMS = [("general", "General"), ("random", "Random")]


class Command(BaseCommand):
    help = "Create the demo users and rooms (idempotent)."

    def handle(self, *args, **options):
        User = get_user_model()
        people = []
        for username, password, _ in USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.save()
            people.append(user)
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password("admin")
            admin.save()
        for slug, name in ROOMS:
            room, _ = Room.objects.get_or_create(slug=slug, defaults={"name": name})
            for user in people:
                Membership.objects.get_or_create(room=room, user=user)
        self.stdout.write("demo ready: alice, bob, carol / demo; admin / admin; #general, #random")
