"""Toy-world benchmark of ReAttention Edit: replace "a red circle" by "a blue square" inside the
circle's moving box, several seeds; prints background PSNR against the VAE round trip of the
source, the share of frames with the new object found inside its box for four variants (RAD off /
on, each on the plain model and on the model patched by Masked Attention Patch with the edit's
boxes), and time per edit step and peak memory relative to plain sampling, all measured in one run.

    python -m bench.edit --seeds 3 --steps 10

It also prints how well the model's cross-attention maps locate an object, which is what RAD's
gradient relies on: RAD's own loss on clips where "a blue square" already sits in the box (0 =
the square's words attend only inside it; 1 = no location at all, e.g. the same map everywhere).

Peak memory: CUDA's allocator peak on a GPU; on the CPU, the peak of live tensor bytes that
torch.profiler's memory profile records (tensors only, no allocator slack), for one plain
sampling step (CFG pass) and one RAD gradient pass.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent


def background_mask(region: torch.Tensor, frames: int, size: int, margin: int = 16) -> torch.Tensor:
    """[F, H, W] bool pixels the edit may not touch: outside the latent region of their own latent
    frame and the previous one (the Wan VAE decodes causally in time), and more than ``margin``
    pixels away from it. ``region``: [1, 1, T, h, w]. The margin is the decoder's reach, two latent
    pixels (its 3x3 convolutions at latent resolution spread a change past one): the latent outside
    is the source's exactly, yet with the stage-2 toy DiT painting a large object inside, the
    decoded outside measured 31 dB at 8 px and 53 dB at 16 px against the source's round trip."""
    r = region[0, 0].float()                                   # [T, h, w]
    prev = torch.cat([r[:1], r[:-1]])
    r = torch.maximum(r, prev)
    up = F.interpolate(r[None], size=(size, size), mode="nearest")[0]
    k = 2 * margin + 1
    up = F.max_pool2d(up[:, None], k, stride=1, padding=margin)[:, 0]
    t_of_f = torch.tensor([0] + [(f - 1) // 4 + 1 for f in range(1, frames)])
    return up[t_of_f] < 0.5


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    mse = ((a - b) ** 2)[mask.expand_as(a)].mean().clamp(min=1e-12)
    return float(10 * torch.log10(1.0 / mse))


def object_in_box(video: torch.Tensor, boxes: torch.Tensor, color: str = "blue", min_px: int = 12) -> float:
    """Share of frames whose ``color`` blob has its centre inside the frame's box (normalised x0 y0 x1 y1)."""
    from boxdirector.toyworld import data, sanity

    hits = 0
    size = video.shape[1]
    for f in range(video.shape[0]):
        m = sanity.largest_component(data.color_presence(video[f], color, 0.3))
        if m.sum() < min_px:
            continue
        ys, xs = torch.nonzero(m, as_tuple=True)
        cx, cy = xs.float().mean().item() / size, ys.float().mean().item() / size
        x0, y0, x1, y1 = boxes[f].tolist()
        hits += int(x0 <= cx <= x1 and y0 <= cy <= y1)
    return hits / video.shape[0]


def peak_bytes(fn) -> int:
    """Peak live tensor bytes while ``fn`` runs (CUDA allocator peak on a GPU)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    live = peak = 0
    for _t, action, _key, size in MemoryProfile(prof.profiler.kineto_results).timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def is_red_circle(clip) -> bool:
    return clip.colors == (0,) and clip.shapes == (0,)


def first_seeds(wanted, n: int) -> list:
    """The first ``n`` one-object clip seeds for which ``wanted(clip)`` holds (renders no more clips)."""
    from boxdirector.toyworld import data

    return list(itertools.islice((s for s in itertools.count() if wanted(data.make_clip(s, n_objects=1))), n))


def clip_regions(c):
    """REGIONS of a clip's one object, box per frame, as the new "blue square"."""
    from boxdirector.core.masks import box_masks
    from boxdirector.core.regions import Regions

    visible = torch.ones(c.boxes.shape[:2], dtype=torch.bool)
    return Regions(box_masks(c.boxes, visible, 128, 128), ("obj",), ("blue square",))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cfg", type=float, default=None, help="default: the toy world's (toyworld.sanity.DEFAULTS)")
    p.add_argument("--refine", type=int, default=5, help="refine_iterations")
    p.add_argument("--inversion-iterations", type=int, default=3)
    p.add_argument("--rad-strength", type=float, default=1.0, help="rad_strength of the RAD-on runs")
    p.add_argument("--masked-blocks", default="0%-50%", help="Masked Attention Patch blocks of the masked variants")
    p.add_argument("--masked-end", type=float, default=0.5, help="Masked Attention Patch end_percent")
    p.add_argument("--variants", default=None,
                   help="comma separated, from: plain, RAD, RAD word maps, masked, masked + RAD (default: all)")
    p.add_argument("--no-localisation", dest="localise", action="store_false",
                   help="skip RAD's loss on clips already in their box (bench.cross_attention measures it per block)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    sys.path.insert(0, str(ROOT / "tests"))
    import harness

    harness.import_pack()
    harness.import_comfy()
    harness.load_pack_nodes()
    import comfy.samplers
    from boxdirector.nodes import reattention_edit as rea

    from bench.quality import PATCH_DEFAULTS
    from boxdirector.toyworld import data, sanity

    if args.cfg is None:
        args.cfg = sanity.DEFAULTS["cfg"]
    nodes, model, vae, clip = sanity.load_models(shift=sanity.DEFAULTS["shift"])
    enc = lambda t: nodes.CLIPTextEncode().encode(clip, t)[0]
    pos, neg, src_text = enc("a blue square"), enc(""), enc("a red circle")
    seeds = first_seeds(is_red_circle, args.seeds)
    # (name, RAD strength, chained Masked Attention Patch, RAD's maps)
    variants = [("plain", 0.0, False, "places"), ("RAD", args.rad_strength, False, "places"),
                ("RAD word maps", args.rad_strength, False, "words"), ("masked", 0.0, True, "places"),
                ("masked + RAD", args.rad_strength, True, "places")]
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",")]
        unknown = [v for v in wanted if v not in {name for name, *_ in variants}]
        if unknown:
            p.error(f"--variants: unknown {unknown}")
        variants = [v for v in variants if v[0] in wanted]
    rows = []
    for seed in seeds:
        c = data.make_clip(seed, n_objects=1)
        with torch.no_grad():   # as ComfyUI runs nodes: no autograd graph on the source or its round trip
            (latent,) = nodes.VAEEncode().encode(vae, c.video)
            (ref,) = nodes.VAEDecode().decode(vae, latent)
        ref = ref.reshape(-1, 128, 128, 3)
        regions = clip_regions(c)
        (masked_model,) = harness.run_node(
            "BoxDirector.MaskedAttentionPatch", model=model, regions=regions, clip=clip, prompt="a blue square",
            **{**PATCH_DEFAULTS, "blocks": args.masked_blocks, "end_percent": args.masked_end}).result
        for name, rad, masked, maps in variants:
            out, st = rea.run_edit(masked_model if masked else model, pos, neg, latent, regions, clip=clip,
                                   prompt="a blue square",
                                   source_conditioning=src_text, steps=args.steps, cfg=args.cfg, rad_strength=rad,
                                   refine_iterations=args.refine, seed=seed,
                                   inversion_iterations=args.inversion_iterations, maps=maps)
            with torch.no_grad():
                (img,) = nodes.VAEDecode().decode(vae, out)
            img = img.reshape(-1, 128, 128, 3)
            plan = rea.EditPlan(masks=regions.masks, layout="wan21", objects=(), columns=(), state=rea.CaptureState())
            bg = background_mask(plan.latent_region(latent["samples"].shape), img.shape[0], 128)
            r = {"seed": seed, "variant": name, "rad": rad, "bg_psnr": psnr(img, ref, bg[..., None]),
                 "bg_share": float(bg.float().mean()), "in_box": object_in_box(img, c.boxes[0]),
                 "red_left": object_in_box(img, c.boxes[0], "red"), **{k: st[k] for k in (
                     "inversion_s", "step_s", "rad_s", "rad_evaluations", "steps")}}
            rows.append(r)
            print(f"seed {seed} {name:13s}: background PSNR {r['bg_psnr']:.1f} dB over "
                  f"{r['bg_share']:.0%} of pixels, blue object in box {r['in_box']:.0%} of frames, red still in box "
                  f"{r['red_left']:.0%}; inversion {r['inversion_s']:.1f}s, steps {r['step_s']:.1f}s, RAD "
                  f"{r['rad_evaluations']} passes {r['rad_s']:.1f}s", flush=True)

    # Plain sampling (ComfyUI's euler, same steps, same guider and prompt) timed in the same run.
    g = rea.EditGuider(model)
    g.set_conds(pos, neg)
    g.set_cfg(args.cfg)
    sig = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", args.steps)
    shape = latent["samples"].shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    g.sample(noise, torch.zeros(shape), comfy.samplers.sampler_object("euler"), sig, seed=0)
    plain_step = (time.perf_counter() - t0) / args.steps

    # Peak memory: one plain CFG step vs one edit step with a RAD pass (refinement off, 1 step).
    mem_plain = peak_bytes(lambda: g.sample(noise, torch.zeros(shape), comfy.samplers.sampler_object("euler"),
                                            sig[-2:], seed=0))
    mem_rad = peak_bytes(lambda: rea.run_edit(model, pos, neg, latent, regions, clip=clip, prompt="a blue square",
                                              source_conditioning=src_text, steps=1, cfg=args.cfg, rad_strength=1.0,
                                              rad_end=1.0, refine_iterations=0, inversion_iterations=0))

    def mean(key, name):
        v = [r[key] for r in rows if r["variant"] == name]
        return sum(v) / len(v)

    locate = ({maps: localisation(nodes, model, vae, clip, rea, args, enc, maps=maps) for maps in ("places", "words")}
              if args.localise else None)
    print("\nsummary over seeds", seeds, f"({args.steps} steps, cfg {args.cfg}, RAD strength {args.rad_strength}, "
          f"masked: blocks {args.masked_blocks}, end_percent {args.masked_end})")
    plain = {r["seed"]: r["in_box"] for r in rows if r["variant"] == "plain"}
    for name, *_ in variants:
        per_seed = " / ".join(f"{r['in_box']:.0%}" for r in rows if r["variant"] == name)
        diffs = [r["in_box"] - plain[r["seed"]] for r in rows if r["variant"] == name and r["seed"] in plain]
        if name != "plain" and len(diffs) > 1:
            m = sum(diffs) / len(diffs)
            se = (sum((d - m) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
            print(f"  {name:13s}: in box {m:+.0%} ± {se:.0%} vs plain (paired by clip, ± standard error)")
        print(f"  {name:13s}: background PSNR {mean('bg_psnr', name):.1f} dB (min "
              f"{min(r['bg_psnr'] for r in rows if r['variant'] == name):.1f}), blue object in box "
              f"{mean('in_box', name):.0%} of frames (per seed {per_seed}), red circle left in box "
              f"{mean('red_left', name):.0%}")
    if locate:
        print(f"  cross-attention maps: RAD loss with a blue square already in its box {locate['places']:.2f} on "
              f"place maps, {locate['words']:.2f} on word maps (0 = its words attend only inside the box, 1 = no "
              "location)")
    on = [r for r in rows if r["variant"] == "RAD"]
    edit_step = sum(r["step_s"] + r["rad_s"] for r in on) / sum(r["steps"] for r in on)
    rad_pass = sum(r["rad_s"] for r in on) / max(1, sum(r["rad_evaluations"] for r in on))
    inv = sum(r["inversion_s"] for r in on) / len(on)
    print(f"  time: plain euler step {plain_step:.3f}s; edit step incl. RAD {edit_step:.3f}s "
          f"({edit_step / plain_step:.1f}x); one RAD gradient pass {rad_pass:.3f}s ({rad_pass / plain_step:.1f}x); "
          f"inversion {inv:.1f}s per clip")
    print(f"  peak memory: plain step {mem_plain / 2**20:.1f} MiB, edit step with RAD {mem_rad / 2**20:.1f} MiB "
          f"({mem_rad / max(1, mem_plain):.1f}x)")
    return {"rows": rows, "plain_step": plain_step, "edit_step": edit_step, "mem_plain": mem_plain,
            "mem_rad": mem_rad, "localisation": locate}


def localisation(nodes, model, vae, clip, rea, args, enc, clips: int = 3, maps: str = "places") -> float:
    """RAD's loss, averaged over the second half of the steps, while a clip whose blue square
    already sits in the box is re-generated from its own inversion under its own caption (RAD
    strength ~0, so nothing is moved): how well the cross-attention maps RAD reads say where the
    object is. Uniform maps give exactly 1 (FG = BG); an all-inside map gives 0."""
    from boxdirector.toyworld import data

    losses = []
    for seed in first_seeds(lambda c: c.colors == (2,) and c.shapes == (1,), clips):   # blue squares
        c = data.make_clip(seed, n_objects=1)
        with torch.no_grad():
            (latent,) = nodes.VAEEncode().encode(vae, c.video)
        _, st = rea.run_edit(model, enc("a blue square"), enc(""), latent, clip_regions(c), clip=clip,
                             prompt="a blue square",
                             source_conditioning=enc("a blue square"), steps=args.steps, cfg=args.cfg,
                             rad_strength=1e-6, rad_end=1.0, refine_iterations=0, seed=seed,
                             inversion_iterations=args.inversion_iterations, maps=maps)
        late = st["rad_losses"][len(st["rad_losses"]) // 2:]
        losses.append(sum(late) / len(late))
    return sum(losses) / len(losses)


if __name__ == "__main__":
    main()
