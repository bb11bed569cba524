"""Box masks: rasterise sampled boxes, grow/shrink/soften them, and read boxes back from masks.

Conventions (ComfyUI's MASK): float32 in 0..1, ``[..., H, W]``, row 0 at the top. Boxes are
normalised ``[x0, y0, x1, y1]`` as produced by :func:`boxdirector.core.trajectory.sample_boxes`;
pixel (row i, column j) is the unit square [j, j+1) x [i, i+1) in pixel coordinates ``x * W``,
``y * H``.

Rasterisation is exact area coverage: each pixel's value is the fraction of its square that the
box covers (anti-aliased), so a sub-pixel move changes the mask and a mask's total mass equals the
box's area in pixels (``(x1-x0)*W * (y1-y0)*H``). Because a box is axis-aligned, coverage is the
product of a row coverage and a column coverage, computed in 1-D (no per-pixel geometry).

Morphology never builds an N^2 window: dilation is a separable running max (a square structuring
element, so a box grows into a box) in O(H*W) for any radius, the feather a separable Gaussian.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _coverage(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """Fraction of each of the n unit cells [j, j+1) covered by the interval [lo, hi] (pixels).
    ``lo``/``hi``: ``[...]`` -> ``[..., n]``."""
    j = torch.arange(n, dtype=lo.dtype, device=lo.device)
    return (torch.minimum(hi[..., None], j + 1) - torch.maximum(lo[..., None], j)).clamp(0.0, 1.0)


def box_masks(boxes: torch.Tensor, visible: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Anti-aliased box masks ``[K, F, H, W]`` float32 in 0..1 from boxes ``[K, F, 4]``
    (normalised) and visibility ``[K, F]`` (bool); invisible frames are all zeros. Each pixel holds
    the exact fraction of it covered by the box."""
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [K, F, 4] (normalised x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    if tuple(visible.shape) != tuple(boxes.shape[:2]):
        raise ValueError(f"visible must be [K, F] = {tuple(boxes.shape[:2])} to match boxes, "
                         f"got shape {tuple(visible.shape)}")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"height and width must be >= 1 pixel, got {height}x{width}")
    # float64 for the 1-D coverages: cheap ([K, F, H] + [K, F, W]) and keeps the mass exact.
    b = boxes.to(torch.float64)
    cov_x = _coverage(b[..., 0] * width, b[..., 2] * width, int(width))  # [K, F, W]
    cov_y = _coverage(b[..., 1] * height, b[..., 3] * height, int(height))  # [K, F, H]
    cov_y = cov_y * visible.to(torch.float64)[..., None]
    return cov_y.to(torch.float32)[..., :, None] * cov_x.to(torch.float32)[..., None, :]


def _as_batch(masks: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    if masks.ndim < 2:
        raise ValueError(f"masks must be [..., H, W], got shape {tuple(masks.shape)}")
    shape = tuple(masks.shape)
    return masks.to(torch.float32).reshape(-1, 1, shape[-2], shape[-1]), shape


def _running_max(x: torch.Tensor, p: int) -> torch.Tensor:
    """Max over the centred window [i-p, i+p] along the last axis, outside pixels ignored.

    van Herk / Gil-Werman: split the padded line into blocks of the window size k = 2p+1; every
    window spans at most two blocks, so it is max(suffix max of the first, prefix max of the
    second). Three passes whatever p is: O(N) time and memory, no k-wide unfold.
    """
    n = x.shape[-1]
    p = min(p, n - 1)  # a wider window sees the whole line anyway
    if p <= 0:
        return x
    k = 2 * p + 1
    extra = (-(n + 2 * p)) % k
    xp = F.pad(x, (p, p + extra), value=float("-inf"))
    blocks = xp.reshape(*xp.shape[:-1], -1, k)
    prefix = blocks.cummax(dim=-1).values.reshape(xp.shape)
    suffix = blocks.flip(-1).cummax(dim=-1).values.flip(-1).reshape(xp.shape)
    return torch.maximum(suffix[..., :n], prefix[..., k - 1:k - 1 + n])


def dilate(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow masks ``[..., H, W]`` by ``pixels`` in every direction (a (2p+1)^2 square running max,
    so a box mask becomes the box grown by p pixels, anti-aliased edges kept, provided the box
    covers at least one whole pixel per axis); negative ``pixels`` erodes by -p (running min).
    Outside the frame counts as "unknown", never as background: a mask touching the frame edge
    stays touching it when eroded. Separable and O(H*W) whatever ``pixels`` is. Returns float32,
    same shape."""
    p = int(pixels)
    if p != pixels:
        raise ValueError(f"pixels must be a whole number, got {pixels}")
    if masks.ndim < 2:
        raise ValueError(f"masks must be [..., H, W], got shape {tuple(masks.shape)}")
    x = masks.to(torch.float32)
    if p == 0:
        return x.clone()
    sign = 1.0 if p > 0 else -1.0  # erosion = -dilation(-x); outside (-inf) is ignored either way
    y = _running_max(sign * x, abs(p))
    y = _running_max(y.transpose(-1, -2), abs(p)).transpose(-1, -2)
    return (sign * y).contiguous()


def feather(masks: torch.Tensor, radius: float) -> torch.Tensor:
    """Soften edges of masks ``[..., H, W]``: a separable Gaussian with sigma = radius / 3,
    truncated at ``radius`` pixels, so values change only within ``radius`` of an edge and a
    hard edge keeps 0.5 on its original position. The frame edge is extended (replicate), so a
    mask touching the edge is not darkened there. ``radius <= 0`` (or < 1: no neighbour within
    reach) returns a copy. Returns float32 in 0..1, same shape."""
    if not math.isfinite(float(radius)):
        raise ValueError(f"radius must be a finite number of pixels, got {radius}")
    r = int(math.floor(float(radius)))
    if r < 1:
        return masks.to(torch.float32).clone()
    x, shape = _as_batch(masks)
    sigma = float(radius) / 3.0
    offsets = torch.arange(-r, r + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(torch.float32).to(x.device)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x.clamp(0.0, 1.0).reshape(shape)


def union(masks: torch.Tensor) -> torch.Tensor:
    """All objects in one mask: ``[K, F, H, W]`` -> ``[F, H, W]``, the max over objects."""
    if masks.ndim != 4:
        raise ValueError(f"masks must be [K, F, H, W], got shape {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        raise ValueError("masks has no objects (K = 0); there is nothing to unite")
    return masks.amax(dim=0)


def fit_frames(masks: torch.Tensor, frames: int) -> torch.Tensor:
    """A mask sequence ``[..., F, H, W]`` made to have ``frames`` frames, by one rule:

    * F == frames: returned as is;
    * F == 1: that frame is used for every frame (a still mask, ComfyUI's usual single MASK);
    * otherwise: ``ValueError`` naming both counts. Never resampled silently: a mask made for a
      49-frame clip stretched over 81 frames would steer the wrong frames without anyone noticing.
    """
    if masks.ndim < 3:
        raise ValueError(f"masks must be [..., F, H, W] (a frame axis before H, W), got shape {tuple(masks.shape)}")
    n = masks.shape[-3]
    if n == frames:
        return masks
    if n == 1:
        shape = list(masks.shape)
        shape[-3] = int(frames)
        return masks.expand(*shape).contiguous()
    raise ValueError(f"the mask has {n} frames but the video has {frames}; give a mask with {frames} frames "
                     f"(one per pixel frame) or a single frame (used for every frame)")


def masks_to_boxes(masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of masks ``[F, H, W]`` (any leading dims): ``boxes [F, 4]`` normalised
    (x0, y0, x1, y1) around the pixels with value > ``threshold``, and ``present [F]`` (bool),
    False where no pixel passes (that frame's box is then all zeros). For an anti-aliased box
    mask and threshold 0.5 each edge comes back within half a pixel."""
    if masks.ndim < 2:
        raise ValueError(f"masks must be [F, H, W], got shape {tuple(masks.shape)}")
    h, w = masks.shape[-2:]
    on = masks > threshold
    rows, cols = on.any(dim=-1), on.any(dim=-2)  # [..., H], [..., W]
    present = rows.any(dim=-1)

    def first_last(line: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = line.shape[-1]
        idx = torch.arange(n, device=line.device)
        first = torch.where(line, idx, n).amin(dim=-1)
        last = torch.where(line, idx, -1).amax(dim=-1)
        return first, last + 1

    y0, y1 = first_last(rows)
    x0, x1 = first_last(cols)
    boxes = torch.stack([x0 / w, y0 / h, x1 / w, y1 / h], dim=-1).to(torch.float32)
    boxes = torch.where(present[..., None], boxes, torch.zeros_like(boxes))
    return boxes, present


__all__ = ["box_masks", "dilate", "feather", "union", "fit_frames", "masks_to_boxes"]


def stretch_frames(masks: torch.Tensor, frames: int) -> torch.Tensor:
    """``[..., F, H, W]`` -> ``[..., frames, H, W]`` by the nearest frame, first and last kept: regions
    made for another length spread evenly over the video (the rule ``token_layout`` applies too)."""
    f = masks.shape[-3]
    if f == frames:
        return masks
    index = torch.linspace(0, f - 1, frames, device=masks.device).round().long()
    return masks.index_select(masks.ndim - 3, index)
