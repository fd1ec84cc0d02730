"""
Provides the live-page template tags (contract §10, docs/integration.md):

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils.html import format_html, json_script
from django.utils.safestring import mark_safe

from chat.pages import client_config
from django_realtime.errors import Unavailable
from django_realtime.topics import names
from django_realtime.topics.history import history

logger = logging.getLogger(__name__)
register = template.Library()

CLIENTS = ("turbo", "htmx")
# What json_script escapes, so JSON inside a <script> cannot close it.
JSON_IN_HTML = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


def stream_url(topic: str, client: str) -> str:
    """The topic's HTML stream under the site's prefix, from where it stands now."""
    namespace = names.parse(topic)
    query = {"format": client}
    try:
        epoch, offset = history().position(topic, namespace=namespace)
        query["last_event_id"] = f"{epoch}:{offset}"
    except Unavailable:  # the stream starts where the topic is when it connects
        logger.warning("no position for %s: its history is unavailable", topic)
    return reverse("chat:events-topic", args=[topic]) + "?" + urlencode(query)


@register.simple_tag
def realtime_stream(topic: str, client: str = "turbo") -> str:
    """The element stock Turbo (`<turbo-stream-source>`) or stock htmx
    (`hx-ext="sse"`) connects to the topic's fragments."""
    if client not in CLIENTS:
        raise template.TemplateSyntaxError(f"realtime_stream: client is one of {CLIENTS}")
    url = stream_url(topic, client)
    element_id = "realtime-stream-" + re.sub(r"[^A-Za-z0-9_-]", "-", topic)
    if client == "turbo":
        return format_html(
            '<turbo-stream-source id="{}" src="{}"></turbo-stream-source>', element_id, url
        )
    return format_html(
        '<div id="{}" hx-ext="sse" sse-connect="{}" sse-swap="message" hx-swap="none"'
        " hidden></div>",
        element_id,
        url,
    )


@register.simple_tag
def realtime_client_js(nonce: str = "") -> str:
    """The package's client for a page's own modules: an import map naming
    it `django-realtime` (`import { RealtimeClient } from "django-realtime"`),
    the `rt-config` JSON it reads (where the API, streams and WebSocket are)
    and a modulepreload. Under a CSP without 'unsafe-inline', pass the
    page's script nonce."""
    client = reverse("chat:asset", args=["client.js"])
    imports = {"imports": {"django-realtime": client}}
    return format_html(
        '{}<script type="importmap"{}>{}</script><link rel="modulepreload" href="{}">',
        json_script(client_config(), "rt-config"),
        format_html(' nonce="{}"', nonce) if nonce else "",
        mark_safe(json.dumps(imports).translate(JSON_IN_HTML)),  # noqa: S308 - escaped
        client,
    )


@register.simple_tag
def realtime_asset(name: str) -> str:
    """The URL of one of the package's browser assets (client.js, …) under the site's prefix."""
    return reverse("chat:asset", args=[name])


__all__ = ["realtime_asset", "realtime_client_js", "realtime_stream", "register"]
