"""
Provides the package's signals, each sent once what it reports has committed
and left for the subscribers (sync and async code alike):

- `published(topic, data, offset, key)`: a publication on a topic (publish,
  apublish, broadcast_model, html_stream);
- `notified(notifications)`: notifications stored and pushed (notify, notify_many);
- `message_sent(room_id, message)`: a chat message stored and broadcast
  (`message` is the WebSocket frame's payload).

`django_realtime.testing` listens to them; a site may too (an audit log).
"""

from django.dispatch import Signal

published = Signal()
notified = Signal()
message_sent = Signal()
