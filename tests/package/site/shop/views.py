"""The site's own API, on the site's own DRF defaults (session only, AllowAny)."""

from django.contrib.auth import get_user_model
from rest_framework.decorators import api_view
from rest_framework.response import Response

from .models import Order


@api_view(["POST"])
def place_order(request):
    owner = get_user_model().objects.get(username=request.data["owner"])
    order = Order.objects.create(owner=owner, item=request.data["item"])
    return Response({"id": order.pk}, status=201)
