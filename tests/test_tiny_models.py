"""The tiny real models (tests/tiny_models.py): ComfyUI's own loader detects each as the intended
architecture, and ComfyUI's own KSampler runs it -- with the conditioning of that family really
reaching the network, and the attention layouts that attention patches will meet."""

from __future__ import annotations

import math

import pytest
import torch

import tiny_models

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run this module's models on one intra-op thread, restored afterwards.

    The tiny models are made of many small ops; on a 2-core box shared with other processes,
    torch's 2 OpenMP threads keep waiting for each other, and this file measured 108 s with 2
    threads vs 27 s with 1 under the same load (SVD alone 59 s vs 11 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

DIFFUSION_MODULE = {  # the class inside model_base.<X>.diffusion_model
    "wan21_t2v": "WanModel",
    "wan21_i2v": "WanModel",
    "wan22_ti2v_5b": "WanModel",
    "hunyuan_video": "HunyuanVideo",
    "ltxv": "LTXVModel",
    "svd": "UNetModel",
}


def instrumented(tm):
    """A clone of the shared patcher that counts diffusion-model forwards (DIFFUSION_MODEL
    wrapper) and records every attention call (optimized_attention_override)."""
    import comfy.patcher_extension

    calls, attn = [], []

    def count(executor, x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return executor(x, *args, **kwargs)

    # A plain closure, not a bound method: ModelPatcher.clone() deep-copies model_options, and
    # deepcopy would copy a bound method's instance (and so its list) but keeps functions as is.
    def override(func, q, k, v, heads, *args, **kwargs):
        mask = kwargs.get("mask", args[0] if args else None)
        attn.append({
            "q": tuple(q.shape), "k": tuple(k.shape), "v": tuple(v.shape), "heads": heads,
            "skip_reshape": kwargs.get("skip_reshape", False),
            "mask": None if mask is None else tuple(mask.shape),
        })
        return func(q, k, v, heads, *args, **kwargs)

    patcher = tm.patcher.clone()
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "tiny-test", count)
    patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return patcher, calls, attn


def expected_attention_lengths(tm) -> set:
    """(query length, key length) of every attention call, from the family's token layout.
    Sequence length is q.shape[-2] both for [B, L, heads*dim] and, with skip_reshape, [B, heads, L, dim]."""
    text = tiny_models.TEXT_TOKENS
    if tm.family == "svd":
        frames, _, h, w = tm.latent_shape
        # spatial self + cross (one CLIP-image token), then temporal self + cross over frames
        return {(h * w, h * w), (h * w, 1), (frames, frames), (frames, 1)}
    tokens = math.prod(tm.token_grid)
    if tm.family == "hunyuan_video":
        # txt_in token refiner over the text alone, then joint attention over [image tokens, text]
        return {(text, text), (tokens + text, tokens + text)}
    out = {(tokens, tokens), (tokens, text)}
    if tm.family == "wan21_i2v":
        out.add((tokens, tiny_models.CLIP_VISION_TOKENS))  # separate image cross-attention
    return out


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_tiny_model_detected_and_samples(tiny_model, family):
    import comfy.model_base

    tm = tiny_model(family)
    model = tm.patcher.model
    assert type(model) is tm.model_class
    assert isinstance(model, comfy.model_base.BaseModel)
    assert type(model.diffusion_model).__name__ == DIFFUSION_MODULE[family]
    assert tm.param_count < 120_000_000
    assert model.latent_format.latent_channels == tm.latent_channels

    patcher, calls, attn = instrumented(tm)
    out = tiny_models.sample(tm, steps=2, seed=0, patcher=patcher)
    assert tuple(out.shape) == tm.latent_shape
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0

    # The network really ran: at least one forward per step (ComfyUI batches cond and uncond).
    assert len(calls) >= 2
    # What the network sees: the latent plus concat channels (i2v: 4 mask + 16 image; SVD: 4 image).
    in_channels = {"wan21_i2v": 36, "svd": 8}.get(family, tm.latent_channels)
    assert all(c[1] == in_channels for c in calls), calls
    lengths = {(a["q"][-2], a["k"][-2]) for a in attn}
    assert lengths == expected_attention_lengths(tm), (lengths, attn[:6])

    # The output depends on the input noise and on the conditioning.
    assert not torch.equal(out, tiny_models.sample(tm, steps=2, seed=1))
    pos, neg = tm.conditioning()
    assert not torch.equal(out, tiny_models.sample(tm, steps=2, seed=0, positive=neg, negative=pos))


def test_wan_i2v_image_tokens_reach_cross_attention(tiny_model):
    """Wan 2.1 i2v (WanI2VCrossAttention): clip_vision_output.penultimate_hidden_states ->
    clip_fea -> img_emb -> 257 tokens prepended to the text context, split off again in every
    block's cross-attention and attended *separately* (k = v = 257 image tokens), the result added
    to the text cross-attention. Both the k length and the output's dependence prove they arrive."""
    import comfy.clip_vision

    tm = tiny_model("wan21_i2v")
    patcher, _, attn = instrumented(tm)
    out = tiny_models.sample(tm, steps=2, seed=0, patcher=patcher)

    tokens = math.prod(tm.token_grid)
    image_calls = [a for a in attn if a["k"][1] == tiny_models.CLIP_VISION_TOKENS]
    text_calls = [a for a in attn if a["k"][1] == tiny_models.TEXT_TOKENS]
    blocks = tm.config["num_layers"]
    assert len(image_calls) == len(text_calls) == 2 * blocks  # 2 steps, cond+uncond batched
    for a in image_calls:
        assert a["q"] == (2, tokens, tm.config["dim"])  # [cond+uncond, video tokens, heads*128]
        assert a["heads"] == tm.config["num_heads"] == 2

    # Changing only the CLIP-vision features changes the video.
    pos, neg = tm.conditioning()
    other = comfy.clip_vision.Output()
    other["penultimate_hidden_states"] = -pos[0][1]["clip_vision_output"].penultimate_hidden_states
    pos2 = [[pos[0][0], dict(pos[0][1], clip_vision_output=other)]]
    neg2 = [[neg[0][0], dict(neg[0][1], clip_vision_output=other)]]
    assert not torch.equal(out, tiny_models.sample(tm, steps=2, seed=0, positive=pos2, negative=neg2))

    # And the concat image (mask + image latent, 20 extra channels) matters too.
    pos3 = [[pos[0][0], dict(pos[0][1], concat_latent_image=torch.zeros(tm.latent_shape))]]
    neg3 = [[neg[0][0], dict(neg[0][1], concat_latent_image=torch.zeros(tm.latent_shape))]]
    assert not torch.equal(out, tiny_models.sample(tm, steps=2, seed=0, positive=pos3, negative=neg3))


def test_build_is_cached_per_directory(tiny_model, tiny_model_dir):
    """A second build in the same folder reuses the file (no rebuild) but reloads it through
    comfy.sd.load_diffusion_model, giving a fresh ModelPatcher that samples identically."""
    first = tiny_model("wan21_t2v")
    mtime = first.path.stat().st_mtime_ns
    again = tiny_models.build_tiny_model("wan21_t2v", tiny_model_dir)
    assert again.build_seconds == 0.0
    assert again.path.stat().st_mtime_ns == mtime
    assert again.patcher is not first.patcher
    assert type(again.patcher.model) is first.model_class
    # Same file, same seed: the same video (weights and sampling are deterministic).
    assert torch.equal(tiny_models.sample(first, seed=3), tiny_models.sample(again, seed=3))
