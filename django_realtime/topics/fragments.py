"""
Provides the wire shapes of live HTML (contract §10; docs/protocol.md): a
fragment publication's data, and the SSE frames stock Turbo 8 and stock
htmx 2 (htmx-ext-sse 2) apply unchanged.

(docs/architecture.md, "Why the modules are as they are")
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.html import escape

from . import visibility
from .history import Publication

ACTIONS = ("append", "prepend", "replace", "update", "before", "after", "remove", "refresh")
FORMATS = ("turbo", "htmx")

# Turbo action -> htmx hx-swap-oob swap style (replace is the fragment's own root).
HTMX_SWAP = {
    "append": "beforeend",
    "prepend": "afterbegin",
    "update": "innerHTML",
    "before": "beforebegin",
    "after": "afterend",
    "remove": "delete",
}
_FIRST_TAG = re.compile(r"^(\s*<)([A-Za-z][A-Za-z0-9-]*)")
_NEWLINES = re.compile(r"\r\n|\r|\n")


def fragment_data(action: str, target: str | None = None, html: str | None = None) -> dict:
    """A fragment publication's data."""
    fragment: dict[str, Any] = {"action": action}
    if target is not None:
        fragment["target"] = target
    if html is not None:
        fragment["html"] = html
    return {"fragment": fragment}


def fragment_of(data: Any) -> dict | None:
    """The fragment a publication carries, or None (a plain JSON publication)."""
    fragment = data.get("fragment") if isinstance(data, dict) else None
    if not isinstance(fragment, dict) or fragment.get("action") not in ACTIONS:
        return None
    if fragment["action"] != "refresh" and not isinstance(fragment.get("target"), str):
        return None
    return fragment


async def action_for(
    publication: Publication, fragment: dict, user: Any
) -> tuple[str | None, str | None]:
    """(action, target) of `fragment` for `user`, or (None, None): a model
    fragment (one with a `container`, topics.broadcast) is appended where
    its object comes into the user's sight, replaced while in it and removed
    where it leaves it; other fragments go to whoever may see them."""
    return (await actions_for(publication, fragment, [user]))[user.pk]


async def actions_for(
    publication: Publication, fragment: dict, users: list[Any], allowed: set[int] | None = None
) -> dict[Any, tuple[str | None, str | None]]:
    """action_for() of every user of `users`, by pk, with one visibility
    check for them all (a thread, the database) and none for a fragment
    without an audience; `allowed`: the pks that may see it, if known."""
    action, target = str(fragment["action"]), fragment.get("target")
    if publication.audience is None and "container" not in fragment:
        return {user.pk: (action, target) for user in users}
    if allowed is None:
        allowed = await visibility.allowed(publication, users)
    container = fragment.get("container")
    saw: set[int] | None = None
    if "container" in fragment and action == "replace":
        saw = await visibility.saw_before(publication, users)

    def decide(pk: Any) -> tuple[str | None, str | None]:
        sees = publication.audience is None or pk in allowed
        if "container" not in fragment or action == "remove":
            return (action, target) if sees else (None, None)
        before = None if saw is None else pk in saw
        if action == "replace" and sees and before is False or action == "append" and sees:
            return ("append", container) if container else (None, None)
        if action == "replace" and sees:
            return "replace", target
        if action == "replace" and before:
            return "remove", target  # out of the user's sight now
        return None, None

    return {user.pk: decide(user.pk) for user in users}


def turbo(action: str, target: str | None, html: str) -> str:
    """One `<turbo-stream>` element."""
    if action == "refresh":
        return '<turbo-stream action="refresh"></turbo-stream>'
    head = f'<turbo-stream action="{action}" target="{escape(target or "")}">'
    if action == "remove":
        return head + "</turbo-stream>"
    return f"{head}<template>{html}</template></turbo-stream>"


def _wrapper(html: str) -> str:
    """An element that parses `html` as its children where it stands:
    table rows need a tbody, cells a tr."""
    match = _FIRST_TAG.match(html)
    tag = match.group(2).lower() if match else ""
    return {"tr": "tbody", "td": "tr", "th": "tr"}.get(tag, "div")


def htmx(action: str, target: str | None, html: str) -> str:
    """Out-of-band swaps htmx applies (each inside a <template>, so any
    element parses)."""
    if action == "refresh":
        # htmx cannot morph: the page loads itself again (a refresh pragma
        # takes effect when it enters the document), with no script of ours.
        return '<div hx-swap-oob="beforeend:body"><meta http-equiv="refresh" content="0"></div>'
    selector = "#" + escape(target or "")
    if action == "replace":
        # The fragment's root element takes the target's place (outerHTML).
        swap = f' hx-swap-oob="outerHTML:{selector}"'
        if _FIRST_TAG.match(html):
            return (
                "<template>" + _FIRST_TAG.sub(lambda m: m[1] + m[2] + swap, html, 1) + "</template>"
            )
        return f"<template><div{swap}>{html}</div></template>"
    wrapper = _wrapper(html) if action != "remove" else "div"
    oob = f'hx-swap-oob="{HTMX_SWAP[action]}:{selector}"'
    body = "" if action == "remove" else html
    return f"<template><{wrapper} {oob}>{body}</{wrapper}></template>"


def frame(fmt: str, action: str, target: str | None = None, html: str = "") -> str:
    """The HTML one fragment is sent as in `fmt`."""
    return (turbo if fmt == "turbo" else htmx)(action, target, html)


def sse_message(html: str, event_id: str | None = None) -> bytes:
    """A default `message` event carrying `html` (one `data:` line per line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    lines = "".join(f"data: {line}\n" for line in _NEWLINES.split(html))
    return f"{head}{lines}\n".encode()
