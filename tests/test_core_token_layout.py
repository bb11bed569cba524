"""The rules of core.token_layout: frames, footprints, coverage, threshold, overlap, the
at-least-one-token rule, padding and odd sizes, resampled masks, SVD views, sequence segments.
(That the labels are in each real model's own token order is proven in
test_token_order_real_models.py.)"""

import pytest
import torch

from boxdirector.core import token_layout as tl

pytestmark = pytest.mark.core


def boxes(frames, height, width, *objects):
    """[K, F, H, W] masks; each object is a box (x0, y0, x1, y1) in pixels for all frames, or a
    function frame -> box (None: absent that frame)."""
    masks = torch.zeros(len(objects), frames, height, width)
    for k, obj in enumerate(objects):
        for f in range(frames):
            box = obj(f) if callable(obj) else obj
            if box is not None:
                x0, y0, x1, y1 = box
                masks[k, f, y0:y1, x0:x1] = 1.0
    return masks


# --- time ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, pixel, latent", [
    ("wan21", 81, 21), ("wan21", 1, 1), ("wan21", 4, 1), ("wan21", 5, 2), ("wan21", 83, 21),
    ("wan22_ti2v", 121, 31), ("hunyuan_video", 129, 33), ("hunyuan_video15", 121, 31),
    ("ltxv", 97, 13), ("ltxv", 9, 2), ("ltxv", 8, 1), ("svd", 14, 14),
])
def test_latent_frames(family, pixel, latent):
    assert tl.latent_frames(family, pixel) == latent


@pytest.mark.parametrize("family, t, frames", [
    ("wan21", 0, range(0, 1)), ("wan21", 1, range(1, 5)), ("wan21", 20, range(77, 81)),
    ("ltxv", 0, range(0, 1)), ("ltxv", 1, range(1, 9)), ("ltxv", 12, range(89, 97)),
    ("svd", 3, range(3, 4)),
])
def test_pixel_frames_of_latent(family, t, frames):
    assert tl.pixel_frames_of_latent(family, t) == frames


@pytest.mark.parametrize("family", list(tl.LAYOUTS))
def test_latent_frames_partition_the_pixel_frames(family):
    """Latent frames 0..T-1 cover pixel frames 0..pixel_frames_for(T)-1 once each, in order."""
    for n in range(1, 8):
        covered = [p for t in range(n) for p in tl.pixel_frames_of_latent(family, t)]
        assert covered == list(range(tl.pixel_frames_for(family, n)))
        assert tl.latent_frames(family, tl.pixel_frames_for(family, n)) == n


@pytest.mark.parametrize("family, video, latent", [
    ("wan21", (81, 480, 832), (21, 60, 104)),
    ("wan22_ti2v", (121, 704, 1280), (31, 44, 80)),
    ("hunyuan_video", (129, 720, 1280), (33, 90, 160)),
    ("hunyuan_video15", (121, 480, 848), (31, 30, 53)),
    ("ltxv", (97, 512, 768), (13, 16, 24)),
    ("svd", (14, 576, 1024), (14, 72, 128)),
])
def test_latent_size_matches_the_empty_latent_nodes(family, video, latent):
    assert tl.latent_size(family, *video) == latent


# --- grids --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, latent, grid", [
    ("wan21", (21, 60, 104), (21, 30, 52)),
    ("wan21", (3, 7, 9), (3, 4, 5)),                       # padded up to the patch
    ("wan21", (1, 2, 16, 3, 7, 9), None),                   # neither 3 nor 5 dims
    ("wan22_ti2v", (2, 48, 31, 44, 80), (31, 22, 40)),      # a [B, C, T, H, W] shape
    ("hunyuan_video", (33, 90, 160), (33, 45, 80)),
    ("hunyuan_video15", (3, 7, 9), (3, 7, 9)),
    ("ltxv", (13, 5, 7), (13, 5, 7)),
    ("svd", (14, 4, 9, 7), (14, 9, 7)),                     # SVD's latent is [F, C, H, W]
])
def test_token_grid(family, latent, grid):
    if grid is None:
        with pytest.raises(ValueError):
            tl.token_grid(family, latent)
    else:
        assert tl.token_grid(family, latent) == grid
        assert tl.num_tokens(family, latent) == grid[0] * grid[1] * grid[2]


def test_svd_levels_round_up_like_the_stride_2_downsample():
    assert [tl.token_grid("svd", (14, 9, 7), level) for level in range(4)] == [
        (14, 9, 7), (14, 5, 4), (14, 3, 2), (14, 2, 1)]
    with pytest.raises(ValueError):
        tl.token_grid("wan21", (3, 8, 8), level=1)   # a DiT has one grid


# --- coverage and threshold ---------------------------------------------------------------------

def test_aligned_box_covers_its_tokens_exactly():
    # Wan 2.1: a token is 16x16 pixels. Box over token columns 1..2, rows 1..3.
    masks = boxes(5, 64, 64, (16, 16, 48, 64))
    cov = tl.token_coverage(masks, "wan21", (2, 8, 8))
    assert cov.shape == (1, 2, 4, 4)
    want = torch.zeros(4, 4)
    want[1:4, 1:3] = 1
    assert torch.equal(cov[0, 0], want) and torch.equal(cov[0, 1], want)
    grid = tl.token_label_grid(masks, "wan21", (2, 8, 8))
    assert torch.equal(grid[0], want.long())


def test_threshold_decides_membership():
    # Box covers exactly the left half of token (0, 1) and all of token (0, 0).
    masks = boxes(1, 32, 64, (0, 0, 24, 16))
    cov = tl.token_coverage(masks, "wan21", (1, 4, 8))[0, 0]
    assert cov[0, 0] == 1 and cov[0, 1] == 0.5 and cov[1].sum() == 0
    at_half = tl.token_label_grid(masks, "wan21", (1, 4, 8), threshold=0.5)[0]
    above = tl.token_label_grid(masks, "wan21", (1, 4, 8), threshold=0.6)[0]
    assert at_half[0, :3].tolist() == [1, 1, 0]
    assert above[0, :3].tolist() == [1, 0, 0]
    with pytest.raises(ValueError):
        tl.token_label_grid(masks, "wan21", (1, 4, 8), threshold=0.0)


def test_latent_frame_averages_its_pixel_frames():
    # Present only in pixel frame 2 (one of latent frame 1's frames 1..4) and in pixel frame 0.
    masks = boxes(9, 16, 16, lambda f: (0, 0, 16, 16) if f in (0, 2) else None)
    cov = tl.token_coverage(masks, "wan21", (3, 2, 2))[0, :, 0, 0]
    assert cov.tolist() == [1.0, 0.25, 0.0]
    # LTXV: 8 frames per latent frame after the first.
    masks = boxes(17, 32, 32, lambda f: (0, 0, 32, 32) if f in (3, 4, 9) else None)
    assert tl.token_coverage(masks, "ltxv", (3, 1, 1))[0, :, 0, 0].tolist() == [0.0, 0.25, 0.125]
    # SVD: one frame each.
    masks = boxes(3, 8, 8, lambda f: (0, 0, 8, 8) if f == 1 else None)
    assert tl.token_coverage(masks, "svd", (3, 1, 1))[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_trailing_pixel_frames_are_dropped_like_the_vae():
    # 83 frames -> 21 latent frames; frames 81, 82 fall outside every latent frame.
    base = boxes(81, 16, 16, (0, 0, 8, 8))
    longer = torch.cat([base, torch.ones(1, 2, 16, 16)], dim=1)
    assert torch.equal(tl.token_coverage(base, "wan21", (21, 2, 2)), tl.token_coverage(longer, "wan21", (21, 2, 2)))


def test_masks_of_another_length_are_stretched_over_time():
    # 41 masks frames for a 21-frame latent (81 pixel frames): the object present in the second
    # half of the masks is present in the second half of the latent.
    masks = boxes(41, 16, 16, lambda f: (0, 0, 16, 16) if f >= 21 else None)
    cov = tl.token_coverage(masks, "wan21", (21, 2, 2))[0, :, 0, 0]
    # Pixel frame p takes masks frame round(p / 2): the switch lands in latent frame 11 (41..44).
    assert cov[:11].sum() == 0 and 0 < cov[11] < 1 and (cov[12:] == 1).all()


# --- the at-least-one-token rule ----------------------------------------------------------------

def test_tiny_box_keeps_one_token_per_frame_where_visible():
    # 3x3-pixel box (coverage 9/256 of a token) in frames 0..4, absent in frames 5..8.
    masks = boxes(9, 64, 64, lambda f: (37, 21, 40, 24) if f <= 4 else None)
    grid = tl.token_label_grid(masks, "wan21", (3, 8, 8))
    assert (grid[0] == 1).sum() == 1 and grid[0, 1, 2] == 1     # the token holding (x 37..39, y 21..23)
    assert (grid[1] == 1).sum() == 1 and grid[1, 1, 2] == 1     # visible in pixel frames 1..4
    assert (grid[2] == 0).all()                                  # absent: nothing forced


def test_forced_token_is_the_best_covered_one():
    # A box straddling tokens (0, 0) and (0, 1): 6 of its 10 columns in the first, 4 in the second.
    masks = boxes(1, 32, 64, (10, 0, 20, 16))
    grid = tl.token_label_grid(masks, "wan21", (1, 4, 8))[0]
    assert grid[0, 0] == 1 and (grid == 1).sum() == 1


def test_rescue_never_takes_another_objects_last_token():
    # Object 1 is tiny and sits only on the single token object 0 owns: object 1 gets nothing
    # rather than leave object 0 without a token (object 0 keeps it although it is the larger).
    masks = torch.zeros(2, 1, 16, 48)
    masks[0, 0, :, 16:32] = 1.0                       # exactly token (0, 1)
    masks[1, 0, 0:2, 20:28] = 1.0                     # 16 px, inside token (0, 1) only
    grid = tl.token_label_grid(masks, "wan21", (1, 2, 6))[0]
    assert grid.tolist() == [[0, 1, 0]]
    # With a spare token the rescue takes one: object 0 now owns two tokens.
    masks = torch.zeros(2, 1, 16, 48)
    masks[0, 0, :, 16:48] = 1.0
    masks[1, 0, 0:2, 20:28] = 1.0
    grid = tl.token_label_grid(masks, "wan21", (1, 2, 6))[0]
    assert grid.tolist() == [[0, 2, 1]]


# --- overlap ------------------------------------------------------------------------------------

def test_smaller_object_wins_overlap_whatever_its_index():
    big, small = (0, 0, 64, 64), (16, 16, 48, 48)
    for order in ((big, small), (small, big)):
        masks = boxes(1, 64, 64, *order)
        grid = tl.token_label_grid(masks, "wan21", (1, 8, 8))[0]
        small_label = 1 + order.index(small)
        big_label = 1 + order.index(big)
        assert (grid[1:3, 1:3] == small_label).all()
        assert (grid == small_label).sum() == 4
        assert (grid == big_label).sum() == 12


def test_equal_areas_go_to_the_lower_index():
    masks = boxes(1, 32, 64, (0, 0, 32, 32), (16, 0, 48, 32))
    grid = tl.token_label_grid(masks, "wan21", (1, 4, 8))[0]
    assert grid.tolist() == [[1, 1, 2, 0], [1, 1, 2, 0]]


def test_overlap_priority_follows_each_frames_areas():
    # Object 0 shrinks over time, object 1 stays: who is smaller changes, and so does the winner.
    def obj0(f):
        return (0, 0, 64, 64) if f == 0 else (0, 0, 32, 32)
    masks = boxes(5, 64, 64, obj0, (0, 0, 48, 48))
    grid = tl.token_label_grid(masks, "wan21", (2, 8, 8))
    assert grid[0, 0, 0] == 2      # frame 0: object 1 (48x48) is the smaller
    assert grid[1, 0, 0] == 1      # frame 1: object 0 (32x32) is the smaller


# --- padding and odd sizes ----------------------------------------------------------------------

def test_padded_edge_tokens_follow_their_real_pixels():
    # Wan, latent width 7: the last token column holds latent column 6 and one padded column.
    # A box over latent column 6 only covers that token fully: padding counts as nothing.
    masks = boxes(1, 16, 56, (48, 0, 56, 16))
    cov = tl.token_coverage(masks, "wan21", (1, 2, 7))
    assert cov.shape == (1, 1, 1, 4)
    assert cov[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    # Half of that real column: half the token.
    masks = boxes(1, 16, 56, (48, 0, 56, 8))
    assert tl.token_coverage(masks, "wan21", (1, 2, 7))[0, 0, 0, 3] == 0.5


@pytest.mark.parametrize("family, latent", [
    ("wan21", (3, 7, 9)), ("wan22_ti2v", (2, 5, 3)), ("hunyuan_video", (4, 9, 11)),
    ("hunyuan_video15", (2, 5, 7)), ("ltxv", (2, 3, 5)), ("svd", (3, 5, 7)),
])
def test_label_count_is_the_token_count_for_odd_sizes(family, latent):
    lay = tl.LAYOUTS[family]
    t, h, w = latent
    s = lay.spatial_compression
    frames = tl.pixel_frames_for(lay, t)
    masks = boxes(frames, h * s, w * s, (0, 0, s, s), (s, s, w * s, h * s))
    labels = tl.token_labels(masks, family, latent)
    assert labels.dtype == torch.long and labels.shape == (tl.num_tokens(family, latent),)
    assert set(labels.unique().tolist()) <= {0, 1, 2}
    assert (labels == 1).any() and (labels == 2).any()


# --- masks at another resolution ----------------------------------------------------------------

def test_masks_at_twice_the_resolution_give_the_same_labels():
    small = boxes(5, 64, 96, (10, 20, 50, 60), (60, 0, 90, 30))
    large = boxes(5, 128, 192, (20, 40, 100, 120), (120, 0, 180, 60))
    a = tl.token_coverage(small, "wan21", (2, 8, 12))
    b = tl.token_coverage(large, "wan21", (2, 8, 12))
    assert torch.allclose(a, b, atol=1e-6)


def test_video_size_not_a_multiple_is_centre_cropped_like_the_vae():
    # 70 px wide at 8x: latent 8 wide; the VAE crops 3 px on the left (6 // 2) and 3 on the right.
    masks = boxes(1, 16, 70, (3, 0, 11, 16))          # exactly latent column 0 after the crop
    cov = tl.token_coverage(masks, tl.TokenLayout("test", 4, True, 8, (1, 1, 1)), (1, 2, 8))
    assert cov[0, 0, 0].tolist() == [1.0] + [0.0] * 7


def test_masks_of_another_field_size_are_stretched():
    # Masks drawn at 32x32 for a latent of 4x8 at 8x (32x64 pixels): stretched horizontally.
    masks = boxes(1, 32, 32, (0, 0, 16, 32))          # the left half
    cov = tl.token_coverage(masks, tl.TokenLayout("test", 4, True, 8, (1, 1, 1)), (1, 4, 8))
    assert (cov[0, 0, :, :4] == 1).all() and (cov[0, 0, :, 4:] == 0).all()


# --- several objects, no objects ----------------------------------------------------------------

def test_several_moving_objects():
    def mover(f):            # moves right by one token per latent frame
        t = 0 if f == 0 else (f + 3) // 4
        return (16 * t, 0, 16 * t + 16, 16)
    masks = boxes(13, 32, 96, mover, (64, 16, 96, 32), (0, 16, 16, 32))
    grid = tl.token_label_grid(masks, "wan21", (4, 4, 12))
    for t in range(4):
        assert (grid[t] == 1).nonzero().tolist() == [[0, t]]
        assert (grid[t] == 2).nonzero().tolist() == [[1, 4], [1, 5]]
        assert (grid[t] == 3).nonzero().tolist() == [[1, 0]]
    labels = tl.token_labels(masks, "wan21", (4, 4, 12))
    assert torch.equal(labels, grid.reshape(-1))


def test_no_objects_is_all_background():
    labels = tl.token_labels(torch.zeros(0, 5, 32, 32), "wan21", (2, 4, 4))
    assert labels.shape == (2 * 2 * 2,) and (labels == 0).all()


def test_bad_masks_are_refused():
    with pytest.raises(ValueError):
        tl.token_labels(torch.zeros(5, 32, 32), "wan21", (2, 4, 4))
    with pytest.raises(ValueError):
        tl.get_layout("wan3")


# --- SVD views ----------------------------------------------------------------------------------

def test_svd_spatial_and_temporal_views():
    # Object in the top-left latent pixel in frames 0 and 2, absent in frame 1.
    masks = boxes(3, 24, 40, lambda f: (0, 0, 8, 8) if f != 1 else None)
    spatial = tl.svd_spatial_labels(masks, (3, 3, 5))
    assert spatial.shape == (3, 15)
    assert spatial[:, 0].tolist() == [1, 0, 1] and spatial[:, 1:].sum() == 0
    temporal = tl.svd_temporal_labels(masks, (3, 3, 5))
    assert temporal.shape == (15, 3) and torch.equal(temporal, spatial.T)
    # Level 1: ceil(3/2) x ceil(5/2); the one latent pixel covers 1/4 of token 0 -> forced.
    level1 = tl.svd_spatial_labels(masks, (3, 3, 5), level=1)
    assert level1.shape == (3, 6) and level1[:, 0].tolist() == [1, 0, 1]
    # The last row/column at level 1 hold one real latent row/column.
    edge = boxes(1, 24, 40, (32, 16, 40, 24))         # latent pixel (2, 4)
    assert tl.token_coverage(edge, "svd", (1, 3, 5), level=1)[0, 0, 1, 2] == 1.0


# --- the sequence -------------------------------------------------------------------------------

def test_segments_joint_text_model():
    seg = tl.token_segments("hunyuan_video", (2, 4, 6), seq_len=12 + 7)
    assert (seg.video, seg.text, seg.extra) == (slice(0, 12), slice(12, 19), slice(19, 19))
    labels = torch.arange(12) % 3
    seq = tl.sequence_labels(labels, seg)
    assert seq[:12].tolist() == labels.tolist() and seq[12:].tolist() == [-1] * 7
    # With reference-image tokens before the video.
    seg = tl.token_segments("hunyuan_video", (2, 4, 6), seq_len=6 + 12 + 7, prefix_tokens=6)
    assert (seg.prefix, seg.video, seg.text) == (slice(0, 6), slice(6, 18), slice(18, 25))
    seq = tl.sequence_labels(labels, seg)
    assert seq[:6].tolist() == [0] * 6 and seq[6:18].tolist() == labels.tolist()



def test_segments_joint_text_first():
    """Newer ComfyUI's HunyuanVideo: [text, prefix, video]."""
    seg = tl.token_segments("hunyuan_video", (2, 4, 6), seq_len=7 + 12, text_first=True)
    assert (seg.text, seg.prefix, seg.video, seg.extra) == (slice(0, 7), slice(7, 7), slice(7, 19), slice(19, 19))
    labels = torch.arange(12) % 3
    seq = tl.sequence_labels(labels, seg)
    assert seq[:7].tolist() == [-1] * 7 and seq[7:].tolist() == labels.tolist()
    seg = tl.token_segments("hunyuan_video", (2, 4, 6), seq_len=7 + 6 + 12, prefix_tokens=6, text_first=True)
    assert (seg.text, seg.prefix, seg.video) == (slice(0, 7), slice(7, 13), slice(13, 25))
    # A model without joint text ignores it: extra tokens still follow the video.
    seg = tl.token_segments("ltxv", (3, 2, 2), seq_len=16, text_first=True)
    assert (seg.video, seg.extra) == (slice(0, 12), slice(12, 16))


def test_segments_cross_attention_model():
    seg = tl.token_segments("ltxv", (3, 2, 2), seq_len=12)
    assert (seg.video, seg.text, seg.extra) == (slice(0, 12), slice(12, 12), slice(12, 12))
    seg = tl.token_segments("ltxv", (3, 2, 2), seq_len=16)    # a keyframe guide frame appended
    assert seg.extra == slice(12, 16) and seg.text == slice(16, 16)
    with pytest.raises(ValueError):
        tl.token_segments("wan21", (3, 4, 4), seq_len=11)
    with pytest.raises(ValueError):
        tl.token_segments("svd", (3, 4, 4), seq_len=48)


def test_realistic_size_is_cheap():
    """Wan 2.1 at 832x480, 49 frames, 3 objects: labels for 16 380 tokens, no N x N anywhere."""
    import time
    masks = boxes(49, 480, 832, (100, 100, 500, 300), (200, 150, 212, 160),
                  lambda f: (8 * f, 300, 8 * f + 200, 460))
    start = time.perf_counter()
    labels = tl.token_labels(masks, "wan21", tl.latent_size("wan21", 49, 480, 832))
    assert time.perf_counter() - start < 5.0
    assert labels.shape == (13 * 30 * 52,)
    assert set(labels.unique().tolist()) == {0, 1, 2, 3}


def test_a_mismatch_is_resampled_with_one_note_per_pair_of_shapes(caplog):
    import logging

    # Wan: 81 pixel frames make 21 latent frames; 832x480 pixels make a 104x60 latent.
    assert tl.resampling_note("wan21", 81, (480, 832), (21, 60, 104)) is None
    assert tl.resampling_note("wan21", 81, (240, 416), (21, 60, 104)) is None        # same aspect, smaller
    note = tl.resampling_note("wan21", 17, (480, 832), (21, 60, 104))
    assert "17 frames stretched over the latent's 81-frame video" in note, note
    note = tl.resampling_note("wan21", 81, (128, 128), (21, 60, 104))
    assert "drawn at 128x128 but the video is 832x480" in note, note
    masks = torch.zeros(1, 17, 128, 128)
    masks[:, :, 32:96, 32:96] = 1
    with caplog.at_level(logging.WARNING, logger="boxdirector"):
        for _ in range(3):
            tl.token_coverage(masks, "wan21", (1, 16, 21, 60, 104))
    assert caplog.text.count("do not match the video") == 1, caplog.text
    assert "17 frames" in caplog.text and "drawn at 128x128" in caplog.text
