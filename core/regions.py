"""Regions: what every method consumes — one pixel-space mask sequence per object, with its id and
the subject phrase that names it in the text prompt.

A region set is made from a Trajectory (boxes) or from any MASK sequence (a segmenter's output) by
the MaskSequence node, and mapped to the token grid of a model by ``core.token_layout``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Regions:
    masks: torch.Tensor          # [K, F, H, W] float32 in 0..1, pixel frames
    ids: tuple[str, ...]         # K unique ids
    prompts: tuple[str, ...]     # K subject phrases, as they appear in the text prompt

    def __post_init__(self):
        if self.masks.ndim != 4:
            raise ValueError(f"region masks must be [objects, frames, height, width], got {tuple(self.masks.shape)}")
        if not (len(self.ids) == len(self.prompts) == self.masks.shape[0]):
            raise ValueError(f"{self.masks.shape[0]} masks but {len(self.ids)} ids and {len(self.prompts)} prompts")
        dup = sorted({i for i in self.ids if self.ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate region ids {dup}: every object needs its own id")

    @property
    def frames(self) -> int:
        return self.masks.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.masks.shape[2], self.masks.shape[3]

    def __len__(self) -> int:
        return self.masks.shape[0]

    def union(self) -> torch.Tensor:
        """[F, H, W]: the foreground of all objects (a plain ComfyUI MASK)."""
        if len(self) == 0:
            return torch.zeros(self.masks.shape[1:], dtype=self.masks.dtype)
        return self.masks.amax(dim=0)

    def concat(self, other: "Regions") -> "Regions":
        """Both region sets together; frame count and size must agree (see MaskSequence)."""
        if other.masks.shape[1:] != self.masks.shape[1:]:
            raise ValueError(
                f"cannot combine regions of {self.frames} frames at {self.size[1]}x{self.size[0]} with "
                f"regions of {other.frames} frames at {other.size[1]}x{other.size[0]}: make both from the same "
                "frame count and size")
        return Regions(torch.cat([self.masks, other.masks]), self.ids + other.ids, self.prompts + other.prompts)
