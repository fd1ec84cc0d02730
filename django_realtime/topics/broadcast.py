"""
Provides model broadcasting: `broadcast_model()` declares that a model's
saves and deletes are published after commit, with the fields to send and
a per-object check of each subscriber; `publish_instances()` is the
explicit call for bulk operations, which send no signals.

Why it is shaped so: docs/architecture.md, "topics.broadcast".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, router, transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.template.loader import render_to_string

from . import visibility
from .history import Publication
from .publishing import publish_now


@dataclass(frozen=True)
class Broadcast:
    model: type[models.Model]
    topic: Callable[[Any], str | None]
    fields: tuple[str, ...]
    key: Callable[[Any], str]
    check: Callable[[Any, Any], bool] | None
    check_fields: tuple[str, ...]
    template: str | None = None
    target: Callable[[Any], str] | None = None
    container: Callable[[Any], str | None] | None = None
    custom_key: bool = False  # `key=` given: the key is not the pk

    @property
    def name(self) -> str:
        return f"{self.model._meta.label_lower}"

    def snapshot(self, instance: Any) -> dict[str, Any]:
        values = {name: getattr(instance, _attname(self.model, name)) for name in self.fields}
        # Plain JSON types (dates as ISO strings, decimals as strings).
        return json.loads(json.dumps(values, cls=DjangoJSONEncoder))

    def data(self, instance: Any, event: str) -> dict[str, Any]:
        name = str(self.model._meta.model_name)
        data: dict[str, Any] = {"event": event, name: self.snapshot(instance)}
        if self.template is not None and self.target is not None:
            fragment: dict[str, Any] = {
                "action": {"created": "append", "deleted": "remove"}.get(event, "replace"),
                "target": self.target(instance),
                "container": self.container(instance) if self.container else None,
            }
            if event != "deleted":  # rendered once, for every page
                context = {name: instance, "object": instance}
                fragment["html"] = render_to_string(self.template, context)
            data["fragment"] = fragment
        return data

    def checked(self, instance: Any) -> dict[str, Any]:
        return {n: getattr(instance, _attname(self.model, n)) for n in self.check_fields}

    def identity(self, instance: Any, key: str) -> dict[str, Any]:
        """The key field(s) a subscriber who loses sight of `instance` is
        sent: the sent fields equal to a `key=` callable's key, else the pk
        by its field name (nothing else of the object)."""
        pk = self.model._meta.pk
        assert pk is not None
        values = {pk.name: instance.pk}
        if self.custom_key:
            values = {n: v for n, v in self.snapshot(instance).items() if str(v) == key} or values
        return json.loads(json.dumps(values, cls=DjangoJSONEncoder))

    def audience(self, instance: Any, before: Any = None) -> str:
        """What a publication carries for the check: this declaration, the pk
        and the check fields (stored with it, never sent); after a save, the
        object as it was before it and what a subscriber who loses sight of
        it is sent instead (`gone`)."""
        audience = {"check": self.name, "pk": instance.pk, "fields": self.checked(instance)}
        if before is not None:
            audience["before"] = {**self.snapshot(before), **self.checked(before)}
            name = str(self.model._meta.model_name)
            identity = self.identity(instance, self.key(instance))
            audience["gone"] = {"event": "deleted", name: identity}
        return json.dumps(audience, cls=DjangoJSONEncoder)

    def rebuild(self, publication: Publication) -> Any:
        """The instance a check sees: pk, sent fields and check fields."""
        data = publication.data if isinstance(publication.data, dict) else {}
        audience = json.loads(publication.audience or "{}")
        fields = {**(data.get(self.model._meta.model_name) or {}), **audience.get("fields", {})}
        concrete = {f.name: f for f in self.model._meta.concrete_fields}
        values = {}
        for name, value in fields.items():
            field = concrete.get(name)
            if field is not None:
                values[field.attname] = field.to_python(value) if value is not None else None
        instance = self.model(**values)
        instance.pk = audience.get("pk")
        return instance

    def sees(self, user: Any, publication: Publication) -> bool:
        if self.check is None:
            return True
        return bool(self.check(user, self.rebuild(publication)))


def _attname(model: type[models.Model], name: str) -> str:
    try:
        field = model._meta.get_field(name)
    except Exception:  # noqa: BLE001 - not a field: an attribute or property
        return name
    return str(getattr(field, "attname", name))  # a foreign key's `_id`


_broadcasts: dict[str, Broadcast] = {}
PREVIOUS = "_realtime_broadcast_before"  # the row before a save, on the instance


def broadcast_model(
    model: type[models.Model],
    *,
    topic: str | Callable[[Any], str | None],
    fields: Iterable[str] = (),
    key: Callable[[Any], Any] | None = None,
    visible: Callable[[Any, Any], bool] | None = None,
    check_fields: Iterable[str] = (),
    template: str | None = None,
    target: Callable[[Any], str] | None = None,
    container: str | Callable[[Any], str | None] | None = None,
) -> Broadcast:
    """Publish `model`'s saves and deletes after commit (docs/topics.md).

    `topic` is a topic or a function of the instance (None: not published).
    A save reads the row first (one query): one that moves the instance to
    another topic or key publishes `deleted` where it was and `created`
    where it is.
    `visible(user, instance)` decides per subscriber; without it, whoever may
    subscribe to the topic sees every object.
    `template` (rendered with the instance as `object` and as its model's
    name) adds a fragment for live pages: `target(instance)` is the object's
    DOM id (default `<model_name>-<pk>`), `container` the id of the element
    new objects are appended to.
    """

    def key_of(instance: Any) -> str:
        return str(instance.pk if key is None else key(instance))

    def topic_of(instance: Any) -> str | None:
        return topic if isinstance(topic, str) else topic(instance)

    declared = Broadcast(
        model=model,
        topic=topic_of,
        fields=tuple(fields),
        key=key_of,
        check=visible,
        check_fields=tuple(check_fields),
        template=template,
        target=target or (lambda instance: f"{model._meta.model_name}-{instance.pk}"),
        container=(lambda _: container) if isinstance(container, str) else container,
        custom_key=key is not None,
    )
    _broadcasts[declared.name] = declared
    visibility.register(declared.name, declared.sees)
    uid = f"realtime-broadcast-{declared.name}"
    # Declaring a model again replaces its broadcast (a reload, a test).
    pre_save.disconnect(sender=model, dispatch_uid=uid + "-before")
    post_save.disconnect(sender=model, dispatch_uid=uid + "-save")
    post_delete.disconnect(sender=model, dispatch_uid=uid + "-delete")

    def saving(sender: Any, instance: Any, raw: bool = False, **_: Any) -> None:
        # What the row was: a save that moves it to another topic or key
        # (a room made private, a renamed slug) is a deletion where it was.
        if raw or instance._state.adding or instance.pk is None:
            return
        using = router.db_for_write(model, instance=instance)
        before = model._base_manager.using(using).filter(pk=instance.pk).first()
        if before is not None:
            instance.__dict__[PREVIOUS] = before

    def saved(sender: Any, instance: Any, created: bool, raw: bool = False, **_: Any) -> None:
        if raw:  # fixtures being loaded
            return
        before = instance.__dict__.pop(PREVIOUS, None)
        moved = before is not None and (declared.topic(before), declared.key(before)) != (
            declared.topic(instance),
            declared.key(instance),
        )
        if moved:
            _after_commit(declared, before, "deleted")
        event = "created" if created or moved else "updated"
        _after_commit(declared, instance, event, before=None if moved else before)

    def deleted(sender: Any, instance: Any, **_: Any) -> None:
        _after_commit(declared, instance, "deleted")

    pre_save.connect(saving, sender=model, weak=False, dispatch_uid=uid + "-before")
    post_save.connect(saved, sender=model, weak=False, dispatch_uid=uid + "-save")
    post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=uid + "-delete")
    return declared


def _after_commit(declared: Broadcast, instance: Any, event: str, before: Any = None) -> None:
    # Everything is read now: after a delete the instance loses its pk.
    topic = declared.topic(instance)
    if topic is None:
        return
    data, key = declared.data(instance, event), declared.key(instance)
    audience = declared.audience(instance, before) if declared.check is not None else None
    using = router.db_for_write(declared.model, instance=instance)
    transaction.on_commit(
        lambda: publish_now(topic, data, key=key, audience=audience),
        using=using,
        robust=True,  # a Redis outage is logged; the commit stands
    )


def publish_instances(
    model: type[models.Model], instances: Iterable[Any], *, event: str = "updated"
) -> None:
    """What broadcast_model publishes on a save, for instances changed in bulk
    (`bulk_create`, `update()`, `bulk_update` send no signals)."""
    declared = _broadcasts.get(model._meta.label_lower)
    if declared is None:
        raise LookupError(f"{model._meta.label} is not broadcast: call broadcast_model() first")
    for instance in instances:
        _after_commit(declared, instance, event)
