"""project/daphne_transport.py's pieces that run without a server."""

from pprint import pformat

from project.daphne_transport import lazily


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
