"""
Provides the package's signals, each sent once what it reports has committed
and left for the subscribers (sync and async code alike):

(docs/architecture.md, "Why the modules are as they are")
"""

from django.dispatch import Signal

published = Signal()
notified = Signal()
message_sent = Signal()
