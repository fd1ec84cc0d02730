"""The site's own signal: a new order notifies its owner and publishes the
order count, live; imported from the package's one front door."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from django_realtime import notify, publish

from .models import Order


@receiver(post_save, sender=Order)
def order_placed(sender, instance: Order, created: bool, **kwargs) -> None:
    if created:
        notify(recipient=instance.owner, kind="order", data={"item": instance.item})
        publish("shop:orders", {"count": Order.objects.count()})
