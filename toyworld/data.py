"""Seeded synthetic clips of one or two coloured shapes moving over a plain or lightly textured
background, with a caption and per-frame ground-truth boxes.

Plain torch; nothing here imports ComfyUI.

    clip = make_clip(seed=3)              # one clip, fully determined by the seed
    clip.video      # [F, H, W, 3] float32 in 0..1
    clip.caption    # "a red circle and a blue square"
    clip.boxes      # [n_objects, F, 4] float32, (x0, y0, x1, y1) normalised to 0..1 of width/height
    clip.colors     # per object, index into COLORS
    clip.shapes     # per object, index into SHAPES

An object's box is the bounding box of its whole shape (it may reach past the frame edge; the
box is then clipped to 0..1). The object centres stay inside the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COLORS = ("red", "green", "blue", "yellow", "white")
COLOR_RGB = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.12, 0.78, 0.15),
    "blue": (0.12, 0.25, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "white": (0.96, 0.96, 0.96),
}
SHAPES = ("circle", "square", "triangle")

# Bumped whenever a seed's clip changes, so caches of encoded clips (train_dit.LatentPool) are
# not reused across worlds. 2: squares are the circle's bounding square (half-side r, was 0.85 r).
DATA_VERSION = 2
# A square's half-side as a share of its "radius" r. 1.0 makes it the bounding square of the circle
# of the same r. Until DATA_VERSION 2 it was 0.85 (about the circle's area): a square and a circle of
# one r then differed by slivers of 2-4 px, a fraction of one 8 x 8 latent cell, and the toy VAE's
# latents of the two differed 5x less than a triangle's from a circle's (mean squared difference
# summed over channels 0.65 vs 3.35; 1.33 at half-side r). The tiny DiT learnt the triangle word
# and, after about 13 000 steps, still drew the same blob for "circle" and "square"
# (toyworld/README.md, "What the model does not know").
SQUARE_HALF_SIDE = 1.0

FRAMES = 17  # -> 5 latent frames with the Wan 2.1 VAE (4x temporal, first frame alone)
SIZE = 128  # -> 16x16 latent cells -> 8x8 tokens per latent frame (patch 2x2)


@dataclass
class Clip:
    video: torch.Tensor  # [F, H, W, 3] in 0..1
    caption: str
    boxes: torch.Tensor  # [N, F, 4] normalised (x0, y0, x1, y1)
    colors: tuple
    shapes: tuple
    centers: torch.Tensor  # [N, F, 2] pixel (x, y)
    radii: tuple  # per object, pixels


def caption_for(colors, shapes) -> str:
    return " and ".join(f"a {COLORS[c]} {SHAPES[s]}" for c, s in zip(colors, shapes))


def _smooth_path(g: torch.Generator, frames: int, size: int, r: float) -> torch.Tensor:
    """[F, 2] pixel centres: still (20 %), straight line, or a quadratic Bezier curve; eased or
    uniform in time. Centres stay within [r/2, size - r/2] so at least half the shape is visible."""
    lo, hi = 0.5 * r + 2, size - 0.5 * r - 2

    def pt():
        return lo + (hi - lo) * torch.rand(2, generator=g)

    kind = torch.rand(1, generator=g).item()
    p0 = pt()
    if kind < 0.2:
        return p0.expand(frames, 2).clone()
    p2 = pt()
    # Make moving objects actually travel: at least a quarter of the frame.
    for _ in range(10):
        if (p2 - p0).norm() > 0.25 * size:
            break
        p2 = pt()
    p1 = pt() if kind > 0.6 else (p0 + p2) / 2
    t = torch.linspace(0, 1, frames)
    if torch.rand(1, generator=g).item() < 0.5:
        t = 0.5 - 0.5 * torch.cos(math.pi * t)  # ease in/out
    t = t[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _background(g: torch.Generator, frames: int, size: int) -> torch.Tensor:
    """[H, W, 3]: a dark-to-mid grey with a slight tint, optionally a soft gradient and faint noise
    texture (static over the clip). Kept well away from the object colours."""
    base = 0.08 + 0.30 * torch.rand(1, generator=g)
    tint = 0.04 * (torch.rand(3, generator=g) - 0.5)
    bg = (base + tint).view(1, 1, 3).expand(size, size, 3).clone()
    kind = torch.rand(1, generator=g).item()
    if kind > 0.4:  # soft linear gradient
        ang = 2 * math.pi * torch.rand(1, generator=g).item()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        bg = bg + (0.06 * (math.cos(ang) * xs + math.sin(ang) * ys))[..., None]
    if kind > 0.7:  # faint blotchy texture
        n = torch.rand(1, 1, 8, 8, generator=g) - 0.5
        n = torch.nn.functional.interpolate(n, size=(size, size), mode="bicubic", align_corners=False)[0, 0]
        bg = bg + 0.08 * n[..., None]
    return bg.clamp(0, 1)


def _alpha(shape: int, cx: torch.Tensor, cy: torch.Tensor, r: float, size: int) -> torch.Tensor:
    """[F, H, W] anti-aliased coverage of the shape centred at (cx, cy) [F] with 'radius' r."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    dx = c.view(1, 1, -1) - cx.view(-1, 1, 1)
    dy = c.view(1, -1, 1) - cy.view(-1, 1, 1)
    if SHAPES[shape] == "circle":
        d = torch.sqrt(dx ** 2 + dy ** 2) - r
    elif SHAPES[shape] == "square":
        d = torch.maximum(dx.abs(), dy.abs()) - SQUARE_HALF_SIDE * r
    else:  # upward equilateral triangle inscribed in a circle of radius 1.1 r, centroid at centre
        R = 1.1 * r
        k = math.sqrt(3.0)
        px, py = dx.abs(), -dy  # mirrored about the vertical axis; y up
        n1 = -py - R / 2  # bottom edge: y >= -R/2 (the inradius is R/2)
        n2 = (k / 2) * px + 0.5 * py - R / 2  # the two slanted edges
        d = torch.maximum(n1, n2)
    return (0.5 - d).clamp(0, 1)


def _box(shape: int, cx: torch.Tensor, cy: torch.Tensor, r: float, size: int) -> torch.Tensor:
    if SHAPES[shape] == "circle":
        hx = hy_top = hy_bot = r
    elif SHAPES[shape] == "square":
        hx = hy_top = hy_bot = SQUARE_HALF_SIDE * r
    else:
        R = 1.1 * r
        hx, hy_top, hy_bot = R * math.sqrt(3) / 2, R, R / 2
    b = torch.stack([cx - hx, cy - hy_top, cx + hx, cy + hy_bot], dim=-1) / size
    return b.clamp(0, 1)


def make_clip(seed: int, frames: int = FRAMES, size: int = SIZE, n_objects: int | None = None) -> Clip:
    """One clip, a pure function of its arguments."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    n = n_objects if n_objects is not None else (1 if torch.rand(1, generator=g).item() < 0.5 else 2)
    colors = tuple(int(c) for c in torch.randperm(len(COLORS), generator=g)[:n])  # distinct colours
    shapes = tuple(int(torch.randint(len(SHAPES), (1,), generator=g)) for _ in range(n))
    video = _background(g, frames, size).expand(frames, size, size, 3).clone()
    boxes, centers, radii = [], [], []
    for c, s in zip(colors, shapes):
        r = float(size * (0.09 + 0.11 * torch.rand(1, generator=g).item()))  # 11..26 px at 128
        path = _smooth_path(g, frames, size, r)
        a = _alpha(s, path[:, 0], path[:, 1], r, size)[..., None]
        rgb = torch.tensor(COLOR_RGB[COLORS[c]]).view(1, 1, 1, 3)
        video = video * (1 - a) + rgb * a
        boxes.append(_box(s, path[:, 0], path[:, 1], r, size))
        centers.append(path)
        radii.append(r)
    return Clip(video.clamp(0, 1), caption_for(colors, shapes), torch.stack(boxes), colors, shapes,
                torch.stack(centers), tuple(radii))


def make_batch(seeds, frames: int = FRAMES, size: int = SIZE) -> tuple[torch.Tensor, list[str]]:
    """Videos [B, 3, F, H, W] in -1..1 (the Wan VAE's input layout) and captions."""
    clips = [make_clip(s, frames, size) for s in seeds]
    x = torch.stack([c.video.permute(3, 0, 1, 2) for c in clips]) * 2 - 1
    return x, [c.caption for c in clips]


def color_presence(video: torch.Tensor, color: str, tol: float = 0.25) -> torch.Tensor:
    """[F, H, W] bool: pixels within ``tol`` (max abs per channel) of the named colour. Used by
    tests and the sanity script to find objects in generated frames."""
    rgb = torch.tensor(COLOR_RGB[color], dtype=video.dtype)
    return (video - rgb).abs().amax(-1) < tol
