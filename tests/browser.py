"""Headless Chromium for browser tests: Debian's chromium driven by Playwright.

``python3 run.py setup --dev`` installs /usr/bin/chromium (never ``playwright install``: the
machines reach only PyPI, Debian and npm). Use::

    async with chromium_page(*extra_args) as page:
        await page.goto(url)

Each page gets a fresh profile in a temporary directory and flags that keep Chromium off the
network. Screenshots go to :data:`ARTIFACTS` (``test-artifacts/``, gitignored).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
_DEFAULT_VIEWPORT: Any = {"width": 1100, "height": 900}

#: Flags that work on a closed network and a small CI machine.
BASE_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


#: Chromium's fake microphone playing ``wav`` once (then silence), permission granted.
def fake_microphone_args(wav: Path, *, loop: bool = False) -> tuple[str, ...]:
    return (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}{'' if loop else '%noloop'}",
    )


def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: run `python3 run.py setup --dev` (installs Debian's chromium)"
        )
    return CHROMIUM


@asynccontextmanager
async def chromium_page(
    *extra_args: str, viewport: Any = None, **context_options: Any
) -> AsyncIterator[Any]:
    """A fresh headless Chromium page (playwright.async_api.Page); closed on exit.

    Console errors and page errors are collected on ``page.frontdesk_errors`` for assertions.
    Playwright's ``expect`` waits up to 30 s (not its default 5 s): a loaded CI machine renders
    slowly, and a wait that ends early proves nothing.
    """
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=30_000)

    profile = Path(tempfile.mkdtemp(prefix="frontdesk-chromium-"))
    try:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=chromium_path(),
                headless=True,
                args=list(BASE_ARGS + extra_args),
                viewport=viewport or _DEFAULT_VIEWPORT,
                **context_options,
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                yield _collecting_errors(page)
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path


# --- One browser for a module's tests, a fresh context (profile) per page -----------------------


#: Chromium's fake microphone playing ``wav`` from its start each time a page opens it (once,
#: then silence). The file is read when a capture starts, so tests sharing one browser can
#: each write their caller's recording to ``wav`` before their page starts its call. No
#: automatic permission: a page's context grants the microphone (or, to test a refusal, not).
def fake_microphone_device_args(wav: Path) -> tuple[str, ...]:
    return ("--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}%noloop")


@asynccontextmanager
async def chromium_browser(*extra_args: str) -> AsyncIterator[Any]:
    """One headless Chromium (playwright.async_api.Browser), closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=list(BASE_ARGS + extra_args)
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def browser_page(
    browser: Any, *, microphone: bool = True, viewport: Any = None
) -> AsyncIterator[Any]:
    """A page in a fresh context of ``browser`` (nothing shared with other pages), with the
    microphone granted unless ``microphone`` is False; errors collected as by chromium_page."""
    context = await browser.new_context(
        viewport=viewport or _DEFAULT_VIEWPORT, permissions=["microphone"] if microphone else []
    )
    try:
        yield _collecting_errors(await context.new_page())
    finally:
        await context.close()


def _collecting_errors(page: Any) -> Any:
    """``page``, with its page errors and console errors collected in ``page.frontdesk_errors``."""
    errors: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", console)
    setattr(page, "frontdesk_errors", errors)  # noqa: B010  (not a Page attribute)
    return page
