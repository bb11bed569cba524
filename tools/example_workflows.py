"""Writes example_workflows/*.json: one UI-format workflow per method and model family, with the
model file names people download (the Comfy-Org repackaged files), a note saying what to change,
and the pack's toy-world versions that run on any machine.

    python -m tools.example_workflows --server http://127.0.0.1:8188   # or no --server: starts one
    python -m tools.thumbnails                                         # then redraw the thumbnails

Widget positions come from the server's /object_info (the same rules tools.workflow reads them
back with), so the files stay loadable when ComfyUI reorders nothing; tests/test_example_workflows.py
checks every file in example_workflows/ against a live server.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

from . import workflow as wf

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "example_workflows"
COL_W, GAP = 360, 30


class Graph:
    """A UI-format workflow under construction, laid out in columns."""

    def __init__(self, info: dict, name: str):
        self.info, self.name = info, name
        self.nodes, self.links = [], []
        self.col_y = {}

    def _place(self, col: int, height: int) -> list:
        y = self.col_y.get(col, 60)
        self.col_y[col] = y + height + GAP
        return [40 + col * COL_W, y]

    def add(self, type_: str, col: int, title: str | None = None, **values) -> dict:
        node_def = self.info[type_]
        layout = wf.widget_layout(node_def)
        wv = []
        for name, kind in layout:
            if kind == "control":
                wv.append("fixed")
            elif kind == "upload":
                wv.append("image")
            else:
                if name in values:
                    wv.append(values.pop(name))
                else:
                    typ, opts = next((t, o) for n, t, o, _ in wf.ordered_inputs(node_def) if n == name)
                    options = wf.combo_options(typ, opts)
                    wv.append(opts["default"] if "default" in opts else (options[0] if options else None))
        if values:
            raise KeyError(f"{type_} has no widgets {sorted(values)}")
        sockets = [{"name": n, "type": t if not isinstance(t, list) else "COMBO", "link": None}
                   for n, t, o, _ in wf.ordered_inputs(node_def) if not wf.is_widget(t, o)]
        outputs = [{"name": (node_def.get("output_name") or node_def["output"])[i], "type": t, "links": [],
                    "slot_index": i} for i, t in enumerate(node_def["output"])]
        n_widgets = sum(1 for _, k in layout if k == "value")
        multiline = sum(1 for n, t, o, _ in wf.ordered_inputs(node_def) if t == "STRING" and o.get("multiline"))
        height = 30 + 24 * (max(len(sockets), len(outputs)) + n_widgets) + 90 * multiline
        node = {"id": len(self.nodes) + 1, "type": type_, "pos": self._place(col, height), "size": [320, height],
                "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": sockets, "outputs": outputs,
                "properties": {"Node name for S&R": type_}, "widgets_values": wv}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def note(self, col: int, text: str, title: str = "What to change", width: int = 420, height: int = 420) -> dict:
        node = {"id": len(self.nodes) + 1, "type": "Note", "pos": self._place(col, height), "size": [width, height],
                "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [],
                "properties": {}, "widgets_values": [text], "title": title, "color": "#432", "bgcolor": "#653"}
        self.nodes.append(node)
        return node

    def link(self, src: dict, slot, dst: dict, name: str) -> None:
        if isinstance(slot, str):
            slot = next(i for i, o in enumerate(src["outputs"]) if o["name"] == slot)
        typ = src["outputs"][slot]["type"]
        lid = len(self.links) + 1
        inp = next((i for i in dst["inputs"] if i["name"] == name), None)
        if inp is None:  # a widget turned into an input, as the frontend does
            t = next(t for n, t, o, _ in wf.ordered_inputs(self.info[dst["type"]]) if n == name)
            inp = {"name": name, "type": t, "widget": {"name": name}, "link": None}
            dst["inputs"].append(inp)
        inp["link"] = lid
        src["outputs"][slot]["links"].append(lid)
        self.links.append([lid, src["id"], slot, dst["id"], dst["inputs"].index(inp), typ])

    def to_ui(self) -> dict:
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "boxdirector/" + self.name)), "revision": 0,
                "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}, "boxdirector": {"example": self.name}},
                "version": 0.4}


def trajectory(frames: int, width: int, height: int, objects: list) -> str:
    """A Trajectory document (README) with keyframes given at fractions of the clip."""
    doc = {"version": 1, "frames": frames, "width": width, "height": height, "objects": []}
    for oid, phrase, keys in objects:
        kfs = [{"frame": round(t * (frames - 1)), "box": box, **({"ease": "ease_in_out"} if i == 0 else {})}
               for i, (t, box) in enumerate(keys)]
        doc["objects"].append({"id": oid, "prompt": phrase, "keyframes": kfs})
    return json.dumps(doc, indent=1)


# --- the families: model files as Comfy-Org ships them, settings from ComfyUI's own examples -------------
FAMILIES = {
    "wan2.1_t2v_1.3B": {
        "title": "Wan 2.1 text-to-video 1.3B", "kind": "wan_t2v",
        "unet": "wan2.1_t2v_1.3B_fp16.safetensors", "clip": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "clip_type": "wan",
        "vae": "wan_2.1_vae.safetensors", "width": 832, "height": 480, "length": 33, "steps": 30, "cfg": 6.0, "sampler": "uni_pc",
        "shift": 8.0, "fps": 16, "vram": "about 8 GB of VRAM at 832x480x33"},
    "wan2.1_t2v_14B": {
        "title": "Wan 2.1 text-to-video 14B", "kind": "wan_t2v",
        "unet": "wan2.1_t2v_14B_fp8_e4m3fn.safetensors", "clip": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "clip_type": "wan", "vae": "wan_2.1_vae.safetensors", "width": 832, "height": 480, "length": 33, "steps": 30, "cfg": 6.0,
        "sampler": "uni_pc", "shift": 8.0, "fps": 16,
        "vram": "16-24 GB of VRAM (fp8); wan2.1_t2v_14B_fp16/bf16 need more; 1280x720 is its other native size"},
    "wan2.1_i2v_480p_14B": {
        "title": "Wan 2.1 image-to-video 14B (480p)", "kind": "wan_i2v",
        "unet": "wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors", "clip": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "clip_type": "wan", "vae": "wan_2.1_vae.safetensors", "clip_vision": "clip_vision_h.safetensors",
        "width": 832, "height": 480, "length": 33, "steps": 20, "cfg": 6.0, "sampler": "uni_pc", "shift": 8.0, "fps": 16,
        "vram": "16-24 GB of VRAM (fp8); the 720p model is wan2.1_i2v_720p_14B_fp8_e4m3fn.safetensors"},
    "wan2.2_ti2v_5B": {
        "title": "Wan 2.2 text/image-to-video 5B", "kind": "wan22_ti2v",
        "unet": "wan2.2_ti2v_5B_fp16.safetensors", "clip": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "clip_type": "wan",
        "vae": "wan2.2_vae.safetensors", "width": 1280, "height": 704, "length": 49, "steps": 20, "cfg": 5.0, "sampler": "uni_pc",
        "shift": 8.0, "fps": 24, "vram": "about 8-12 GB of VRAM at 1280x704x49 (its latent is 16x smaller per axis pair)"},
    "hunyuan_video_t2v_720p": {
        "title": "HunyuanVideo text-to-video", "kind": "hunyuan",
        "unet": "hunyuan_video_t2v_720p_bf16.safetensors", "clip1": "clip_l.safetensors",
        "clip2": "llava_llama3_fp8_scaled.safetensors", "vae": "hunyuan_video_vae_bf16.safetensors",
        "width": 848, "height": 480, "length": 49, "steps": 20, "guidance": 6.0, "sampler": "euler", "shift": 7.0, "fps": 24,
        "vram": "24 GB of VRAM or more at 848x480x49 (weight_dtype fp8_e4m3fn halves the model)"},
    "ltxv_2B": {
        "title": "LTX-Video 2B", "kind": "ltxv", "ckpt": "ltx-video-2b-v0.9.5.safetensors", "clip": "t5xxl_fp16.safetensors",
        "clip_type": "ltxv", "width": 768, "height": 512, "length": 97, "steps": 30, "cfg": 3.0, "sampler": "euler", "fps": 24,
        "vram": "about 12 GB of VRAM at 768x512x97"},
    "toyworld": {
        "title": "Toy world (tiny Wan 2.1 trained by the pack; runs on a CPU)", "kind": "toy",
        "unet": "toy_wan_dit.safetensors", "vae": "toy_wan_vae.safetensors", "width": 128, "height": 128, "length": 17,
        "steps": 20, "cfg": 3.0, "sampler": "dpmpp_2m_sde", "shift": 3.0, "fps": 8, "vram": "a CPU; a few seconds per clip"},
}

PROMPTS = {
    "toy": ("a red circle and a blue square", "", [
        ("circle", "red circle", [(0.0, [0.05, 0.1, 0.35, 0.4]), (1.0, [0.6, 0.1, 0.9, 0.4])]),
        ("square", "blue square", [(0.0, [0.6, 0.55, 0.9, 0.9]), (1.0, [0.1, 0.55, 0.4, 0.9])])]),
    "default": ("a corgi runs across a sunny park lawn towards a red ball, handheld camera, natural light",
                "blurry, low quality, static, distorted, extra legs, watermark, text", [
                    ("dog", "corgi", [(0.0, [0.02, 0.45, 0.32, 0.95]), (1.0, [0.5, 0.4, 0.8, 0.92])]),
                    ("ball", "red ball", [(0.0, [0.78, 0.72, 0.9, 0.9]), (1.0, [0.82, 0.7, 0.95, 0.9])])]),
}

METHODS = {
    "masked_attention": "Masked attention (PEEKABOO)",
    "domain_adaptation": "Mask normalisation + temporal intrinsic denoising (domain-adaptation paper)",
    "first_frame_share": "First-frame sharing + shared noise + mask bias (dynamic mask guidance)",
    "reattention_edit": "Region editing of an existing video (ReAtCo: inversion, RAD, IRJS)",
    "long_video": "Long video in chunks, anchored on the first frame (dynamic mask guidance)",
}
# Which families each method has a workflow for. ReAttention Edit: the families its docs list (Wan,
# HunyuanVideo, LTX-Video) without Wan image-to-video, whose start-image conditioning makes no sense when
# the whole source video is given. Long Video (Chunks): Wan text-to-video only.
METHOD_FAMILIES = {
    "masked_attention": list(FAMILIES),
    "domain_adaptation": list(FAMILIES),
    "first_frame_share": list(FAMILIES),
    "reattention_edit": [f for f in FAMILIES if FAMILIES[f]["kind"] != "wan_i2v"],
    "long_video": ["wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "toyworld"],
}
# ReAttention Edit: what replaces what (the edit prompt and the new object's phrase).
EDITS = {
    "toy": ("a red circle", "a blue square", "blue square"),
    "default": (None, "a white cat runs across a sunny park lawn, handheld camera, natural light", "white cat"),
}
FFS_MODE = "add_first"  # First Frame Share's default mode (bench.long_video)
LONG = {"wan2.1_t2v_1.3B": (81, 241), "wan2.1_t2v_14B": (81, 241), "toyworld": (17, 41)}   # (chunk = native length, whole video) in frames


def note_text(fam_key: str, fam: dict, method: str) -> str:
    files = []
    if fam["kind"] == "toy":
        files.append("Nothing to download: run `python -m toyworld.install <ComfyUI folder>` once, it links "
                     "toy_wan_dit.safetensors into models/diffusion_models and toy_wan_vae.safetensors into "
                     "models/vae. The Toy Text Encoder knows only: a an the and red green blue yellow white "
                     "circle square triangle.")
    else:
        for key, folder in (("unet", "models/diffusion_models"), ("ckpt", "models/checkpoints"),
                            ("clip", "models/text_encoders"), ("clip1", "models/text_encoders"),
                            ("clip2", "models/text_encoders"), ("clip_vision", "models/clip_vision"),
                            ("vae", "models/vae")):
            if key in fam:
                files.append(f"- {fam[key]} -> {folder}/")
        files = ["Model files (Comfy-Org repackaged releases; pick yours in the loader nodes if the name differs):"] + files
    how = {
        "masked_attention": (
            "Method: Masked Attention Patch. For the first part of sampling (start/end_percent, default the "
            "first 30 % of steps) each object's video tokens attend only inside its own box and to its own "
            "words. Raise end_percent (0.2-0.4) for firmer placement, lower it for more freedom."),
        "domain_adaptation": (
            "Method: Masked Attention Patch with mask_normalization on (EFDM where masking narrowed a channel) + "
            "the Temporal Intrinsic Denoise sampler, which refines the first 25 % of steps towards boxes whose "
            "content agrees between frames (4 extra model evaluations per refined step: iterations, "
            "end_percent)."),
        "first_frame_share": (
            "Method: First Frame Share: in self-attention every frame also attends the first latent frame, so "
            "each object keeps its colour and shape; its mask bias (mask_bias) pulls each box towards its own "
            "words. Shared First-Frame Noise mixes the ENCODED first frame into every later frame's noise "
            "(the paper's Eq. 8, alpha) and feeds SamplerCustomAdvanced: the first frame is any image (here: "
            "First frame -> VAE Encode; the paper makes it with a mask-conditioned image model). mode "
            "'add_first' = full attention + the first frame's keys weighted 1 + strength (the paper's appended "
            "K/V), 'anchor' = own frame + first frame only, 'paper' = first frame only; alpha 0 = ordinary noise."),
        "reattention_edit": (
            "Method: ReAttention Edit (ReAtCo). The source video is inverted to noise, then resampled with the "
            "edit prompt: only inside the boxes does anything change (IRJS re-takes everything outside from "
            "the source at every step), and RAD pulls the new object's words into its box. Cost: "
            "steps x (1 + inversion_iterations) evaluations to invert, then one guided step per step plus "
            "RAD gradient passes in the first half (rad_end_percent)."),
        "long_video": (
            "Method: Long Video (Chunks). Chunk after chunk of the model's native length (the Empty latent "
            "node), each continuing the previous chunk's last latent frame (overlap) and anchored on the first "
            "frame (anchor_first_frame; first_frame_share and noise_share add first-frame sharing and Eq. 8 "
            "noise, off by default: they did not help on the toy benchmark), until 'length' frames; the boxes of ONE long "
            "trajectory steer every chunk through its own slice (box_end_percent of each chunk's steps)."),
    }[method]
    steps = [
        "What to change:",
        ("1. The prompt (the Prompt node feeds both the text encoder and the patch). Every object's "
        "'prompt' phrase in the trajectory must appear word for word in it."),
        ("2. The boxes: draw them in the BBox Trajectory editor (one object per subject, keyframes on the "
        "timeline) or paste a Trajectory JSON. Its frames/width/height must match the video size node "
        f"({fam['width']}x{fam['height']}, {fam['length']} frames here), or set the node's frames/width/height "
        "overrides."),
        ("3. Size and length: keep width/height multiples of 16 (32 for Wan 2.2 5B) and length 4k+1 "
        "(8k+1 for LTX-Video)."),
        "4. The seed, steps and cfg on the sampler.",
    ]
    if method == "reattention_edit":
        toy = fam["kind"] == "toy"
        steps = [
            "What to change:",
            ("1. The source video: " + (
                "here it is made in the same graph (a red circle, placed by Masked Attention Patch along the "
                "Source boxes). To edit your own clip, VAE Encode its frames (Load Video -> Get Video Components "
                "-> VAE Encode) into ReAttention Edit's source." if toy else
                "put your clip in ComfyUI's input folder and pick it in Load Video. Upscale Image makes its frames "
                f"{fam['width']}x{fam['height']} and Image From Batch keeps the first {fam['length']} "
                "(change both with the size; fewer frames in the clip give a shorter video, then set the "
                "trajectory's frames to match).")),
            ("2. The edit prompt (the Prompt node feeds the text encoder and ReAttention Edit): the source's "
             "description with the new object. The trajectory's object 'prompt' is the new object's phrase, word "
             "for word in the edit prompt."),
            ("3. The boxes (BBox Trajectory): where the new object goes, frame by frame; everything outside them is "
             f"kept. Frames/width/height must match the source ({fam['width']}x{fam['height']}, {fam['length']} "
             "frames here)."),
            ("4. On ReAttention Edit: steps, cfg, rad_strength (0 = no RAD, only region-restricted resampling), "
             "inversion_iterations (0 = plain DDIM inversion, faster, drifts more), frame_window (bounds RAD's "
             "memory on long clips), blocks. A description of the source video into source_conditioning "
             "inverts more faithfully" + (" (done here)." if toy else ".")),
        ]
        if toy:
            steps.append(
                "5. The edit's model goes through Masked Attention Patch on the same boxes (first half of the "
                "blocks, first half of the steps): on this toy model RAD alone does not place the new object "
                "(its cross-attention does not say where things are; python -m bench.edit: in its box in 90 % "
                "of frames with the patch, 52 % without). Chain the same patch on any model whose edits miss "
                "their boxes.")
    elif method == "long_video":
        chunk, total = LONG[fam_key]
        steps = [
            "What to change:",
            ("1. The prompt (the Prompt node feeds the text encoder; the objects' phrases in the trajectory must "
             "appear in it word for word). The same prompt holds for every chunk."),
            (f"2. length on Long Video (Chunks): the whole video ({total} frames here, 4k+1), and the Empty latent "
             f"node's length: one chunk, the model's native length ({chunk} here)."),
            (f"3. The boxes: ONE trajectory over the whole video (frames = length = {total}, "
             f"{fam['width']}x{fam['height']}); each chunk is steered by its own slice."),
            "4. seed (chunk i uses seed + i), steps, cfg, overlap, share_strength, box_end_percent.",
        ]
    elif method == "first_frame_share":
        steps[4] = "4. The seed on Shared First-Frame Noise, steps on the scheduler, cfg on the guider."
        steps.append("5. The first frame: " + ("sampled here as one frame (First frame); any image works"
                                                if fam["kind"] == "toy" else
                                                "load it in 'First frame (any image)' (e.g. from an image model "
                                                "prompted with the first keyframe's boxes)") +
                     "; it is VAE-encoded into Shared First-Frame Noise.")
    if fam["kind"] == "wan_i2v":
        steps.append(f"{len(steps)}. Load your start image in Load Image and put the first keyframe's boxes where the objects "
                     "are in that image.")
    return "\n".join([f"{fam['title']} - {METHODS[method]}", "", how, "", *steps, "", *files, "",
                      f"Needs {fam['vram']}.",
                      ("Outputs two animated WEBPs in ComfyUI's output folder: the source and the edit."
                       if method == "reattention_edit" and fam["kind"] == "toy" else
                       "Outputs an animated WEBP in ComfyUI's output folder.")])


def _loaders(g: Graph, fam: dict, prompt_text: str):
    """Column 0: model, VAE, text encoder and the Prompt node; returns (model_src, vae_src, clip, prompt)."""
    kind = fam["kind"]
    if kind == "ltxv":
        ckpt = g.add("CheckpointLoaderSimple", 0, ckpt_name=fam["ckpt"])
        model_src, vae_src = (ckpt, 0), (ckpt, 2)
    else:
        unet = g.add("UNETLoader", 0, unet_name=fam["unet"], weight_dtype="default")
        model_src = (unet, 0)
        vae = g.add("VAELoader", 0, vae_name=fam["vae"])
        vae_src = (vae, 0)
    if kind == "toy":
        clip = g.add("BoxDirector.ToyTextEncoderLoader", 0)
    elif kind == "hunyuan":
        clip = g.add("DualCLIPLoader", 0, clip_name1=fam["clip1"], clip_name2=fam["clip2"], type="hunyuan_video")
    else:
        clip = g.add("CLIPLoader", 0, clip_name=fam["clip"], type=fam["clip_type"])
    prompt = g.add("PrimitiveStringMultiline", 0, title="Prompt", value=prompt_text)
    return model_src, vae_src, clip, prompt


def _boxes(g: Graph, fam: dict, objects: list, col: int = 1, frames: int | None = None, title: str | None = None):
    traj = g.add("BoxDirector.BBoxTrajectory", col, title=title,
                 trajectory=trajectory(frames or fam["length"], fam["width"], fam["height"], objects))
    regions = g.add("BoxDirector.MaskSequence", col)
    g.link(traj, 0, regions, "trajectory")
    return traj, regions


def _text(g: Graph, clip: dict, prompt: dict | None, pos_text: str, neg_text: str, col: int = 2,
          pos_title: str = "Positive", neg_title: str = "Negative"):
    pos = g.add("CLIPTextEncode", col, title=pos_title, text=pos_text)
    g.link(clip, 0, pos, "clip")
    if prompt is not None:
        g.link(prompt, 0, pos, "text")
    neg = None
    if neg_title:
        neg = g.add("CLIPTextEncode", col, title=neg_title, text=neg_text)
        g.link(clip, 0, neg, "clip")
    return pos, neg


def _shift(g: Graph, fam: dict, model_src: tuple, col: int = 2) -> tuple:
    if fam["kind"] == "ltxv":
        return model_src
    ms = g.add("ModelSamplingSD3", col, shift=fam["shift"])
    g.link(*model_src, ms, "model")
    return (ms, 0)


def _conditioning(g: Graph, fam: dict, pos: dict, neg: dict, vae_src: tuple, col: int = 3, latent: bool = True):
    """The family's conditioning and (with latent) empty latent; returns (pos_src, neg_src, latent_src, cfg)."""
    kind = fam["kind"]
    W, H, L = fam["width"], fam["height"], fam["length"]
    pos_src, neg_src, latent_src = (pos, 0), (neg, 0), None
    if kind == "wan_i2v":
        image = g.add("LoadImage", col, title="Start image", image="example.png")
        cv_loader = g.add("CLIPVisionLoader", col, clip_name=fam["clip_vision"])
        cv = g.add("CLIPVisionEncode", col, crop="none")
        g.link(cv_loader, 0, cv, "clip_vision")
        g.link(image, 0, cv, "image")
        i2v = g.add("WanImageToVideo", col, width=W, height=H, length=L, batch_size=1)
        g.link(pos, 0, i2v, "positive")
        g.link(neg, 0, i2v, "negative")
        g.link(*vae_src, i2v, "vae")
        g.link(cv, 0, i2v, "clip_vision_output")
        g.link(image, 0, i2v, "start_image")
        pos_src, neg_src, latent_src = (i2v, 0), (i2v, 1), (i2v, 2)
    elif kind == "wan22_ti2v":
        if latent:
            lat = g.add("Wan22ImageToVideoLatent", col, width=W, height=H, length=L, batch_size=1)
            g.link(*vae_src, lat, "vae")
            latent_src = (lat, 0)
    elif kind == "ltxv":
        cond = g.add("LTXVConditioning", col, frame_rate=float(fam["fps"]))
        g.link(pos, 0, cond, "positive")
        g.link(neg, 0, cond, "negative")
        pos_src, neg_src = (cond, 0), (cond, 1)
        if latent:
            lat = g.add("EmptyLTXVLatentVideo", col, width=W, height=H, length=L, batch_size=1)
            latent_src = (lat, 0)
    elif latent:
        lat = g.add("EmptyHunyuanLatentVideo", col, width=W, height=H, length=L, batch_size=1)
        latent_src = (lat, 0)
    if kind == "hunyuan":
        fg = g.add("FluxGuidance", col, guidance=fam["guidance"])
        g.link(*pos_src, fg, "conditioning")
        pos_src = (fg, 0)
    cfg = 1.0 if kind == "hunyuan" else fam["cfg"]  # HunyuanVideo is guidance-distilled: cfg 1, FluxGuidance
    return pos_src, neg_src, latent_src, cfg


def _sigmas(g: Graph, fam: dict, model_src: tuple, latent_src: tuple, col: int = 4) -> dict:
    if fam["kind"] == "ltxv":
        sigmas = g.add("LTXVScheduler", col, steps=fam["steps"], max_shift=2.05, base_shift=0.95, stretch=True,
                       terminal=0.1)
        g.link(*latent_src, sigmas, "latent")
    else:
        sigmas = g.add("BasicScheduler", col, scheduler="simple", steps=fam["steps"], denoise=1.0)
        g.link(*model_src, sigmas, "model")
    return sigmas


def _decode_save(g: Graph, fam_key: str, fam: dict, method: str, out_src: tuple, vae_src: tuple, col: int = 5,
                 suffix: str = "", title: str | None = None, note: bool = True):
    if fam["kind"] == "hunyuan":
        dec = g.add("VAEDecodeTiled", col, tile_size=256, overlap=64, temporal_size=64, temporal_overlap=8)
    else:
        dec = g.add("VAEDecode", col)
    g.link(*out_src, dec, "samples")
    g.link(*vae_src, dec, "vae")
    save = g.add("SaveAnimatedWEBP", col, title=title, filename_prefix=f"boxdirector/{fam_key}_{method}{suffix}",
                 fps=float(fam["fps"]), lossless=False, quality=90, method="default")
    g.link(dec, 0, save, "images")
    if note:
        g.note(col, note_text(fam_key, fam, method))


def build(info: dict, fam_key: str, method: str) -> dict:
    return {"first_frame_share": build_first_frame_share, "reattention_edit": build_reattention_edit,
            "long_video": build_long_video}.get(method, build_masked)(info, fam_key, method)


def build_masked(info: dict, fam_key: str, method: str) -> dict:
    """masked_attention and domain_adaptation: Masked Attention Patch, KSampler or SamplerCustom."""
    fam = FAMILIES[fam_key]
    kind = fam["kind"]
    g = Graph(info, f"{fam_key}_{method}")
    pos_text, neg_text, objects = PROMPTS["toy" if kind == "toy" else "default"]

    model_src, vae_src, clip, prompt = _loaders(g, fam, pos_text)            # column 0
    traj, regions = _boxes(g, fam, objects)                                  # column 1
    pos, neg = _text(g, clip, prompt, pos_text, neg_text)                    # column 2: text, model patching
    model_src = _shift(g, fam, model_src)
    patch = g.add("BoxDirector.MaskedAttentionPatch", 2, prompt=pos_text,
                  mask_normalization=(method == "domain_adaptation"))
    g.link(*model_src, patch, "model")
    g.link(regions, 0, patch, "regions")
    g.link(clip, 0, patch, "clip")
    g.link(prompt, 0, patch, "prompt")
    model_src = (patch, 0)
    pos_src, neg_src, latent_src, cfg = _conditioning(g, fam, pos, neg, vae_src)   # column 3

    # Column 4: sampling.
    if method == "masked_attention" and kind != "ltxv":
        ks = g.add("KSampler", 4, seed=42, steps=fam["steps"], cfg=cfg, sampler_name=fam["sampler"],
                   scheduler="simple", denoise=1.0)
        g.link(*model_src, ks, "model")
        g.link(*pos_src, ks, "positive")
        g.link(*neg_src, ks, "negative")
        g.link(*latent_src, ks, "latent_image")
        out_src = (ks, 0)
    else:
        if method == "domain_adaptation":
            sampler = g.add("BoxDirector.TemporalIntrinsicDenoise", 4, base_sampler="euler", seed=0)
            g.link(traj, 0, sampler, "trajectory")
        else:
            sampler = g.add("KSamplerSelect", 4, sampler_name=fam["sampler"])
        sigmas = _sigmas(g, fam, model_src, latent_src)
        sc = g.add("SamplerCustom", 4, add_noise=True, noise_seed=42, cfg=cfg)
        g.link(*model_src, sc, "model")
        g.link(*pos_src, sc, "positive")
        g.link(*neg_src, sc, "negative")
        g.link(sampler, 0, sc, "sampler")
        g.link(sigmas, 0, sc, "sigmas")
        g.link(*latent_src, sc, "latent_image")
        out_src = (sc, 0)

    _decode_save(g, fam_key, fam, method, out_src, vae_src)                  # column 5: decode, save, note
    return g.to_ui()


def build_first_frame_share(info: dict, fam_key: str, method: str) -> dict:
    """First Frame Share (anchor + mask bias) on the model, Shared First-Frame Noise into SamplerCustomAdvanced."""
    fam = FAMILIES[fam_key]
    g = Graph(info, f"{fam_key}_{method}")
    pos_text, neg_text, objects = PROMPTS["toy" if fam["kind"] == "toy" else "default"]

    model_src, vae_src, clip, prompt = _loaders(g, fam, pos_text)
    _traj, regions = _boxes(g, fam, objects)
    pos, neg = _text(g, clip, prompt, pos_text, neg_text)
    model_src = _shift(g, fam, model_src)
    share = g.add("BoxDirector.FirstFrameShare", 2, mode=FFS_MODE, strength=1.0, prompt=pos_text, mask_bias=1.0)
    g.link(*model_src, share, "model")
    g.link(regions, 0, share, "regions")
    g.link(clip, 0, share, "clip")
    g.link(prompt, 0, share, "prompt")
    model_src = (share, 0)
    pos_src, neg_src, latent_src, cfg = _conditioning(g, fam, pos, neg, vae_src)

    # Eq. 8 shares the ENCODED first frame: any image workflow can make it (the paper: a mask-
    # conditioned image model). Toy world: one frame sampled here; the others: an image you load.
    if fam["kind"] == "toy":
        one = g.add("EmptyHunyuanLatentVideo", 3, title="First frame (1 frame)", width=fam["width"],
                    height=fam["height"], length=1, batch_size=1)
        ks = g.add("KSampler", 3, title="First frame", seed=42, steps=fam["steps"], cfg=cfg,
                   sampler_name=fam["sampler"], scheduler="simple", denoise=1.0)
        g.link(*model_src, ks, "model")
        g.link(*pos_src, ks, "positive")
        g.link(*neg_src, ks, "negative")
        g.link(one, 0, ks, "latent_image")
        image = g.add("VAEDecode", 3, title="First frame image")
        g.link(ks, 0, image, "samples")
        g.link(*vae_src, image, "vae")
    else:
        loaded = g.add("LoadImage", 3, title="First frame (any image)", image="first_frame.png")
        image = g.add("ImageScale", 3, upscale_method="lanczos", width=fam["width"], height=fam["height"],
                      crop="center")
        g.link(loaded, 0, image, "image")
    enc = g.add("VAEEncode", 3, title="Encode first frame")
    g.link(image, 0, enc, "pixels")
    g.link(*vae_src, enc, "vae")
    noise = g.add("BoxDirector.SharedNoise", 4, noise_seed=42, alpha=0.2, variance="preserve",
                  shared="encoded_first_frame")
    g.link(enc, 0, noise, "first_frame")
    g.link(*model_src, noise, "model")
    guider = g.add("CFGGuider", 4, cfg=cfg)
    g.link(*model_src, guider, "model")
    g.link(*pos_src, guider, "positive")
    g.link(*neg_src, guider, "negative")
    sampler = g.add("KSamplerSelect", 4, sampler_name=fam["sampler"])
    sigmas = _sigmas(g, fam, model_src, latent_src)
    sca = g.add("SamplerCustomAdvanced", 4)
    g.link(noise, 0, sca, "noise")
    g.link(guider, 0, sca, "guider")
    g.link(sampler, 0, sca, "sampler")
    g.link(sigmas, 0, sca, "sigmas")
    g.link(*latent_src, sca, "latent_image")
    _decode_save(g, fam_key, fam, method, (sca, 0), vae_src)
    return g.to_ui()


def build_reattention_edit(info: dict, fam_key: str, method: str) -> dict:
    """ReAttention Edit of a source video: the user's clip (Load Video), or for the toy world a clip made in the
    same graph (a red circle placed by Masked Attention Patch), edited inside the boxes."""
    fam = FAMILIES[fam_key]
    kind = fam["kind"]
    W, H, L = fam["width"], fam["height"], fam["length"]
    g = Graph(info, f"{fam_key}_{method}")
    src_text, edit_text, phrase = EDITS["toy" if kind == "toy" else "default"]
    _, neg_text, objects = PROMPTS["toy" if kind == "toy" else "default"]
    keys = objects[0][2]   # the new object follows the first object's boxes (the circle / the dog)

    model_src, vae_src, clip, prompt = _loaders(g, fam, edit_text)
    model_src = _shift(g, fam, model_src, col=0)
    if kind == "toy":
        # Column 1-2: the source video, made here: "a red circle" along the same boxes.
        _src_traj, src_regions = _boxes(g, fam, [("circle", "red circle", keys)], title="Source boxes")
        src_pos, neg = _text(g, clip, None, src_text, neg_text, col=1, pos_title="Source prompt")
        patch = g.add("BoxDirector.MaskedAttentionPatch", 2, prompt=src_text)
        g.link(*model_src, patch, "model")
        g.link(src_regions, 0, patch, "regions")
        g.link(clip, 0, patch, "clip")
        lat = g.add("EmptyHunyuanLatentVideo", 2, width=W, height=H, length=L, batch_size=1)
        ks = g.add("KSampler", 2, title="Source video", seed=42, steps=fam["steps"], cfg=fam["cfg"],
                   sampler_name=fam["sampler"], scheduler="simple", denoise=1.0)
        g.link(patch, 0, ks, "model")
        g.link(src_pos, 0, ks, "positive")
        g.link(neg, 0, ks, "negative")
        g.link(lat, 0, ks, "latent_image")
        source_src = (ks, 0)
        _decode_save(g, fam_key, fam, method, source_src, vae_src, col=2, suffix="_source",
                     title="Save source video", note=False)
        pos, _ = _text(g, clip, prompt, edit_text, "", col=3, pos_title="Edit prompt", neg_title="")
        pos_src, neg_src, cfg = (pos, 0), (neg, 0), fam["cfg"]
    else:
        # Column 1: the user's clip, sized and cut to the workflow's video, encoded with the model's VAE.
        video = g.add("LoadVideo", 1, title="Source video", file="example.mp4")
        comps = g.add("GetVideoComponents", 1)
        g.link(video, 0, comps, "video")
        scale = g.add("ImageScale", 1, upscale_method="lanczos", width=W, height=H, crop="center")
        g.link(comps, 0, scale, "image")
        cut = g.add("ImageFromBatch", 1, batch_index=0, length=L)
        g.link(scale, 0, cut, "image")
        if kind == "hunyuan":
            enc = g.add("VAEEncodeTiled", 1, tile_size=256, overlap=64, temporal_size=64, temporal_overlap=8)
        else:
            enc = g.add("VAEEncode", 1)
        g.link(cut, 0, enc, "pixels")
        g.link(*vae_src, enc, "vae")
        source_src = (enc, 0)
        pos, neg = _text(g, clip, prompt, edit_text, neg_text, col=2, pos_title="Edit prompt")
        pos_src, neg_src, _, cfg = _conditioning(g, fam, pos, neg, vae_src, col=2, latent=False)

    # Column 3-4: the boxes of the new object, the edit.
    traj = g.add("BoxDirector.BBoxTrajectory", 3, title="Edit boxes",
                 trajectory=trajectory(L, W, H, [("new", phrase, keys)]))
    model_edit = model_src
    if kind == "toy":
        # The toy DiT's cross-attention does not say where an object is (bench.edit: RAD's loss is
        # ~1 even with the object in its box), so RAD cannot pull the new object into its box; masked
        # attention on the edit boxes does (bench.edit: in its box 90 % of frames vs 52 % without).
        edit_regions = g.add("BoxDirector.MaskSequence", 3)
        g.link(traj, 0, edit_regions, "trajectory")
        epatch = g.add("BoxDirector.MaskedAttentionPatch", 3, title="Masked Attention Patch (edit boxes)",
                       prompt=edit_text, blocks="0%-50%", end_percent=0.5)
        g.link(*model_src, epatch, "model")
        g.link(edit_regions, 0, epatch, "regions")
        g.link(clip, 0, epatch, "clip")
        g.link(prompt, 0, epatch, "prompt")
        model_edit = (epatch, 0)
    edit = g.add("BoxDirector.ReAttentionEdit", 4, prompt=edit_text, seed=0, steps=fam["steps"], cfg=cfg)
    g.link(*model_edit, edit, "model")
    g.link(*pos_src, edit, "positive")
    g.link(*neg_src, edit, "negative")
    g.link(*source_src, edit, "source")
    g.link(traj, 0, edit, "trajectory")
    g.link(clip, 0, edit, "clip")
    g.link(prompt, 0, edit, "prompt")
    if kind == "toy":
        g.link(src_pos, 0, edit, "source_conditioning")
    _decode_save(g, fam_key, fam, method, (edit, 0), vae_src)
    return g.to_ui()


def build_long_video(info: dict, fam_key: str, method: str) -> dict:
    """Long Video (Chunks): one long trajectory, chunks of the model's native length."""
    fam = FAMILIES[fam_key]
    chunk, total = LONG[fam_key]
    g = Graph(info, f"{fam_key}_{method}")
    pos_text, neg_text, objects = PROMPTS["toy" if fam["kind"] == "toy" else "default"]

    model_src, vae_src, clip, prompt = _loaders(g, fam, pos_text)
    _traj, regions = _boxes(g, fam, objects, frames=total)
    pos, neg = _text(g, clip, prompt, pos_text, neg_text)
    model_src = _shift(g, fam, model_src)
    lat = g.add("EmptyHunyuanLatentVideo", 3, title="One chunk", width=fam["width"], height=fam["height"],
                length=chunk, batch_size=1)
    lv = g.add("BoxDirector.LongVideoChunks", 4, length=total, overlap=1, anchor_first_frame=True,
               first_frame_share=False, share_strength=1.0, seed=42, steps=fam["steps"], cfg=fam["cfg"],
               sampler_name=fam["sampler"], scheduler="simple", box_end_percent=0.3, prompt=pos_text)
    g.link(*model_src, lv, "model")
    g.link(pos, 0, lv, "positive")
    g.link(neg, 0, lv, "negative")
    g.link(lat, 0, lv, "latent")
    g.link(regions, 0, lv, "regions")
    g.link(clip, 0, lv, "clip")            # the objects' words: cross-attention masking per chunk
    g.link(prompt, 0, lv, "prompt")
    _decode_save(g, fam_key, fam, method, (lv, 0), vae_src)
    return g.to_ui()


def write_all(info: dict, out_dir: Path = OUT_DIR) -> list[Path]:
    out_dir.mkdir(exist_ok=True)
    paths = []
    for fam_key in FAMILIES:
        for method in METHODS:
            if fam_key not in METHOD_FAMILIES[method]:
                continue
            path = out_dir / f"{fam_key}_{method}.json"
            path.write_text(json.dumps(build(info, fam_key, method), indent=1) + "\n")
            paths.append(path)
    return paths


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.example_workflows", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", help="a running ComfyUI with this pack (default: start one)")
    p.add_argument("--out", type=Path, default=OUT_DIR)
    args = p.parse_args(argv)
    if args.server:
        info = wf.fetch_object_info(args.server)
    else:
        import sys
        import tempfile

        sys.path.insert(0, str(ROOT / "tests"))
        import harness

        with tempfile.TemporaryDirectory() as base, harness.ComfyServer(Path(base)) as server:
            info = server.get("/object_info")
    for path in write_all(info, args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
