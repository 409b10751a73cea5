"""The served OpenAPI document: valid OpenAPI 3, up to date, and covering every route."""

from __future__ import annotations

import orjson
from openapi_spec_validator import validate

from app.settings import Settings
from app.web.app import OPENAPI_PATH, create_app
from app.web.openapi import build


def test_the_committed_document_is_what_the_models_describe() -> None:
    assert orjson.loads(OPENAPI_PATH.read_bytes()) == build(), "run `imflow openapi`"


def test_the_document_is_valid_openapi_3() -> None:
    validate(build())


def test_every_route_of_the_app_is_documented() -> None:
    """Every route but HEAD (with GET) and the last one, which answers 404/405 to what no
    route takes."""
    app = create_app(Settings(_env_file=None, secret="s" * 32))
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method not in ("HEAD", "*")}
    documented = {(m, p) for p, ops in build()["paths"].items() for m in ops}
    assert routes == documented
