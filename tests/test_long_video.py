"""Long videos by chunks: the chunk plan (core) and the LongVideoChunks node in ComfyUI's real
sampler on the tiny Wan 2.1 model."""

import json
import math

import pytest
import torch

import harness

from boxdirector.core import long_video as lv  # noqa: E402


@pytest.mark.core
def test_plan_covers_every_frame_once_with_anchor_and_overlap():
    chunks = lv.plan_chunks(13, 5, overlap=1, anchor=True)
    assert chunks[0] == lv.Chunk((0, 1, 2, 3, 4), 0)
    assert chunks[1] == lv.Chunk((0, 4, 5, 6, 7), 2)       # anchor 0, overlap 4, new 5..7
    new = [g for c in chunks for g in c.new if g < 13]
    assert sorted(new) == list(range(13)) and len(new) == 13
    plain = lv.plan_chunks(13, 5, overlap=2, anchor=False)
    assert plain[1] == lv.Chunk((3, 4, 5, 6, 7), 2)
    with pytest.raises(ValueError, match="overlap"):
        lv.plan_chunks(13, 5, overlap=4, anchor=True)
    with pytest.raises(ValueError, match="overlap"):
        lv.plan_chunks(13, 5, overlap=0, anchor=False)


@pytest.mark.core
def test_chunk_masks_follow_the_latent_frames():
    masks = torch.arange(49, dtype=torch.float32).view(1, 49, 1, 1).expand(1, 49, 2, 2)
    ch = lv.plan_chunks(13, 5, 1, True)[1]               # frames (0, 4, 5, 6, 7)
    m = lv.chunk_masks(masks, ch)
    assert m.shape[1] == 17                              # a native-length chunk: 1 + 4 * 4 pixel frames
    assert m[0, :, 0, 0].tolist() == [0] + list(range(13, 17)) + list(range(17, 29))
    last = lv.plan_chunks(13, 5, 1, True)[-1]
    assert lv.chunk_masks(masks, last)[0, -1, 0, 0] == 48   # past the end: the last frame


@pytest.mark.comfy
def test_node_generates_one_long_latent_whose_first_chunk_is_a_native_run(tiny_model, pack_nodes):
    tm = tiny_model("wan21_t2v")
    pos, neg = tm.conditioning()
    latent = tm.empty_latent()                           # [1, 16, T, H, W]: the native chunk
    T = latent["samples"].shape[2]
    length = 4 * (2 * T + 1)                             # > 2x native
    from boxdirector.core.masks import box_masks
    from boxdirector.core.regions import Regions
    from boxdirector.core.trajectory import parse_trajectory, sample_boxes

    h, w = tm.pixel_size
    doc = {"version": 1, "frames": length + 1, "width": w, "height": h, "objects": [
        {"id": "a", "prompt": "a", "keyframes": [{"frame": 0, "box": [0.0, 0.0, 0.4, 0.5]},
                                                 {"frame": length, "box": [0.6, 0.5, 1.0, 1.0]}]}]}
    boxes, vis = sample_boxes(parse_trajectory(json.dumps(doc)))
    regions = Regions(box_masks(boxes, vis, h, w), ("a",), ("a",))
    kw = dict(model=tm.patcher, positive=pos, negative=neg, latent=latent, length=length + 1, overlap=1,
              anchor_first_frame=True, first_frame_share=True, share_strength=1.0, seed=1, steps=2, cfg=3.0,
              sampler_name="euler", scheduler="simple", regions=regions, box_end_percent=0.5)
    (out,) = harness.run_node("BoxDirector.LongVideoChunks", **kw).result
    total = (length) // 4 + 1
    x = out["samples"]
    assert x.shape[2] == total and x.shape[:2] == latent["samples"].shape[:2] and torch.isfinite(x).all()
    # the first chunk is exactly what the sampler gives for a native-length run with the same patch
    from boxdirector.nodes.first_frame import FirstFrameShareRule
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.long_video import sample_chunk

    first = sample_chunk(attention_seam.install(tm.patcher, FirstFrameShareRule(mode="add_first")), 1, 2, 3.0, "euler",
                         "simple", pos, neg, torch.zeros_like(latent["samples"]), None)
    (again,) = harness.run_node("BoxDirector.LongVideoChunks", **dict(kw, regions=None)).result
    assert torch.equal(again["samples"][:, :, :T], first)
    assert not torch.equal(again["samples"], x)          # the boxes steered it
    ok, errors = harness.validate_prompt({"1": {"class_type": "BoxDirector.LongVideoChunks", "inputs": dict(
        {k: v for k, v in kw.items() if not isinstance(v, (torch.Tensor, dict, list, type(tm.patcher), Regions))},
        model=["9", 0], positive=["9", 0], negative=["9", 0], latent=["9", 0], overlap=0, anchor_first_frame=False)},
        "9": {"class_type": "UNETLoader", "inputs": {"unet_name": "x.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}})
    assert not ok and "overlap" in harness.error_text(errors)


@pytest.mark.comfy
def test_image_to_video_chunks_start_from_the_previous_chunks_last_decoded_frame(tiny_model, pack_nodes):
    """Wan 2.1 I2V: chunk 1's concat_latent_image is the VAE encoding of chunk 0's last decoded frame
    (then grey frames, as WanImageToVideo builds it), its concat_mask keeps latent frame 0; the
    output has the whole length; without a VAE the node names the input."""
    import comfy.sd
    import comfy.utils
    from boxdirector.toyworld import install

    tm = tiny_model("wan21_i2v")
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(install.WEIGHTS / install.VAE_NAME)))
    pos, neg = tm.conditioning()
    latent = tm.empty_latent()
    T = latent["samples"].shape[2]
    total = 3 * T - 2                                    # overlap 1: three chunks exactly
    seen = []                                            # c_concat of every model call (ComfyUI's own wrapper hook)
    m = tm.patcher.clone()

    def wrapper(apply_model, args):
        seen.append(args["c"]["c_concat"].detach().clone())
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    kw = dict(model=m, positive=pos, negative=neg, latent=latent, length=4 * (total - 1) + 1, overlap=1,
              anchor_first_frame=True, first_frame_share=True, share_strength=1.0, seed=3, steps=2, cfg=3.0,
              sampler_name="euler", scheduler="simple", regions=None, box_end_percent=0.0)
    with pytest.raises(Exception, match="vae: an image-to-video model needs the VAE input"):
        harness.run_node("BoxDirector.LongVideoChunks", **kw)
    seen.clear()
    (out,) = harness.run_node("BoxDirector.LongVideoChunks", **dict(kw, vae=vae)).result
    x = out["samples"]
    assert x.shape[2] == total and x.shape[:2] == latent["samples"].shape[:2] and torch.isfinite(x).all()
    per_chunk = len(seen) // 3
    assert per_chunk >= 1 and len(seen) == 3 * per_chunk
    fmt = m.model.latent_format
    first, second, third = seen[0], seen[per_chunk], seen[2 * per_chunk]
    # chunk 0: the user's conditioning as given (the mask channels are 1 - concat_mask)
    assert torch.allclose(first[:1, 4:], fmt.process_in(pos[0][1]["concat_latent_image"]), atol=1e-5)
    # chunk 1: the encoding of chunk 0's (= the output's first T latent frames) last decoded frame
    video = vae.decode(x[:, :, :T])
    last = video.reshape((-1,) + tuple(video.shape[-3:]))[-1:]
    image = torch.cat([last, torch.full((4 * (T - 1),) + tuple(last.shape[1:]), 0.5)])
    want = fmt.process_in(vae.encode(image))
    assert torch.allclose(second[:1, 4:], want, atol=1e-4)
    assert (second[:1, :4, 0] == 1).all() and (second[:1, :4, 1:] == 0).all()
    assert not torch.allclose(third[:1, 4:], second[:1, 4:])   # chunk 2 starts from chunk 1's end


@pytest.mark.comfy
def test_chunks_mask_cross_attention_with_clip_and_prompt(comfy, pack_nodes):
    """With clip + prompt the chunks get the whole MaskedAttentionPatch rule (self + cross, each
    object's words found by the real tokenizer) and steer differently from self-only masking; a
    prompt without the object's phrase, or clip without a prompt, is refused naming the field."""
    from boxdirector.core.masks import box_masks
    from boxdirector.core.regions import Regions
    from boxdirector.core.trajectory import parse_trajectory, sample_boxes
    from boxdirector.toyworld import sanity

    nodes, model, _vae, clip = sanity.load_models(shift=sanity.DEFAULTS["shift"])
    length = 25                                          # 7 latent frames: two chunks of the toy's 5
    doc = {"version": 1, "frames": length, "width": 128, "height": 128, "objects": [
        {"id": "o", "prompt": "red circle", "keyframes": [{"frame": 0, "box": [0.0, 0.0, 0.4, 0.4]},
                                                         {"frame": length - 1, "box": [0.6, 0.6, 1.0, 1.0]}]}]}
    boxes, vis = sample_boxes(parse_trajectory(json.dumps(doc)))
    regions = Regions(box_masks(boxes, vis, 128, 128), ("o",), ("red circle",))
    (pos,) = nodes.CLIPTextEncode().encode(clip, "a red circle")
    (neg,) = nodes.CLIPTextEncode().encode(clip, "")
    latent = {"samples": torch.zeros(1, 16, 5, 16, 16)}
    kw = dict(model=model, positive=pos, negative=neg, latent=latent, length=length, overlap=1,
              anchor_first_frame=True, first_frame_share=True, share_strength=1.0, seed=2, steps=2, cfg=3.0,
              sampler_name="euler", scheduler="simple", regions=regions, box_end_percent=1.0)
    (self_only,) = harness.run_node("BoxDirector.LongVideoChunks", **kw).result
    (both,) = harness.run_node("BoxDirector.LongVideoChunks", **dict(kw, clip=clip, prompt="a red circle")).result
    assert both["samples"].shape == self_only["samples"].shape == (1, 16, 7, 16, 16)
    assert not torch.allclose(both["samples"], self_only["samples"], atol=1e-4)
    with pytest.raises(Exception, match="regions: the subject phrase 'red circle'"):
        harness.run_node("BoxDirector.LongVideoChunks", **dict(kw, clip=clip, prompt="a blue square"))
    with pytest.raises(Exception, match="prompt: with clip connected"):
        harness.run_node("BoxDirector.LongVideoChunks", **dict(kw, clip=clip, prompt=""))
    with pytest.raises(Exception, match="clip: a prompt is given but no text encoder"):
        harness.run_node("BoxDirector.LongVideoChunks", **dict(kw, prompt="a red circle"))


@pytest.mark.comfy
def test_chunks_mix_their_encoded_first_frame_into_the_noise(tiny_model, pack_nodes):
    """Eq. 8 in Long Video: a chunk after the first knows its first frame (the anchor latent), so
    its later frames' noise is eps_i = a E(v1) + b eps_i with E(v1) that frame in the sampler's
    space and b keeping unit variance (the formula is written here). Seen in ComfyUI's real sampler:
    at the first step (sigma 1 on the flow schedule) the model's input of a new frame IS its noise.
    Chunk 0 has no first frame: plain noise."""
    import comfy.sample

    tm = tiny_model("wan21_t2v")
    pos, neg = tm.conditioning()
    latent = tm.empty_latent()
    T = latent["samples"].shape[2]
    seen = []
    m = tm.patcher.clone()

    def wrapper(apply_model, args):
        seen.append(args["input"][:1].detach().clone())
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    total = 2 * T - 2                                     # anchor + 1 overlap: exactly two chunks
    kw = dict(model=m, positive=pos, negative=neg, latent=latent, length=4 * (total - 1) + 1, overlap=1,
              anchor_first_frame=True, first_frame_share=False, share_strength=1.0, noise_share=0.2, seed=4,
              steps=2, cfg=3.0, sampler_name="euler", scheduler="simple", regions=None, box_end_percent=0.0)
    (out,) = harness.run_node("BoxDirector.LongVideoChunks", **kw).result
    assert len(seen) == 4
    x = out["samples"]
    zeros = torch.zeros_like(latent["samples"])
    eps0, eps1 = comfy.sample.prepare_noise(zeros, 4), comfy.sample.prepare_noise(zeros, 5)
    assert torch.allclose(seen[0], eps0, atol=1e-5)                       # chunk 0: plain noise
    e1 = tm.patcher.model.latent_format.process_in(x[:, :, :1])          # the anchor, encoded, sampler space
    b = math.sqrt(1 - 0.2 ** 2 * e1.pow(2).mean().item())
    want = 0.2 * e1 + b * eps1[:, :, 2:]
    assert torch.allclose(seen[2][:, :, 2:], want, atol=1e-4)            # chunk 1's new frames
    corr = torch.corrcoef(torch.stack([(seen[2][:, :, 2:] - b * eps1[:, :, 2:]).flatten(),
                                       e1.expand_as(want).flatten()]))[0, 1]
    assert corr > 0.99
    (plain,) = harness.run_node("BoxDirector.LongVideoChunks", **dict(kw, noise_share=0.0)).result
    assert torch.equal(plain["samples"][:, :, :T], x[:, :, :T]) and not torch.equal(plain["samples"], x)


@pytest.mark.comfy
def test_an_empty_latent_for_another_vae_comes_out_as_the_ksampler_would(tiny_model, pack_nodes, comfy):
    """An empty latent made for a VAE of another scale (newer ComfyUI marks it with
    ``downscale_ratio_spacial``, and its KSampler resizes it to the model's; Wan 2.2 TI2V-5B from an
    8x empty video latent is the case people meet): Long Video's chunks have the shape ComfyUI's
    own KSampler gives that latent, whichever ComfyUI runs."""
    tm = tiny_model("wan21_t2v")                          # an 8x model; the latent says 4x
    pos, neg = tm.conditioning()
    _, C, T, H, W = tm.latent_shape
    latent = {"samples": torch.zeros(1, C, T, 2 * H, 2 * W), "downscale_ratio_spacial": 4}
    (ref,) = comfy.common_ksampler(tm.patcher, 1, 1, 1.0, "euler", "simple", pos, neg, latent)
    (out,) = harness.run_node("BoxDirector.LongVideoChunks", model=tm.patcher, positive=pos, negative=neg,
                              latent=latent, length=4 * (T - 1) + 1, overlap=1, anchor_first_frame=False,
                              first_frame_share=False, seed=1, steps=1, cfg=1.0, sampler_name="euler",
                              scheduler="simple").result
    assert out["samples"].shape == ref["samples"].shape, (out["samples"].shape, ref["samples"].shape)
