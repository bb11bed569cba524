"""start_percent / end_percent in ComfyUI's own convention: one KSampler and the same schedule split
over two KSamplerAdvanced nodes (as Wan 2.2's high- and low-noise experts are run) mask the same
steps, and those are the steps ComfyUI's ``model_sampling.percent_to_sigma`` puts in the window.

A recorder around the pack's attention override sees every call as the model makes it and compares
the patched output with the model's own attention on the same q/k/v: a call was masked when they
differ. The oracle is ComfyUI's percent_to_sigma, not the pack's code.
"""

import pytest
import torch

import harness
import tiny_models
from test_masked_attention_patch import SUBJECTS, regions_for

pytestmark = pytest.mark.comfy

STEPS, END = 4, 0.4   # no step's sigma sits on the window's edge (ComfyUI counts an edge in, the pack out)


def recorded(tm, scheduler):
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    rule = MaskedAttention(regions=regions_for(tm), subject_tokens=SUBJECTS, kinds=frozenset({"self", "cross"}),
                           start=0.0, end=END, block_spec="all")
    model = attention_seam.install(tm.patcher, rule)
    topts = model.model_options["transformer_options"]
    inner = topts["optimized_attention_override"]
    seen = {}   # sigma -> masked (any call of that step)

    def recorder(func, q, k, v, heads, *args, **kwargs):
        out = inner(func, q, k, v, heads, *args, **kwargs)
        plain = func(q, k, v, heads, *args, **kwargs)
        sigma = float((kwargs.get("transformer_options") or {})["sigmas"].flatten()[0])
        seen[sigma] = seen.get(sigma, False) or not torch.allclose(out, plain, atol=1e-5)
        return out

    topts["optimized_attention_override"] = recorder
    return model, seen


@pytest.mark.parametrize("scheduler", ["simple", "karras"])
def test_one_sampler_and_two_split_samplers_mask_the_same_steps(tiny_model, scheduler):
    nodes = harness.import_comfy()
    tm = tiny_model("wan21_t2v")
    pos, neg = tm.conditioning()
    latent = tm.empty_latent()
    cfg = tm.default_cfg

    one, seen_one = recorded(tm, scheduler)
    (a,) = nodes.common_ksampler(one, 5, STEPS, cfg, "euler", scheduler, pos, neg, latent)

    split, seen_split = recorded(tm, scheduler)
    ks = nodes.KSamplerAdvanced()
    (mid,) = ks.sample(split, "enable", 5, STEPS, cfg, "euler", scheduler, pos, neg, latent, 0, STEPS // 2, "enable")
    (b,) = ks.sample(split, "disable", 5, STEPS, cfg, "euler", scheduler, pos, neg, mid, STEPS // 2, 10000, "disable")

    assert len(seen_one) == STEPS and seen_one == seen_split, (seen_one, seen_split)
    end_sigma = tm.patcher.model.model_sampling.percent_to_sigma(END)
    want = {s: s > end_sigma for s in seen_one}
    assert seen_one == want, (seen_one, end_sigma)
    assert any(want.values()) and not all(want.values())
    assert torch.allclose(a["samples"], b["samples"], atol=1e-4)
