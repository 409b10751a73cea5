"""The demo chat page (`IMFLOW_DEMO=1` only): static HTML/CSS/JS shipped in the package,
and a development login that mints a token for a user name.

Nothing here is part of API v1: the page is a plain client of the documented API (sync,
history, conversations, read markers, WebSocket). Without demo mode none of these routes
exist, so `/` is a 404.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from app.auth import mint_token
from app.models import UserId
from app.web.context import SETTINGS, TOKENS, json_body, json_response, validated

STATIC_DIR = Path(__file__).with_name("static")
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}


class DemoLogin(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    user: UserId
    device: UserId = Field("web", description="one per browser: the sync cursor is per device")


async def index(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC_DIR / "index.html").read_bytes(),
                        content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC_DIR / name).read_bytes(), content_type=ASSETS[name],
                        charset="utf-8", headers={"Cache-Control": "no-cache"})


async def login(request: web.Request) -> web.Response:
    """A development token for any user name: the demo has no accounts."""
    req = validated(DemoLogin, await json_body(request, 4096))
    settings = request.app[SETTINGS]
    token = mint_token(settings.jwt_secret(), req.user, device=req.device,
                       ttl_s=settings.token_ttl_s)
    request.app[TOKENS].verify(token)  # warm the verifier's cache, as the page uses it next
    return json_response({"token": token, "user": req.user, "device": req.device})


ROUTES = [
    ("GET", "/", index),
    ("GET", "/demo/{name}", asset),
    ("POST", "/demo/login", login),
]
