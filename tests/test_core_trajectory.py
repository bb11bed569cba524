"""The Trajectory document: parsing, validation errors, canonical JSON, sampling, overrides."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boxdirector.core.trajectory import (EASES, Keyframe, Trajectory, TrajectoryError, TrajectoryObject,
                                         example_trajectory, parse_trajectory, sample_boxes)

pytestmark = pytest.mark.core

FAST = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------------------------
# Strategies


@st.composite
def boxes(draw):
    """A valid box: two distinct sorted values per axis, bounds 0 and 1 included."""
    xs = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2, unique=True)))
    ys = sorted(draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2, unique=True)))
    return (xs[0], ys[0], xs[1], ys[1])


names = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")


@st.composite
def trajectories(draw, eases=st.sampled_from(EASES), max_frames=60, any_text=False):
    """Valid trajectories. ``any_text``: arbitrary unicode ids/prompts (slower to generate; the
    sampling properties do not depend on them)."""
    frames = draw(st.integers(1, max_frames))
    k = draw(st.integers(1, 3))
    ids = draw(st.lists(names, min_size=k, max_size=k, unique=True)) if any_text else [f"o{i}" for i in range(k)]
    objects = []
    for oid in ids:
        n = draw(st.integers(1, min(6, frames)))
        kf_frames = sorted(draw(st.lists(st.integers(0, frames - 1), min_size=n, max_size=n, unique=True)))
        kfs = tuple(Keyframe(f, draw(boxes()), draw(eases), draw(st.booleans())) for f in kf_frames)
        prompt = draw(names) if any_text else draw(st.sampled_from(["a cat", "a red ball", "two dogs"]))
        objects.append(TrajectoryObject(oid, prompt, kfs))
    return Trajectory(frames=frames, width=draw(st.integers(1, 4096)), height=draw(st.integers(1, 4096)),
                      objects=tuple(objects))


def last_keyframe_index(obj: TrajectoryObject, f: int) -> int:
    """Index of the keyframe in force at frame f (the first one before it)."""
    idx = 0
    for j, kf in enumerate(obj.keyframes):
        if kf.frame <= f:
            idx = j
    return idx


# --------------------------------------------------------------------------------------------
# Sampling properties


@FAST
@given(trajectories())
def test_keyframes_are_hit_exactly(traj):
    b, v = sample_boxes(traj)
    assert b.dtype == torch.float32 and v.dtype == torch.bool
    assert b.shape == (len(traj.objects), traj.frames, 4) and v.shape == (len(traj.objects), traj.frames)
    for k, obj in enumerate(traj.objects):
        for kf in obj.keyframes:
            assert torch.equal(b[k, kf.frame], torch.tensor(kf.box, dtype=torch.float32))
            assert bool(v[k, kf.frame]) == kf.visible


@FAST
@given(trajectories())
def test_boxes_stay_inside_the_frame_and_ordered(traj):
    b, _ = sample_boxes(traj)
    assert torch.all(b >= 0) and torch.all(b <= 1)
    assert torch.all(b[..., 0] <= b[..., 2]) and torch.all(b[..., 1] <= b[..., 3])


@FAST
@given(trajectories())
def test_no_overshoot_every_coordinate_is_monotone_between_its_keyframes(traj):
    """For every ease (smooth included) each coordinate moves monotonically from one keyframe
    value to the next: never beyond either, never back."""
    b, _ = sample_boxes(traj, dtype=torch.float64)
    b = b.numpy()
    for k, obj in enumerate(traj.objects):
        for a, z in zip(obj.keyframes[:-1], obj.keyframes[1:]):
            seg = b[k, a.frame:z.frame + 1]  # includes both keyframes
            lo = np.minimum(a.box, z.box) - 1e-12
            hi = np.maximum(a.box, z.box) + 1e-12
            assert np.all(seg >= lo) and np.all(seg <= hi)
            direction = np.sign(np.array(z.box) - np.array(a.box))
            steps = np.diff(seg, axis=0) * direction
            assert np.all(steps >= -1e-12), (a.ease, seg)


@FAST
@given(trajectories())
def test_box_and_visibility_hold_outside_the_keyframes_and_follow_the_flags(traj):
    b, v = sample_boxes(traj)
    for k, obj in enumerate(traj.objects):
        first, last = obj.keyframes[0], obj.keyframes[-1]
        for f in range(traj.frames):
            kf = obj.keyframes[last_keyframe_index(obj, f)]
            assert bool(v[k, f]) == kf.visible  # a flag holds until the next keyframe
        for f in range(0, first.frame):
            assert torch.equal(b[k, f], b[k, first.frame])
        for f in range(last.frame, traj.frames):
            assert torch.equal(b[k, f], b[k, last.frame])


@FAST
@given(trajectories(eases=st.just("hold")))
def test_hold_stays_then_jumps(traj):
    b, _ = sample_boxes(traj)
    for k, obj in enumerate(traj.objects):
        for a, z in zip(obj.keyframes[:-1], obj.keyframes[1:]):
            want = torch.tensor(a.box, dtype=torch.float32)
            for f in range(a.frame, z.frame):
                assert torch.equal(b[k, f], want)
            assert torch.equal(b[k, z.frame], torch.tensor(z.box, dtype=torch.float32))


def _one_object(keyframes, frames=41):
    return Trajectory(frames=frames, width=832, height=480,
                      objects=(TrajectoryObject("o", "a thing", tuple(keyframes)),))


@pytest.mark.parametrize("ease, curve", [
    ("linear", lambda t: t),
    ("ease_in", lambda t: t * t),
    ("ease_out", lambda t: 1 - (1 - t) ** 2),
    ("ease_in_out", lambda t: t * t * (3 - 2 * t)),
    ("smooth", lambda t: t * t * (3 - 2 * t)),  # a lone smooth segment starts and ends at rest
])
def test_ease_curves(ease, curve):
    traj = _one_object([Keyframe(0, (0.0, 0.0, 0.5, 0.5), ease), Keyframe(40, (0.5, 0.5, 1.0, 1.0))])
    b, _ = sample_boxes(traj, dtype=torch.float64)
    t = torch.arange(41, dtype=torch.float64) / 40
    assert torch.allclose(b[0, :, 0], 0.5 * curve(t), atol=1e-12)


def test_smooth_run_is_a_c1_spline_through_the_centres():
    """Across an interior keyframe of a smooth run the centre's velocity is continuous (unlike
    linear, which kinks), and the path bends: it is not the linear interpolation."""
    kfs = [Keyframe(0, (0.0, 0.0, 0.2, 0.2), "smooth"), Keyframe(200, (0.4, 0.3, 0.6, 0.5), "smooth"),
           Keyframe(400, (0.5, 0.8, 0.7, 1.0))]
    b, _ = sample_boxes(_one_object(kfs, frames=401), dtype=torch.float64)
    cx = (0.5 * (b[0, :, 0] + b[0, :, 2])).numpy()
    # Second-order one-sided slopes at frame 200 (linear would give 0.002 vs 0.0005).
    left = (3 * cx[200] - 4 * cx[199] + cx[198]) / 2
    right = (-3 * cx[200] + 4 * cx[201] - cx[202]) / 2
    assert abs(left - right) < 1e-3 * abs(left)
    lin, _ = sample_boxes(_one_object([Keyframe(k.frame, k.box) for k in kfs], frames=401), dtype=torch.float64)
    assert not torch.allclose(b, lin)


def test_smooth_flattens_at_a_local_extremum():
    """x goes 0.2 -> 0.6 -> 0.2: the spline turns at the keyframe, it never goes beyond 0.6."""
    kfs = [Keyframe(0, (0.1, 0.1, 0.3, 0.3), "smooth"), Keyframe(10, (0.5, 0.1, 0.7, 0.3), "smooth"),
           Keyframe(30, (0.1, 0.1, 0.3, 0.3))]
    b, _ = sample_boxes(_one_object(kfs), dtype=torch.float64)
    assert b[0, :, 2].max().item() == pytest.approx(0.7, abs=1e-15)


def test_visible_false_hides_until_the_next_visible_keyframe():
    kfs = [Keyframe(5, (0.1, 0.1, 0.2, 0.2)), Keyframe(10, (0.2, 0.1, 0.3, 0.2), visible=False),
           Keyframe(15, (0.3, 0.1, 0.4, 0.2), visible=False), Keyframe(20, (0.4, 0.1, 0.5, 0.2))]
    _, v = sample_boxes(_one_object(kfs, frames=30))
    assert v[0].tolist() == [True] * 10 + [False] * 10 + [True] * 10


# --------------------------------------------------------------------------------------------
# Canonical JSON


@FAST
@given(trajectories(any_text=True))
def test_json_round_trip(traj):
    assert parse_trajectory(traj.to_json()) == traj
    assert parse_trajectory(traj.to_json(pretty=False)) == traj
    assert parse_trajectory(traj.to_dict()) == traj
    assert parse_trajectory(traj) is traj
    assert json.loads(traj.to_json()) == json.loads(traj.to_json(pretty=False))
    assert hash(parse_trajectory(traj.to_json())) == hash(traj)


def test_canonical_form_leaves_defaults_out():
    traj = parse_trajectory({"frames": 3, "width": 8, "height": 8, "objects": [
        {"id": "a", "prompt": "a cat", "keyframes": [{"frame": 0, "box": [0, 0, 1, 1], "ease": "linear",
                                                      "visible": True}]}]})
    assert traj.version == 1  # "version" may be left out; it means 1
    assert traj.objects[0].keyframes[0] == Keyframe(0, (0.0, 0.0, 1.0, 1.0))
    assert traj.to_dict()["objects"][0]["keyframes"] == [{"frame": 0, "box": [0.0, 0.0, 1.0, 1.0]}]
    assert traj.to_dict()["version"] == 1


def test_the_briefs_example_document_parses():
    text = """{
      "version": 1,
      "frames": 81, "width": 832, "height": 480,
      "objects": [
        {"id": "cat", "prompt": "a black cat",
         "keyframes": [
           {"frame": 0,  "box": [0.10, 0.40, 0.30, 0.80], "ease": "ease_in_out"},
           {"frame": 40, "box": [0.40, 0.35, 0.62, 0.78]},
           {"frame": 80, "box": [0.70, 0.40, 0.90, 0.80], "visible": true}]}
      ]
    }"""
    traj = parse_trajectory(text)
    assert traj.objects[0].keyframes[0].ease == "ease_in_out"
    assert parse_trajectory(traj.to_json()) == traj


def test_example_trajectory_is_valid_and_has_two_objects():
    traj = example_trajectory()
    assert len(traj.objects) == 2
    assert parse_trajectory(traj.to_json()) == traj
    b, v = sample_boxes(traj)
    assert b.shape == (2, traj.frames, 4) and not bool(v.all())  # the cube hides for a while


# --------------------------------------------------------------------------------------------
# with_overrides


def test_with_overrides_rescales_frames_and_replaces_size():
    traj = _one_object([Keyframe(0, (0.1, 0.1, 0.2, 0.2)), Keyframe(20, (0.2, 0.1, 0.3, 0.2)),
                        Keyframe(40, (0.3, 0.1, 0.4, 0.2))])
    out = traj.with_overrides(frames=81, width=1280, height=720)
    assert [k.frame for k in out.objects[0].keyframes] == [0, 40, 80]
    assert (out.frames, out.width, out.height) == (81, 1280, 720)
    assert [k.box for k in out.objects[0].keyframes] == [k.box for k in traj.objects[0].keyframes]
    assert traj.with_overrides() is traj
    # f' = round(f * 4 / 40), half up: 0 -> 0, 20 -> 2, 40 -> 4.
    assert [k.frame for k in traj.with_overrides(frames=5).objects[0].keyframes] == [0, 2, 4]
    # Half up: 10 * 2 / 40 = 0.5 -> 1.
    two = _one_object([Keyframe(10, (0.1, 0.1, 0.2, 0.2))]).with_overrides(frames=3)
    assert two.objects[0].keyframes[0].frame == 1


def test_with_overrides_from_and_to_a_single_frame():
    one = _one_object([Keyframe(0, (0.1, 0.1, 0.2, 0.2))], frames=1)
    assert one.with_overrides(frames=10).objects[0].keyframes[0].frame == 0
    single = _one_object([Keyframe(7, (0.1, 0.1, 0.2, 0.2))], frames=10).with_overrides(frames=1)
    assert single.frames == 1 and single.objects[0].keyframes[0].frame == 0


def test_with_overrides_collision_names_the_object():
    traj = _one_object([Keyframe(0, (0.1, 0.1, 0.2, 0.2)), Keyframe(1, (0.2, 0.1, 0.3, 0.2)),
                        Keyframe(40, (0.3, 0.1, 0.4, 0.2))])
    with pytest.raises(TrajectoryError) as e:
        traj.with_overrides(frames=5)
    assert e.value.field == "objects[0].keyframes" and "'o'" in str(e.value)
    assert str(e.value).startswith("objects[0].keyframes: ")


@pytest.mark.parametrize("kw, field", [({"frames": 0}, "frames"), ({"width": 0}, "width"),
                                       ({"height": True}, "height"), ({"frames": 2.5}, "frames")])
def test_with_overrides_rejects_bad_sizes(kw, field):
    with pytest.raises(TrajectoryError) as e:
        example_trajectory().with_overrides(**kw)
    assert e.value.field == field


# --------------------------------------------------------------------------------------------
# Bad input: one test per case, each checking the error's field and that the message leads with it


def doc() -> dict:
    return {"version": 1, "frames": 81, "width": 832, "height": 480, "objects": [
        {"id": "cat", "prompt": "a black cat", "keyframes": [
            {"frame": 0, "box": [0.10, 0.40, 0.30, 0.80], "ease": "ease_in_out"},
            {"frame": 40, "box": [0.40, 0.35, 0.62, 0.78]},
            {"frame": 80, "box": [0.70, 0.40, 0.90, 0.80], "visible": True}]},
        {"id": "dog", "prompt": "a brown dog", "keyframes": [
            {"frame": 10, "box": [0.5, 0.5, 0.6, 0.6]}]}]}


def expect_error(data, field: str, *words: str) -> TrajectoryError:
    with pytest.raises(TrajectoryError) as e:
        parse_trajectory(data)
    err = e.value
    assert isinstance(err, ValueError)
    assert err.field == field, str(err)
    assert str(err).startswith(field + ": "), str(err)
    for w in words:
        assert w in str(err), str(err)
    return err


def edit(path_fn, value=None, delete=False) -> dict:
    d = doc()
    parent, key = path_fn(d)
    if delete:
        del parent[key]
    else:
        parent[key] = value
    return d


def kf(d, o=0, k=1):
    return d["objects"][o]["keyframes"][k]


def test_valid_document_parses():
    traj = parse_trajectory(doc())
    assert [o.id for o in traj.objects] == ["cat", "dog"]


def test_malformed_json_reports_line_and_column():
    text = json.dumps(doc(), indent=2).replace('"width": 832,', '"width": 832')
    err = expect_error(text, "document", "malformed JSON", "line 5")
    assert err.line == 5 and err.column is not None


def test_empty_text():
    expect_error("  ", "document", "empty")


def test_document_not_an_object():
    expect_error("[1, 2]", "document", "JSON object")


def test_box_value_above_one():
    expect_error(edit(lambda d: (kf(d)["box"], 2), 1.2), "objects[0].keyframes[1].box[2]", "1.2", "0..1")


def test_box_value_negative():
    expect_error(edit(lambda d: (kf(d)["box"], 0), -0.1), "objects[0].keyframes[1].box[0]", "-0.1", "0..1")


def test_box_in_pixels_is_out_of_range():
    d = doc()
    kf(d)["box"] = [100, 200, 300, 400]
    expect_error(d, "objects[0].keyframes[1].box[0]", "normalised")


def test_inverted_box():
    d = doc()
    kf(d)["box"] = [0.7, 0.35, 0.3, 0.78]
    expect_error(d, "objects[0].keyframes[1].box", "x0 (0.7) must be < x1 (0.3)", "[x0, y0, x1, y1]")


def test_inverted_box_y():
    d = doc()
    kf(d)["box"] = [0.1, 0.9, 0.3, 0.2]
    expect_error(d, "objects[0].keyframes[1].box", "y0 (0.9) must be < y1 (0.2)")


def test_zero_area_box():
    d = doc()
    kf(d)["box"] = [0.3, 0.35, 0.3, 0.78]
    expect_error(d, "objects[0].keyframes[1].box", "zero-area")


def test_box_wrong_length():
    expect_error(edit(lambda d: (kf(d), "box"), [0.1, 0.2, 0.3]), "objects[0].keyframes[1].box", "4 numbers")


def test_keyframe_frame_beyond_frames():
    expect_error(edit(lambda d: (kf(d, k=2), "frame"), 81), "objects[0].keyframes[2].frame", "81", "0 to frames-1 = 80")


def test_keyframe_frame_negative():
    expect_error(edit(lambda d: (kf(d, k=0), "frame"), -1), "objects[0].keyframes[0].frame", "-1")


def test_duplicate_keyframe_frames():
    expect_error(edit(lambda d: (kf(d, k=2), "frame"), 40), "objects[0].keyframes[2].frame",
                 "frame 40 already has a keyframe", "objects[0].keyframes[1]")


def test_unsorted_keyframes_are_an_error_not_sorted():
    expect_error(edit(lambda d: (kf(d, k=2), "frame"), 20), "objects[0].keyframes[2].frame",
                 "frame 20 comes after frame 40", "increasing")
    d = doc()
    d["objects"][0]["keyframes"].reverse()
    expect_error(d, "objects[0].keyframes[1].frame", "increasing frame order")


def test_duplicate_object_ids():
    expect_error(edit(lambda d: (d["objects"][1], "id"), "cat"), "objects[1].id", "'cat'", "objects[0]", "unique")


def test_no_objects():
    expect_error(edit(lambda d: (d, "objects"), []), "objects", "at least one object")


def test_objects_not_a_list():
    expect_error(edit(lambda d: (d, "objects"), {"id": "cat"}), "objects", "list")


def test_object_with_no_keyframes():
    expect_error(edit(lambda d: (d["objects"][1], "keyframes"), []), "objects[1].keyframes", "at least one keyframe")


def test_nan_in_box_from_json_text():
    text = json.dumps(doc()).replace("0.62", "NaN")
    expect_error(text, "objects[0].keyframes[1].box[2]", "NaN")


def test_infinity_from_json_text():
    text = json.dumps(doc()).replace('"frames": 81', '"frames": Infinity')
    expect_error(text, "frames", "finite")
    text = json.dumps(doc()).replace("0.62", "1e999")  # overflows to inf
    expect_error(text, "objects[0].keyframes[1].box[2]", "Infinity")


def test_nan_in_a_dict():
    expect_error(edit(lambda d: (kf(d)["box"], 1), float("nan")), "objects[0].keyframes[1].box[1]", "NaN")
    expect_error(edit(lambda d: (d, "width"), float("inf")), "width", "finite")


def test_unknown_top_level_field():
    d = doc()
    d["fps"] = 16
    d["seed"] = 1
    expect_error(d, "fps", "unknown field 'fps'", "'seed'", "version, frames, width, height, objects")


def test_unknown_object_field():
    expect_error(edit(lambda d: (d["objects"][0], "colour"), "black"), "objects[0].colour",
                 "unknown field 'colour'", "id, prompt, keyframes")


def test_unknown_keyframe_field():
    expect_error(edit(lambda d: (kf(d), "rotation"), 10), "objects[0].keyframes[1].rotation",
                 "unknown field 'rotation'", "frame, box, ease, visible")


def test_duplicate_json_key():
    text = json.dumps(doc()).replace('"frames": 81', '"frames": 81, "frames": 49')
    expect_error(text, "frames", "more than once")


def test_missing_field():
    expect_error(edit(lambda d: (d["objects"][1], "prompt"), delete=True), "objects[1].prompt", "missing")
    expect_error(edit(lambda d: (d, "frames"), delete=True), "frames", "missing")
    expect_error(edit(lambda d: (kf(d), "box"), delete=True), "objects[0].keyframes[1].box", "missing")


def test_unknown_ease():
    expect_error(edit(lambda d: (kf(d), "ease"), "bounce"), "objects[0].keyframes[1].ease",
                 '"bounce"', "linear, ease_in, ease_out, ease_in_out, hold, smooth")


def test_higher_version():
    expect_error(edit(lambda d: (d, "version"), 2), "version", "reads version 1", "version 2")


def test_version_zero_and_wrong_type():
    expect_error(edit(lambda d: (d, "version"), 0), "version", ">= 1")
    expect_error(edit(lambda d: (d, "version"), "1"), "version", "whole number", '"1"')


def test_string_where_number_expected():
    expect_error(edit(lambda d: (kf(d)["box"], 0), "0.4"), "objects[0].keyframes[1].box[0]", "number", '"0.4"')
    expect_error(edit(lambda d: (d, "frames"), "81"), "frames", "whole number", '"81"')
    expect_error(edit(lambda d: (kf(d), "frame"), "40"), "objects[0].keyframes[1].frame", "whole number")


def test_bool_where_int_expected():
    # bool is an int subclass in Python; JSON true is never a number here.
    expect_error(edit(lambda d: (d, "frames"), True), "frames", "boolean")
    expect_error(edit(lambda d: (kf(d, k=0), "frame"), False), "objects[0].keyframes[0].frame", "boolean")
    expect_error(edit(lambda d: (kf(d)["box"], 3), True), "objects[0].keyframes[1].box[3]", "boolean")
    expect_error(edit(lambda d: (d, "width"), True), "width", "boolean")


def test_float_where_int_expected():
    expect_error(edit(lambda d: (d, "frames"), 81.0), "frames", "whole number")
    expect_error(edit(lambda d: (kf(d), "frame"), 40.5), "objects[0].keyframes[1].frame", "40.5")


def test_non_positive_sizes():
    expect_error(edit(lambda d: (d, "frames"), 0), "frames", "in 1..")
    expect_error(edit(lambda d: (d, "width"), -832), "width", "in 1..")


def test_sizes_past_what_video_models_use_are_refused():
    # The README's limits: frames <= 1025, width and height <= 4096, frames x width x height <= 2^30.
    expect_error(edit(lambda d: (d, "frames"), 1026), "frames", "1..1025", "1026")
    expect_error(edit(lambda d: (d, "frames"), 200000), "frames", "1..1025")
    expect_error(edit(lambda d: (d, "frames"), 1e30), "frames", "whole number")
    expect_error(edit(lambda d: (d, "width"), 4097), "width", "1..4096")
    expect_error(edit(lambda d: (d, "height"), 100000), "height", "1..4096")
    big = edit(lambda d: (d, "frames"), 1025)
    big.update(width=4096, height=4096)
    expect_error(big, "frames", "pixels", "fewer frames")
    ok = edit(lambda d: (d, "frames"), 1025)
    ok.update(width=1280, height=720)
    assert parse_trajectory(json.dumps(ok)).frames == 1025


def test_deep_nesting_and_huge_ids_are_named_not_crashes():
    expect_error("[" * 100000, "document", "nested too deeply")
    expect_error('{"objects": ' * 100000, "document", "nested too deeply")
    expect_error(edit(lambda d: (d["objects"][0], "id"), "x" * 5_000_000), "objects[0].id", "characters")


def test_visible_must_be_a_bool():
    expect_error(edit(lambda d: (kf(d), "visible"), 1), "objects[0].keyframes[1].visible", "true or false")
    expect_error(edit(lambda d: (kf(d), "visible"), "false"), "objects[0].keyframes[1].visible", "true or false")


def test_empty_or_non_string_id_and_prompt():
    expect_error(edit(lambda d: (d["objects"][0], "id"), ""), "objects[0].id", "empty")
    expect_error(edit(lambda d: (d["objects"][0], "id"), 3), "objects[0].id", "string")
    expect_error(edit(lambda d: (d["objects"][0], "prompt"), "   "), "objects[0].prompt", "empty")


def test_keyframe_not_an_object():
    d = doc()
    d["objects"][0]["keyframes"][1] = [40, [0.4, 0.35, 0.62, 0.78]]
    expect_error(d, "objects[0].keyframes[1]", "JSON object")


def test_building_a_trajectory_in_code_validates_too():
    with pytest.raises(TrajectoryError) as e:
        _one_object([Keyframe(0, (0.5, 0.1, 0.2, 0.2))])
    assert e.value.field == "objects[0].keyframes[0].box"
    with pytest.raises(TrajectoryError) as e:
        _one_object([Keyframe(True, (0.1, 0.1, 0.2, 0.2))])
    assert e.value.field == "objects[0].keyframes[0].frame"
    with pytest.raises(TrajectoryError) as e:
        Trajectory(frames=3, width=8, height=8, objects=({"id": "a"},))
    assert e.value.field == "objects[0]"
    # Lists are normalised to tuples, so equality and hashing work.
    traj = Trajectory(3, 8, 8, [TrajectoryObject("a", "a cat", [Keyframe(0, [0, 0, 1, 1])])])
    assert traj.objects[0].keyframes[0].box == (0.0, 0.0, 1.0, 1.0)
    hash(traj)


def test_parsing_does_not_mutate_its_input():
    d = doc()
    before = copy.deepcopy(d)
    parse_trajectory(d)
    assert d == before
