"""Chromium driven by Playwright, as the portal's browser tests use it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from referral_hub.cli.portal import DemoLogin

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
AXE = Path(__file__).parents[2] / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core from npm (``make node``); the page's CSP forbids injected scripts, so contexts that run it bypass CSP."""
SERIOUS = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium (``make tools`` installs it); a missing one fails the test, never skips it."""
    assert CHROMIUM.exists(), "chromium is not installed: run `make tools`"  # noqa: ASYNC240 - one stat before launch
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        await launched.close()


async def log_in(page: Page, base: str, login: DemoLogin) -> None:
    """Type the username, password and the authenticator's current code, as a member does."""
    await page.goto(f"{base}/login")
    await page.get_by_label("Username").fill(login.username)
    await page.get_by_label("Password").fill(login.password)
    await page.get_by_label("Authenticator code").fill(pyotp.TOTP(login.totp_secret).now())
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url(f"{base}/work")


async def shot(page: Page, name: str) -> Path:
    """Save a screenshot of the step as a test artefact."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def accessibility_problems(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now (empty when there are none)."""
    assert AXE.exists(), "axe-core is not installed: run `make node`"
    await page.add_script_tag(path=str(AXE))
    problems: list[str] = await page.evaluate(SERIOUS)
    return problems


async def overflows(page: Page) -> bool:
    """Whether the page is wider than the window (it scrolls sideways)."""
    wide: bool = await page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    return wide
