"""A real ComfyUI server with the pack in custom_nodes, over HTTP."""

import pytest

import harness

pytestmark = pytest.mark.server


def test_object_info_lists_every_pack_node_with_help(comfy_server, pack_nodes):
    info = comfy_server.get("/object_info")
    served = {k: v for k, v in info.items() if k.startswith("BoxDirector.")}
    # What ComfyUI's own loader registers in-process is exactly what the server offers.
    assert set(served) == set(pack_nodes), (set(served) ^ set(pack_nodes), comfy_server.log_tail())
    for node_id, node in served.items():
        assert node["description"].strip(), f"{node_id} has no description"
        assert node["category"].startswith("Box Director"), node_id
        for group in ("required", "optional"):
            for name, (_type, opts) in node["input"].get(group, {}).items():
                assert (opts or {}).get("tooltip", "").strip(), f"{node_id} input {name!r} has no tooltip"


def test_pack_loaded_without_import_errors(comfy_server):
    failed = [line for line in comfy_server.log_tail(100000).splitlines()
              if line.startswith("Cannot import") and f"/{harness.PACK_NAME} module" in line]
    assert not failed, comfy_server.log_tail(200)
    # ComfyUI lists each custom node folder with its import time; a failed one says "(IMPORT FAILED)".
    loaded = [line for line in comfy_server.log_tail(100000).splitlines()
              if line.rstrip().endswith(f"custom_nodes/{harness.PACK_NAME}")]
    assert loaded and "IMPORT FAILED" not in loaded[0], comfy_server.log_tail(200)


def test_pack_javascript_is_served(comfy_server):
    listed = comfy_server.get("/extensions")
    ours = [p for p in listed if p.startswith(f"/extensions/{harness.PACK_NAME}/")]
    assert ours, f"no JS of the pack in /extensions: {listed}"
    for path in ours:
        body = comfy_server.get(path)
        assert b"registerExtension" in body or b"import" in body, path
