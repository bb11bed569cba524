"""FirstFrameShare on every supported family, in ComfyUI's real sampler on tiny real models.

A probe rule sits in front of the first-frame rule on the seam. At every attention call of a real
KSampler run it compares what the model got with a dense reference built here (test-only N x N
masks, tiny N): first-frame sharing (+ the mask bias) inside the chosen steps and blocks, plain
attention outside them. Also: composition with MaskedAttentionPatch in both node orders, isolation
of the input model, node validation, and the shared-noise NOISE source.
"""

import math

import pytest
import torch

import harness
import tiny_models
from test_core_first_frame import dense_ref
from test_masked_attention_patch import SUBJECTS, regions_for

pytestmark = pytest.mark.comfy

from boxdirector.core import first_frame as ff  # noqa: E402
from boxdirector.core import token_layout  # noqa: E402

EXPECTED_KINDS = {
    "wan21_t2v": {"self", "cross"}, "wan21_i2v": {"self", "cross"}, "wan22_ti2v_5b": {"self", "cross"},
    "hunyuan_video": {"joint"}, "ltxv": {"self", "cross"}, "svd": {"self"},
}


def to4(call, x):
    if call.skip_reshape:
        return x.float()
    b, n, c = x.shape
    return x.float().reshape(b, n, call.heads, -1).transpose(1, 2)


def back(call, x):
    if call.skip_reshape and call.kwargs.get("skip_output_reshape"):
        return x
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def additive(mask, lk):
    if mask is None:
        return None
    m = mask.reshape(mask.shape[0], -1)
    if m.dtype == torch.bool:
        m = torch.zeros(m.shape).masked_fill(~m, float("-inf"))
    return m.float().reshape(m.shape[0], 1, 1, lk)


class Probe:
    """Checks every call against the dense reference of what the first-frame rule should do."""

    name = "probe"

    def __init__(self, regions, mode, strength, start, end, blocks, bias, masked=None):
        self.regions, self.mode, self.strength, self.start, self.end = regions, mode, strength, start, end
        self.blocks, self.bias, self.masked = blocks, bias, masked
        self.records = []

    def expect(self, call):
        frac = call.forward.step_fraction
        in_window = self.start <= frac < self.end and call.block in self.blocks
        if call.kind == "cross":
            return in_window and self.bias != 0
        return in_window and call.kind in ("self", "joint")

    def labels(self, call):
        fwd = call.forward
        return token_layout.token_labels(self.regions.masks, fwd.family.layout, (1,) + tuple(fwd.latent_shape[1:]))

    def reference(self, call):
        fwd, layout = call.forward, call.forward.family.layout
        q, k, v = to4(call, call.q), to4(call, call.k), to4(call, call.v)
        lk = k.shape[2]
        km = additive(call.mask, lk)
        plain = dense_ref(q, k, v, 1, 0, "full", 1.0, key_mask=km) if km is not None else \
            torch.nn.functional.scaled_dot_product_attention(q, k, v)
        if not self.expect(call):
            return back(call, plain)
        if call.kind == "cross":
            bm = ff.subject_bias(self.labels(call), SUBJECTS, lk, self.bias)
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bm
            if km is not None:
                scores = scores + km
            return back(call, scores.softmax(-1) @ v)
        if layout == "svd":
            frames = call.info["frames"]
            b, h, s, d = q.shape
            view = lambda x: x.reshape(b // frames, frames, h, s, -1).transpose(1, 2).reshape(b // frames, h, frames * s, -1)  # noqa: E731
            # UNet spatial layers see their own frame only: frame 0 appended = the anchor rule
            mode = "anchor" if self.mode == "add_first" else self.mode
            out = dense_ref(view(q), view(k), view(v), frames, frames * s, mode, self.strength,
                            base=view(plain))
            out = out.reshape(b // frames, h, frames, s, -1).transpose(1, 2).reshape(b, h, s, -1)
            return back(call, out)
        grid = token_layout.token_grid(layout, fwd.latent_shape)
        n = math.prod(grid)
        text_bias = None
        if call.kind == "joint" and self.bias:
            text_bias = ff.subject_bias(self.labels(call), SUBJECTS, lk - n, self.bias)
        out = dense_ref(q, k, v, grid[0], n, self.mode, self.strength, key_mask=km, text_bias=text_bias, base=plain)
        return back(call, out)

    def attend(self, call, proceed):
        out = proceed()
        ref = self.reference(call)
        err = (out.float() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
        self.records.append((call.kind, call.block, round(call.forward.step_fraction, 3), self.expect(call), err))
        return out


def put_first(model, name):
    """Rebuild the model's seam controller with the rule called ``name`` first in the chain."""
    from boxdirector.nodes import attention_seam

    topts = model.model_options["transformer_options"]
    ctl = topts[attention_seam.SEAM_KEY]
    rules = tuple(r for r in ctl.rules if r.name == name) + tuple(r for r in ctl.rules if r.name != name)
    ctl = type(ctl)(ctl.family, rules, ctl.inner)
    topts[attention_seam.SEAM_KEY] = ctl
    topts["optimized_attention_override"] = ctl
    return model


def ffs_rule(tm, mode="anchor", strength=0.5, bias=1.5, blocks_spec=None, end=0.5, cond_only=False):
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.first_frame import FirstFrameShareRule

    family = attention_seam.model_families.family_of(tm.patcher)
    if blocks_spec is None:
        blocks_spec, blocks = f"1-{family.total_blocks - 1}", set(range(1, family.total_blocks))
    else:
        blocks = set(range(family.total_blocks))
    regions = regions_for(tm)
    subjects = SUBJECTS if family.layout != "svd" and bias else None
    rule = FirstFrameShareRule(mode=mode, strength=strength, start=0.0, end=end, block_spec=blocks_spec,
                               cond_only=cond_only, regions=regions, subject_tokens=subjects, mask_bias=bias)
    return rule, regions, blocks, (bias if subjects else 0.0)


def patched(tm, **kw):

    rule, regions, blocks, bias = ffs_rule(tm, **kw)
    probe = Probe(regions, rule.mode, rule.strength, 0.0, rule.end, blocks, bias)
    from boxdirector.nodes import attention_seam

    model = put_first(attention_seam.install(attention_seam.install(tm.patcher, probe), rule), "probe")
    return model, probe


def check(probe, family):
    recs = probe.records
    assert recs, "no attention call reached the seam"
    bad = [r for r in recs if r[4] > 2e-4]
    assert not bad, bad[:5]
    active = {r[0] for r in recs if r[3]}
    assert active == EXPECTED_KINDS[family], recs
    assert any(not r[3] and r[2] >= 0.5 for r in recs)              # later steps: plain attention
    assert any(not r[3] and r[1] == 0 and r[2] < 0.5 for r in recs)  # block 0: plain attention


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_every_attention_call_gets_the_anchor_rule(family, tiny_model):
    tm = tiny_model(family)
    model, probe = patched(tm, mode="anchor", strength=0.5, bias=1.5)
    tiny_models.sample(tm, steps=4, patcher=model)
    check(probe, family)


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_every_attention_call_gets_the_add_first_rule(family, tiny_model):
    model, probe = patched(tm := tiny_model(family), mode="add_first", strength=1.0, bias=1.5)
    tiny_models.sample(tm, steps=4, patcher=model)
    check(probe, family)


@pytest.mark.parametrize("family", ["wan21_t2v", "hunyuan_video"])
def test_add_first_keeps_attention_between_later_frames(family, tiny_model, pack_nodes):
    """Issue 28: through the node, in a real sampler, add_first is full joint attention with
    log(1 + strength) on frame 0's keys for frames >= 1 (dense reference), so a frame-2 query's
    output depends on frame-1 keys -- anchor / paper cut that path (the same check fails there)."""
    tm = tiny_model(family)
    (model,) = harness.run_node("BoxDirector.FirstFrameShare", model=tm.patcher, mode="add_first", strength=1.0,
                                start_percent=0.0, end_percent=1.0, blocks="all", cond_only=False, prompt="",
                                mask_bias=0.0, coverage=0.5).result
    errs, moved = [], []

    class Check:
        name = "check"

        def attend(self, call, proceed):
            out = proceed()
            if call.kind not in ("self", "joint"):
                return out
            q, k, v = to4(call, call.q), to4(call, call.k), to4(call, call.v)
            lk = k.shape[2]
            grid = token_layout.token_grid(call.forward.family.layout, call.forward.latent_shape)
            n, S = math.prod(grid), math.prod(grid[1:])
            fr = torch.full((lk,), -1)
            fr[:n] = torch.arange(n) // S
            bias = torch.where((fr[:, None] >= 1) & (fr[None, :] == 0), math.log(2.0), 0.0)
            km = additive(call.mask, lk)
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias + (0 if km is None else km)
            errs.append((out.float() - back(call, scores.softmax(-1) @ v)).abs().max().item())
            # without frame-1 keys for frame-2 queries the output would differ
            cut = scores.masked_fill((fr[:, None] == 2) & (fr[None, :] == 1), float("-inf"))
            d = out.float() - back(call, cut.softmax(-1) @ v)
            moved.append((d[:, 2 * S:3 * S] if d.dim() == 3 else d[:, :, 2 * S:3 * S]).abs().max().item())
            return out

    from boxdirector.nodes import attention_seam

    checked = put_first(attention_seam.install(model, Check()), "check")
    tiny_models.sample(tm, steps=2, patcher=checked)
    assert errs and max(errs) < 2e-4
    assert min(moved) > 1e-3


@pytest.mark.parametrize("family", ["wan21_t2v", "hunyuan_video", "svd"])
def test_every_attention_call_gets_the_paper_rule(family, tiny_model):
    tm = tiny_model(family)
    model, probe = patched(tm, mode="paper", strength=0.6, bias=-1.0)
    tiny_models.sample(tm, steps=4, patcher=model)
    check(probe, family)


def test_cond_only_matches_the_rule_on_cond_and_plain_on_uncond(tiny_model):
    from boxdirector.nodes import attention_seam

    tm = tiny_model("wan21_t2v")
    rule, regions, blocks, bias = ffs_rule(tm, mode="anchor", strength=2.0, bias=0.0, blocks_spec="all", end=1.0,
                                           cond_only=True)
    seen = []

    class Check:
        name = "check"

        def attend(self, call, proceed):
            out = proceed()
            if call.kind == "self" and len(call.forward.cond_or_uncond) == 2:
                q, k, v = to4(call, call.q), to4(call, call.k), to4(call, call.v)
                t = token_layout.token_grid("wan21", call.forward.latent_shape)[0]
                n = q.shape[2]
                ref = dense_ref(q, k, v, t, n, "anchor", 2.0)
                plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
                for i, c in enumerate(call.forward.cond_or_uncond):
                    want = ref[i] if c == 0 else plain[i]
                    seen.append((out.float()[i] - back(call, want[None])[0]).abs().max().item())
            return out

    model = put_first(attention_seam.install(attention_seam.install(tm.patcher, Check()), rule), "check")
    tiny_models.sample(tm, steps=2, patcher=model)
    assert seen and max(seen) < 2e-4


class Counter:
    def __init__(self, name, inner_name):
        self.name, self.inner_name, self.calls = name, inner_name, []

    def attend(self, call, proceed):
        self.calls.append((call.kind, call.block, call.forward.step_fraction))
        return proceed()


@pytest.mark.parametrize("family", ["wan21_t2v", "svd", "hunyuan_video"])
def test_composes_with_masked_attention_in_either_order(family, tiny_model, pack_nodes):
    """Through the real nodes, both orders: the same sample; both rules' schedules are honoured
    (the masked rule sees every call outside the first-frame window); on calls where both are
    active the result is the intersection (dense reference with both masks)."""
    tm = tiny_model(family)
    regions = regions_for(tm)
    masked_kw = dict(regions=regions, prompt="", start_percent=0.0, end_percent=0.5, self_attention=True,
                     cross_attention=False, temporal_attention=False, blocks="all", cond_only=False,
                     word_binding="per_object", special_tokens="background", mask_normalization=False, coverage=0.5)
    ffs_kw = dict(mode="anchor", strength=1.0, start_percent=0.25, end_percent=1.0, blocks="all", cond_only=False,
                  prompt="", mask_bias=0.0, coverage=0.5)
    (a,) = harness.run_node("BoxDirector.MaskedAttentionPatch", model=tm.patcher, **masked_kw).result
    (a,) = harness.run_node("BoxDirector.FirstFrameShare", model=a, **ffs_kw).result
    (b,) = harness.run_node("BoxDirector.FirstFrameShare", model=tm.patcher, **ffs_kw).result
    (b,) = harness.run_node("BoxDirector.MaskedAttentionPatch", model=b, **masked_kw).result
    from boxdirector.nodes import attention_seam

    # no reordering by name: node order is kept, the result does not depend on it (seam rule 4)
    names = [[r.name for r in attention_seam.controller_of(m).rules] for m in (a, b)]
    assert names == [["masked_attention", "first_frame_share"], ["first_frame_share", "masked_attention"]]
    # both rules see the calls: a counter after each of them
    results, seen = [], []
    for m in (a, b):
        ctl = attention_seam.controller_of(m)
        ffs_r, = (r for r in ctl.rules if r.name == "first_frame_share")
        masked_r, = (r for r in ctl.rules if r.name == "masked_attention")
        inner = Counter("after_masked", "")
        mid = Counter("after_ffs", "")
        m2 = attention_seam.install(attention_seam.install(attention_seam.install(
            tm.patcher.clone(), ffs_r), mid), masked_r)
        m2 = attention_seam.install(m2, inner)
        results.append(tiny_models.sample(tm, steps=4, seed=5, patcher=m))
        tiny_models.sample(tm, steps=4, seed=5, patcher=m2)
        seen.append((mid, inner))
    assert torch.equal(results[0], results[1])
    mid, inner = seen[0]
    kinds = {"self"} if family != "hunyuan_video" else {"joint"}
    # steps 0 (frac 0.0): only masked active -> the first-frame rule passes every call on
    assert any(c[2] == 0.0 and c[0] in kinds for c in mid.calls)
    # step 3 (frac 0.75): only the first-frame rule -> it answers itself, the masked rule is not reached
    assert not any(c[2] == 0.75 and c[0] in kinds for c in mid.calls)
    # step 1 (frac 0.25), both active: Wan / SVD self-attention is answered as the intersection
    if family != "hunyuan_video":
        assert not any(c[2] == 0.25 and c[0] in kinds for c in mid.calls)
    else:   # joint calls: the masked rule applies alone
        assert any(c[2] == 0.25 and c[0] in kinds for c in mid.calls)


def efdm_ref(x, ref):
    """EFDM written out (test oracle): along tokens (dim -2), x's k-th smallest takes ref's k-th smallest."""
    out = torch.empty_like(x)
    return out.scatter_(-2, x.argsort(dim=-2, stable=True), ref.sort(dim=-2).values)


@pytest.mark.parametrize("family,mode,norm", [
    ("wan21_t2v", "anchor", False), ("svd", "anchor", False),
    ("wan21_t2v", "add_first", False), ("svd", "add_first", False), ("hunyuan_video", "add_first", False),
    ("wan21_t2v", "add_first", True), ("hunyuan_video", "add_first", True), ("wan21_t2v", "anchor", True)])
def test_intersection_with_masked_attention_matches_dense(family, mode, norm, tiny_model):
    """Both rules on: a token sees what BOTH allow -- add_first: its own region in every frame
    (PEEKABOO's cross-frame rule; joint text keys as the masked rule says) with log(1 + s) on frame
    0's keys for frames >= 1; anchor: its region in frame 0 and its own frame. With the masked
    rule's mask normalisation on, EFDM maps that onto the first-frame rule's output alone (it used
    to be skipped silently)."""
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    tm = tiny_model(family)
    rule, regions, _, _ = ffs_rule(tm, mode=mode, strength=1.7, bias=0.0, blocks_spec="all", end=1.0)
    # norm_mode "always": the oracle below is plain EFDM over every channel
    masked = MaskedAttention(regions=regions, subject_tokens=None, kinds=frozenset({"self"}), start=0.0, end=1.0,
                             mask_norm=norm, norm_mode="always")
    errs, swaps, changed = [], [], []

    class Check:
        name = "check"

        def attend(self, call, proceed):
            out = proceed()
            if call.kind not in ("self", "joint"):
                return out
            fwd = call.forward
            layout = fwd.family.layout
            q, k, v = to4(call, call.q), to4(call, call.k), to4(call, call.v)
            if family == "svd":
                frames = call.info["frames"]
                shape = (frames,) + tuple(fwd.latent_shape[1:])
                lab = token_layout.svd_spatial_labels(regions.masks, shape, level=call.info["level"]).reshape(-1)
                b, h, s, d = q.shape
                view = lambda x: x.reshape(b // frames, frames, h, s, -1).transpose(1, 2).reshape(b // frames, h, frames * s, -1)  # noqa: E731
                q, k, v = view(q), view(k), view(v)
                n = q.shape[2]
            else:
                grid = token_layout.token_grid(layout, fwd.latent_shape)
                frames, n = grid[0], math.prod(grid)
                lab = token_layout.token_labels(regions.masks, layout, (1,) + tuple(fwd.latent_shape[1:]))
            lk = k.shape[2]
            S = n // frames
            fr = torch.full((lk,), -1)
            fr[:n] = torch.arange(n) // S
            labs = torch.full((lk,), -1)
            labs[:n] = lab
            video = fr >= 0
            later_to_first = (fr[:, None] >= 1) & (fr[None, :] == 0)
            if mode == "add_first" and family != "svd":      # every frame, frame 0 counts 1 + s times
                frame_ok = torch.ones(lk, lk, dtype=torch.bool)
                bias = torch.where(later_to_first, math.log(2.7), 0.0)
            else:                                             # own frame + frame 0, frame 0 weighted s
                frame_ok = (fr[None, :] == 0) | (fr[None, :] == fr[:, None])
                bias = torch.where(later_to_first, math.log(1.7), 0.0)
            region_ok = (labs[:, None] == labs[None, :]) | ~video[None, :] | ~video[:, None]   # text: global
            km = additive(call.mask, lk)
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias + (0 if km is None else km)
            both = scores.masked_fill(~(frame_ok & region_ok), float("-inf")).softmax(-1) @ v
            alone = scores.masked_fill(~frame_ok, float("-inf")).softmax(-1) @ v

            def unview(x):
                if family != "svd":
                    return x
                b2 = x.shape[0]
                return x.reshape(b2, x.shape[1], frames, S, -1).transpose(1, 2).reshape(b2 * frames, x.shape[1], S, -1)

            ref = back(call, unview(both))
            if norm:
                target = back(call, unview(alone))
                # exactly the unrestricted output's values per channel (sorted along tokens) ...
                errs.append((out.float().sort(dim=-2).values - target.sort(dim=-2).values).abs().max().item())
                # ... in the intersection's rank order; near-ties (values ~1e-6 apart) may swap ranks
                swaps.append(((out.float() - efdm_ref(ref, target)).abs() > 2e-4).float().mean().item())
                changed.append((out.float() - ref).abs().max().item())
            else:
                errs.append((out.float() - ref).abs().max().item())
            return out

    model = put_first(attention_seam.install(attention_seam.install(attention_seam.install(tm.patcher, Check()),
                                                                    masked), rule), "check")
    tiny_models.sample(tm, steps=2, patcher=model)
    assert errs and max(errs) < 2e-4
    if norm:
        assert max(swaps) < 0.01 and max(changed) > 1e-3     # EFDM ran (and moved the output)


def test_patch_changes_the_sample_and_leaves_the_original_untouched(tiny_model, pack_nodes):
    tm = tiny_model("wan21_t2v")
    before = tiny_models.sample(tm, steps=3, seed=7)
    (model,) = harness.run_node("BoxDirector.FirstFrameShare", model=tm.patcher, mode="paper", strength=1.0,
                                start_percent=0.0, end_percent=1.0, blocks="all", cond_only=False, prompt="",
                                mask_bias=0.0, coverage=0.5).result
    shared = tiny_models.sample(tm, steps=3, seed=7, patcher=model)
    after = tiny_models.sample(tm, steps=3, seed=7)
    assert not torch.equal(before, shared)
    assert torch.equal(before, after)                 # bit for bit
    from boxdirector.nodes import attention_seam

    assert attention_seam.controller_of(tm.patcher) is None


def test_node_validates_schedule_blocks_and_bias_inputs(tiny_model, pack_nodes):
    ok, errors = harness.validate_prompt({
        "1": {"class_type": "BoxDirector.FirstFrameShare",
              "inputs": {"model": ["9", 0], "mode": "anchor", "strength": 1.0, "start_percent": 0.6,
                         "end_percent": 0.2, "blocks": "x-1", "cond_only": False, "prompt": "", "mask_bias": 0.0,
                         "coverage": 0.5}},
        "9": {"class_type": "UNETLoader", "inputs": {"unet_name": "x.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "x"}},
    })
    text = harness.error_text(errors)
    assert not ok and "start_percent" in text and "blocks" in text, text
    tm = tiny_model("wan21_t2v")
    with pytest.raises(ValueError, match="clip"):
        harness.run_node("BoxDirector.FirstFrameShare", model=tm.patcher, mode="anchor", strength=1.0,
                         start_percent=0.0, end_percent=1.0, blocks="all", cond_only=False, regions=regions_for(tm),
                         prompt="", mask_bias=1.0, coverage=0.5)
    with pytest.raises(ValueError, match="bias_only"):
        harness.run_node("BoxDirector.FirstFrameShare", model=tm.patcher, mode="bias_only", strength=1.0,
                         start_percent=0.0, end_percent=1.0, blocks="all", cond_only=False, prompt="",
                         mask_bias=1.0, coverage=0.5)


def test_shared_noise_node_is_a_real_noise_source(tiny_model, pack_nodes):
    """Through SamplerCustomAdvanced's NOISE protocol: same seed = same noise; frame 0 is exactly
    RandomNoise's. Issue 28: with a first frame connected (a LATENT, or IMAGE + VAE) the later
    frames mix in the ENCODED first frame in the sampler's space -- Eq. 8, eps_i = a E(v1) + b eps_i,
    written here -- and correlate with it; frame 0's noise is shared only when asked for by name."""
    import comfy.sd
    import comfy.utils
    from boxdirector.toyworld import install

    tm = tiny_model("wan21_t2v")
    latent = {"samples": torch.zeros(1, 16, 6, 32, 32)}
    (ref,) = harness.run_node("RandomNoise", noise_seed=3).result
    r = ref.generate_noise(latent)
    g = torch.Generator().manual_seed(1)
    first = {"samples": 0.7 + torch.randn(1, 16, 1, 32, 32, generator=g)}      # a raw VAE latent frame
    (noise,) = harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="paper",
                                first_frame=first, model=tm.patcher).result
    a, b = noise.generate_noise(latent), noise.generate_noise(latent)
    assert torch.equal(a, b) and noise.seed == 3 and torch.equal(a[:, :, 0], r[:, :, 0])
    fmt = tm.patcher.model.latent_format
    e1 = fmt.process_in(first["samples"])                   # the space the sampler adds noise in
    assert torch.allclose(a[:, :, 1:], 0.2 * e1 + 0.8 * r[:, :, 1:], atol=1e-5)
    (kept,) = harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="preserve",
                               first_frame=first, model=tm.patcher).result
    k = kept.generate_noise(latent)
    bk = math.sqrt(1 - 0.04 * e1.pow(2).mean().item())
    assert torch.allclose(k[:, :, 1:], 0.2 * e1 + bk * r[:, :, 1:], atol=1e-5)
    corr = torch.corrcoef(torch.stack([(k[:, :, 3] - r[:, :, 3] * bk).flatten(), e1.flatten()]))[0, 1]
    later = k[:, :, 1:].flatten()
    assert corr > 0.99 and torch.corrcoef(torch.stack([later, e1.expand_as(k[:, :, 1:]).flatten()]))[0, 1] > 0.1
    # IMAGE + VAE: the same as VAE Encode -> first_frame
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(install.WEIGHTS / install.VAE_NAME)))
    image = torch.rand(1, 256, 256, 3, generator=g)
    (enc,) = harness.import_comfy().VAEEncode().encode(vae, image)      # ComfyUI's own VAE Encode node
    (via_image,) = harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="paper",
                                    image=image, vae=vae, model=tm.patcher).result
    (via_latent,) = harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="paper",
                                     first_frame=enc, model=tm.patcher).result
    lat_img = {"samples": torch.zeros((1,) + tuple(enc["samples"].shape[1:2]) + (4,) + tuple(enc["samples"].shape[3:]))}
    assert torch.allclose(via_image.generate_noise(lat_img), via_latent.generate_noise(lat_img), atol=1e-5)
    # the old form only by name; the default without a first frame says what to connect
    (old,) = harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="paper",
                              shared="first_frame_noise").result
    assert torch.allclose(old.generate_noise(latent)[:, :, 1:], 0.2 * r[:, :, :1] + 0.8 * r[:, :, 1:])
    with pytest.raises(ValueError, match="first_frame: shared = encoded_first_frame"):
        harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="preserve")
    with pytest.raises(ValueError, match="model: connect the model"):
        harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="preserve", first_frame=first)
    with pytest.raises(ValueError, match="first_frame"):
        noise.generate_noise({"samples": torch.zeros(1, 16, 6, 16, 16)})
    # a real sampling run with it
    pos, neg = tm.conditioning()
    (guider,) = harness.run_node("CFGGuider", model=tm.patcher, positive=pos, negative=neg, cfg=3.0).result
    (sampler,) = harness.run_node("KSamplerSelect", sampler_name="euler").result
    (sigmas,) = harness.run_node("BasicScheduler", model=tm.patcher, scheduler="simple", steps=2, denoise=1.0).result
    empty = tm.empty_latent()
    sized = {"samples": torch.randn((1,) + tuple(empty["samples"].shape[1:2]) + (1,) + tuple(empty["samples"].shape[3:]),
                                    generator=g)}
    (noise2,) = harness.run_node("BoxDirector.SharedNoise", noise_seed=3, alpha=0.2, variance="preserve",
                                 first_frame=sized, model=tm.patcher).result
    out = harness.run_node("SamplerCustomAdvanced", noise=noise2, guider=guider, sampler=sampler, sigmas=sigmas,
                           latent_image=empty).result[0]
    assert torch.isfinite(out["samples"]).all()
    with pytest.raises(ValueError, match="video latent"):
        noise2.generate_noise({"samples": torch.zeros(1, 4, 8, 8)})
