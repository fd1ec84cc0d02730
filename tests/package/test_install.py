"""
The package as a site installs it (contract §0): the wheel built from this
repository, installed into a fresh virtual environment, in a site made with
`django-admin startproject` that has its own user model, its own apps and its
own DRF defaults, and exactly the §0 snippet added. Served by daphne and by
uvicorn, over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SITE_FILES = Path(__file__).resolve().parent / "site"

pytestmark = [pytest.mark.package, pytest.mark.timeout(900)]

# Contract §0, word for word (plus the `include` import the snippet uses).
SETTINGS_SNIPPET = """
INSTALLED_APPS += ["channels", "rest_framework", "rest_framework.authtoken",
                   "chat", "notifications", "presence"]
ASGI_APPLICATION = "mysite.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REALTIME = {}   # every key optional; documented defaults
"""
URLS_SNIPPET = """
from django.urls import include  # noqa: E402

urlpatterns += [path("rt/", include("django_realtime.urls"))]
"""
# The site's own choices after the snippet: a topic namespace for its orders
# and a token for its metrics scraper.
METRICS_TOKEN = "site-metrics-token"
SITE_REALTIME = f"""
REALTIME["TOPICS"] = {{"shop": {{}}}}
REALTIME["METRICS_TOKEN"] = "{METRICS_TOKEN}"
"""
ASGI = """import os
from django.core.asgi import get_asgi_application
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()
from channels.routing import ProtocolTypeRouter
from chat.routing import websocket_application
application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})
"""


def clean_env() -> dict[str, str]:
    """This environment without what points at the demo (its settings, our paths)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REALTIME"))}
    env.pop("PYTHONPATH", None)
    return env


class Site:
    """A startproject site in its own virtual environment."""

    def __init__(self, root: Path):
        self.root = root
        self.venv = root / "venv"
        self.dir = root / "mysite"
        self.python = self.venv / "bin" / "python"
        self.wheel: Path | None = None

    def run(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(
            list(args), cwd=self.dir, env=clean_env(), capture_output=True, text=True, **kwargs
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{args} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(str(self.python), "manage.py", *args, check=check)

    def shell(self, code: str) -> str:
        return self.manage("shell", "--no-imports", "-c", code).stdout.strip()


def build(root: Path) -> Site:
    site = Site(root)
    wheels = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    wheel = site.wheel = next(wheels.glob("django_realtime-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(site.venv)], check=True)
    # The lock pins what this venv gets to the versions the suite runs on;
    # the wheel's own ranges must admit them.
    install = subprocess.run(
        [str(site.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "requirements.txt"), f"{wheel}[uvicorn]"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    site.dir.mkdir()
    subprocess.run(
        [str(site.venv / "bin" / "django-admin"), "startproject", "mysite", str(site.dir)],
        check=True,
        cwd=root,
        env=clean_env(),
    )
    shutil.copytree(SITE_FILES / "accounts", site.dir / "accounts")
    shutil.copytree(SITE_FILES / "shop", site.dir / "shop")
    settings = site.dir / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + (SITE_FILES / "site_settings.py").read_text()
        + SETTINGS_SNIPPET
        + SITE_REALTIME
    )
    urls = site.dir / "mysite" / "urls.py"
    urls.write_text(urls.read_text() + URLS_SNIPPET + (SITE_FILES / "site_urls.py").read_text())
    (site.dir / "mysite" / "asgi.py").write_text(ASGI)
    site.manage("makemigrations", "accounts", "shop")
    site.manage("migrate", "--noinput")
    site.shell(
        "from django.contrib.auth import get_user_model; U = get_user_model();"
        "[U.objects.create_user(n, password='pw') for n in ('alice', 'bob')];"
        "U.objects.create_user('root', password='pw', is_staff=True)"
    )
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    return build(tmp_path_factory.mktemp("site"))


APP = "mysite.asgi:application"
SERVERS = {
    "daphne": lambda port: ["daphne", "-b", "127.0.0.1", "-p", str(port), APP],
    "uvicorn": lambda port: ["uvicorn", "--host", "127.0.0.1", "--port", str(port), APP],
}  # fmt: skip


@pytest.fixture(params=sorted(SERVERS))
def served(request, site: Site) -> Iterator[str]:
    port = free_port()
    command = SERVERS[request.param](port)
    command[0] = str(site.venv / "bin" / command[0])
    log = open(site.root / f"{request.param}-{port}.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        command, cwd=site.dir, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"127.0.0.1:{port}"
        # What the server logged while serving (not while shutting down, when
        # daphne cancels open streams and Django logs their orphaned tasks).
        log.seek(0)
        output = log.read()
        assert "Traceback" not in output and " 500 " not in output, output
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def token(host: str, username: str) -> str:
    response = httpx.post(
        f"http://{host}/rt/api/auth/token/", json={"username": username, "password": "pw"}
    )
    assert response.status_code == 200, response.text
    return response.json()["token"]


async def recv_type(ws, kind: str, timeout: float = 10.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame


async def test_a_site_chats_and_notifies_over_real_sockets_under_its_prefix(served: str):
    """Tokens at the prefixed URL, a room, a message seen on a second user's
    socket, and a notification sent by the site's own post_save signal."""
    alice, bob = token(served, "alice"), token(served, "bob")
    http = httpx.AsyncClient(base_url=f"http://{served}")
    unread_url = "/rt/api/notifications/unread-count/"
    unread_before = (await http.get(unread_url, headers={"Authorization": f"Token {bob}"})).json()
    created = await http.post(
        "/rt/api/rooms/",
        json={"slug": f"lobby-{uuid.uuid4().hex[:6]}", "name": "Lobby"},
        headers={"Authorization": f"Token {alice}"},
    )
    assert created.status_code == 201, created.text
    slug = created.json()["slug"]
    url = f"ws://{served}/ws/"
    async with (
        websockets.connect(url, additional_headers={"Authorization": f"Token {alice}"}) as a,
        websockets.connect(url, additional_headers={"Authorization": f"Token {bob}"}) as b,
    ):
        for ws in (a, b):
            await ws.send(json.dumps({"type": "join", "room": slug}))
            assert (await recv_type(ws, "joined"))["room"] == slug
        client_id = str(uuid.uuid4())
        frame = {"type": "message", "room": slug, "content": "hi bob", "client_id": client_id}
        await a.send(json.dumps(frame))
        ack = await recv_type(a, "ack")
        seen = await recv_type(b, "message")
        assert (ack["seq"], ack["client_id"]) == (1, client_id)
        assert (seen["seq"], seen["content"], seen["user"]["username"]) == (1, "hi bob", "alice")

        # The site's own view, on its own DRF defaults; its post_save notifies bob.
        order = await http.post("/shop/orders/", json={"owner": "bob", "item": "tea"})
        assert order.status_code == 201, order.text
        note = (await recv_type(b, "notification"))["notification"]
        assert (note["kind"], note["data"]) == ("order", {"item": "tea"})

    # The history and the notification over REST, with the token.
    history = await http.get(
        f"/rt/api/rooms/{slug}/messages/", headers={"Authorization": f"Token {bob}"}
    )
    assert [m["content"] for m in history.json()["results"]] == ["hi bob"]
    unread = await http.get(unread_url, headers={"Authorization": f"Token {bob}"})
    assert unread.json() == {"count": unread_before["count"] + 1}
    await http.aclose()


def test_one_include_serves_the_probes_and_metrics_only_to_the_token_or_staff(served: str):
    base = f"http://{served}/rt/"
    assert httpx.get(base + "healthz").json() == {"status": "ok"}
    assert httpx.get(base + "readyz").json()["database"] == "ok"
    assert httpx.get(base + "metrics").status_code == 404
    assert httpx.get(base + "metrics", headers={"Authorization": "Bearer nope"}).status_code == 404
    scraped = httpx.get(base + "metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "realtime_" in scraped.text
    with httpx.Client(base_url=f"http://{served}") as browser:
        login = browser.get("/admin/login/")
        csrf = login.cookies["csrftoken"]
        form = {"username": "root", "password": "pw", "csrfmiddlewaretoken": csrf}
        assert browser.post("/admin/login/?next=/admin/", data=form).status_code == 302
        assert browser.get("/rt/metrics").status_code == 200


def test_the_sites_own_testcase_sees_its_notification_and_publication(site: Site):
    ran = site.manage("test", "shop", "--noinput")
    assert "Ran 1 test" in ran.stderr and "OK" in ran.stderr, ran.stderr


def test_a_typescript_file_type_checks_against_the_installed_client(site: Site):
    tsc = ROOT / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.skip("node_modules/.bin/tsc missing: `make install` runs `npm ci`")
    client = site.run(
        str(site.python), "-c", "import chat, pathlib; print(pathlib.Path(chat.__file__).parent)"
    ).stdout.strip()
    use = (ROOT / "tests" / "js" / "uses_client.ts").read_text()
    (site.dir / "app.ts").write_text(
        use.replace("../../chat/static/realtime/client.js", f"{client}/static/realtime/client.js")
    )
    (site.dir / "wrong.ts").write_text(
        f"import {{ RealtimeClient }} from '{client}/static/realtime/client.js';\n"
        "new RealtimeClient().on('message', (m) => console.log(m.body));\n"
    )
    flags = ["--strict", "--noEmit", "--lib", "es2022,dom", "--target", "es2022",
             "--module", "esnext", "--moduleResolution", "bundler", "--types", ""]  # fmt: skip
    good = site.run(str(tsc), *flags, "app.ts", check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    wrong = site.run(str(tsc), *flags, "wrong.ts", check=False)
    assert "Property 'body' does not exist on type 'MessageFrame'" in wrong.stdout


def test_the_sites_drf_defaults_neither_break_nor_loosen_the_apis(served: str):
    """The site allows anyone, authenticates by Basic only and answers errors
    with its own envelope; the package's views keep theirs."""
    anonymous = httpx.get(f"http://{served}/rt/api/rooms/")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == "Token"
    bob = {"Authorization": f"Token {token(served, 'bob')}"}
    missing = httpx.get(f"http://{served}/rt/api/rooms/no-such-room/messages/", headers=bob)
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
    bad = httpx.get(f"http://{served}/rt/api/notifications/?limit=-1", headers=bob)
    assert bad.status_code == 400 and bad.json()["code"] == "BAD_REQUEST"


def test_pages_assets_schema_and_streams_live_under_the_prefix(served: str):
    base = f"http://{served}/rt/"
    page = httpx.get(base)
    assert page.status_code == 302 and page.headers["Location"].startswith("/accounts/login/")
    asset = httpx.get(base + "assets/client.js")
    assert asset.status_code == 200 and "RealtimeClient" in asset.text
    assert "javascript" in asset.headers["Content-Type"]
    for sneaky in ("assets/%2e%2e/views.py", "assets/..%2fviews.py", "assets/%2fetc%2fpasswd"):
        assert httpx.get(base + sneaky).status_code == 404, sneaky
    notes = httpx.get(base + "assets/build/notes.bundle.js")
    assert notes.status_code == 200 and "javascript" in notes.headers["Content-Type"]
    assert "notes-text" in notes.text and "built without npm" not in notes.text
    schema = httpx.get(base + "api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/rt/api/rooms/" in paths and "/rt/api/notifications/" in paths
    assert "/shop/orders/" not in paths  # the site's own API is not the package's
    docs = httpx.get(base + "api/docs/")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    bob = {"Authorization": f"Token {token(served, 'bob')}"}
    with httpx.stream("GET", base + "events/notifications/", headers=bob, timeout=10) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")


def test_the_check_is_clean_and_names_a_missing_app(site: Site):
    clean = site.manage("check")
    assert clean.stdout.strip() == "System check identified no issues (0 silenced)."
    (site.dir / "mysite" / "no_channels.py").write_text(
        "from .settings import *  # noqa: F403\n"
        "INSTALLED_APPS = [a for a in INSTALLED_APPS if a != 'channels']  # noqa: F405\n"
    )
    broken = site.manage("check", "--settings", "mysite.no_channels", check=False)
    assert broken.returncode != 0
    assert (
        "realtime.E001" in broken.stderr and "'channels' is not in INSTALLED_APPS" in broken.stderr
    )
    assert "Traceback" not in broken.stderr


def test_the_sites_own_registrations_are_left_alone(site: Site):
    found = site.shell(
        "from django.contrib import admin; from django.contrib.auth import get_user_model;"
        "admin.autodiscover(); print(type(admin.site._registry[get_user_model()]).__name__);"
        "from django.template.loader import get_template;"
        "print(get_template('realtime/base.html').origin.name)"
    )
    user_admin, base = found.splitlines()
    assert user_admin == "SiteUserAdmin"
    assert "site-packages/chat/templates/realtime/base.html" in base


def test_the_wheel_carries_the_apps_and_nothing_of_the_demo(site: Site):
    listing = site.run(
        str(site.python), "-c",
        "import chat, notifications, presence, django_realtime, importlib.util as u;"
        "print(chat.__file__); print(u.find_spec('project'), u.find_spec('tests'))",
    ).stdout.split()  # fmt: skip
    assert "site-packages" in listing[0]
    assert listing[1:] == ["None", "None"]


NOTES_BUNDLE = "chat/static/realtime/build/notes.bundle.js"


def test_the_wheel_carries_the_notes_bundle(site: Site):
    assert site.wheel is not None
    with zipfile.ZipFile(site.wheel) as wheel:
        bundle = wheel.read(NOTES_BUNDLE).decode()
    assert "notes-text" in bundle and "built without npm" not in bundle


def clone_without_bundle(root: Path) -> Path:
    """The repository's files as a clone has them (tracked and new, not
    ignored: no bundle, no build output), with this checkout's node_modules."""
    clone = root / "clone"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    assert not (clone / NOTES_BUNDLE).exists()
    (clone / "node_modules").symlink_to(ROOT / "node_modules")
    return clone


def wheel_of(clone: Path, out: Path, path: str) -> tuple[str, subprocess.CompletedProcess]:
    """Build the clone's wheel (`pip wheel`, as `pip install <clone>` does)
    with this PATH; its Notes bundle and pip's output."""
    env = {k: v for k, v in clean_env().items() if k != "NPM"} | {"PATH": path}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(clone)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    with zipfile.ZipFile(next(out.glob("django_realtime-*.whl"))) as wheel:
        return wheel.read(NOTES_BUNDLE).decode(), built


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not on the PATH")
def test_a_clone_built_with_npm_gets_the_notes_bundle_built(tmp_path):
    """No `make install`: building the wheel runs `npm run build` itself."""
    if not (ROOT / "node_modules" / ".bin" / "esbuild").exists():
        pytest.skip("node_modules missing: `make install` runs `npm ci`")
    clone = clone_without_bundle(tmp_path)
    bundle, _ = wheel_of(clone, tmp_path / "dist", os.environ["PATH"])
    assert "notes-text" in bundle and "built without npm" not in bundle


def test_a_clone_built_without_npm_says_the_notes_panel_is_unavailable(tmp_path):
    """No npm at all: the wheel still builds, says why, and carries the
    stand-in that shows the panel as unavailable instead of a broken page."""
    clone = clone_without_bundle(tmp_path)
    only_python = tmp_path / "bin"
    only_python.mkdir()
    (only_python / "python").symlink_to(sys.executable)
    bundle, built = wheel_of(clone, tmp_path / "dist", str(only_python))
    assert "built without npm" in bundle and "notes-status" in bundle
    assert "the Notes panel's bundle was not built (npm is not on the PATH" in (
        built.stdout + built.stderr
    )
