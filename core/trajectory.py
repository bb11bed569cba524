"""The Trajectory document (version 1): one box per object, keyframed over the frames of a video.

This is a public contract: workflows, API prompts and the JS widget all carry it as JSON text.
Everything the pack draws, masks or steers is derived from it through :func:`sample_boxes`.

Document
--------
::

    {"version": 1, "frames": 81, "width": 832, "height": 480,
     "objects": [
       {"id": "cat", "prompt": "a black cat",
        "keyframes": [
          {"frame": 0,  "box": [0.10, 0.40, 0.30, 0.80], "ease": "ease_in_out"},
          {"frame": 40, "box": [0.40, 0.35, 0.62, 0.78]},
          {"frame": 80, "box": [0.70, 0.40, 0.90, 0.80], "visible": true}]}]}

* ``version`` -- 1 (may be left out: it means 1). A higher version is refused: this pack reads 1.
* ``frames`` -- pixel-frame count, int in 1..MAX_FRAMES. ``width``, ``height`` -- pixels, ints in
  1..MAX_SIZE, and frames x width x height at most MAX_PIXELS (see the limits below).
* ``objects`` -- at least one. ``id``: non-empty string, unique. ``prompt``: the non-empty subject
  phrase as it appears in the text prompt. ``keyframes``: at least one.
* keyframe ``frame`` -- int in [0, frames-1]. Keyframes of one object are listed in strictly
  increasing frame order: an unsorted list or a repeated frame is an error (never silently sorted:
  the document must mean exactly what it says).
* keyframe ``box`` -- [x0, y0, x1, y1], normalised 0..1 of width/height, origin top-left,
  0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (a zero-area box is an error).
* keyframe ``ease`` -- how the segment that *starts* at this keyframe runs to the next keyframe:
  ``linear`` (default), ``ease_in`` (t^2), ``ease_out`` (1-(1-t)^2), ``ease_in_out`` (3t^2-2t^3),
  ``hold`` (stays on this box, jumps at the next keyframe), ``smooth`` (spline, see below).
  These are the curves ComfyUI's own GenerateTracks (WanMove) uses. The ease of the last keyframe is unused.
* keyframe ``visible`` -- bool, default true. It holds from this keyframe to the next one:
  ``false`` hides the object until a keyframe says ``true`` again.
* Before the first keyframe and after the last one, box and visibility hold.
* Numbers must be finite; booleans are not numbers; unknown or repeated fields are errors.
  Every error is a :class:`TrajectoryError` whose ``field`` is the path of the bad value
  (``objects[0].keyframes[1].box``) and whose message starts with that path and says how to fix it.

Interpolation
-------------
Between keyframes A (frame a) and B (frame b), frame f gets ``box = (1-s)*A + s*B`` with
``s = ease((f-a)/(b-a))`` in [0, 1]. All four coordinates share ``s`` (``smooth``: the two
coordinates of an axis share it), so every sampled box is, per axis, a convex combination of two
valid boxes: it cannot invert, shrink to nothing or leave the frame, and no clamping is needed.

``smooth`` is a monotone piecewise-cubic Hermite spline (PCHIP: Fritsch & Carlson 1980, with the
Fritsch-Butland weighted-harmonic-mean tangents that scipy's PchipInterpolator uses) through the
keyframe box *centres*, per axis. A run of consecutive ``smooth`` segments is one spline; it starts
and ends at rest (zero tangent, like an animation tool's clamped handles), so a lone smooth segment
equals ``ease_in_out``. The tangents are at most 3x the neighbouring secant slopes and zero at a
local extremum, which is the classical condition for the cubic to stay monotone on each segment:
the centre never overshoots its two keyframe values. The box's two edges on that axis follow the
same monotone fraction as the centre, so the box size also moves monotonically between keyframes.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

VERSION = 1
EASES = ("linear", "ease_in", "ease_out", "ease_in_out", "hold", "smooth")

_TOP_FIELDS = ("version", "frames", "width", "height", "objects")
_OBJECT_FIELDS = ("id", "prompt", "keyframes")
_KEYFRAME_FIELDS = ("frame", "box", "ease", "visible")
_BOX_HINT = "boxes are [x0, y0, x1, y1] in 0..1"

# Limits that fit real video models with room to spare (Wan 81 frames at 1280x720, HunyuanVideo 129,
# LTX-Video 257, a Long Video of many chunks), and refuse what could only exhaust memory: every
# region mask is frames x height x width floats per object (at the pixel bound, 4 GiB each).
MAX_FRAMES = 1025          # 4k + 1 (the causal VAEs' frame counts): about a minute at 16 fps
MAX_SIZE = 4096            # pixels per side
MAX_PIXELS = 1 << 30       # frames x width x height: e.g. 1025 frames of 1280 x 720 fit
MAX_ID = 256               # characters of an object id (drawn in previews)
MAX_PROMPT = 4096          # characters of a subject phrase

# The path used for errors about the document as a whole (malformed JSON, not an object).
DOCUMENT = "document"


class TrajectoryError(ValueError):
    """A bad Trajectory value. ``field`` is its path, e.g. ``objects[0].keyframes[1].box``;
    ``str(error)`` is ``"<field>: <what is wrong and how to fix it>"``. For malformed JSON,
    ``line`` and ``column`` (1-based) point at the problem."""

    def __init__(self, field: str, message: str, *, line: int | None = None, column: int | None = None):
        self.field = field
        self.reason = message
        self.line = line
        self.column = column
        super().__init__(f"{field}: {message}")


# --------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class Keyframe:
    """One keyframe. Built directly it is only normalised (box -> tuple of floats); it is
    validated as part of the :class:`Trajectory` that holds it."""

    frame: int
    box: tuple[float, float, float, float]
    ease: str = "linear"
    visible: bool = True

    def __post_init__(self):
        if _is_int(self.frame):
            object.__setattr__(self, "frame", int(self.frame))
        if isinstance(self.box, (list, tuple, np.ndarray)) and all(_is_number(v) for v in self.box):
            object.__setattr__(self, "box", tuple(float(v) for v in self.box))

    def to_dict(self) -> dict:
        d = {"frame": self.frame, "box": _listify(self.box)}
        # Defaults are left out (canonical form). Identity, not ==: 1 == True, yet 1 is invalid.
        if not (isinstance(self.ease, str) and self.ease == "linear"):
            d["ease"] = self.ease
        if self.visible is not True:
            d["visible"] = self.visible
        return d


@dataclass(frozen=True)
class TrajectoryObject:
    id: str
    prompt: str
    keyframes: tuple[Keyframe, ...]

    def __post_init__(self):
        if isinstance(self.keyframes, list):
            object.__setattr__(self, "keyframes", tuple(self.keyframes))

    def to_dict(self) -> dict:
        kfs = self.keyframes
        if isinstance(kfs, (tuple, list)):
            kfs = [kf.to_dict() if isinstance(kf, Keyframe) else kf for kf in kfs]
        return {"id": self.id, "prompt": self.prompt, "keyframes": kfs}


@dataclass(frozen=True)
class Trajectory:
    """A validated Trajectory document. Constructing one validates it (raises TrajectoryError),
    so every ``Trajectory`` in the pack is valid. Frozen and hashable."""

    frames: int
    width: int
    height: int
    objects: tuple[TrajectoryObject, ...]
    version: int = VERSION

    def __post_init__(self):
        if isinstance(self.objects, list):
            object.__setattr__(self, "objects", tuple(self.objects))
        if isinstance(self.objects, tuple):
            for i, obj in enumerate(self.objects):
                if not isinstance(obj, TrajectoryObject):
                    raise TrajectoryError(f"objects[{i}]", f"must be a TrajectoryObject, got {_describe(obj)}; "
                                                           f"use parse_trajectory() for plain JSON data")
                if isinstance(obj.keyframes, tuple):
                    for j, kf in enumerate(obj.keyframes):
                        if not isinstance(kf, Keyframe):
                            raise TrajectoryError(f"objects[{i}].keyframes[{j}]",
                                                  f"must be a Keyframe, got {_describe(kf)}; "
                                                  f"use parse_trajectory() for plain JSON data")
        # One validator for parsed and hand-built trajectories alike.
        _check_document(self.to_dict())

    def to_dict(self) -> dict:
        """Plain JSON data in canonical form: fixed key order, default ease/visible left out."""
        objs = self.objects
        if isinstance(objs, (tuple, list)):
            objs = [o.to_dict() if isinstance(o, TrajectoryObject) else o for o in objs]
        return {"version": self.version, "frames": self.frames, "width": self.width,
                "height": self.height, "objects": objs}

    def to_json(self, pretty: bool = True) -> str:
        """Canonical JSON text; ``parse_trajectory(t.to_json()) == t``. ``pretty``: one keyframe
        per line (what the widget shows); otherwise one compact line."""
        d = self.to_dict()
        if not pretty:
            return json.dumps(d, separators=(",", ":"), allow_nan=False)

        def dump(v):
            return json.dumps(v, allow_nan=False)

        lines = ["{"]
        for key in ("version", "frames", "width", "height"):
            lines.append(f"  {dump(key)}: {dump(d[key])},")
        lines.append('  "objects": [')
        for i, o in enumerate(d["objects"]):
            lines.append(f'    {{"id": {dump(o["id"])}, "prompt": {dump(o["prompt"])}, "keyframes": [')
            kfs = o["keyframes"]
            for j, kf in enumerate(kfs):
                lines.append(f"      {dump(kf)}{',' if j < len(kfs) - 1 else ''}")
            lines.append(f"    ]}}{',' if i < len(d['objects']) - 1 else ''}")
        lines.append("  ]")
        lines.append("}")
        return "\n".join(lines)

    def with_overrides(self, frames: int | None = None, width: int | None = None,
                       height: int | None = None) -> "Trajectory":
        """A copy for another video size. ``width``/``height`` just replace (boxes are
        normalised). A new ``frames`` F' rescales every keyframe frame f of the old count F to
        ``round(f * (F'-1) / (F-1))``, rounded half up (as JS Math.round), so the first and last
        frames map onto each other; when F == 1 every keyframe is at 0 and stays there. Two
        keyframes of one object landing on the same frame is a TrajectoryError naming the object.
        """
        new = {}
        if width is not None:
            new["width"] = width
        if height is not None:
            new["height"] = height
        if frames is not None and frames != self.frames:
            if not _is_int(frames) or frames < 1:
                raise TrajectoryError("frames", f"must be a whole number >= 1, got {_describe(frames)}")
            frames = int(frames)
            old = self.frames
            objects = []
            for i, obj in enumerate(self.objects):
                kfs, seen = [], {}
                for j, kf in enumerate(obj.keyframes):
                    # Exact integer arithmetic: round half up of f*(F'-1)/(F-1).
                    f = 0 if old == 1 else (2 * kf.frame * (frames - 1) + (old - 1)) // (2 * (old - 1))
                    if f in seen:
                        raise TrajectoryError(
                            f"objects[{i}].keyframes",
                            f"object {obj.id!r}: keyframes at frames {obj.keyframes[seen[f]].frame} and "
                            f"{kf.frame} both land on frame {f} when rescaling {old} -> {frames} frames; "
                            f"remove one of them or use more frames")
                    seen[f] = j
                    kfs.append(replace(kf, frame=f))
                objects.append(replace(obj, keyframes=tuple(kfs)))
            new["frames"] = frames
            new["objects"] = tuple(objects)
        return replace(self, **new) if new else self


# --------------------------------------------------------------------------------------------
# Parsing and validation


class _JSONObject(dict):
    """A JSON object that remembers keys it saw more than once (plain json keeps the last)."""

    duplicate_keys: tuple = ()


def _object_pairs(pairs):
    obj = _JSONObject()
    dups = []
    for k, v in pairs:
        if k in obj:
            dups.append(k)
        obj[k] = v
    obj.duplicate_keys = tuple(dups)
    return obj


def load_json(text: str | bytes, field: str = DOCUMENT):
    """``json.loads`` that reports malformed text as a TrajectoryError with line and column, and
    keeps NaN/Infinity (which Python's json accepts) as floats for the validator to name."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    try:
        return json.loads(text, object_pairs_hook=_object_pairs)
    except json.JSONDecodeError as e:
        hint = "the text is empty" if not text.strip() else "check for a missing comma, quote or bracket there"
        raise TrajectoryError(field, f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}; {hint}",
                              line=e.lineno, column=e.colno) from None
    except RecursionError:
        raise TrajectoryError(field, "JSON nested too deeply (brackets inside brackets past Python's recursion limit); "
                                     "check the brackets") from None


def parse_trajectory(text_or_dict) -> Trajectory:
    """Parse and validate a Trajectory from JSON text (str/bytes), plain data (a dict as from
    ``json.loads``) or a ``Trajectory`` (returned as is). Raises :class:`TrajectoryError`."""
    if isinstance(text_or_dict, Trajectory):
        return text_or_dict
    data = load_json(text_or_dict) if isinstance(text_or_dict, (str, bytes, bytearray)) else text_or_dict
    _check_document(data)
    objects = tuple(
        TrajectoryObject(
            id=o["id"], prompt=o["prompt"],
            keyframes=tuple(
                Keyframe(frame=int(k["frame"]), box=tuple(float(v) for v in k["box"]),
                         ease=k.get("ease", "linear"), visible=bool(k.get("visible", True)))
                for k in o["keyframes"]))
        for o in data["objects"])
    return Trajectory(frames=int(data["frames"]), width=int(data["width"]), height=int(data["height"]),
                      objects=objects, version=int(data.get("version", VERSION)))


def _is_int(v) -> bool:
    # bool is an int subclass in Python; in this document true is never a number.
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _listify(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def _describe(v) -> str:
    """A value as the JSON author would recognise it."""
    if isinstance(v, (bool, np.bool_)):
        return f"{str(bool(v)).lower()} (a boolean)"
    if v is None:
        return "null"
    if isinstance(v, str):
        return f"the string {json.dumps(v)}"
    if isinstance(v, Mapping):
        return "an object {...}"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return _num(v) if _is_number(v) else f"a {type(v).__name__}"


def _num(v) -> str:
    """A number as JSON would write it (numpy scalars included)."""
    return str(int(v)) if _is_int(v) else repr(float(v))


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_fields(obj, path: str, allowed: tuple, required: tuple, what: str) -> None:
    if not isinstance(obj, Mapping):
        raise TrajectoryError(path or DOCUMENT, f"must be a JSON object {{...}} ({what}), got {_describe(obj)}")
    for key in getattr(obj, "duplicate_keys", ()):
        raise TrajectoryError(_join(path, key), f"field {key!r} appears more than once in {what}; keep one")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        others = f" (also unknown: {', '.join(repr(k) for k in unknown[1:])})" if len(unknown) > 1 else ""
        raise TrajectoryError(_join(path, unknown[0]),
                              f"unknown field {unknown[0]!r}{others} in {what}; "
                              f"allowed fields are {', '.join(allowed)}")
    for key in required:
        if key not in obj:
            raise TrajectoryError(_join(path, key), f"missing; {what} needs {', '.join(required)}")


def _check_int(v, path: str, lo: int, hi: int | None = None, fix: str = "") -> int:
    if not _is_int(v):
        if _is_number(v) and not math.isfinite(v):
            raise TrajectoryError(path, f"must be a finite whole number, got {_describe(v)}")
        raise TrajectoryError(path, f"must be a whole number, got {_describe(v)}{fix}")
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise TrajectoryError(path, f"must be {rng}, got {v}{fix}")
    return int(v)


def _check_text(v, path: str, example: str, longest: int) -> str:
    if not isinstance(v, str):
        raise TrajectoryError(path, f"must be a string, got {_describe(v)}; e.g. {json.dumps(example)}")
    if not v.strip():
        raise TrajectoryError(path, f"must not be empty; e.g. {json.dumps(example)}")
    if len(v) > longest:
        raise TrajectoryError(path, f"is {len(v)} characters long, at most {longest}; e.g. {json.dumps(example)}")
    return v


def _check_box(box, path: str) -> tuple:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise TrajectoryError(path, f"must be a list of 4 numbers, got {_describe(box)}; {_BOX_HINT}")
    for i, v in enumerate(box):
        if not _is_number(v):
            raise TrajectoryError(f"{path}[{i}]", f"must be a number, got {_describe(v)}; {_BOX_HINT}")
        if not math.isfinite(v):
            raise TrajectoryError(f"{path}[{i}]", f"must be a finite number, got {_describe(v)}; {_BOX_HINT}")
        if not 0.0 <= v <= 1.0:
            raise TrajectoryError(f"{path}[{i}]", f"{_num(v)} is outside 0..1; {_BOX_HINT} "
                                                  f"(normalised to the frame size, not pixels)")
    x0, y0, x1, y1 = box
    for a, b, lo, hi in ((x0, x1, "x0", "x1"), (y0, y1, "y0", "y1")):
        if a == b:
            raise TrajectoryError(path, f"{lo} ({_num(a)}) must be < {hi} ({_num(b)}): a zero-area box is not allowed; "
                                        f"{_BOX_HINT}")
        if a > b:
            raise TrajectoryError(path, f"{lo} ({_num(a)}) must be < {hi} ({_num(b)}); {_BOX_HINT}")
    return tuple(box)


def _check_keyframes(kfs, path: str, frames: int) -> None:
    if not isinstance(kfs, (list, tuple)):
        raise TrajectoryError(path, f"must be a list of keyframes, got {_describe(kfs)}")
    if not kfs:
        raise TrajectoryError(path, "is empty; give at least one keyframe, "
                                    'e.g. {"frame": 0, "box": [0.1, 0.1, 0.4, 0.6]}')
    prev = None  # (index, frame) of the previous keyframe
    for j, kf in enumerate(kfs):
        p = f"{path}[{j}]"
        _check_fields(kf, p, _KEYFRAME_FIELDS, ("frame", "box"), "a keyframe")
        frame = _check_int(kf["frame"], f"{p}.frame", 0, frames - 1,
                           f"; keyframe frames run from 0 to frames-1 = {frames - 1}")
        if prev is not None and frame == prev[1]:
            raise TrajectoryError(f"{p}.frame", f"frame {frame} already has a keyframe ({path}[{prev[0]}]); "
                                                f"an object may have one keyframe per frame: remove one")
        if prev is not None and frame < prev[1]:
            raise TrajectoryError(f"{p}.frame", f"frame {frame} comes after frame {prev[1]} ({path}[{prev[0]}]); "
                                                f"list keyframes in increasing frame order")
        prev = (j, frame)
        _check_box(kf["box"], f"{p}.box")
        ease = kf.get("ease", "linear")
        if not isinstance(ease, str) or ease not in EASES:
            raise TrajectoryError(f"{p}.ease", f"unknown ease {_describe(ease)}; use one of {', '.join(EASES)}")
        visible = kf.get("visible", True)
        if not isinstance(visible, bool):
            raise TrajectoryError(f"{p}.visible", f"must be true or false, got {_describe(visible)}")


def _check_document(data) -> None:
    """Validate plain JSON data; raises TrajectoryError naming the first bad field."""
    _check_fields(data, "", _TOP_FIELDS, ("frames", "width", "height", "objects"), "a trajectory document")
    version = data.get("version", VERSION)
    _check_int(version, "version", 1)
    if version != VERSION:
        raise TrajectoryError("version", f"this pack reads version {VERSION} documents, this one is version "
                                         f"{version}; update Box Director, or write it as version {VERSION}")
    frames = _check_int(data["frames"], "frames", 1, MAX_FRAMES, "; frames is the number of pixel frames")
    width = _check_int(data["width"], "width", 1, MAX_SIZE, "; width is in pixels")
    height = _check_int(data["height"], "height", 1, MAX_SIZE, "; height is in pixels")
    if frames * width * height > MAX_PIXELS:
        raise TrajectoryError("frames", f"{frames} frames of {width} x {height} is {frames * width * height:,} pixels, "
                                        f"more than the {MAX_PIXELS:,} a trajectory may cover (its masks would not "
                                        "fit in memory); use fewer frames or a smaller size")
    objects = data["objects"]
    if not isinstance(objects, (list, tuple)):
        raise TrajectoryError("objects", f"must be a list of objects, got {_describe(objects)}")
    if not objects:
        raise TrajectoryError("objects", 'is empty; give at least one object, e.g. '
                                         '{"id": "cat", "prompt": "a black cat", "keyframes": [...]}')
    ids = {}
    for i, obj in enumerate(objects):
        p = f"objects[{i}]"
        _check_fields(obj, p, _OBJECT_FIELDS, _OBJECT_FIELDS, "an object")
        oid = _check_text(obj["id"], f"{p}.id", "cat", MAX_ID)
        if oid in ids:
            raise TrajectoryError(f"{p}.id", f"id {oid!r} is already used by objects[{ids[oid]}]; ids must be unique")
        ids[oid] = i
        _check_text(obj["prompt"], f"{p}.prompt", "a black cat", MAX_PROMPT)
        _check_keyframes(obj["keyframes"], f"{p}.keyframes", frames)


# --------------------------------------------------------------------------------------------
# Sampling


def _ease(name: str, t: np.ndarray) -> np.ndarray:
    if name == "linear":
        return t
    if name == "ease_in":
        return t * t
    if name == "ease_out":
        return 1.0 - (1.0 - t) ** 2
    if name == "ease_in_out":
        return t * t * (3.0 - 2.0 * t)
    if name == "hold":
        return np.zeros_like(t)
    raise ValueError(f"no closed form for ease {name!r}")


def _pchip_tangents(frames: np.ndarray, values: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """Tangents (value per frame) at the keyframes of one coordinate for the ``smooth`` runs.

    ``smooth[i]``: segment i (keyframe i -> i+1) is smooth. Knots at the ends of a run get zero
    tangent; interior knots get the weighted harmonic mean of the two secants, or zero where the
    secants differ in sign or one is flat (a local extremum): monotone on every segment.
    """
    n = len(frames)
    d = np.zeros(n)
    h = np.diff(frames).astype(np.float64)
    delta = np.diff(values) / h
    for k in range(1, n - 1):
        if not (smooth[k - 1] and smooth[k]):
            continue
        a, b = delta[k - 1], delta[k]
        if a * b <= 0.0:
            continue
        w1, w2 = 2.0 * h[k] + h[k - 1], h[k] + 2.0 * h[k - 1]
        d[k] = (w1 + w2) / (w1 / a + w2 / b)
    return d


def _hermite_fraction(t: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """The monotone fraction S(t) (S(0)=0, S(1)=1) of a cubic Hermite segment whose end slopes,
    relative to the secant, are alpha and beta (both in [0, 3] for PCHIP tangents)."""
    t2, t3 = t * t, t * t * t
    s = (3.0 * t2 - 2.0 * t3) + alpha * (t3 - 2.0 * t2 + t) + beta * (t3 - t2)
    # Guard against rounding only: for alpha, beta in [0, 3] S is monotone from 0 to 1.
    return np.clip(s, 0.0, 1.0)


def _sample_object(obj: TrajectoryObject, frames: int) -> tuple[np.ndarray, np.ndarray]:
    kfs = obj.keyframes
    n = len(kfs)
    kf_frames = np.array([kf.frame for kf in kfs], dtype=np.int64)
    kf_boxes = np.array([kf.box for kf in kfs], dtype=np.float64)  # [n, 4]
    kf_vis = np.array([kf.visible for kf in kfs], dtype=bool)

    # Index of the last keyframe at or before each frame; frames before the first keyframe take
    # the first one (hold). Keyframe frames thus get their keyframe's box exactly.
    last = np.searchsorted(kf_frames, np.arange(frames), side="right") - 1
    last = np.clip(last, 0, n - 1)
    boxes = kf_boxes[last]
    visible = kf_vis[last]

    smooth = np.array([kf.ease == "smooth" for kf in kfs[:-1]], dtype=bool)
    if smooth.any():
        centres = 0.5 * (kf_boxes[:, :2] + kf_boxes[:, 2:])  # [n, 2] (cx, cy)
        tangents = np.stack([_pchip_tangents(kf_frames, centres[:, a], smooth) for a in range(2)], 1)

    for i in range(n - 1):
        a, b = int(kf_frames[i]), int(kf_frames[i + 1])
        if b - a < 2:
            continue  # no frame strictly between the two keyframes
        t = (np.arange(a + 1, b, dtype=np.float64) - a) / (b - a)
        if kfs[i].ease == "smooth":
            h = float(b - a)
            fractions = []
            for axis in range(2):
                delta = centres[i + 1, axis] - centres[i, axis]
                if delta == 0.0:  # flat centre: PCHIP gives zero tangents at both ends
                    alpha = beta = 0.0
                else:
                    alpha = tangents[i, axis] * h / delta
                    beta = tangents[i + 1, axis] * h / delta
                fractions.append(_hermite_fraction(t, alpha, beta))
            s = np.stack([fractions[0], fractions[1], fractions[0], fractions[1]], 1)  # x0 y0 x1 y1
        else:
            s = _ease(kfs[i].ease, t)[:, None]
        boxes[a + 1:b] = (1.0 - s) * kf_boxes[i] + s * kf_boxes[i + 1]
    return boxes, visible


def sample_boxes(traj: Trajectory, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel-frame boxes ``[K, F, 4]`` (normalised x0, y0, x1, y1; ``dtype``, float32 by
    default) and visibility ``[K, F]`` (bool), objects in document order. Keyframes are hit
    exactly; every box lies in 0..1 with x0 <= x1 and y0 <= y1 (see the module docstring)."""
    traj = parse_trajectory(traj)
    k, f = len(traj.objects), traj.frames
    boxes = np.empty((k, f, 4), dtype=np.float64)
    visible = np.empty((k, f), dtype=bool)
    for i, obj in enumerate(traj.objects):
        boxes[i], visible[i] = _sample_object(obj, f)
    return torch.from_numpy(boxes).to(dtype), torch.from_numpy(visible)


# --------------------------------------------------------------------------------------------


def example_trajectory() -> Trajectory:
    """The widget's default: a red ball rolling left to right (ease_in_out) and a blue cube that
    drifts along a smooth curve, is hidden for frames 55-64 and reappears; 81 frames at 832x480
    (Wan 2.x's default size)."""
    return Trajectory(
        frames=81, width=832, height=480,
        objects=(
            TrajectoryObject(id="ball", prompt="a red ball", keyframes=(
                Keyframe(0, (0.05, 0.55, 0.25, 0.90), ease="ease_in_out"),
                Keyframe(80, (0.70, 0.55, 0.90, 0.90)),
            )),
            TrajectoryObject(id="cube", prompt="a blue cube", keyframes=(
                Keyframe(0, (0.60, 0.10, 0.85, 0.45), ease="smooth"),
                Keyframe(30, (0.45, 0.15, 0.70, 0.50), ease="smooth"),
                Keyframe(55, (0.30, 0.10, 0.55, 0.45), visible=False),
                Keyframe(65, (0.15, 0.20, 0.40, 0.55)),
            )),
        ),
    )


__all__ = [
    "VERSION", "EASES", "DOCUMENT", "TrajectoryError", "Keyframe", "TrajectoryObject", "Trajectory",
    "parse_trajectory", "load_json", "sample_boxes", "example_trajectory",
]
