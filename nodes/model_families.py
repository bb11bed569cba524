"""What the seam needs to know about each supported model family, and nothing more: its token
layout (``core.token_layout``), how many transformer blocks it has, and how to tell from an
attention call's shapes what kind of attention it is and in which block.

Facts (measured on the real ComfyUI 0.3.75 classes, see tests/test_tiny_models.py):
* Wan 2.1 / 2.2, LTX-Video: q/k/v [B, N, heads*d]; each block makes the same attention calls in
  the same order: self-attention, then the text cross-attention (Wan 2.1 i2v / FLF: self, image
  cross-attention, text cross-attention). Calls are classified by that position, never by key
  length: the text length may equal the video token count (Wan's 512 text tokens). ComfyUI
  0.3.75 puts no block index in ``transformer_options`` for them, so the calls are counted per
  model call; newer ComfyUI sets ``block_index`` for Wan, which is used when present.
* HunyuanVideo: [B, heads, L, d] (skip_reshape); double and single blocks attend jointly over
  video and text tokens and set block_type / block_index; the text refiner's calls before them set
  neither and are left alone. The order is the model's: [video, text] where its double blocks have
  ``flipped_img_txt`` set (ComfyUI 0.3.75), else [text, video] (newer ComfyUI, which also puts
  ``img_slice`` = [video start, end] in the single blocks' transformer_options). The seam hands
  rules the [video, text] order either way.
* SVD (UNet with temporal layers): spatial attention [B*F, h*w, C], temporal [B*h*w, F, C];
  ``activations_shape`` gives the level's h, w. Cross-attention sees one CLIP image token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from ..core import token_layout

if TYPE_CHECKING:  # pragma: no cover
    from .attention_seam import AttentionCall, ForwardCall


class UnsupportedModel(ValueError):
    pass


@dataclass(frozen=True)
class Family:
    name: str             # user-facing
    layout: str           # core.token_layout layout name
    total_blocks: int

    def video_tokens(self, fwd: "ForwardCall") -> int:
        return math.prod(token_layout.token_grid(self.layout, fwd.latent_shape))

    def classify(self, q, k, v, heads, args, kwargs, fwd, topts) -> Optional["AttentionCall"]:
        raise NotImplementedError


def _call(kind, block, q, k, v, heads, args, kwargs, fwd, **info):
    from .attention_seam import AttentionCall

    return AttentionCall(kind, block, q, k, v, heads, args, kwargs, fwd, info)


@dataclass(frozen=True)
class SequenceDiT(Family):
    """Wan 2.1/2.2 and LTX-Video: separate self- and cross-attention per block."""

    block_calls: tuple = ("self", "cross")   # the kinds of one block's attention calls, in call order

    def classify(self, q, k, v, heads, args, kwargs, fwd, topts):
        per = len(self.block_calls)
        block = topts.get("block_index")
        if isinstance(block, int):
            pos = fwd.count(("call", block))
        else:
            i = fwd.count("call")
            block, pos = i // per, i % per
        n = self.video_tokens(fwd)
        if q.shape[1] != n or pos >= per:
            return None
        kind = self.block_calls[pos]
        # The position decides; a key length that contradicts it means an attention call this
        # module does not know about (another pack's, a newer model): leave it alone.
        want = n if kind == "self" else fwd.text_len if kind == "cross" else None
        if want is not None and k.shape[1] != want:
            return _call("other", block, q, k, v, heads, args, kwargs, fwd)
        return _call(kind, block, q, k, v, heads, args, kwargs, fwd)


@dataclass(frozen=True)
class JointDiT(Family):
    """HunyuanVideo: video and text in one attention in double and single blocks."""

    double_blocks: int = 0
    text_first: bool = False     # the model's joint sequence is [text, video]

    def classify(self, q, k, v, heads, args, kwargs, fwd, topts):
        block_type = topts.get("block_type")
        if block_type not in ("double", "single"):
            return None
        n = self.video_tokens(fwd)
        seq = q.shape[2] if kwargs.get("skip_reshape") else q.shape[1]
        if seq < n:
            return None
        block = int(topts.get("block_index", 0)) + (self.double_blocks if block_type == "single" else 0)
        text_first = self.text_first
        cut = topts.get("img_slice")
        if isinstance(cut, (list, tuple)) and len(cut) == 2 and cut[1] == seq:
            text_first = int(cut[0]) > 0   # the model says where its video starts
        return _call("joint", block, q, k, v, heads, args, kwargs, fwd, num_text=seq - n, text_first=text_first)


@dataclass(frozen=True)
class VideoUNet(Family):
    """SVD: spatial transformer blocks with a temporal transformer after each."""

    def classify(self, q, k, v, heads, args, kwargs, fwd, topts):
        shape = topts.get("activations_shape")
        if shape is None or len(shape) != 4:
            return None
        h, w = int(shape[-2]), int(shape[-1])
        s = h * w
        level = max(0, round(math.log2(max(1, fwd.latent_shape[-1] / w))))
        chunks = max(1, len(fwd.cond_or_uncond))
        frames = fwd.latent_shape[0] // chunks
        if q.shape[0] == fwd.latent_shape[0] and q.shape[1] == s:
            if k.shape[1] == s:
                return _call("self", fwd.count("self"), q, k, v, heads, args, kwargs, fwd, level=level, frames=frames)
            return None  # cross-attention to the single CLIP image token: nothing to mask
        if q.shape[0] == chunks * s and q.shape[1] == frames and k.shape[1] == frames:
            block = fwd.counters.get("self", 1) - 1
            return _call("temporal", block, q, k, v, heads, args, kwargs, fwd, level=level, frames=frames)
        return None


def wan_block_calls(dm) -> tuple:
    """The attention calls of one Wan block, in order (comfy/ldm/wan/model.py: WanAttentionBlock runs
    self_attn, then cross_attn; WanI2VCrossAttention attends the image tokens before the text)."""
    from comfy.ldm.wan.model import WanI2VCrossAttention

    if isinstance(dm.blocks[0].cross_attn, WanI2VCrossAttention):
        return ("self", "other", "cross")
    return ("self", "cross")


def joint_text_first(dm) -> bool:
    """Whether a HunyuanVideo diffusion model attends over [text, video]: its double blocks say so.
    ComfyUI 0.3.75's carry ``flipped_img_txt=True`` ([video, text], single blocks likewise); newer
    ones dropped the attribute and always put the text first."""
    blocks = getattr(dm, "double_blocks", None) or []
    return not (len(blocks) and bool(getattr(blocks[0], "flipped_img_txt", False)))


def blocks_of(dm) -> list:
    """The transformer blocks of a diffusion model in execution (and block index) order; [] if unknown."""
    for names in (("blocks",), ("transformer_blocks",), ("double_blocks", "single_blocks")):
        if all(hasattr(dm, n) for n in names):
            return [b for n in names for b in getattr(dm, n)]
    return []


def family_of(patcher) -> Family:
    """The family of a ModelPatcher's model; UnsupportedModel names what is supported."""
    import comfy.model_base as mb

    model = patcher.model
    dm = model.diffusion_model
    name = type(model).__name__
    if isinstance(model, mb.WAN21):
        calls = wan_block_calls(dm)
        if isinstance(model, mb.WAN22) or getattr(model.latent_format, "latent_channels", 16) == 48:
            return SequenceDiT("Wan 2.2 TI2V-5B", "wan22_ti2v", len(dm.blocks), block_calls=calls)
        return SequenceDiT("Wan 2.1", "wan21", len(dm.blocks), block_calls=calls)
    if isinstance(model, mb.LTXV):
        return SequenceDiT("LTX-Video", "ltxv", len(dm.transformer_blocks))
    if isinstance(model, mb.HunyuanVideo):
        nd, ns = len(dm.double_blocks), len(dm.single_blocks)
        return JointDiT("HunyuanVideo", "hunyuan_video", nd + ns, double_blocks=nd, text_first=joint_text_first(dm))
    if isinstance(model, mb.SVD_img2vid):
        from comfy.ldm.modules.attention import SpatialVideoTransformer

        n = sum(isinstance(m, SpatialVideoTransformer) for m in dm.modules())
        return VideoUNet("Stable Video Diffusion", "svd", n)
    raise UnsupportedModel(
        f"model: {name} is not a supported video model; Box Director's attention patches support "
        "Wan 2.1 / 2.2, HunyuanVideo, LTX-Video and Stable Video Diffusion")
