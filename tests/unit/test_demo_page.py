"""The demo chat page and its development login exist only in demo mode."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from app.auth import verify_token
from app.web.demo import STATIC_DIR
from tests.unit.test_methods import offline_app

SECRET = "s" * 32
HOOKS = ["login-user", "login-submit", "new-chat-to", "new-chat-submit", "composer", "send",
         "load-more", "status"]


async def test_without_demo_mode_there_is_no_page_and_no_login() -> None:
    async with TestClient(TestServer(offline_app())) as client:
        assert (await client.get("/")).status == 404
        assert (await client.get("/demo/app.js")).status == 404
        assert (await client.post("/demo/login", json={"user": "alice"})).status == 404


async def test_demo_mode_serves_the_page_and_its_assets() -> None:
    async with TestClient(TestServer(offline_app(demo=True))) as client:
        page = await client.get("/")
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        for hook in HOOKS:
            assert f'data-testid="{hook}"' in html, hook
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            resp = await client.get(f"/demo/{name}")
            assert resp.status == 200 and resp.content_type == kind
        assert (await client.get("/demo/index.html")).status == 404
        script = (STATIC_DIR / "app.js").read_text()
        for hook in ("conversation", "unread", "message"):  # the hooks the script renders
            assert f'dataset.testid = "{hook}"' in script, hook


async def test_the_dev_login_mints_a_token_for_the_user_and_device() -> None:
    async with TestClient(TestServer(offline_app(demo=True))) as client:
        resp = await client.post("/demo/login", json={"user": "alice", "device": "web-1"})
        assert resp.status == 200
        body = await resp.json()
        identity = verify_token(SECRET, body["token"])
        assert (identity.user, identity.device) == ("alice", "web-1")
        bad = await client.post("/demo/login", json={"user": "a b"})
        assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_user"
