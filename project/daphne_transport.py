"""
Provides the project's adjustments to daphne's WebSocket transport.

- The frame limit. A frame over WS_MAX_FRAME_BYTES closes the connection with
  1009 (message too big). It is set on daphne's autobahn factory, so daphne
  refuses the frame as it arrives instead of buffering it for the consumer.
- Close frames, not dropped sockets. autobahn fails a connection by dropping
  TCP unless told otherwise, which clients see as 1006 with no reason.
- Close reasons. daphne drops the `reason` of an ASGI `websocket.close`; it
  is sent with the close code here (4408 says "policy: too many requests").
- Sends racing a close. A frame for a peer that has just gone is dropped
  instead of raising into the consumer, whose disconnect() must still run.
- The registered server close codes. autobahn lets an application send only
  1000 and 3000-4999, yet a server must be able to say 1001 (going away),
  1009 (too big), 1011 (internal error), 1012 (service restart, what a drain
  sends so clients reconnect elsewhere) and 1013 (try again later).

Applied when project.asgi is imported, which daphne's command line does before
it builds its Server, so `daphne -b HOST -p PORT project.asgi:application`
needs no extra flag. Under another ASGI server these are no-ops.
"""

import functools
import sys

SERVER_CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1011, 1012, 1013})


def tune_daphne(*, max_frame_bytes: int) -> None:
    if "daphne.server" not in sys.modules:
        # Not under daphne (uvicorn, tests): importing daphne.server would
        # install a Twisted reactor for nothing. The consumer's checks apply.
        return
    from autobahn.exception import Disconnected
    from daphne import server as daphne_server
    from daphne.ws_protocol import WebSocketProtocol

    Server = daphne_server.Server
    already = getattr(Server, "_realtime_frame_limit", None) is not None
    Server._realtime_frame_limit = max_frame_bytes
    if already:
        return

    original_init = Server.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        limit = Server._realtime_frame_limit
        self.websocket_max_message_size = min(self.websocket_max_message_size or limit, limit)
        self.websocket_max_frame_size = min(self.websocket_max_frame_size or limit, limit)

    class WebSocketFactory(daphne_server.WebSocketFactory):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.setProtocolOptions(failByDrop=False)

    original_server_close = WebSocketProtocol.serverClose
    original_handle_reply = WebSocketProtocol.handle_reply

    def handle_reply(self, message):
        # daphne drops the ASGI close `reason`; keep it for serverClose.
        if message.get("type") == "websocket.close":
            self._realtime_close_reason = message.get("reason") or None
        try:
            return original_handle_reply(self, message)
        except Disconnected:
            # A frame for a peer that has just gone (a broadcast racing the
            # close). Raising would kill the consumer before its disconnect()
            # runs and leave its groups and presence behind; daphne delivers
            # websocket.disconnect to it next.
            return None

    def serverClose(self, code=None):
        reason = getattr(self, "_realtime_close_reason", None)
        if reason is not None:
            reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")  # RFC 6455 limit
        if code in SERVER_CLOSE_CODES and code != 1000:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8") if reason else None)
        elif reason and code is not None:
            self.sendClose(code=code, reason=reason)
        else:
            original_server_close(self, code=code)

    Server.__init__ = __init__
    daphne_server.WebSocketFactory = WebSocketFactory
    WebSocketProtocol.handle_reply = handle_reply
    WebSocketProtocol.serverClose = serverClose
