"""End-to-end sampling time: MaskedAttentionPatch vs the unpatched model, in ComfyUI's own KSampler.

A Wan 2.1 model (real class) large enough that attention dominates — dim 512, 8 layers, 4096 video
tokens by default — is built with random weights, saved, loaded through comfy.sd.load_diffusion_model
and sampled with every step masked. Runs are interleaved (plain, patched, plain, ...) and the median
of the per-pair ratios is reported, so machine noise hits both sides alike.

    python -m bench.sampling [--tokens 4096] [--reps 3] [--steps 2] [--out out/bench_sampling.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402


def build_model(path: Path, dim: int, layers: int):
    import comfy.ops
    import comfy.sd
    import safetensors.torch
    from comfy.ldm.wan.model import WanModel

    if not path.exists():
        torch.manual_seed(0)
        m = WanModel(model_type="t2v", dim=dim, ffn_dim=2 * dim, num_heads=dim // 128, num_layers=layers,
                     text_dim=4096, in_dim=16, out_dim=16, freq_dim=256, operations=comfy.ops.manual_cast)
        sd = {k: (torch.randn_like(v) * 0.02 if v.is_floating_point() else v) for k, v in m.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(sd, str(path))
    return comfy.sd.load_diffusion_model(str(path))


def regions_for(frames: int, height: int, width: int):
    from boxdirector.core.masks import box_masks
    from boxdirector.core.regions import Regions

    boxes = torch.tensor([[[0.05, 0.2, 0.45, 0.7]] * frames, [[0.55, 0.3, 0.9, 0.8]] * frames])
    return Regions(box_masks(boxes, torch.ones(2, frames, dtype=torch.bool), height, width),
                   ("a", "b"), ("a", "b"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096, choices=(1024, 2048, 4096, 8192))
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_sampling.json"))
    args = ap.parse_args(argv)

    nodes = harness.import_comfy()
    harness.import_pack()
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_model(ROOT / ".cache" / "bench" / f"wan-d{args.dim}-l{args.layers}.safetensors", args.dim, args.layers)
    t_lat, h_lat, w_lat = {1024: (4, 16, 64), 2048: (8, 16, 64), 4096: (8, 32, 64), 8192: (8, 32, 128)}[args.tokens]
    latent = {"samples": torch.zeros(1, 16, t_lat, h_lat, w_lat)}
    frames = (t_lat - 1) * 4 + 1
    regions = regions_for(frames, h_lat * 8, w_lat * 8)
    g = torch.Generator().manual_seed(1)
    text = torch.randn(1, 16, 4096, generator=g)
    positive, negative = [[text, {}]], [[torch.zeros_like(text), {}]]
    subjects = ((2, 3), (6,))
    rule = MaskedAttention(regions=regions, subject_tokens=subjects, start=0.0, end=1.0)
    patched = attention_seam.install(model, rule)
    fg = [float(m.mean()) for m in regions.masks]

    def run(m):
        t0 = time.perf_counter()
        nodes.common_ksampler(m, 0, args.steps, 1.0, "euler", "simple", positive, negative, latent)
        return time.perf_counter() - t0

    run(model), run(patched)           # warm-up: plan building, allocator
    plain, masked = [], []
    for _ in range(args.reps):
        plain.append(run(model))
        masked.append(run(patched))
    ratios = [m / p for m, p in zip(masked, plain)]
    result = {
        "device": "cpu", "threads": torch.get_num_threads(), "dim": args.dim, "layers": args.layers,
        "video_tokens": t_lat * (h_lat // 2) * (w_lat // 2), "steps": args.steps, "cfg": 1.0,
        "object_fractions": fg, "masked_steps": "all",
        "plain_s": plain, "patched_s": masked, "ratio_median": statistics.median(ratios), "ratios": ratios,
    }
    print(f"Wan dim {args.dim} x {args.layers} layers, {result['video_tokens']} tokens, {args.steps} steps, "
          f"objects cover {', '.join(f'{f:.0%}' for f in fg)} of the frame, every step masked")
    print(f"{'run':>4} {'plain s':>9} {'patched s':>10} {'ratio':>7}")
    for i, (p, m) in enumerate(zip(plain, masked)):
        print(f"{i:>4} {p:>9.2f} {m:>10.2f} {m / p:>7.3f}")
    print(f"median patched/plain: {result['ratio_median']:.3f} (target <= 1.05)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
