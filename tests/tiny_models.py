"""Tiny models of the *real* ComfyUI video architectures, loaded through ComfyUI's own loader.

Each family is built from the genuine ComfyUI module class (``WanModel``, ``HunyuanVideo``,
``LTXVModel``, the SVD ``UNetModel``) with the smallest config that ComfyUI 0.3.75's architecture
detection (``comfy.model_detection.detect_unet_config`` + ``supported_models.*.matches``) still
maps to the intended model, filled with deterministic random weights, saved as safetensors in
the key layout of the real released checkpoints, and then loaded back with
``comfy.sd.load_diffusion_model(path)`` -- exactly what the UNETLoader node does. So the tests
run the same detection, the same ``model_base`` class (``extra_conds``, ``concat_cond``, model
sampling) and the same sampler code as a real workflow; only the widths are tiny.

Kept free of pytest (like ``harness``) so benchmarks and demos can use the same fixtures:

    tm = build_tiny_model("wan21_i2v", Path("/tmp/tiny"))
    positive, negative = tm.conditioning()
    latent = sample(tm, steps=2, seed=0)

Why the configs are what they are (all read from ComfyUI 0.3.75):

* Wan (2.1 and 2.2): detection sets ``num_heads = dim // 128`` (head_dim is always 128), so
  ``dim`` must be a multiple of 128. We use dim=256, i.e. 2 heads, so that attention patches
  see a real multi-head layout (a 1-head model hides head-mixing bugs).
  ``model_type`` is "i2v" iff ``img_emb.proj.0.bias`` exists; ``WAN21_I2V`` additionally
  requires ``in_dim == 36`` (16 noise + 4 mask + 16 image latent); ``WAN22_T2V`` (the TI2V-5B
  class, ``model_base.WAN22``) is picked by ``out_dim == 48`` (head.head rows // 4).
* HunyuanVideo: detection also fixes ``num_heads = hidden_size // 128`` and
  ``axes_dim = [16, 56, 56]`` (sums to head_dim 128); ``vector_in`` present => ``vec_in_dim
  768`` (which keeps ``HunyuanImage21`` from matching); ``guidance_in`` present =>
  ``guidance_embed`` (as in the released CFG-distilled T2V model). hidden=256, 2 heads.
* LTX-Video: detection reads ``attention_head_dim = attn2.to_k.rows // 32`` and leaves
  ``num_attention_heads`` at its default 32, so inner_dim = 32 * head_dim; the caption
  projection maps T5's 4096 to inner_dim and that is fed to attn2, so ``cross_attention_dim``
  must equal inner_dim. head_dim=4 -> inner_dim=128, 32 heads.
* SVD: in 0.3.75 there is no separate VideoUNet module (no diffusionmodules/video_model.py);
  SVD is ``openaimodel.UNetModel`` with ``use_temporal_resblock``/``use_temporal_attention``,
  which swap in VideoResBlock and SpatialVideoTransformer (a ``time_stack`` of temporal
  attention blocks). ``supported_models.SVD_img2vid`` matches only ``model_channels=320``, ``in_channels=8``,
  ``context_dim=1024``, ``adm_in_channels=768``, linear transformers, temporal layers, and
  ``transformer_depth == [1, 1, 1, 1, 1, 1, 0, 0]`` (8 input res blocks, the first 6 with a
  transformer). Everything else is free, so we use ONE resolution level holding all 8 res
  blocks (channel_mult=[1], num_res_blocks=[8]), no middle block (transformer_depth_middle=-2)
  and no transformers in the 9 output blocks. Still ~114 M parameters -- 320 channels and the
  1024-wide context are forced -- stored in fp16 like the released svd.safetensors (~230 MB);
  ComfyUI casts to fp32 on the CPU.

Key layouts: Wan and HunyuanVideo are saved with bare diffusion-model keys (as the Comfy-Org
repackaged ``diffusion_models/*.safetensors``), HunyuanVideo in the original Tencent names
(``img_attn_qkv``, ``mlp.fc1``, ...) that ``supported_models.HunyuanVideo.
process_unet_state_dict`` renames; LTX-Video and SVD carry the ``model.diffusion_model.``
prefix of their all-in-one release checkpoints, which ``load_diffusion_model`` strips.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import harness

FAMILIES = ("wan21_t2v", "wan21_i2v", "wan22_ti2v_5b", "hunyuan_video", "ltxv", "svd")

# Bump when a config or the init changes: the cached file name and its metadata carry it.
FORMAT_VERSION = 1

# Text tokens in the tiny conditioning. Positive and negative share the length so ComfyUI can
# run cond and uncond as one batch (Wan/Hunyuan/LTXV use CONDRegular for the context, which
# only batches equal shapes).
TEXT_TOKENS = 8
CLIP_VISION_TOKENS = 257  # ViT-H/14 at 224 px: 256 patches + class token (Wan i2v image tokens)
CLIP_VISION_WIDTH = 1280  # ViT-H hidden size: WanModel.img_emb = MLPProj(1280, dim)


@dataclass
class TinyModel:
    """A tiny real model loaded through ComfyUI, plus what a test needs to drive it.

    ``latent_shape`` is the shape of an EmptyLatent for a small test video in ComfyUI's own layout:
    [B, C, T, H, W] for the DiTs, [F, C, H, W] for SVD (frames are the batch). H != W on
    purpose, so that code confusing the two axes of a token grid fails.
    ``patch_size`` is (t, h, w) latent cells per token; ``token_grid`` = latent (T, H, W) //
    patch_size, the grid the DiT's patch embedding flattens row-major as (t, h, w).
    ``pixel_frames`` is the video length the latent stands for: (T - 1) * temporal_compression + 1
    for the causal video VAEs; SVD's frames are pixel frames (temporal_compression 1).
    The patcher is shared by whoever holds this object: clone it before patching.
    """

    family: str
    path: Path
    patcher: Any  # comfy.model_patcher.ModelPatcher from comfy.sd.load_diffusion_model
    model_class: type  # the comfy.model_base class detection must produce
    config: dict  # the architecture config the file was built with (== detection's)
    param_count: int
    latent_channels: int
    latent_shape: tuple
    pixel_frames: int  # video frames the latent's T (SVD: F) corresponds to
    spatial_compression: int  # pixels per latent cell (VAE)
    temporal_compression: int  # pixel frames per latent frame after the first (VAE)
    patch_size: tuple  # (t, h, w)
    default_cfg: float
    default_scheduler: str
    build_seconds: float  # 0.0 when the cached file was reused
    load_seconds: float
    _conditioning: Callable = field(repr=False, default=None)

    @property
    def token_grid(self) -> tuple:
        """(t, h, w) tokens. SVD has no tokens: (frames, H, W) -- its spatial attention runs per
        frame over H*W cells (row-major), its temporal attention per cell over the frames."""
        if self.family == "svd":
            f, _, h, w = self.latent_shape
            return (f, h, w)
        t, h, w = self.latent_shape[-3:]
        pt, ph, pw = self.patch_size
        return (t // pt, h // ph, w // pw)

    @property
    def pixel_size(self) -> tuple:
        """(height, width) in pixels of the video the latent stands for."""
        return (self.latent_shape[-2] * self.spatial_compression, self.latent_shape[-1] * self.spatial_compression)

    def empty_latent(self) -> dict:
        """A LATENT dict like the Empty*Latent nodes give (zeros of ``latent_shape``)."""
        return {"samples": torch.zeros(self.latent_shape)}

    def conditioning(self, batch: int = 1):
        """(positive, negative) CONDITIONING lists ``[[tensor, {extras}]]`` shaped like the real
        text encoders / conditioning nodes of this family produce. Deterministic."""
        return self._conditioning(self, batch)


# ----------------------------------------------------------------------------------------
# Deterministic init
# ----------------------------------------------------------------------------------------

def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _init_state_dict(sd: dict, seed: int, dtype=torch.float32) -> dict:
    """Fill every tensor with seeded random values, key by key in sorted order (so the values do
    not depend on module construction order). comfy.ops.disable_weight_init leaves parameters
    uninitialised, so everything must be set here.

    Matrices/convs: N(0, 1/fan_in) -- keeps activations O(1) through the few layers. 1-D
    ``weight``/``scale`` (LayerNorm, GroupNorm, RMSNorm, QKNorm): 1 + small noise. Biases and
    other vectors: small noise. Nothing is zero: real checkpoints zero-init some heads, but a
    zero head would make the output independent of the input, which would let tests pass
    without the model having run."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(sd):
        shape = sd[k].shape
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        elif k.endswith(".weight") or k.endswith(".scale"):
            t = 1.0 + 0.05 * torch.randn(shape, generator=gen)
        elif k.endswith(".bias"):
            t = 0.02 * torch.randn(shape, generator=gen)
        else:  # e.g. SVD's time_mixer.mix_factor (a learned scalar logit)
            t = 0.5 * torch.randn(shape, generator=gen)
        out[k] = t.to(dtype).contiguous()
    return out


# ----------------------------------------------------------------------------------------
# Family definitions
# ----------------------------------------------------------------------------------------

@dataclass
class _Spec:
    family: str
    model_class_name: str  # in comfy.model_base
    config: dict
    make_module: Callable[[dict], torch.nn.Module]
    latent_channels: int
    latent_shape: tuple
    pixel_frames: int
    spatial_compression: int
    temporal_compression: int
    patch_size: tuple
    default_cfg: float
    default_scheduler: str
    conditioning: Callable
    save_prefix: str = ""  # key prefix of the released checkpoint
    save_dtype: torch.dtype = torch.float32
    to_release_keys: Callable[[str], str] | None = None  # comfy module name -> released key name


def _ops():
    import comfy.ops

    return comfy.ops.disable_weight_init


def _wan_config(model_type: str, in_dim: int, out_dim: int) -> dict:
    # Exactly the keys and values comfy.model_detection produces for a Wan state dict
    # (patch_size, freq_dim, window_size, qk_norm, cross_attn_norm, eps are hard-coded there).
    dim = 256
    return {
        "image_model": "wan2.1",
        "model_type": model_type,
        "dim": dim,
        "out_dim": out_dim,
        "num_heads": dim // 128,  # detection: dim // 128
        "ffn_dim": 512,
        "num_layers": 2,
        "patch_size": (1, 2, 2),
        "freq_dim": 256,
        "window_size": (-1, -1),
        "qk_norm": True,
        "cross_attn_norm": True,
        "eps": 1e-6,
        "in_dim": in_dim,
    }


def _make_wan(cfg):
    from comfy.ldm.wan.model import WanModel

    return WanModel(**cfg, operations=_ops())


def _make_hunyuan(cfg):
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    return HunyuanVideo(**cfg, operations=_ops())


def _make_ltxv(cfg):
    from comfy.ldm.lightricks.model import LTXVModel

    return LTXVModel(**cfg, operations=_ops())


def _make_svd(cfg):
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    # supported_models.SVD_img2vid.unet_extra_config, added by the loader after detection.
    extra = {"num_heads": -1, "num_head_channels": 64, "attn_precision": torch.float32}
    return UNetModel(**cfg, **extra, operations=_ops())


# HunyuanVideo: ComfyUI module names -> names in the released (Tencent) checkpoint. The inverse of
# supported_models.HunyuanVideo.process_unet_state_dict; checked by a round trip at build time.
# Order matters: the mlp rule must run before the in_layer -> mlp.0 rules.
_HUNYUAN_TO_RELEASE = [
    (r"(_mlp|\.mlp)\.0\.", r"\1.fc1."),
    (r"(_mlp|\.mlp)\.2\.", r"\1.fc2."),
    (r"^(time_in|guidance_in|txt_in\.t_embedder)\.in_layer\.", r"\1.mlp.0."),
    (r"^(time_in|guidance_in|txt_in\.t_embedder)\.out_layer\.", r"\1.mlp.2."),
    (r"^txt_in\.c_embedder\.in_layer\.", "txt_in.c_embedder.linear_1."),
    (r"^txt_in\.c_embedder\.out_layer\.", "txt_in.c_embedder.linear_2."),
    (r"_mod\.lin\.", "_mod.linear."),
    (r"\.modulation\.lin\.", ".modulation.linear."),
    (r"_attn\.qkv\.", "_attn_qkv."),
    (r"_attn\.proj\.", "_attn_proj."),
    (r"_attn\.norm\.query_norm\.scale$", "_attn_q_norm.weight"),
    (r"_attn\.norm\.key_norm\.scale$", "_attn_k_norm.weight"),
    (r"\.norm\.query_norm\.scale$", ".q_norm.weight"),
    (r"\.norm\.key_norm\.scale$", ".k_norm.weight"),
]


def _hunyuan_release_key(k: str) -> str:
    for pat, rep in _HUNYUAN_TO_RELEASE:
        k = re.sub(pat, rep, k)
    return k


# --- conditioning ------------------------------------------------------------------------

def _gen(tm: TinyModel, salt: str) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(tm.family + "/cond/" + salt))


def _text(tm, batch, salt, width=4096):
    # Text-encoder hidden states: umT5-XXL (Wan), LLaVA-Llama3 (HunyuanVideo), T5-XXL (LTXV) are
    # all 4096 wide.
    return torch.randn((batch, TEXT_TOKENS, width), generator=_gen(tm, salt))


def _cond_text_only(tm, batch):
    return [[_text(tm, batch, "pos"), {}]], [[_text(tm, batch, "neg"), {}]]


def _cond_wan_i2v(tm, batch):
    """What WanImageToVideo gives: concat_latent_image = VAE latent of [start image, grey frames]
    ([B,16,T,H,W], raw VAE space: WAN21.concat_cond applies process_latent_in), concat_mask
    [1,1,T,H,W] that is 0 on the first latent frame (kept) and 1 elsewhere, and the CLIP-vision
    output whose penultimate_hidden_states [B,257,1280] WAN21.extra_conds turns into clip_fea
    -> img_emb -> 257 image tokens in every cross-attention. Both sides get the same image."""
    import comfy.clip_vision

    g = _gen(tm, "image")
    _, c, t, h, w = tm.latent_shape
    concat = torch.randn((batch, c, t, h, w), generator=g)
    mask = torch.ones((1, 1, t, h, w))
    mask[:, :, :1] = 0.0
    cv = comfy.clip_vision.Output()
    cv["penultimate_hidden_states"] = torch.randn((batch, CLIP_VISION_TOKENS, CLIP_VISION_WIDTH), generator=g)
    cv["last_hidden_state"] = torch.randn((batch, CLIP_VISION_TOKENS, CLIP_VISION_WIDTH), generator=g)
    cv["image_embeds"] = torch.randn((batch, 1024), generator=g)
    cv["mm_projected"] = None
    extras = lambda: {"concat_latent_image": concat, "concat_mask": mask, "clip_vision_output": cv}  # noqa: E731
    return [[_text(tm, batch, "pos"), extras()]], [[_text(tm, batch, "neg"), extras()]]


def _cond_hunyuan(tm, batch):
    """TextEncodeHunyuanVideo output: LLM hidden states [B,L,4096] + CLIP-L pooled [B,768]
    (model_base.HunyuanVideo.encode_adm reads ``pooled_output``; it is required). ``guidance`` is
    what FluxGuidance sets (extra_conds defaults it to 6.0 anyway); the released T2V model is
    guidance-distilled and run at cfg 1."""
    g = _gen(tm, "pooled")
    pos = [[_text(tm, batch, "pos"), {"pooled_output": torch.randn((batch, 768), generator=g), "guidance": 6.0}]]
    neg = [[_text(tm, batch, "neg"), {"pooled_output": torch.randn((batch, 768), generator=g), "guidance": 6.0}]]
    return pos, neg


LTXV_PAD_TOKENS = 2  # trailing padding tokens masked out in the LTXV text conditioning


def _cond_ltxv(tm, batch):
    """T5 text [B,L,4096], its ``attention_mask`` [B,L] (int64, 1 = real token, 0 = padding) and
    ``frame_rate`` as LTXVConditioning sets it (model_base.LTXV reads it for the RoPE time axis).

    The mask is not optional: LTXV's T5 encoder (text_encoders/genmo.T5XXLModel) always returns it
    (its tokenizer pads to >= 128 tokens) and ``LTXVModel.forward`` takes ``attention_mask`` as a
    required positional argument -- conditioning without it raises a TypeError. The model turns
    it into an additive mask for the text cross-attention. We pad the last LTXV_PAD_TOKENS."""
    mask = torch.ones((batch, TEXT_TOKENS), dtype=torch.long)
    mask[:, TEXT_TOKENS - LTXV_PAD_TOKENS:] = 0
    return ([[_text(tm, batch, "pos"), {"attention_mask": mask, "frame_rate": 25.0}]],
            [[_text(tm, batch, "neg"), {"attention_mask": mask.clone(), "frame_rate": 25.0}]])


def _cond_svd(tm, batch):
    """What SVD_img2vid_Conditioning gives: context = CLIP-vision image_embeds as [B,1,1024]
    (one token), extras motion_bucket_id / fps / augmentation_level (-> ``y`` via encode_adm) and
    ``concat_latent_image`` [B,4,H,W] (raw VAE latent; SVD_img2vid.extra_conds does NOT scale it).
    The negative is all zeros, as in that node. The sampled batch is the frames; ComfyUI repeats
    these B rows over it."""
    g = _gen(tm, "image")
    h, w = tm.latent_shape[-2:]
    pooled = torch.randn((batch, 1, 1024), generator=g)
    image = torch.randn((batch, 4, h, w), generator=g)
    common = {"motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}
    pos = [[pooled, dict(common, concat_latent_image=image)]]
    neg = [[torch.zeros_like(pooled), dict(common, concat_latent_image=torch.zeros_like(image))]]
    return pos, neg


def _specs() -> dict:
    T, H, W = 3, 8, 12  # latent frames / height / width used by every DiT family
    wan_frames = (T - 1) * 4 + 1  # Wan 2.1/2.2 and Hunyuan VAEs: 4x temporal, first frame alone
    hunyuan_cfg = {
        # Exactly what detection produces for the saved state dict (theta, mlp_ratio, qkv_bias,
        # axes_dim are hard-coded there).
        "image_model": "hunyuan_video",
        "in_channels": 16,
        "patch_size": [1, 2, 2],
        "out_channels": 16,
        "vec_in_dim": 768,
        "axes_dim": [16, 56, 56],
        "meanflow": False,
        "context_in_dim": 4096,
        "hidden_size": 256,
        "mlp_ratio": 4.0,
        "num_heads": 2,  # detection: hidden_size // 128
        "depth": 1,
        "depth_single_blocks": 1,
        "theta": 256,
        "qkv_bias": True,
        "byt5": False,
        "guidance_embed": True,
        "use_cond_type_embedding": False,
        "vision_in_dim": None,
    }
    ltxv_cfg = {
        "image_model": "ltxv",
        "num_layers": 2,
        "attention_head_dim": 4,  # detection: attn2.to_k rows // 32
        "cross_attention_dim": 128,  # must equal 32 * attention_head_dim (see module docstring)
    }
    svd_cfg = {
        # What detect_unet_config returns for the saved UNet (keys in its order).
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "num_classes": "sequential", "adm_in_channels": 768,
        "in_channels": 8, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": [8], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [0] * 9, "channel_mult": [1], "transformer_depth_middle": -2,
        "use_linear_in_transformer": True, "context_dim": 1024,
        "extra_ff_mix_layer": True, "use_spatial_context": True, "merge_strategy": "learned_with_images",
        "merge_factor": 0.0, "video_kernel_size": [3, 1, 1], "use_temporal_resblock": True,
        "use_temporal_attention": True, "disable_temporal_crossattention": False,
    }
    from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

    if "meanflow_sum" in HunyuanVideoParams.__dataclass_fields__:   # newer ComfyUI detects it too
        hunyuan_cfg["meanflow_sum"] = False
    return {
        "wan21_t2v": _Spec(
            "wan21_t2v", "WAN21", _wan_config("t2v", 16, 16), _make_wan, 16, (1, 16, T, H, W), wan_frames,
            8, 4, (1, 2, 2), 6.0, "simple", _cond_text_only),
        "wan21_i2v": _Spec(
            "wan21_i2v", "WAN21", _wan_config("i2v", 36, 16), _make_wan, 16, (1, 16, T, H, W), wan_frames,
            8, 4, (1, 2, 2), 6.0, "simple", _cond_wan_i2v),
        "wan22_ti2v_5b": _Spec(
            "wan22_ti2v_5b", "WAN22", _wan_config("t2v", 48, 48), _make_wan, 48, (1, 48, T, H, W), wan_frames,
            16, 4, (1, 2, 2), 5.0, "simple", _cond_text_only),
        "hunyuan_video": _Spec(
            "hunyuan_video", "HunyuanVideo", hunyuan_cfg, _make_hunyuan, 16, (1, 16, T, H, W), wan_frames,
            8, 4, (1, 2, 2), 1.0, "simple", _cond_hunyuan, to_release_keys=_hunyuan_release_key),
        "ltxv": _Spec(
            "ltxv", "LTXV", ltxv_cfg, _make_ltxv, 128, (1, 128, T, H, W), (T - 1) * 8 + 1,
            32, 8, (1, 1, 1), 3.0, "simple", _cond_ltxv, save_prefix="model.diffusion_model."),
        "svd": _Spec(
            # SVD's forced widths cost ~0.1 GFLOP per latent cell per frame (x2 for cfg), ~20x a
            # tiny DiT, so its test video is smaller: 2 frames of 6x8 latent cells (48x64 px).
            "svd", "SVD_img2vid", svd_cfg, _make_svd, 4, (2, 4, 6, 8), 2,
            8, 1, (1, 1, 1), 2.5, "karras", _cond_svd, save_prefix="model.diffusion_model.",
            save_dtype=torch.float16),
    }


_SPECS = None


def spec(family: str) -> _Spec:
    global _SPECS
    if _SPECS is None:
        _SPECS = _specs()
    if family not in _SPECS:
        raise KeyError(f"unknown family {family!r}; known: {FAMILIES}")
    return _SPECS[family]


# ----------------------------------------------------------------------------------------
# Build / load
# ----------------------------------------------------------------------------------------

def _fingerprint(s: _Spec) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, "family": s.family, "config": s.config,
                       "prefix": s.save_prefix, "dtype": str(s.save_dtype)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_is_current(path: Path, fingerprint: str) -> bool:
    if not path.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        return False
    # Not "config": LTXV detection merges a JSON "config" metadata entry into its dit config.
    return meta.get("boxdirector_tiny") == fingerprint


def _write(s: _Spec, path: Path, fingerprint: str) -> int:
    import safetensors.torch

    module = s.make_module(s.config)
    sd = _init_state_dict(module.state_dict(), _seed(s.family), dtype=s.save_dtype)
    keys = {k: (s.to_release_keys(k) if s.to_release_keys else k) for k in sd}
    if s.to_release_keys:
        import comfy.supported_models

        back = comfy.supported_models.HunyuanVideo.process_unet_state_dict(None, {v: None for v in keys.values()})
        if set(back) != set(sd):
            raise AssertionError(f"{s.family}: release-key mapping does not round-trip: "
                                 f"{sorted(set(back) ^ set(sd))[:8]}")
    out = {s.save_prefix + keys[k]: v for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    safetensors.torch.save_file(out, str(tmp), metadata={"boxdirector_tiny": fingerprint, "family": s.family})
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return sum(v.numel() for v in sd.values())


def _norm(v):
    if isinstance(v, tuple):
        return [_norm(x) for x in v]
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def _check_loaded(s: _Spec, patcher, path: Path) -> int:
    """Fail loudly unless the loader produced the intended class, detected our exact config and
    filled every weight from the file (load_state_dict is non-strict in ComfyUI: a missing key only
    logs a warning and leaves that weight uninitialised)."""
    import comfy.model_base
    import comfy.utils

    model = patcher.model
    want = getattr(comfy.model_base, s.model_class_name)
    if type(model) is not want:
        raise AssertionError(f"{s.family}: detected {type(model).__name__}, wanted {want.__name__}")
    detected = model.model_config.unet_config
    diff = {k: (detected.get(k), v) for k, v in s.config.items() if _norm(detected.get(k)) != _norm(v)}
    if diff:
        raise AssertionError(f"{s.family}: detection config differs (detected, built): {diff}")
    file_sd = comfy.utils.load_torch_file(str(path))
    file_sd = {k[len(s.save_prefix):]: v for k, v in file_sd.items()}
    file_sd = model.model_config.process_unet_state_dict(file_sd)
    loaded = model.diffusion_model.state_dict()
    if set(loaded) != set(file_sd):
        raise AssertionError(f"{s.family}: loaded keys differ from file: {sorted(set(loaded) ^ set(file_sd))[:8]}")
    for k, v in file_sd.items():
        if not torch.equal(loaded[k].to(v.dtype), v):
            raise AssertionError(f"{s.family}: weight {k} was not loaded from the file")
    return sum(v.numel() for v in file_sd.values())


def build_tiny_model(family: str, directory: Path) -> TinyModel:
    """Build (or reuse) ``directory/tiny-<family>-v<N>.safetensors`` and load it with
    ``comfy.sd.load_diffusion_model``. The file is rebuilt only when missing or built from another
    config; the model is always loaded afresh through ComfyUI's loader."""
    harness.import_comfy()
    import comfy.sd

    s = spec(family)
    path = Path(directory) / f"tiny-{family}-v{FORMAT_VERSION}.safetensors"
    fp = _fingerprint(s)
    build_seconds = 0.0
    if not _file_is_current(path, fp):
        t0 = time.perf_counter()
        _write(s, path, fp)
        build_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    patcher = comfy.sd.load_diffusion_model(str(path))
    load_seconds = time.perf_counter() - t0
    params = _check_loaded(s, patcher, path)
    import comfy.model_base

    return TinyModel(
        family=family, path=path, patcher=patcher,
        model_class=getattr(comfy.model_base, s.model_class_name), config=dict(s.config),
        param_count=params, latent_channels=s.latent_channels, latent_shape=tuple(s.latent_shape),
        pixel_frames=s.pixel_frames, spatial_compression=s.spatial_compression,
        temporal_compression=s.temporal_compression, patch_size=tuple(s.patch_size),
        default_cfg=s.default_cfg, default_scheduler=s.default_scheduler,
        build_seconds=build_seconds, load_seconds=load_seconds, _conditioning=s.conditioning,
    )


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------

def sample(model: TinyModel, steps: int = 2, seed: int = 0, cfg: float | None = None, sampler: str = "euler",
           scheduler: str | None = None, *, patcher=None, positive=None, negative=None, latent: dict | None = None,
           denoise: float = 1.0) -> torch.Tensor:
    """Run ComfyUI's own ``nodes.common_ksampler`` (the KSampler node's function) on a zero latent
    of ``model.latent_shape`` and return the sampled latent.

    ``patcher`` overrides ``model.patcher`` (e.g. a clone carrying wrappers or an
    ``optimized_attention_override``); ``positive``/``negative`` override the family's default
    conditioning; ``cfg``/``scheduler`` default to the family's usual values
    (``model.default_cfg`` / ``model.default_scheduler``)."""
    nodes = harness.import_comfy()
    if positive is None or negative is None:
        pos, neg = model.conditioning()
        positive = pos if positive is None else positive
        negative = neg if negative is None else negative
    (out,) = nodes.common_ksampler(
        patcher if patcher is not None else model.patcher, seed, steps,
        model.default_cfg if cfg is None else cfg, sampler,
        model.default_scheduler if scheduler is None else scheduler,
        positive, negative, latent if latent is not None else model.empty_latent(), denoise=denoise)
    return out["samples"]
