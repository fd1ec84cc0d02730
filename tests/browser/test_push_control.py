"""The demo's "Notify me on this device" control (contract §11) in headless
Chromium: it registers the push service worker, and where the browser cannot
reach its push service (no network here) it says so rather than failing
silently."""

import os

import pytest

from chat.models import Room
from notifications import push
from tests.live.conftest import DaphneProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.browser]


@pytest.fixture
def push_site(django_db_setup):
    proc = DaphneProcess(
        redis_url=os.environ["REALTIME_TEST_REDIS_URL"],
        env={"WEBPUSH_VAPID_PRIVATE_KEY": push.generate_private_key_pem()},
    ).start()
    yield proc
    proc.stop()


def test_the_control_registers_the_worker_and_says_when_push_is_unavailable(
    push_site, sign_in, make_user
):
    Room.objects.create(slug="general", name="General")
    make_user("alice")
    tab = sign_in(push_site, "alice")
    tab.page.context.grant_permissions(["notifications"], origin=push_site.http)
    tab.page.goto(f"{push_site.http}/")
    tab.page.get_by_role("button", name="Notify me on this device").click()
    status = tab.page.locator("#push-status")
    status.filter(has_text="Push is unavailable").wait_for(timeout=20_000)
    assert "push service" in status.text_content()
    worker = tab.page.evaluate(
        "navigator.serviceWorker.getRegistration('/')"
        ".then((r) => r && (r.active || r.waiting || r.installing).scriptURL)"
    )
    assert worker.startswith(f"{push_site.http}/push-sw.js")
    assert tab.errors == []
