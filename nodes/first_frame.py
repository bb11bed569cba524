"""FirstFrameShare (dynamic mask guidance: first-frame K/V sharing + mask-biased cross-attention)
and the shared-noise NOISE source, through the shared attention seam.

The mathematics is in ``core/first_frame.py``. This file decides *when* (steps, blocks,
cond/uncond), which frames the model's tokens form, and how the rule meets MaskedAttentionPatch.

Composition with MaskedAttentionPatch, either order, by the seam's explicit rule (attention_seam
rule 4): the masked rule exposes its region partition of a call; where this rule composes it, it
computes the intersection and the masked rule sits the call out. Self-attention (Wan, LTX-Video,
SVD), every mode: a token attends tokens of its own region that this rule allows -- add_first:
its region in *every* frame (PEEKABOO's cross-frame rule) with frame 0's keys biased; anchor: its
region in frame 0 and its own frame; paper: in frame 0. Joint attention (HunyuanVideo): add_first
composes the same way (the masked rule's joint plan + the bias); anchor / paper and the mask bias
on cross-attention leave the call to the masked rule's hard masks. The masked rule's mask
normalisation (EFDM) is applied to the intersection, onto this rule's output alone.
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
from . import attention_seam, checks, model_families, types
from .checks import parse_blocks, schedule_problem
from .common import CATEGORY, node_id
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

    def mode_for(self, call) -> str:
        """add_first on a UNet's spatial layers (SVD: own frame only, temporal layers kept) is the
        paper's setting exactly: frame 0 appended ``strength`` times = anchor (core module doc)."""
        if self.mode == "add_first" and call.forward.family.layout == "svd":
            return "anchor"
        return self.mode

    # --- the attention ---------------------------------------------------------------------------
    def composes(self, call) -> bool:
        """attention_seam rule 4: this rule computes itself inside one region partition on self-
        attention (all modes) and on joint attention (add_first: the region rule's own joint plan
        plus the frame-0 bias). Elsewhere the region rule's hard masks apply alone."""
        if len(call.constraints) != 1 or not self.active(call):
            return False
        return call.kind == "self" or (call.kind == "joint" and self.mode == "add_first")

    def attend(self, call, proceed):
        if not self.active(call):
            return proceed()
        if call.constraints:
            if self.composes(call):
                return self.with_regions(call, call.constraints[0], proceed)
            return proceed()       # joint / cross: the region rule's hard masks apply (module doc)
        return self.alone(call, proceed)

    def alone(self, call, proceed):
        """This rule on its own (no region constraint), honouring cond_only."""
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
        base = proceed() if self.mode_for(call) == "paper" and self.strength < 1.0 and call.kind != "cross" else None
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
        mode = self.mode_for(call)
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

    def with_regions(self, call, part, proceed):
        """Both rules on one call (``part``: the region rule's Partition): their intersection, then
        the region rule's mask normalisation, if it has one, onto this rule's output alone (the
        attention the region mask restricts: what the region rule would have been handed)."""
        if self.mode_for(call) == "add_first":
            out = self.add_first_regions(call, part)
        else:
            out = self.frame_plan_regions(call, part)
        if part.normalise:
            ref = self.alone(call, proceed).to(out.dtype)
            norm = getattr(part.rule, "normalise", None)    # the region rule's own EFDM (its scope)
            out = norm(call, out, ref) if callable(norm) else ra.efdm(out, ref, dim=-2)
        return out.to(call.q.dtype)

    def on_chunks(self, call) -> list:
        return [not self.cond_only or c == 0 for c in call.forward.cond_or_uncond]

    def add_first_regions(self, call, part):
        """The region rule's own plan (PEEKABOO: a token sees its region in every frame; joint text
        keys as that rule says) plus log(1 + s) on frame 0's keys for the later frames' queries."""
        frames, n = self.frames(call)
        S = n // frames
        q, k, v = call.q, call.k, call.v
        L = q.shape[2] if call.skip_reshape else q.shape[1]
        chunks = call.forward.cond_or_uncond
        per = q.shape[0] // len(chunks)
        split = self.memo(("split", id(part.plan), L, S, n), lambda: ff.first_frame_split(part.plan, L, S, n))
        bsplit = tuple((rows, self.memo(("bsplit", id(p), part.on, per), lambda p=p: ra.batch_plan(
            [p if on else None for on in part.on], [per] * len(chunks)))) for rows, p in split)
        fb = ff.first_frame_bias(self.strength)
        bias = [fb if on else 0.0 for on in self.on_chunks(call) for _ in range(per)]
        out = ff.add_first_attention(q, k, v, bsplit, bias, S, heads=None if call.skip_reshape else call.heads,
                                     key_mask=call.mask)
        return self.finish(call, out) if call.skip_reshape else out

    def frame_plan_regions(self, call, part):
        """anchor / paper / bias-only (and add_first on SVD) inside the regions: one group plan."""
        fwd = call.forward
        frames, n = self.frames(call)
        svd = fwd.family.layout == "svd"
        mode = self.mode_for(call)
        labels = part.labels
        zero = torch.zeros_like(labels)
        own_mode = "paper" if mode == "paper" else ("own" if self.strength == 0 else "anchor")
        if mode == "full":
            own_mode = "all"
        key = id(part.plan)
        plans = {
            "both": self.memo(("plan", key, labels.shape, own_mode), lambda: ff.region_frame_plan(labels, frames, own_mode)),
            "ffs": self.memo(("plan", None, labels.shape, own_mode), lambda: ff.region_frame_plan(zero, frames, own_mode)),
            "masked": self.memo(("plan", key, labels.shape, "own" if svd else "all"),
                                lambda: ff.region_frame_plan(labels, frames, "own" if svd else "all")),
        }
        chunks = fwd.cond_or_uncond
        on_fs = self.on_chunks(call)
        per_chunk = []
        for on_f, on_m in zip(on_fs, part.on):
            k_ = "both" if on_f and on_m else "ffs" if on_f else "masked" if on_m else None
            per_chunk.append(plans[k_] if k_ else None)
        q, k, v = call.q, call.k, call.v
        if svd:
            b, s, c = q.shape
            q, k, v = (x.reshape(b // frames, frames * s, c) for x in (q, k, v))
        batch = q.shape[0]
        per = batch // len(chunks)
        bplan = self.memo(("batch", own_mode, key, tuple(chunks), tuple(on_fs), part.on, per, labels.shape),
                          lambda: ra.batch_plan(per_chunk, [per] * len(chunks)))
        key_mask = call.mask
        if mode == "anchor" and self.strength not in (0.0, 1.0):
            # log(s) on the first frame's keys, chunks where this rule is on (frame-0 queries see only
            # frame-0 keys, where a constant bias cancels: the core's anchor rule exactly).
            S = n // frames
            kb = torch.zeros(batch, n, dtype=q.dtype, device=q.device)
            for i, on in enumerate(on_fs):
                if on:
                    kb[i * per:(i + 1) * per, :S] = math.log(self.strength)
            if key_mask is not None:
                kb = kb + key_mask.reshape(key_mask.shape[0], -1).to(kb.dtype)
            key_mask = kb

        def run(plan):
            if call.skip_reshape:
                return self.finish(call, ra.masked_attention(q, k, v, plan, key_mask=key_mask))
            return ra.masked_attention_bnc(q, k, v, call.heads, plan, key_mask=key_mask)

        out = run(bplan)
        if mode == "paper" and self.strength < 1.0:
            # blend with the region rule's own output (what the model runs under it), not plain attention
            mplan = self.memo(("mbatch", key, part.on, per, labels.shape), lambda: ra.batch_plan(
                [plans["masked"] if on else None for on in part.on], [per] * len(chunks)))
            key_mask = call.mask
            s_ = float(self.strength)
            out = s_ * out + (1.0 - s_) * run(mplan).to(out.dtype)
        if svd:
            out = out.reshape(b, s, -1)
        return out


NODE_MODES = ("add_first", "anchor", "paper", "bias_only")


class FirstFrameShare(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("FirstFrameShare"),
            display_name="First Frame Share",
            category=CATEGORY,
            description=(
                "Keeps an object the same all through the video (dynamic mask guidance, training-free): every "
                "frame's self-attention also attends the first latent frame -- on top of full attention "
                "(add_first, the paper's appended K/V), with its own frame only (anchor), or only the first frame "
                "(paper). Optional: bias each object's region towards its own words (mask-biased cross-attention). "
                "On joint 3-D attention the anchor mode is also faster: each frame attends 2 frames, not all. "
                "Composes with Masked Attention Patch in either order."),
            inputs=[
                io.Model.Input("model", tooltip="The video model to patch (the original is left unchanged)."),
                io.Combo.Input("mode", options=list(NODE_MODES), default="add_first",
                               tooltip="add_first: full attention, and each later frame's queries weigh the first "
                                       "frame's keys 1 + strength times (the paper's appended K1/V1; attention "
                                       "between frames kept). anchor: each frame attends only its own frame and the "
                                       "first (faster; cuts attention between the other frames). paper: only the "
                                       "first frame (Eq. 5 alone). bias_only: no sharing, only the mask bias."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="add_first: how many more times frame 0's K/V count (log(1 + strength) "
                                       "logit bias; 1 = the paper, 0 = plain attention). anchor: weight of the "
                                       "first frame's keys (log(strength); 1 = plain, 0 = own frame only). paper: "
                                       "blend with the model's own attention (1 = paper, 0 = off)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="The rule starts at this point of the denoising schedule, in ComfyUI's percent "
                                       "(the same noise level in one sampler or in split samplers)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="The rule ends at this percent of the schedule (the paper shares on every step)."),
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
    def validate_inputs(cls, blocks, start_percent, end_percent, strength=None, mode=None, mask_bias=None,
                        coverage=None):
        return checks.validate(cls, locals(), lambda: schedule_problem(blocks, start_percent, end_percent))

    @classmethod
    def execute(cls, model, mode="add_first", strength=1.0, start_percent=0.0, end_percent=1.0, blocks="all",
                cond_only=False, regions=None, clip=None, prompt="", mask_bias=1.0, coverage=0.5) -> io.NodeOutput:
        family = model_families.family_of(model)
        checks.at_run(cls, locals(), lambda: schedule_problem(blocks, start_percent, end_percent),
                      lambda: checks.blocks_problem_for(blocks, family.total_blocks))
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
        return io.NodeOutput(attention_seam.install(model, rule))


# --------------------------------------------------------------------------------------------
# Shared noise (a NOISE for SamplerCustomAdvanced)
# --------------------------------------------------------------------------------------------


SHARED_TERMS = ("encoded_first_frame", "first_frame_noise")


def encoded_first_frame(model, latent=None, image=None, vae=None) -> Optional[torch.Tensor]:
    """E(v_1) in the sampler's space: frame 0 of a LATENT (VAE Encode's output), or ``image``'s first
    frame encoded with ``vae``; then ``latent_format.process_in`` -- the sampler adds noise to the
    processed latent, so Eq. 8's sum must be in that space too. None when neither is given."""
    if latent is None and image is None:
        return None
    if latent is not None and image is not None:
        raise ValueError("first_frame / image: connect one of them (the encoded first frame, or the image and vae)")
    if model is None:
        raise ValueError("model: connect the model you sample with: the first frame's latent is scaled the way "
                         "the sampler scales latents (its latent format) before it is mixed into the noise")
    if image is not None:
        if vae is None:
            raise ValueError("vae: an image as the first frame needs the VAE to encode it (or connect a LATENT "
                             "from VAE Encode to first_frame instead)")
        x = vae.encode(image[:1, :, :, :3])
    else:
        x = latent["samples"]
    if x.ndim == 4:             # an image latent [B, C, H, W]: one frame
        x = x.unsqueeze(2)
    if x.ndim != 5:
        raise ValueError(f"first_frame: needs a video model's latent [B, C, T, H, W], got {tuple(x.shape)}")
    return model.model.latent_format.process_in(x[:, :, :1].float())


class SharedFirstFrameNoise:
    """ComfyUI's NOISE protocol (``seed`` + ``generate_noise(input_latent)``), like
    Noise_RandomNoise: the same seeded Gaussian noise, then every later latent frame is mixed with
    ``first`` (E(v_1), Eq. 8) or, when None, frame 0's noise (core.first_frame.shared_noise)."""

    def __init__(self, seed: int, alpha: float, variance: str, first: Optional[torch.Tensor] = None):
        self.seed, self.alpha, self.variance, self.first = seed, alpha, variance, first

    def generate_noise(self, input_latent):
        import comfy.sample

        latent = input_latent["samples"]
        noise = comfy.sample.prepare_noise(latent, self.seed, input_latent.get("batch_index"))
        if latent.ndim != 5:
            raise ValueError(f"noise: shared first-frame noise needs a video latent [B, C, T, H, W], got "
                             f"{tuple(latent.shape)}; use it with Wan / HunyuanVideo / LTX-Video latents")
        return ff.shared_noise(noise, self.alpha, self.variance, frame_dim=2, first=self.first)


class SharedNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("SharedNoise"),
            display_name="Shared First-Frame Noise",
            category=CATEGORY,
            description=(
                "A NOISE for SamplerCustomAdvanced: seeded Gaussian noise in which every latent frame after the "
                "first is mixed with the ENCODED FIRST FRAME, eps_i = alpha * E(v1) + b * eps_i (dynamic mask "
                "guidance, Eq. 8). Make the first frame with any image workflow and VAE Encode it. Anchors "
                "colour and layout; too much alpha freezes motion."),
            inputs=[
                io.Int.Input("noise_seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the Gaussian noise (the same noise as Random Noise with this seed "
                                     "before mixing)."),
                io.Float.Input("alpha", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of the first frame in every later frame's noise (paper: 0.2)."),
                io.Combo.Input("variance", options=list(ff.NOISE_VARIANCE), default="preserve",
                               tooltip="preserve: b chosen so every frame's noise keeps unit variance (what the "
                                       "sigma schedule assumes): sqrt(1 - alpha^2 x the first frame's mean square). "
                                       "paper: b = 1 - alpha as written in the paper."),
                io.Combo.Input("shared", options=list(SHARED_TERMS), default="encoded_first_frame",
                               tooltip="encoded_first_frame: the paper's Eq. 8, needs first_frame (or image + vae) "
                                       "and model. first_frame_noise: mixes frame 0's NOISE instead (an older form, "
                                       "not the paper's; needs no first frame)."),
                io.Latent.Input("first_frame", optional=True,
                                tooltip="The encoded first frame (VAE Encode of your first image, at the video's "
                                        "size). Its first latent frame is used."),
                io.Image.Input("image", optional=True,
                               tooltip="Instead of first_frame: the first frame as an image, encoded here with vae."),
                io.Vae.Input("vae", optional=True, tooltip="Encodes image (only with image)."),
                io.Model.Input("model", optional=True,
                               tooltip="The model you sample with: the first frame's latent is scaled as the "
                                       "sampler scales latents (its latent format). Needed with a first frame."),
            ],
            outputs=[io.Noise.Output(tooltip="Noise for SamplerCustomAdvanced.")],
        )

    @classmethod
    def validate_inputs(cls, noise_seed=None, alpha=None, variance=None, shared=None):
        return checks.validate(cls, locals())

    @classmethod
    def execute(cls, noise_seed, alpha=0.2, variance="preserve", shared="encoded_first_frame", first_frame=None,
                image=None, vae=None, model=None) -> io.NodeOutput:
        checks.at_run(cls, {"alpha": alpha, "variance": variance, "shared": shared})
        if shared == "first_frame_noise":
            if first_frame is not None or image is not None:
                raise ValueError("shared: first_frame_noise ignores the connected first frame; set shared to "
                                 "encoded_first_frame (Eq. 8) or disconnect the first frame")
            return io.NodeOutput(SharedFirstFrameNoise(noise_seed, alpha, variance))
        first = encoded_first_frame(model, first_frame, image, vae)
        if first is None:
            raise ValueError("first_frame: shared = encoded_first_frame (the paper's Eq. 8) needs the encoded first "
                             "frame: connect first_frame (VAE Encode of your first image) or image + vae, and "
                             "model; or set shared to first_frame_noise (frame 0's noise, not Eq. 8)")
        return io.NodeOutput(SharedFirstFrameNoise(noise_seed, alpha, variance, first))
