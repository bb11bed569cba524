"""Previews people can look at: boxes, ids and masks drawn over video frames.

Plain torch + Pillow (for text); frames are ComfyUI IMAGE layout [F, H, W, 3] floats in 0..1.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def object_colors(n: int) -> list[tuple[int, int, int]]:
    """Distinct, stable colours per object index (golden-ratio hue steps); the box editor uses the
    same sequence so that an object has one colour everywhere."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.08 + i * 0.618034) % 1.0, 0.85, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def blank_frames(frames: int, height: int, width: int, max_side: int = 512) -> torch.Tensor:
    """A dark checker canvas at the video's aspect, at most ``max_side`` pixels on its long side."""
    scale = min(1.0, max_side / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = (((yy // 16) + (xx // 16)) % 2).float() * 0.04 + 0.12
    return checker[None, :, :, None].expand(frames, h, w, 3).clone()


def draw_overlay(frames: torch.Tensor, boxes: torch.Tensor | None = None, visible: torch.Tensor | None = None,
                 labels: list[str] | None = None, masks: torch.Tensor | None = None,
                 mask_opacity: float = 0.35, line_width: int = 2) -> torch.Tensor:
    """Draw per-object masks (tinted), boxes and labels over ``frames``.

    frames [F, H, W, 3]; boxes [K, F, 4] normalised [x0, y0, x1, y1]; visible [K, F] bool;
    masks [K, F, H', W'] in 0..1 (resized to the frames). Returns a new [F, H, W, 3] tensor.
    """
    f, h, w, _ = frames.shape
    k = boxes.shape[0] if boxes is not None else (masks.shape[0] if masks is not None else 0)
    colors = object_colors(k)
    out = frames.float().clone()
    if masks is not None and k and mask_opacity > 0:
        m = masks.float()
        if m.shape[-2:] != (h, w):
            m = torch.nn.functional.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        tint = torch.tensor(colors, dtype=out.dtype) / 255.0                      # [K, 3]
        for i in range(k):
            a = (m[i] * mask_opacity).clamp(0, 1)[..., None]                         # [F, H, W, 1]
            out = out * (1 - a) + tint[i] * a
    if boxes is None:
        return out.clamp(0, 1)
    font = ImageFont.load_default()
    result = []
    for t in range(f):
        img = Image.fromarray((out[t].clamp(0, 1).numpy() * 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for i in range(k):
            if visible is not None and not bool(visible[i, t]):
                continue
            x0, y0, x1, y1 = (boxes[i, t] * torch.tensor([w, h, w, h])).tolist()
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colors[i], width=line_width)
            if labels:
                text = labels[i]
                tx, ty = x0 + 3, max(0, y0 - 12) if y0 >= 12 else y0 + 2
                draw.rectangle(draw.textbbox((tx, ty), text, font=font), fill=(0, 0, 0))
                draw.text((tx, ty), text, fill=colors[i], font=font)
        result.append(torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0))
    return torch.stack(result)
