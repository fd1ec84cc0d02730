"""The site's own TestCase sees what its code notified and published, as
mail.outbox shows what it mailed (django_realtime.testing)."""

from django.contrib.auth import get_user_model
from django.test import TestCase

from django_realtime.testing import capture

from .models import Order


class OrderPlacedTests(TestCase):
    def test_an_order_notifies_its_owner_and_publishes_the_count(self):
        owner = get_user_model().objects.create_user("dora", password="pw")
        with capture() as captured:
            Order.objects.create(owner=owner, item="tea")
        self.assertEqual(
            [(n.recipient_id, n.kind, n.data) for n in captured.notifications],
            [(owner.pk, "order", {"item": "tea"})],
        )
        self.assertEqual(
            [(p.topic, p.data) for p in captured.publications], [("shop:orders", {"count": 1})]
        )
