"""The demo: the shipped toy Wan 2.1 model draws "a red circle" with and without Box Director's
Masked Attention Patch, through a real ComfyUI server and its HTTP API.

    bash scripts/demo.sh                      # = scripts/setup.sh, then python -m toyworld.demo
    python -m toyworld.demo [--seeds 0,1,2] [--out out/demo] [--workflow FILE]

What it does, step by step:
1. links the toy DiT and VAE into a fresh ComfyUI base folder (``toyworld.install``) and starts a
   real ComfyUI 0.3.75 server with the pack in custom_nodes (``tests/harness.ComfyServer``);
2. converts the shipped UI workflow ``example_workflows/toyworld_demo.json`` to an API prompt with
   the server's own ``/object_info`` (``tools/workflow.py``, the converter the batch command uses), sets both KSamplers' seed, and
   queues one prompt per seed with ``POST /prompt``; waits on ``/history/<id>``;
3. fetches the outputs with ``GET /view``: the raw frames of both samplers (SaveImage) and the
   workflow's side-by-side animation (Trajectory Preview -> Image Stitch -> SaveAnimatedWEBP);
4. scores the prompted object in every frame against its box with ``bench/quality.py``'s scorer
   (the object is found by its colour; mIoU, AP50, centroid distance) plus the share of frames
   whose found centre lies inside the box, for the uncontrolled and the controlled side;
5. writes ``out/demo/``: ``side_by_side.webp`` / ``.gif`` / ``.mp4`` (one row per seed, left
   uncontrolled, right controlled, boxes drawn), ``side_by_side_seed<N>.webp`` (the workflow's own
   output), ``frames/`` and ``figures.json``, and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "example_workflows" / "toyworld_demo.json"
for p in (str(ROOT / "tests"), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import harness  # noqa: E402
from tools import workflow as wf  # noqa: E402

PATCH = "BoxDirector.MaskedAttentionPatch"


# --- the prompt --------------------------------------------------------------------------------
def load_prompt(server, workflow: Path = WORKFLOW) -> dict:
    """The UI workflow as an API prompt, converted with this server's /object_info."""
    return wf.to_api(json.loads(Path(workflow).read_text()), server.get("/object_info"))


def find_nodes(prompt: dict, class_type: str) -> list[str]:
    """Ids of an API prompt's nodes of one type, in id order."""
    return sorted((k for k, v in prompt.items() if v["class_type"] == class_type), key=int)


def upstream(prompt: dict, node_id: str) -> set:
    """Every node id a node depends on (itself included)."""
    seen, todo = set(), [node_id]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo += [v[0] for v in prompt[n]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return seen


def controlled(prompt: dict, node_id: str) -> bool:
    """Whether a node's input comes through the Masked Attention Patch."""
    return any(prompt[n]["class_type"] == PATCH for n in upstream(prompt, node_id))


def demo_parts(prompt: dict) -> dict:
    """The nodes the demo reads: the trajectory widget, the two frame savers (by whether the patch
    is upstream), the side-by-side animation and the samplers whose seed it sets."""
    def one(kind, pick=lambda n: True):
        found = [n for n in find_nodes(prompt, kind) if pick(n)]
        if len(found) != 1:
            raise ValueError(f"the demo workflow needs exactly one {kind} node of this role, found {found}")
        return found[0]

    return {
        "trajectory": one("BoxDirector.BBoxTrajectory"),
        "frames_plain": one("SaveImage", lambda n: not controlled(prompt, n)),
        "frames_controlled": one("SaveImage", lambda n: controlled(prompt, n)),
        "animation": one("SaveAnimatedWEBP"),
        "samplers": find_nodes(prompt, "KSampler"),
    }


def with_settings(prompt: dict, seed: int, steps: int | None = None) -> dict:
    """A copy with both samplers on the same seed (and optionally another step count)."""
    out = json.loads(json.dumps(prompt))
    for n in demo_parts(out)["samplers"]:
        out[n]["inputs"]["seed"] = seed
        if steps:
            out[n]["inputs"]["steps"] = steps
    return out


# --- the server ----------------------------------------------------------------------------------
def view(server, item: dict) -> bytes:
    query = urllib.parse.urlencode({k: item[k] for k in ("filename", "subfolder", "type")})
    return server.get(f"/view?{query}")


def frames_of(server, items: list) -> "torch.Tensor":
    """[F, H, W, 3] float 0..1 from the PNGs a SaveImage node reported."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    imgs = [np.asarray(Image.open(io.BytesIO(view(server, it))).convert("RGB")) for it in items]
    return torch.from_numpy(np.stack(imgs)).float() / 255.0


def animation_of(server, items: list) -> list:
    """The frames (PIL images) of the animated WEBP a SaveAnimatedWEBP node reported."""
    import io

    from PIL import Image, ImageSequence

    im = Image.open(io.BytesIO(view(server, items[0])))
    return [f.convert("RGB") for f in ImageSequence.Iterator(im)]


# --- scoring (bench/quality.py's scorer) ---------------------------------------------------------
def score(video, trajectory_json: str) -> list:
    """Per object of the trajectory: bench.quality's mIoU / AP50 / found / centroid of the
    prompted object in ``video`` against its boxes, plus ``in_box``: the share of frames whose found
    blob centre lies inside the box (a frame without the object counts as a miss)."""
    from bench import quality
    from boxdirector.core.trajectory import parse_trajectory, sample_boxes

    traj = parse_trajectory(trajectory_json)
    if (traj.frames, traj.height, traj.width) != tuple(video.shape[:3]):
        raise ValueError(f"trajectory is {traj.frames} x {traj.height} x {traj.width} but the video is "
                         f"{tuple(video.shape[:3])}; the demo scores at the trajectory's own size")
    boxes, _ = sample_boxes(traj)
    size = video.shape[1]
    out = []
    for k, obj in enumerate(traj.objects):
        color, _shape = quality.parse_subject(obj.prompt, f"object {obj.id!r}")
        found = quality.found_boxes(video, color)
        s = quality.score_object(found, boxes[k], size)
        hits = 0
        for f, got in enumerate(found):
            if got is not None:
                cx, cy = (got[0] + got[2]) / 2 / size, (got[1] + got[3]) / 2 / size
                x0, y0, x1, y1 = boxes[k, f].tolist()
                hits += x0 <= cx <= x1 and y0 <= cy <= y1
        s["in_box"] = hits / len(found)
        s["object"] = obj.id
        out.append(s)
    return out


def run_seeds(server, prompt: dict, seeds, steps: int | None = None, log=print) -> list:
    """Queues one prompt per seed (all at once: the server runs them in order), waits for each and
    scores both sides. Returns per seed {seed, seconds, plain: [per object], controlled: [...],
    outputs: history outputs, frames: {side: tensor}}."""
    parts = demo_parts(prompt)
    traj_json = prompt[parts["trajectory"]]["inputs"]["trajectory"]
    t0 = time.monotonic()
    ids = [(seed, server.queue_prompt(with_settings(prompt, seed, steps), "boxdirector-demo")) for seed in seeds]
    results = []
    for seed, pid in ids:
        outputs = server.wait_prompt(pid, timeout=900)["outputs"]
        plain = frames_of(server, outputs[parts["frames_plain"]]["images"])
        ctrl = frames_of(server, outputs[parts["frames_controlled"]]["images"])
        r = {"seed": seed, "seconds": round(time.monotonic() - t0, 1), "plain": score(plain, traj_json),
             "controlled": score(ctrl, traj_json), "outputs": outputs, "frames": {"plain": plain, "controlled": ctrl}}
        log(f"seed {seed}: done at {r['seconds']:.0f} s   uncontrolled {fmt(r['plain'])}   "
            f"controlled {fmt(r['controlled'])}")
        results.append(r)
    return results


def fmt(objs: list) -> str:
    return "  ".join(f"mIoU {o['miou']:.3f} in-box {o['in_box']:.2f}" for o in objs)


def summary(results: list) -> dict:
    out = {}
    for side in ("plain", "controlled"):
        objs = [o for r in results for o in r[side]]
        cents = [o["centroid"] for o in objs if o["centroid"] is not None]
        out["uncontrolled" if side == "plain" else "controlled"] = {
            "miou": statistics.mean(o["miou"] for o in objs), "ap50": statistics.mean(o["ap50"] for o in objs),
            "in_box": statistics.mean(o["in_box"] for o in objs), "found": statistics.mean(o["found"] for o in objs),
            "centroid": statistics.mean(cents) if cents else None}
    return out


# --- the video -----------------------------------------------------------------------------------
def write_video(rows: list, out: Path, fps: float = 8.0, scale: int = 2) -> list:
    """rows: per seed a list of PIL frames (the workflow's side-by-side). Stacks the seeds, enlarges
    them ``scale`` times (128 px frames are small on a screen), adds a header, writes .webp and .gif
    (pillow) and .mp4 (PyAV, when importable). Returns the paths."""
    from PIL import Image, ImageDraw

    rows = [[im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in r] for r in rows]
    n = min(len(r) for r in rows)
    w = max(r[0].width for r in rows)
    head, gap = 16, 4 * scale   # white header with the column names; white gap between seeds
    frames = []
    for f in range(n):
        canvas = Image.new("RGB", (w, head + sum(r[0].height + gap for r in rows) - gap), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 2), "uncontrolled", fill="black")
        draw.text((w // 2 + 4, 2), "box-controlled", fill="black")
        y = head
        for r in rows:
            canvas.paste(r[f], (0, y))
            y += r[f].height + gap
        frames.append(canvas)
    written = []
    duration = int(1000 / fps)
    for ext in ("webp", "gif"):
        path = out / f"side_by_side.{ext}"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration, loop=0,
                       **({"lossless": True} if ext == "webp" else {}))
        written.append(path)
    try:
        import av
        import numpy as np
    except ImportError:
        return written
    path = out / "side_by_side.mp4"
    W, H = (frames[0].width + 1) // 2 * 2, (frames[0].height + 1) // 2 * 2   # yuv420p needs even sizes
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for im in frames:
            padded = Image.new("RGB", (W, H), "white")
            padded.paste(im, (0, 0))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(padded), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    written.append(path)
    return written


def save_frames(results: list, out: Path) -> None:
    from PIL import Image

    for r in results:
        for side, video in r["frames"].items():
            folder = out / "frames" / f"seed{r['seed']}_{'uncontrolled' if side == 'plain' else 'controlled'}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, frame in enumerate(video):
                Image.fromarray((frame * 255).round().byte().numpy()).save(folder / f"{i:02d}.png")


def parse_seeds(text: str) -> list:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds: {text!r} is not a comma separated list of whole numbers") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError("--seeds: give one or more seeds >= 0, e.g. 0,1,2")
    return seeds


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="comma separated (default 0,1,2)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    ap.add_argument("--workflow", type=Path, default=WORKFLOW, help="a UI-format workflow with the demo's nodes")
    ap.add_argument("--steps", type=int, default=None, help="override both samplers' steps (default: the workflow's)")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    from toyworld import install

    harness.check_comfy_install()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="boxdirector-demo-") as base:
        install.link_models(base)
        print(f"[demo] starting ComfyUI with the pack and the toy models (base {base}) ...", flush=True)
        with harness.ComfyServer(Path(base)) as server:
            print(f"[demo] server up at {server.url} after {time.monotonic() - t_start:.0f} s; queueing "
                  f"{len(args.seeds)} prompt(s) of {args.workflow.name} through POST /prompt", flush=True)
            prompt = load_prompt(server, args.workflow)
            (args.out / "prompt_api.json").write_text(json.dumps(prompt, indent=1))
            results = run_seeds(server, prompt, args.seeds, args.steps,
                                log=lambda s: print("[demo] " + s, flush=True))
            parts = demo_parts(prompt)
            rows = []
            for r in results:
                anim = r["outputs"][parts["animation"]]["images"]
                (args.out / f"side_by_side_seed{r['seed']}.webp").write_bytes(view(server, anim[0]))
                rows.append(animation_of(server, anim))
    save_frames(results, args.out)
    videos = write_video(rows, args.out)
    figures = summary(results)
    sampler = prompt[parts["samplers"][0]]["inputs"]
    report = {
        "workflow": str(args.workflow.relative_to(ROOT) if args.workflow.is_relative_to(ROOT) else args.workflow),
        "trajectory": json.loads(prompt[parts["trajectory"]]["inputs"]["trajectory"]),
        "sampler": {k: sampler[k] for k in ("steps", "cfg", "sampler_name", "scheduler")},
        "seeds": args.seeds, "summary": figures,
        "per_seed": [{"seed": r["seed"], "uncontrolled": r["plain"], "controlled": r["controlled"]} for r in results],
        "seconds": round(time.monotonic() - t_start, 1),
    }
    (args.out / "figures.json").write_text(json.dumps(report, indent=1))
    print(f"\n[demo] {len(args.seeds)} seed(s), object found by colour in every frame and scored against its box "
          f"(bench/quality.py):")
    print(f"{'':14}{'mIoU':>7}{'AP50':>7}{'in box':>8}{'found':>7}{'centre dist':>13}")
    for side, s in figures.items():
        cent = f"{s['centroid']:13.3f}" if s["centroid"] is not None else f"{'-':>13}"
        print(f"{side:14}{s['miou']:7.3f}{s['ap50']:7.3f}{s['in_box']:8.2f}{s['found']:7.2f}{cent}")
    print(f"[demo] wrote {', '.join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in videos)}, "
          f"figures.json, frames/ in {args.out} ({report['seconds']:.0f} s in all)")
    return report


if __name__ == "__main__":
    main()
