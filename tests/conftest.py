"""Fixtures shared by every test tier (see README, "Tests").

Tiers, by marker: ``core`` (plain torch), ``comfy`` (ComfyUI in-process, tiny real models),
``server`` (a live ComfyUI server over HTTP), ``browser`` (the real frontend in headless Chromium).
"""

from __future__ import annotations

import pytest

import harness

# Tests import the pack as `boxdirector.*` (as ComfyUI does: a package, relative imports).
harness.import_pack()


def pytest_configure(config):
    # Fail at collection with the fix, not with an ImportError deep inside a test.
    try:
        harness.check_comfy_install()
    except harness.ComfyInstallError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI imported in-process on the CPU; returns ComfyUI's ``nodes`` module."""
    return harness.import_comfy()


@pytest.fixture(scope="session")
def pack():
    """This checkout imported as the package ``boxdirector`` (relative imports, like ComfyUI)."""
    return harness.import_pack()


@pytest.fixture(scope="session")
def pack_nodes(comfy):
    """The pack's nodes, registered through ComfyUI's own custom-node loader: {node_id: class}."""
    return harness.load_pack_nodes()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """A real ComfyUI server with the pack in custom_nodes; always stopped at the end."""
    base = tmp_path_factory.mktemp("comfy_base")
    with harness.ComfyServer(base) as server:
        yield server


# --- tiny real models (tests/tiny_models.py) ---


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Where the tiny models' safetensors are written: a fresh session tmp dir, or the folder named
    by $BOXDIRECTOR_TINY_MODELS to keep them between runs (a file there is reused only if it was
    built from the same config; the model is always reloaded through ComfyUI's loader)."""
    import os
    from pathlib import Path

    keep = os.environ.get("BOXDIRECTOR_TINY_MODELS")
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_model(comfy, tiny_model_dir):
    """Factory ``tiny_model(family) -> tiny_models.TinyModel``, built and loaded once per session.

    The TinyModel (and its ModelPatcher) is shared by every test of the session: clone
    ``.patcher`` before adding wrappers, patches or model_options."""
    import tiny_models

    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = tiny_models.build_tiny_model(family, tiny_model_dir)
        return cache[family]

    return get
