"""
Provides prepare(): what the package needs from the ASGI server it runs
under, applied once at start-up (when chat.routing is imported).

- daphne: the transport adjustments of django_realtime.daphne_transport and
  the 1012 drain on SIGTERM (django_realtime.drain).
- uvicorn and other servers: nothing to change; the drain is theirs to call
  (`await drain.drain()` in a lifespan shutdown).
"""

import sys

from . import drain
from .daphne_transport import tune_daphne


def prepare() -> None:
    """Adjust the server this process runs under; safe to call more than once."""
    if "daphne.server" in sys.modules:
        tune_daphne()
        drain.install_daphne_drain()
