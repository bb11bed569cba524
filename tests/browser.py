"""Headless Debian Chromium driven by playwright through its executable path (no browser download)."""

from __future__ import annotations

import contextlib
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling out on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


@contextlib.contextmanager
def open_frontend(server_url: str, user_data_dir: Path, viewport=(1400, 900)):
    """Yields (page, console_messages) with the ComfyUI frontend loaded and its app ready."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(user_data_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            console: list = []
            page.on("console", lambda m: console.append((m.type, m.text, m.location)))
            page.on("pageerror", lambda e: console.append(("pageerror", str(e), {})))
            page.goto(server_url, wait_until="domcontentloaded")
            page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
            yield page, console
        finally:
            context.close()


def pack_errors(console, pack_name: str) -> list:
    """Console errors that come from the pack's own code (the frontend logs a few 404s of its own)."""
    return [m for m in console
            if m[0] in ("error", "pageerror") and (pack_name in m[1] or pack_name in str(m[2].get("url", "")))]
