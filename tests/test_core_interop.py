"""Converters between the Trajectory and KJNodes coordinates / BBOX, ComfyUI TRACKS and MASKs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boxdirector.core.interop import (from_kjnodes_bbox, from_kjnodes_coordinates, from_masks, from_tracks, merge,
                                      parse_kjnodes_coordinates, to_box_lists, to_kjnodes_coordinates, to_tracks)
from boxdirector.core.masks import box_masks
from boxdirector.core.trajectory import TrajectoryError, parse_trajectory, sample_boxes

pytestmark = pytest.mark.core

FAST = settings(max_examples=30, deadline=None)


@st.composite
def kj_coordinates(draw):
    """Integer-pixel KJNodes paths anywhere in the frame (edges included), and the box size."""
    w, h = draw(st.integers(16, 512)), draw(st.integers(16, 512))
    box_w, box_h = draw(st.integers(1, w)), draw(st.integers(1, h))
    n, t = draw(st.integers(1, 3)), draw(st.integers(1, 20))
    point = st.fixed_dictionaries({"x": st.integers(0, w), "y": st.integers(0, h)})
    paths = [draw(st.lists(point, min_size=t, max_size=t)) for _ in range(n)]
    return paths, box_w, box_h, w, h


def assert_error(fn, field, *words):
    with pytest.raises(TrajectoryError) as e:
        fn()
    assert e.value.field == field, str(e.value)
    assert str(e.value).startswith(field + ": ")
    for w in words:
        assert w in str(e.value), str(e.value)
    return e.value


# --------------------------------------------------------------------------------------------
# KJNodes coordinates


@FAST
@given(kj_coordinates())
def test_kjnodes_coordinates_round_trip_exactly(case):
    paths, box_w, box_h, w, h = case
    prompts = [f"thing {i}" for i in range(len(paths))]
    traj = from_kjnodes_coordinates(paths, box_w, box_h, w, h, prompts)
    assert (traj.frames, traj.width, traj.height, len(traj.objects)) == (len(paths[0]), w, h, len(paths))
    assert all(len(o.keyframes) == traj.frames for o in traj.objects)  # one keyframe per frame
    assert to_kjnodes_coordinates(traj, box_w, box_h) == paths  # clipped edge boxes restored
    assert parse_trajectory(traj.to_json()) == traj
    # As JSON text (what the STRING socket carries), a single path unwrapped, and single quotes.
    assert from_kjnodes_coordinates(json.dumps(paths), box_w, box_h, w, h, prompts) == traj
    one = from_kjnodes_coordinates(json.dumps(paths[0]).replace('"', "'"), box_w, box_h, w, h, "thing 0")
    assert one.objects[0] == traj.objects[0]


@FAST
@given(kj_coordinates())
def test_kjnodes_round_trip_without_box_size_for_boxes_inside_the_frame(case):
    paths, box_w, box_h, w, h = case
    inside = [[p for p in path if box_w / 2 <= p["x"] <= w - box_w / 2 and box_h / 2 <= p["y"] <= h - box_h / 2]
              for path in paths]
    n = min(len(p) for p in inside)
    if n == 0:
        return
    paths = [p[:n] for p in inside]
    traj = from_kjnodes_coordinates(paths, box_w, box_h, w, h, ["x"] * len(paths), [str(i) for i in range(len(paths))])
    assert to_kjnodes_coordinates(traj) == paths
    boxes, visible = sample_boxes(traj, dtype=torch.float64)
    assert bool(visible.all())
    size = (boxes[..., 2:] - boxes[..., :2]) * torch.tensor([w, h], dtype=torch.float64)
    assert torch.allclose(size, torch.tensor([box_w, box_h], dtype=torch.float64).expand_as(size))


def test_kjnodes_points_near_the_edge_are_clipped_and_off_frame_is_hidden():
    coords = [{"x": 0, "y": 240}, {"x": 416, "y": 240}, {"x": -500, "y": 240}]
    traj = from_kjnodes_coordinates(coords, 64, 64, 832, 480, "a ball")
    kfs = traj.objects[0].keyframes
    assert kfs[0].box[0] == 0.0 and kfs[0].box[2] == pytest.approx(32 / 832)  # visible half
    assert kfs[1].box == pytest.approx((384 / 832, 208 / 480, 448 / 832, 272 / 480))
    assert kfs[0].visible and kfs[1].visible and not kfs[2].visible
    assert kfs[2].box == pytest.approx((0.0, 208 / 480, 1 / 832, 272 / 480))


def test_kjnodes_list_of_json_strings_and_float_points():
    a = [{"x": 100.25, "y": 50.5}, {"x": 120.125, "y": 60.0}]
    b = [{"x": 300.0, "y": 200.0}, {"x": 310.5, "y": 190.75}]
    traj = from_kjnodes_coordinates([json.dumps(a), json.dumps(b)], 40, 30, 832, 480, ["a", "b"], ["a", "b"])
    assert to_kjnodes_coordinates(traj) == [a, b]
    assert [o.id for o in traj.objects] == ["a", "b"]


def test_kjnodes_compact_keeps_only_needed_keyframes():
    line = [{"x": 100 + 5 * t, "y": 200} for t in range(41)]
    bend = [{"x": 100 + 5 * t, "y": 200 + (40 if t > 20 else 2 * t)} for t in range(41)]
    traj = from_kjnodes_coordinates([line, bend], 32, 32, 832, 480, ["a", "b"], compact=True)
    assert [k.frame for k in traj.objects[0].keyframes] == [0, 40]
    assert [k.frame for k in traj.objects[1].keyframes] == [0, 20, 40]
    dense = from_kjnodes_coordinates([line, bend], 32, 32, 832, 480, ["a", "b"])
    assert to_kjnodes_coordinates(traj) == to_kjnodes_coordinates(dense)


@FAST
@given(kj_coordinates(), st.sampled_from([0.25, 0.5, 2.0]))
def test_compact_stays_within_tolerance(case, tol):
    paths, box_w, box_h, w, h = case
    dense = from_kjnodes_coordinates(paths, box_w, box_h, w, h, ["x"] * len(paths))
    compact = from_kjnodes_coordinates(paths, box_w, box_h, w, h, ["x"] * len(paths), compact=True, tolerance=tol)
    bd, vd = sample_boxes(dense, dtype=torch.float64)
    bc, vc = sample_boxes(compact, dtype=torch.float64)
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    assert torch.equal(vd, vc)
    assert torch.all(((bd - bc) * scale).abs() <= tol + 1e-9)


def test_kjnodes_errors_name_the_field():
    ok = [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
    assert_error(lambda: from_kjnodes_coordinates([ok, ok[:1]], 8, 8, 64, 64, ["a", "b"]), "coordinates[1]",
                 "1 points", "2")
    assert_error(lambda: from_kjnodes_coordinates([{"x": 1}], 8, 8, 64, 64, "a"), "coordinates[0][0].y", "missing")
    assert_error(lambda: from_kjnodes_coordinates([{"x": "1", "y": 2}], 8, 8, 64, 64, "a"), "coordinates[0][0].x",
                 '"1"')
    assert_error(lambda: from_kjnodes_coordinates([{"x": float("nan"), "y": 2}], 8, 8, 64, 64, "a"),
                 "coordinates[0][0].x", "NaN")
    err = assert_error(lambda: from_kjnodes_coordinates('[{"x": 1, "y": 2}', 8, 8, 64, 64, "a"), "coordinates",
                       "line 1")
    assert err.column is not None
    assert_error(lambda: from_kjnodes_coordinates([], 8, 8, 64, 64, "a"), "coordinates", "non-empty")
    assert_error(lambda: from_kjnodes_coordinates([ok, ok], 8, 8, 64, 64, "a"), "prompts", "1 prompt(s) for 2 paths")
    assert_error(lambda: from_kjnodes_coordinates(ok, 8, 8, 64, 64, [""]), "prompts[0]", "non-empty")
    assert_error(lambda: from_kjnodes_coordinates([ok, ok], 8, 8, 64, 64, ["a", "b"], ["x", "x"]), "ids[1]", "twice")
    assert_error(lambda: from_kjnodes_coordinates(ok, 0, 8, 64, 64, "a"), "box_w", "> 0")
    assert_error(lambda: from_kjnodes_coordinates(ok, 8, 8, 64.0, 64, "a"), "width", "whole number")
    traj = from_kjnodes_coordinates(ok, 8, 8, 64, 64, "a")
    assert_error(lambda: to_kjnodes_coordinates(traj, -8, 8), "box_w", "> 0")


# --------------------------------------------------------------------------------------------
# ComfyUI TRACKS (WanMove layout: track_path [T, N, 2] x/y pixels, track_visibility [T, N] bool)


@FAST
@given(st.data())
def test_tracks_round_trip(data):
    w, h = data.draw(st.integers(16, 512)), data.draw(st.integers(16, 512))
    t, n = data.draw(st.integers(1, 16)), data.draw(st.integers(1, 4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    path = torch.from_numpy(rng.uniform(0, 1, (t, n, 2)) * np.array([w, h])).to(torch.float32)
    vis = torch.from_numpy(rng.uniform(size=(t, n)) < 0.8)
    box_w, box_h = data.draw(st.integers(1, w)), data.draw(st.integers(1, h))
    traj = from_tracks(path, vis, box_w, box_h, w, h, [f"p{i}" for i in range(n)])
    out = to_tracks(traj, box_w, box_h)
    assert out["track_path"].shape == (t, n, 2) and out["track_path"].dtype == torch.float32
    assert out["track_visibility"].dtype == torch.bool
    assert torch.allclose(out["track_path"], path, atol=1e-3)  # pixel outputs rounded to 1/1000 px
    assert torch.equal(out["track_visibility"], vis)
    # The whole TRACKS dict is accepted too, and from_tracks(to_tracks(x)) is a fixed point.
    assert from_tracks({"track_path": path, "track_visibility": vis}, None, box_w, box_h, w, h,
                       [f"p{i}" for i in range(n)]) == traj


def test_tracks_visibility_shapes():
    path = torch.tensor([[[10.0, 10.0], [50.0, 50.0]], [[20.0, 10.0], [60.0, 50.0]]])  # [T=2, N=2, 2]
    traj = from_tracks(path, None, 8, 8, 64, 64, ["a", "b"])
    assert bool(sample_boxes(traj)[1].all())
    # ComfyUI's mask-derived visibility is [T, 1]: one column for every track.
    traj = from_tracks(path, torch.tensor([[True], [False]]), 8, 8, 64, 64, ["a", "b"])
    assert sample_boxes(traj)[1].tolist() == [[True, False], [True, False]]
    assert_error(lambda: from_tracks(path, torch.ones(3, 2), 8, 8, 64, 64, ["a", "b"]), "track_visibility", "[2, 2]")
    assert_error(lambda: from_tracks(path[..., 0], None, 8, 8, 64, 64, ["a", "b"]), "track_path", "[T, N, 2]")
    assert_error(lambda: from_tracks(path, None, 8, 8, 64, 64, ["a"]), "prompts", "2 tracks")
    bad = path.clone()
    bad[1, 0, 0] = float("inf")
    assert_error(lambda: from_tracks(bad, None, 8, 8, 64, 64, ["a", "b"]), "track_path", "finite")


def test_track_points_off_the_frame_are_hidden():
    path = torch.tensor([[[10.0, 10.0]], [[-100.0, 10.0]], [[-2.0, 10.0]]])
    traj = from_tracks(path, None, 8, 8, 64, 64, "a")
    assert sample_boxes(traj)[1].tolist() == [[True, False, True]]  # -2 still overlaps by 2 px


# --------------------------------------------------------------------------------------------
# KJNodes BBOX


@FAST
@given(st.data())
def test_kjnodes_bbox_round_trip_through_box_lists(data):
    w, h = data.draw(st.integers(8, 512)), data.draw(st.integers(8, 512))
    t = data.draw(st.integers(1, 12))
    bboxes = []
    for _ in range(t):
        x, y = data.draw(st.integers(0, w - 1)), data.draw(st.integers(0, h - 1))
        bboxes.append((x, y, data.draw(st.integers(1, w - x)), data.draw(st.integers(1, h - y))))
    traj = from_kjnodes_bbox(bboxes, w, h, "a red car", "car")
    assert traj.objects[0].id == "car" and traj.frames == t
    assert to_box_lists(traj) == [[[x, y, x + bw, y + bh] for x, y, bw, bh in bboxes]]


def test_kjnodes_bbox_clips_and_hides_empty_boxes():
    bboxes = [(0, 0, 0, 0), (10, 10, 20, 20), (50, 50, 0, 10), (60, 60, 20, 20), (200, 200, 5, 5)]
    traj = from_kjnodes_bbox(bboxes, 64, 64, "a car")
    lists = to_box_lists(traj)[0]
    assert lists == [None, [10, 10, 30, 30], None, [60, 60, 64, 64], None]
    kfs = traj.objects[0].keyframes
    # Hidden frames hold the last box seen (the first one before it).
    assert kfs[0].box == kfs[1].box and kfs[2].box == kfs[1].box and kfs[4].box == kfs[3].box
    assert from_kjnodes_bbox((10, 10, 20, 20), 64, 64, "a car").frames == 1  # one bare (x, y, w, h)
    assert_error(lambda: from_kjnodes_bbox([(0, 0, 0, 0)], 64, 64, "a car"), "bboxes", "no box in any frame")
    assert_error(lambda: from_kjnodes_bbox([(0, 0, 1)], 64, 64, "a car"), "bboxes", "(x, y, w, h)")
    assert_error(lambda: from_kjnodes_bbox([(0, 0, 1, 1)], 64, 64, ""), "prompt", "non-empty")
    assert_error(lambda: from_kjnodes_bbox([(0, 0, 1, 1)], 64, 64, "a car", 5), "id", "string")


# --------------------------------------------------------------------------------------------
# MASK sequences


@FAST
@given(st.data())
def test_from_masks_recovers_boxes_within_a_pixel(data):
    w, h = data.draw(st.integers(8, 64)), data.draw(st.integers(8, 64))
    k, f = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 5))
    boxes = torch.empty(k, f, 4, dtype=torch.float64)
    for i in range(k):
        for j in range(f):
            x0 = data.draw(st.floats(0, w - 2.0))
            y0 = data.draw(st.floats(0, h - 2.0))
            x1 = data.draw(st.floats(x0 + 2.0, w))
            y1 = data.draw(st.floats(y0 + 2.0, h))
            boxes[i, j] = torch.tensor([x0 / w, y0 / h, x1 / w, y1 / h])
    visible = torch.tensor([[data.draw(st.booleans()) for _ in range(f)] for _ in range(k)])
    visible[:, 0] = True  # an object needs one frame where it is seen
    masks = box_masks(boxes, visible, h, w)
    traj = from_masks(masks if k > 1 else masks[0], [f"o{i}" for i in range(k)])
    assert (traj.frames, traj.width, traj.height) == (f, w, h)
    got, vis = sample_boxes(traj, dtype=torch.float64)
    assert torch.equal(vis, visible)
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    assert torch.all(((got - boxes) * scale)[visible].abs() <= 0.5 + 1e-6)
    # Boxes read back from masks are pixel-aligned, so the second trip is exact.
    again = from_masks(box_masks(got, vis, h, w), [f"o{i}" for i in range(k)])
    assert again == traj


def test_from_masks_empty_frames_are_hidden_and_errors():
    m = torch.zeros(4, 16, 16)
    m[1, 2:6, 3:9] = 1
    m[3, 8:12, 8:12] = 1
    traj = from_masks(m, "a dog", ["dog"])
    assert to_box_lists(traj) == [[None, [3, 2, 9, 6], None, [8, 8, 12, 12]]]
    assert traj.objects[0].keyframes[0].box == traj.objects[0].keyframes[1].box
    two = torch.stack([m, torch.zeros_like(m)])
    assert_error(lambda: from_masks(two, ["a", "b"]), "masks[1]", "no box in any frame")
    assert_error(lambda: from_masks(two, ["a"]), "prompts", "1 prompt(s) for 2 objects")
    assert_error(lambda: from_masks(torch.zeros(16, 16), "a"), "masks", "[F, H, W]")


def test_to_box_lists_pixels_and_none_when_invisible():
    traj = parse_trajectory({"frames": 3, "width": 100, "height": 50, "objects": [
        {"id": "a", "prompt": "a cat", "keyframes": [
            {"frame": 0, "box": [0.1, 0.2, 0.3, 0.4]},
            {"frame": 2, "box": [0.3, 0.2, 0.5, 0.4], "visible": False}]}]})
    assert to_box_lists(traj) == [[[10, 10, 30, 20], [20, 10, 40, 20], None]]


def test_parse_kjnodes_coordinates_forms():
    path = [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
    assert parse_kjnodes_coordinates(json.dumps(path)) == [path]
    assert parse_kjnodes_coordinates(json.dumps([path, path])) == [path, path]
    assert parse_kjnodes_coordinates([json.dumps(path)] * 3) == [path] * 3
    assert parse_kjnodes_coordinates(str(path)) == [path]  # Python repr: single quotes


def test_merge_combines_objects_and_refuses_clashes():
    a = from_kjnodes_bbox([(1, 1, 4, 4)] * 3, 16, 16, "a cat", "cat")
    b = from_kjnodes_bbox([(8, 8, 4, 4)] * 3, 16, 16, "a dog", "dog")
    both = merge(a, b)
    assert [o.id for o in both.objects] == ["cat", "dog"] and both.frames == 3
    assert_error(lambda: merge(a, a), "objects[1].id", "'cat'", "both")
    c = from_kjnodes_bbox([(8, 8, 4, 4)] * 5, 16, 16, "a dog", "dog")
    assert_error(lambda: merge(a, c), "frames", "3 vs 5")


@pytest.mark.parametrize("text", ["[" * 100000, "[" * 100000 + "]" * 100000, '["' + "[" * 100000 + '"]'])
def test_deeply_nested_coordinates_are_named(text):
    with pytest.raises(TrajectoryError, match="coordinates.*nested too deeply"):
        from_kjnodes_coordinates(text, 8, 8, 64, 64, prompts=["a cat"])
