"""
The WebSocket origin check is Django's CSRF origin rule on whole origins:
the Origin equals the handshake's own scheme://Host (https for wss, or as
SECURE_PROXY_SSL_HEADER says), or is trusted (CSRF_TRUSTED_ORIGINS, its
wildcards as Django reads them, or WS_ALLOWED_ORIGINS). Over real sockets:
tests/live/test_origin_live.py.
"""

import pytest

from chat.auth import origin_allowed

HOST = "chat.example.com"


def handshake(host: str = HOST, scheme: str = "wss", **headers: str) -> dict:
    raw = [(b"host", host.encode())]
    raw += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "websocket", "path": "/ws/", "scheme": scheme, "headers": raw}


@pytest.fixture(autouse=True)
def _site(settings, realtime):
    settings.ALLOWED_HOSTS = [HOST, "127.0.0.1", "[::1]"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.org", "https://*.trusted.example"]
    realtime.WS_ALLOWED_ORIGINS = ["https://widget.example.net"]


@pytest.mark.parametrize(
    ("origin", "scope", "allowed"),
    [
        ("https://chat.example.com", handshake(), True),
        ("http://chat.example.com", handshake(scheme="ws"), True),
        ("http://chat.example.com", handshake(), False),  # http page, https socket
        ("https://chat.example.com", handshake(scheme="ws"), False),
        ("https://chat.example.com:8443", handshake(), False),  # another port
        ("https://chat.example.com", handshake("chat.example.com:8443"), False),
        ("https://chat.example.com:8443", handshake("chat.example.com:8443"), True),
        ("http://127.0.0.1:8000", handshake("127.0.0.1:8000", "ws"), True),
        ("http://127.0.0.1:8001", handshake("127.0.0.1:8000", "ws"), False),
        ("http://[::1]:8000", handshake("[::1]:8000", "ws"), True),
        # A Host Django refuses (not in ALLOWED_HOSTS) is no origin of the site.
        ("https://evil.example", handshake("evil.example"), False),
        # Trusted origins, exact and by Django's wildcard.
        ("https://app.example.org", handshake(), True),
        ("http://app.example.org", handshake(), False),
        ("https://app.example.org:444", handshake(), False),
        ("https://eu.trusted.example", handshake(), True),
        ("https://trusted.example", handshake(), True),
        ("http://eu.trusted.example", handshake(), False),
        ("https://trusted.example.evil.com", handshake(), False),
        ("https://eviltrusted.example", handshake(), False),
        ("https://widget.example.net", handshake(), True),
        ("https://widget.example.net.evil.com", handshake(), False),
        # Lookalikes of the site's own origin.
        ("https://chat.example.com.evil.com", handshake(), False),
        ("https://evil.com@chat.example.com", handshake(), False),
        ("https://chat.example.com/", handshake(), False),
        ("https://CHAT.example.com", handshake(), False),
        ("wss://chat.example.com", handshake(), False),
        ("null", handshake(), False),
        ("", handshake(), False),
        ("https://[", handshake(), False),
    ],
)
def test_whole_origins_as_djangos_csrf_check_compares_them(origin, scope, allowed):
    assert origin_allowed(origin, scope) is allowed


def test_behind_a_tls_proxy_the_scheme_is_the_one_the_proxy_vouches_for(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    behind = handshake(scheme="ws", x_forwarded_proto="https")
    assert origin_allowed("https://chat.example.com", behind)
    assert not origin_allowed("http://chat.example.com", behind)
    plain = handshake(scheme="ws", x_forwarded_proto="http")
    assert origin_allowed("http://chat.example.com", plain)
    assert not origin_allowed("https://chat.example.com", plain)


def test_the_forwarded_host_counts_only_when_django_is_told_to_trust_it(settings):
    proxied = handshake("10.0.0.5:8000", x_forwarded_host="chat.example.com")
    settings.ALLOWED_HOSTS = [HOST, "10.0.0.5"]
    assert not origin_allowed("https://chat.example.com", proxied)
    settings.USE_X_FORWARDED_HOST = True
    assert origin_allowed("https://chat.example.com", proxied)
