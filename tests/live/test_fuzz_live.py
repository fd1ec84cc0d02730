"""
A property-based fuzzer of the /ws/ protocol against a real daphne over a real
socket: random and mutated frames of every kind, each followed by a probe
`ping`. Whatever was sent, the client sees an `error` frame or the documented
reply (or nothing, for typing/read/presence), or a documented close (1009 for
a frame over 64 KiB, 1007 for a text frame that is not UTF-8); never 1011, and
the connection carries on. The server log stays free of tracebacks.

The number of examples is FUZZ_EXAMPLES (default 1000, about 15 s here); the
count of cases and what they got is printed and recorded as a test property.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chat.models import Membership, Room

from .conftest import DaphneProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
settings.register_profile(
    "ws-fuzz",
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the work tree
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MAX_FRAME_BYTES = 65536
ERROR_CODES = {"BAD_REQUEST", "NOT_FOUND", "FORBIDDEN", "RATE_LIMITED", "TOO_LARGE"}
# What the server may send on its own between a frame and the probe's pong.
UNSOLICITED = {"message", "receipt", "presence", "notification"}
DIRECT_REPLY = {"error", "pong", "joined", "left", "ack"}
SUCCESS_REPLY = {"join": "joined", "leave": "left", "message": "ack", "ping": "pong"}
SILENT_TYPES = {"typing", "read", "presence"}
ROOMS = ["general", "secret", "nowhere"]
JOIN_GENERAL = '{"type": "join", "room": "general"}'

# Client types, unknown ones, and the names of server-side handlers a client
# might hope to reach (they must all be unknown types to a client).
TYPES = [
    *SUCCESS_REPLY,
    *SILENT_TYPES,
    "chat.message",
    "chat.typing",
    "chat.kicked",
    "chat_message",
    "presence.diff",
    "presence_diff",
    "notify.notification",
    "websocket.connect",
    "websocket.receive",
    "websocket.disconnect",
    "connect",
    "disconnect",
    "receive",
    "close",
    "send",
    "send_frame",
    "handlers",
    "on_join",
    "__init__",
    "JOIN",
    " ping",
    "ping\x00",
    "",
]

# Strings that have broken servers: NUL, lone surrogates (sent as \u escapes),
# direction overrides, combining marks, emoji, markup, SQL, very long ones.
NASTY_STRINGS = [
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\ud83dy",
    "\u202egnp.exe",
    "\u200f\u200e\u2066",
    "e\u0301\u0302\u0303",
    "\U0001f600\U0001f469\u200d\U0001f4bb",
    "\ufeff",
    "\uffff",
    "<script>alert(1)</script>",
    '"><svg onload=alert(1)>',
    "' OR 1=1 --",
    "%00",
    "../../etc/passwd",
    "${jndi:ldap://x}",
    "general\n",
    " general",
    "GENERAL",
    "9" * 5000,
    "x" * 4001,
]

text = st.one_of(st.text(max_size=40), st.sampled_from(NASTY_STRINGS))
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def valid_frames(draw) -> dict:
    """A frame as the protocol documents it."""
    kind = draw(st.sampled_from([*SUCCESS_REPLY, *SILENT_TYPES]))
    room = draw(st.sampled_from(["general", *ROOMS]))
    frame: dict[str, Any] = {"type": kind}
    if kind == "join":
        frame["room"] = room
        if draw(st.booleans()):
            frame["since"] = draw(st.integers(min_value=0, max_value=2**63 - 1))
    elif kind == "leave":
        frame["room"] = room
    elif kind == "message":
        content = draw(
            st.one_of(
                st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and "\x00" not in s),
                st.sampled_from(
                    [
                        "<script>alert(1)</script>",
                        '"><svg onload=alert(1)>',
                        "\u202eevil",
                        "e\u0301",
                        "@bob hi",
                        "\U0001f600",
                    ]
                ),
            )
        )
        frame.update(room=room, content=content, client_id=str(draw(st.uuids())))
    elif kind == "typing":
        frame.update(room=room, is_typing=draw(st.booleans()))
    elif kind == "read":
        frame.update(room=room, seq=draw(st.integers(min_value=0, max_value=2**63 - 1)))
    elif kind == "presence":
        frame["status"] = draw(st.sampled_from(["online", "away"]))
    if draw(st.booleans()):
        frame["ref"] = draw(
            st.one_of(
                st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=128),
                st.integers(-(2**63) + 1, 2**63 - 1),
            )
        )
    return frame


@st.composite
def mutated_frames(draw) -> dict:
    """A valid frame with one field changed, removed, or extra ones added
    (spoofed senders among them)."""
    frame = draw(valid_frames())
    how = draw(st.sampled_from(["change", "remove", "extra", "type"]))
    if how == "change":
        key = draw(st.sampled_from(sorted(frame)))
        frame[key] = draw(json_values)
    elif how == "remove":
        frame.pop(draw(st.sampled_from(sorted(frame))))
    elif how == "extra":
        extra = draw(
            st.dictionaries(
                st.one_of(
                    st.sampled_from(["user", "user_id", "username", "id", "seq", "payload"]),
                    text,
                ),
                json_values,
                min_size=1,
                max_size=3,
            )
        )
        frame = {**frame, **{k: v for k, v in extra.items() if k not in ("type", "ref")}}
    else:
        frame["type"] = draw(st.one_of(st.sampled_from(TYPES), text))
    return frame


def deep(n: int, kind: str) -> str:
    if kind == "list":
        return "[" * n + "]" * n
    return '{"a":' * n + "1" + "}" * n


@dataclass
class Case:
    """One thing sent: a text or binary payload, and the frame it encodes (if any)."""

    kind: str
    payload: str | bytes | list[str]
    frame: Any = None  # the decoded JSON value, when the payload is valid JSON
    valid: bool = False  # generated exactly as documented
    expect_close: int | None = None

    @property
    def size(self) -> int:
        if isinstance(self.payload, list):
            return sum(len(p.encode("utf-8")) for p in self.payload)
        if isinstance(self.payload, str):
            return len(self.payload.encode("utf-8", "surrogatepass"))
        return len(self.payload)


def as_text(value: Any, draw) -> str:
    """JSON text; sometimes ASCII-only, always so when it has lone surrogates
    (which can only travel as \\u escapes)."""
    ascii_only = draw(st.booleans())
    raw = json.dumps(value, ensure_ascii=ascii_only)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raw = json.dumps(value)
    return raw


@st.composite
def cases(draw) -> Case:
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "valid",
                "mutated",
                "mutated",
                "mutated",
                "any_json",
                "any_object",
                "raw_text",
                "deep",
                "numbers",
                "binary",
                "empty",
                "fragmented",
                "not_utf8",
                "oversized",
            ]
        )
    )
    if kind == "valid":
        frame = draw(valid_frames())
        return Case(kind, as_text(frame, draw), frame, valid=True)
    if kind == "mutated":
        frame = draw(mutated_frames())
        return Case(kind, as_text(frame, draw), frame)
    if kind == "any_json":
        value = draw(json_values)
        return Case(kind, as_text(value, draw), value)
    if kind == "any_object":
        value = draw(st.dictionaries(text, json_values, max_size=5))
        value["type"] = draw(st.one_of(st.sampled_from(TYPES), text, json_values))
        return Case(kind, as_text(value, draw), value)
    if kind == "raw_text":
        raw = draw(
            st.one_of(
                st.text(max_size=200),
                st.sampled_from(
                    [
                        "{not json",
                        '{"type": "ping"',
                        '{"type": "ping"}{"type": "ping"}',
                        '{"type": "ping"} trailing',
                        "\x00",
                        '{"type": "ping", "type": "join"}',
                        '{"type": "ping", "ref": NaN}',
                        '{"type": "ping", "ref": Infinity}',
                        '{"type": "ping", "ref": -Infinity}',
                        '{"type": "ping", "ref": 1e999}',
                        "\ufeff{}",
                    ]
                ),
            )
        )
        return Case(kind, raw, _decoded(raw))
    if kind == "deep":
        n = draw(st.integers(min_value=1, max_value=20_000))
        raw = deep(n, draw(st.sampled_from(["list", "object"])))
        if len(raw) > MAX_FRAME_BYTES:
            raw = deep(5000, "object")
        return Case(kind, raw, _decoded(raw))
    if kind == "numbers":
        digits = draw(st.integers(min_value=1, max_value=6000))
        field_name = draw(st.sampled_from(["since", "seq", "ref", "is_typing", "room"]))
        number = draw(st.sampled_from(["9" * digits, "-" + "9" * digits, "1e400", "-0", "0.0"]))
        frame_type = draw(st.sampled_from(["join", "read", "ping", "typing"]))
        raw = f'{{"type": "{frame_type}", "room": "general", "{field_name}": {number}}}'
        return Case(kind, raw, _decoded(raw))
    if kind == "binary":
        return Case(kind, draw(st.binary(max_size=300)))
    if kind == "empty":
        return Case(kind, draw(st.sampled_from(["", b""])))
    if kind == "fragmented":
        frame = draw(valid_frames())
        raw = json.dumps(frame)
        cut = draw(st.integers(min_value=0, max_value=len(raw)))
        return Case(kind, [raw[:cut], raw[cut:]], frame, valid=True)
    if kind == "not_utf8":
        return Case(
            kind,
            draw(st.sampled_from([b"\xff", b'{"type": "ping\xc3"}', b"\xed\xa0\x80"])),
            expect_close=1007,
        )
    # around the 64 KiB frame limit: at or under it a ping, over it a 1009 close
    overhead = len(json.dumps({"type": "ping", "pad": ""}))
    pad = draw(st.integers(MAX_FRAME_BYTES - overhead - 8, MAX_FRAME_BYTES - overhead + 4096))
    frame = {"type": "ping", "pad": "x" * pad}
    raw = json.dumps(frame)
    if len(raw) > MAX_FRAME_BYTES:
        return Case(kind, raw, expect_close=1009)
    return Case(kind, raw, frame, valid=True)


_INVALID = object()


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decoded(raw: str) -> Any:
    """The JSON value as the server parses it (NaN and Infinity refused), or _INVALID."""
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return _INVALID


def bad_text(value: Any) -> bool:
    """True if any string in the value (keys included) holds NUL or a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def valid_ref(ref: Any) -> bool:
    if ref is None:  # the same as no ref
        return True
    if isinstance(ref, str):
        return len(ref) <= 128
    return isinstance(ref, int) and not isinstance(ref, bool) and abs(ref) <= 2**63 - 1


@dataclass
class Session:
    """The fuzzing client: one connection, reopened only after a documented close."""

    server: DaphneProcess
    token: str
    ws: ClientConnection | None = None
    joined: set[str] = field(default_factory=set)
    probes: int = 0
    tally: Counter = field(default_factory=Counter)

    def open(self) -> None:
        self.ws = connect(
            self.server.ws,
            additional_headers={"Authorization": f"Token {self.token}"},
            open_timeout=10,
            max_size=None,
            legacy=True,
        )
        self.joined = set()

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()

    def until_pong(self, probe: str, timeout: float = 15.0) -> list[dict]:
        """Every frame up to the probe's pong."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            assert isinstance(raw, str), f"a binary frame from the server: {raw[:80]!r}"
            frame = json.loads(raw)
            assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
            if frame == {"type": "pong", "ref": probe}:
                return frames
            frames.append(frame)

    def exchange(self, case: Case) -> list[dict] | int:
        """Send the case, then a probe ping. The frames before the probe's pong,
        or the close code if the server closed the connection."""
        self.probes += 1
        probe = f"probe-{self.probes}-{uuid.uuid4().hex[:8]}"
        try:
            self.ws.send(case.payload, text=True if case.kind == "not_utf8" else None)
            self.ws.send(json.dumps({"type": "ping", "ref": probe}))
            return self.until_pong(probe)
        except ConnectionClosed:
            code = self.ws.close_code
            self.open()
            return code

    def round_trip(self) -> None:
        """The connection still does real work: join, post, get the ack and the message."""
        self.ws.send(json.dumps({"type": "join", "room": "general", "ref": "rt-join"}))
        cid = str(uuid.uuid4())
        self.ws.send(
            json.dumps({"type": "message", "room": "general", "content": "rt", "client_id": cid})
        )
        frames = self.until_pong(self.ping())
        self.joined.add("general")
        assert any(f["type"] == "joined" and f.get("ref") == "rt-join" for f in frames), frames
        assert any(f["type"] == "ack" and f["client_id"] == cid for f in frames), frames
        assert any(f["type"] == "message" and f["client_id"] == cid for f in frames), frames

    def reset(self) -> None:
        """Leave every room, so that each example starts from the same state
        (and Hypothesis can replay and shrink it)."""
        for room in ROOMS:
            self.ws.send(json.dumps({"type": "leave", "room": room}))
        frames = self.until_pong(self.ping())
        assert sorted(f["room"] for f in frames if f["type"] == "left") == sorted(ROOMS)
        self.joined = set()

    def ping(self) -> str:
        self.probes += 1
        probe = f"probe-{self.probes}"
        self.ws.send(json.dumps({"type": "ping", "ref": probe}))
        return probe


def check(session: Session, case: Case, got: list[dict] | int) -> str:
    """Assert what a client may see after `case`; return a label for the tally."""
    if case.expect_close is not None or isinstance(got, int):
        assert got == case.expect_close, (
            f"{case.kind} frame ({case.size} bytes) got {got!r}, expected close {case.expect_close}"
        )
        return f"close {got}"
    for frame in got:
        assert frame["type"] in DIRECT_REPLY | UNSOLICITED, frame
        if frame["type"] == "error":
            assert frame["code"] in ERROR_CODES, frame  # UNAVAILABLE: an internal error
            assert isinstance(frame["message"], str) and frame["message"], frame
    replies = [f for f in got if f["type"] in DIRECT_REPLY]
    # What the server parses, not what was drawn (a float inf is sent as Infinity).
    if isinstance(case.payload, bytes):
        frame = _INVALID
    else:
        frame = _decoded("".join(case.payload) if isinstance(case.payload, list) else case.payload)
    typed = (
        isinstance(frame, dict)
        and isinstance(frame.get("type"), str)
        and not bad_text(frame)
        and valid_ref(frame.get("ref"))
    )
    if not typed or frame["type"] not in SUCCESS_REPLY.keys() | SILENT_TYPES:
        # not a frame at all, or an unknown type: one BAD_REQUEST, the connection lives on
        assert [f["type"] for f in replies] == ["error"], (case.payload, got)
        assert replies[0]["code"] == "BAD_REQUEST", (case.payload, got)
        if isinstance(frame, dict) and "ref" in frame and not typed:
            assert "ref" not in replies[0] or replies[0]["ref"] == frame["ref"], got
        return "BAD_REQUEST"
    kind = frame["type"]
    if kind in SILENT_TYPES:
        assert len(replies) <= 1 and all(f["type"] == "error" for f in replies), (frame, got)
    else:
        assert len(replies) == 1, (frame, got)
        assert replies[0]["type"] in {"error", SUCCESS_REPLY[kind]}, (frame, got)
    for reply in replies:
        assert reply.get("ref") == frame.get("ref"), (frame, reply)
    reply = replies[0] if replies else None
    if reply and reply["type"] == "joined":
        session.joined.add(reply["room"])
    if reply and reply["type"] == "left":
        session.joined.discard(reply["room"])
    if case.valid:
        expected = expected_for_valid(session, frame)
        actual = reply["code"] if reply and reply["type"] == "error" else (reply or {}).get("type")
        assert actual == expected, (frame, got)
    if reply is None:
        return f"{kind}: nothing"
    return f"{kind}: {reply.get('code', reply['type'])}"


def expected_for_valid(session: Session, frame: dict) -> str | None:
    """What a documented frame gets, by the rules in docs/protocol.md, for
    alice: `general` is public, `secret` private (bob's), `nowhere` missing."""
    kind, room = frame["type"], frame.get("room")
    if kind in ("ping", "leave"):
        return SUCCESS_REPLY[kind]
    if kind == "presence":
        return None
    if kind == "typing":
        # the state is updated before this check, from the frames already seen
        return None if room in session.joined else "BAD_REQUEST"
    refusal = {"secret": "NOT_FOUND", "nowhere": "NOT_FOUND"}.get(room)  # private = absent
    if refusal:
        return refusal
    return {"join": "joined", "message": "ack", "read": None}[kind]


@pytest.fixture
def fuzz_server(django_db_setup, redis_url):
    """A daphne of its own, its rate limits off so that the fuzzer reaches the
    handlers (rate limits have their own tests), and its log to read."""
    proc = DaphneProcess(
        redis_url=redis_url,
        env={
            "CHAT_MESSAGE_RATE": "off",
            "CHAT_TYPING_RATE": "off",
            "CHAT_JOIN_RATE": "off",
            "WS_FLOOD_CLOSE_RATE": "off",
        },
    ).start()
    yield proc
    proc.stop()


def test_fuzzed_frames_get_an_error_or_the_documented_reply_and_the_connection_carries_on(
    fuzz_server, make_user, token_for, record_property
):
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    secret = Room.objects.create(slug="secret", name="Secret", is_private=True)
    Membership.objects.create(room=secret, user=bob, role=Membership.Role.OWNER)
    session = Session(fuzz_server, token_for(alice))
    session.open()
    examples = count = 0

    @settings(settings.get_profile("ws-fuzz"))
    @given(joined_first=st.booleans(), sequence=st.lists(cases(), min_size=1, max_size=4))
    def fuzz(joined_first: bool, sequence: list[Case]) -> None:
        nonlocal examples, count
        examples += 1
        session.reset()
        if joined_first:  # so that typing and the like meet a joined room too
            sequence = [
                Case("valid", JOIN_GENERAL, json.loads(JOIN_GENERAL), valid=True),
                *sequence,
            ]
        for case in sequence:
            count += 1
            got = session.exchange(case)
            label = check(session, case, got)
            session.tally[f"{case.kind} -> {label}"] += 1
        if examples % 25 == 0:
            session.round_trip()

    started = time.monotonic()
    try:
        fuzz()
        session.round_trip()
    finally:
        session.close()
    elapsed = time.monotonic() - started
    record_property("ws_fuzz_examples", examples)
    record_property("ws_fuzz_cases", count)
    summary = "\n".join(f"  {n:5d}  {label}" for label, n in sorted(session.tally.items()))
    print(f"\nWS fuzzer: {count} frames in {examples} examples in {elapsed:.1f} s\n{summary}")
    log = fuzz_server.log_text()
    assert "Traceback" not in log, log[-4000:]
    assert "unexpected error handling a frame" not in log, log[-4000:]
