"""django_realtime/daphne_transport.py's pieces that run without a server."""

import os
import subprocess
import sys
from pprint import pformat

import pytest

from django_realtime.daphne_transport import lazily, text_frame


def test_a_lazy_log_argument_is_computed_only_when_formatted():
    calls = []

    def expensive(obj):
        calls.append(obj)
        return pformat(obj)

    config = [("openHandshakeTimeout", 5, "WebSocketFactory"), ("maxFramePayloadSize", 2**20, "x")]
    lazy = lazily(expensive)(config)
    assert calls == []
    assert f"\n{lazy}" == f"\n{pformat(config)}"
    assert str(lazy) == pformat(config)
    assert len(calls) == 2


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_a_text_framed_once_is_the_frame_a_client_reads(size):
    """write_text()'s frames, read back by the `websockets` library's own
    frame parser: one final, unmasked text frame carrying the text."""
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    text = ("é" + "x" * size)[:size]  # not ASCII: UTF-8 lengths differ from characters
    frame, length = text_frame(text)
    reader = StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
    with pytest.raises(StopIteration) as parsed:
        next(parser)
    got = parsed.value.value
    assert (got.opcode, got.fin, got.data) == (Opcode.TEXT, True, text.encode())
    assert length == len(text.encode())
    again = "".join(list(text))  # an equal string, another object: framed again, the same
    assert text_frame(again) == (frame, length)


# In a subprocess: importing daphne.server installs a Twisted reactor, which
# this test process must not get.
CHECK = """
import importlib, sys
from django.core.exceptions import ImproperlyConfigured
from django_realtime.daphne_transport import missing_internals, tune_daphne
module, path, name = sys.argv[1:4]
if module:
    target = importlib.import_module(module)
    for part in filter(None, path.split(".")):
        target = getattr(target, part)
    for owner in (target.__mro__ if isinstance(target, type) else [target]):
        if name in vars(owner):
            delattr(owner, name)
print("missing:", missing_internals())
importlib.import_module("daphne.server")
try:
    tune_daphne()
    print("started")
except ImproperlyConfigured as exc:
    print("refused:", exc)
"""


def run_check(module: str = "", path: str = "", name: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module, path, name],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_installed_daphne_autobahn_and_twisted_have_every_patched_name():
    out = run_check()
    assert "missing: []" in out and "started" in out


@pytest.mark.parametrize(
    ("module", "path", "name"),
    [
        ("daphne.ws_protocol", "WebSocketProtocol", "serverClose"),
        ("twisted.internet.abstract", "FileDescriptor", "_writeDisconnected"),
        ("autobahn.websocket.protocol", "", "hltype"),
    ],
)
def test_a_renamed_internal_stops_the_server_naming_it(module, path, name):
    """An upgrade that renames what the transport patches must refuse to start,
    not run half-patched (close codes and the drain would fail quietly)."""
    out = run_check(module, path, name)
    assert "refused:" in out and name in out.split("refused:")[1]
    assert "started" not in out


class FakeTransport:
    def __init__(self, pending=0):
        self.dataBuffer, self.offset, self._tempDataLen = b"x" * pending, 0, 0
        self.written = []

    def write(self, data):
        self.written.append(data)


class FakeProtocol:
    """What send_text_now reads of autobahn's protocol, in the plain case."""

    STATE_OPEN, STATE_CLOSING = 1, 2

    def __init__(self, pending=0):
        from types import SimpleNamespace

        self.state = self.STATE_OPEN
        self._perMessageCompress = None
        self.send_queue = []
        self.trackedTimings = self.logFrames = self.maskServerFrames = False
        self.maxMessagePayloadSize = self.autoFragmentSize = 0
        self.transport = FakeTransport(pending)
        self.trafficStats = SimpleNamespace(
            outgoingWebSocketMessages=0,
            outgoingWebSocketFrames=0,
            outgoingOctetsAppLevel=0,
            outgoingOctetsWebSocketLevel=0,
            outgoingOctetsWireLevel=0,
        )
        self.closed_with = None

    def serverClose(self, code=None):
        self.closed_with = code


def test_a_live_frame_goes_at_once_or_to_the_asgi_send(settings):
    """send_text_now: the plain case writes the frame and counts it; a
    connection not open is left to daphne's send (False, nothing written);
    one over its output cap is closed with 4413 and the frame dropped."""
    from django_realtime.daphne_transport import send_text_now

    settings.REALTIME = {**settings.REALTIME, "WS_MAX_PENDING_OUTPUT_BYTES": 1000}
    plain = FakeProtocol()
    assert send_text_now(plain, "héllo") is True
    assert plain.transport.written == [text_frame("héllo")[0]]
    assert plain.trafficStats.outgoingWebSocketMessages == 1

    closing = FakeProtocol()
    closing.state = closing.STATE_CLOSING
    assert send_text_now(closing, "hello") is False
    assert closing.transport.written == []

    stalled = FakeProtocol(pending=1001)
    assert send_text_now(stalled, "hello") is True
    assert (stalled.transport.written, stalled.closed_with) == ([], 4413)
    assert send_text_now(stalled, "again") is True  # dropped from then on
    assert stalled.transport.written == []
