"""Throttles that hold (contract §2), over real daphne processes sharing one
Redis: wrong passwords with a forged X-Forwarded-For, spread over two
processes, reach the token-login throttle at its rate (not twice it); behind
a trusted proxy the address it vouches for counts; deploy/nginx.conf replaces
a client's X-Forwarded-For and keeps /metrics and /readyz to itself; the
demo's login form is throttled across processes; a path out of /static/ is 404.

Each test's limits live under a Redis prefix of its own, so spending
127.0.0.1's budget here spends nobody else's. A wrong password costs a
password hash (about 0.4 s), so the rates here are small."""

import os
import re
import uuid

import httpx
import pytest

from tests.hosts.nginx import MISSING, Nginx
from tests.live.conftest import METRICS_HEADERS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

WRONG = {"username": "alice", "password": "wrong"}


def own_limits(**env: str) -> dict[str, str]:
    return {"LIMITS_REDIS_PREFIX": f"limit-{uuid.uuid4().hex[:8]}:", **env}


@pytest.fixture
def alice(make_user):
    return make_user("alice", password="right")


def test_forged_forwarded_for_over_two_processes_reaches_the_login_throttle(
    daphnes, redis_url, alice
):
    env = own_limits(API_LOGIN_RATE="20/min", LOGIN_FORM_RATE="3/min")
    one = daphnes(redis_url=redis_url, env=env)
    two = daphnes(redis_url=redis_url, env=env)
    codes: list[int] = []
    retry_after: set[str] = set()
    with httpx.Client(timeout=10) as client:
        for i in range(130):
            server = (one, two)[i % 2]
            response = client.post(
                f"{server.http}/api/auth/token/",
                json=WRONG,
                headers={"X-Forwarded-For": f"198.51.100.{i}", "Forwarded": f"for=10.9.{i}.1"},
            )
            codes.append(response.status_code)
            if response.status_code == 429:
                retry_after.add(response.headers["Retry-After"])
                assert response.json()["code"] == "RATE_LIMITED"
    assert set(codes) == {400, 429}, codes
    assert codes.count(400) == 20, codes  # the rate, all processes together (2 × would be 40)
    assert codes[20:] == [429] * 110
    assert all(1 <= int(value) <= 60 for value in retry_after)


def test_the_demo_login_form_is_throttled_across_processes(daphnes, redis_url, alice):
    env = own_limits(LOGIN_FORM_RATE="3/min")
    one = daphnes(redis_url=redis_url, env=env)
    two = daphnes(redis_url=redis_url, env=env)
    responses = [
        _form_login(server, "wrong", forwarded=f"198.51.100.{i}")
        for i, server in enumerate([one, two, one])
    ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    refused = _form_login(two, "right", forwarded="198.51.100.77")
    assert refused.status_code == 429
    assert re.search(r"Too many failed attempts; try again in \d+ s", refused.text)
    assert "sessionid" not in refused.cookies


def _form_login(server, password: str, *, forwarded: str) -> httpx.Response:
    with httpx.Client(base_url=server.http, timeout=10) as client:
        client.get("/accounts/login/")
        return client.post(
            "/accounts/login/",
            data={
                "username": "alice",
                "password": password,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
            headers={"Referer": server.http + "/accounts/login/", "X-Forwarded-For": forwarded},
        )


def test_behind_nginx_the_address_it_saw_counts_and_metrics_stay_in(daphnes, redis_url, alice):
    """TRUSTED_PROXY_COUNT=1: the forwarded address is the client's. Straight
    to daphne (as a proxy would) each forwarded address has its own budget;
    through deploy/nginx.conf a client's forged header is replaced by the
    address nginx saw, so forging moves nothing."""
    env = own_limits(API_LOGIN_RATE="3/min", TRUSTED_PROXY_COUNT="1")
    one = daphnes(redis_url=redis_url, env=env)
    two = daphnes(redis_url=redis_url, env=env)
    with httpx.Client(timeout=10) as client:
        vouched = [
            client.post(
                f"{one.http}/api/auth/token/",
                json=WRONG,
                headers={"X-Forwarded-For": "203.0.113.5"},
            ).status_code
            for _ in range(4)
        ]
        assert vouched == [400, 400, 400, 429]
        other = client.post(
            f"{two.http}/api/auth/token/", json=WRONG, headers={"X-Forwarded-For": "203.0.113.6"}
        )
        assert other.status_code == 400  # another client behind the proxy
        # The process's own port answers its monitoring's bearer; nginx never passes it on.
        assert client.get(f"{one.http}/metrics", headers=METRICS_HEADERS).status_code == 200
    if not Nginx.available():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(MISSING)
    proxy = Nginx([(one.host, one.port), (two.host, two.port)]).start()
    try:
        with httpx.Client(base_url=proxy.http, timeout=10) as client:
            codes = [
                client.post(
                    "/api/auth/token/", json=WRONG, headers={"X-Forwarded-For": f"198.51.100.{i}"}
                ).status_code
                for i in range(4)
            ]
            assert codes == [400, 400, 400, 429]  # all 127.0.0.1, whatever the header said
            assert client.get("/metrics", headers=METRICS_HEADERS).status_code == 404
            assert client.get("/readyz").status_code == 404
            assert client.get("/healthz").status_code == 200
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    "path",
    [
        "/static/%2e%2e/%2e%2e/project/settings.py",
        "/static/%2e%2e/settings.py",
        "/static/..%2f..%2fproject/settings.py",
        "/static/%2e%2e%2f%2e%2e%2fetc/passwd",
    ],
)
def test_a_path_out_of_static_is_404(server, path):
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{server.http}{path}")
    assert response.status_code == 404, (path, response.status_code)
    assert "SECRET_KEY" not in response.text
