"""django_realtime/daphne_transport.py's and daphne_output.py's pieces that run without a server."""

import os
import subprocess
import sys
from pprint import pformat

import pytest

from django_realtime.daphne_output import text_frame
from django_realtime.daphne_transport import lazily


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
    from django_realtime.daphne_output import send_text_now

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


def test_autobahns_pformat_is_deferred_only_for_the_options_it_logs():
    """lazy_pformat: the list of options autobahn logs when a connection is
    made is formatted only when written, into the same text; anything else
    (Timings.__str__'s dict) is a str at once, as before."""
    from django_realtime.daphne_transport import Lazy, lazy_pformat

    options = [("failByDrop", True, "WebSocketFactory"), ("autoPingTimeout", 30, "x")]
    deferred = lazy_pformat(options)
    assert isinstance(deferred, Lazy)
    assert f"\n{deferred}" == f"\n{pformat(options)}"
    timings = {"onOpen": 0.5}
    assert lazy_pformat(timings) == pformat(timings)
    assert type(lazy_pformat(timings)) is str


def test_autobahn_uses_the_deferred_helpers_only_as_log_arguments():
    """Why deferring them is unobservable: in autobahn's protocol module,
    every call of pformat, hltype and hlval is a keyword argument of a
    `self.log.<level>(...)` line, except Timings.__str__'s pformat of a dict
    (which lazy_pformat leaves a str). An upgrade that uses them otherwise
    fails here, to be looked at."""
    import ast
    import inspect

    from autobahn.websocket import protocol

    tree = ast.parse(inspect.getsource(protocol))
    as_log_argument, elsewhere = 0, []
    logged = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "log"
        ):
            logged.update(id(keyword.value) for keyword in node.keywords)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
            "pformat",
            "hltype",
            "hlval",
        ):
            if id(node) in logged:
                as_log_argument += 1
            else:
                elsewhere.append(ast.unparse(node))
    assert as_log_argument > 10
    assert elsewhere == ["pformat(self._timings)"]


# In a subprocess, as a server process starts: daphne's modules, then the
# site's asgi.py importing the package's routing.
STOCK = """
import django, gc, json
from autobahn.websocket import protocol as autobahn_protocol
from daphne import server as daphne_server, ws_protocol
from twisted.internet import tcp
before = {
    "write": tcp.Server.write,
    "handle_reply": ws_protocol.WebSocketProtocol.handle_reply,
    "serverClose": ws_protocol.WebSocketProtocol.serverClose,
    "factory": daphne_server.WebSocketFactory,
    "server_handle_reply": daphne_server.Server.handle_reply,
    "gc": (gc.get_threshold(), gc.get_freeze_count()),
}
django.setup()
import chat.routing  # noqa: F401
after = {
    "write": tcp.Server.write,
    "handle_reply": ws_protocol.WebSocketProtocol.handle_reply,
    "serverClose": ws_protocol.WebSocketProtocol.serverClose,
    "factory": daphne_server.WebSocketFactory,
    "server_handle_reply": daphne_server.Server.handle_reply,
    "gc": (gc.get_threshold(), gc.get_freeze_count()),
}
print(json.dumps({
    "unchanged": sorted(k for k in before if before[k] is after[k] or before[k] == after[k]),
    "timings": str(autobahn_protocol.Timings()),
    "extension": daphne_server.Server.create_application.__module__,
}))
"""


def test_importing_the_routing_leaves_daphne_twisted_and_the_collector_stock():
    """What serves the site's own consumers and HTTP views is daphne's,
    Twisted's and autobahn's own after the routing is imported; only the
    realtime.output extension is offered (create_application)."""
    result = subprocess.run(
        [sys.executable, "-c", STOCK],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"},
    )
    assert result.returncode == 0, result.stderr
    import json

    found = json.loads(result.stdout.splitlines()[-1])
    assert found["unchanged"] == sorted(
        ["write", "handle_reply", "serverClose", "factory", "server_handle_reply", "gc"]
    )
    assert found["timings"] == "{}"  # autobahn's Timings.__str__ still a str
    assert found["extension"] == "django_realtime.daphne_transport"


CLAIM = """
import functools, json, django
django.setup()
from daphne import server as daphne_server, ws_protocol
from twisted.internet import tcp
from django_realtime.daphne_transport import claim, tune_daphne
tune_daphne()

def protocol(transport=None):
    p = object.__new__(ws_protocol.WebSocketProtocol)
    p.failByDrop, p.transport = True, transport
    return p

server = object.__new__(daphne_server.Server)
direct, wrapped, site = protocol(), protocol(), protocol()
tcp_transport = object.__new__(tcp.Server)
on_tcp = protocol(tcp_transport)

async def middleware_send(message):
    pass

got = {
    "direct": claim(direct, functools.partial(server.handle_reply, direct)) is not None,
    "direct_again": claim(direct, middleware_send) is not None,
    "wrapped": claim(wrapped, middleware_send) is not None,
    "wrapped_again": claim(wrapped, functools.partial(server.handle_reply, wrapped)) is not None,
    "other_protocols_send": claim(on_tcp, functools.partial(server.handle_reply, direct))
    is not None,
    "claimed_own": sorted(k for k in ("handle_reply", "serverClose") if k in vars(direct)),
    "fail_by_drop": direct.failByDrop,
    "tcp_write_own": "write" in vars(tcp_transport),
    "site_own": sorted(k for k in ("handle_reply", "serverClose", "_realtime_claimed")
                       if k in vars(site)),
    "site_fail_by_drop": site.failByDrop,
    "class_stock": ws_protocol.WebSocketProtocol.handle_reply.__module__,
}
print(json.dumps(got))
"""


def test_only_a_claimed_connection_is_adjusted_and_only_daphnes_own_send_gets_the_shortcut():
    """claim(): the connection's own objects get the adjustments (its
    protocol's handle_reply and serverClose, failByDrop off, its TCP
    transport's write), nothing else's; the shortcut past the ASGI send only
    where the first claim's send is daphne's own for that connection."""
    result = subprocess.run(
        [sys.executable, "-c", CLAIM],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings"},
    )
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads(result.stdout.splitlines()[-1]) == {
        "direct": True,
        "direct_again": True,  # the first claim (the outermost application's) decides
        "wrapped": False,  # a site's middleware in between: every frame through it
        "wrapped_again": False,
        "other_protocols_send": False,
        "claimed_own": ["handle_reply", "serverClose"],
        "fail_by_drop": False,
        "tcp_write_own": True,
        "site_own": [],
        "site_fail_by_drop": True,
        "class_stock": "daphne.ws_protocol",
    }


def test_the_outermost_application_claims_with_the_send_it_was_given():
    """servers.own() claims the connection with the send the package's
    application received, and its consumers' output_of() reads that first
    claim's answer (a later send, under the package's own wrappers, does not
    change it); frames go to that send (frame_send), not to one further in."""
    from django_realtime import servers

    claims = []

    def claim(send):
        claims.append(send)
        return claims[0] == "daphne's own" and (lambda text: True) or None

    extension = {"pending": lambda: 0, "claim": claim}
    scope = {"type": "websocket", "extensions": {servers.OUTPUT_EXTENSION: extension}}

    inner = servers.own(scope, "daphne's own")
    output = servers.output_of("the package's session wrapper", inner)
    assert output is not None and output.send_text is not None
    assert servers.frame_send("the package's session wrapper", inner) == "daphne's own"

    claims.clear()
    wrapped = servers.own(scope, "the site's middleware")
    output = servers.output_of("the package's session wrapper", wrapped)
    assert output is not None and output.send_text is None
    assert servers.frame_send("the package's session wrapper", wrapped) == "the site's middleware"
    assert claims == ["the site's middleware", "the site's middleware"]
