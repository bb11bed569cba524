"""Chunked extension of a video along one long trajectory (dynamic mask guidance's autoregressive
extension, METHODS.md §4), for text-to-video latents with a causal video VAE (Wan: latent frame 0
holds pixel frame 0 alone, each later latent frame c = 4 pixel frames).

A chunk is the model's native length, T latent frames. Chunk 0 is generated freely. Each later
chunk is laid out as

    [anchor] + [overlap] + [new]

* anchor (optional, 1 frame): the first chunk's latent frame 0, kept fixed. It sits where the
  model expects an image-like first frame, and first-frame sharing makes every frame of the chunk
  attend it: the whole long video is anchored on one frame.
* overlap (o frames): the previous chunk's last o latent frames, kept fixed -- the continuation.
* new: T - anchor - o frames generated now.

Kept frames are re-imposed at every sampling step (ComfyUI's inpainting noise mask: the sampler
feeds them noised to the current sigma and replaces their prediction by the known latent), so
the new frames are denoised in context. Plain torch; the node runs the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import token_layout


@dataclass(frozen=True)
class Chunk:
    frames: tuple          # global latent frame of every local frame (the anchor is global frame 0)
    known: int             # the first ``known`` local frames are kept (anchor + overlap)

    @property
    def new(self) -> tuple:
        return self.frames[self.known:]


def plan_chunks(total: int, chunk: int, overlap: int = 1, anchor: bool = True) -> list:
    """Chunks covering latent frames 0..total-1 (the last chunk may run past the end: its extra
    frames are generated and dropped). Raises ValueError naming the field to fix."""
    a = 1 if anchor else 0
    if chunk < 2:
        raise ValueError(f"latent: a chunk needs at least 2 latent frames, got {chunk}")
    if overlap < (0 if anchor else 1):
        raise ValueError("overlap: needs at least 1 latent frame without the first-frame anchor "
                         "(each chunk must be conditioned on the previous one)")
    if chunk - a - overlap < 1:
        raise ValueError(f"overlap: {overlap} overlap frames{' + 1 anchor frame' if a else ''} leave no new frame "
                         f"in a chunk of {chunk} latent frames; lower overlap")
    if total < 1:
        raise ValueError(f"length: needs at least 1 latent frame, got {total}")
    chunks = [Chunk(tuple(range(chunk)), 0)]
    end = chunk
    while end < total:
        step = chunk - a - overlap
        frames = ((0,) if a else ()) + tuple(range(end - overlap, end)) + tuple(range(end, end + step))
        chunks.append(Chunk(frames, a + overlap))
        end += step
    return chunks


def chunk_masks(masks: torch.Tensor, chunk: Chunk, layout: str = "wan21") -> torch.Tensor:
    """[K, F, H, W] pixel masks of the whole video -> the pixel frames one chunk stands for, laid
    out as its own video: local frame 0 is one pixel frame (the anchor's pixel frame 0, or the last
    pixel frame of its latent frame), later local frames their c pixel frames. Frames past the end
    of the video repeat the last one."""
    last = masks.shape[1] - 1
    idx = []
    for i, g in enumerate(chunk.frames):
        px = list(token_layout.pixel_frames_of_latent(layout, g))
        idx.extend(px[-1:] if i == 0 else px)
    idx = torch.tensor([min(p, last) for p in idx], dtype=torch.long)
    return masks.index_select(1, idx)


def assemble(chunks: list, latents: list, total: int) -> torch.Tensor:
    """One latent [B, C, total, H, W] from every chunk's sampled latent (its new frames only)."""
    parts = {}
    for ch, lat in zip(chunks, latents):
        for i, g in enumerate(ch.frames):
            if i >= ch.known and g < total:
                parts[g] = lat[:, :, i]
    missing = [g for g in range(total) if g not in parts]
    if missing:
        raise AssertionError(f"latent frames {missing[:5]} were not generated")
    return torch.stack([parts[g] for g in range(total)], dim=2)
