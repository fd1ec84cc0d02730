"""
Live data (contract §8; docs/topics.md): topics in declared namespaces, with
history, resume, conflation and model broadcasting.

    from django_realtime.topics import publish, apublish, broadcast_model
"""

from .broadcast import broadcast_model, publish_instances
from .names import register_namespace
from .publishing import apublish, publish

__all__ = ["apublish", "broadcast_model", "publish", "publish_instances", "register_namespace"]
