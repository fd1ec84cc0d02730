"""
Live data (contract §8; docs/topics.md): topics in declared namespaces, with
history, resume, conflation and model broadcasting.

    from django_realtime.topics import publish, apublish, broadcast_model, html_stream
"""

from .broadcast import broadcast_model, publish_instances
from .html import html_stream
from .names import register_namespace
from .publishing import apublish, publish

__all__ = [
    "apublish",
    "broadcast_model",
    "html_stream",
    "publish",
    "publish_instances",
    "register_namespace",
]
