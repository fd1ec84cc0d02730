"""Notify users from the command line (or a cron job): stored, and pushed live
to their open connections through the channel layer (REDIS_URL)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from django_realtime.errors import ClientError
from django_realtime.payloads import user_payload
from notifications import services


class Command(BaseCommand):
    help = "Send a notification (default: an announcement) to the named users."

    def add_arguments(self, parser):
        parser.add_argument("usernames", nargs="+", help="recipients")
        parser.add_argument("--text", required=True, help="the announcement text")
        parser.add_argument("--kind", default=services.ANNOUNCEMENT)
        parser.add_argument("--from", dest="sender", help="username shown as the sender")

    def handle(self, *args, usernames, text, kind, sender, **options):
        User = get_user_model()
        by_name = {
            user.get_username(): user
            for user in User.objects.filter(**{f"{User.USERNAME_FIELD}__in": usernames})
        }
        missing = sorted(set(usernames) - set(by_name))
        if missing:
            raise CommandError(f"no such users: {', '.join(missing)}")
        data = {"text": text}
        if sender:
            try:
                data["from"] = user_payload(User.objects.get(**{User.USERNAME_FIELD: sender}))
            except User.DoesNotExist:
                raise CommandError(f"no such user: {sender}") from None
        try:
            sent = services.notify_many(recipients=by_name.values(), kind=kind, data=data)
        except ClientError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(" ".join(str(n.pk) for n in sent))
