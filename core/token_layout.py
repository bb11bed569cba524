"""Token labels: which object each attention token of a video model belongs to, in the model's order.

The masked-attention patch partitions a model's attention by region (token i attends to token j iff
both carry the same label), so this module answers one question exactly: given per-object pixel
masks ``[K, F, H, W]`` (0..1) and a latent shape, what is the label of every token the model puts
into its attention, in the model's own sequence order? Label 0 is background, label ``k + 1`` is
object ``k``. Everything here is computed once per sampling run, is linear in the number of tokens
N, and never builds anything of size N x N.

Families (``LAYOUTS``). Compression factors are ComfyUI 0.3.75's (its Empty*Latent nodes and the
VAE ratios in comfy/sd.py); token order, padding, text placement, the SVD layouts and Wan's
temporal chunking are proven against ComfyUI's own model code in
``tests/test_token_order_real_models.py``.

- ``wan21``: time 4x (first frame alone), space 8x, patch 1x2x2, circular padding to the patch;
  self-attention holds the video tokens only (text comes in by cross-attention).
- ``wan22_ti2v`` (Wan 2.2 TI2V-5B, 48-channel latent): as wan21 but space 16x.
- ``hunyuan_video``: time 4x (first alone), space 8x, patch 1x2x2, circular padding (but its
  unpatchify needs even latent sizes, which ComfyUI's latents always have); joint attention:
  video tokens, then text tokens.
- ``hunyuan_video15``: time 4x (first alone), space 16x (32-channel latent), patch 1x1x1; joint.
- ``ltxv``: time 8x (first alone), space 32x, patch 1x1x1 (no padding); text by cross-attention.
- ``svd`` (UNet): no temporal compression (frames are batch items), space 8x; tokens per
  resolution level, see "SVD" below.

Wan 2.2 A14B (t2v/i2v) uses the Wan 2.1 VAE and patch, so it is family ``wan21``; only the
TI2V-5B model has the 16x, 48-channel VAE (``wan22_ti2v``).

Token order (DiTs): the patch embedding's output ``[B, C, T', H', W']`` is flattened row-major, so
token ``i = (t * H' + y) * W' + x`` over the token grid ``(T', H', W')`` -- Wan
(``patch_embedding(x).flatten(2).transpose(1, 2)``), HunyuanVideo (``PatchEmbed``: same), LTX-Video
(``SymmetricPatchifier``: ``"b c (f p1) (h p2) (w p3) -> b (f h w) (c p1 p2 p3)"``).
``token_labels`` returns labels in exactly this order.

Rules
-----
Temporal footprint. Latent frame 0 holds pixel frame 0 alone; latent frame ``t >= 1`` aggregates
pixel frames ``c*(t-1)+1 .. c*t`` (c = temporal compression; 4 for Wan/Hunyuan, 8 for LTXV, as the
VAEs encode chunks of 1, c, c, ...). SVD has no temporal compression: pixel frame = latent frame =
one batch item. Pixel frames past the last complete chunk are dropped, as the VAEs drop them. If the
masks' frame count does not give the latent's frame count at all, the masks are stretched over time
(nearest frame) to the frames the latent represents. This is the pack's one rule for a trajectory
made for another length or aspect than the video: resample it, and say so (``resampling_note``, one
log line per pair of shapes), never refuse it and never do it silently.

Spatial footprint. The masks are brought to the latent grid ``(H, W)`` by area averaging: with
masks of exactly ``latent * spatial_compression`` pixels each latent pixel takes the exact mean over
its ``s x s`` pixels. Masks whose size floors to the latent size (a 830-wide video for a 103-wide
latent at 8x) are first centre-cropped to ``latent * s`` like ComfyUI's VAE encode crops the
pixels; masks of any other size are assumed to show the same field of view and are stretched
(area resampling) onto the latent grid.

Coverage. A token's footprint is its patch of latent pixels (DiT) -- or, for the UNet at level l,
its ``2^l x 2^l`` latent pixels (nearest upsampling maps it back there) -- over the pixel frames its
latent frame aggregates. Its coverage of object k is the mean of mask k over the *real* part of
that footprint. Padding does not count: Wan and HunyuanVideo pad the latent circularly to a multiple
of the patch (``pad_to_patch_size``) and crop the output back, so an edge token's output only ever
lands on its real pixels and it should follow what is there; a padded pixel is neither object nor
background. (A token made only of padding cannot exist, as padding < patch; were it to, it would
be background.) The UNet's odd-sized levels (``ceil(H / 2)`` after a stride-2 conv) are treated the
same way.

Membership. A token qualifies for object k when its coverage >= ``threshold`` (default 0.5).

Overlap. A token that qualifies for several objects goes to the object with the smallest area in
that token frame (sum of its token coverages: its mask area there, in tokens); equal areas go to the
lower object index. A small object in front of a larger one is the common case, and a larger object
losing a few tokens to it still has most of its own.

At least one token. Every object visible in a token frame (coverage > 0 somewhere) keeps at least
one token there, so that tiny boxes still steer: if it won none, it takes its best-covered token
among those that are background or whose owner keeps other tokens (ties: the first in model order).
Objects are rescued smallest first. An object whose every touched token is some other object's
last token stays without one (it is fully occluded at this resolution).

SVD (``UNetModel`` with ``use_temporal_attention``: ``SpatialVideoTransformer`` blocks). The latent is
``[F, 4, H, W]``: the batch is the frames; the sampler concatenates cond/uncond chunks, so the
model's batch index is ``chunk * F + frame``. At resolution level l (0 = latent size; each
downsample is ``ceil(/2)``) the spatial attention sees ``[chunk * F + t, (y, x) row-major, C]``
(``svd_spatial_labels`` -> ``[F, h*w]``, row t) and the temporal layers (``time_stack``) see
``[chunk * S + s, t, C]`` with ``S = h*w`` (``svd_temporal_labels`` -> ``[S, F]``, row s).

Text and other non-video tokens. Joint-attention models (HunyuanVideo 1.0/1.5) concatenate video
and text tokens in the double blocks and keep that order in the single blocks: ``[video, text]`` in
ComfyUI 0.3.75 (``flipped_img_txt=True``), ``[text, video]`` in newer ComfyUI (``text_first``). The text length is the full conditioning length the model receives, padding
included (padding is masked by an additive key mask, not removed; batching cond/uncond of different
lengths even repeats a shorter context to a common multiple), so text = everything after the video
tokens: ``token_segments`` gives the slices. Reference-image tokens prepended to the video
(HunyuanVideo ``ref_latent``, Wan ``reference_latent``) are a prefix; frames appended to the latent
(LTXV keyframe guides, Wan ``time_dim_concat``) are extra tokens after the video in models without
joint text. Labels here cover the video tokens only. (HunyuanVideo 1.5 puts its ByT5 and vision
tokens inside the text part, before the LLM tokens.)

At the attention call (``transformer_options["optimized_attention_override"](func, q, k, v, heads,
**kwargs)``): Wan, LTXV and the UNet pass q/k/v as ``[B, L, heads * dim_head]``; HunyuanVideo as
``[B, heads, L, dim_head]`` with ``skip_reshape=True`` and ``mask`` = the additive text key mask
``[1, 1, L]`` (or None). The batch is ``len(cond_or_uncond)`` chunks of the latent batch. Self- and
cross-attention both pass through it (cross: k/v hold the text). LTXV, and Wan in ComfyUI 0.3.75, put
nothing of their own in ``transformer_options`` (newer ComfyUI's Wan sets ``block_index``); HunyuanVideo sets ``block_type`` ("double" /
"single"; absent in its text refiner's attention), ``block_index`` and ``total_blocks``; the UNet
sets ``block`` (("input", id), ...), ``block_index`` and ``activations_shape`` ``[B*F, C, h, w]``,
the same for a transformer's spatial and temporal calls (tell them apart by the shapes).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Coverage is a float mean; a box edge exactly on a token's middle gives 0.5 up to rounding.
_EPS = 1e-6


@dataclass(frozen=True)
class TokenLayout:
    family: str
    temporal_compression: int        # pixel frames per latent frame (after the first)
    first_frame_alone: bool          # latent frame 0 holds pixel frame 0 only (causal video VAEs)
    spatial_compression: int         # pixels per latent pixel, each axis
    patch: tuple[int, int, int]      # (t, h, w) latent pixels per token; UNet: (1, 1, 1) at level 0
    joint_text: bool = False         # text tokens follow the video tokens in self-attention
    unet: bool = False               # UNet: tokens per resolution level, frames are batch items


LAYOUTS: dict[str, TokenLayout] = {
    "wan21": TokenLayout("wan21", 4, True, 8, (1, 2, 2)),
    "wan22_ti2v": TokenLayout("wan22_ti2v", 4, True, 16, (1, 2, 2)),
    "hunyuan_video": TokenLayout("hunyuan_video", 4, True, 8, (1, 2, 2), joint_text=True),
    "hunyuan_video15": TokenLayout("hunyuan_video15", 4, True, 16, (1, 1, 1), joint_text=True),
    "ltxv": TokenLayout("ltxv", 8, True, 32, (1, 1, 1)),
    "svd": TokenLayout("svd", 1, False, 8, (1, 1, 1), unet=True),
}


def get_layout(layout: TokenLayout | str) -> TokenLayout:
    if isinstance(layout, TokenLayout):
        return layout
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown model family {layout!r}; known: {', '.join(LAYOUTS)}") from None


# --- time ---------------------------------------------------------------------------------------

def latent_frames(layout: TokenLayout | str, pixel_frames: int) -> int:
    """Latent frames the VAE makes of ``pixel_frames`` (as ComfyUI's Empty*Latent nodes count)."""
    lay = get_layout(layout)
    c = lay.temporal_compression
    if pixel_frames < 1:
        raise ValueError(f"need at least one pixel frame, got {pixel_frames}")
    return (pixel_frames - 1) // c + 1 if lay.first_frame_alone else pixel_frames // c


def pixel_frames_for(layout: TokenLayout | str, n_latent_frames: int) -> int:
    """How many pixel frames ``n_latent_frames`` latent frames represent (81 for 21 Wan frames)."""
    lay = get_layout(layout)
    c = lay.temporal_compression
    return (n_latent_frames - 1) * c + 1 if lay.first_frame_alone else n_latent_frames * c


def pixel_frames_of_latent(layout: TokenLayout | str, t: int) -> range:
    """The pixel frames latent frame ``t`` aggregates."""
    lay = get_layout(layout)
    c = lay.temporal_compression
    if t < 0:
        raise ValueError(f"latent frame {t} < 0")
    if not lay.first_frame_alone:
        return range(t * c, (t + 1) * c)
    return range(0, 1) if t == 0 else range(c * (t - 1) + 1, c * t + 1)


# --- shapes -------------------------------------------------------------------------------------

def latent_size(layout: TokenLayout | str, pixel_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(T, H, W) of the latent for a video of this size, as the Empty*Latent nodes compute it."""
    lay = get_layout(layout)
    s = lay.spatial_compression
    return latent_frames(lay, pixel_frames), height // s, width // s


log = logging.getLogger("boxdirector")
_NOTED: set = set()
ASPECT_TOLERANCE = 0.05     # relative difference of width / height still taken as the same aspect


def resampling_note(layout: TokenLayout | str, frames: int, size: tuple[int, int] | None, latent_shape) -> str | None:
    """What resampling masks of ``frames`` pixel frames at ``size`` (h, w; None: not known, e.g.
    normalised boxes) onto this latent does, when they were made for another length or aspect than
    the video; None when they fit."""
    lay = get_layout(layout)
    t, h, w = _latent_thw(lay, latent_shape)
    s = lay.spatial_compression
    parts = []
    if latent_frames(lay, frames) != t:
        parts.append(f"{frames} frames stretched over the latent's {pixel_frames_for(lay, t)}-frame video "
                     f"({t} latent frames)")
    hm, wm = size or (h * s, w * s)
    if abs(wm / hm - w / h) > ASPECT_TOLERANCE * (w / h) and not (hm // s == h and wm // s == w):
        parts.append(f"drawn at {wm}x{hm} but the video is {w * s}x{h * s}: boxes stretched to its aspect")
    if not parts:
        return None
    return ("the trajectory / regions do not match the video: " + "; ".join(parts) +
            " (make them at the video's length and size to place objects exactly)")


def note_resampling(who: str, layout: TokenLayout | str, frames: int, size: tuple[int, int] | None,
                    latent_shape) -> None:
    """Log ``resampling_note`` once per (who, shapes): the rule resamples, visibly."""
    key = (who, get_layout(layout).family, frames, size and tuple(size), tuple(int(d) for d in latent_shape))
    if key in _NOTED:
        return
    note = resampling_note(layout, frames, size, latent_shape)
    if note:
        if len(_NOTED) > 1000:
            _NOTED.clear()
        _NOTED.add(key)
        log.warning("%s: %s", who, note)


def _latent_thw(lay: TokenLayout, latent_shape) -> tuple[int, int, int]:
    """(T, H, W) from (T, H, W), a video latent's [B, C, T, H, W] or SVD's [F, C, H, W]."""
    shape = tuple(int(d) for d in latent_shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 5 and not lay.unet:
        return shape[2:]
    if len(shape) == 4 and lay.unet:
        return shape[0], shape[2], shape[3]
    want = "(F, H, W) or [F, C, H, W]" if lay.unet else "(T, H, W) or [B, C, T, H, W]"
    raise ValueError(f"{lay.family}: latent shape {shape} is not {want}")


def _token_kernel(lay: TokenLayout, level: int) -> tuple[int, int, int]:
    if lay.unet:
        if level < 0:
            raise ValueError(f"UNet level {level} < 0")
        return (1, 2 ** level, 2 ** level)
    if level != 0:
        raise ValueError(f"{lay.family} is a DiT: it has one token grid (level 0), not level {level}")
    return lay.patch


def token_grid(layout: TokenLayout | str, latent_shape, level: int = 0) -> tuple[int, int, int]:
    """(T', H', W'): the token grid after padding to the patch and patching (DiT), or the
    frames x spatial size at UNet level ``level`` (each stride-2 downsample rounds up)."""
    lay = get_layout(layout)
    thw = _latent_thw(lay, latent_shape)
    return tuple(math.ceil(n / k) for n, k in zip(thw, _token_kernel(lay, level)))


def num_tokens(layout: TokenLayout | str, latent_shape, level: int = 0) -> int:
    return math.prod(token_grid(layout, latent_shape, level))


# --- coverage -----------------------------------------------------------------------------------

def _to_latent_frames(masks: torch.Tensor, lay: TokenLayout, n_latent: int) -> torch.Tensor:
    """[K, F, H, W] pixel frames -> [K, T, H, W]: each latent frame's mean over its pixel frames."""
    k, f, h, w = masks.shape
    p = pixel_frames_for(lay, n_latent)
    if latent_frames(lay, f) == n_latent:
        masks = masks[:, :p]  # frames past the last full chunk: the VAE drops them too
    else:
        # Masks made for another length: stretch them over the frames this latent represents.
        idx = torch.linspace(0, f - 1, p, device=masks.device).round().long()
        masks = masks.index_select(1, idx)
    c = lay.temporal_compression
    if c == 1:
        return masks
    if lay.first_frame_alone:
        rest = masks[:, 1:].reshape(k, n_latent - 1, c, h, w).mean(2)
        return torch.cat([masks[:, :1], rest], dim=1)
    return masks.reshape(k, n_latent, c, h, w).mean(2)


def _to_latent_pixels(masks: torch.Tensor, lay: TokenLayout, h: int, w: int) -> torch.Tensor:
    """[K, T, Hm, Wm] -> [K, T, h, w]: mean over each latent pixel's footprint (see the docstring)."""
    s = lay.spatial_compression
    hm, wm = masks.shape[-2:]
    if hm != h * s and hm // s == h:  # the video's own size, not a multiple of s: crop like the VAE
        off = (hm % s) // 2
        masks = masks[..., off:off + h * s, :]
    if wm != w * s and wm // s == w:
        off = (wm % s) // 2
        masks = masks[..., off:off + w * s]
    if masks.shape[-2:] == (h, w):
        return masks
    # "area" is adaptive average pooling: exact s x s means when the size is latent * s.
    return F.interpolate(masks, size=(h, w), mode="area")


def _pool_real(x: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    """[K, T, H, W] -> [K, ceil(T/kt), ceil(H/kh), ceil(W/kw)]: means over each kernel block,
    counting only real (unpadded) cells."""
    if kernel == (1, 1, 1):
        return x
    kt, kh, kw = kernel
    t, h, w = x.shape[1:]
    pad = (0, (-w) % kw, 0, (-h) % kh, 0, (-t) % kt)
    total = F.avg_pool3d(F.pad(x[None], pad), kernel, stride=kernel)
    real = F.avg_pool3d(F.pad(x.new_ones(1, 1, t, h, w), pad), kernel, stride=kernel)
    return (total / real)[0]


def token_coverage(masks: torch.Tensor, layout: TokenLayout | str, latent_shape, level: int = 0) -> torch.Tensor:
    """[K, T', H', W'] in 0..1: how much of each token's footprint each object's mask covers."""
    lay = get_layout(layout)
    if masks.ndim != 4:
        raise ValueError(f"masks must be [objects, frames, height, width], got {tuple(masks.shape)}")
    t, h, w = _latent_thw(lay, latent_shape)
    kernel = _token_kernel(lay, level)
    k = masks.shape[0]
    if k == 0:
        return masks.new_zeros((0, *token_grid(lay, (t, h, w), level)), dtype=torch.float32)
    note_resampling("Box Director regions", lay, masks.shape[1], tuple(masks.shape[-2:]), (t, h, w))
    m = masks.to(torch.float32).clamp(0.0, 1.0)
    m = _to_latent_frames(m, lay, t)       # time first: it shrinks the tensor the most
    m = _to_latent_pixels(m, lay, h, w)
    return _pool_real(m, kernel)


# --- labels -------------------------------------------------------------------------------------

def labels_from_coverage(coverage: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """[K, T', H', W'] coverage -> LongTensor [T', H', W'] labels (0 = background, k+1 = object k)
    by the membership, overlap and at-least-one-token rules of the module docstring."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    k, t, h, w = coverage.shape
    labels = torch.zeros((t, h, w), dtype=torch.long, device=coverage.device)
    if k == 0:
        return labels

    # Priority per token frame: smaller area first; argsort is stable, so equal areas keep index order.
    area = coverage.sum(dim=(2, 3))                                       # [K, T']
    order = torch.argsort(area, dim=0, stable=True)                       # [K, T'], best first
    rank = torch.empty_like(order)
    rank.scatter_(0, order, torch.arange(k, device=coverage.device)[:, None].expand(k, t))

    qualifies = coverage >= threshold - _EPS
    score = torch.where(qualifies, rank[:, :, None, None], k)             # k: does not qualify
    best = score.min(dim=0)
    labels = torch.where(best.values < k, best.indices + 1, labels)

    # At least one token per visible object and token frame.
    owned = F.one_hot(labels, k + 1)[..., 1:].sum(dim=(1, 2)).T          # [K, T'] tokens won
    missing = (coverage.amax(dim=(2, 3)) > 0) & (owned == 0)
    for ti in missing.any(dim=0).nonzero().flatten().tolist():
        frame = labels[ti].view(-1)                                       # a view: writes land in labels
        for ki in order[:, ti].tolist():
            if not missing[ki, ti]:
                continue
            cov = coverage[ki, ti].reshape(-1)
            counts = torch.bincount(frame, minlength=k + 1)
            spare = (frame == 0) | (counts[frame] > 1)
            candidates = (cov > 0) & spare
            if not candidates.any():
                continue  # every token it touches is some other object's last one
            frame[torch.where(candidates, cov, -1.0).argmax()] = ki + 1
    return labels


def token_label_grid(masks: torch.Tensor, layout: TokenLayout | str, latent_shape, threshold: float = 0.5,
                     level: int = 0) -> torch.Tensor:
    """LongTensor [T', H', W']: each token's label on the token grid."""
    return labels_from_coverage(token_coverage(masks, layout, latent_shape, level), threshold)


def token_labels(masks: torch.Tensor, layout: TokenLayout | str, latent_shape, threshold: float = 0.5,
                 level: int = 0) -> torch.Tensor:
    """LongTensor [N]: the label of every video token, in the model's sequence order (N = T'*H'*W')."""
    return token_label_grid(masks, layout, latent_shape, threshold, level).reshape(-1)


# --- SVD (UNet) ---------------------------------------------------------------------------------

def svd_spatial_labels(masks: torch.Tensor, latent_shape, level: int = 0, threshold: float = 0.5) -> torch.Tensor:
    """LongTensor [F, h*w]: row t labels the spatial attention sequence of batch item
    ``chunk * F + t`` at UNet level ``level`` (tokens in (y, x) row-major order)."""
    grid = token_label_grid(masks, LAYOUTS["svd"], latent_shape, threshold, level)
    return grid.reshape(grid.shape[0], -1)


def svd_temporal_labels(masks: torch.Tensor, latent_shape, level: int = 0, threshold: float = 0.5) -> torch.Tensor:
    """LongTensor [h*w, F]: row s labels the frames sequence the temporal layers attend over for
    batch item ``chunk * h*w + s`` (s = y * w + x)."""
    return svd_spatial_labels(masks, latent_shape, level, threshold).T.contiguous()


# --- the whole attention sequence ---------------------------------------------------------------

@dataclass(frozen=True)
class TokenSegments:
    prefix: slice    # tokens before the video (reference-image tokens), if any
    video: slice     # the N tokens ``token_labels`` describes
    text: slice      # joint-attention text tokens (HunyuanVideo), empty otherwise
    extra: slice     # tokens after the video in a model without joint text (guide frames), if any


def token_segments(layout: TokenLayout | str, latent_shape, seq_len: int, prefix_tokens: int = 0,
                   text_first: bool = False) -> TokenSegments:
    """Where the video, text and other tokens sit in a self-attention sequence of ``seq_len``;
    ``text_first``: a joint model's text comes before the prefix and video ([text, prefix, video])."""
    lay = get_layout(layout)
    if lay.unet:
        raise ValueError("svd has no joint sequence: see svd_spatial_labels / svd_temporal_labels")
    n = num_tokens(lay, latent_shape)
    if seq_len < prefix_tokens + n:
        raise ValueError(f"{lay.family}: sequence of {seq_len} tokens cannot hold {prefix_tokens} prefix "
                         f"+ {n} video tokens of latent {tuple(latent_shape)}")
    start = seq_len - prefix_tokens - n if lay.joint_text and text_first else 0
    end = start + prefix_tokens + n
    rest = slice(0, start) if start else slice(end, seq_len)
    empty = slice(seq_len, seq_len)
    return TokenSegments(prefix=slice(start, start + prefix_tokens), video=slice(start + prefix_tokens, end),
                         text=rest if lay.joint_text else empty, extra=empty if lay.joint_text else rest)


def sequence_labels(labels: torch.Tensor, segments: TokenSegments, text_label: int = -1,
                    other_label: int = 0) -> torch.Tensor:
    """LongTensor [seq_len]: the video labels in place, ``text_label`` on text tokens and
    ``other_label`` (background by default) on prefix/extra tokens."""
    seq_len = max(segments.video.stop, segments.text.stop, segments.extra.stop)
    out = torch.full((seq_len,), other_label, dtype=torch.long, device=labels.device)
    out[segments.video] = labels
    out[segments.text] = text_label
    return out
