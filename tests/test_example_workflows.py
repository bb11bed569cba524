"""Every workflow in example_workflows/ against a live ComfyUI server (the pack in custom_nodes).

How a workflow for models this machine does not have is checked:
1. statically against the server's /object_info (tools.workflow.check): node types exist, every
   link joins an output to an input of a compatible type, every widget value has the right type,
   range and (for combos) is one of the options, every required input is connected. The ONLY
   problem allowed is a combo value naming a model/image file the server does not have;
2. then an empty placeholder file of each missing name is created in the server's model folders
   (a real PNG for images), after which the static check must find nothing at all, and the API
   prompt converted from the workflow is posted to /prompt: the server's own validation must
   accept it (200, no node_errors). The server then executes it until the first loader reads a
   placeholder: that failure (and only a loader failure) is expected.
Toy-world workflows (every model file present once toyworld/install.py linked the weights) are run
to the end instead, with their step counts lowered to 2 to keep the suite fast, and must save a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import harness
import pytest

pytestmark = pytest.mark.server

ROOT = harness.ROOT
EXAMPLES = sorted((ROOT / "example_workflows").glob("*.json"))

# Where ComfyUI's loaders look for each file input (folder under the base directory's models/,
# or "input" for LoadImage). A new loader in an example workflow must be added here.
FILE_INPUTS = {
    ("UNETLoader", "unet_name"): "models/diffusion_models",
    ("VAELoader", "vae_name"): "models/vae",
    ("CLIPLoader", "clip_name"): "models/text_encoders",
    ("DualCLIPLoader", "clip_name1"): "models/text_encoders",
    ("DualCLIPLoader", "clip_name2"): "models/text_encoders",
    ("CLIPVisionLoader", "clip_name"): "models/clip_vision",
    ("CheckpointLoaderSimple", "ckpt_name"): "models/checkpoints",
    ("LoraLoaderModelOnly", "lora_name"): "models/loras",
    ("LoadImage", "image"): "input",
    ("LoadVideo", "file"): "input",
}
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
LOADERS = {t for t, _ in FILE_INPUTS}
PLACEHOLDERS: set = set()


def file_values(workflow: dict, info: dict) -> list:
    wf = wf_module()
    out = []
    for node in workflow["nodes"]:
        if node["type"] in info:
            for name, value in wf.widget_values(node, info[node["type"]]).items():
                if (node["type"], name) in FILE_INPUTS:
                    out.append(value)
    return out


def wf_module():
    from boxdirector.tools import workflow

    return workflow


@pytest.fixture(scope="module")
def server(comfy_server):
    from boxdirector.toyworld.install import link_models

    link_models(comfy_server.base_dir)
    return comfy_server


def load(path: Path) -> dict:
    return json.loads(path.read_text())


FAMILIES = ("wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.2_ti2v_5B",
            "hunyuan_video_t2v_720p", "ltxv_2B", "toyworld")
COVERAGE = {  # method: the families it has a workflow for
    "masked_attention": FAMILIES,
    "domain_adaptation": FAMILIES,
    "first_frame_share": FAMILIES,
    "reattention_edit": tuple(f for f in FAMILIES if f != "wan2.1_i2v_480p_14B"),  # not image-to-video
    "long_video": ("wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "toyworld"),                          # Wan text-to-video only
}


def write_video(dst: Path, frames: int = 8) -> None:
    """A real (tiny) video file, so that Load Video and Get Video Components run and only loaders fail."""
    import av
    import numpy as np

    with av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            img = np.full((64, 64, 3), (90, 120 + 10 * i, 60), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_the_examples_cover_every_family_and_method():
    names = {p.stem for p in EXAMPLES}
    for method, families in COVERAGE.items():
        for family in families:
            assert f"{family}_{method}" in names, (family, method)
    for p in EXAMPLES:
        thumb = [p.with_suffix(ext) for ext in (".jpg", ".webp") if p.with_suffix(ext).is_file()]
        assert thumb, f"{p.name} has no thumbnail ({p.stem}.jpg); run python -m tools.thumbnails"
        data = load(p)
        notes = [str(n.get("widgets_values", [""])[0]) for n in data["nodes"] if n["type"] in ("Note", "MarkdownNote")]
        assert notes, f"{p.name}: no note in the graph"
        if p.stem.endswith(tuple("_" + m for m in COVERAGE)):
            assert any("What to change" in t for t in notes), f"{p.name}: no note saying what to change"


def test_family_workflows_use_the_file_names_people_have():
    text = {p.stem: p.read_text() for p in EXAMPLES}
    for stem, files in {
        "wan2.1_t2v_1.3B_masked_attention": ["wan2.1_t2v_1.3B_fp16.safetensors",
                                             "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"],
        "wan2.1_i2v_480p_14B_masked_attention": ["clip_vision_h.safetensors"],
        "hunyuan_video_t2v_720p_masked_attention": ["llava_llama3_fp8_scaled.safetensors", "clip_l.safetensors"],
        "ltxv_2B_masked_attention": ["t5xxl_fp16.safetensors"],
        "wan2.1_t2v_1.3B_first_frame_share": ["wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors"],
        "wan2.1_t2v_1.3B_reattention_edit": ["wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors"],
        "wan2.1_t2v_1.3B_long_video": ["wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors"],
        "hunyuan_video_t2v_720p_reattention_edit": ["hunyuan_video_vae_bf16.safetensors"],
        "ltxv_2B_first_frame_share": ["ltx-video-2b-v0.9.5.safetensors"],
    }.items():
        for f in files:
            assert f'"{f}"' in text[stem], (stem, f)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_validates_on_the_live_server(server, path):
    wf = wf_module()
    workflow = load(path)
    info = server.get("/object_info")
    problems = wf.check(workflow, info)
    errors = [str(p) for p in problems if p.is_error]
    assert not errors, f"{path.name}:\n" + "\n".join(errors)

    # Only model/image files may be missing: give the server empty placeholders of those names.
    missing = [p for p in problems if not p.is_error]
    for p in missing:
        folder = FILE_INPUTS.get((p.node_type, p.input))
        assert folder, f"{path.name}: {p} -- add ({p.node_type!r}, {p.input!r}) to FILE_INPUTS"
        dst = server.base_dir / folder / p.value
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            if folder == "input" and dst.suffix.lower() in VIDEO_SUFFIXES:
                write_video(dst)
            elif folder == "input":
                from PIL import Image

                Image.new("RGB", (64, 64), (90, 120, 60)).save(dst)
            else:
                dst.write_bytes(b"")
        PLACEHOLDERS.add(p.value)
    info = server.get("/object_info")
    again = wf.check(workflow, info)
    # Files this workflow names that are placeholders (made by this or an earlier parameter).
    missing = [f for f in file_values(workflow, info) if f in PLACEHOLDERS]
    assert not again, f"{path.name} after placeholders:\n" + "\n".join(map(str, again))

    prompt = wf.to_api(workflow, info)
    # The converted prompt holds every node of the graph except notes and primitives.
    kept = {str(n["id"]) for n in workflow["nodes"] if n["type"] not in wf.FRONTEND_ONLY and n.get("mode", 0) == 0}
    assert set(prompt) == kept
    if not missing:  # a toy-world workflow: every file is here, so it runs to the end
        for node in prompt.values():  # the graph as shipped, with fewer steps
            if isinstance(node["inputs"].get("steps"), int):
                node["inputs"]["steps"] = 2
    status, answer = server.post("/prompt", {"prompt": prompt, "client_id": "example-workflow-test"})
    assert status == 200 and not answer.get("node_errors"), \
        f"{path.name} refused by the server: {harness.error_text(answer.get('node_errors') or {})} {answer}"
    entry = wait_history(server, answer["prompt_id"])
    status = entry["status"]
    if missing:
        # Executed until a loader read its empty placeholder: the one failure allowed.
        msgs = {k: v for k, v in status["messages"]}
        assert status["status_str"] == "error", f"{path.name} ran with placeholder models?"
        failed = msgs["execution_error"]["node_type"]
        assert failed in LOADERS, f"{path.name}: {failed} failed, not a loader: {msgs['execution_error']}"
        return
    assert status["status_str"] == "success", f"{path.name}: {status}"
    files = [item for out in entry["outputs"].values() for items in out.values() if isinstance(items, list)
             for item in items if isinstance(item, dict) and item.get("type") == "output"]
    assert files, f"{path.name} saved nothing: {entry['outputs']}"
    for item in files:
        data = server.get(f"/view?filename={item['filename']}&subfolder={item['subfolder']}&type=output")
        assert len(data) > 100, item


def wait_history(server, pid, timeout=600):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = server.get(f"/history/{pid}")
        if pid in hist:
            return hist[pid]
        time.sleep(0.2)
    raise TimeoutError(f"prompt {pid} did not finish\n{server.log_tail()}")


def tricky_workflow() -> tuple[dict, dict]:
    """The toy workflow with a Reroute, a PrimitiveNode on a converted widget (seed), a bypassed and
    a muted node, and a seed "control after generate" of randomize; returns (workflow, nodes by type)."""
    w = load(ROOT / "example_workflows" / "toyworld_masked_attention.json")
    by_type = {n["type"]: n for n in w["nodes"]}
    links = w["links"]
    next_link = [max(link[0] for link in links) + 1]

    def relink(src, slot, dst, name, typ):
        lid = next_link[0]
        next_link[0] += 1
        inp = next((i for i in dst["inputs"] if i["name"] == name), None)
        if inp is None:
            inp = {"name": name, "type": typ, "widget": {"name": name}, "link": None}
            dst["inputs"].append(inp)
        if inp["link"] is not None:
            links[:] = [link for link in links if link[0] != inp["link"]]
        inp["link"] = lid
        links.append([lid, src["id"], slot, dst["id"], dst["inputs"].index(inp), typ])

    ks, dec, vae, ms, unet = (by_type[t] for t in ("KSampler", "VAEDecode", "VAELoader", "ModelSamplingSD3", "UNETLoader"))
    patch, latent = by_type["BoxDirector.MaskedAttentionPatch"], by_type["EmptyHunyuanLatentVideo"]
    reroute = {"id": 100, "type": "Reroute", "pos": [0, 0], "mode": 0, "inputs": [{"name": "", "type": "*", "link": None}],
               "outputs": [{"name": "", "type": "VAE", "links": []}], "properties": {}}
    prim = {"id": 101, "type": "PrimitiveNode", "pos": [0, 0], "mode": 0, "inputs": [],
            "outputs": [{"name": "INT", "type": "INT", "links": [], "widget": {"name": "seed"}}],
            "properties": {"Run widget replace on values": False}, "widgets_values": [1234, "fixed"]}
    muted = {"id": 102, "type": "PreviewImage", "pos": [0, 0], "mode": 2,
             "inputs": [{"name": "images", "type": "IMAGE", "link": None}], "outputs": [], "properties": {}}
    w["nodes"] += [reroute, prim, muted]
    relink(vae, 0, reroute, "", "VAE")
    relink(reroute, 0, dec, "vae", "VAE")
    relink(prim, 0, ks, "seed", "INT")
    relink(dec, 0, muted, "images", "IMAGE")
    ms["mode"] = 4                                   # bypassed: the patch gets the UNETLoader's model
    ks["widgets_values"] = [1234, "randomize", 1, 5.0, "euler", "simple", 1.0]
    latent["widgets_values"] = [32, 32, 5, 1]
    traj = by_type["BoxDirector.BBoxTrajectory"]
    traj["widgets_values"][1:4] = [5, 32, 32]
    return w, {"ks": ks, "dec": dec, "vae": vae, "ms": ms, "unet": unet, "patch": patch}


def test_conversion_follows_the_frontend_rules(server):
    """Reroute, a PrimitiveNode on a converted widget, a bypassed and a muted node, a seed's
    "control after generate" value, both LoadImage layouts: converted as the frontend does, and
    the result is accepted and run by the server."""
    wf = wf_module()
    info = server.get("/object_info")
    w, n = tricky_workflow()
    ks, dec, vae, ms, unet, patch = (n[k] for k in ("ks", "dec", "vae", "ms", "unet", "patch"))
    assert wf.check(w, info) == []

    prompt = wf.to_api(w, info)
    assert "100" not in prompt and "101" not in prompt and "102" not in prompt and str(ms["id"]) not in prompt
    assert prompt[str(dec["id"])]["inputs"]["vae"] == [str(vae["id"]), 0]
    assert prompt[str(patch["id"])]["inputs"]["model"] == [str(unet["id"]), 0]
    k = prompt[str(ks["id"])]["inputs"]
    assert (k["seed"], k["steps"], k["cfg"], k["sampler_name"], k["scheduler"]) == (1234, 1, 5.0, "euler", "simple")
    entry = server.run_prompt(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success"

    for values in (["example.png", "image"], ["example.png"]):
        node = {"id": 1, "type": "LoadImage", "widgets_values": values}
        assert wf.widget_values(node, info["LoadImage"]) == {"image": "example.png"}
    with pytest.raises(wf.WorkflowError, match="widgets_values has 2 values"):
        wf.widget_values({"id": 7, "type": "KSampler", "widgets_values": [1, "fixed"]}, info["KSampler"])


def test_check_names_bad_links_values_and_unknown_nodes(server):
    wf = wf_module()
    info = server.get("/object_info")
    w = load(ROOT / "example_workflows" / "toyworld_masked_attention.json")
    by_type = {n["type"]: n for n in w["nodes"]}
    by_type["KSampler"]["widgets_values"][2] = 0                    # steps below the minimum
    by_type["KSampler"]["widgets_values"][4] = "no_such_sampler"
    by_type["BoxDirector.MaskedAttentionPatch"]["widgets_values"][3] = "yes"   # a BOOLEAN
    by_type["VAEDecode"]["type"] = "VAEDecodeThatIsNotInstalled"
    # Feed the latent into the KSampler's model input: LATENT -> MODEL.
    ks = by_type["KSampler"]
    latent = by_type["EmptyHunyuanLatentVideo"]
    model_in = next(i for i in ks["inputs"] if i["name"] == "model")
    link = next(link for link in w["links"] if link[0] == model_in["link"])
    link[1], link[2] = latent["id"], 0
    text = "\n".join(map(str, wf.check(w, info)))
    assert "steps: 0 is below the minimum 1" in text
    assert "sampler_name: 'no_such_sampler' is not one of" in text
    assert "self_attention: 'yes' is not true/false" in text
    assert "'VAEDecodeThatIsNotInstalled' is not installed" in text
    assert "input 'model' expects MODEL but is linked to output 0 (LATENT)" in text
    with pytest.raises(wf.WorkflowError, match="VAEDecodeThatIsNotInstalled"):
        wf.to_api(w, info)
