"""FirstFrameShare (dynamic mask guidance: first-frame K/V sharing + mask-biased cross-attention)
and the shared-noise NOISE source, through the shared attention seam.

The mathematics is in ``core/first_frame.py``. This file decides *when* (steps, blocks,
cond/uncond), which frames the model's tokens form, and how the rule meets MaskedAttentionPatch.

Composition with MaskedAttentionPatch, either order: the first-frame rule is always placed first
on the seam (so the result does not depend on node order). On a self-attention call where both
rules are active (Wan, LTX-Video, SVD), it runs their intersection -- a token attends tokens of
its own region *and* of the first frame (+ its own frame) -- as one region plan; where only one is
active, that one runs; on HunyuanVideo's joint calls and on cross-attention, when the masked rule
is active it alone applies (its hard masks subsume the bias) and this rule passes the call on.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Optional

import torch
from comfy_api.latest import io

from ..core import first_frame as ff
from ..core import region_attention as ra
from ..core import token_layout
from ..core.regions import Regions as RegionSet
from . import attention_seam, model_families, types
from .common import CATEGORY, node_id
from .masked_attention import parse_blocks, schedule_problem
from .subject_tokens import find_subject_tokens

log = logging.getLogger("boxdirector")
RULE_NAME = "first_frame_share"


@dataclass(eq=False)
class FirstFrameShareRule:
    mode: str = "anchor"
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    block_spec: str = "all"
    cond_only: bool = False
    regions: Optional[RegionSet] = None
    subject_tokens: Optional[tuple] = None    # per object key positions; None: no mask bias
    mask_bias: float = 0.0
    threshold: float = 0.5
    name: str = RULE_NAME
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __deepcopy__(self, memo):
        return self

    @property
    def biased(self) -> bool:
        return self.regions is not None and self.subject_tokens is not None and self.mask_bias != 0.0

    def memo(self, key, build):
        return attention_seam.memo(self._cache, self._lock, key, build)

    # --- when ------------------------------------------------------------------------------
    def in_window(self, call) -> bool:
        frac = call.forward.step_fraction
        if frac is None or not (self.start <= frac < self.end or (self.end >= 1.0 and frac >= self.start)):
            return False
        if call.block is not None:
            total = call.forward.family.total_blocks
            if call.block not in self.memo(("blocks", total), lambda: parse_blocks(self.block_spec, total)):
                return False
        return True

    def active(self, call) -> bool:
        if call.kind == "cross":
            return self.biased and self.in_window(call)
        return call.kind in ("self", "joint") and self.in_window(call)

    # --- what the call is made of ------------------------------------------------------------
    def frames(self, call) -> tuple:
        """(frames T, video tokens N) of one batch item in the video view."""
        fwd = call.forward
        if fwd.family.layout == "svd":
            return call.info["frames"], call.info["frames"] * (call.q.shape[1])
        grid = token_layout.token_grid(fwd.family.layout, fwd.latent_shape)
        return grid[0], math.prod(grid)

    def labels(self, fwd, regions, threshold, call=None) -> torch.Tensor:
        if fwd.family.layout == "svd":
            shape = (call.info["frames"],) + tuple(fwd.latent_shape[1:])
            return self.memo(("svd-labels", id(regions), shape, call.info["level"]), lambda: token_layout.svd_spatial_labels(
                regions.masks, shape, level=call.info["level"], threshold=threshold).reshape(-1))
        shape = (1,) + tuple(fwd.latent_shape[1:])
        return self.memo(("labels", id(regions), shape), lambda: token_layout.token_labels(
            regions.masks, fwd.family.layout, shape, threshold=threshold))

    def subjects(self, n_keys: int) -> list:
        too_far = [i for pos in self.subject_tokens for i in pos if i >= n_keys]
        if too_far:
            raise ValueError(f"prompt: subject tokens at positions {too_far[:4]} but the model sees only {n_keys} "
                             "text tokens; connect the prompt and clip that encode this conditioning")
        return [list(p) for p in self.subject_tokens]

    @staticmethod
    def masked_rules(call) -> list:
        topts = call.kwargs.get("transformer_options") or {}
        ctl = topts.get(attention_seam.SEAM_KEY)
        return [r for r in getattr(ctl, "rules", ()) if getattr(r, "name", "") == "masked_attention"]

    # --- the attention ---------------------------------------------------------------------------
    def attend(self, call, proceed):
        if not self.active(call):
            return proceed()
        masked = [r for r in self.masked_rules(call) if r.active(call)]
        if masked:
            if call.kind == "self":
                return self.with_regions(call, masked[0], proceed)
            return proceed()       # joint / cross: the masked rule's hard masks apply (module doc)
        chunks = call.forward.cond_or_uncond
        if self.cond_only and any(c != 0 for c in chunks):
            ref = proceed()
            if all(c != 0 for c in chunks):
                return ref
            out = ref.clone()
            per = call.q.shape[0] // len(chunks)
            for i, c in enumerate(chunks):
                if c == 0:
                    sl = slice(i * per, (i + 1) * per)
                    out[sl] = self.compute(call, sl, ref[sl]).to(out.dtype)
            return out
        base = proceed() if self.mode == "paper" and self.strength < 1.0 and call.kind != "cross" else None
        return self.compute(call, slice(None), base).to(call.q.dtype)

    def compute(self, call, sl: slice, base):
        q, k, v = call.q[sl], call.k[sl], call.v[sl]
        mask = call.mask
        if mask is not None and mask.shape[0] == call.q.shape[0] and mask.shape[0] > 1:
            mask = mask[sl]
        fwd = call.forward
        if call.kind == "cross":
            n_keys = k.shape[2] if call.skip_reshape else k.shape[1]
            labels = self.labels(fwd, self.regions, self.threshold)
            bm = self.memo(("bias", labels.shape, n_keys), lambda: ff.subject_bias(
                labels, self.subjects(n_keys), n_keys, self.mask_bias))
            if call.skip_reshape:
                return self.finish(call, ff.biased_cross_attention(q, k, v, bm, key_mask=mask))
            return ff.biased_cross_attention_bnc(q, k, v, call.heads, bm, key_mask=mask)
        frames, n = self.frames(call)
        svd = fwd.family.layout == "svd"
        if svd:   # spatial self-attention, batch = chunk * F + t: view each chunk as one video
            b, s, c = q.shape
            q, k, v = (x.reshape(b // frames, frames * s, c) for x in (q, k, v))
            base = None if base is None else base.reshape(b // frames, frames * s, -1)
        groups = None
        if call.kind == "joint" and self.biased:
            n_text = call.info["num_text"]
            labels = self.labels(fwd, self.regions, self.threshold)
            groups = self.memo(("groups", labels.shape, n_text), lambda: ff.label_groups(
                labels, self.subjects(n_text), n_text, self.mask_bias))
        mode = self.mode
        if call.skip_reshape:
            if base is not None and base.dim() == 3:   # the model's output came back as [B, L, H*D]
                base = base.reshape(q.shape[0], q.shape[2], q.shape[1], -1).transpose(1, 2)
            out = ff.first_frame_attention(q, k, v, frames, mode, self.strength, n_video=n, key_mask=mask,
                                           base=base, groups=groups)
            return self.finish(call, out)
        out = ff.first_frame_attention_bnc(q, k, v, call.heads, frames, mode, self.strength, n_video=n,
                                           key_mask=mask, base=base, groups=groups)
        if svd:
            out = out.reshape(b, s, -1)
        return out

    @staticmethod
    def finish(call, out):
        if call.kwargs.get("skip_output_reshape", False):
            return out
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)

    def with_regions(self, call, masked, proceed):
        """Self-attention where MaskedAttentionPatch is active too: both rules as one region plan."""
        fwd = call.forward
        frames, n = self.frames(call)
        svd = fwd.family.layout == "svd"
        labels = self.labels(fwd, masked.regions, masked.threshold, call)
        zero = torch.zeros_like(labels)
        own_mode = "paper" if self.mode == "paper" else ("own" if self.strength == 0 else "anchor")
        if self.mode == "full":
            own_mode = "all"
        plans = {
            "both": self.memo(("plan", id(masked), labels.shape, own_mode), lambda: ff.region_frame_plan(labels, frames, own_mode)),
            "ffs": self.memo(("plan", None, labels.shape, own_mode), lambda: ff.region_frame_plan(zero, frames, own_mode)),
            "masked": self.memo(("plan", id(masked), labels.shape, "own" if svd else "all"),
                                lambda: ff.region_frame_plan(labels, frames, "own" if svd else "all")),
        }
        chunks = fwd.cond_or_uncond
        per_chunk, which = [], []
        for c in chunks:
            on_f, on_m = not self.cond_only or c == 0, not masked.cond_only or c == 0
            key = "both" if on_f and on_m else "ffs" if on_f else "masked" if on_m else None
            per_chunk.append(plans[key] if key else None)
            which.append(on_f)
        q, k, v = call.q, call.k, call.v
        if svd:
            b, s, c = q.shape
            q, k, v = (x.reshape(b // frames, frames * s, c) for x in (q, k, v))
        batch = q.shape[0] if not call.skip_reshape else q.shape[0]
        per = batch // len(chunks)
        bplan = self.memo(("batch", own_mode, id(masked), tuple(chunks), per, labels.shape),
                          lambda: ra.batch_plan(per_chunk, [per] * len(chunks)))
        key_mask = call.mask
        if self.mode == "anchor" and self.strength not in (0.0, 1.0):
            # log(s) on the first frame's keys, chunks where this rule is on (frame-0 queries see only
            # frame-0 keys, where a constant bias cancels: the core's anchor rule exactly).
            S = n // frames
            kb = torch.zeros(batch, n, dtype=q.dtype, device=q.device)
            for i, on in enumerate(which):
                if on:
                    kb[i * per:(i + 1) * per, :S] = math.log(self.strength)
            if key_mask is not None:
                kb = kb + key_mask.reshape(key_mask.shape[0], -1).to(kb.dtype)
            key_mask = kb
        if call.skip_reshape:
            out = self.finish(call, ra.masked_attention(q, k, v, bplan, key_mask=key_mask))
        else:
            out = ra.masked_attention_bnc(q, k, v, call.heads, bplan, key_mask=key_mask)
        if svd:
            out = out.reshape(b, s, -1)
        if self.mode == "paper" and self.strength < 1.0:
            ref = proceed()
            s_ = float(self.strength)
            out = s_ * out + (1.0 - s_) * ref.to(out.dtype)
        return out.to(call.q.dtype)


def install_first(model, rule):
    """``attention_seam.install`` with this pack's first-frame rules moved to the front of the chain,
    so that FirstFrameShare and MaskedAttentionPatch compose the same in either node order."""
    m = attention_seam.install(model, rule)
    topts = m.model_options["transformer_options"]
    ctl = topts[attention_seam.SEAM_KEY]
    first = tuple(r for r in ctl.rules if getattr(r, "name", "") == RULE_NAME)
    rest = tuple(r for r in ctl.rules if getattr(r, "name", "") != RULE_NAME)
    ctl = type(ctl)(ctl.family, first + rest, ctl.inner)
    topts[attention_seam.SEAM_KEY] = ctl
    topts["optimized_attention_override"] = ctl
    return m


class FirstFrameShare(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("FirstFrameShare"),
            display_name="First Frame Share",
            category=CATEGORY,
            description=(
                "Keeps an object the same all through the video (dynamic mask guidance, training-free): every "
                "frame's self-attention also attends the first latent frame (anchor), or only the first frame "
                "(paper). Optional: bias each object's region towards its own words (mask-biased cross-attention). "
                "On joint 3-D attention the anchor mode is also faster: each frame attends 2 frames, not all. "
                "Composes with Masked Attention Patch in either order."),
            inputs=[
                io.Model.Input("model", tooltip="The video model to patch (the original is left unchanged)."),
                io.Combo.Input("mode", options=["anchor", "paper", "bias_only"], default="anchor",
                               tooltip="anchor: each frame attends its own frame and the first frame. paper: each "
                                       "frame attends the first frame only (the paper's Eq. 5). bias_only: no "
                                       "first-frame sharing, only the mask bias (needs regions, clip, prompt)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="anchor: weight of the first frame's keys (a log(strength) logit bias; 1 = "
                                       "plain, 0 = own frame only, >1 pulls to the first frame). paper: blend with "
                                       "the model's own attention (1 = paper, 0 = off; values above 1 act as 1)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="The rule starts at this fraction of the sampling steps."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="The rule ends at this fraction of the steps (the paper shares on every step)."),
                io.String.Input("blocks", default="all",
                                tooltip="Which transformer blocks: all; indices and ranges like 0-9, 20; or depth "
                                        "fractions like 50%-100%."),
                io.Boolean.Input("cond_only", default=False,
                                 tooltip="Apply only to the conditional pass (the unconditional one stays free)."),
                types.Regions.Input("regions", optional=True,
                                    tooltip="Optional, for the mask bias: per-object regions from Mask Sequence."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional, for the mask bias: the text encoder of your prompt (finds each "
                                      "object's words with the real tokenizer)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="For the mask bias: the positive prompt exactly as encoded; each object's "
                                        "subject phrase must appear in it."),
                io.Float.Input("mask_bias", default=1.0, min=-10.0, max=10.0, step=0.1,
                               tooltip="Logit bias added to an object's words for the tokens inside its region "
                                       "(training-free form of the paper's mask term). 0 = no bias. Used only "
                                       "with regions, clip and prompt."),
                io.Float.Input("coverage", default=0.5, min=0.01, max=1.0, step=0.01,
                               tooltip="A token belongs to an object when the object covers at least this share "
                                       "of its pixels (as in Masked Attention Patch)."),
            ],
            outputs=[io.Model.Output(tooltip="The patched model.")],
        )

    @classmethod
    def validate_inputs(cls, blocks, start_percent, end_percent):
        return schedule_problem(blocks, start_percent, end_percent) or True

    @classmethod
    def execute(cls, model, mode="anchor", strength=1.0, start_percent=0.0, end_percent=1.0, blocks="all",
                cond_only=False, regions=None, clip=None, prompt="", mask_bias=1.0, coverage=0.5) -> io.NodeOutput:
        family = model_families.family_of(model)
        subjects = None
        if regions is not None and mask_bias != 0.0 and family.layout != "svd":
            if clip is None or not prompt.strip():
                raise ValueError("clip / prompt: the mask bias finds each object's words with the text encoder; "
                                 "connect clip and paste the positive prompt, or set mask_bias to 0")
            found = find_subject_tokens(clip, prompt, list(regions.prompts), list(regions.ids), family.layout)
            subjects = found.positions
        if mode == "bias_only" and subjects is None:
            raise ValueError("mode: bias_only needs regions, clip and prompt (and mask_bias != 0); otherwise the "
                             "node would do nothing")
        rule = FirstFrameShareRule(mode="full" if mode == "bias_only" else mode, strength=float(strength),
                                   start=start_percent, end=end_percent, block_spec=blocks, cond_only=cond_only,
                                   regions=regions, subject_tokens=subjects, mask_bias=float(mask_bias),
                                   threshold=coverage)
        return io.NodeOutput(install_first(model, rule))


# --------------------------------------------------------------------------------------------
# Shared noise (a NOISE for SamplerCustomAdvanced)
# --------------------------------------------------------------------------------------------


class SharedFirstFrameNoise:
    """ComfyUI's NOISE protocol (``seed`` + ``generate_noise(input_latent)``), like
    Noise_RandomNoise: the same seeded Gaussian noise, then every later latent frame is mixed with
    the first frame's (core.first_frame.shared_noise)."""

    def __init__(self, seed: int, alpha: float, variance: str):
        self.seed, self.alpha, self.variance = seed, alpha, variance

    def generate_noise(self, input_latent):
        import comfy.sample

        latent = input_latent["samples"]
        noise = comfy.sample.prepare_noise(latent, self.seed, input_latent.get("batch_index"))
        if latent.ndim != 5:
            raise ValueError(f"noise: shared first-frame noise needs a video latent [B, C, T, H, W], got "
                             f"{tuple(latent.shape)}; use it with Wan / HunyuanVideo / LTX-Video latents")
        return ff.shared_noise(noise, self.alpha, self.variance, frame_dim=2)


class SharedNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("SharedNoise"),
            display_name="Shared First-Frame Noise",
            category=CATEGORY,
            description=(
                "A NOISE for SamplerCustomAdvanced: seeded Gaussian noise in which every latent frame after the "
                "first is mixed with the first frame's noise, eps_i = alpha * eps_1 + b * eps_i (dynamic mask "
                "guidance). Anchors colour and layout; too much alpha freezes motion."),
            inputs=[
                io.Int.Input("noise_seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the Gaussian noise (the same noise as Random Noise with this seed "
                                     "before mixing)."),
                io.Float.Input("alpha", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of the first frame's noise in every later frame (paper: 0.2)."),
                io.Combo.Input("variance", options=list(ff.NOISE_VARIANCE), default="preserve",
                               tooltip="preserve: b = sqrt(1 - alpha^2), every frame's noise stays unit variance "
                                       "(what the sigma schedule assumes). paper: b = 1 - alpha as in the paper "
                                       "(variance 0.68 at alpha 0.2: later frames start less noisy)."),
            ],
            outputs=[io.Noise.Output(tooltip="Noise for SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, noise_seed, alpha=0.2, variance="preserve") -> io.NodeOutput:
        return io.NodeOutput(SharedFirstFrameNoise(noise_seed, alpha, variance))
