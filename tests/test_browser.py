"""The real ComfyUI frontend in headless Chromium against a live server."""

import pytest

import harness
from browser import open_frontend, pack_errors

pytestmark = pytest.mark.browser


def test_frontend_loads_the_pack_extension(comfy_server, tmp_path):
    with open_frontend(comfy_server.url, tmp_path / "profile") as (page, console):
        page.wait_for_function(
            "() => window.app.extensions && window.app.extensions.some(e => e.name === 'boxdirector.core')",
            timeout=60_000,
        )
        page.screenshot(path=str(tmp_path / "frontend.png"))
        assert not pack_errors(console, harness.PACK_NAME), console
