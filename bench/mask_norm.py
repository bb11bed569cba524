"""Does masked attention lower or raise the attention output's spread? (mask normalisation's premise)

    python -m bench.mask_norm [--seeds 1] [--trajectories 0,2,4]

The domain-adaptation paper adds EFDM mask normalisation because, on its UNet, masking *lowers*
the attention output's variance. This samples bench.quality's toy-world trajectories with Masked
Attention Patch (its defaults, mask_normalization on) and, at every normalisation call, records the
spread of the masked output and of the unmasked reference: the standard deviation over tokens, per
channel. It prints the ratio masked / unmasked of the channel-averaged spreads (below 1 is the
paper's variance drop; above 1, EFDM would shrink the masked output's contrast) and the share of
channels whose spread masking lowered: the only channels the default, restore_variance, changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from bench import quality as q
from bench.quality import harness, sanity


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--trajectories", default="0,2,4", help="indices into bench.quality's suite")
    args = ap.parse_args(argv)
    nodes, model, vae, clip = sanity.load_models(shift=sanity.DEFAULTS["shift"] or None)
    harness.load_pack_nodes()
    ratios: list = []
    narrowed: list = []    # per call: the share of channels whose spread masking lowered

    # The pack is imported twice (as a package and through ComfyUI's custom-node loader): wrap the
    # normalisations in both, recording their inputs and changing nothing.
    for name, mod in list(sys.modules.items()):
        if name.endswith("core.region_attention"):
            for fn in ("efdm", "restore_spread"):
                def spy(masked, reference, dim=-2, _orig=getattr(mod, fn)):
                    ms, rs = masked.float().std(dim), reference.float().std(dim)
                    ratios.append(float(ms.mean() / rs.mean()))
                    narrowed.append(float((ms < rs).float().mean()))
                    return _orig(masked, reference, dim)
                setattr(mod, fn, spy)

    suite = q.load_trajectories(None)
    out = {}
    with torch.inference_mode():
        for ti in (int(i) for i in args.trajectories.split(",")):
            traj = suite[ti]
            prompt = " and ".join(o.prompt for o in traj.objects)
            _, regions = q.node_regions(traj)
            (m,) = harness.run_node("BoxDirector.MaskedAttentionPatch", model=model, regions=regions, clip=clip,
                                    prompt=prompt, **{**q.PATCH_DEFAULTS, "mask_normalization": True}).result
            ratios.clear()
            narrowed.clear()
            for seed in range(args.seeds):
                sanity.generate(nodes, m, vae, clip, prompt, seed, steps=20, cfg=sanity.DEFAULTS["cfg"])
            # the median too: a few calls whose unmasked output is nearly flat give ratios in the
            # hundreds (measured on the six-block DiT) and pull the mean far from the typical call
            out[prompt] = {"calls": len(ratios), "mean": statistics.mean(ratios),
                           "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                           "narrowed": statistics.mean(narrowed)}
    print(f"{'prompt':34s}{'calls':>6s}{'masked/unmasked spread: mean':>30s}{'median':>8s}{'min':>7s}{'max':>8s}"
          f"{'narrowed channels':>19s}")
    for prompt, s in out.items():
        print(f"{prompt:34s}{s['calls']:6d}{s['mean']:30.2f}{s['median']:8.2f}{s['min']:7.2f}{s['max']:8.2f}"
              f"{s['narrowed']:19.0%}")
    return out


if __name__ == "__main__":
    main()
