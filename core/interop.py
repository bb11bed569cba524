"""Converters between the Trajectory and the motion formats users already have in ComfyUI.

Formats (all coordinates in pixels, origin top-left):

* KJNodes coordinates (SplineEditor's ``coordinates`` STRING, what WanMoveTracksFromCoords reads):
  JSON ``[{"x": .., "y": ..}, ...]``, one point per frame, or a list of such paths (one per
  object). Also accepted: a list of JSON strings, one per path, and single quotes (as ComfyUI's
  ``parse_json_tracks`` does).
* ComfyUI core ``TRACKS`` (WanMove, comfy_extras/nodes_wanmove.py):
  ``{"track_path": float [T, N, 2] (x, y), "track_visibility": bool [T, N]}``; ComfyUI also makes a
  ``[T, 1]`` visibility (from a mask) that applies to every track.
* KJNodes ``BBOX``: a list of ``(x, y, w, h)``, one per frame, for one object.
* ``MASK`` sequences ``[F, H, W]`` (one object) or ``[K, F, H, W]`` (e.g. a segmenter's output).

Rules shared by the converters:

* A point is the centre of a ``box_w`` x ``box_h`` pixel box. A box that crosses the frame edge is
  clipped to the frame (the visible part of the object is what steers the model). Pass the same
  ``box_w``/``box_h`` back to :func:`to_kjnodes_coordinates` / :func:`to_tracks` and a clipped box
  is recognised by the frame edge it touches and its centre restored, so the round trip is exact
  for every point inside the frame. A box entirely outside the frame becomes an invisible keyframe
  whose box is 1 pixel thick along the frame edge nearest to it.
* Frames without a box (empty mask; zero-size or off-frame BBOX) become invisible keyframes
  holding the last box seen (or, before the first one, the first). A track point marked invisible
  keeps the box around its point, hidden.
* By default every frame gets a keyframe (``linear``). ``compact=True`` keeps only the keyframes
  needed for linear interpolation to stay within ``tolerance`` pixels of every frame's box
  (Ramer-Douglas-Peucker over time), plus one wherever visibility changes.
* Pixel outputs are rounded to 1/1000 pixel, so integer (or 3-decimal) inputs round-trip exactly.

Errors are :class:`TrajectoryError` (a ValueError) whose ``field`` names the bad argument, e.g.
``coordinates[1][5].x``, ``prompts``, ``track_visibility``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .masks import masks_to_boxes
from .trajectory import (Keyframe, Trajectory, TrajectoryError, TrajectoryObject, _describe, _is_int,
                         _is_number, load_json, sample_boxes)

_DECIMALS = 3  # pixel outputs are rounded to 1/1000 px


# --------------------------------------------------------------------------------------------
# Shared helpers


def _check_size(width, height) -> tuple[int, int]:
    for name, v in (("width", width), ("height", height)):
        if not _is_int(v) or v < 1:
            raise TrajectoryError(name, f"must be a whole number of pixels >= 1, got {_describe(v)}")
    return int(width), int(height)


def _check_box_size(name: str, v) -> float:
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        raise TrajectoryError(name, f"must be a box size in pixels > 0, got {_describe(v)}")
    return float(v)


def _names(prompts, ids, n: int, what: str) -> tuple[list[str], list[str]]:
    """One prompt and one id per object; ids default to object1, object2, ..."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or len(prompts) != n:
        got = len(prompts) if isinstance(prompts, Sequence) else _describe(prompts)
        raise TrajectoryError("prompts", f"got {got} prompt(s) for {n} {what}; give one prompt per {what[:-1]}, "
                                         f"in order")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise TrajectoryError(f"prompts[{i}]", f"must be the non-empty subject phrase of {what[:-1]} {i} as "
                                                   f"it appears in the text prompt, got {_describe(p)}")
    if ids is None:
        ids = [f"object{i + 1}" for i in range(n)]
    elif isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, Sequence) or len(ids) != n:
        got = len(ids) if isinstance(ids, Sequence) else _describe(ids)
        raise TrajectoryError("ids", f"got {got} id(s) for {n} {what}; give one unique id per {what[:-1]}")
    seen = set()
    for i, oid in enumerate(ids):
        if not isinstance(oid, str) or not oid.strip():
            raise TrajectoryError(f"ids[{i}]", f"must be a non-empty string, got {_describe(oid)}")
        if oid in seen:
            raise TrajectoryError(f"ids[{i}]", f"id {oid!r} is used twice; ids must be unique")
        seen.add(oid)
    return list(prompts), list(ids)


def _centre_boxes(centres: np.ndarray, box_w: float, box_h: float, width: int, height: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``[T, 2]`` (px) -> normalised boxes ``[T, 4]`` clipped to the frame, and whether
    each box overlaps the frame at all ``[T]``."""
    size = np.array([width, height], dtype=np.float64)
    half = np.array([box_w, box_h], dtype=np.float64) / 2.0
    lo = np.clip(centres - half, 0.0, size)
    hi = np.clip(centres + half, 0.0, size)
    overlap = hi > lo  # per axis
    # Off-frame on an axis: 1 pixel at the nearest frame edge (a keyframe box needs an area).
    near = np.clip(centres, 0.5, np.maximum(size - 0.5, 0.5))
    lo = np.where(overlap, lo, np.maximum(near - 0.5, 0.0))
    hi = np.where(overlap, hi, np.minimum(near + 0.5, size))
    inside = overlap.all(axis=-1)
    boxes = np.concatenate([lo / size, hi / size], axis=-1)
    return boxes, inside


def _hold_hidden(boxes: np.ndarray, present: np.ndarray, field: str) -> np.ndarray:
    """Boxes ``[T, 4]`` where absent frames take the last present box (the first before it)."""
    if not present.any():
        raise TrajectoryError(field, "has no box in any frame (empty or off-frame everywhere); "
                                     "an object needs at least one frame where it is seen")
    idx = np.where(present, np.arange(len(present)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.argmax(present))
    return boxes[idx]


def _keyframe_frames(boxes_px: np.ndarray, visible: np.ndarray, tolerance: float) -> list[int]:
    """Frames to keep so that linear interpolation between kept frames stays within
    ``tolerance`` px of every frame's box (Ramer-Douglas-Peucker over time); always keeps the
    first and last frame and every frame where visibility changes."""
    t = len(boxes_px)
    keep = {0, t - 1}
    keep.update(int(i) for i in np.nonzero(visible[1:] != visible[:-1])[0] + 1)
    forced = sorted(keep)
    stack = list(zip(forced[:-1], forced[1:]))
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        s = (np.arange(a + 1, b) - a)[:, None] / (b - a)
        approx = (1.0 - s) * boxes_px[a] + s * boxes_px[b]
        err = np.abs(approx - boxes_px[a + 1:b]).max(axis=-1)
        worst = int(np.argmax(err))
        if err[worst] > tolerance:
            m = a + 1 + worst
            keep.add(m)
            stack += [(a, m), (m, b)]
    return sorted(keep)


def _make_object(oid: str, prompt: str, boxes: np.ndarray, visible: np.ndarray, width: int, height: int,
                 compact: bool, tolerance: float) -> TrajectoryObject:
    if compact:
        scale = np.array([width, height, width, height], dtype=np.float64)
        frames = _keyframe_frames(boxes * scale, visible, float(tolerance))
    else:
        frames = range(len(boxes))
    keyframes = tuple(Keyframe(frame=int(f), box=tuple(float(v) for v in boxes[f]), visible=bool(visible[f]))
                      for f in frames)
    return TrajectoryObject(id=oid, prompt=prompt, keyframes=keyframes)


def _as_array(x, field: str) -> np.ndarray:
    try:
        if isinstance(x, torch.Tensor):
            arr = x.detach().cpu().to(torch.float64).numpy()
        else:
            arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TrajectoryError(field, f"must be numbers (a tensor or nested lists), could not read it: {e}") from None
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise TrajectoryError(field, f"must be finite; element {list(bad)} is {arr[bad]}")
    return arr


def _round_px(v: float) -> float:
    return round(float(v), _DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _centres_px(traj: Trajectory, box_w=None, box_h=None) -> tuple[np.ndarray, np.ndarray]:
    """Box centres ``[K, F, 2]`` in pixels and visibility ``[K, F]``. With the nominal box size,
    a box narrower than it that touches a frame edge is taken as clipped there and its centre is
    put back where the unclipped box would have it (the inverse of :func:`_centre_boxes`)."""
    box_w = None if box_w is None else _check_box_size("box_w", box_w)
    box_h = None if box_h is None else _check_box_size("box_h", box_h)
    boxes, visible = sample_boxes(traj, dtype=torch.float64)
    b = boxes.numpy() * np.array([traj.width, traj.height, traj.width, traj.height], dtype=np.float64)
    centres = 0.5 * (b[..., :2] + b[..., 2:])
    for axis, size, nominal in ((0, traj.width, box_w), (1, traj.height, box_h)):
        if nominal is None:
            continue
        lo, hi = b[..., axis], b[..., axis + 2]
        clipped = (hi - lo) < float(nominal) - 1e-9
        at_lo = clipped & (lo <= 0.0) & (hi < size)
        at_hi = clipped & (hi >= size) & (lo > 0.0)
        centres[..., axis] = np.where(at_lo, hi - nominal / 2.0, centres[..., axis])
        centres[..., axis] = np.where(at_hi, lo + nominal / 2.0, centres[..., axis])
    return centres, visible.numpy()


# --------------------------------------------------------------------------------------------
# KJNodes coordinates


def parse_kjnodes_coordinates(coords) -> list[list]:
    """KJNodes coordinates in any accepted form (JSON text, a path, a list of paths, a list of
    JSON strings) -> a list of paths, each a list of point mappings (points not yet checked).
    Raises TrajectoryError (field ``coordinates...``) for text that is not JSON or not a list."""
    def load(text, field):
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            # ComfyUI accepts single quotes too; load_json names malformed or too deeply nested text.
            return load_json(text.replace("'", '"'), field)

    data = load(coords, "coordinates") if isinstance(coords, str) else coords
    if isinstance(data, Sequence) and not isinstance(data, str) and data and all(isinstance(p, str) for p in data):
        data = [load(p, f"coordinates[{i}]") for i, p in enumerate(data)]
    if not isinstance(data, Sequence) or isinstance(data, str) or not data:
        raise TrajectoryError("coordinates", f'must be a non-empty list of points [{{"x": .., "y": ..}}, ...] or '
                                             f"a list of such paths, got {_describe(data)}")
    if all(isinstance(p, Mapping) for p in data):
        return [list(data)]  # a single path
    paths = []
    for i, path in enumerate(data):
        if not isinstance(path, Sequence) or isinstance(path, str) or not path:
            raise TrajectoryError(f"coordinates[{i}]", f'must be a non-empty list of points {{"x": .., "y": ..}}, '
                                                       f"got {_describe(path)}")
        paths.append(list(path))
    return paths


def from_kjnodes_coordinates(coords, box_w: float, box_h: float, width: int, height: int,
                             prompts: str | Sequence[str], ids: Sequence[str] | None = None, *,
                             compact: bool = False, tolerance: float = 0.5) -> Trajectory:
    """A Trajectory from KJNodes coordinates (JSON text or lists): each path is one object, each
    point the centre of a ``box_w`` x ``box_h`` pixel box in a ``width`` x ``height`` video;
    ``frames`` is the path length (all paths must have the same length)."""
    width, height = _check_size(width, height)
    box_w, box_h = _check_box_size("box_w", box_w), _check_box_size("box_h", box_h)
    paths = parse_kjnodes_coordinates(coords)
    prompts, ids = _names(prompts, ids, len(paths), "paths")
    frames = len(paths[0])
    objects = []
    for i, path in enumerate(paths):
        if len(path) != frames:
            raise TrajectoryError(f"coordinates[{i}]", f"has {len(path)} points but path 0 has {frames}; "
                                                       f"every path needs one point per frame")
        centres = np.empty((frames, 2), dtype=np.float64)
        for t, point in enumerate(path):
            for a, key in enumerate(("x", "y")):
                field = f"coordinates[{i}][{t}].{key}"
                if not isinstance(point, Mapping) or key not in point:
                    raise TrajectoryError(field, f'missing; every point is {{"x": .., "y": ..}} in pixels, '
                                                 f"got {_describe(point)}")
                v = point[key]
                if not _is_number(v) or not math.isfinite(v):
                    raise TrajectoryError(field, f"must be a finite number of pixels, got {_describe(v)}")
                centres[t, a] = float(v)
        boxes, inside = _centre_boxes(centres, box_w, box_h, width, height)
        objects.append(_make_object(ids[i], prompts[i], boxes, inside, width, height, compact, tolerance))
    return Trajectory(frames=frames, width=width, height=height, objects=tuple(objects))


def to_kjnodes_coordinates(traj: Trajectory, box_w: float | None = None,
                           box_h: float | None = None) -> list[list[dict]]:
    """Box centres per frame in pixels, one path per object: ``[[{"x": .., "y": ..}, ...], ...]``
    (``json.dumps`` it for a STRING input). Invisible frames still carry their (held) box centre:
    coordinates have no visibility. ``box_w``/``box_h``: see the module docstring."""
    centres, _ = _centres_px(traj, box_w, box_h)
    return [[{"x": _round_px(x), "y": _round_px(y)} for x, y in path] for path in centres]


# --------------------------------------------------------------------------------------------
# ComfyUI TRACKS (WanMove)


def from_tracks(track_path, track_visibility, box_w: float, box_h: float, width: int, height: int,
                prompts: str | Sequence[str], ids: Sequence[str] | None = None, *,
                compact: bool = False, tolerance: float = 0.5) -> Trajectory:
    """A Trajectory from ComfyUI ``TRACKS``: ``track_path [T, N, 2]`` pixel (x, y) points, one
    track per object, and ``track_visibility`` ``[T, N]`` or ``[T, 1]`` (or None: all visible).
    ``track_path`` may also be the whole TRACKS dict (then ``track_visibility`` may be None).
    A frame is visible where the track says so and its box overlaps the frame."""
    if isinstance(track_path, Mapping):
        if "track_path" not in track_path:
            raise TrajectoryError("track_path", "a TRACKS dict needs a 'track_path' entry [T, N, 2]")
        if track_visibility is None:
            track_visibility = track_path.get("track_visibility")
        track_path = track_path["track_path"]
    width, height = _check_size(width, height)
    box_w, box_h = _check_box_size("box_w", box_w), _check_box_size("box_h", box_h)
    path = _as_array(track_path, "track_path")
    if path.ndim != 3 or path.shape[-1] != 2 or path.shape[0] < 1 or path.shape[1] < 1:
        raise TrajectoryError("track_path", f"must be [T, N, 2] (frames, tracks, x/y pixels), got shape "
                                            f"{list(path.shape)}")
    t, n, _ = path.shape
    if track_visibility is None:
        vis = np.ones((t, n), dtype=bool)
    else:
        vis = _as_array(track_visibility, "track_visibility") > 0
        if vis.ndim == 2 and vis.shape == (t, 1):
            vis = np.repeat(vis, n, axis=1)  # ComfyUI's mask-derived visibility: one column for all
        if vis.shape != (t, n):
            raise TrajectoryError("track_visibility", f"must be [T, N] = {[t, n]} (or [T, 1]) to match track_path, "
                                                      f"got shape {list(vis.shape)}")
    prompts, ids = _names(prompts, ids, n, "tracks")
    objects = []
    for i in range(n):
        boxes, inside = _centre_boxes(path[:, i], box_w, box_h, width, height)
        visible = inside & vis[:, i]
        objects.append(_make_object(ids[i], prompts[i], boxes, visible, width, height, compact, tolerance))
    return Trajectory(frames=t, width=width, height=height, objects=tuple(objects))


def to_tracks(traj: Trajectory, box_w: float | None = None, box_h: float | None = None) -> dict:
    """ComfyUI ``TRACKS`` of the box centres: ``{"track_path": float32 [F, K, 2] (x, y pixels),
    "track_visibility": bool [F, K]}``, one track per object."""
    centres, visible = _centres_px(traj, box_w, box_h)
    return {"track_path": torch.from_numpy(centres.transpose(1, 0, 2).copy()).to(torch.float32),
            "track_visibility": torch.from_numpy(visible.T.copy())}


# --------------------------------------------------------------------------------------------
# KJNodes BBOX


def from_kjnodes_bbox(bboxes, width: int, height: int, prompt: str, id: str = "object1", *,
                      compact: bool = False, tolerance: float = 0.5) -> Trajectory:
    """A one-object Trajectory from a KJNodes ``BBOX``: a list of ``(x, y, w, h)`` pixel boxes,
    one per frame (a single ``(x, y, w, h)`` is one frame). Boxes are clipped to the frame;
    frames whose box is empty after that are invisible."""
    width, height = _check_size(width, height)
    arr = _as_array(bboxes, "bboxes")
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[-1] != 4 or arr.shape[0] < 1:
        raise TrajectoryError("bboxes", f"must be a list of (x, y, w, h) pixel boxes, one per frame, got shape "
                                        f"{list(arr.shape)}")
    size = np.array([width, height], dtype=np.float64)
    lo = np.clip(arr[:, :2], 0.0, size)
    hi = np.clip(arr[:, :2] + arr[:, 2:], 0.0, size)
    present = np.all(hi > lo, axis=-1)
    boxes = _hold_hidden(np.concatenate([lo / size, hi / size], axis=-1), present, "bboxes")
    for name, v, hint in (("prompt", prompt, "; the subject phrase as it appears in the text prompt"),
                          ("id", id, "")):
        if not isinstance(v, str) or not v.strip():
            raise TrajectoryError(name, f"must be a non-empty string, got {_describe(v)}{hint}")
    obj = _make_object(id, prompt, boxes, present, width, height, compact, tolerance)
    return Trajectory(frames=len(arr), width=width, height=height, objects=(obj,))


# --------------------------------------------------------------------------------------------
# MASK sequences


def from_masks(masks, prompts: str | Sequence[str], ids: Sequence[str] | None = None, *,
               threshold: float = 0.5, compact: bool = False, tolerance: float = 0.5) -> Trajectory:
    """A Trajectory from masks ``[F, H, W]`` (one object) or ``[K, F, H, W]``: each frame's box is
    the tight box of the pixels > ``threshold``; frames with an empty mask are invisible. The
    video size is the masks' ``W`` x ``H``."""
    m = masks if isinstance(masks, torch.Tensor) else torch.as_tensor(np.asarray(masks, dtype=np.float32))
    m = m.detach().cpu()
    if m.ndim == 3:
        m = m[None]
    if m.ndim != 4 or min(m.shape) < 1:
        raise TrajectoryError("masks", f"must be [F, H, W] or [K, F, H, W], got shape {list(m.shape)}")
    k, f, h, w = m.shape
    prompts, ids = _names(prompts, ids, k, "objects")
    boxes, present = masks_to_boxes(m, threshold)
    # Back to float64 from exact pixel edges (float32 of j/W is not exactly j/W).
    boxes = boxes.to(torch.float64).numpy() * np.array([w, h, w, h])
    boxes = np.round(boxes) / np.array([w, h, w, h], dtype=np.float64)
    present = present.numpy()
    objects = []
    for i in range(k):
        obj_boxes = _hold_hidden(boxes[i], present[i], f"masks[{i}]" if k > 1 else "masks")
        objects.append(_make_object(ids[i], prompts[i], obj_boxes, present[i], w, h, compact, tolerance))
    return Trajectory(frames=f, width=w, height=h, objects=tuple(objects))


def to_box_lists(traj: Trajectory) -> list[list[list[float] | None]]:
    """Per object, per frame: ``[x0, y0, x1, y1]`` in pixels, or None where the object is
    invisible. (A KJNodes BBOX ``(x, y, w, h)`` is ``(x0, y0, x1 - x0, y1 - y0)``.)"""
    boxes, visible = sample_boxes(traj, dtype=torch.float64)
    scale = np.array([traj.width, traj.height, traj.width, traj.height], dtype=np.float64)
    px = boxes.numpy() * scale
    vis = visible.numpy()
    return [[[_round_px(v) for v in px[k, t]] if vis[k, t] else None for t in range(traj.frames)]
            for k in range(len(traj.objects))]


# --------------------------------------------------------------------------------------------
# Combining


def merge(base: Trajectory, new: Trajectory) -> Trajectory:
    """The objects of ``base`` followed by those of ``new`` in one Trajectory (to combine sources).
    Both must have the same frames, width and height, and no id may appear in both."""
    for name in ("frames", "width", "height"):
        a, b = getattr(base, name), getattr(new, name)
        if a != b:
            raise TrajectoryError(name, f"the trajectories to merge differ: {a} vs {b}; make both the same "
                                        f"(e.g. the frames/width/height override) before merging")
    taken = {o.id for o in base.objects}
    for i, obj in enumerate(new.objects):
        if obj.id in taken:
            raise TrajectoryError(f"objects[{len(base.objects) + i}].id",
                                  f"id {obj.id!r} is in both trajectories; give the objects different ids")
    return Trajectory(frames=base.frames, width=base.width, height=base.height,
                      objects=tuple(base.objects) + tuple(new.objects))


__all__ = ["parse_kjnodes_coordinates", "from_kjnodes_coordinates", "to_kjnodes_coordinates",
           "from_tracks", "to_tracks",
           "from_kjnodes_bbox", "from_masks", "to_box_lists", "merge"]
