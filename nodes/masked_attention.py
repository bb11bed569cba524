"""MaskedAttentionPatch: PEEKABOO's masked attention (and the domain-adaptation paper's mask
normalisation) on Wan, HunyuanVideo, LTX-Video and SVD, through the shared attention seam.

The mathematics is in ``core/region_attention.py``; the token labels in ``core/token_layout.py``.
This file decides *when* (steps, blocks, cond/uncond) and builds each plan once per latent shape.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

import torch
from comfy_api.latest import io

from ..core import region_attention as ra
from ..core import token_layout
from ..core.regions import Regions as RegionSet
from . import attention_seam, checks, model_families, types
from .common import CATEGORY, node_id
from .subject_tokens import find_subject_tokens

KINDS = ("self", "cross", "temporal")
# Mask normalisation: restore the spread of the channels masking narrowed (the paper's premise, and
# nothing more); EFDM always (the paper's form); EFDM within each region; EFDM on the narrowed channels.
NORM_MODES = ("restore_variance", "always", "per_region", "variance_drop")
SPECIAL_MODES = ("background", "shared")


@dataclass(eq=False)
class MaskedAttention:
    """The rule installed on the seam. Immutable configuration; the plan cache only memoises pure
    functions of (latent shape, key length)."""

    regions: RegionSet
    subject_tokens: Optional[tuple]          # per object key positions, None: no cross-attention masking
    special_tokens: tuple = ()
    kinds: frozenset = frozenset({"self", "cross", "temporal"})
    start: float = 0.0
    end: float = 0.1
    block_spec: str = "all"
    cond_only: bool = False
    union_rule: bool = False
    mask_norm: bool = False
    norm_mode: str = "restore_variance"      # NORM_MODES
    threshold: float = 0.5
    name: str = "masked_attention"
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __deepcopy__(self, memo):
        return self

    # --- when ------------------------------------------------------------------------------
    def active(self, call: attention_seam.AttentionCall) -> bool:
        kind = call.kind
        if kind == "joint":
            wanted = bool({"self", "cross"} & self.kinds)
        else:
            wanted = kind in self.kinds
        if not wanted:
            return False
        frac = call.forward.step_fraction
        if frac is None or not (self.start <= frac < self.end or (self.end >= 1.0 and frac >= self.start)):
            return False
        if call.block is not None:
            blocks = self.memo(("blocks", call.forward.family.total_blocks),
                               lambda: checks.parse_blocks(self.block_spec, call.forward.family.total_blocks))
            if call.block not in blocks:
                return False
        return True

    def partition(self, call: attention_seam.AttentionCall):
        """This rule's restriction of ``call`` for a rule that composes with it (attention_seam, rule 4),
        or None when it does not apply to the call."""
        if call.kind not in ("self", "joint", "cross") or not self.active(call):
            return None
        fwd = call.forward
        if fwd.family.layout == "svd":
            if call.kind != "self":
                return None
            shape = (call.info["frames"],) + tuple(fwd.latent_shape[1:])
            labels = self.memo(("svd-labels", shape, call.info["level"]), lambda: token_layout.svd_spatial_labels(
                self.regions.masks, shape, level=call.info["level"], threshold=self.threshold).reshape(-1))
        else:
            labels = self.video_labels(fwd)
        on = tuple(not self.cond_only or c == 0 for c in fwd.cond_or_uncond)
        return attention_seam.Partition(self, labels, self.object_plan(call), on, self.mask_norm)

    # --- plans, built once per latent shape ---------------------------------------------------
    def memo(self, key, build):
        return attention_seam.memo(self._cache, self._lock, key, build)

    def video_labels(self, fwd) -> torch.Tensor:
        shape = (1,) + tuple(fwd.latent_shape[1:])
        return self.memo(("labels", shape), lambda: token_layout.token_labels(
            self.regions.masks, fwd.family.layout, shape, threshold=self.threshold))

    def object_plan(self, call):
        fwd = call.forward
        if call.kind == "self" and fwd.family.layout == "svd":
            level, frames = call.info["level"], call.info["frames"]
            shape = (frames,) + tuple(fwd.latent_shape[1:])
            return self.memo(("svd-self", shape, level), lambda: ra.self_attention_plan(
                token_layout.svd_spatial_labels(self.regions.masks, shape, level=level, threshold=self.threshold)))
        if call.kind == "temporal":
            level, frames = call.info["level"], call.info["frames"]
            shape = (frames,) + tuple(fwd.latent_shape[1:])
            return self.memo(("svd-temporal", shape, level), lambda: ra.temporal_attention_plan(
                token_layout.svd_temporal_labels(self.regions.masks, shape, level=level,
                                                 threshold=self.threshold).transpose(0, 1)))
        labels = self.video_labels(fwd)
        rule = "union" if self.union_rule else "per_object"
        if call.kind == "self":
            return self.memo(("self", labels.shape), lambda: ra.self_attention_plan(labels))
        if call.kind == "cross":
            n_keys = call.k.shape[1]
            return self.memo(("cross", labels.shape, n_keys), lambda: ra.cross_attention_plan(
                labels, self.subjects(n_keys), n_keys, always_visible=self.shared(n_keys), rule=rule))
        if call.kind == "joint":
            n_text = call.info["num_text"]
            if "cross" in self.kinds and self.subject_tokens is not None:
                subj, always = self.subjects(n_text), self.shared(n_text)
            else:  # self only: image regions partitioned, every text token global
                subj, always = [[] for _ in range(len(self.regions))], range(n_text)
            return self.memo(("joint", labels.shape, n_text, "cross" in self.kinds), lambda: ra.joint_attention_plan(
                labels, subj, n_text, always_visible=always, rule=rule))
        raise AssertionError(call.kind)

    def subjects(self, n_keys: int) -> list:
        if self.subject_tokens is None:
            raise ValueError("cross-attention masking needs the objects' subject tokens (clip and prompt)")
        too_far = [i for pos in self.subject_tokens for i in pos if i >= n_keys]
        if too_far:
            raise ValueError(f"prompt: subject tokens at positions {too_far[:4]} but the model sees only {n_keys} "
                             "text tokens; connect the prompt and clip that encode this conditioning")
        return [list(p) for p in self.subject_tokens]

    def shared(self, n_keys: int) -> list:
        return [i for i in self.special_tokens if i < n_keys]

    def batch(self, call, plan):
        """One plan for the batch: masked chunks get ``plan``, others (uncond, if cond only) none."""
        fwd = call.forward
        chunks = fwd.cond_or_uncond
        per_chunk = call.q.shape[0] // max(1, len(chunks))
        # Same plan and chunk layout on every call of a sampling run: build the batch plan once.
        return self.memo(("batch", id(plan), tuple(chunks), per_chunk), lambda: ra.batch_plan(
            [plan if (not self.cond_only or c == 0) else None for c in chunks], [per_chunk] * len(chunks)))

    # --- the attention ---------------------------------------------------------------------------
    def attend(self, call, proceed):
        if not self.active(call):
            return proceed()
        plan = self.object_plan(call)
        if call.kind == "temporal":
            out = self.temporal(call, plan, proceed)
        else:
            bplan = self.batch(call, plan)
            key_mask = call.mask
            if call.skip_reshape:
                out = ra.masked_attention(call.q, call.k, call.v, bplan, key_mask=key_mask)
                if not call.kwargs.get("skip_output_reshape", False):
                    b, h, n, d = out.shape
                    out = out.transpose(1, 2).reshape(b, n, h * d)
            else:
                out = ra.masked_attention_bnc(call.q, call.k, call.v, call.heads, bplan, key_mask=key_mask)
        if self.mask_norm:
            # EFDM onto the unmasked output's distribution (domain-adaptation paper), masked steps only.
            ref = proceed()
            out = self.normalise(call, out, ref)
        return out.to(call.q.dtype)

    def normalise(self, call, out, ref):
        """Mask normalisation (domain-adaptation paper) of the masked output towards the unmasked one,
        per channel over tokens ([B, N, C] and [B, H, N, D] alike). ``restore_variance``: scale back up
        the channels whose spread masking lowered, the covariate shift the paper corrects, keeping the
        masked distribution's shape. EFDM (the paper's form) replaces the values outright; where masking
        raises the spread (the toy Wan model, ``bench.mask_norm``) that shrinks the object's own signal."""
        if self.norm_mode == "restore_variance":
            return ra.restore_spread(out, ref, dim=-2)
        if self.norm_mode == "variance_drop":
            matched = ra.efdm(out, ref, dim=-2)
            dropped = out.float().std(dim=-2, keepdim=True) < ref.float().std(dim=-2, keepdim=True)
            return torch.where(dropped, matched, out)
        if self.norm_mode != "per_region" or call.kind == "temporal":
            return ra.efdm(out, ref, dim=-2)
        fwd = call.forward
        if fwd.family.layout == "svd":   # frames are the batch: one video per chunk
            frames = call.info["frames"]
            shape = (frames,) + tuple(fwd.latent_shape[1:])
            labels = self.memo(("svd-flat", shape, call.info["level"]), lambda: token_layout.svd_spatial_labels(
                self.regions.masks, shape, level=call.info["level"], threshold=self.threshold).reshape(-1))
            b, s, c = out.shape
            merged = ra.efdm_by_region(out.reshape(b // frames, frames * s, c),
                                       ref.reshape(b // frames, frames * s, c), labels)
            return merged.reshape(b, s, c)
        return ra.efdm_by_region(out, ref, self.video_labels(fwd))

    def temporal(self, call, plan, proceed):
        chunks = call.forward.cond_or_uncond
        if not self.cond_only or all(c == 0 for c in chunks):
            return ra.temporal_attention_bnc(call.q, call.k, call.v, call.heads, plan)
        # Cond-only on a mixed batch: the temporal batch is (chunk, location); mask the cond chunks.
        out = proceed().clone()
        per = call.q.shape[0] // len(chunks)
        for i, c in enumerate(chunks):
            if c == 0:
                sl = slice(i * per, (i + 1) * per)
                out[sl] = ra.temporal_attention_bnc(call.q[sl], call.k[sl], call.v[sl], call.heads, plan)
        return out


class MaskedAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("MaskedAttentionPatch"),
            display_name="Masked Attention Patch",
            category=CATEGORY,
            description=(
                "Puts each object where its boxes say, training-free (PEEKABOO, ported to video DiTs): during "
                "the first part of sampling, each object's tokens attend only inside its own region and to its "
                "own words; background attends background. No N x N masks: attention runs per region, so "
                "masked steps cost no more than plain ones. Supports Wan 2.1/2.2, HunyuanVideo, LTX-Video and SVD."),
            inputs=[
                io.Model.Input("model", tooltip="The video model to patch (the original is left unchanged)."),
                types.Regions.Input("regions", tooltip="Per-object regions from Mask Sequence."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder of your prompt: finds each object's words with the real "
                                      "tokenizer. Needed for cross-attention masking."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The positive prompt, exactly as encoded; every object's subject phrase must "
                                        "appear in it. Needed for cross-attention masking."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Masking starts at this point of the denoising schedule, in ComfyUI's percent (as "
                                       "model_sampling.percent_to_sigma maps it: the same noise level in one sampler "
                                       "or in split KSamplerAdvanced runs)."),
                io.Float.Input("end_percent", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Masking ends at this percent of the schedule (PEEKABOO masks the first few "
                                       "steps: more = firmer placement, less = more freedom). Default 0.3: best "
                                       "of 0.05-0.3 on the toy-world benchmark."),
                io.Boolean.Input("self_attention", default=True,
                                 tooltip="Mask self-attention (and, on DiTs, its temporal part): tokens see only "
                                         "their own region."),
                io.Boolean.Input("cross_attention", default=True,
                                 tooltip="Mask cross-attention: each region sees only its own subject words; "
                                         "background sees the rest. Needs clip and prompt."),
                io.Boolean.Input("temporal_attention", default=True,
                                 tooltip="Mask the separate temporal layers of UNet video models (SVD)."),
                io.String.Input("blocks", default="all",
                                tooltip="Which transformer blocks to mask: all; indices and ranges like 0-9, 20; "
                                        "or depth fractions like 50%-100% (the later half)."),
                io.Boolean.Input("cond_only", default=False,
                                 tooltip="Mask only the conditional pass (the unconditional one stays free). "
                                         "PEEKABOO masks both."),
                io.Combo.Input("word_binding", options=["per_object", "union"], default="per_object",
                               tooltip="per_object: each region sees only its own object's words. union: any object "
                                       "region sees every object's words (PEEKABOO as published)."),
                io.Combo.Input("special_tokens", options=list(SPECIAL_MODES), default="background",
                               tooltip="background: start/end tokens belong to the background, like every other "
                                       "non-subject token (PEEKABOO). shared: every region also sees them."),
                io.Boolean.Input("mask_normalization", default=False,
                                 tooltip="Match the masked attention output's distribution to the unmasked one "
                                         "(domain-adaptation paper). Costs one unmasked attention per masked "
                                         "call. Off by default: on the toy Wan model masking raises the "
                                         "output's spread, so there is little to correct."),
                io.Float.Input("coverage", default=0.5, min=0.01, max=1.0, step=0.01,
                               tooltip="A token belongs to an object when the object covers at least this share "
                                       "of the token's pixels (every visible object keeps one token per frame)."),
                io.Combo.Input("normalization_mode", options=list(NORM_MODES), default="restore_variance",
                               optional=True,
                               tooltip="With mask_normalization: restore_variance scales up the channels whose spread "
                                       "masking lowered (the shift the paper corrects) and keeps the rest; always "
                                       "is the paper's EFDM on every channel; per_region is EFDM within each "
                                       "region's tokens; variance_drop is EFDM on the narrowed channels only."),
            ],
            outputs=[io.Model.Output(tooltip="The patched model.")],
        )

    @classmethod
    def validate_inputs(cls, blocks, start_percent, end_percent, normalization_mode=None, coverage=None,
                        word_binding=None, special_tokens=None):
        return checks.validate(cls, locals(), lambda: checks.schedule_problem(blocks, start_percent, end_percent))

    @classmethod
    def execute(cls, model, regions, prompt="", start_percent=0.0, end_percent=0.3, self_attention=True,
                cross_attention=True, temporal_attention=True, blocks="all", cond_only=False,
                word_binding="per_object", special_tokens="background", mask_normalization=False, coverage=0.5,
                clip=None, normalization_mode="restore_variance") -> io.NodeOutput:
        family = model_families.family_of(model)
        checks.at_run(cls, locals(), lambda: checks.schedule_problem(blocks, start_percent, end_percent),
                      lambda: checks.blocks_problem_for(blocks, family.total_blocks))
        kinds = {k for k, on in zip(KINDS, (self_attention, cross_attention, temporal_attention)) if on}
        subjects, special = None, ()
        needs_words = cross_attention and family.layout != "svd"
        if needs_words:
            if clip is None or not prompt.strip():
                raise ValueError("clip / prompt: cross-attention masking finds each object's words with the text "
                                 "encoder; connect clip and paste the positive prompt, or turn cross_attention off")
            found = find_subject_tokens(clip, prompt, list(regions.prompts), list(regions.ids), family.layout)
            subjects = found.positions
            special = found.special if special_tokens == "shared" else ()
        else:
            kinds.discard("cross")
        rule = MaskedAttention(regions=regions, subject_tokens=subjects, special_tokens=special,
                               kinds=frozenset(kinds), start=start_percent, end=end_percent, block_spec=blocks,
                               cond_only=cond_only, union_rule=word_binding == "union",
                               mask_norm=mask_normalization, norm_mode=normalization_mode, threshold=coverage)
        return io.NodeOutput(attention_seam.install(model, rule))
