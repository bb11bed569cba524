"""Control quality on the toy world: does the object go where the boxes say?

Generates through ComfyUI's own loaders, CLIPTextEncode, KSampler and VAEDecode with the shipped
toy Wan model, for many seeds and trajectories, with each method off and on; finds each object by
its colour in the decoded frames and scores it against its box:

* mIoU      per video: sum of intersections / sum of unions over frames (PEEKABOO's eval), averaged
            over (video, object); "± se" is its standard error
* AP50      share of frames whose IoU >= 0.5
* coverage  share of (video, object) pairs found in more than half of the frames
* centroid  distance of found and target box centres, over the frame diagonal
* temporal  1 - mean absolute change between consecutive frames (flicker)
* fidelity  share of single-object videos whose dominant colour and shape are the prompted ones
* s/video   seconds per video (text encoding, sampling and decoding), every row alike
* vs masked the paired difference from the "masked" row: same trajectory, seed and object

    python -m bench.quality [--seeds 4] [--methods baseline,masked] [--trajectories FILE]
                            [--out out/bench_quality.json]
    python -m bench.quality --table out/bench_quality.json     # the table of a saved run again

``--trajectories`` takes any Trajectory-v1 document (or a JSON list of them): keyframe times are
rescaled to the model's 17 frames, the size to 128 x 128, and object prompts must use the toy
vocabulary (colour + shape, e.g. "a red circle").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402

harness.import_pack()
from boxdirector.core.trajectory import Trajectory, parse_trajectory, sample_boxes  # noqa: E402

from toyworld import data, sanity  # noqa: E402


def _doc(name: str, objects: list) -> dict:
    return {"name": name, "version": 1, "frames": data.FRAMES, "width": data.SIZE, "height": data.SIZE,
            "objects": objects}


def _obj(oid, prompt, *keys):
    return {"id": oid, "prompt": prompt, "keyframes": [{"frame": f, "box": list(b)} for f, b in keys]}


LAST = data.FRAMES - 1
SUITE = [
    _doc("straight", [_obj("o", "a red circle", (0, (0.05, 0.35, 0.35, 0.65)), (LAST, (0.65, 0.35, 0.95, 0.65)))]),
    _doc("diagonal", [_obj("o", "a blue square", (0, (0.05, 0.05, 0.35, 0.35)), (LAST, (0.65, 0.65, 0.95, 0.95)))]),
    _doc("zigzag", [_obj("o", "a yellow triangle", (0, (0.05, 0.6, 0.35, 0.9)), (5, (0.35, 0.1, 0.65, 0.4)),
                         (11, (0.5, 0.6, 0.8, 0.9)), (LAST, (0.65, 0.1, 0.95, 0.4)))]),
    _doc("static", [_obj("o", "a green circle", (0, (0.6, 0.1, 0.9, 0.4)))]),
    _doc("two objects", [_obj("a", "a red square", (0, (0.05, 0.1, 0.35, 0.4)), (LAST, (0.6, 0.1, 0.9, 0.4))),
                         _obj("b", "a blue circle", (0, (0.6, 0.6, 0.9, 0.9)), (LAST, (0.05, 0.6, 0.35, 0.9)))]),
    _doc("size change", [_obj("o", "a white square", (0, (0.4, 0.4, 0.6, 0.6)), (LAST, (0.15, 0.15, 0.85, 0.85)))]),
    # multi-object control, PEEKABOO's per-object binding: paths that cross, and three objects
    _doc("crossing", [_obj("a", "a red circle", (0, (0.05, 0.05, 0.35, 0.35)), (LAST, (0.65, 0.65, 0.95, 0.95))),
                      _obj("b", "a blue square", (0, (0.65, 0.05, 0.95, 0.35)), (LAST, (0.05, 0.65, 0.35, 0.95)))]),
    _doc("three objects", [_obj("a", "a red circle", (0, (0.05, 0.05, 0.35, 0.35)), (LAST, (0.05, 0.6, 0.35, 0.9))),
                           _obj("b", "a blue square", (0, (0.65, 0.05, 0.95, 0.35)), (LAST, (0.65, 0.6, 0.95, 0.9))),
                           _obj("c", "a yellow triangle", (0, (0.35, 0.6, 0.65, 0.9)), (LAST, (0.35, 0.05, 0.65, 0.35)))]),
]

POST_PROJECTION = "_post_projection"
# name -> (MaskedAttentionPatch inputs or None: unpatched, TemporalIntrinsicDenoise inputs or None: plain Euler)
METHODS = {
    "baseline": (None, None),
    "masked": ({}, None),                                        # the node's defaults
    "masked end=0.05": ({"end_percent": 0.05}, None),
    "masked end=0.2": ({"end_percent": 0.2}, None),
    "masked end=0.1": ({"end_percent": 0.1}, None),
    "masked end=0.5": ({"end_percent": 0.5}, None),
    "masked blocks=first half": ({"blocks": "0%-50%"}, None),
    "masked blocks=second half": ({"blocks": "50%-100%"}, None),
    "masked blocks=first half end=0.5": ({"blocks": "0%-50%", "end_percent": 0.5}, None),
    "masked union": ({"word_binding": "union"}, None),
    # deeper DiTs: how many of the first blocks, and how long (six blocks: 34 % is blocks 0-1, 67 % is 0-3)
    "masked end=0.7": ({"end_percent": 0.7}, None),
    "masked blocks=first third end=0.5": ({"blocks": "0%-34%", "end_percent": 0.5}, None),
    "masked blocks=first two thirds end=0.5": ({"blocks": "0%-67%", "end_percent": 0.5}, None),
    "masked +norm": ({"mask_normalization": True}, None),
    "masked +norm always": ({"mask_normalization": True, "normalization_mode": "always"}, None),
    "masked +norm per region": ({"mask_normalization": True, "normalization_mode": "per_region"}, None),
    "masked +norm variance_drop": ({"mask_normalization": True, "normalization_mode": "variance_drop"}, None),
    # EFDM after the attention's output projection instead of before it (a bench-only instrument: hooks on
    # the toy model's projections, see post_projection_efdm)
    "masked +norm after proj": ({"mask_normalization": True, "normalization_mode": "always",
                                 POST_PROJECTION: "all_tokens"}, None),
    "masked +norm after proj per region": ({"mask_normalization": True, "normalization_mode": "always",
                                            POST_PROJECTION: "per_region"}, None),
    "intrinsic": (None, {}),                                     # the node's defaults
    "masked +intrinsic": ({}, {}),
    "masked +intrinsic M=0": ({}, {"iterations": 0}),          # the base Euler, same path: the cost reference
    "masked +intrinsic c_g=0": ({}, {"c_g": 0.0}),             # the paper's ablation: no temporal prior
    "masked +norm +intrinsic": ({"mask_normalization": True}, {}),
    "masked +intrinsic contrast": ({}, {"prior": "temporal_contrast"}),
    "masked +intrinsic x0": ({}, {"prior_on": "x0_hat"}),
    # The sweep the defaults came from: every parameter named, so these rows mean the same whatever the
    # node's defaults are. M=2 eta_k=1 was the earlier default (Langevin noise ~6x the prior's push).
    **{f"masked +intrinsic M={m} eta_k={k:g}" + (f" {extra}" if extra else ""):
       ({}, {"iterations": m, "eta_k": k, **params})
       for m, k, extra, params in [
           (2, 1.0, "", {}), (2, 1.0, "c_g=6", {"c_g": 6.0}), (2, 1.0, "contrast", {"prior": "temporal_contrast"}),
           (2, 1.0, "x0 contrast", {"prior_on": "x0_hat", "prior": "temporal_contrast"}),
           (2, 1.0, "x0 contrast c_g=6", {"prior_on": "x0_hat", "prior": "temporal_contrast", "c_g": 6.0}),
           (2, 0.3, "", {}), (2, 0.0, "", {}), (2, 0.0, "end=0.5", {"end_percent": 0.5}),
           (2, 0.0, "contrast", {"prior": "temporal_contrast"}),
           (2, 0.0, "x0 c_g=6", {"prior_on": "x0_hat", "c_g": 6.0}),
           (2, 0.0, "x0 contrast", {"prior_on": "x0_hat", "prior": "temporal_contrast"}),
           (2, 0.0, "x0 contrast c_g=6", {"prior_on": "x0_hat", "prior": "temporal_contrast", "c_g": 6.0}),
           (4, 0.0, "", {}), (4, 1.0, "", {})]},
    # First Frame Share (dynamic mask guidance) on top of masked attention, at its node defaults
    "masked +first frame": ({}, None, {}),
}
# The ablation table of the README: each method at its node defaults, alone on top of masked attention,
# then all together. ``--methods ablation`` (run with --sampler euler: the intrinsic rows wrap euler).
ABLATION = ["baseline", "masked", "masked +norm", "masked +intrinsic", "masked +first frame", "all together"]
METHODS["all together"] = ({"mask_normalization": True}, {}, {})
INTRINSIC_DEFAULTS = {"base_sampler": "euler"}
PATCH_DEFAULTS = {"start_percent": 0.0, "end_percent": 0.3, "self_attention": True, "cross_attention": True,
                  "temporal_attention": True, "blocks": "all", "cond_only": False, "word_binding": "per_object",
                  "special_tokens": "background", "mask_normalization": False, "coverage": 0.5,
                  "normalization_mode": "restore_variance"}


def load_trajectories(path: Path | None, only: str | None = None) -> list[Trajectory]:
    docs = SUITE if path is None else json.loads(Path(path).read_text())
    docs = docs if isinstance(docs, list) else [docs]
    if only:
        names = [n.strip() for n in only.split(",")]
        unknown = [n for n in names if n not in {d.get("name") for d in docs}]
        if unknown:
            raise SystemExit(f"--only: no trajectory named {unknown}; choose from {[d.get('name') for d in docs]}")
        docs = [d for d in docs if d.get("name") in names]
    out = []
    for i, d in enumerate(docs):
        d = {k: v for k, v in d.items() if k != "name"}
        t = parse_trajectory(d).with_overrides(frames=data.FRAMES, width=data.SIZE, height=data.SIZE)
        for o in t.objects:
            color, shape = parse_subject(o.prompt, f"trajectory {i}, object {o.id!r}")
        out.append(t)
    return out


def parse_subject(prompt: str, where: str) -> tuple[str, str]:
    words = prompt.lower().split()
    colors = [w for w in words if w in data.COLORS]
    shapes = [w for w in words if w in data.SHAPES]
    if len(colors) != 1 or len(shapes) != 1:
        raise ValueError(f"{where}: prompt {prompt!r} must name one toy colour ({', '.join(data.COLORS)}) and one "
                         f"shape ({', '.join(data.SHAPES)}), e.g. 'a red circle'")
    return colors[0], shapes[0]


def generate_custom(nodes, model, vae, clip, prompt, seed, sampler, steps, cfg) -> torch.Tensor:
    """sanity.generate through SamplerCustom (for SAMPLER nodes) instead of KSampler."""
    (pos,) = nodes.CLIPTextEncode().encode(clip, prompt)
    (neg,) = nodes.CLIPTextEncode().encode(clip, "")
    (sigmas,) = harness.run_node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0).result
    latent = {"samples": torch.zeros(1, 16, 5, data.SIZE // 8, data.SIZE // 8)}
    t = time.perf_counter()
    out = harness.run_node("SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=cfg, positive=pos,
                           negative=neg, sampler=sampler, sigmas=sigmas, latent_image=latent).result[0]
    SAMPLING_SECONDS.append(time.perf_counter() - t)
    (images,) = nodes.VAEDecode().decode(vae, out)
    sanity.release_freed_memory()  # as sanity.generate does: keeps a long benchmark's memory flat
    return images.reshape(-1, *images.shape[-3:])


SAMPLING_SECONDS: list = []   # wall time of each SamplerCustom run (the intrinsic rows' cost ratio)


def found_boxes(video: torch.Tensor, color: str) -> list:
    """Per frame: the pixel box [x0, y0, x1, y1) of the largest blob of ``color``, or None."""
    out = []
    for mask in data.color_presence(video, color):
        blob = sanity.largest_component(mask)
        if blob is None or blob.sum() < 4:
            out.append(None)
            continue
        ys, xs = torch.nonzero(blob, as_tuple=True)
        out.append((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return out


def score_object(found: list, target: torch.Tensor, size: int) -> dict:
    """target [F, 4] normalised boxes of one object."""
    inter = union = hits = n_found = 0.0
    dists = []
    diag = (2 * size * size) ** 0.5
    for f, got in enumerate(found):
        t = (target[f] * size).tolist()
        t_area = (t[2] - t[0]) * (t[3] - t[1])
        if got is None:
            union += t_area
            continue
        n_found += 1
        iw = max(0.0, min(got[2], t[2]) - max(got[0], t[0]))
        ih = max(0.0, min(got[3], t[3]) - max(got[1], t[1]))
        i = iw * ih
        u = (got[2] - got[0]) * (got[3] - got[1]) + t_area - i
        inter, union = inter + i, union + u
        hits += i / u >= 0.5
        dists.append((((got[0] + got[2]) - (t[0] + t[2])) ** 2 + ((got[1] + got[3]) - (t[1] + t[3])) ** 2) ** 0.5
                     / 2 / diag)
    frames = len(found)
    return {"miou": inter / max(union, 1e-9), "ap50": hits / frames, "found": n_found / frames,
            "centroid": statistics.mean(dists) if dists else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--methods", default="baseline,masked",
                    help=f"comma separated, from: {', '.join(METHODS)}; or 'all' (every row), or 'ablation' "
                         f"({', '.join(ABLATION)})")
    ap.add_argument("--trajectories", type=Path, default=None)
    ap.add_argument("--only", default=None,
                    help="comma separated names of the built-in trajectories to run (default: all): "
                         + ", ".join(d["name"] for d in SUITE))
    ap.add_argument("--steps", type=int, default=sanity.DEFAULTS["steps"])
    ap.add_argument("--cfg", type=float, default=sanity.DEFAULTS["cfg"])
    ap.add_argument("--sampler", default=sanity.DEFAULTS["sampler"],
                    help="KSampler sampler of the rows without Temporal Intrinsic Denoise (whose SAMPLER wraps "
                         "euler or ddim: compare it with --sampler euler)")
    ap.add_argument("--dit", type=Path, default=sanity.WEIGHTS / "toy_wan_dit.safetensors")
    ap.add_argument("--vae", type=Path, default=sanity.WEIGHTS / "toy_wan_vae.safetensors")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench_quality.json")
    ap.add_argument("--table", type=Path, nargs="+", default=None,
                    help="print the table of saved runs (their --out files) again and generate nothing; several "
                         "files made with the same settings (rows split over processes) print as one table; a "
                         "method in more than one file is taken from the last (a re-measured row replaces the "
                         "old one; sampling is deterministic, so the other rows stay valid)")
    args = ap.parse_args(argv)
    if args.table:
        runs = [json.loads(path.read_text()) for path in args.table]
        keys = ("seeds", "steps", "cfg", "sampler", "trajectories", "dit", "vae")
        first = runs[0]["settings"]
        for path, run_ in zip(args.table, runs):
            differ = [k for k in keys if run_["settings"].get(k) != first.get(k)]
            if differ:
                ap.error(f"--table: {path} was made with other {', '.join(differ)} than {args.table[0]}")
        vars(args).update({k: v for k, v in first.items() if k in ("seeds", "steps", "cfg", "sampler", "trajectories")})
        args.out = None   # nothing is written
        names = list(dict.fromkeys(r["method"] for run_ in runs for r in run_["rows"]))   # first-seen order
        source = {r["method"]: i for i, run_ in enumerate(runs) for r in run_["rows"]}       # the last file wins
        rows = [r for i, run_ in enumerate(runs) for r in run_["rows"] if source[r["method"]] == i]
        return summarize(rows, names, args, 1 + max(r["trajectory"] for r in rows),
                         max(run_.get("seconds", 0.0) for run_ in runs))
    presets = {"all": list(METHODS), "ablation": ABLATION}
    methods = presets.get(args.methods) or [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    trajectories = load_trajectories(args.trajectories, args.only)
    nodes, model, vae, clip = sanity.load_models(args.dit, args.vae, shift=sanity.DEFAULTS["shift"] or None)
    harness.load_pack_nodes()
    t0 = time.perf_counter()
    with torch.inference_mode():
        rows = run(trajectories, methods, args, nodes, model, vae, clip)
    summarize(rows, methods, args, len(trajectories), time.perf_counter() - t0)


@contextlib.contextmanager
def post_projection_efdm(model, scope):
    """Bench-only instrument: EFDM after the attention's output projection ``o`` (before the residual
    add; per channel over tokens, the gate that follows is a per-channel scale, which EFDM commutes
    with) instead of before it. The rule's normalisation is replaced by "remember (masked, unmasked)";
    forward hooks on every Wan attention's ``o`` then match o(masked) to o(unmasked). Hooks on the
    bench's own model, removed on exit; the product applies EFDM before the projection."""
    if scope is None:
        yield
        return
    import torch.nn.functional as F

    pending = []
    rule_modules = [mod for name, mod in sys.modules.items() if name.endswith("nodes.masked_attention")]
    ra_mod = next(mod for name, mod in sys.modules.items() if name.endswith("core.region_attention"))

    def remember(self, call, out, ref):
        pending.append((out, ref, self.video_labels(call.forward) if scope == "per_region" else None))
        return out

    def hook(module, inputs, output):
        if not pending:
            return output
        out, ref, labels = pending.pop()
        if out.shape != inputs[0].shape:
            return output
        y_ref = F.linear(ref.to(output.dtype), module.weight, module.bias)
        if labels is None:
            return ra_mod.efdm(output, y_ref, dim=-2)
        return ra_mod.efdm_by_region(output, y_ref, labels)

    originals = [(mod, mod.MaskedAttention.normalise) for mod in rule_modules]
    handles = []
    try:
        for mod in rule_modules:
            mod.MaskedAttention.normalise = remember
        for block in model.model.diffusion_model.blocks:
            handles += [block.self_attn.o.register_forward_hook(hook), block.cross_attn.o.register_forward_hook(hook)]
        yield
    finally:
        for h in handles:
            h.remove()
        for mod, fn in originals:
            mod.MaskedAttention.normalise = fn


def node_regions(traj: Trajectory) -> tuple:
    """(TRAJECTORY, REGIONS) through the nodes, as a workflow makes them: BBox Trajectory -> Mask Sequence."""
    node_traj = harness.run_node("BoxDirector.BBoxTrajectory", trajectory=traj.to_json(), frames=0, width=0,
                                 height=0).result[0]
    (regions, _) = harness.run_node("BoxDirector.MaskSequence", trajectory=node_traj, mask_id="mask",
                                    mask_prompt="", dilation=0, feather=0.0).result
    return node_traj, regions


def run(trajectories, methods, args, nodes, model, vae, clip) -> list:
    rows = []
    for ti, traj in enumerate(trajectories):
        prompt = " and ".join(o.prompt for o in traj.objects)
        boxes, _ = sample_boxes(traj)
        node_traj, regions = node_regions(traj)
        for method in methods:
            patch, intrinsic, first_frame = (METHODS[method] + (None,))[:3]
            m, sampler = model, None
            post = None
            if patch is not None:
                patch = dict(patch)
                post = patch.pop(POST_PROJECTION, None)
                (m,) = harness.run_node("BoxDirector.MaskedAttentionPatch", model=model, regions=regions, clip=clip,
                                        prompt=prompt, **{**PATCH_DEFAULTS, **patch}).result
            if first_frame is not None:   # the node's own defaults (its execute signature's), plus overrides
                (m,) = harness.run_node("BoxDirector.FirstFrameShare", model=m, regions=regions, clip=clip,
                                        prompt=prompt, **first_frame).result
            if intrinsic is not None:
                (sampler,) = harness.run_node("BoxDirector.TemporalIntrinsicDenoise", trajectory=node_traj,
                                              **{**INTRINSIC_DEFAULTS, **intrinsic}).result
            for seed in range(args.seeds):
                SAMPLING_SECONDS.clear()
                t_video = time.perf_counter()
                with post_projection_efdm(model, post):
                    if sampler is None:
                        video = sanity.generate(nodes, m, vae, clip, prompt, seed, steps=args.steps, cfg=args.cfg,
                                               sampler=args.sampler)
                    else:
                        video = generate_custom(nodes, m, vae, clip, prompt, seed, sampler, args.steps, args.cfg)
                video_seconds = time.perf_counter() - t_video                  # sampling + decoding
                seconds = SAMPLING_SECONDS[0] if SAMPLING_SECONDS else None   # sampling only (SAMPLER rows)
                objs = []
                for k, o in enumerate(traj.objects):
                    color, shape = parse_subject(o.prompt, o.id)
                    objs.append(score_object(found_boxes(video, color), boxes[k], data.SIZE))
                fid = None
                if len(traj.objects) == 1:
                    color, shape = parse_subject(traj.objects[0].prompt, "")
                    s = sanity.score_video(video, data.COLORS.index(color), data.SHAPES.index(shape))
                    fid = bool(s["color_ok"] and s["shape_ok"])
                temporal = 1.0 - float((video[1:] - video[:-1]).abs().mean())
                rows.append({"trajectory": ti, "method": method, "seed": seed, "objects": objs, "fidelity": fid,
                             "temporal": temporal, "seconds": seconds, "video_seconds": video_seconds})
    return rows


TRAJECTORY_NAMES = {i: d["name"] for i, d in enumerate(SUITE)}


def paired_difference(rows, method: str, ref: str):
    """(mean, standard error) of method - ref mIoU over the (trajectory, seed, object) both scored:
    the same seed is the same starting noise, so the paired difference is what the method changed."""
    mine = {(r["trajectory"], r["seed"], k): o["miou"] for r in rows if r["method"] == method
            for k, o in enumerate(r["objects"])}
    theirs = {(r["trajectory"], r["seed"], k): o["miou"] for r in rows if r["method"] == ref
              for k, o in enumerate(r["objects"])}
    d = [mine[key] - theirs[key] for key in mine if key in theirs]
    if len(d) < 2:
        return None
    return statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5


def summarize(rows, methods, args, n_traj, seconds) -> dict:
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        objs = [o for r in mine for o in r["objects"]]
        fids = [r["fidelity"] for r in mine if r["fidelity"] is not None]
        cents = [o["centroid"] for o in objs if o["centroid"] is not None]
        summary[method] = {
            "miou": statistics.mean(o["miou"] for o in objs),
            # one sample per (video, object): a different seed is a different video, so methods are
            # compared by their means' standard errors, not pairwise
            "miou_se": statistics.stdev(o["miou"] for o in objs) / len(objs) ** 0.5 if len(objs) > 1 else None,
            "ap50": statistics.mean(o["ap50"] for o in objs),
            "coverage": statistics.mean(o["found"] > 0.5 for o in objs),
            "centroid": statistics.mean(cents) if cents else None,
            "temporal": statistics.mean(r["temporal"] for r in mine),
            "fidelity": statistics.mean(fids) if fids else None, "videos": len(mine),
            "seconds": statistics.mean(secs) if (secs := [r.get("seconds") for r in mine if r.get("seconds")]) else None,
            "video_seconds": statistics.mean(vs) if (vs := [r.get("video_seconds") for r in mine
                                                            if r.get("video_seconds")]) else None}
    base = summary.get("baseline", {}).get("miou")
    ref = "masked" if "masked" in summary else None
    for method in summary:
        summary[method]["vs_masked"] = paired_difference(rows, method, ref) if ref and method != ref else None
    print(f"{n_traj} trajectories x {args.seeds} seeds, {args.steps} steps, cfg {args.cfg}, "
          f"{getattr(args, 'sampler', 'euler')}, {seconds:.0f} s")
    print(f"{'method':<34}{'mIoU':>7}{'± se':>7}{'x base':>8}{'vs masked ± se':>16}{'AP50':>7}{'cover':>7}"
          f"{'centr':>7}{'tempo':>7}{'fidel':>7}{'s/video':>8}")
    fmt = lambda v, w=7: f"{v:{w}.3f}" if v is not None else " " * (w - 1) + "-"  # noqa: E731
    for method, s in summary.items():
        ratio = s["miou"] / base if base else float("nan")
        d = s["vs_masked"]
        vs = f"{d[0]:+8.3f} ±{d[1]:6.3f}" if d else " " * 15 + "-"
        print(f"{method:<34}{s['miou']:7.3f}{fmt(s['miou_se'])}{ratio:8.2f}{vs:>16}{s['ap50']:7.3f}"
              f"{s['coverage']:7.3f}{fmt(s['centroid'])}{s['temporal']:7.3f}{fmt(s['fidelity'])}"
              f"{fmt(s['video_seconds'], 8)}")
    print("vs masked: mean paired difference in mIoU from the masked row on the same (trajectory, seed, object), "
          "± its standard error")
    print("\nmIoU per trajectory:")
    custom = getattr(args, "trajectories", None) or getattr(args, "only", None)
    names = [str(t) if custom else TRAJECTORY_NAMES.get(t, str(t)) for t in range(n_traj)]
    print(f"{'method':<34}" + "".join(f"{n[:12]:>13}" for n in names))
    for method in summary:
        cells = []
        for t in range(n_traj):
            objs = [o["miou"] for r in rows if r["method"] == method and r["trajectory"] == t for o in r["objects"]]
            cells.append(f"{statistics.mean(objs):13.3f}" if objs else " " * 12 + "-")
        print(f"{method:<34}" + "".join(cells))
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "seconds": seconds, "summary": summary, "rows": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
