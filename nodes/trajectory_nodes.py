"""BBoxTrajectory, its converters from/to other packs' formats, and the preview node.

Thin: validate at the door (``validate_inputs``, so a bad document is refused when the prompt is
queued, naming the field), convert, call ``core``, return.
"""

from __future__ import annotations

import json

import torch
from comfy_api.latest import io, ui

from ..core import interop, masks as core_masks, preview as core_preview
from ..core.trajectory import Trajectory as TrajectoryDoc
from ..core.trajectory import MAX_FRAMES, MAX_SIZE, TrajectoryError, example_trajectory, parse_trajectory, sample_boxes
from . import checks, types
from .common import CATEGORY, node_id

OVERRIDE_TIP = "0 keeps the document's value."
MAX_PREVIEW_FRAMES = 8


def load_trajectory(text: str, frames: int = 0, width: int = 0, height: int = 0) -> TrajectoryDoc:
    """The document with the node's overrides applied; raises TrajectoryError naming the field."""
    traj = parse_trajectory(text)
    return traj.with_overrides(frames=frames or None, width=width or None, height=height or None)


def union_mask(traj: TrajectoryDoc) -> torch.Tensor:
    """[F, H, W] union of all boxes at full resolution, one object at a time to bound memory."""
    boxes, visible = sample_boxes(traj)
    out = torch.zeros(traj.frames, traj.height, traj.width)
    for i in range(boxes.shape[0]):
        out = torch.maximum(out, core_masks.box_masks(boxes[i:i + 1], visible[i:i + 1], traj.height, traj.width)[0])
    return out


def fit_images(images: torch.Tensor, frames: int, field: str) -> torch.Tensor:
    """Frame-count rule shared with MaskSequence: one image is used for every frame; otherwise the
    counts must match."""
    if images.shape[0] == 1:
        return images.expand(frames, -1, -1, -1)
    if images.shape[0] != frames:
        raise ValueError(f"{field}: {images.shape[0]} frames but the trajectory has {frames}; connect a video "
                         f"of {frames} frames, a single image, or set the frames override to {images.shape[0]}")
    return images


def preview_frames(traj: TrajectoryDoc, images: torch.Tensor | None = None) -> torch.Tensor:
    boxes, visible = sample_boxes(traj)
    base = (core_preview.blank_frames(traj.frames, traj.height, traj.width) if images is None
            else fit_images(images, traj.frames, "image"))
    return core_preview.draw_overlay(base, boxes, visible, labels=[o.id for o in traj.objects])


def keyframe_indices(traj: TrajectoryDoc) -> list[int]:
    """The frames worth looking at in a still preview: every keyframe, thinned to a few."""
    frames = sorted({kf.frame for o in traj.objects for kf in o.keyframes})
    if len(frames) > MAX_PREVIEW_FRAMES:
        step = (len(frames) - 1) / (MAX_PREVIEW_FRAMES - 1)
        frames = [frames[round(i * step)] for i in range(MAX_PREVIEW_FRAMES)]
    return frames


class BBoxTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("BBoxTrajectory"),
            display_name="BBox Trajectory",
            category=CATEGORY,
            description=(
                "Keyframed boxes, one track per object: where each object is at a few moments and how it "
                "moves in between. Outputs the trajectory for MaskSequence and the methods, the union of "
                "all boxes as a MASK, and a preview with the boxes drawn."),
            inputs=[
                io.String.Input("trajectory", multiline=True, default=example_trajectory().to_json(),
                                tooltip="Trajectory document (JSON, version 1): frames, width, height and "
                                        "objects with keyframed boxes [x0, y0, x1, y1] in 0..1. See the help page."),
                io.Int.Input("frames", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Pixel-frame count of the video. " + OVERRIDE_TIP +
                                     " Keyframe times are rescaled in proportion."),
                io.Int.Input("width", default=0, min=0, max=MAX_SIZE,
                             tooltip="Video width in pixels. " + OVERRIDE_TIP + " Boxes are relative, so they keep their place."),
                io.Int.Input("height", default=0, min=0, max=MAX_SIZE,
                             tooltip="Video height in pixels. " + OVERRIDE_TIP),
                io.Image.Input("image", optional=True,
                               tooltip="Optional video or image to draw the preview on (one image is used for every frame)."),
            ],
            outputs=[
                types.Trajectory.Output(display_name="trajectory", tooltip="The validated trajectory."),
                io.Mask.Output(display_name="mask", tooltip="Union of all boxes per frame [frames, height, width]."),
                io.Image.Output(display_name="preview", tooltip="The boxes and ids drawn over each frame."),
            ],
        )

    @classmethod
    def validate_inputs(cls, trajectory, frames, width=None, height=None):
        # A linked-in document or size is checked when the node runs.
        def document():
            if not isinstance(trajectory, str):
                return None
            size = [v if isinstance(v, int) else 0 for v in (frames, width, height)]   # linked: the document's
            try:
                load_trajectory(trajectory, *size)
            except TrajectoryError as e:
                return f"trajectory: {e}"
            return None

        return checks.validate(cls, locals(), document)

    @classmethod
    def execute(cls, trajectory, frames=0, width=0, height=0, image=None) -> io.NodeOutput:
        traj = load_trajectory(trajectory, frames, width, height)
        frames_out = preview_frames(traj, image)
        shown = frames_out[keyframe_indices(traj)]
        return io.NodeOutput(traj, union_mask(traj), frames_out, ui=ui.PreviewImage(shown, cls=cls))


def object_names(ids: str, prompts: str, count: int) -> tuple[list[str], list[str]]:
    """ids: comma separated; prompts: one per line. Missing ids are obj0, obj1, ...; a missing
    prompt is the object's id."""
    id_list = [p.strip() for p in ids.split(",") if p.strip()]
    prompt_list = [p.strip() for p in prompts.splitlines() if p.strip()]
    for field, got in (("ids", id_list), ("prompts", prompt_list)):
        if len(got) > count:
            raise TrajectoryError(field, f"{len(got)} given for {count} objects; give at most one per object")
    id_list += [f"obj{i}" for i in range(len(id_list), count)]
    return id_list, prompt_list + id_list[len(prompt_list):]


def append(base: TrajectoryDoc | None, new: TrajectoryDoc) -> TrajectoryDoc:
    return new if base is None else interop.merge(base, new)


def append_input():
    return types.Trajectory.Input(
        "append_to", optional=True,
        tooltip="Optional trajectory to add these objects to (same frames and size), to combine sources.")


def size_inputs():
    return [io.Int.Input("width", default=832, min=1, max=MAX_SIZE, tooltip="Video width in pixels."),
            io.Int.Input("height", default=480, min=1, max=MAX_SIZE, tooltip="Video height in pixels.")]


def single_object_inputs():
    return [io.String.Input("id", default="obj0", tooltip="Object id (unique among objects)."),
            io.String.Input("prompt", default="",
                            tooltip="Subject phrase as written in the text prompt (empty: the id)."),
            append_input()]


def point_track_inputs():
    """Inputs shared by the converters whose points are box centres (coordinates, tracks)."""
    return [
        io.Int.Input("box_width", default=128, min=1, max=MAX_SIZE, tooltip="Box width in pixels."),
        io.Int.Input("box_height", default=128, min=1, max=MAX_SIZE, tooltip="Box height in pixels."),
        *size_inputs(),
        io.String.Input("ids", default="", tooltip="Object ids, comma separated, one per object "
                                                   "(default obj0, obj1, ...)."),
        io.String.Input("prompts", multiline=True, default="",
                        tooltip="Subject phrase of each object as it appears in the text prompt, one per line "
                                "(default: the id). Used to find the object's words."),
        append_input(),
    ]


class TrajectoryFromCoordinates(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("TrajectoryFromCoordinates"),
            display_name="Trajectory from Coordinates (KJNodes)",
            category=f"{CATEGORY}/convert",
            description="Boxes that follow KJNodes spline/points coordinates: each point is the box centre at "
                        "one frame; several paths make several objects.",
            inputs=[
                io.String.Input("coordinates", multiline=True, default="",
                                tooltip='KJNodes coordinates: JSON list of {"x", "y"} in pixels, one per frame '
                                        "(a list of such lists for several paths)."),
                *point_track_inputs(),
            ],
            outputs=[types.Trajectory.Output(display_name="trajectory")],
        )

    @classmethod
    def validate_inputs(cls, coordinates, ids, prompts, box_width=None, box_height=None, width=None, height=None):
        def points():
            if not all(isinstance(v, str) for v in (coordinates, ids, prompts)):
                return None
            try:
                count = len(interop.parse_kjnodes_coordinates(coordinates))
                interop.from_kjnodes_coordinates(coordinates, 1, 1, 1, 1, prompts=["-"] * count)  # every point
                object_names(ids, prompts, count)
            except TrajectoryError as e:
                return str(e)
            return None

        return checks.validate(cls, locals(), points)

    @staticmethod
    def convert(coordinates, box_width, box_height, width, height, ids, prompts) -> TrajectoryDoc:
        count = len(interop.parse_kjnodes_coordinates(coordinates))
        id_list, prompt_list = object_names(ids, prompts, count)
        return interop.from_kjnodes_coordinates(coordinates, box_width, box_height, width, height,
                                                prompts=prompt_list, ids=id_list)

    @classmethod
    def execute(cls, coordinates, box_width, box_height, width, height, ids="", prompts="",
                append_to=None) -> io.NodeOutput:
        traj = cls.convert(coordinates, box_width, box_height, width, height, ids, prompts)
        return io.NodeOutput(append(append_to, traj))


class TrajectoryFromTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("TrajectoryFromTracks"),
            display_name="Trajectory from Tracks",
            category=f"{CATEGORY}/convert",
            description="Boxes centred on ComfyUI TRACKS points (WanMove): one object per track; frames where "
                        "a track is not visible hide its box.",
            inputs=[
                types.Tracks.Input("tracks", tooltip='ComfyUI TRACKS: {"track_path": [frames, tracks, 2] pixels, '
                                                     '"track_visibility": [frames, tracks]}.'),
                *point_track_inputs(),
            ],
            outputs=[types.Trajectory.Output(display_name="trajectory")],
        )

    @classmethod
    def validate_inputs(cls, box_width=None, box_height=None, width=None, height=None):
        return checks.validate(cls, locals())

    @classmethod
    def execute(cls, tracks, box_width, box_height, width, height, ids="", prompts="", append_to=None):
        if not isinstance(tracks, dict) or "track_path" not in tracks:
            raise TrajectoryError("tracks", "expects ComfyUI TRACKS: a dict with track_path [frames, tracks, 2]")
        id_list, prompt_list = object_names(ids, prompts, int(tracks["track_path"].shape[1]))
        traj = interop.from_tracks(tracks, None, box_width, box_height, width, height,
                                   prompts=prompt_list, ids=id_list)
        return io.NodeOutput(append(append_to, traj))


class SingleObjectConverter(io.ComfyNode):
    """Converters that make one object, named by the ``id`` and ``prompt`` widgets."""

    @classmethod
    def validate_inputs(cls, id, width=None, height=None, threshold=None):
        return checks.validate(cls, locals(), None if not isinstance(id, str) or id.strip() else "id: give the object an id")


class TrajectoryFromBBox(SingleObjectConverter):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("TrajectoryFromBBox"),
            display_name="Trajectory from BBOX",
            category=f"{CATEGORY}/convert",
            description="One object whose box at each frame comes from a KJNodes BBOX list (x, y, w, h in pixels).",
            inputs=[
                io.BBOX.Input("bboxes", tooltip="KJNodes BBOX: a list of (x, y, width, height) in pixels, one per frame."),
                *size_inputs(),
                *single_object_inputs(),
            ],
            outputs=[types.Trajectory.Output(display_name="trajectory")],
        )

    @classmethod
    def execute(cls, bboxes, width, height, id="obj0", prompt="", append_to=None):
        traj = interop.from_kjnodes_bbox(bboxes, width, height, prompt=prompt.strip() or id.strip(), id=id.strip())
        return io.NodeOutput(append(append_to, traj))


class TrajectoryFromMask(SingleObjectConverter):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("TrajectoryFromMask"),
            display_name="Trajectory from Mask",
            category=f"{CATEGORY}/convert",
            description="One object whose box at each frame is the tight box around a MASK sequence "
                        "(e.g. a segmenter's output). Frames with an empty mask hide the object.",
            inputs=[
                io.Mask.Input("mask", tooltip="Mask sequence [frames, height, width]."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Mask values above this count as the object."),
                *single_object_inputs(),
            ],
            outputs=[types.Trajectory.Output(display_name="trajectory")],
        )

    @classmethod
    def execute(cls, mask, threshold=0.5, id="obj0", prompt="", append_to=None):
        checks.at_run(cls, {"threshold": threshold})
        m = mask.reshape(-1, *mask.shape[-2:])
        traj = interop.from_masks(m, ids=[id.strip()], prompts=[prompt.strip() or id.strip()], threshold=threshold)
        return io.NodeOutput(append(append_to, traj))


class TrajectoryExport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("TrajectoryExport"),
            display_name="Trajectory Export",
            category=f"{CATEGORY}/convert",
            description="The trajectory as text other nodes read: the Trajectory JSON document, KJNodes "
                        "coordinates (box centres per frame), and per-frame box lists in pixels.",
            inputs=[types.Trajectory.Input("trajectory", tooltip="The trajectory to export.")],
            outputs=[
                io.String.Output(display_name="json", tooltip="Trajectory document, version 1."),
                io.String.Output(display_name="coordinates",
                                 tooltip='KJNodes coordinates: per object a list of {"x", "y"} box centres per frame.'),
                io.String.Output(display_name="boxes",
                                 tooltip="Per object, per frame [x0, y0, x1, y1] in pixels, or null when hidden."),
            ],
        )

    @classmethod
    def execute(cls, trajectory):
        return io.NodeOutput(trajectory.to_json(), json.dumps(interop.to_kjnodes_coordinates(trajectory)),
                             json.dumps(interop.to_box_lists(trajectory)))


class TrajectoryPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("TrajectoryPreview"),
            display_name="Trajectory Preview",
            category=CATEGORY,
            description="Draws boxes, ids and region masks over video frames, to check placement before sampling "
                        "or to compare the result with the boxes.",
            inputs=[
                io.Image.Input("images", tooltip="Frames to draw on (one image is used for every frame)."),
                types.Trajectory.Input("trajectory", optional=True, tooltip="Boxes and ids to draw."),
                types.Regions.Input("regions", optional=True, tooltip="Region masks to tint."),
                io.Float.Input("mask_opacity", default=0.35, min=0.0, max=1.0, step=0.05,
                               tooltip="How strongly region masks tint the frames."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="The frames with the overlay.")],
        )

    @classmethod
    def validate_inputs(cls, mask_opacity=None):
        return checks.validate(cls, locals())

    @classmethod
    def execute(cls, images, mask_opacity=0.35, trajectory=None, regions=None):
        checks.at_run(cls, {"mask_opacity": mask_opacity})
        frames = (trajectory.frames if trajectory is not None
                  else regions.frames if regions is not None else images.shape[0])
        base = fit_images(images, frames, "images")
        boxes = visible = labels = None
        if trajectory is not None:
            boxes, visible = sample_boxes(trajectory)
            labels = [o.id for o in trajectory.objects]
        masks = None
        if regions is not None:
            if regions.frames != frames:
                raise ValueError(f"regions: {regions.frames} frames but {frames} are drawn; make both from the same trajectory")
            masks = regions.masks
        out = core_preview.draw_overlay(base, boxes, visible, labels=labels, masks=masks, mask_opacity=mask_opacity)
        return io.NodeOutput(out, ui=ui.PreviewImage(out[:: max(1, frames // MAX_PREVIEW_FRAMES)][:MAX_PREVIEW_FRAMES], cls=cls))
