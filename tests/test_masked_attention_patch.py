"""MaskedAttentionPatch on every supported family, in ComfyUI's real sampler on tiny real models.

A probe rule sits in front of the masked-attention rule on the seam. At *every* attention call of
a real KSampler run it compares what the model got with a dense reference computed here from the
expected labels (test-only N x N masks, tiny N): masked attention inside the chosen steps and
blocks, plain attention outside them.
"""

import json
import math

import pytest
import torch

import harness
import tiny_models

pytestmark = pytest.mark.comfy

from boxdirector.core import token_layout  # noqa: E402
from boxdirector.core.masks import box_masks  # noqa: E402
from boxdirector.core.regions import Regions  # noqa: E402
from boxdirector.core.trajectory import parse_trajectory, sample_boxes  # noqa: E402

SUBJECTS = ((1, 2), (5,))        # key positions of each object's words in the tiny 8-token texts
EXPECTED_KINDS = {
    "wan21_t2v": {"self", "cross"}, "wan21_i2v": {"self", "cross"}, "wan22_ti2v_5b": {"self", "cross"},
    "hunyuan_video": {"joint"}, "ltxv": {"self", "cross"}, "svd": {"self", "temporal"},
}


def regions_for(tm) -> Regions:
    h, w = tm.pixel_size
    doc = {"version": 1, "frames": tm.pixel_frames, "width": w, "height": h, "objects": [
        {"id": "a", "prompt": "a", "keyframes": [{"frame": 0, "box": [0.0, 0.0, 0.5, 1.0]}]},
        {"id": "b", "prompt": "b", "keyframes": [{"frame": 0, "box": [0.5, 0.0, 1.0, 0.5]},
                                                 {"frame": tm.pixel_frames - 1, "box": [0.5, 0.5, 1.0, 1.0]}]}]}
    traj = parse_trajectory(json.dumps(doc))
    boxes, visible = sample_boxes(traj)
    return Regions(box_masks(boxes, visible, h, w), ("a", "b"), ("a", "b"))


def dense(call, allow):
    """Reference attention with an explicit [B, Nq, Nk] allow mask and the model's own key mask."""
    q, k, v = call.q.float(), call.k.float(), call.v.float()
    if not call.skip_reshape:
        b, n, c = q.shape
        q, k, v = (x.reshape(x.shape[0], x.shape[1], call.heads, -1).transpose(1, 2) for x in (q, k, v))
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    mask = call.mask
    if mask is not None:
        m = mask.reshape(mask.shape[0], -1)[:, None, None, :]
        if m.dtype == torch.bool:
            allow = allow & m[:, 0]
        else:
            scores = scores + m.float()
    scores = scores.masked_fill(~allow[:, None], float("-inf"))
    out = torch.nan_to_num(scores.softmax(-1), nan=0.0) @ v
    if call.skip_reshape and call.kwargs.get("skip_output_reshape"):
        return out
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


class Probe:
    """Checks every call against the reference for what the masked rule is *expected* to do."""

    name = "probe"

    def __init__(self, regions, kinds, start, end, blocks, cond_only):
        self.regions, self.kinds, self.start, self.end = regions, kinds, start, end
        self.blocks, self.cond_only = blocks, cond_only
        self.records = []

    def expect_masked(self, call):
        kind_ok = call.kind in self.kinds or (call.kind == "joint" and {"self", "cross"} & self.kinds)
        frac = call.forward.step_fraction
        return bool(kind_ok and self.start <= frac < self.end and call.block in self.blocks)

    def item_allow(self, call, item):
        fwd, layout = call.forward, call.forward.family.layout
        masks = self.regions.masks
        if call.kind in ("self", "temporal") and layout == "svd":
            per = call.q.shape[0] // len(fwd.cond_or_uncond)
            shape = (call.info["frames"],) + tuple(fwd.latent_shape[1:])
            if call.kind == "self":
                lab = token_layout.svd_spatial_labels(masks, shape, level=call.info["level"])[item % per]
            else:
                lab = token_layout.svd_temporal_labels(masks, shape, level=call.info["level"])[item % per]
            return lab[:, None] == lab[None, :]
        lab = token_layout.token_labels(masks, layout, (1,) + tuple(fwd.latent_shape[1:]))
        if call.kind == "self":
            return lab[:, None] == lab[None, :]
        nk = call.k.shape[2] if call.skip_reshape else call.k.shape[1]
        key_obj = torch.zeros(nk if call.kind == "cross" else call.info["num_text"], dtype=torch.long)
        for i, pos in enumerate(SUBJECTS):
            key_obj[list(pos)] = i + 1
        if call.kind == "cross":
            return lab[:, None] == key_obj[None, :]
        full = torch.cat([lab, key_obj])                     # joint: [video, text]
        return full[:, None] == full[None, :]

    def attend(self, call, proceed):
        out = proceed()
        masked = self.expect_masked(call)
        b = call.q.shape[0]
        nq = call.q.shape[2] if call.skip_reshape else call.q.shape[1]
        nk = call.k.shape[2] if call.skip_reshape else call.k.shape[1]
        per = b // len(call.forward.cond_or_uncond)
        allow = torch.ones(b, nq, nk, dtype=torch.bool)
        if masked:
            for item in range(b):
                if not self.cond_only or call.forward.cond_or_uncond[item // per] == 0:
                    allow[item] = self.item_allow(call, item)
        ref = dense(call, allow)
        err = (out.float() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
        self.records.append((call.kind, call.block, round(call.forward.step_fraction, 3), masked, err))
        return out


def patched(tm, cond_only=False, blocks_spec=None, blocks=None):
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    regions = regions_for(tm)
    family = attention_seam.model_families.family_of(tm.patcher)
    if blocks_spec is None:   # every block but the first: checks that block selection routes
        blocks_spec, blocks = f"1-{family.total_blocks - 1}", set(range(1, family.total_blocks))
    rule = MaskedAttention(regions=regions, subject_tokens=SUBJECTS, kinds=frozenset({"self", "cross", "temporal"}),
                           start=0.0, end=0.5, block_spec=blocks_spec, cond_only=cond_only)
    probe = Probe(regions, rule.kinds, 0.0, 0.5, blocks, cond_only)
    model = attention_seam.install(attention_seam.install(tm.patcher, probe), rule)
    return model, probe


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
def test_every_attention_call_gets_the_expected_rule(family, tiny_model):
    tm = tiny_model(family)
    model, probe = patched(tm)
    tiny_models.sample(tm, steps=4, patcher=model)
    recs = probe.records
    assert recs, "no attention call reached the seam"
    bad = [r for r in recs if r[4] > 2e-4]
    assert not bad, bad[:5]
    masked_kinds = {r[0] for r in recs if r[3]}
    assert masked_kinds == EXPECTED_KINDS[family], recs
    steps_masked = {r[2] for r in recs if r[3]}
    assert steps_masked and all(s < 0.5 for s in steps_masked)
    assert any(not r[3] and r[2] >= 0.5 for r in recs)              # later steps: plain attention
    assert any(not r[3] and r[1] == 0 and r[2] < 0.5 for r in recs)  # block 0: plain attention


def test_cond_only_leaves_the_unconditional_pass_alone(tiny_model):
    tm = tiny_model("wan21_t2v")
    model, probe = patched(tm, cond_only=True)
    tiny_models.sample(tm, steps=4, patcher=model)
    assert probe.records and max(r[4] for r in probe.records) <= 2e-4


def test_patch_changes_the_sample_and_leaves_the_original_untouched(tiny_model):
    tm = tiny_model("wan21_t2v")
    before = tiny_models.sample(tm, steps=3, seed=7)
    model, _ = patched(tm, blocks_spec="all", blocks=set(range(100)))
    masked = tiny_models.sample(tm, steps=3, seed=7, patcher=model)
    after = tiny_models.sample(tm, steps=3, seed=7)
    assert not torch.equal(before, masked)
    assert torch.equal(before, after)                 # bit for bit


def test_two_patched_clones_do_not_interfere(tiny_model):
    tm = tiny_model("wan21_t2v")
    a, _ = patched(tm, blocks_spec="all", blocks=set(range(100)))
    b, _ = patched(tm, cond_only=True, blocks_spec="0", blocks={0})
    runs = [tiny_models.sample(tm, steps=3, seed=3, patcher=m) for m in (a, b, a, b)]
    assert torch.equal(runs[0], runs[2]) and torch.equal(runs[1], runs[3])
    assert not torch.equal(runs[0], runs[1])


def test_node_validates_schedule_and_blocks(pack_nodes):
    ok, errors = harness.validate_prompt({
        "1": {"class_type": "BoxDirector.MaskedAttentionPatch",
              "inputs": {"model": ["9", 0], "regions": ["9", 0], "prompt": "", "start_percent": 0.5,
                         "end_percent": 0.2, "self_attention": True, "cross_attention": False,
                         "temporal_attention": True, "blocks": "1-x", "cond_only": False,
                         "word_binding": "per_object", "special_tokens": "background",
                         "mask_normalization": False, "coverage": 0.5}},
        "9": {"class_type": "BoxDirector.MaskSequence", "inputs": {"mask_id": "m", "mask_prompt": "", "dilation": 0,
                                                                   "feather": 0.0}},
        "2": {"class_type": "ModelSave", "inputs": {"model": ["1", 0], "filename_prefix": "x"}},
    })
    text = harness.error_text(errors)
    assert not ok and "start_percent" in text and "blocks" in text, text


@pytest.mark.parametrize("spec, total, want", [
    ("all", 4, {0, 1, 2, 3}), ("1-2", 4, {1, 2}), ("0, 3", 4, {0, 3}), ("50%-100%", 4, {2, 3}),
    ("0%-50%", 30, set(range(15))),
])
def test_block_spec(spec, total, want):
    from boxdirector.nodes.checks import parse_blocks

    assert parse_blocks(spec, total) == want


def real_clip(kind: str):
    """ComfyUI's real CLIP class with a real tokenizer that ships with ComfyUI (T5 for LTX-Video,
    CLIP-L BPE); the encoder weights are not needed to tokenize."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.text_encoders.lt

    clip = comfy.sd.CLIP(no_init=True)
    clip.tokenizer_options = {}
    if kind == "llama":
        import comfy.text_encoders.hunyuan_video

        clip.tokenizer = comfy.text_encoders.hunyuan_video.HunyuanVideoTokenizer()
    else:
        clip.tokenizer = comfy.text_encoders.lt.LTXVT5Tokenizer() if kind == "t5" else comfy.sd1_clip.SD1Tokenizer()
    return clip


def test_subject_tokens_found_with_the_real_tokenizers(comfy):
    from boxdirector.nodes.subject_tokens import find_subject_tokens

    prompt = "a black cat chases a red ball"
    t5 = find_subject_tokens(real_clip("t5"), prompt, ["black cat", "red ball"], ["cat", "ball"], "ltxv")
    assert t5.positions == ((2, 3), (8, 9)) and t5.length == 128 and t5.special == (10,)   # </s> after "ball"
    bpe = find_subject_tokens(real_clip("clip"), prompt, ["black cat", "a red ball"], ["cat", "ball"], "svd")
    assert bpe.positions == ((2, 3), (5, 6, 7)) and bpe.special == (0,)                   # the start token
    # HunyuanVideo: the llama chat template is cropped off the keys, and ComfyUI 0.3.75 joins the
    # words without spaces ("abl", "ack", "catch", "ases", "ared", "ball"): a phrase owns every
    # token that carries part of it.
    llama = find_subject_tokens(real_clip("llama"), prompt, ["black cat", "red ball", "chases"], ["c", "b", "v"],
                                "hunyuan_video")
    assert llama.positions == ((0, 1, 2), (4, 5), (2, 3)) and llama.length == 7         # + <|eot_id|>


def test_missing_phrase_is_an_error_naming_it(comfy):
    from boxdirector.nodes.subject_tokens import SubjectNotFound, find_subject_tokens

    with pytest.raises(SubjectNotFound, match="'a green dog'.*'dog'"):
        find_subject_tokens(real_clip("t5"), "a black cat", ["black cat", "a green dog"], ["cat", "dog"], "ltxv")


def test_node_installs_the_rule_with_the_found_words(tiny_model, pack_nodes):
    tm = tiny_model("ltxv")
    regions = regions_for(tm)
    regions = Regions(regions.masks, regions.ids, ("black cat", "red ball"))
    (model,) = harness.run_node("BoxDirector.MaskedAttentionPatch", model=tm.patcher, regions=regions,
                                clip=real_clip("t5"), prompt="a black cat chases a red ball",
                                start_percent=0.0, end_percent=0.2, self_attention=True, cross_attention=True,
                                temporal_attention=True, blocks="50%-100%", cond_only=False,
                                word_binding="union", special_tokens="shared", mask_normalization=True,
                                coverage=0.5).result
    from boxdirector.nodes import attention_seam

    (rule,) = attention_seam.controller_of(model).rules
    assert rule.subject_tokens == ((2, 3), (8, 9)) and rule.special_tokens == (10,)
    assert rule.union_rule and rule.mask_norm and rule.end == 0.2
    assert attention_seam.controller_of(tm.patcher) is None          # the input model is untouched


def test_node_needs_clip_for_cross_attention(tiny_model, pack_nodes):
    tm = tiny_model("wan21_t2v")
    with pytest.raises(ValueError, match="clip"):
        harness.run_node("BoxDirector.MaskedAttentionPatch", model=tm.patcher, regions=regions_for(tm), prompt="",
                         start_percent=0.0, end_percent=0.2, self_attention=True, cross_attention=True,
                         temporal_attention=True, blocks="all", cond_only=False, word_binding="per_object",
                         special_tokens="background", mask_normalization=False, coverage=0.5)


@pytest.mark.parametrize("inputs, field", [
    ({"blocks": "45-50"}, "blocks"),                   # past this model's depth: would select nothing
    ({"coverage": float("nan")}, "coverage"),          # linked values reach the node unchecked
    ({"end_percent": float("inf")}, "end_percent"),
    ({"normalization_mode": "foo"}, "normalization_mode"),
])
def test_node_refuses_bad_values_when_it_runs(tiny_model, pack_nodes, inputs, field):
    tm = tiny_model("wan21_t2v")
    values = dict(start_percent=0.0, end_percent=0.2, self_attention=True, cross_attention=False,
                  temporal_attention=True, blocks="all", cond_only=False, word_binding="per_object",
                  special_tokens="background", mask_normalization=False, coverage=0.5)
    with pytest.raises(ValueError, match=f"Masked Attention Patch: .*{field}"):
        harness.run_node("BoxDirector.MaskedAttentionPatch", model=tm.patcher, regions=regions_for(tm), prompt="",
                         **{**values, **inputs})


def test_restore_variance_rescales_only_the_channels_masking_narrowed(comfy):
    """The default mode undoes the paper's variance drop: a narrowed channel gets the unmasked spread
    back, keeping its own mean and rank order (an increasing affine map of itself); a channel whose
    spread masking raised is left as it is."""
    from types import SimpleNamespace

    from boxdirector.nodes.masked_attention import MaskedAttention

    gen = torch.Generator().manual_seed(5)
    out = torch.randn(2, 40, 3, generator=gen) + 0.7
    out[..., 0] = out[..., 0] * 0.2 + 3.0     # masking narrowed channel 0 (and moved its mean)
    out[..., 1] *= 5.0                        # and widened channel 1
    ref = torch.randn(2, 40, 3, generator=gen) * 1.5
    rule = MaskedAttention(regions=None, subject_tokens=None, mask_norm=True)
    assert rule.norm_mode == "restore_variance"
    got = rule.normalise(SimpleNamespace(kind="self"), out, ref)
    for b in range(2):
        for c in range(3):
            o, g, r = out[b, :, c].double(), got[b, :, c].double(), ref[b, :, c].double()
            if o.std() < r.std():
                assert torch.allclose(g.std(), r.std(), rtol=1e-5) and torch.allclose(g.mean(), o.mean(), atol=1e-5)
                slope = (g[1] - g[0]) / (o[1] - o[0])
                assert slope > 1 and torch.allclose(g, g[0] + slope * (o - o[0]), atol=1e-4)
            else:
                assert torch.equal(got[b, :, c], out[b, :, c])
    assert not torch.equal(got[..., 0], out[..., 0]) and torch.equal(got[..., 1], out[..., 1])


def test_variance_drop_normalises_only_the_channels_masking_narrowed(comfy):
    """EFDM on the narrowed channels only. Oracle: per channel, the reference's sorted values in the
    masked output's rank order."""
    from types import SimpleNamespace

    from boxdirector.nodes.masked_attention import MaskedAttention

    gen = torch.Generator().manual_seed(5)
    out = torch.randn(2, 40, 3, generator=gen)
    out[..., 0] *= 0.2            # masking narrowed channel 0
    out[..., 1] *= 5.0            # and widened channel 1
    ref = torch.randn(2, 40, 3, generator=gen)
    rule = MaskedAttention(regions=None, subject_tokens=None, mask_norm=True, norm_mode="variance_drop")
    got = rule.normalise(SimpleNamespace(kind="self"), out, ref)
    for b in range(2):
        for c in range(3):
            narrowed = float(out[b, :, c].std()) < float(ref[b, :, c].std())
            if narrowed:
                want = torch.empty(40)
                want[out[b, :, c].argsort()] = ref[b, :, c].sort().values
                assert torch.equal(got[b, :, c], want)
            else:
                assert torch.equal(got[b, :, c], out[b, :, c])
    assert not torch.equal(got[..., 0], out[..., 0]) and torch.equal(got[..., 1], out[..., 1])


def test_mask_normalization_matches_the_unmasked_distribution(tiny_model):
    """With EFDM on, each masked output channel holds exactly the unmasked output's values."""
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    tm = tiny_model("wan21_t2v")
    seen = []

    class After:
        name = "after"

        def attend(self, call, proceed):
            out = proceed()
            seen.append(out)
            return out

    rule = MaskedAttention(regions=regions_for(tm), subject_tokens=SUBJECTS, kinds=frozenset({"self"}),
                           start=0.0, end=1.0, mask_norm=True, norm_mode="always")
    checked = []

    class Before:
        name = "before"

        def attend(self, call, proceed):
            out = proceed()
            if call.kind == "self" and seen:
                ref = seen[-1]
                checked.append(torch.equal(out.sort(dim=-2).values, ref.to(out.dtype).sort(dim=-2).values))
                assert not torch.equal(out, ref)
            return out

    model = attention_seam.install(attention_seam.install(attention_seam.install(tm.patcher, Before()), rule), After())
    tiny_models.sample(tm, steps=2, patcher=model)
    assert checked and all(checked)


# --- call sites, not key lengths (issue 28) -------------------------------------------------------

def long_text_conditioning(tm, length):
    """The family's conditioning with ``length`` text tokens (LTX-Video: its padding mask too)."""
    pos, neg = tm.conditioning()
    g = torch.Generator().manual_seed(11)
    out = []
    for cond in (pos, neg):
        extras = dict(cond[0][1])
        if "attention_mask" in extras:
            mask = torch.ones((1, length), dtype=torch.long)
            mask[:, -tiny_models.LTXV_PAD_TOKENS:] = 0
            extras["attention_mask"] = mask
        out.append([[torch.randn((1, length, cond[0][0].shape[-1]), generator=g), extras]])
    return out


class CallSites:
    """Knows, independently of the seam's classifier, what each attention call reaching the rules
    is: Wan and LTX-Video blocks call self-attention, then the text cross-attention (Wan i2v's
    image cross-attention in between is left alone), block after block. Checks every output against
    a dense reference of the masked rule for that kind."""

    name = "call_sites"

    def __init__(self, regions):
        self.regions = regions
        self.forward, self.index, self.records = None, 0, []

    def attend(self, call, proceed):
        if call.forward is not self.forward:
            if self.forward is not None:
                self.records.append(("end", self.index))
            self.forward, self.index = call.forward, 0
        kind, block = ("self", "cross")[self.index % 2], self.index // 2
        self.index += 1
        out = proceed()
        lab = token_layout.token_labels(self.regions.masks, call.forward.family.layout,
                                        (1,) + tuple(call.forward.latent_shape[1:]))
        if kind == "self":
            allow = lab[:, None] == lab[None, :]
        else:
            key_obj = torch.zeros(call.k.shape[1], dtype=torch.long)
            for i, pos in enumerate(SUBJECTS):
                key_obj[list(pos)] = i + 1
            allow = lab[:, None] == key_obj[None, :]
        ref = dense(call, allow.expand(call.q.shape[0], -1, -1))
        err = (out.float() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
        self.records.append((kind, block, call.kind, call.block, err))
        return out


@pytest.mark.parametrize("family, block_index", [("wan21_t2v", False), ("wan21_t2v", True), ("wan21_i2v", False),
                                                 ("ltxv", False)])
def test_cross_attention_with_as_many_text_tokens_as_video_tokens(family, block_index, tiny_model):
    """Real Wan has 512 text tokens; a video of 512 tokens must not turn its cross-attention into
    self-attention. ``block_index``: ComfyUI's own block patch sets transformer_options' block_index
    per block, as newer ComfyUI does for Wan."""
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    tm = tiny_model(family)
    n = math.prod(tm.token_grid)
    regions = regions_for(tm)
    rule = MaskedAttention(regions=regions, subject_tokens=SUBJECTS, kinds=frozenset({"self", "cross"}),
                           start=0.0, end=1.0, block_spec="all")
    sites = CallSites(regions)
    model = attention_seam.install(attention_seam.install(tm.patcher, sites), rule)
    if block_index:
        def numbered(i):
            def patch(args, extra):
                args["transformer_options"]["block_index"] = i
                return extra["original_block"](args)
            return patch

        for i in range(tm.config["num_layers"]):
            model.set_model_patch_replace(numbered(i), "dit", "double_block", i)
    positive, negative = long_text_conditioning(tm, n)
    tiny_models.sample(tm, steps=2, patcher=model, positive=positive, negative=negative)
    recs = [r for r in sites.records if r[0] != "end"]
    ends = [r[1] for r in sites.records if r[0] == "end"]
    calls = 2 * tm.config["num_layers"]
    assert ends and all(e == calls for e in ends), ends           # every model call: self + cross per block
    assert [(r[2], r[3]) for r in recs] == [(r[0], r[1]) for r in recs], recs[:6]
    assert max(r[4] for r in recs) <= 2e-4, recs[:6]
