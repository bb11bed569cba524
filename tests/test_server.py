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


DOC = {"version": 1, "frames": 5, "width": 64, "height": 32,
       "objects": [{"id": "cat", "prompt": "a cat", "keyframes": [
           {"frame": 0, "box": [0.0, 0.25, 0.25, 0.75]}, {"frame": 4, "box": [0.75, 0.25, 1.0, 0.75]}]}]}


def trajectory_graph(doc_text: str) -> dict:
    return {
        "1": {"class_type": "BoxDirector.BBoxTrajectory",
              "inputs": {"trajectory": doc_text, "frames": 0, "width": 0, "height": 0}},
        "2": {"class_type": "BoxDirector.MaskSequence",
              "inputs": {"trajectory": ["1", 0], "mask_id": "m", "mask_prompt": "", "dilation": 1, "feather": 0.0}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["1", 2]}},
    }


def test_bad_trajectory_is_refused_over_http_naming_the_field(comfy_server):
    import json

    bad = json.loads(json.dumps(DOC))
    bad["objects"][0]["keyframes"][1]["box"] = [0.75, 0.25, 0.5, 0.75]
    status, answer = comfy_server.post("/prompt", {"prompt": trajectory_graph(json.dumps(bad))})
    assert status == 400, answer
    errors = answer["node_errors"]["1"]["errors"]
    assert any("objects[0].keyframes[1].box" in e["details"] for e in errors), errors


def test_trajectory_graph_runs_on_the_server(comfy_server):
    import json

    entry = comfy_server.run_prompt(trajectory_graph(json.dumps(DOC)))
    outputs = entry["outputs"]
    assert len(outputs["4"]["images"]) == 5            # one mask image per frame
    assert outputs["1"]["images"], outputs              # the trajectory node shows its keyframes
