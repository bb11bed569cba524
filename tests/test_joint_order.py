"""HunyuanVideo's joint attention seen from outside the pack, in the model's own token order.

ComfyUI 0.3.75 attends over [video, text], newer ComfyUI over [text, video]. Here a recorder sits
*around* the pack's attention override, so it sees each call exactly as the model makes it. Where
the text sits is measured, not assumed: the text's v rows (read by a forward hook on the double
block's text projection) are found in the call's v. Every masked call must then equal dense
attention with the PEEKABOO allow mask laid out in that measured order.
"""

import pytest
import torch

import tiny_models
from test_masked_attention_patch import SUBJECTS, regions_for

pytestmark = pytest.mark.comfy


def dense(q, k, v, mask, allow):
    """[B, H, L, d] q/k/v, the model's key mask, an [L, L] allow mask -> [B, L, H*d]."""
    scores = q.float() @ k.float().transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        m = mask.reshape(mask.shape[0], 1, 1, -1)
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
    scores = scores.masked_fill(~allow, float("-inf"))
    out = torch.nan_to_num(scores.softmax(-1), nan=0.0) @ v.float()
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def test_masked_hunyuan_calls_match_the_measured_order(tiny_model):
    from boxdirector.core import token_layout
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    tm = tiny_model("hunyuan_video")
    regions = regions_for(tm)
    rule = MaskedAttention(regions=regions, subject_tokens=SUBJECTS, kinds=frozenset({"self", "cross"}),
                           start=0.0, end=1.0, block_spec="all")
    model = attention_seam.install(tm.patcher, rule)
    topts = model.model_options["transformer_options"]
    inner = topts["optimized_attention_override"]
    calls, text_v = [], []

    def recorder(func, q, k, v, heads, *args, **kwargs):
        out = inner(func, q, k, v, heads, *args, **kwargs)
        block_type = (kwargs.get("transformer_options") or {}).get("block_type")
        if block_type in ("double", "single"):
            calls.append((block_type, q, k, v, kwargs.get("mask"), out))
        return out

    topts["optimized_attention_override"] = recorder
    dm = tm.patcher.model.diffusion_model
    hidden = dm.double_blocks[0].hidden_size
    hook = dm.double_blocks[0].txt_attn.qkv.register_forward_hook(
        lambda mod, inp, out: text_v.append(out[..., 2 * hidden:]))
    try:
        tiny_models.sample(tm, steps=2, patcher=model)
    finally:
        hook.remove()

    doubles = [c for c in calls if c[0] == "double"]
    assert doubles and len(text_v) == len(doubles) and any(c[0] == "single" for c in calls)
    _, q, k, v, mask, out = doubles[0]
    b, h, L, d = v.shape
    tv = text_v[0].reshape(b, -1, h, d).transpose(1, 2)
    n_text = tv.shape[2]
    first, last = torch.equal(v[:, :, :n_text], tv), torch.equal(v[:, :, -n_text:], tv)
    assert first != last, "the text's v rows must sit at one end of the joint sequence"
    text_first = first

    latent = tuple(tm.latent_shape)
    labels = token_layout.token_labels(regions.masks, "hunyuan_video", (1,) + latent[1:])
    key_obj = torch.zeros(n_text, dtype=torch.long)
    for i, pos in enumerate(SUBJECTS):
        key_obj[list(pos)] = i + 1
    full = torch.cat([key_obj, labels]) if text_first else torch.cat([labels, key_obj])
    allow = full[:, None] == full[None, :]
    wrong = torch.cat([labels, key_obj]) if text_first else torch.cat([key_obj, labels])
    allow_wrong = wrong[:, None] == wrong[None, :]
    for block_type, q, k, v, mask, out in calls:
        ref = dense(q, k, v, mask, allow)
        err = (out.float() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
        assert err < 2e-4, (block_type, err, text_first)
        # The other order is a different plan: this test tells them apart.
        assert (dense(q, k, v, mask, allow_wrong) - ref).abs().max().item() > 1e-3
