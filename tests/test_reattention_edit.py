"""ReAttentionEdit on the toy world (toyworld weights through ComfyUI's loaders) and a tiny real
Wan 2.1 model, sampled through ComfyUI's own CFGGuider: inversion -> regeneration error, IRJS
keeps the outside of the regions, RAD's gradient reaches the latent (also under the executor's
inference mode) and lowers its loss, the capture rule, validation and determinism.

Mechanics only: the toy DiT is under-trained, quality figures are printed by ``python -m bench.edit``."""

from __future__ import annotations

import json
import math
import sys

import harness
import pytest
import torch

harness.import_pack()

from boxdirector.core.regions import Regions

pytestmark = pytest.mark.comfy
STEPS = 3


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy(comfy):
    from boxdirector.toyworld import sanity

    torch.manual_seed(0)
    nodes, model, vae, clip = sanity.load_models(shift=sanity.DEFAULTS["shift"])
    return nodes, model, vae, clip


def red_circle_clip():
    sys.path.insert(0, str(harness.ROOT))
    from boxdirector.toyworld import data

    from bench.edit import is_red_circle

    seed = next(s for s in range(2000) if is_red_circle(data.make_clip(s, n_objects=1)))
    return data.make_clip(seed, n_objects=1)


@pytest.fixture(scope="module")
def toy_source(toy):
    nodes, _model, vae, _clip = toy
    c = red_circle_clip()
    with torch.no_grad():   # as ComfyUI runs nodes: the source latent carries no autograd graph
        (latent,) = nodes.VAEEncode().encode(vae, c.video)
    from bench.edit import clip_regions

    return c, latent, clip_regions(c)


def encode(nodes, clip, text):
    return nodes.CLIPTextEncode().encode(clip, text)[0]


def psnr(a, b, mask=None):
    d = (a - b) ** 2
    mse = d[mask].mean() if mask is not None else d.mean()
    return float(10 * torch.log10(1.0 / mse.clamp(min=1e-12)))


def edit(model, nodes, clip, latent, regions, prompt="a blue square", **kw):
    from boxdirector.nodes import reattention_edit as rea

    args = {"steps": STEPS, "cfg": 5.0, "rad_strength": 0.0, "refine_iterations": 0, "seed": 0}
    args.update(kw)
    source_text = args.pop("source_text", "a red circle")
    return rea.run_edit(model, encode(nodes, clip, prompt), encode(nodes, clip, ""), latent, regions, clip=clip,
                        prompt=prompt, source_conditioning=encode(nodes, clip, source_text), **args)


# --- inversion -----------------------------------------------------------------------------------

def test_inversion_then_regeneration_reconstructs_the_source(toy, toy_source):
    """Regions over the whole frame, the source prompt, cfg 1, no RAD: the edit is plain DDIM /
    Euler regeneration from the inverted latent. It must land far closer to the source than the
    same sampler started from random noise of the same seed. 20 steps, the toy world's count: on
    the six-block DiT 8 steps do not reconstruct (relative error 0.90 vs 0.94 from random noise;
    20 steps 0.05 vs 0.92), on the four-block one before it they did (0.18 vs 1.04)."""
    nodes, model, _vae, clip = toy
    c, latent, _ = toy_source
    whole = Regions(torch.ones(1, c.video.shape[0], 128, 128), ("all",), ("red circle",))
    src = latent["samples"]
    out, stats = edit(model, nodes, clip, latent, whole, prompt="a red circle", cfg=1.0, steps=20, inversion_iterations=3)
    rel = float((out["samples"] - src).norm() / src.norm())
    # The same regeneration from random noise at the start level (flow: sigma_max = 1).
    import comfy.samplers
    from boxdirector.nodes.reattention_edit import EditGuider

    guider = EditGuider(model)
    guider.set_conds(encode(nodes, clip, "a red circle"), encode(nodes, clip, ""))
    guider.set_cfg(1.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 20)
    noise = torch.randn(src.shape, generator=torch.Generator().manual_seed(0))
    rand = guider.sample(noise, torch.zeros_like(src), comfy.samplers.sampler_object("euler"), sigmas, seed=0)
    rel_rand = float((rand - src).norm() / src.norm())
    print(f"inversion -> regeneration relative latent error {rel:.4f} (random start {rel_rand:.4f})")
    assert stats["inverted"].shape == src.shape
    assert rel < 0.5 * rel_rand, (rel, rel_rand)


# --- IRJS ----------------------------------------------------------------------------------------

def test_irjs_keeps_the_outside_of_the_regions(toy, toy_source):
    """IRJS alone (RAD off): outside the regions the latent is the source's exactly; decoded, the
    outside (past two latent pixels of the boxes, the VAE decoder's reach) matches the VAE round trip of
    the source. Without the final paste the outside is only close."""
    from boxdirector.nodes.reattention_edit import CaptureState, EditPlan

    nodes, model, vae, clip = toy
    _c, latent, regions = toy_source
    src = latent["samples"]
    out, _ = edit(model, nodes, clip, latent, regions)
    plan = EditPlan(masks=regions.masks, layout="wan21", objects=(), columns=(), state=CaptureState())
    inside = plan.latent_region(src.shape).expand_as(src).bool()
    assert inside.any() and (~inside).any()
    assert torch.equal(out["samples"][~inside], src[~inside])
    assert not torch.equal(out["samples"][inside], src[inside])
    with torch.no_grad():
        (ref,) = nodes.VAEDecode().decode(vae, latent)
        (img,) = nodes.VAEDecode().decode(vae, out)
    ref, img = ref.reshape(-1, 128, 128, 3), img.reshape(-1, 128, 128, 3)
    sys.path.insert(0, str(harness.ROOT))
    from bench.edit import background_mask

    outside = background_mask(plan.latent_region(src.shape), img.shape[0], 128)
    bg = psnr(img, ref, outside[..., None].expand_as(img))
    print(f"IRJS only: background PSNR vs VAE round trip {bg:.1f} dB")
    assert bg >= 35.0
    loose, _ = edit(model, nodes, clip, latent, regions, paste_background=False)
    assert not torch.equal(loose["samples"][~inside], src[~inside])


# --- RAD -----------------------------------------------------------------------------------------

def test_rad_gradient_lowers_the_loss_under_inference_mode(toy_source, comfy):
    """A model loaded and run under torch.inference_mode() (as ComfyUI's executor does): RAD still
    gets its gradient; with a small step, refinement iterations at step 0 lower the loss."""
    from boxdirector.toyworld import sanity

    _c, latent, regions = toy_source
    with torch.inference_mode():
        nodes, model, _vae, clip = sanity.load_models(shift=3.0)
        assert next(model.model.diffusion_model.parameters()).is_inference()
        out, stats = edit(model, nodes, clip, latent, regions, rad_strength=0.05, rad_end=0.34, refine_iterations=3,
                          steps=STEPS)
        off, _ = edit(model, nodes, clip, latent, regions, rad_strength=0.0, steps=STEPS)
    assert stats["weights_swapped"] > 0
    import comfy.model_management

    assert not getattr(comfy.model_management, "in_training", False)   # newer ComfyUI's flag set back
    trace = [t for t in stats["rad_trace"] if t[0] == 0]
    assert len(trace) >= 2 and stats["rad_steps"] == 2
    losses = [t[2] for t in trace]
    print("RAD loss over refinement iterations at step 0:", [round(v, 4) for v in losses])
    assert losses[-1] < losses[0]
    assert torch.isfinite(out["samples"]).all()
    assert not torch.equal(out["samples"], off["samples"])


def test_rad_on_a_masked_attention_patched_model_under_inference_mode(toy_source, pack_nodes):
    """ReAttention Edit on a model patched by Masked Attention Patch (the toy edit workflow chains
    them), everything under torch.inference_mode() as ComfyUI's executor runs nodes: the patch's
    region plans, first built during the inversion's inference-mode calls, must also serve RAD's
    gradient passes (an inference tensor saved for backward is an error), and the patch must change
    the edit."""
    from boxdirector.toyworld import sanity

    _c, latent, regions = toy_source
    with torch.inference_mode():
        nodes, model, _vae, clip = sanity.load_models(shift=3.0)
        (patched,) = harness.run_node("BoxDirector.MaskedAttentionPatch", model=model, regions=regions, clip=clip,
                                      prompt="a blue square", start_percent=0.0, end_percent=0.5,
                                      self_attention=True, cross_attention=True, temporal_attention=True,
                                      blocks="0%-50%", cond_only=False, word_binding="per_object",
                                      special_tokens="background", mask_normalization=False,
                                      coverage=0.5).result
        out, stats = edit(patched, nodes, clip, latent, regions, rad_strength=0.05, rad_end=0.34,
                          refine_iterations=1, steps=STEPS)
        plain, _ = edit(model, nodes, clip, latent, regions, rad_strength=0.05, rad_end=0.34,
                        refine_iterations=1, steps=STEPS)
    assert stats["rad_evaluations"] >= 2
    assert torch.isfinite(out["samples"]).all()
    assert not torch.equal(out["samples"], plain["samples"])


def test_capture_rule_matches_dense_text_attention_and_leaves_the_output(comfy):
    from boxdirector.nodes import attention_seam, model_families
    from boxdirector.nodes.reattention_edit import (
        CaptureState,
        CrossAttentionMaps,
        MapsComplete,
    )

    fam = model_families.SequenceDiT("Wan 2.1", "wan21", 3)
    fwd = attention_seam.ForwardCall(family=fam, latent_shape=(2, 16, 2, 4, 6), cond_or_uncond=(1, 0),
                                     step_fraction=0.0, sigma=1.0, text_len=5)
    n, heads, d = 2 * 2 * 3, 2, 4
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, m, heads * d, generator=g) for m in (n, 5, 5))
    call = attention_seam.AttentionCall("cross", 1, q, k, v, heads, (), {}, fwd)
    state = CaptureState(active=True)
    rule = CrossAttentionMaps(columns=(1, 3), blocks=frozenset({1}), state=state, stop_early=False)
    sentinel = torch.zeros(1)
    assert rule.attend(call, lambda: sentinel) is sentinel
    (maps,) = state.maps
    qh, kh = q[1].view(n, heads, d).transpose(0, 1), k[1].view(5, heads, d).transpose(0, 1)   # cond = chunk 1
    dense = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), -1).mean(0)[:, [1, 3]]
    assert torch.allclose(maps, dense, atol=1e-6)
    # Other blocks, self-attention, inactive state: nothing recorded.
    for other in (attention_seam.AttentionCall("cross", 0, q, k, v, heads, (), {}, fwd),
                  attention_seam.AttentionCall("self", 1, q, q, q, heads, (), {}, fwd)):
        rule.attend(other, lambda: sentinel)
    state.active = False
    rule.attend(call, lambda: sentinel)
    assert len(state.maps) == 1
    # The last chosen block ends the forward pass.
    state.active = True
    with pytest.raises(MapsComplete):
        CrossAttentionMaps(columns=(1,), blocks=frozenset({0, 1}), state=state).attend(call, lambda: sentinel)


# --- a tiny real Wan 2.1 (2 heads) with trajectories through the nodes ---------------------------

@pytest.fixture(scope="module")
def wan(tiny_model):
    return tiny_model("wan21_t2v")


def wan_doc(tm, frames=None):
    h, w = tm.pixel_size
    return {"version": 1, "frames": frames or tm.pixel_frames, "width": w, "height": h, "objects": [
        {"id": "sq", "prompt": "blue square", "keyframes": [{"frame": 0, "box": [0.0, 0.1, 0.4, 0.7]},
                                                            {"frame": (frames or tm.pixel_frames) - 1,
                                                             "box": [0.5, 0.3, 0.95, 0.9]}]}]}


def wan_trajectory(tm, frames=None):
    return harness.run_node("BoxDirector.BBoxTrajectory", trajectory=json.dumps(wan_doc(tm, frames)), frames=0,
                            width=0, height=0).result[0]


def wan_regions(tm):
    from boxdirector.core.masks import box_masks
    from boxdirector.core.trajectory import parse_trajectory, sample_boxes

    traj = parse_trajectory(json.dumps(wan_doc(tm)))
    boxes, visible = sample_boxes(traj)
    return Regions(box_masks(boxes, visible, traj.height, traj.width), ("sq",), ("blue square",))


def wan_source(tm):
    return {"samples": torch.randn(tm.latent_shape, generator=torch.Generator().manual_seed(3))}


def node_args(tm, text_clip, nodes, **kw):
    prompt = "a blue square"
    args = {"model": tm.patcher, "positive": encode(nodes, text_clip, prompt),
            "negative": encode(nodes, text_clip, ""), "source": wan_source(tm), "clip": text_clip, "prompt": prompt,
            "seed": 1, "steps": 2, "cfg": 3.0, "scheduler": "simple", "rad_strength": 1.0, "rad_end_percent": 0.5,
            "refine_iterations": 0, "topk_fraction": 0.2, "blocks": "all", "frame_window": 0, "smooth_maps": True,
            "paste_background": True}
    args.update(kw)
    return args


def test_node_on_tiny_wan_with_a_moving_box_windows_and_determinism(wan, toy, pack_nodes):
    nodes, _, _, clip = toy   # the toy CLIP's 4096-wide text fits Wan's text embedding
    node = "BoxDirector.ReAttentionEdit"
    traj = wan_trajectory(wan)
    (a,) = harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes)).result
    (b,) = harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes)).result
    assert torch.equal(a["samples"], b["samples"])                      # seeded
    (c,) = harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes, seed=2)).result
    assert not torch.equal(a["samples"], c["samples"])                  # IRJS noise follows the seed
    (w,) = harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes, frame_window=2)).result
    assert torch.isfinite(w["samples"]).all() and not torch.equal(w["samples"], a["samples"])
    (off,) = harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes, rad_strength=0.0)).result
    assert not torch.equal(off["samples"], a["samples"])                # RAD moved the latent


def test_bad_input_is_named(wan, toy, pack_nodes, caplog):
    import logging

    nodes, _, _, clip = toy
    node = "BoxDirector.ReAttentionEdit"
    traj = wan_trajectory(wan)
    with pytest.raises(ValueError, match="blue square.*not in the prompt"):
        harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes, prompt="a red circle"))
    # Another length is the pack's one rule: resampled onto the source, with a note in the log.
    with caplog.at_level(logging.WARNING, logger="boxdirector"):
        (out,) = harness.run_node(node, trajectory=wan_trajectory(wan, frames=17), **node_args(wan, clip, nodes)).result
    assert torch.isfinite(out["samples"]).all()
    assert "ReAttention Edit" in caplog.text and "17 frames stretched" in caplog.text, caplog.text
    with pytest.raises(ValueError, match="trajectory / regions: connect exactly one"):
        harness.run_node(node, **node_args(wan, clip, nodes))
    with pytest.raises(ValueError, match="clip / prompt"):
        harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes, clip=None))
    with pytest.raises(ValueError, match="source: a Wan 2.1 video latent is 5-D"):
        harness.run_node(node, trajectory=traj, **node_args(wan, clip, nodes, source={"samples": torch.zeros(1, 16, 8, 12)}))
    cls = pack_nodes[node]
    assert "blocks" in cls.validate_inputs(blocks="0-x")
    assert "steps" in cls.validate_inputs(steps=0)
    assert "rad_end_percent" in cls.validate_inputs(rad_end_percent=1.5)
    assert "maps" in cls.validate_inputs(maps="pixels")
    assert cls.validate_inputs(steps=None, blocks=None) is True     # linked inputs arrive as None


def test_validation_through_the_prompt_validator(pack_nodes):
    prompt = {"1": {"class_type": "BoxDirector.ReAttentionEdit", "inputs": {
        "model": ["2", 0], "positive": ["3", 0], "negative": ["3", 0], "source": ["4", 0], "prompt": "",
        "seed": 0, "steps": 4, "cfg": 5.0, "scheduler": "simple", "rad_strength": 1.0, "rad_end_percent": 0.5,
        "refine_iterations": 0, "topk_fraction": 0.2, "blocks": "first half", "frame_window": 0,
        "smooth_maps": True, "paste_background": True}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "x.safetensors", "weight_dtype": "default"}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 0]}},
        "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 128, "height": 128, "length": 17,
                                                                  "batch_size": 1}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["6", 0], "text": "a"}},
        "6": {"class_type": "BoxDirector.ToyTextEncoderLoader", "inputs": {}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}}
    ok, errors = harness.validate_prompt(prompt)
    assert not ok
    assert "blocks: cannot read 'first half'" in harness.error_text({"1": errors["1"]}), errors


# --- composition with shaping rules on the seam, and the shared model (issue 28) -----------------

PROMPT = "a blue square"


def masked_patch(model, regions, clip, blocks):
    """Masked Attention Patch on every step, self and cross-attention, the edit's own boxes and words."""
    (patched,) = harness.run_node("BoxDirector.MaskedAttentionPatch", model=model, regions=regions, clip=clip,
                                  prompt=PROMPT, start_percent=0.0, end_percent=1.0, self_attention=True,
                                  cross_attention=True, temporal_attention=True, blocks=blocks, cond_only=False,
                                  word_binding="per_object", special_tokens="background", mask_normalization=False,
                                  coverage=0.5).result
    return patched


def wan_edit(model, tm, nodes, clip, **kw):
    from boxdirector.nodes import reattention_edit as rea

    args = {"steps": 2, "cfg": 3.0, "rad_strength": 1.0, "rad_end": 0.5, "refine_iterations": 1, "seed": 1,
            "blocks": "all"}
    args.update(kw)
    return rea.run_edit(model, encode(nodes, clip, PROMPT), encode(nodes, clip, ""), wan_source(tm), wan_regions(tm),
                        clip=clip, prompt=PROMPT, **args)


@pytest.mark.parametrize("masked_blocks", ["all", "0%-50%"])
def test_rad_reads_every_block_after_a_masked_attention_patch(wan, toy, pack_nodes, masked_blocks):
    """Masked Attention Patch computes the attention of its blocks itself and never calls on; the
    edit's map capture, installed after it, must still see the cross-attention of every block."""
    nodes, _, _, clip = toy
    patched = masked_patch(wan.patcher, wan_regions(wan), clip, masked_blocks)
    out, stats = wan_edit(patched, wan, nodes, clip)
    every = tuple(range(wan.config["num_layers"]))
    assert stats["rad_evaluations"] >= 2 and len(stats["rad_blocks"]) == stats["rad_evaluations"]
    assert all(read == every for read in stats["rad_blocks"]), stats["rad_blocks"]
    assert torch.isfinite(out["samples"]).all()


def test_inversion_is_not_shaped_by_a_masked_attention_patch(wan, toy, pack_nodes):
    """The source is inverted with the model's own attention: the patch chained before the edit is
    for the new video (the edit prompt's words), not for reconstructing the source."""
    nodes, _, _, clip = toy
    patched = masked_patch(wan.patcher, wan_regions(wan), clip, "all")
    out, stats = wan_edit(patched, wan, nodes, clip)
    plain_out, plain = wan_edit(wan.patcher, wan, nodes, clip)
    assert torch.equal(stats["inverted"], plain["inverted"])
    assert not torch.equal(out["samples"], plain_out["samples"])       # the patch does shape the edit


def tensors_of(module):
    """name -> (tensor object, data_ptr, is_inference) of every parameter and buffer."""
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    return {n: (t, t.data_ptr(), t.is_inference()) for n, t in named}


def test_edit_leaves_the_shared_model_unchanged(toy, tiny_model_dir, pack_nodes):
    """Under the executor's inference mode, RAD needs ordinary weights; the cached model other
    workflows use must keep its own tensor objects (also when the edit fails), and sample the same."""
    import tiny_models
    from boxdirector.nodes import attention_seam

    nodes, _, _, clip = toy
    with torch.inference_mode():
        tm = tiny_models.build_tiny_model("wan21_t2v", tiny_model_dir)   # its own patcher, loaded like the executor's
        dm = tm.patcher.model.diffusion_model
        before = tensors_of(dm)
        assert all(inf for _, _, inf in before.values())
        sample_before = tiny_models.sample(tm, steps=2, seed=4)

        def unchanged():
            now = tensors_of(dm)
            assert now.keys() == before.keys()
            changed = [n for n, (t, ptr, inf) in now.items() if t is not before[n][0] or (ptr, inf) != before[n][1:]]
            assert not changed, changed[:5]

        _, stats = wan_edit(tm.patcher, tm, nodes, clip, blocks="all")
        unchanged()
        _, first_only = wan_edit(tm.patcher, tm, nodes, clip, blocks="0")
        unchanged()
        # Only the modules a RAD pass runs get copies: block 1 is never reached when RAD reads block 0.
        assert 0 < first_only["weights_swapped"] < stats["weights_swapped"]
        assert torch.equal(tiny_models.sample(tm, steps=2, seed=4), sample_before)

        class FailsInRad:
            name = "fails_in_rad"

            def attend(self, call, proceed):
                if torch.is_grad_enabled():
                    raise RuntimeError("boom")
                return proceed()

        broken = attention_seam.install(tm.patcher, FailsInRad())
        with pytest.raises(RuntimeError, match="boom"):
            wan_edit(broken, tm, nodes, clip)
        unchanged()
