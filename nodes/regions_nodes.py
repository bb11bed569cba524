"""MaskSequence: per-object region masks, from a trajectory and/or from any MASK sequence."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..core import masks as core_masks
from ..core.regions import Regions as RegionSet
from ..core.trajectory import sample_boxes
from . import checks, types
from .common import CATEGORY, node_id

SOURCES = ("trajectory", "mask", "regions")
EXPECTED_TYPES = {"trajectory": types.Trajectory.io_type, "mask": io.Mask.io_type, "regions": types.Regions.io_type}


def resize_masks(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[..., F, H, W] resampled to height x width (area-preserving when shrinking)."""
    if m.shape[-2:] == (height, width):
        return m
    lead = m.shape[:-2]
    flat = m.reshape(-1, 1, *m.shape[-2:]).float()
    mode = "area" if flat.shape[-2] >= height and flat.shape[-1] >= width else "bilinear"
    out = torch.nn.functional.interpolate(flat, size=(height, width), mode=mode,
                                          **({} if mode == "area" else {"align_corners": False}))
    return out.reshape(*lead, height, width).clamp(0, 1)


class MaskSequence(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("MaskSequence"),
            display_name="Mask Sequence",
            category=CATEGORY,
            description=(
                "Per-object region masks for every frame: from a trajectory's boxes, from any MASK sequence "
                "(e.g. a segmenter's output, one object), or both, optionally added to existing regions. "
                "Grow/shrink and soften the edges here. Frame rule: a single-frame mask is used for every "
                "frame; otherwise frame counts must match."),
            inputs=[
                types.Trajectory.Input("trajectory", optional=True,
                                       tooltip="Boxes to turn into one mask sequence per object."),
                io.Mask.Input("mask", optional=True,
                              tooltip="A mask sequence [frames, height, width] for one more object "
                                      "(resized to the trajectory's size when both are given)."),
                types.Regions.Input("regions", optional=True,
                                    tooltip="Regions to add these objects to (same frames and size)."),
                io.String.Input("mask_id", default="mask",
                                tooltip="Id of the object given by the mask input (unique among objects)."),
                io.String.Input("mask_prompt", default="",
                                tooltip="Subject phrase of the mask's object as written in the text prompt "
                                        "(empty: the id)."),
                io.Int.Input("dilation", default=0, min=-512, max=512,
                             tooltip="Grow (positive) or shrink (negative) every mask by this many pixels."),
                io.Float.Input("feather", default=0.0, min=0.0, max=512.0, step=0.5,
                               tooltip="Soften mask edges over about this many pixels (0 = hard edges)."),
            ],
            outputs=[
                types.Regions.Output(display_name="regions",
                                     tooltip="Per-object masks with their ids and subject phrases."),
                io.Mask.Output(display_name="mask", tooltip="Union of all objects' masks [frames, height, width]."),
            ],
        )

    @classmethod
    def validate_inputs(cls, mask_id, input_types=None, dilation=None, feather=None):
        def links():
            # Declaring input_types hands the link type check to us: keep it as strict as ComfyUI's.
            linked = (input_types or [{}])[0] if isinstance(input_types, list) else (input_types or {})
            for name, got in linked.items():
                want = EXPECTED_TYPES.get(name)
                if want is not None and got not in (want, "*"):
                    return f"{name}: expects {want}, but a {got} output is connected"
            if not any(name in linked for name in SOURCES):
                return "connect at least one of trajectory, mask or regions"
            if isinstance(mask_id, str) and "mask" in linked and not mask_id.strip():
                return "mask_id: give the mask's object an id"
            return None

        return checks.validate(cls, locals(), links)

    @classmethod
    def execute(cls, mask_id="mask", mask_prompt="", dilation=0, feather=0.0, trajectory=None, mask=None,
                regions=None) -> io.NodeOutput:
        checks.at_run(cls, {"dilation": dilation, "feather": feather})
        new: list[RegionSet] = []
        if trajectory is not None:
            boxes, visible = sample_boxes(trajectory)
            new.append(RegionSet(core_masks.box_masks(boxes, visible, trajectory.height, trajectory.width),
                                 tuple(o.id for o in trajectory.objects), tuple(o.prompt for o in trajectory.objects)))
        if mask is not None:
            m = mask.float().reshape(-1, *mask.shape[-2:]).clamp(0, 1)
            ref = regions if regions is not None else (new[0] if new else None)
            if ref is not None:
                m = core_masks.fit_frames(resize_masks(m, *ref.size), ref.frames)
            new.append(RegionSet(m[None], (mask_id.strip(),), (mask_prompt.strip() or mask_id.strip(),)))
        if regions is None and not new:
            raise ValueError("MaskSequence: connect at least one of trajectory, mask or regions")
        # Grow/soften only what this node adds: regions coming in were shaped by their own node.
        for i, part in enumerate(new):
            m = part.masks
            if dilation:
                m = core_masks.dilate(m, dilation)
            if feather > 0:
                m = core_masks.feather(m, feather)
            new[i] = RegionSet(m, part.ids, part.prompts)
        out = regions
        for part in new:
            out = part if out is None else out.concat(part)
        return io.NodeOutput(out, out.union())
