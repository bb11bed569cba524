"""Box masks: exact-coverage rasterisation, dilate/erode/feather, union, fit_frames, masks_to_boxes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boxdirector.core.masks import box_masks, dilate, feather, fit_frames, masks_to_boxes, union

pytestmark = pytest.mark.core

FAST = settings(max_examples=30, deadline=None)


@st.composite
def pixel_boxes(draw, h, w, min_size=0.0, margin=0.0):
    """A box in pixels (x0, y0, x1, y1), at least ``min_size`` px per side, ``margin`` px inside."""
    def axis(n):
        a = draw(st.floats(margin, n - margin - min_size - 1e-3))
        # min(): at the top of a's range, a + min_size + 1e-3 can round a hair above n - margin.
        b = draw(st.floats(min(a + min_size + 1e-3, n - margin), n - margin))
        return a, b

    (x0, x1), (y0, y1) = axis(w), axis(h)
    return x0, y0, x1, y1


def one(box_px, h, w, visible=True):
    """box_masks for a single box given in pixels -> [H, W]."""
    x0, y0, x1, y1 = box_px
    b = torch.tensor([[[x0 / w, y0 / h, x1 / w, y1 / h]]], dtype=torch.float64)
    return box_masks(b, torch.tensor([[visible]]), h, w)[0, 0]


def test_box_masks_shape_dtype_and_exact_coverage_values():
    # x in [1.25, 3.0), y in [0.5, 2.0) on a 4 x 5 (H x W) grid.
    m = one((1.25, 0.5, 3.0, 2.0), 4, 5)
    assert m.dtype == torch.float32 and m.shape == (4, 5)
    cols = torch.tensor([0.0, 0.75, 1.0, 0.0, 0.0])
    rows = torch.tensor([0.5, 1.0, 0.0, 0.0])
    assert torch.equal(m, rows[:, None] * cols[None, :])


@FAST
@given(st.data(), st.integers(1, 64), st.integers(1, 64))
def test_mask_mass_equals_box_area_in_pixels(data, h, w):
    x0, y0, x1, y1 = data.draw(pixel_boxes(h, w))
    m = one((x0, y0, x1, y1), h, w)
    assert torch.all(m >= 0) and torch.all(m <= 1)
    area = (x1 - x0) * (y1 - y0)
    assert m.double().sum().item() == pytest.approx(area, rel=1e-5, abs=1e-5)


def test_sub_pixel_moves_are_visible():
    a = one((10.0, 10.0, 20.0, 20.0), 32, 32)
    b = one((10.1, 10.0, 20.1, 20.0), 32, 32)
    assert not torch.equal(a, b)
    xs = torch.arange(32, dtype=torch.float64) + 0.5
    centroid = lambda m: (m.double().sum(0) * xs).sum() / m.double().sum()  # noqa: E731
    assert (centroid(b) - centroid(a)).item() == pytest.approx(0.1, abs=1e-5)


def test_invisible_frames_are_zero_and_objects_are_independent():
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.5]] * 3, [[0.5, 0.5, 0.9, 0.9]] * 3])
    visible = torch.tensor([[True, False, True], [False, True, True]])
    m = box_masks(boxes, visible, 16, 24)
    assert m.shape == (2, 3, 16, 24)
    assert m[0, 1].sum() == 0 and m[1, 0].sum() == 0
    assert m[0, 0].sum() > 0 and m[1, 1].sum() > 0
    assert torch.equal(m[0, 0], m[0, 2])


def test_box_masks_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[K, F, 4\]"):
        box_masks(torch.zeros(3, 4), torch.ones(3, dtype=torch.bool), 8, 8)
    with pytest.raises(ValueError, match=r"visible must be \[K, F\]"):
        box_masks(torch.zeros(1, 3, 4), torch.ones(1, 2, dtype=torch.bool), 8, 8)


# --------------------------------------------------------------------------------------------
# dilate / erode / feather


@FAST
@given(st.data(), st.integers(1, 6))
def test_dilate_grows_a_box_into_the_grown_box(data, p):
    h, w = 40, 48
    # Exact only for boxes covering a whole pixel per axis (else the peak coverage is < 1).
    x0, y0, x1, y1 = data.draw(pixel_boxes(h, w, min_size=2.0, margin=p))
    grown = dilate(one((x0, y0, x1, y1), h, w), p)
    assert torch.allclose(grown, one((x0 - p, y0 - p, x1 + p, y1 + p), h, w), atol=1e-5)


@FAST
@given(st.data(), st.integers(1, 4))
def test_erode_shrinks_a_box_into_the_shrunk_box(data, p):
    h, w = 40, 48
    x0, y0, x1, y1 = data.draw(pixel_boxes(h, w, min_size=2 * p + 2.0))
    shrunk = dilate(one((x0, y0, x1, y1), h, w), -p)
    expect = one((x0 + p, y0 + p, x1 - p, y1 - p), h, w)
    # Boxes touching the frame edge are not eroded from that side (outside is "unknown").
    if x0 < p or y0 < p or x1 > w - p or y1 > h - p:
        assert torch.all(shrunk <= one((x0, y0, x1, y1), h, w) + 1e-6)
    else:
        assert torch.allclose(shrunk, expect, atol=1e-5)


def test_dilate_is_monotone_and_keeps_shape():
    m = torch.rand(2, 3, 20, 30)
    d1, d3 = dilate(m, 1), dilate(m, 3)
    e1, e3 = dilate(m, -1), dilate(m, -3)
    assert d1.shape == m.shape and e3.shape == m.shape and d1.dtype == torch.float32
    assert torch.all(d3 >= d1) and torch.all(d1 >= m) and torch.all(m >= e1) and torch.all(e1 >= e3)
    assert torch.equal(dilate(m, 0), m)


def test_erode_keeps_a_mask_touching_the_frame_edge():
    m = torch.zeros(10, 10)
    m[:, :5] = 1.0
    e = dilate(m, -2)
    assert torch.all(e[:, :3] == 1) and torch.all(e[:, 3:] == 0)


def test_dilate_matches_a_brute_force_max_filter():
    m = torch.rand(2, 13, 17)
    h, w = m.shape[-2:]
    for p in (1, 2, 5, 12, 40):
        ref_d, ref_e = torch.empty_like(m), torch.empty_like(m)
        for i in range(h):
            for j in range(w):
                win = m[:, max(0, i - p):i + p + 1, max(0, j - p):j + p + 1]  # outside ignored
                ref_d[:, i, j] = win.amax(dim=(-1, -2))
                ref_e[:, i, j] = win.amin(dim=(-1, -2))
        assert torch.equal(dilate(m, p), ref_d)
        assert torch.equal(dilate(m, -p), ref_e)


def test_dilate_huge_radius_is_cheap_and_fills():
    m = torch.zeros(1, 480, 832)
    m[0, 100, 100] = 1.0
    assert torch.all(dilate(m, 1000) == 1)


def test_dilate_rejects_fractional_pixels():
    with pytest.raises(ValueError, match="whole number"):
        dilate(torch.zeros(4, 4), 1.5)


def test_feather_shape_range_and_identity_below_one_pixel():
    m = one((8.0, 8.0, 24.0, 20.0), 32, 32)
    f = feather(m[None, None], 4.0)
    assert f.shape == (1, 1, 32, 32) and f.dtype == torch.float32
    assert torch.all(f >= 0) and torch.all(f <= 1)
    assert torch.equal(feather(m, 0.5), m) and torch.equal(feather(m, 0), m)


def test_feather_only_changes_pixels_within_radius_of_an_edge_and_keeps_mass():
    m = one((10.0, 12.0, 30.0, 28.0), 40, 40)  # integer-aligned: a hard box
    r = 4
    f = feather(m, r)
    band = torch.zeros_like(m, dtype=torch.bool)
    band[12 - r:28 + r, 10 - r:30 + r] = True
    band[12 + r:28 - r, 10 + r:30 - r] = False
    assert torch.allclose(f[~band], m[~band], atol=1e-6)
    assert f[band].min() < 1 and f[band].max() > 0
    assert f.double().sum().item() == pytest.approx(m.double().sum().item(), rel=1e-5)
    # Symmetric kernel: a hard edge stays centred (values on both sides sum to 1).
    assert (f[20, 9] + f[20, 10]).item() == pytest.approx(1.0, abs=1e-6)


def test_feather_is_monotone_in_its_input():
    a = torch.rand(3, 24, 24)
    b = (a + torch.rand(3, 24, 24)).clamp(max=1)
    assert torch.all(feather(b, 5) >= feather(a, 5) - 1e-6)


def test_feather_keeps_a_mask_touching_the_frame_edge():
    m = torch.zeros(16, 16)
    m[:, :8] = 1
    assert torch.allclose(feather(m, 3)[:, 0], torch.ones(16), atol=1e-6)


def test_feather_radius_larger_than_the_mask():
    m = torch.zeros(2, 5, 4)
    m[:, 1:3, 1:3] = 1
    f = feather(m, 20)
    assert f.shape == m.shape and torch.all((f >= 0) & (f <= 1))


# --------------------------------------------------------------------------------------------
# union, fit_frames, masks_to_boxes


def test_union_is_the_max_over_objects():
    a = torch.rand(3, 2, 8, 8)
    u = union(a)
    assert u.shape == (2, 8, 8)
    assert torch.equal(u, torch.maximum(torch.maximum(a[0], a[1]), a[2]))
    with pytest.raises(ValueError):
        union(torch.zeros(2, 8, 8))


def test_fit_frames_rule():
    single = torch.rand(2, 1, 4, 4)
    out = fit_frames(single, 81)
    assert out.shape == (2, 81, 4, 4) and torch.equal(out[:, 40], single[:, 0])
    same = torch.rand(5, 4, 4)
    assert fit_frames(same, 5) is same


def test_fit_frames_mismatch_names_both_counts():
    with pytest.raises(ValueError) as e:
        fit_frames(torch.zeros(49, 8, 8), 81)
    msg = str(e.value)
    assert "49 frames" in msg and "81" in msg and "single frame" in msg


def test_fit_frames_needs_a_frame_axis():
    with pytest.raises(ValueError, match=r"\[\.\.\., F, H, W\]"):
        fit_frames(torch.zeros(8, 8), 3)


@FAST
@given(st.data(), st.integers(8, 48), st.integers(8, 48))
def test_masks_to_boxes_inverts_box_masks_within_half_a_pixel(data, h, w):
    f = data.draw(st.integers(1, 4))
    # At least 2 px a side, so some pixel is fully covered (a thinner box may fall under 0.5).
    px = [data.draw(pixel_boxes(h, w, min_size=2.0)) for _ in range(f)]
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    boxes = torch.tensor(px, dtype=torch.float64) / scale
    visible = torch.tensor([data.draw(st.booleans()) for _ in range(f)])
    m = box_masks(boxes[None], visible[None], h, w)[0]
    got, present = masks_to_boxes(m)
    assert present.tolist() == visible.tolist()
    err = (got.double() - boxes) * scale
    assert torch.all(err[visible].abs() <= 0.5 + 1e-4)
    assert torch.all(got[~visible] == 0)


def test_masks_to_boxes_leading_dims_and_threshold():
    m = torch.zeros(2, 3, 10, 20)
    m[1, 2, 2:5, 4:9] = 0.3
    boxes, present = masks_to_boxes(m, threshold=0.2)
    assert boxes.shape == (2, 3, 4) and present.shape == (2, 3)
    assert present.sum() == 1
    assert torch.allclose(boxes[1, 2], torch.tensor([4 / 20, 2 / 10, 9 / 20, 5 / 10]))
    assert not masks_to_boxes(m)[1].any()  # 0.3 is not above the default 0.5
