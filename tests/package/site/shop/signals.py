"""The site's own signal: a new order notifies its owner, live."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from notifications.services import notify

from .models import Order


@receiver(post_save, sender=Order)
def order_placed(sender, instance: Order, created: bool, **kwargs) -> None:
    if created:
        notify(recipient=instance.owner, kind="order", data={"item": instance.item})
