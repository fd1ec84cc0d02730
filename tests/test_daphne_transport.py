"""project/daphne_transport.py's pieces that run without a server."""

from pprint import pformat

from django_realtime.daphne_transport import at_least, lazily


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


def test_a_handshake_timeout_is_raised_to_the_floor_and_none_stays_none():
    assert at_least(5, 30) == 30
    assert at_least(60, 30) == 60
    assert at_least(-1, 30) == -1  # daphne's "infinite"
    assert at_least(None, 30) is None
