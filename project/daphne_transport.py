"""
Provides the project's adjustments to daphne's WebSocket transport.

- The frame limit stays where daphne puts it (1 MiB), for autobahn applies
  it to frames in both directions: at 64 KiB, a `joined` frame listing a
  thousand present users could not be sent. The consumer closes a client
  frame over WS_MAX_FRAME_BYTES with 1009 itself, which the close codes
  below make possible.
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

import sys

SERVER_CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1011, 1012, 1013})


def tune_daphne() -> None:
    if "daphne.server" not in sys.modules:
        # Not under daphne (uvicorn, tests): importing daphne.server would
        # install a Twisted reactor for nothing. The consumer's checks apply.
        return
    from autobahn.exception import Disconnected
    from daphne import server as daphne_server
    from daphne.ws_protocol import WebSocketProtocol

    if getattr(WebSocketProtocol, "_realtime_tuned", False):
        return
    WebSocketProtocol._realtime_tuned = True

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

    daphne_server.WebSocketFactory = WebSocketFactory
    WebSocketProtocol.handle_reply = handle_reply
    WebSocketProtocol.serverClose = serverClose
