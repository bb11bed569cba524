"""BBoxTrajectory, MaskSequence, the converters and the preview, run by ComfyUI's own validation and
node-execution code in-process (registered through its custom-node loader)."""

import copy
import json

import pytest
import torch

import harness

pytestmark = pytest.mark.comfy

BBOX = "BoxDirector.BBoxTrajectory"
MASKSEQ = "BoxDirector.MaskSequence"

DOC = {
    "version": 1, "frames": 9, "width": 64, "height": 32,
    "objects": [
        {"id": "cat", "prompt": "a black cat", "keyframes": [
            {"frame": 0, "box": [0.0, 0.25, 0.25, 0.75], "ease": "ease_in_out"},
            {"frame": 8, "box": [0.75, 0.25, 1.0, 0.75]}]},
        {"id": "ball", "prompt": "a red ball", "keyframes": [
            {"frame": 0, "box": [0.5, 0.0, 0.625, 0.25]}]},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def _registered(pack_nodes):
    assert BBOX in pack_nodes and MASKSEQ in pack_nodes, sorted(pack_nodes)


def bbox_prompt(doc, **overrides) -> dict:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    inputs = {"trajectory": text, "frames": 0, "width": 0, "height": 0, **overrides}
    # PreviewImage is an output node, so validation reaches the trajectory node through it.
    return {"1": {"class_type": BBOX, "inputs": inputs},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 2]}}}


def mutated(path, value):
    doc = copy.deepcopy(DOC)
    *head, last = path
    target = doc
    for key in head:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return doc


BAD_DOCUMENTS = {
    # case: (document or text, the field the error must name)
    "malformed json": ('{"version": 1, "frames": 9,', "line"),
    "box out of range": (mutated(["objects", 0, "keyframes", 1, "box"], [0.75, 0.25, 1.2, 0.75]),
                         "objects[0].keyframes[1].box"),
    "box inverted": (mutated(["objects", 0, "keyframes", 0, "box"], [0.5, 0.25, 0.25, 0.75]),
                     "objects[0].keyframes[0].box"),
    "zero area": (mutated(["objects", 1, "keyframes", 0, "box"], [0.5, 0.2, 0.5, 0.4]),
                  "objects[1].keyframes[0].box"),
    "keyframe beyond frames": (mutated(["objects", 0, "keyframes", 1, "frame"], 9),
                               "objects[0].keyframes[1].frame"),
    "duplicate ids": (mutated(["objects", 1, "id"], "cat"), "objects[1].id"),
    "no objects": (mutated(["objects"], []), "objects"),
    "nan": ('{"version": 1, "frames": 9, "width": 64, "height": 32, "objects": [{"id": "a", "prompt": "a",'
            ' "keyframes": [{"frame": 0, "box": [0.1, NaN, 0.5, 0.5]}]}]}', "objects[0].keyframes[0].box"),
    "unknown field": (mutated(["objects", 0, "colour"], "red"), "colour"),
    "unknown ease": (mutated(["objects", 0, "keyframes", 0, "ease"], "bounce"), "objects[0].keyframes[0].ease"),
    "wrong version": (mutated(["version"], 2), "version"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_bad_document_is_refused_at_validation_naming_the_field(case):
    doc, field = BAD_DOCUMENTS[case]
    ok, errors = harness.validate_prompt(bbox_prompt(doc))
    assert not ok
    text = harness.error_text(errors)
    assert "1" in errors, errors           # the error belongs to the trajectory node
    assert field in text, text
    assert "Traceback" not in text


def test_negative_override_is_refused():
    ok, errors = harness.validate_prompt(bbox_prompt(DOC, frames=-3))
    assert not ok and "frames" in harness.error_text(errors)


def test_valid_document_passes_validation():
    ok, errors = harness.validate_prompt(bbox_prompt(DOC))
    assert ok, errors


def test_bbox_trajectory_outputs():
    out = harness.run_node(BBOX, trajectory=json.dumps(DOC), frames=0, width=0, height=0)
    traj, mask, preview = out.result
    assert (traj.frames, traj.width, traj.height) == (9, 64, 32)
    assert mask.shape == (9, 32, 64)
    # frame 0: cat covers x 0..16, y 8..24; ball x 32..40, y 0..8 -> union area 16*16 + 8*8
    assert mask[0].sum().item() == pytest.approx(16 * 16 + 8 * 8, abs=1e-3)
    assert mask[8, 16, 56] == 1 and mask[8, 16, 8] == 0       # the cat has moved right
    assert preview.shape[0] == 9 and preview.shape[-1] == 3
    assert out.ui is not None                                # keyframes shown on the node


def test_overrides_rescale_keyframes_and_size():
    out = harness.run_node(BBOX, trajectory=json.dumps(DOC), frames=17, width=128, height=64)
    traj, mask, _ = out.result
    assert (traj.frames, traj.width, traj.height) == (17, 128, 64)
    assert [k.frame for k in traj.objects[0].keyframes] == [0, 16]
    assert mask.shape == (17, 64, 128)


def test_preview_draws_on_a_connected_image():
    image = torch.zeros(1, 32, 64, 3)
    _, _, preview = harness.run_node(BBOX, trajectory=json.dumps(DOC), frames=0, width=0, height=0,
                                     image=image).result
    assert preview.shape == (9, 32, 64, 3) and preview.sum() > 0


def trajectory_of(doc=DOC):
    return harness.run_node(BBOX, trajectory=json.dumps(doc), frames=0, width=0, height=0).result[0]


def test_mask_sequence_from_trajectory():
    regions, union = harness.run_node(MASKSEQ, trajectory=trajectory_of(), mask_id="mask", mask_prompt="",
                                      dilation=0, feather=0.0).result
    assert regions.ids == ("cat", "ball") and regions.prompts == ("a black cat", "a red ball")
    assert regions.masks.shape == (2, 9, 32, 64)
    assert regions.masks[0, 0].sum().item() == pytest.approx(256, abs=1e-3)
    assert torch.equal(union, regions.masks.amax(0))


def test_mask_sequence_adds_a_mask_object_and_dilates_only_new_objects():
    base, _ = harness.run_node(MASKSEQ, trajectory=trajectory_of(), mask_id="m", mask_prompt="",
                               dilation=0, feather=0.0).result
    seg = torch.zeros(1, 16, 32)          # one frame at half size: broadcast in time, resized in space
    seg[:, 4:8, 4:8] = 1
    regions, _ = harness.run_node(MASKSEQ, regions=base, mask=seg, mask_id="dog", mask_prompt="a dog",
                                  dilation=2, feather=0.0).result
    assert regions.ids == ("cat", "ball", "dog") and regions.prompts[-1] == "a dog"
    assert regions.masks.shape == (3, 9, 32, 64)
    assert torch.equal(regions.masks[:2], base.masks)           # incoming regions untouched
    assert regions.masks[2, 5].sum() > 8 * 8                      # resized (8x8 px) and grown


def test_mask_sequence_frame_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"5.*9|9.*5"):
        harness.run_node(MASKSEQ, trajectory=trajectory_of(), mask=torch.ones(5, 32, 64), mask_id="m",
                         mask_prompt="", dilation=0, feather=0.0)


def test_mask_sequence_needs_a_source_at_validation():
    prompt = {"1": {"class_type": MASKSEQ, "inputs": {"mask_id": "m", "mask_prompt": "", "dilation": 0,
                                                      "feather": 0.0}},
              "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 1]}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    ok, errors = harness.validate_prompt(prompt)
    assert not ok and "trajectory, mask or regions" in harness.error_text(errors)


def test_mask_sequence_rejects_a_wrong_link_type():
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 32, "batch_size": 1, "color": 0}},
              "2": {"class_type": MASKSEQ, "inputs": {"trajectory": ["1", 0], "mask_id": "m", "mask_prompt": "",
                                                      "dilation": 0, "feather": 0.0}},
              "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    ok, errors = harness.validate_prompt(prompt)
    assert not ok and "trajectory" in harness.error_text(errors) and "IMAGE" in harness.error_text(errors)


def test_trajectory_preview_tints_regions():
    traj = trajectory_of()
    regions, _ = harness.run_node(MASKSEQ, trajectory=traj, mask_id="m", mask_prompt="", dilation=0,
                                  feather=0.0).result
    (out,) = harness.run_node("BoxDirector.TrajectoryPreview", images=torch.zeros(9, 32, 64, 3),
                              trajectory=traj, regions=regions, mask_opacity=0.5).result
    assert out.shape == (9, 32, 64, 3)
    assert out[0, 16, 8].sum() > 0 and out[0, 28, 60].sum() == 0   # inside the cat's box vs far outside


COORDS = json.dumps([[{"x": 16 + 4 * t, "y": 16} for t in range(9)], [{"x": 48, "y": 8 + t} for t in range(9)]])


def coords_prompt(coordinates):
    return {"1": {"class_type": "BoxDirector.TrajectoryFromCoordinates",
                  "inputs": {"coordinates": coordinates, "box_width": 8, "box_height": 8, "width": 64, "height": 32,
                             "ids": "a, b", "prompts": "a red circle\na blue square"}},
            "2": {"class_type": MASKSEQ, "inputs": {"trajectory": ["1", 0], "mask_id": "m", "mask_prompt": "",
                                                    "dilation": 0, "feather": 0.0}},
            "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


def test_coordinates_round_trip_through_the_nodes():
    ok, errors = harness.validate_prompt(coords_prompt(COORDS))
    assert ok, errors
    (traj,) = harness.run_node("BoxDirector.TrajectoryFromCoordinates", coordinates=COORDS, box_width=8,
                               box_height=8, width=64, height=32, ids="a, b",
                               prompts="a red circle\na blue square").result
    assert [o.id for o in traj.objects] == ["a", "b"] and traj.objects[1].prompt == "a blue square"
    doc, coords, boxes = harness.run_node("BoxDirector.TrajectoryExport", trajectory=traj).result
    assert json.loads(coords) == json.loads(COORDS)
    assert json.loads(boxes)[0][0] == [12, 12, 20, 20]
    again = harness.run_node(BBOX, trajectory=doc, frames=0, width=0, height=0).result[0]
    assert again == traj


@pytest.mark.parametrize("bad, field", [
    ("[{\"x\": 1}]", "coordinates[0][0].y"),
    ("not json", "coordinates"),
])
def test_bad_coordinates_are_refused_at_validation(bad, field):
    ok, errors = harness.validate_prompt(coords_prompt(bad))
    assert not ok and field in harness.error_text(errors), errors


def test_too_many_ids_are_refused_at_validation():
    prompt = coords_prompt(COORDS)
    prompt["1"]["inputs"]["ids"] = "a, b, c"
    ok, errors = harness.validate_prompt(prompt)
    assert not ok and "ids" in harness.error_text(errors)


def test_tracks_bbox_and_mask_converters_append_into_one_trajectory():
    tracks = {"track_path": torch.tensor([[[16.0, 16.0]], [[20.0, 16.0]], [[24.0, 16.0]]]),
              "track_visibility": torch.tensor([[True], [False], [True]])}
    (t1,) = harness.run_node("BoxDirector.TrajectoryFromTracks", tracks=tracks, box_width=8, box_height=8,
                             width=64, height=32, ids="trk", prompts="a dog").result
    assert [kf.visible for kf in t1.objects[0].keyframes] == [True, False, True]
    (t2,) = harness.run_node("BoxDirector.TrajectoryFromBBox", bboxes=[(0, 0, 8, 8), (2, 0, 8, 8), (4, 0, 8, 8)],
                             width=64, height=32, id="box", prompt="", append_to=t1).result
    mask = torch.zeros(3, 32, 64)
    mask[:, 10:20, 30:50] = 1
    mask[1] = 0
    (t3,) = harness.run_node("BoxDirector.TrajectoryFromMask", mask=mask, threshold=0.5, id="seg",
                             prompt="a cat", append_to=t2).result
    assert [o.id for o in t3.objects] == ["trk", "box", "seg"]
    assert t3.objects[1].prompt == "box"                            # empty prompt -> the id
    seg = t3.objects[2].keyframes
    assert seg[0].box == (30 / 64, 10 / 32, 50 / 64, 20 / 32) and seg[1].visible is False


def test_append_refuses_a_duplicate_id():
    (t1,) = harness.run_node("BoxDirector.TrajectoryFromBBox", bboxes=[(0, 0, 8, 8)], width=64, height=32,
                             id="box", prompt="").result
    with pytest.raises(ValueError, match="id"):
        harness.run_node("BoxDirector.TrajectoryFromBBox", bboxes=[(4, 0, 8, 8)], width=64, height=32,
                         id="box", prompt="", append_to=t1)
