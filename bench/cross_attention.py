"""Where does a subject's cross-attention point, block by block? (RAD's premise, ReAtCo)

    python -m bench.cross_attention [--clips 4] [--sigmas 0.9,0.7,0.5,0.3]

RAD moves an object by pushing its words' cross-attention maps into the box, so it only works in
blocks whose maps already say where the object is. ReAtCo reads SD's lowest-resolution UNet
layers; a DiT has one resolution, so this measures, per transformer block, on toy clips whose
object sits in a known box (the clip's own boxes, the prompt its own caption): the clean latent is
noised to each level with fresh noise and passed once through the model, and the conditional
pass's text attention is read in every block through ReAttention Edit's capture rule.

Per block it prints
* ratio   the subject words' mean attention probability inside the box over outside (1 = no
          location; the raw probabilities, head mean)
* rad     RAD's loss on the maps as RAD reads them (words re-softmaxed against each other, ReAtCo's
          form): 0 = the words attend only inside, ~1 = no location
* rad/max RAD's loss on the raw subject probabilities scaled to 1 at each frame's maximum (maps
          that compare places, not words)

Toy-world caveat: its text encoder gives every word of a phrase the phrase's colour and shape, so
"a", "blue" and "square" carry the same meaning and ReAtCo's word-against-word re-softmax has
nothing to separate: the "rad" column is then ~1 in every block, whatever the places say.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


FORWARDS: list = []   # per forward pass: the per-block maps (a module list: ComfyUI deep-copies model options)


class RecordingList(list):
    """state.maps that keeps, per forward, the per-block maps the edit loop would average."""

    def clear(self):
        if len(self):
            FORWARDS.append(list(self))
        super().clear()


def place_maps(probs: torch.Tensor, objects, grid) -> torch.Tensor:
    """[K, F, H, W] raw subject-word probabilities, each frame scaled to max 1."""
    m = torch.stack([probs[:, list(obj)].float().mean(-1) for obj in objects]).reshape(len(objects), *grid)
    return m / m.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--sigmas", default="0.9,0.7,0.5,0.3")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    import harness

    harness.import_pack()
    harness.import_comfy()
    harness.load_pack_nodes()
    import comfy.samplers
    from boxdirector.core import reatco, token_layout
    from boxdirector.nodes import reattention_edit as rea
    from boxdirector.toyworld import data, sanity

    from bench.edit import clip_regions, first_seeds

    nodes, model, vae, clip = sanity.load_models(shift=sanity.DEFAULTS["shift"])
    enc = lambda t: nodes.CLIPTextEncode().encode(clip, t)[0]   # noqa: E731
    prompt = "a blue square"
    pos, neg = enc(prompt), enc("")
    sigmas = [float(s) for s in args.sigmas.split(",")]
    per_block: dict = {}
    for seed in first_seeds(lambda c: c.colors == (2,) and c.shapes == (1,), args.clips):
        c = data.make_clip(seed, n_objects=1)
        with torch.no_grad():
            (latent,) = nodes.VAEEncode().encode(vae, c.video)
        regions = clip_regions(c)
        patched, plan = rea.make_plan(model, clip, prompt, regions, latent["samples"], blocks="all",
                                      stop_early=False, rad_strength=1.0)
        FORWARDS.clear()
        plan.state.maps = RecordingList()
        guider = rea.EditGuider(patched)
        guider.set_conds(pos, neg)
        guider.set_cfg(1.0)

        def probe(model_k, x, sig, extra_args=None, callback=None, disable=None):
            src = model_k.latent_image.float()
            p_ = reatco_param(model_k)
            gen = torch.Generator().manual_seed(seed)
            for s in sigmas:
                noise = torch.randn(src.shape, generator=gen).to(src)
                z = reatco.renoise(src, s, noise, p_)
                # one RAD-mode forward (cond pass, capture on), without the gradient
                plan.state.maps.clear()
                plan.state.active, guider.mode = True, "rad"
                try:
                    model_k(z.to(x.dtype), rea._sigma(z, s), **(extra_args or {}))
                except rea.MapsComplete:
                    pass
                finally:
                    plan.state.active, guider.mode = False, "edit"
                plan.state.maps.clear()
            return x

        shape = latent["samples"].shape
        token_masks = plan.token_masks(shape)
        sig = comfy.samplers.calculate_sigmas(patched.get_model_object("model_sampling"), "simple", 2).cpu()
        guider.sample(torch.zeros(shape), latent["samples"].clone(), comfy.samplers.KSAMPLER(probe), sig, seed=seed,
                      disable_pbar=True)
        grid = token_layout.token_grid(plan.layout, tuple(shape))
        masks = token_masks.float()
        for fi, blocks in enumerate(FORWARDS):
            s = sigmas[fi]
            for b, probs in enumerate(blocks):
                probs = probs.detach()
                subj = torch.stack([probs[:, list(o)].float().mean(-1) for o in plan.objects]).reshape(
                    len(plan.objects), *grid)
                inside = (subj * masks).sum() / masks.sum()
                outside = (subj * (1 - masks)).sum() / (1 - masks).sum()
                maps = reatco.word_maps(probs, range(len(plan.columns)), plan.objects, grid, smooth=plan.smooth)
                rad, _ = reatco.rad_loss(maps, token_masks, plan.topk_fraction)
                radmax, _ = reatco.rad_loss(place_maps(probs, plan.objects, grid), token_masks, plan.topk_fraction)
                d = per_block.setdefault((b, s), {"ratio": [], "rad": [], "radmax": []})
                d["ratio"].append(float(inside / outside.clamp(min=1e-12)))
                d["rad"].append(float(rad))
                d["radmax"].append(float(radmax))
    blocks = sorted({b for b, _ in per_block})
    print(f"{args.clips} clips of '{prompt}' in their own boxes; per block and noise level: "
          "in/out ratio | RAD loss (word re-softmax) | RAD loss (place maps)")
    print(f"{'block':>6}" + "".join(f"{'sigma ' + str(s):>26}" for s in sigmas))
    out = {}
    for b in blocks:
        cells = []
        for s in sigmas:
            d = per_block[(b, s)]
            m = {k: statistics.mean(v) for k, v in d.items()}
            out[(b, s)] = m
            cells.append(f"{m['ratio']:8.2f} |{m['rad']:6.2f} |{m['radmax']:6.2f}")
        print(f"{b:>6}" + "".join(f"{c:>26}" for c in cells))
    return out


def reatco_param(model_k):
    from boxdirector.nodes.intrinsic_denoise import parametrisation_of

    return parametrisation_of(model_k.inner_model.inner_model.model_sampling)


if __name__ == "__main__":
    main()
