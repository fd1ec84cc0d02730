"""
Provides the WebSocket frame limit at the transport, for daphne.

The contract closes a connection that sends a frame over WS_MAX_FRAME_BYTES
with 1009 (message too big). An ASGI application cannot send 1009 itself
(daphne's autobahn allows only 1000 and 3000-4999 from the application), and a
limit checked in the consumer comes after daphne has buffered the whole frame.
So the limit is set where it belongs: on daphne's autobahn factory, which
fails the connection with 1009 as soon as a frame passes the limit. This runs
when project.asgi is imported, which daphne's command line does before it
builds its Server; `daphne -b HOST -p PORT project.asgi:application` needs no
extra flag.
"""

import functools


def limit_daphne_frames(max_bytes: int) -> None:
    try:
        from daphne import server as daphne_server
        from daphne.server import Server
    except ImportError:  # another ASGI server; the consumer's own check applies
        return
    if getattr(Server, "_realtime_frame_limit", None) is not None:
        Server._realtime_frame_limit = max_bytes
        return
    original_init = Server.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        limit = Server._realtime_frame_limit
        self.websocket_max_message_size = min(self.websocket_max_message_size or limit, limit)
        self.websocket_max_frame_size = min(self.websocket_max_frame_size or limit, limit)

    class WebSocketFactory(daphne_server.WebSocketFactory):
        """Fails a connection with a close frame (1009 and the like) rather
        than autobahn's default of dropping TCP, which clients see as 1006."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.setProtocolOptions(failByDrop=False)

    Server._realtime_frame_limit = max_bytes
    Server.__init__ = __init__
    daphne_server.WebSocketFactory = WebSocketFactory
