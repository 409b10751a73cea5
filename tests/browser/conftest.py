"""Browser fixtures: a demo-mode web process of the test stack, and headless Chromium
from Debian's `chromium` package driven by Playwright (no browser download)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from app.devstack import BIN, ROOT, Stack, free_port, wait_web_ready
from tests.e2e.conftest import names

__all__ = ["names"]  # unique user ids per test, as in tests/e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALLED = CHROMIUM.exists()
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)  # deliveries go through Kafka and every agent


@pytest_asyncio.fixture(scope="session")
async def demo_url(stack: Stack) -> AsyncIterator[str]:
    """One more web process of the stack, with IMFLOW_DEMO=1 (the others serve no page)."""
    port = free_port()
    proc = stack.start("web-demo", str(BIN / "imflow"), "web", "--port", str(port),
                       env={"IMFLOW_DEMO": "1"})
    url = f"http://127.0.0.1:{port}"
    await wait_web_ready(url)
    yield url
    proc.stop()


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_INSTALLED:
        pytest.fail("no /usr/bin/chromium: scripts/install.sh installs Debian's chromium",
                    pytrace=False)
    async with async_playwright() as p:
        # root (as in CI) needs --no-sandbox
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        await chromium.close()


Shot = Callable[[Page, str], Awaitable[Path]]


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shot:
    """Save a screenshot of a step: tests/artifacts/browser/<test>/<nn>-<step>.png."""
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    count = 0

    async def take(page: Page, step: str) -> Path:
        nonlocal count
        count += 1
        path = folder / f"{count:02d}-{step}.png"
        await page.screenshot(path=str(path))
        return path
    return take


Login = Callable[[str], Awaitable[tuple[BrowserContext, Page]]]


@pytest_asyncio.fixture
async def login(browser: Browser, demo_url: str) -> AsyncIterator[Login]:
    """Open the page in a new browser context (one device) and log in as `user`."""
    contexts: list[BrowserContext] = []

    async def open_as(user: str) -> tuple[BrowserContext, Page]:
        context = await browser.new_context(viewport={"width": 1000, "height": 640})
        contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(demo_url + "/")
        await page.get_by_test_id("login-user").fill(user)
        await page.get_by_test_id("login-submit").click()
        await expect(page.get_by_test_id("status")).to_have_text("online", timeout=TIMEOUT_MS)
        return context, page

    yield open_as
    for context in contexts:
        await context.close()
