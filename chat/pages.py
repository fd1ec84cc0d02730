"""
Provides the web pages: the room list and a room. The live parts run in the
browser on static/realtime/client.js; these views only render the first paint.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from . import events, selectors
from .errors import ClientError


@login_required
def index(request: HttpRequest) -> HttpResponse:
    rooms = selectors.rooms_visible(user=request.user)
    return render(request, "chat/index.html", {"rooms": rooms})


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        access = selectors.room_access_by_slug(user=request.user, slug=slug)
    except ClientError as exc:
        return render(request, "chat/error.html", {"message": exc.message}, status=exc.status)
    rows, _ = selectors.messages_page(room=access.room, limit=50)
    history = [events.message_payload(m, access.room.slug) for m in reversed(rows)]
    return render(
        request,
        "chat/room.html",
        {
            "room": access.room,
            "history": history,
            "me": events.user_payload(request.user),
            "can_post": access.can_post,
        },
    )
