"""Proof, against ComfyUI's own model code, that core.token_layout labels tokens in each model's
real token order -- not an assumption about it.

Method. Each model is its real ComfyUI class built tiny. A *marker latent* carries, in channels
0..2, the latent coordinates (t, y, x) of every latent pixel, and from channel 3 on, each object's
mask averaged over the pixels of that latent pixel. The patch embedding is set to a selector:

- "ramp" channels: for coordinate c, output channel ``base + o`` = ``2*o*c - o*o`` read from the
  patch's top-left latent pixel (never padding), so ``argmax_o`` over the block is c. An argmax
  survives every per-token LayerNorm/RMSNorm and positive scale, so it can be read both at the first
  block's input and from ``v`` inside the attention call (v-projection = identity, modulation 0);
- "coverage" channels: output ``COV + k`` = mean of object k's latent mask over the patch, i.e. the
  token's coverage as the model's own patching computes it (read exactly at the block input).

The model is then run through its real forward, with ``transformer_options =
{"optimized_attention_override": fn}`` to see q/k/v exactly as every attention call receives them.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from boxdirector.core import token_layout as tl

pytestmark = pytest.mark.comfy

RAMP = 16                      # values per coordinate block (latent sizes in these tests stay < 16)
T_BASE, Y_BASE, X_BASE = 0, RAMP, 2 * RAMP
COV = 3 * RAMP                 # coverage channels start here
MARK = 3                       # first latent channel holding an object's mask


# --- markers ------------------------------------------------------------------------------------

def selector_weights(out_dim, in_dim, patch, n_objects):
    """Weight [out, in, *patch] and bias [out] of the patch embedding described in the docstring."""
    w = torch.zeros(out_dim, in_dim, *patch)
    b = torch.zeros(out_dim)
    for base, channel in ((T_BASE, 0), (Y_BASE, 1), (X_BASE, 2)):
        for o in range(RAMP):
            w[base + o, channel, 0, 0, 0] = 2.0 * o
            b[base + o] = -float(o * o)
    for k in range(n_objects):
        w[COV + k, MARK + k, 0] = 1.0 / (patch[1] * patch[2])   # patch[0] is 1 in every family
    return w, b


def decode(tokens):
    """[..., C] -> [..., 3] (t, y, x): the argmax of each ramp block."""
    return torch.stack([tokens[..., base:base + RAMP].argmax(-1) for base in (T_BASE, Y_BASE, X_BASE)], -1)


def object_boxes(family, frames, s):
    """Two objects in pixels, from latent-pixel units: object 0 aligned to 2x2-latent-pixel tokens
    (so its labels can be predicted without token_layout), moving right at the last latent frame;
    object 1 a fractional box drifting one pixel per frame (coverage between 0 and 1)."""
    lay = tl.LAYOUTS[family]
    c = lay.temporal_compression

    def latent_t(f):
        return 0 if f == 0 else (f + c - 1) // c

    def box0(f):
        shift = 2 if latent_t(f) >= 2 else 0
        return (2 + shift) * s, 0, (6 + shift) * s, 4 * s          # x0, y0, x1, y1 in pixels
    masks = torch.zeros(2, frames, 6 * s, 8 * s)
    for f in range(frames):
        x0, y0, x1, y1 = box0(f)
        masks[0, f, y0:y1, x0:x1] = 1.0
        x0, y0 = int(0.25 * s) + f, int(4.625 * s)
        masks[1, f, y0:y0 + int(1.375 * s), x0:x0 + int(1.125 * s)] = 1.0
    return masks, box0


def latent_masks(masks, family, n_latent):
    """[K, F, H, W] pixel masks -> [K, T, H/s, W/s], written out from the VAE facts (latent frame 0
    = pixel frame 0; latent frame t = pixel frames c(t-1)+1 .. ct; s x s pixel means)."""
    lay = tl.LAYOUTS[family]
    c, s = lay.temporal_compression, lay.spatial_compression
    frames = [masks[:, :1].mean(1)] + [masks[:, c * (t - 1) + 1:c * t + 1].mean(1) for t in range(1, n_latent)]
    return F.avg_pool2d(torch.stack(frames, 1), s)


def marker_latent(shape, lat_masks=None):
    """[1, C, T, H, W]: channels 0..2 = t, y, x; channels MARK.. = the objects' latent masks."""
    _, ch, t, h, w = shape
    x = torch.zeros(shape)
    x[0, 0] = torch.arange(t, dtype=torch.float32)[:, None, None]
    x[0, 1] = torch.arange(h, dtype=torch.float32)[None, :, None]
    x[0, 2] = torch.arange(w, dtype=torch.float32)[None, None, :]
    if lat_masks is not None:
        x[0, MARK:MARK + lat_masks.shape[0]] = lat_masks
    return x


def check_order(coords, family, latent):
    """Token i of the model came from the top-left latent pixel of grid cell i, row-major (t, y, x)."""
    pt, ph, pw = tl.LAYOUTS[family].patch
    gt, gh, gw = tl.token_grid(family, latent)
    assert coords.shape[0] == gt * gh * gw == tl.num_tokens(family, latent)
    assert (coords[:, 1] % ph == 0).all() and (coords[:, 2] % pw == 0).all(), "not the patch's top-left pixel"
    cell = ((coords[:, 0] // pt) * gh + coords[:, 1] // ph) * gw + coords[:, 2] // pw
    assert torch.equal(cell, torch.arange(coords.shape[0])), "the model's token order is not (t, y, x) row-major"


def check_labels(block_input, coords, masks, box0, family, latent):
    """The labels token_layout gives, read in the model's order, agree with the model's own tokens:
    (a) object 0 (token-aligned): label 1 exactly on tokens whose pixels the box holds, predicted
        from the decoded latent position alone; (b) the coverage the model's patching computes
        equals token_coverage, token by token."""
    lay = tl.LAYOUTS[family]
    c, s = lay.temporal_compression, lay.spatial_compression
    _, ph, pw = lay.patch
    labels = tl.token_labels(masks, family, latent)
    for i, (t, y, x) in enumerate(coords.tolist()):
        frames = [0] if t == 0 else range(c * (t - 1) + 1, c * t + 1)
        inside = all(box0(f)[0] <= x * s and (x + pw) * s <= box0(f)[2]
                     and box0(f)[1] <= y * s and (y + ph) * s <= box0(f)[3] for f in frames)
        assert (labels[i] == 1) == inside, f"token {i} at latent {(t, y, x)}"
    model_cov = block_input[:, COV:COV + masks.shape[0]].T                      # [K, N], model order
    ours = tl.token_coverage(masks, family, latent).reshape(masks.shape[0], -1)
    assert torch.allclose(model_cov, ours, atol=1e-5)
    assert (labels == 2).any() and set(labels.unique().tolist()) == {0, 1, 2}


class Capture:
    """``optimized_attention_override`` that records every attention call, then runs it."""

    def __init__(self):
        self.calls = []

    def __call__(self, func, *args, **kwargs):
        to = kwargs.get("transformer_options", {})
        self.calls.append({
            "q": args[0].detach().clone(), "k": args[1].detach().clone(), "v": args[2].detach().clone(),
            "heads": args[3] if len(args) > 3 else kwargs.get("heads"),
            "skip_reshape": kwargs.get("skip_reshape", False),
            "mask": kwargs.get("mask", args[4] if len(args) > 4 else None),
            "options": {k: (v if not isinstance(v, (dict, list)) else type(v)(v)) for k, v in to.items()},
        })
        return func(*args, **kwargs)


def capture_input(module, store, name, kwarg=None):
    """Record a clone of a block's input (blocks update their input in place)."""
    def hook(mod, args, kwargs):
        store[name] = (kwargs[kwarg] if kwarg else args[0]).detach().clone()
    return module.register_forward_pre_hook(hook, with_kwargs=True)


def randomize(model):
    # disable_weight_init leaves memory uninitialized: give every weight a small defined value.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)


def zero(*modules):
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.zero_()


def set_identity(linear, rows=None):
    """Linear whose output rows ``rows`` (default: all) copy the input, bias 0."""
    with torch.no_grad():
        n = linear.weight.shape[1]
        start = 0 if rows is None else rows
        linear.weight[start:start + n].copy_(torch.eye(n))
        if linear.bias is not None:
            linear.bias[start:start + n].zero_()


# --- Wan 2.1 / 2.2 TI2V -------------------------------------------------------------------------

def tiny_wan(comfy_ops, in_dim, n_objects):
    import comfy.ldm.wan.model as wan

    model = wan.WanModel(model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=1, text_dim=4096,
                         in_dim=in_dim, out_dim=in_dim, operations=comfy_ops.disable_weight_init)
    randomize(model)
    w, b = selector_weights(128, in_dim, model.patch_size, n_objects)
    with torch.no_grad():
        model.patch_embedding.weight.copy_(w)
        model.patch_embedding.bias.copy_(b)
    zero(model.time_projection, model.blocks[0])   # modulation 0: self-attention sees LayerNorm(x)
    with torch.no_grad():
        model.blocks[0].modulation.zero_()
    set_identity(model.blocks[0].self_attn.v)
    return model


def run_wan(model, latent_x):
    store, capture = {}, Capture()
    handle = capture_input(model.blocks[0], store, "x")
    try:
        with torch.no_grad():
            out = model(latent_x, torch.tensor([500.0]), torch.randn(1, 7, 4096),
                        transformer_options={"optimized_attention_override": capture})
    finally:
        handle.remove()
    assert out.shape == latent_x.shape      # padded, then cropped back
    return store["x"][0], capture.calls


@pytest.mark.parametrize("family, in_dim", [("wan21", 16), ("wan22_ti2v", 48)])
def test_wan_token_order_and_labels(comfy, family, in_dim):
    import comfy.ops

    lay = tl.LAYOUTS[family]
    latent = (3, 6, 8)
    frames = tl.pixel_frames_for(family, latent[0])
    masks, box0 = object_boxes(family, frames, lay.spatial_compression)
    model = tiny_wan(comfy.ops, in_dim, 2)
    x = marker_latent((1, in_dim, *latent), latent_masks(masks, family, latent[0]))
    tokens, calls = run_wan(model, x)

    check_order(decode(tokens), family, latent)
    check_labels(tokens, decode(tokens), masks, box0, family, latent)

    # At the attention call: self-attention first, then cross-attention to the text, both with
    # q/k/v as [B, L, heads * dim_head] and `heads` given; the video tokens in the same order.
    n = tl.num_tokens(family, latent)
    self_attn, cross_attn = calls
    assert self_attn["q"].shape == self_attn["k"].shape == self_attn["v"].shape == (1, n, 128)
    assert self_attn["heads"] == 1 and not self_attn["skip_reshape"] and self_attn["mask"] is None
    assert cross_attn["q"].shape == (1, n, 128) and cross_attn["k"].shape == (1, 7, 128)
    check_order(decode(self_attn["v"][0]), family, latent)
    # ComfyUI 0.3.75's Wan sets nothing in transformer_options on its own (the seam counts calls);
    # newer ComfyUI adds the block's index (the seam then reads it), the same for both calls.
    own = set(self_attn["options"]) - {"optimized_attention_override"}
    if own:
        assert {"block_index", "total_blocks"} <= own, own
        assert self_attn["options"]["block_index"] == cross_attn["options"]["block_index"] == 0
        assert self_attn["options"]["total_blocks"] == 1


def test_wan_pads_odd_latents_to_the_patch(comfy):
    """Odd latent sizes: circular padding to a multiple of 2, ceil(H/2) x ceil(W/2) tokens, same
    order; the output is cropped back to the latent size."""
    import comfy.ops

    latent = (2, 5, 7)
    model = tiny_wan(comfy.ops, 16, 0)
    tokens, calls = run_wan(model, marker_latent((1, 16, *latent)))
    assert tl.token_grid("wan21", latent) == (2, 3, 4)
    check_order(decode(tokens), "wan21", latent)
    check_order(decode(calls[0]["v"][0]), "wan21", latent)


# --- HunyuanVideo (1.0: patch 1x2x2, 1.5: patch 1x1x1) ------------------------------------------

HIDDEN, HEADS = 128, 2


def newer_hunyuan_kwargs() -> dict:
    """Constructor arguments a newer ComfyUI's HunyuanVideo requires and 0.3.75's does not know."""
    from comfy.ldm.hunyuan_video.model import HunyuanVideoParams

    return {"meanflow_sum": False} if "meanflow_sum" in HunyuanVideoParams.__dataclass_fields__ else {}


def tiny_hunyuan(comfy_ops, patch, n_objects, in_channels=16):
    from comfy.ldm.hunyuan_video.model import HunyuanVideo

    model = HunyuanVideo(
        in_channels=in_channels, out_channels=in_channels, vec_in_dim=None, context_in_dim=32,
        hidden_size=HIDDEN, mlp_ratio=1.0, num_heads=HEADS, depth=1, depth_single_blocks=1,
        axes_dim=[16, 24, 24], theta=256, patch_size=list(patch), qkv_bias=True, guidance_embed=False,
        byt5=False, meanflow=False, use_cond_type_embedding=False, vision_in_dim=None,
        operations=comfy_ops.disable_weight_init, **newer_hunyuan_kwargs())
    randomize(model)
    w, b = selector_weights(HIDDEN, in_channels, patch, n_objects)
    double, single = model.double_blocks[0], model.single_blocks[0]
    with torch.no_grad():
        model.img_in.proj.weight.copy_(w)
        model.img_in.proj.bias.copy_(b)
        # Modulation 0: attention sees LayerNorm(x), gates are 0 so the blocks pass img/txt unchanged.
        zero(double.img_mod, double.txt_mod, single.modulation)
        set_identity(double.img_attn.qkv, rows=2 * HIDDEN)            # img v = LayerNorm(img)
        double.img_attn.qkv.weight[3 * HIDDEN - 1].zero_()            # ... but its last channel 0
        double.txt_attn.qkv.weight[2 * HIDDEN:].zero_()               # txt v = a marker:
        double.txt_attn.qkv.bias[2 * HIDDEN:].zero_()
        double.txt_attn.qkv.bias[3 * HIDDEN - 1] = 1000.0             # last channel 1000
        set_identity(single.linear1, rows=2 * HIDDEN)                 # single block v = LayerNorm(x)
    return model


def heads_to_tokens(v):
    """[B, heads, L, d] (skip_reshape layout) -> [B, L, heads * d]."""
    return v.permute(0, 2, 1, 3).reshape(v.shape[0], v.shape[2], -1)


def run_hunyuan(model, latent_x, text_len, text_mask=None):
    store, capture = {}, Capture()
    hooks = [capture_input(model.double_blocks[0], store, "img", "img"),
             capture_input(model.double_blocks[0], store, "txt", "txt"),
             capture_input(model.single_blocks[0], store, "single")]
    try:
        with torch.no_grad():
            model(latent_x, torch.tensor([500.0]), torch.randn(1, text_len, 32), attention_mask=text_mask,
                  transformer_options={"optimized_attention_override": capture})
    finally:
        for h in hooks:
            h.remove()
    return store, capture.calls


@pytest.mark.parametrize("family, patch", [("hunyuan_video", (1, 2, 2)), ("hunyuan_video15", (1, 1, 1))])
def test_hunyuan_token_order_labels_and_text(comfy, family, patch):
    import comfy.ops

    lay = tl.LAYOUTS[family]
    latent, text_len = (3, 6, 8), 9
    frames = tl.pixel_frames_for(family, latent[0])
    masks, box0 = object_boxes(family, frames, lay.spatial_compression)
    model = tiny_hunyuan(comfy.ops, patch, 2)
    x = marker_latent((1, 16, *latent), latent_masks(masks, family, latent[0]))
    text_mask = torch.ones(1, text_len, dtype=torch.long)
    text_mask[0, -3:] = 0                                           # 3 padding tokens
    store, calls = run_hunyuan(model, x, text_len, text_mask)

    n = tl.num_tokens(family, latent)
    img = store["img"][0]
    check_order(decode(img), family, latent)
    check_labels(img, decode(img), masks, box0, family, latent)

    # Attention calls: the text refiner's 2 (text only), then the double block, then the single.
    kinds = [c["options"].get("block_type") for c in calls]
    assert kinds == [None, None, "double", "single"]
    double, single = calls[2], calls[3]
    L = n + text_len

    # q/k/v are [B, heads, L, d] with skip_reshape=True: the video tokens in model order and ALL text
    # tokens, padding included (the marker 1000 is in txt's v only). Which comes first is the
    # model's choice (0.3.75: video; newer ComfyUI: text); the pack must read it the same way.
    assert double["skip_reshape"] and double["v"].shape == (1, HEADS, L, HIDDEN // HEADS)
    v = heads_to_tokens(double["v"])[0]
    is_text = v[:, -1] > 100
    text_first = bool(is_text[0])
    video = slice(text_len, L) if text_first else slice(0, n)
    text = slice(0, text_len) if text_first else slice(n, L)
    assert is_text[text].all() and not is_text[video].any()
    from boxdirector.nodes import model_families

    assert model_families.joint_text_first(model) == text_first
    seg = tl.token_segments(family, latent, L, text_first=text_first)
    assert seg.video == video and seg.text == text
    check_order(decode(v[video]), family, latent)
    # Text padding is masked, not removed: an additive key mask [1, 1, L], -max on padded text.
    mask = double["mask"][0, 0]
    assert double["mask"].shape == (1, 1, L)
    pad = torch.zeros(L, dtype=torch.bool)
    pad[text.stop - 3:text.stop] = True
    assert (mask[~pad] == 0).all() and (mask[pad] < -1e30).all()
    assert double["options"]["block_index"] == 0 and double["options"]["total_blocks"] == 1

    # Single blocks: the same sequence, in the same order.
    assert torch.equal(store["single"][0, video], store["img"][0])
    assert torch.equal(store["single"][0, text], store["txt"][0])
    vs = heads_to_tokens(single["v"])[0]
    assert vs.shape[0] == L and single["skip_reshape"] and single["mask"] is double["mask"]
    check_order(decode(vs[video]), family, latent)
    assert torch.allclose(vs[text], F.layer_norm(store["txt"][0], (HIDDEN,), eps=1e-6), atol=1e-5)
    if "img_slice" in single["options"]:   # newer ComfyUI says where the video starts
        assert list(single["options"]["img_slice"]) == [video.start, L]


def test_hunyuan_video_pads_odd_latents_but_cannot_unpatchify_them(comfy):
    """PatchEmbed pads circularly like Wan (ceil tokens, same order), but the final reshape uses
    floor sizes: odd latent sizes do not run on HunyuanVideo 1.0 (ComfyUI's latents are even)."""
    import comfy.ops

    latent = (2, 5, 7)
    model = tiny_hunyuan(comfy.ops, (1, 2, 2), 0)
    store = {}
    handle = capture_input(model.double_blocks[0], store, "img", "img")   # runs before the failure
    try:
        with torch.no_grad(), pytest.raises(RuntimeError):
            model(marker_latent((1, 16, *latent)), torch.tensor([500.0]), torch.randn(1, 4, 32))
    finally:
        handle.remove()
    assert tl.token_grid("hunyuan_video", latent) == (2, 3, 4)
    check_order(decode(store["img"][0]), "hunyuan_video", latent)


# --- LTX-Video ----------------------------------------------------------------------------------

def tiny_ltxv(comfy_ops, n_objects, in_channels=16):
    from comfy.ldm.lightricks.model import LTXVModel

    inner = 64
    model = LTXVModel(in_channels=in_channels, cross_attention_dim=inner, attention_head_dim=32,
                      num_attention_heads=2, caption_channels=32, num_layers=1,
                      operations=comfy_ops.disable_weight_init)
    randomize(model)
    w, b = selector_weights(inner, in_channels, (1, 1, 1), n_objects)
    block = model.transformer_blocks[0]
    with torch.no_grad():
        model.patchify_proj.weight.copy_(w[:, :, 0, 0, 0])
        model.patchify_proj.bias.copy_(b)
        zero(model.adaln_single.linear)        # timestep modulation 0 ...
        block.scale_shift_table.zero_()        # ... so attn1 sees rms_norm(x)
    set_identity(block.attn1.to_v)
    return model


def run_ltxv(model, latent_x):
    store, capture = {}, Capture()
    handle = capture_input(model.transformer_blocks[0], store, "x")
    try:
        with torch.no_grad():
            out = model(latent_x, torch.tensor([0.5]), torch.randn(1, 5, 32), None,
                        transformer_options={"optimized_attention_override": capture})
    finally:
        handle.remove()
    assert out.shape == latent_x.shape
    return store["x"][0], capture.calls


@pytest.mark.parametrize("latent", [(3, 6, 8), (2, 5, 7)])
def test_ltxv_token_order_and_labels(comfy, latent):
    import comfy.ops

    lay = tl.LAYOUTS["ltxv"]
    frames = tl.pixel_frames_for("ltxv", latent[0])
    even = latent[1] == 6
    masks, box0 = object_boxes("ltxv", frames, lay.spatial_compression) if even else (None, None)
    lat_masks = latent_masks(masks, "ltxv", latent[0]) if even else None
    model = tiny_ltxv(comfy.ops, 2 if even else 0)
    tokens, calls = run_ltxv(model, marker_latent((1, 16, *latent), lat_masks))

    n = math.prod(latent)                      # patch 1x1x1, no padding
    check_order(decode(tokens), "ltxv", latent)
    if even:
        check_labels(tokens, decode(tokens), masks, box0, "ltxv", latent)
    self_attn, cross_attn = calls
    assert self_attn["q"].shape == self_attn["v"].shape == (1, n, 64) and self_attn["heads"] == 2
    assert cross_attn["k"].shape == (1, 5, 64)
    check_order(decode(self_attn["v"][0]), "ltxv", latent)
    assert set(self_attn["options"]) == {"optimized_attention_override"}


# --- SVD (VideoUNet) ----------------------------------------------------------------------------

def tiny_svd(comfy_ops):
    """UNetModel with SVD's video options (as model_detection sets them), 2 levels, 32/64 ch."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    model = UNetModel(
        image_size=None, in_channels=8, model_channels=32, out_channels=4, num_res_blocks=[1, 1],
        channel_mult=[1, 2], use_spatial_transformer=True, transformer_depth=[1, 1],
        transformer_depth_output=[0, 0, 0, 0], transformer_depth_middle=-1, context_dim=32,
        num_heads=-1, num_head_channels=16, legacy=False, use_linear_in_transformer=True,
        adm_in_channels=12, num_classes="sequential", extra_ff_mix_layer=True, use_spatial_context=True,
        merge_strategy="learned_with_images", merge_factor=0.0, video_kernel_size=[3, 1, 1],
        use_temporal_attention=True, use_temporal_resblock=True, disable_temporal_crossattention=False,
        max_ddpm_temb_period=10000, attn_precision=torch.float32, operations=comfy_ops.disable_weight_init)
    randomize(model)
    return model


def test_svd_spatial_and_temporal_layouts(comfy):
    import comfy.ops
    from comfy.ldm.modules.attention import SpatialVideoTransformer

    model = tiny_svd(comfy.ops)
    level0, level1 = [m for m in model.modules() if isinstance(m, SpatialVideoTransformer)]
    chunks, frames, h, w = 2, 3, 5, 7          # cond + uncond, 3 frames: the model's batch is 6
    s = h * w

    # Level 0: replace the GroupNorm output by a marker (chunk, frame, y, x) per batch item and
    # position; proj_in copies it; the first spatial block and the time embedding add nothing, so
    # the temporal block receives the markers exactly as the model rearranges them.
    marker = torch.zeros(chunks * frames, 32, h, w)
    for bi in range(chunks * frames):
        marker[bi, 0], marker[bi, 1] = bi // frames, bi % frames
    marker[:, 2] = torch.arange(h, dtype=torch.float32)[:, None]
    marker[:, 3] = torch.arange(w, dtype=torch.float32)[None, :]
    set_identity(level0.proj_in)
    block, mix = level0.transformer_blocks[0], level0.time_stack[0]
    zero(block.attn1.to_out, block.attn2.to_out, block.ff.net[2], level0.time_pos_embed[2])

    store, capture = {}, Capture()
    hooks = [level0.norm.register_forward_hook(lambda mod, args, out: marker.clone()),
             capture_input(block, store, "spatial"), capture_input(mix, store, "temporal")]
    try:
        with torch.no_grad():
            model(torch.randn(chunks * frames, 8, h, w), torch.full((chunks * frames,), 10.0),
                  context=torch.randn(chunks * frames, 1, 32), y=torch.randn(chunks * frames, 12),
                  num_video_frames=frames, image_only_indicator=torch.zeros(chunks, frames),
                  transformer_options={"optimized_attention_override": capture})
    finally:
        for hk in hooks:
            hk.remove()

    # Spatial attention: batch item chunk * F + t, sequence (y, x) row-major.
    spatial = store["spatial"]
    assert spatial.shape == (chunks * frames, s, 32)
    ys, xs = torch.arange(s) // w, torch.arange(s) % w
    for bi in range(chunks * frames):
        assert (spatial[bi, :, 0] == bi // frames).all() and (spatial[bi, :, 1] == bi % frames).all()
        assert torch.equal(spatial[bi, :, 2].long(), ys) and torch.equal(spatial[bi, :, 3].long(), xs)
    # Temporal layers: batch item chunk * S + s, sequence = the frames, in order.
    temporal = store["temporal"]
    assert temporal.shape == (chunks * s, frames, 32)
    for j in range(chunks * s):
        assert (temporal[j, :, 0] == j // s).all()
        assert torch.equal(temporal[j, :, 1].long(), torch.arange(frames))
        assert (temporal[j, :, 2] == (j % s) // w).all() and (temporal[j, :, 3] == (j % s) % w).all()

    # The label views index those sequences: an object on latent pixel (1, 2) in frames 0 and 2.
    masks = torch.zeros(1, frames, 8 * h, 8 * w)
    masks[0, [0, 2], 8:16, 16:24] = 1.0
    spatial_labels = tl.svd_spatial_labels(masks, (frames, h, w))
    temporal_labels = tl.svd_temporal_labels(masks, (frames, h, w))
    for bi in range(chunks * frames):
        t = bi % frames
        for pos in range(s):
            y, x = int(spatial[bi, pos, 2]), int(spatial[bi, pos, 3])
            assert spatial_labels[t, pos] == int(t != 1 and (y, x) == (1, 2))
    for j in range(chunks * s):
        y, x = int(temporal[j, 0, 2]), int(temporal[j, 0, 3])
        assert temporal_labels[j % s].tolist() == [int(t != 1 and (y, x) == (1, 2)) for t in range(frames)]

    # Attention calls per transformer: spatial self, spatial cross, temporal self, temporal cross;
    # all [batch, L, heads * dim_head]; activations_shape gives the level's [B*F, C, h, w].
    level_shapes = []
    for call in capture.calls:
        shape = call["options"]["activations_shape"]
        if shape not in level_shapes:
            level_shapes.append(shape)
    assert level_shapes == [[chunks * frames, 32, h, w], [chunks * frames, 64, 3, 4]]
    assert tl.token_grid("svd", (frames, h, w), level=1) == (frames, 3, 4)
    for level, (ch, hl, wl) in enumerate(((32, h, w), (64, 3, 4))):
        calls = [c for c in capture.calls if c["options"]["activations_shape"][2:] == [hl, wl]]
        assert [tuple(c["q"].shape) for c in calls] == [
            (chunks * frames, hl * wl, ch), (chunks * frames, hl * wl, ch),
            (chunks * hl * wl, frames, ch), (chunks * hl * wl, frames, ch)]
        assert [tuple(c["k"].shape)[1] for c in calls] == [hl * wl, 1, frames, 1]
        assert tl.svd_spatial_labels(masks, (frames, h, w), level=level).shape == (frames, hl * wl)
        # Spatial and temporal blocks of one transformer carry the same `block` and block_index:
        # only the shapes tell them apart.
        assert len({(c["options"]["block"], c["options"]["block_index"]) for c in calls}) == 1


# --- the VAE's temporal chunks ------------------------------------------------------------------

def test_wan_vae_latent_frame_t_starts_with_pixel_frames_4t_minus_3(comfy):
    """Wan's causal VAE: changing pixel frame p changes latent frame (p + 3) // 4 and none before
    it -- latent frame 0 is pixel frame 0 alone, latent frame t >= 1 gets pixel frames 4t-3..4t."""
    from comfy.ldm.wan.vae import WanVAE

    torch.manual_seed(0)
    vae = WanVAE(dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True])
    with torch.no_grad():   # conv weights fan-in scaled, so that a change survives the whole encoder
        for name, p in vae.named_parameters():
            if name.endswith("weight"):
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()))
            elif name.endswith("bias"):
                p.zero_()                 # (the RMS norms' gammas keep their ones)
    video = torch.randn(1, 3, 9, 16, 16)
    with torch.no_grad():
        base = vae.encode(video)
        assert base.shape[2] == tl.latent_frames("wan21", 9) == 3
        for p in range(9):
            changed = video.clone()
            changed[:, :, p] += 1.0
            diff = (vae.encode(changed) - base).abs().amax(dim=(0, 1, 3, 4))
            first = int((diff > 1e-4 * base.abs().max()).nonzero()[0])
            assert (diff[:first] == 0).all()          # causal: earlier latent frames exactly untouched
            assert p in tl.pixel_frames_of_latent("wan21", first), (p, diff)
