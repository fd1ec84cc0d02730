"""
Provides prepare(): what the package needs from the ASGI server it runs
under, applied once at start-up (when chat.routing is imported).

- daphne: the transport adjustments of django_realtime.daphne_transport and
  the 1012 drain on SIGTERM (django_realtime.drain).
- uvicorn: nothing to change. On SIGTERM it closes every WebSocket with
  1012 itself, before it waits for the connections to end and sends the
  lifespan shutdown event (so a drain there would find no socket left);
  `--timeout-graceful-shutdown` bounds its wait for open SSE streams.
- other servers: nothing is changed; `await drain.drain()` is theirs to call
  before their shutdown closes the sockets, if it does not send 1012.
"""

import sys

from . import drain
from .daphne_transport import tune_daphne


def prepare() -> None:
    """Adjust the server this process runs under; safe to call more than once."""
    if "daphne.server" in sys.modules:
        tune_daphne()
        drain.install_daphne_drain()
