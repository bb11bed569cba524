"""ReAttentionEdit: ReAtCo's region editing of an existing video (paper 001) on ComfyUI models.

The mathematics (inversion, RAD loss and step sizes, IRJS) is in ``core/reatco.py``; this file
adapts ComfyUI to it:

* **Sampling machinery.** The node runs ComfyUI's own ``CFGGuider`` (model loading, conditioning,
  wrappers, CFG) with a custom ``KSAMPLER`` whose function is the edit loop. A ``EditGuider``
  subclass answers three kinds of model calls: "invert" (the source prompt, cfg 1, as ReAtCo's
  inversion runs without guidance), "rad" (the edit prompt, cond only: RAD reads the conditional
  pass's cross-attention) and "edit" (ordinary CFG). The guider's ``process_latent_in`` gives the
  source latent in the model's space (``model_k.latent_image``).
* **Inversion is never shaped.** The guider's "invert" calls carry the seam's RECONSTRUCT purpose,
  so no shaping rule chained before the edit (Masked Attention Patch, First Frame Share) changes
  the attention that reconstructs the source: their plans are for the edit prompt's video.
* **Cross-attention maps** come through the one attention seam (``attention_seam.install``): the
  :class:`CrossAttentionMaps` rule, an observer (so it sees every call, also where a shaping rule
  installed before it computes the attention itself), only while a RAD pass is running and only in
  the chosen blocks,
  computes ``softmax(q k_text^T / sqrt(d))`` over the text keys (N x T, never N x N; one head at a
  time under activation checkpointing), averages the heads, keeps the prompt's word columns and
  returns the normal attention output. After the last chosen block it stops the forward pass: the
  loss depends on nothing later, so the gradient is the same and the rest is never computed.
* **Gradients.** ComfyUI executes nodes under ``torch.inference_mode()``; autograd cannot save
  inference tensors. The RAD passes run under ``inference_mode(False)`` + ``enable_grad``, and
  during each RAD step (:func:`autograd_weights`) the inference-mode parameters and buffers of the
  modules a RAD pass runs (not the blocks after the deepest chosen one, where the pass stops) are
  replaced by ordinary copies; the original tensors go back on the module when the step ends or
  raises. The model is shared (ComfyUI caches it for other workflows), so it is never changed for
  longer; the copies cost one extra copy of those weights during RAD steps only (ComfyUI's LoRA
  training node sidesteps the same problem by copying weights). Gradients are w.r.t. the latent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io

from ..core import reatco, token_layout
from ..core.masks import box_masks
from ..core.regions import Regions as RegionSet
from ..core.trajectory import sample_boxes
from . import attention_seam, checks, model_families, types
from .common import CATEGORY, model_training, node_id
from .intrinsic_denoise import parametrisation_of
from .checks import blocks_problem, parse_blocks
from .subject_tokens import _encoder_key, _ids, find_subject_tokens, key_window

log = logging.getLogger("boxdirector")

DEFAULTS = {"steps": 20, "cfg": 5.0, "scheduler": "simple", "rad_strength": 1.0, "rad_end_percent": 0.5,
            "refine_iterations": reatco.MAX_REFINE, "topk_fraction": reatco.TOPK_FRACTION, "blocks": "all",
            "frame_window": 0, "smooth_maps": True, "paste_background": True, "seed": 0, "inversion_iterations": 3,
            "maps": "places"}
MAX_STEPS, MAX_STRENGTH, MAX_REFINE_ITER, MAX_WINDOW = 1000, 100.0, 100, 1024


# --- the cross-attention capture rule ------------------------------------------------------------

class MapsComplete(Exception):
    """Raised inside the forward pass once every chosen block's map is recorded."""


@dataclass(eq=False)
class CaptureState:
    """Mutable, owned by one edit run: off except during RAD passes."""

    active: bool = False
    maps: list = field(default_factory=list)      # per block: [N, W] head-averaged word probabilities
    blocks: list = field(default_factory=list)    # the block each map was recorded in
    shape: tuple | None = None                 # latent shape of the captured forward


@dataclass(eq=False)
class CrossAttentionMaps:
    """Seam rule: record the cond chunk's text attention probabilities of the prompt's word
    columns in the chosen blocks, and leave the attention output unchanged."""

    columns: tuple                                # text key positions kept (the prompt's words)
    blocks: frozenset
    state: CaptureState
    stop_early: bool = True
    name: str = "reatco_maps"
    role = attention_seam.OBSERVER   # runs before every shaping rule: sees every chosen block's call

    def __deepcopy__(self, memo):
        return self

    def attend(self, call, proceed):
        st = self.state
        if not st.active or call.kind not in ("cross", "joint") or call.block not in self.blocks:
            return proceed()
        fwd = call.forward
        chunks = fwd.cond_or_uncond
        per = call.q.shape[0] // max(1, len(chunks))
        cond = [i for i, c in enumerate(chunks) if c == 0]
        if not cond:
            return proceed()
        rows = slice(cond[0] * per, cond[0] * per + 1)   # one video: the first item of the cond chunk
        q, k, mask = self.text_attention_inputs(call, rows)
        st.maps.append(word_probabilities(q, k, mask, self.columns))
        st.blocks.append(call.block)
        st.shape = (1,) + tuple(fwd.latent_shape[1:])
        if self.stop_early and call.block == max(self.blocks):
            raise MapsComplete()
        return proceed()

    @staticmethod
    def text_attention_inputs(call, rows):
        """(q [H, N, d] video queries, k [H, T, d] text keys, additive key mask [T] or None)."""
        n = call.forward.family.video_tokens(call.forward)
        if call.skip_reshape:                        # [B, H, L, d] (HunyuanVideo)
            q, k = call.q[rows][0], call.k[rows][0]
        else:                                        # [B, L, H*d]
            h = call.heads
            q = call.q[rows][0].unflatten(-1, (h, -1)).transpose(0, 1)
            k = call.k[rows][0].unflatten(-1, (h, -1)).transpose(0, 1)
        mask = call.mask
        if call.kind == "joint":
            t = call.info["num_text"]
            q, k = q[:, :n], k[:, n:n + t]
            if mask is not None:
                mask = mask.reshape(-1, mask.shape[-1])[0][-t:]
        elif mask is not None:
            mask = mask.reshape(-1, mask.shape[-1])[0]
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        return q[:, :n], k, mask


def word_probabilities(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, columns) -> torch.Tensor:
    """Head mean of softmax(q k^T / sqrt(d) + mask) over the T text keys, word columns only: [N, W].
    One head at a time under checkpointing, so the backward pass holds one N x T head at a time."""
    from torch.utils.checkpoint import checkpoint

    cols = torch.tensor(columns, dtype=torch.long, device=q.device)
    scale = q.shape[-1] ** -0.5

    def head(qh, kh):
        s = (qh.float() @ kh.float().T) * scale
        if mask is not None:
            s = s + mask.to(s.dtype)
        return torch.softmax(s, dim=-1).index_select(-1, cols)

    out = None
    for h in range(q.shape[0]):
        p = checkpoint(head, q[h], k[h], use_reentrant=False) if torch.is_grad_enabled() else head(q[h], k[h])
        out = p if out is None else out + p
    return out / q.shape[0]


# --- the guider ----------------------------------------------------------------------------------

class EditGuider(comfy.samplers.CFGGuider):
    """CFGGuider with a third conditioning ("source", for inversion) and a mode per model call."""

    mode = "edit"

    def set_conds(self, positive, negative, source=None):
        self.inner_set_conds({"positive": positive, "negative": negative,
                              "source": source if source is not None else negative})

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (CFGGuider's signature)
        if self.mode == "invert":
            # Reconstructing the source: no shaping rule on the seam may change its attention.
            return comfy.samplers.sampling_function(
                self.inner_model, x, timestep, None, self.conds.get("source"), 1.0,
                model_options=attention_seam.with_purpose(model_options, attention_seam.RECONSTRUCT), seed=seed)
        if self.mode == "rad":
            return comfy.samplers.sampling_function(self.inner_model, x, timestep, None, self.conds.get("positive"),
                                                    1.0, model_options=model_options, seed=seed)
        return super().predict_noise(x, timestep, model_options, seed)


# --- the plan of one edit ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class EditPlan:
    masks: torch.Tensor              # [K, F, H, W] pixel-frame region masks
    layout: str                      # token layout of the model family
    objects: tuple                   # per object: indices into ``columns`` of its subject words
    columns: tuple                   # text key positions of the prompt's words
    state: CaptureState
    blocks: frozenset = frozenset()  # the blocks RAD reads
    stop_early: bool = True          # a RAD pass ends after the deepest of them
    rad_strength: float = 1.0
    rad_end: float = 0.5
    refine_iterations: int = reatco.MAX_REFINE
    topk_fraction: float = reatco.TOPK_FRACTION
    smooth: bool = True
    maps: str = "places"             # reatco.MAP_NORMALISATIONS
    frame_window: int = 0
    paste_background: bool = True
    seed: int = 0
    inversion_iterations: int = 3
    stats: dict | None = None

    def __deepcopy__(self, memo):
        return self

    @property
    def rad(self) -> bool:
        return self.rad_strength > 0 and self.rad_end > 0 and len(self.objects) > 0

    def latent_region(self, shape) -> torch.Tensor:
        """Union of the regions on the latent grid, broadcastable to the latent: 1 where any object
        covers any part of a latent pixel (so nothing outside the boxes is ever edited)."""
        lay = dataclasses.replace(token_layout.get_layout(self.layout), patch=(1, 1, 1))
        cov = token_layout.token_coverage(self.masks, lay, shape)             # [K, T, H, W] / SVD [K, F, h, w]
        region = (cov > 0).any(0).float()
        if lay.unet:                                                          # frames are the batch
            return region[:, None]
        return region[None, None]

    def token_masks(self, shape) -> torch.Tensor:
        """[K, T', H', W'] bool: each object's tokens (the token layout's membership rules)."""
        labels = token_layout.token_label_grid(self.masks, self.layout, shape)
        return torch.stack([labels == k + 1 for k in range(self.masks.shape[0])])


# --- the sampler function ------------------------------------------------------------------------

@contextlib.contextmanager
def autograd_weights(module: torch.nn.Module, skip=()):
    """Within the block, ``module``'s inference-mode parameters / buffers (except in the modules
    ``skip`` and below) are ordinary copies autograd can save; on exit, also by an exception, the
    original tensor objects are back. Yields the list of (owner, kind, name, original) swapped."""
    skipped = {id(m) for s in skip for m in s.modules()}
    swapped = []
    try:
        with torch.inference_mode(False):
            for m in module.modules():
                if id(m) in skipped:
                    continue
                for name, p in list(m._parameters.items()):
                    if p is not None and p.is_inference():
                        m._parameters[name] = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
                        swapped.append((m, "_parameters", name, p))
                for name, b in list(m._buffers.items()):
                    if b is not None and b.is_inference():
                        m._buffers[name] = b.clone()
                        swapped.append((m, "_buffers", name, b))
        yield swapped
    finally:
        for m, kind, name, orig in reversed(swapped):
            getattr(m, kind)[name] = orig


def blocks_after(diffusion_model, chosen, stop_early: bool) -> tuple:
    """The transformer blocks a RAD pass never reaches: after the deepest chosen one, when the pass
    stops there. Empty when the model's block list is unknown (everything is then made ready)."""
    if not stop_early or not chosen:
        return ()
    blocks = model_families.blocks_of(diffusion_model)
    return tuple(blocks[max(chosen) + 1:])


def _sigma(x, s):
    return torch.full((x.shape[0],), float(s), device=x.device, dtype=torch.float32)


def _fresh_noise(shape, generator, like):
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def _windows(frames: int, window: int) -> list[tuple[int, int]]:
    """Overlapping frame windows (stride window // 2) covering every frame."""
    if window <= 0 or window >= frames:
        return [(0, frames)]
    stride = max(1, window // 2)
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return [(a, a + window) for a in starts]


def rad_gradient(model_k, extra_args, z, sigma, plan: EditPlan, token_masks):
    """(loss, worst foreground loss [K], grad) of RAD's loss at latent ``z`` and level ``sigma``."""
    guider = model_k.inner_model
    frames_axis = 2 if z.ndim == 5 else 0
    total = z.shape[frames_axis]
    grad = torch.zeros_like(z, dtype=torch.float32)
    count = torch.zeros(total, device=z.device)
    losses, worst = [], []
    for a, b in _windows(total, plan.frame_window):
        zw = z.narrow(frames_axis, a, b - a).detach().clone().requires_grad_(True)
        plan.state.maps.clear()
        plan.state.blocks.clear()
        plan.state.active = True
        guider.mode = "rad"
        try:
            model_k(zw, _sigma(zw, sigma), **extra_args)
        except MapsComplete:
            pass
        finally:
            plan.state.active = False
            guider.mode = "edit"
        if not plan.state.maps:
            raise RuntimeError("ReAttention Edit: no cross-attention was recorded in the chosen blocks; check "
                               "blocks (the model has no text cross-attention there)")
        read = sorted(plan.state.blocks)
        if plan.blocks and read != sorted(plan.blocks):
            raise RuntimeError(f"ReAttention Edit: blocks: cross-attention was recorded in blocks {read} of the "
                               f"chosen {sorted(plan.blocks)}; choose blocks where the model attends to the text")
        if plan.stats is not None:
            plan.stats.setdefault("rad_blocks", []).append(tuple(read))
        probs = torch.stack(plan.state.maps).mean(0)                       # blocks averaged
        plan.state.maps.clear()
        grid = token_layout.token_grid(plan.layout, plan.state.shape)
        maps = reatco.word_maps(probs, range(len(plan.columns)), plan.objects, grid, smooth=plan.smooth,
                                normalise=plan.maps)
        tm = token_masks[:, a:b] if frames_axis == 2 else token_masks
        loss, fg = reatco.rad_loss(maps, tm, plan.topk_fraction)
        (g,) = torch.autograd.grad(loss, zw)
        grad.narrow(frames_axis, a, b - a).add_(g.float())
        count[a:b] += 1
        losses.append(loss.detach())
        worst.append(fg)
    shape = [1] * z.ndim
    shape[frames_axis] = total
    grad = grad / count.clamp(min=1).reshape(shape)
    return torch.stack(losses).mean(), torch.stack(worst).amax(0), grad.to(z.dtype)


@torch.no_grad()
def sample_edit(model_k, x, sigmas, extra_args=None, callback=None, disable=None, *, plan: EditPlan):
    """The edit loop: inversion, then per step RAD updates (first ``rad_end`` of the steps) and a
    DDIM / Euler step, the regions' outside re-taken from the re-noised source after each."""
    extra_args = {} if extra_args is None else extra_args
    guider = model_k.inner_model
    base = guider.inner_model
    p = parametrisation_of(base.model_sampling)
    src = model_k.latent_image.float()
    steps = len(sigmas) - 1
    sig = [float(s) for s in sigmas]
    stats = plan.stats if plan.stats is not None else {}
    cuda = src.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(src.device)

    def denoise(z, s, mode):
        guider.mode = mode
        try:
            with torch.no_grad():
                return model_k(z.to(x.dtype), _sigma(z, s), **extra_args).float()
        finally:
            guider.mode = "edit"

    # 1. inversion
    t0 = time.perf_counter()
    bar = comfy.utils.ProgressBar(steps)   # one tick per inversion step (1 + inversion_iterations evaluations)
    traj = reatco.invert(lambda z, s: denoise(z, s, "invert"), src, sig, p, on_step=lambda i, _: bar.update(1),
                         fixed_point=plan.inversion_iterations)
    stats["inversion_s"] = time.perf_counter() - t0
    stats["inverted"] = traj[0].detach().cpu()

    # 2. editing
    region = plan.latent_region(src.shape).to(src.device)
    token_masks = plan.token_masks(src.shape).to(src.device) if plan.rad else None
    unreached = blocks_after(base.diffusion_model, plan.blocks, plan.stop_early) if plan.rad else ()
    stats["weights_swapped"] = 0      # most tensors swapped in one RAD step (autograd_weights)
    rad_steps = math.ceil(plan.rad_end * steps) if plan.rad else 0
    sizes = reatco.rad_step_sizes(rad_steps)
    gen = torch.Generator().manual_seed(int(plan.seed))
    bar = comfy.utils.ProgressBar(steps)
    # The re-noised source of the current level: z's outside *is* this tensor, so the RAD updates
    # of one step blend with the same one (fresh noise per step, not per update: a new draw inside
    # a step would change the background under the loss and hide what the update did).
    source_s = reatco.renoise(src, sig[0], _fresh_noise(src.shape, gen, src), p)
    z = reatco.irjs_blend(traj[0], source_s, region)
    rad_evals, rad_time, step_time, rad_losses, trace = 0, 0.0, 0.0, [], []
    for i in range(steps):
        s, s_next = sig[i], sig[i + 1]
        if i < rad_steps:
            t1 = time.perf_counter()
            target = reatco.refinement_target(i, steps) if plan.refine_iterations > 0 else None
            updates = 1 + (plan.refine_iterations if target is not None else 0)
            with torch.inference_mode(False), torch.enable_grad(), model_training(), \
                    autograd_weights(base.diffusion_model, skip=unreached) as swapped:
                stats["weights_swapped"] = max(stats.get("weights_swapped", 0), len(swapped))
                zg = z.clone()
                for it in range(updates):
                    loss, worst, grad = rad_gradient(model_k, extra_args, zg, s, plan, token_masks)
                    rad_evals += 1
                    trace.append((i, it, float(loss), float(worst.max())))
                    if it == 0:
                        rad_losses.append(float(loss))
                    if it > 0 and float(worst.max()) <= target:
                        break
                    zg = reatco.rad_update(zg, grad.float(), plan.rad_strength * sizes[i], s, p)
                    zg = reatco.irjs_blend(zg, source_s, region)
            z = zg.detach()
            rad_time += time.perf_counter() - t1
        t2 = time.perf_counter()
        d = denoise(z, s, "edit")
        z = reatco.ddim_step(z, d, s, s_next, p)
        if s_next > 0 or plan.paste_background:
            # IRJS: the outside of the regions is the source, re-noised to the next level with fresh
            # noise; at level 0 this pastes the clean source background.
            source_s = reatco.renoise(src, s_next, _fresh_noise(src.shape, gen, src), p)
            z = reatco.irjs_blend(z, source_s, region)
        step_time += time.perf_counter() - t2
        bar.update(1)
        if callback is not None:
            callback({"x": z, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": d})
    stats.update(rad_evaluations=rad_evals, rad_s=rad_time, step_s=step_time, steps=steps, rad_steps=rad_steps,
                 rad_losses=rad_losses, rad_trace=trace)
    if cuda:
        stats["peak_bytes"] = torch.cuda.max_memory_allocated(src.device)
    log.info("ReAttention Edit: inversion %.2fs, %d steps %.2fs (%.3fs/step), RAD %d evaluations %.2fs "
             "(%.3fs/evaluation)%s", stats["inversion_s"], steps, step_time, step_time / max(1, steps), rad_evals,
             rad_time, rad_time / max(1, rad_evals),
             f", peak {stats['peak_bytes'] / 2**20:.0f} MiB" if cuda else "")
    return z.to(x.dtype)


class EditSampler(comfy.samplers.KSAMPLER):
    def __init__(self, plan: EditPlan):
        super().__init__(sample_edit, {"plan": plan})
        self.plan = plan


# --- inputs -> plan ------------------------------------------------------------------------------

def word_positions(clip, prompt: str, layout: str) -> list[int]:
    """Text key positions of the prompt's words (no start / end / padding tokens)."""
    key = _encoder_key(clip.tokenize(prompt), layout)

    def keys(text):
        ids = _ids(clip.tokenize(text)[key])
        a, b = key_window(ids, layout)
        return ids[a:b]

    tok = getattr(clip.tokenizer, f"clip_{key}", None) or getattr(clip.tokenizer, key, None)
    added = set(keys("")) | {getattr(tok, a, None) for a in ("start_token", "end_token", "pad_token")}
    return [i for i, t in enumerate(keys(prompt)) if t not in added]


def regions_from_inputs(trajectory=None, regions=None) -> RegionSet:
    if (trajectory is None) == (regions is None):
        raise ValueError("trajectory / regions: connect exactly one of them (where each new object goes); "
                         f"got {'both' if trajectory is not None else 'neither'}")
    if trajectory is not None:
        boxes, visible = sample_boxes(trajectory)
        return RegionSet(box_masks(boxes, visible, trajectory.height, trajectory.width),
                         tuple(o.id for o in trajectory.objects), tuple(o.prompt for o in trajectory.objects))
    return regions


def check_source(samples: torch.Tensor, family: model_families.Family, regions: RegionSet) -> None:
    """Clear errors for a latent that does not fit the model or the regions."""
    lay = token_layout.get_layout(family.layout)
    want = 4 if lay.unet else 5
    if samples.ndim != want:
        raise ValueError(f"source: a {family.name} video latent is {want}-D, got shape {tuple(samples.shape)}; "
                         "connect the VAE Encode of the source video made with this model's VAE")
    if not lay.unet and samples.shape[0] != 1:
        raise ValueError(f"source: edit one video at a time (the latent holds {samples.shape[0]})")
    if len(regions) == 0:
        raise ValueError("trajectory / regions: there are no objects to edit")
    # Another length or aspect is resampled onto the source's grid, with a log note (the pack's rule).
    token_layout.note_resampling("ReAttention Edit", lay, regions.frames, regions.size, samples.shape)


def make_plan(model, clip, prompt: str, regions: RegionSet, samples: torch.Tensor, blocks: str = "all",
              stop_early: bool = True, **options):
    """(patched model, EditPlan) for one edit; raises ValueError naming the input at fault."""
    family = model_families.family_of(model)
    check_source(samples, family, regions)
    state = CaptureState()
    rad = options.get("rad_strength", 1.0) > 0 and options.get("rad_end", 0.5) > 0
    if not rad:
        return model, EditPlan(masks=regions.masks, layout=family.layout, objects=(), columns=(), state=state, **options)
    if family.layout == "svd":
        raise ValueError("rad_strength: Stable Video Diffusion has no text cross-attention for RAD; set rad_strength "
                         "to 0 (region-preserving resampling only)")
    if clip is None or not (prompt or "").strip():
        raise ValueError("clip / prompt: RAD finds each object's words with the text encoder; connect the clip and "
                         "paste the positive prompt, or set rad_strength to 0")
    found = find_subject_tokens(clip, prompt, list(regions.prompts), list(regions.ids), family.layout)
    words = word_positions(clip, prompt, family.layout)
    col = {p: i for i, p in enumerate(words)}
    objects = tuple(tuple(col[p] for p in pos if p in col) for pos in found.positions)
    if not all(objects):
        raise ValueError("prompt: an object's subject phrase is made only of start / end / padding tokens; write the "
                         "object's words into the prompt")
    chosen = parse_blocks(blocks, family.total_blocks)
    if not chosen:
        raise ValueError(f"blocks: {blocks!r} selects none of the model's {family.total_blocks} blocks")
    rule = CrossAttentionMaps(columns=tuple(words), blocks=chosen, state=state, stop_early=stop_early)
    plan = EditPlan(masks=regions.masks, layout=family.layout, objects=objects, columns=tuple(words), state=state,
                    blocks=chosen, stop_early=stop_early, **options)
    return attention_seam.install(model, rule), plan


def run_edit(model, positive, negative, source: dict, regions: RegionSet, clip=None, prompt: str = "",
             source_conditioning=None, steps: int = 20, cfg: float = 5.0, scheduler: str = "simple",
             blocks: str = "all", stop_early: bool = True, **options) -> tuple[dict, dict]:
    """The whole edit through ComfyUI's guider; returns (LATENT, stats)."""
    samples = source["samples"]
    patched, plan = make_plan(model, clip, prompt, regions, samples, blocks=blocks, stop_early=stop_early,
                              stats={}, **options)
    guider = EditGuider(patched)
    guider.set_conds(positive, negative, source_conditioning)
    guider.set_cfg(cfg)
    ms = patched.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, scheduler, steps).cpu()
    noise = torch.zeros(samples.shape, dtype=torch.float32)
    t0 = time.perf_counter()
    out = guider.sample(noise, samples.clone(), EditSampler(plan), sigmas, seed=int(options.get("seed", 0)),
                        disable_pbar=True)
    plan.stats["total_s"] = time.perf_counter() - t0
    if plan.paste_background:
        # The loop pasted the source in the model's latent space; its normalisation round trip
        # (process_latent_in / _out) costs float rounding, so paste the user's own latent here.
        region = plan.latent_region(samples.shape).to(out.device)
        out = reatco.irjs_blend(out.float(), samples.to(out.device).float(), region).to(out.dtype)
    result = {k: v for k, v in source.items() if k not in ("samples", "noise_mask")}
    result["samples"] = out.to(samples.device)
    return result, plan.stats


# --- the node ------------------------------------------------------------------------------------

class ReAttentionEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("ReAttentionEdit"),
            display_name="ReAttention Edit",
            category=CATEGORY,
            description=(
                "Edit only the boxed regions of an existing video, keep everything else (ReAtCo, training-free): the "
                "source latent is inverted to noise, then resampled with the edit prompt while (RAD) each object's "
                "words are pulled to attend inside its box and not outside, per frame, and (IRJS) everything "
                "outside the boxes is re-taken from the re-noised source at every step. Boxes may move (keyframed "
                "trajectory). Wan 2.1/2.2, HunyuanVideo, LTX-Video; SVD with rad_strength 0 only."),
            inputs=[
                io.Model.Input("model", tooltip="The video model (the original is left unchanged)."),
                io.Conditioning.Input("positive", tooltip="The edit prompt: the source video's description with the "
                                                          "new object, e.g. \"a blue square\"."),
                io.Conditioning.Input("negative", tooltip="Negative prompt for CFG while editing."),
                io.Latent.Input("source", tooltip="The source video, encoded with this model's VAE (VAE Encode)."),
                types.Trajectory.Input("trajectory", optional=True,
                                       tooltip="Where each new object goes, frame by frame (BBox Trajectory). Each "
                                               "object's prompt is its subject phrase in the edit prompt. Connect "
                                               "this or regions."),
                types.Regions.Input("regions", optional=True,
                                    tooltip="Or per-object region masks (Mask Sequence)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder of the edit prompt: finds each object's words with the real "
                                      "tokenizer (needed for RAD)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The edit prompt exactly as encoded in positive; every object's subject "
                                        "phrase must appear in it (needed for RAD)."),
                io.Conditioning.Input("source_conditioning", optional=True,
                                      tooltip="The prompt inversion runs with (cfg 1). Default: the negative prompt "
                                              "(ReAtCo inverts with the empty prompt). A description of the source "
                                              "video inverts more faithfully."),
                io.Int.Input("seed", default=DEFAULTS["seed"], min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the fresh noise IRJS re-noises the source with at every step."),
                io.Int.Input("steps", default=DEFAULTS["steps"], min=1, max=MAX_STEPS,
                             tooltip="Steps of inversion and of editing (the reference: 50)."),
                io.Int.Input("inversion_iterations", default=DEFAULTS["inversion_iterations"], min=0, max=MAX_REFINE_ITER,
                             tooltip="Fixed-point refinements of each inversion step (each one model evaluation): "
                                     "with few steps, plain DDIM inversion drifts and the edit loses the source's "
                                     "look inside the boxes. 0 = plain DDIM inversion (ReAtCo)."),
                io.Float.Input("cfg", default=DEFAULTS["cfg"], min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance while editing (inversion runs without)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES),
                               default=DEFAULTS["scheduler"], tooltip="Noise schedule (as KSampler's)."),
                io.Float.Input("rad_strength", default=DEFAULTS["rad_strength"], min=0.0, max=MAX_STRENGTH, step=0.05,
                               tooltip="Multiplies RAD's step size 20 * sqrt(s_i) (1 = the paper). 0 turns RAD off: "
                                       "the objects come only from the prompt (IRJS only)."),
                io.Float.Input("rad_end_percent", default=DEFAULTS["rad_end_percent"], min=0.0, max=1.0, step=0.01,
                               tooltip="RAD updates the latent before each of the first part of the steps (paper: "
                                       "the first half)."),
                io.Int.Input("refine_iterations", default=DEFAULTS["refine_iterations"], min=0, max=MAX_REFINE_ITER,
                             tooltip="Extra RAD iterations (each one model pass with gradients) at 0 %, 20 % and 40 % "
                                     "of the steps while an object's attention inside its box is weaker than 0.05 / "
                                     "0.5 / 0.8 (paper: up to 20). 0 = one update per step."),
                io.Float.Input("topk_fraction", default=DEFAULTS["topk_fraction"], min=0.01, max=1.0, step=0.01,
                               tooltip="The loss averages the strongest attention over this share of the region "
                                       "(and of the outside), per frame (paper: 0.2)."),
                io.String.Input("blocks", default=DEFAULTS["blocks"],
                                tooltip="Transformer blocks whose cross-attention RAD reads (averaged): all; indices "
                                        "and ranges like 0-9, 20; or depth fractions like 25%-50%. The forward pass "
                                        "stops after the last one, so earlier blocks are cheaper."),
                io.Int.Input("frame_window", default=DEFAULTS["frame_window"], min=0, max=MAX_WINDOW,
                             tooltip="RAD's gradient pass over windows of this many latent frames (half overlapping, "
                                     "averaged) to bound memory, like the reference's 4-frame windows. 0 = the "
                                     "whole clip at once."),
                io.Boolean.Input("smooth_maps", default=DEFAULTS["smooth_maps"],
                                 tooltip="Smooth the attention maps with a 3x3x3 Gaussian before the loss (reference)."),
                io.Boolean.Input("paste_background", default=DEFAULTS["paste_background"],
                                 tooltip="End with the source's own latent outside the boxes (exact background). Off: "
                                         "the model's last step decides it (the reference)."),
                # appended last: saved workflows keep their widget positions
                io.Combo.Input("maps", options=list(reatco.MAP_NORMALISATIONS), default=DEFAULTS["maps"], optional=True,
                               tooltip="places: each object's map is its own words' attention, scaled to 1 at each "
                                       "frame's peak (where do the words look). words: ReAtCo's re-softmax of the "
                                       "words against each other (which word owns each place); it needs words of "
                                       "distinct meaning and reads no location where the encoder blends a phrase "
                                       "into every token."),
            ],
            outputs=[io.Latent.Output(tooltip="The edited video latent (VAE Decode it).")],
        )

    @classmethod
    def validate_inputs(cls, steps=None, cfg=None, rad_strength=None, rad_end_percent=None, refine_iterations=None,
                        topk_fraction=None, blocks=None, frame_window=None, scheduler=None, inversion_iterations=None,
                        maps=None):
        # Linked inputs arrive as None here; execute() checks them again.
        return checks.validate(cls, locals(), lambda: blocks_problem(blocks))

    @classmethod
    def execute(cls, model, positive, negative, source, prompt="", seed=0, steps=20, cfg=5.0, scheduler="simple",
                rad_strength=1.0, rad_end_percent=0.5, refine_iterations=reatco.MAX_REFINE,
                topk_fraction=reatco.TOPK_FRACTION, blocks="all", frame_window=0, smooth_maps=True,
                paste_background=True, inversion_iterations=3, trajectory=None, regions=None, clip=None,
                source_conditioning=None, maps="places") -> io.NodeOutput:
        problem = cls.validate_inputs(steps, cfg, rad_strength, rad_end_percent, refine_iterations, topk_fraction,
                                      blocks, frame_window, scheduler, inversion_iterations, maps)
        if problem is not True:
            raise ValueError(problem)
        region_set = regions_from_inputs(trajectory, regions)
        out, _ = run_edit(model, positive, negative, source, region_set, clip=clip, prompt=prompt,
                          source_conditioning=source_conditioning, steps=int(steps), cfg=float(cfg),
                          scheduler=scheduler, blocks=blocks, rad_strength=float(rad_strength),
                          rad_end=float(rad_end_percent), refine_iterations=int(refine_iterations),
                          topk_fraction=float(topk_fraction), smooth=bool(smooth_maps), frame_window=int(frame_window),
                          paste_background=bool(paste_background), seed=int(seed),
                          inversion_iterations=int(inversion_iterations), maps=maps)
        return io.NodeOutput(out)
