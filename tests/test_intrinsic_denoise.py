"""Temporal intrinsic denoising: the prior tau and its gradient, the score of both parametrisations,
the Langevin step convention (core, plain torch), and the TemporalIntrinsicDenoise SAMPLER in
ComfyUI's real SamplerCustom path on a tiny real Wan model (comfy): bit-exact reproduction of
ComfyUI's euler and ddim with refinement off, determinism, the prior at work, progress, the
MaskedAttentionPatch combination, and the node's validation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from boxdirector.core import intrinsic_denoise as idn
from boxdirector.core import token_layout

# ================================================================================================
# core


def moving_boxes(frames: int, dtype=torch.float64):
    """Two objects: one moving right and growing, one static that is hidden for the last frames."""
    t = torch.linspace(0, 1, frames, dtype=dtype)
    a = torch.stack([0.05 + 0.4 * t, 0.2 + 0 * t, 0.35 + 0.5 * t, 0.6 + 0.2 * t], -1)
    b = torch.tensor([0.55, 0.05, 0.95, 0.45], dtype=dtype).expand(frames, 4)
    visible = torch.ones(2, frames, dtype=torch.bool)
    visible[1, frames - 3:] = False
    return torch.stack([a, b]), visible


@pytest.mark.core
@pytest.mark.parametrize("scale", idn.GRADIENT_SCALES)
def test_tau_gradient_matches_finite_differences(scale):
    boxes, visible = moving_boxes(13)
    shape = (2, 3, 4, 10, 14)                         # [B, C, T, H, W]: Wan-like, 13 pixel frames -> 4
    prior = idn.TemporalPrior.from_boxes(boxes, visible, shape, "wan21", gradient_scale=scale)
    assert prior.num_pairs == 5                       # object 0: 3 pairs; object 1: hidden on frame 3
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    tau, grad = prior.gradient(z)
    assert grad.dtype == torch.float64 and grad.shape == z.shape
    assert torch.allclose(tau, prior.value(z))
    h = 1e-6
    for _ in range(3):                                # directional derivatives
        d = torch.randn(shape, generator=gen, dtype=torch.float64)
        fd = (prior.objective(z + h * d) - prior.objective(z - h * d)).sum() / (2 * h)
        assert float((grad * d).sum()) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
    flat = grad.flatten().abs()
    for idx in flat.topk(3).indices.tolist() + [0]:    # single coordinates, incl. one outside every box
        e = torch.zeros(z.numel(), dtype=torch.float64)
        e[idx] = 1
        e = e.view(shape)
        fd = (prior.objective(z + h * e) - prior.objective(z - h * e)).sum() / (2 * h)
        assert float(grad.flatten()[idx]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)
    assert float(grad.flatten()[0]) == 0.0            # (0, 0) lies in no box


@pytest.mark.core
def test_tau_is_pearson_of_box_content():
    # One channel, a box that is the whole latent, crop = latent size: the crop is the frame itself.
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]] * 3], dtype=torch.float64)
    visible = torch.ones(1, 3, dtype=torch.bool)
    prior = idn.TemporalPrior.from_boxes(boxes, visible, (1, 1, 3, 6, 8))
    assert prior.sizes == ((6, 8),)
    z = torch.randn(1, 1, 3, 6, 8, dtype=torch.float64)
    want = [torch.corrcoef(torch.stack([z[0, 0, t].flatten(), z[0, 0, t + 1].flatten()]))[0, 1] for t in range(2)]
    assert float(prior.value(z)[0]) == pytest.approx(float(sum(want) / 2), abs=1e-12)
    # The same content under a moving box: tau = 1, whatever the box sizes (resampled to one size).
    content = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    z = torch.zeros(1, 2, 3, 12, 12, dtype=torch.float64)
    for t, x in enumerate((0, 3, 7)):
        z[0, :, t, 2:6, x:x + 4] = content[0]
    boxes = torch.tensor([[[x / 12, 2 / 12, (x + 4) / 12, 6 / 12] for x in (0, 3, 7)]], dtype=torch.float64)
    prior = idn.TemporalPrior.from_boxes(boxes, visible, z.shape)
    assert prior.sizes == ((4, 4),)
    assert float(prior.value(z)[0]) == pytest.approx(1.0, abs=1e-9)
    assert float(prior.value(torch.cat([z[:, :, :1], -z[:, :, 1:2], z[:, :, 2:]], 2))[0]) == pytest.approx(-1.0)


@pytest.mark.core
def test_contrast_prior_scores_content_that_follows_the_box_not_content_that_stays():
    """The paper's tau rewards static content that looks alike under a moving box (a smooth
    background: a shifted ramp is the same ramp once centred) as much as an object that follows the
    box; the contrast prior subtracts the correlation with the places one box size away in the next
    frame. Oracle: hand-placed content with known correlations."""
    size, frames = 16, 3
    xs = (2, 6, 10)                                            # the box moves 4 px right per frame
    boxes = torch.tensor([[[x / size, 6 / size, (x + 4) / size, 10 / size] for x in xs]], dtype=torch.float64)
    visible = torch.ones(1, frames, dtype=torch.bool)
    shape = (1, 1, frames, size, size)
    plain = idn.TemporalPrior.from_boxes(boxes, visible, shape)
    contrast = idn.TemporalPrior.from_boxes(boxes, visible, shape, contrast=True)
    gen = torch.Generator().manual_seed(0)
    blob = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    follows = torch.zeros(shape, dtype=torch.float64)
    for t, x in enumerate(xs):
        follows[0, 0, t, 6:10, x:x + 4] = blob
    ramp = torch.arange(size, dtype=torch.float64).expand(size, size)      # static, smooth
    static = ramp.expand(shape).contiguous()
    stays = torch.zeros(shape, dtype=torch.float64)
    stays[0, 0, :, 6:10, 2:6] = blob                           # the object never leaves its first box
    assert float(plain.value(static)[0]) == pytest.approx(1.0)
    assert float(plain.value(follows)[0]) == pytest.approx(1.0)
    assert float(contrast.value(static)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(contrast.value(follows)[0]) > 0.9
    assert float(plain.value(stays)[0]) > -0.1                 # the paper's tau: not penalised
    assert float(contrast.value(stays)[0]) == pytest.approx(-0.125)  # left behind: 1 of 4 displaced boxes, 1 of 2 pairs
    _, g = contrast.gradient(stays)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0


@pytest.mark.core
def test_box_crop_at_pixel_centres_is_exact():
    z = torch.randn(2, 3, 2, 9, 11, dtype=torch.float64)
    boxes = torch.tensor([[2 / 11, 1 / 9, 7 / 11, 5 / 9], [0.0, 4 / 9, 3 / 11, 1.0]], dtype=torch.float64)
    crops0 = idn.box_crops(z, boxes[:1].expand(2, 4), (4, 5))
    assert torch.allclose(crops0, z[:, :, :, 1:5, 2:7].transpose(1, 2), atol=1e-12)
    crops1 = idn.box_crops(z, boxes[1:].expand(2, 4), (5, 3))
    assert torch.allclose(crops1, z[:, :, :, 4:9, 0:3].transpose(1, 2), atol=1e-12)


@pytest.mark.core
def test_latent_frame_boxes_follow_the_token_layout():
    f = 9                                                   # Wan: latent 0 <- 0; 1 <- 1..4; 2 <- 5..8
    x = torch.arange(f, dtype=torch.float64) / 20
    boxes = torch.stack([x, x, x + 0.5, x + 0.5], -1)[None]
    visible = torch.ones(1, f, dtype=torch.bool)
    visible[0, 5:8] = False                                 # latent 2: 1 of 4 pixel frames visible
    visible[0, 2] = False                                   # latent 1: 3 of 4
    lb, lv = idn.latent_frame_boxes(boxes, visible, 3, "wan21")
    assert lv.tolist() == [[True, True, False]]
    assert lb[0, 0, 0].item() == 0.0
    assert lb[0, 1, 0].item() == pytest.approx((1 + 3 + 4) / 3 / 20)    # mean over the visible ones
    assert [list(token_layout.pixel_frames_of_latent("wan21", t)) for t in range(3)] == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    # A trajectory of another length is stretched; an unknown model spreads frames evenly.
    lb2, lv2 = idn.latent_frame_boxes(boxes, torch.ones(1, f, dtype=torch.bool), 2, "ltxv")
    assert lv2.all() and lb2[0, 1, 0] > lb2[0, 0, 0]
    lb3, lv3 = idn.latent_frame_boxes(boxes, torch.ones(1, f, dtype=torch.bool), 3, None)
    assert lv3.all() and torch.allclose(lb3[0, :, 0], torch.tensor([1.0, 4.0, 7.0], dtype=torch.float64) / 20)


@pytest.mark.core
def test_prior_without_visible_pairs_is_zero():
    boxes, visible = moving_boxes(9)
    visible[:] = False
    visible[0, 0] = True
    prior = idn.TemporalPrior.from_boxes(boxes, visible, (1, 2, 3, 8, 8), "wan21")
    z = torch.randn(1, 2, 3, 8, 8)
    tau, grad = prior.gradient(z)
    assert prior.num_pairs == 0 and float(tau[0]) == 0.0 and not grad.any()


@pytest.mark.core
def test_per_element_gradient_scale_is_independent_of_box_size_and_channels():
    """The measured reason for the default: per latent element in the box, the 'per_element'
    gradient has the same size for a small and a large box and for 4 or 48 channels (within 2x),
    while the paper's raw gradient shrinks with the crop's element count."""
    def rms_in_box(scale, box, channels):
        boxes = torch.tensor([[box] * 9], dtype=torch.float64)
        prior = idn.TemporalPrior.from_boxes(boxes, torch.ones(1, 9, dtype=torch.bool), (1, channels, 3, 32, 32),
                                             "wan21", gradient_scale=scale)
        z = torch.randn(1, channels, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        g = prior.gradient(z)[1]
        return float(g[g != 0].pow(2).mean().sqrt())

    small, large = [0.4, 0.4, 0.55, 0.55], [0.05, 0.05, 0.95, 0.95]     # ~5x5 vs ~29x29 latent pixels
    per = [rms_in_box("per_element", b, c) for b, c in ((small, 4), (large, 4), (small, 48))]
    raw = [rms_in_box("raw", b, c) for b, c in ((small, 4), (large, 4), (small, 48))]
    assert max(per) / min(per) < 2.0, per
    assert raw[0] / raw[1] > 15 and raw[0] / raw[2] > 6, raw


def gaussian_case(parametrisation, sigma, mu=0.7, s0=0.5, n=50_000, seed=0):
    """Data x0 ~ N(mu, s0^2): the exact marginal score and posterior mean at sigma."""
    a, b = idn.marginal_coefficients(sigma, parametrisation)
    var = a * a * s0 * s0 + b * b
    gen = torch.Generator().manual_seed(seed)
    x = a * mu + math.sqrt(var) * torch.randn(n, dtype=torch.float64, generator=gen)
    x0_mean = mu + a * s0 * s0 / var * (x - a * mu)                  # E[x0 | x]
    score = -(x - a * mu) / var                                       # grad log N(a mu, var)
    return x, x0_mean, score, var


@pytest.mark.core
@pytest.mark.parametrize("parametrisation, sigma", [("ve", 0.3), ("ve", 7.0), ("flow", 0.2), ("flow", 0.9)])
def test_score_from_denoised_is_the_exact_score_for_gaussian_data(parametrisation, sigma):
    x, x0_mean, score, _ = gaussian_case(parametrisation, sigma, n=1000)
    got = idn.score_from_denoised(x, x0_mean, torch.tensor(sigma, dtype=torch.float64), parametrisation)
    assert torch.allclose(got, score, rtol=1e-10, atol=1e-12)


@pytest.mark.core
@pytest.mark.parametrize("parametrisation, sigma", [("ve", 3.0), ("flow", 0.6)])
def test_langevin_step_convention_keeps_the_noise_level(parametrisation, sigma):
    """eta_k = 1 is Langevin for p_sigma: with the exact score the marginal stays put (ULA bias
    ~ eta_l / 4); eta_k = 0 shrinks the noise by (1 - eta_l) per iteration."""
    x, _, _, var = gaussian_case(parametrisation, sigma)
    a, _ = idn.marginal_coefficients(sigma, parametrisation)
    mu, s0 = 0.7, 0.5

    def denoise(z, s):
        return mu + a * s0 * s0 / var * (z - a * mu)

    gen = torch.Generator().manual_seed(1)
    kept = idn.intrinsic_refine(x, sigma, denoise, iterations=20, parametrisation=parametrisation, eta_l=0.05,
                                eta_k=1.0, generator=gen)
    assert float(kept.var()) / var == pytest.approx(1.0, abs=0.03)
    assert float(kept.mean()) == pytest.approx(a * mu, abs=0.02 * math.sqrt(var))
    shrunk = idn.intrinsic_refine(x, sigma, denoise, iterations=20, parametrisation=parametrisation, eta_l=0.05,
                                  eta_k=0.0)
    assert float(shrunk.var()) / var < 0.6


@pytest.mark.core
def test_refinement_raises_tau_and_off_is_a_no_op():
    boxes, visible = moving_boxes(9, torch.float32)
    shape = (1, 4, 3, 12, 16)
    prior = idn.TemporalPrior.from_boxes(boxes, visible, shape, "wan21")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 5.0
    denoise = lambda z, s: z / (1 + float(s) ** 2)                       # exact for N(0, I) data (ve)
    kw = {"sigma": torch.tensor(5.0), "denoise": denoise, "iterations": 3, "parametrisation": "ve", "prior": prior,
          "eta_l": 0.05}
    base = idn.intrinsic_refine(x, **kw, c_g=0.0, eta_k=1.0, generator=torch.Generator().manual_seed(0))
    guided = idn.intrinsic_refine(x, **kw, c_g=1.0, eta_k=1.0, generator=torch.Generator().manual_seed(0))
    assert float(prior.value(guided)) > float(prior.value(base)) + 0.05
    off = idn.intrinsic_refine(x, **{**kw, "eta_l": 0.0}, c_g=0.0, eta_k=0.0)
    assert torch.equal(off, x)


@pytest.mark.core
def test_schedule_and_evaluation_count():
    assert idn.refined_steps(8, 0.0, 0.25) == [True, True] + [False] * 6
    assert idn.refined_steps(4, 0.5, 1.0) == [False, False, True, True]
    ve = torch.linspace(14.0, 0.0, 21)
    assert idn.count_evaluations(ve, "ve", 0.0, 0.25, 2) == 20 + 2 * 5
    assert idn.count_evaluations(ve, "ve", 0.0, 1.0, 0) == 20
    flow = torch.linspace(1.0, 0.0, 21)          # sigma = 1: pure noise, the score needs no model
    assert idn.count_evaluations(flow, "flow", 0.0, 0.25, 2) == 20 + 2 * 4


@pytest.mark.core
def test_flow_at_sigma_one_refines_without_the_model():
    boxes, visible = moving_boxes(9, torch.float32)
    shape = (1, 4, 3, 12, 16)
    prior = idn.TemporalPrior.from_boxes(boxes, visible, shape, "wan21")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))

    def denoise(z, s):
        raise AssertionError("the model was asked at sigma = 1")

    out = idn.intrinsic_refine(x, torch.tensor(1.0), denoise, iterations=2, parametrisation="flow", prior=prior,
                               c_g=1.0, eta_l=0.05, eta_k=0.0)
    assert float(prior.value(out)) > float(prior.value(x))


@pytest.mark.core
def test_prior_on_x0_hat_takes_the_gradient_at_the_denoised_estimate():
    """prior_on="x0_hat": the drift's prior term is grad tau evaluated at the model's x0_hat (not at
    z), and at a flow model's sigma = 1 the model is then asked, once per iteration."""
    boxes, visible = moving_boxes(9, torch.float32)
    shape = (1, 4, 3, 12, 16)
    prior = idn.TemporalPrior.from_boxes(boxes, visible, shape, "wan21")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    target = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    asked = []

    def denoise(z, s):
        asked.append(float(s))
        return target                                                  # a fixed "clean" estimate

    kw = dict(iterations=1, parametrisation="flow", prior=prior, eta_l=0.05, eta_k=0.0)
    sigma = torch.tensor(0.5)
    with_prior = idn.intrinsic_refine(x, sigma, denoise, c_g=2.0, prior_on="x0_hat", **kw)
    without = idn.intrinsic_refine(x, sigma, denoise, c_g=0.0, prior_on="x0_hat", **kw)
    step, _ = idn.langevin_step_sizes(sigma, "flow", 0.05, 0.0)
    _, g_at_x0 = prior.gradient(target)
    _, g_at_z = prior.gradient(x)
    assert torch.allclose(with_prior - without, step * 2.0 * g_at_x0, atol=1e-6)
    assert not torch.allclose(g_at_x0, g_at_z, atol=1e-3)
    asked.clear()
    idn.intrinsic_refine(x, torch.tensor(1.0), denoise, c_g=1.0, prior_on="x0_hat", **dict(kw, iterations=2))
    assert asked == [1.0, 1.0]
    flow = torch.linspace(1.0, 0.0, 21)
    assert idn.count_evaluations(flow, "flow", 0.0, 0.25, 2, model_at_pure_noise=True) == 20 + 2 * 5
    with pytest.raises(ValueError, match="prior_on"):
        idn.intrinsic_refine(x, sigma, denoise, c_g=1.0, prior_on="x0", **kw)


@pytest.mark.core
def test_frames_as_batch_latent_is_the_same_video():
    """SVD's latent is [F, C, H, W]: the prior sees it as one video [1, C, F, H, W]."""
    boxes, visible = moving_boxes(4)
    video = torch.randn(1, 3, 4, 8, 10, dtype=torch.float64)
    frames = video[0].transpose(0, 1).contiguous()                     # [F, C, H, W]
    as_video = idn.TemporalPrior.from_boxes(boxes, visible, video.shape, "svd")
    as_batch = idn.TemporalPrior.from_boxes(boxes, visible, frames.shape, "svd", frames_are_batch=True)
    tau_v, g_v = as_video.gradient(video)
    tau_b, g_b = as_batch.gradient(frames)
    assert torch.allclose(tau_v, tau_b) and torch.allclose(g_v[0].transpose(0, 1), g_b)


# ================================================================================================
# ComfyUI: the SAMPLER on a tiny real Wan 2.1 model


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are many small ops: one intra-op thread is faster on the shared 2-core box
    (see tests/test_tiny_models.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def wan(tiny_model, one_torch_thread):
    return tiny_model("wan21_t2v")


def trajectory_for(tm):
    from boxdirector.core.trajectory import parse_trajectory

    h, w = tm.pixel_size
    return parse_trajectory(json.dumps({
        "version": 1, "frames": tm.pixel_frames, "width": w, "height": h, "objects": [
            {"id": "a", "prompt": "a", "keyframes": [{"frame": 0, "box": [0.0, 0.1, 0.5, 0.8]},
                                                     {"frame": tm.pixel_frames - 1, "box": [0.5, 0.2, 1.0, 0.9]}]},
            {"id": "b", "prompt": "b", "keyframes": [{"frame": 0, "box": [0.6, 0.0, 0.9, 0.4]}]}]}))


def intrinsic(tm, **kw):
    from boxdirector.core.trajectory import sample_boxes
    from boxdirector.nodes.intrinsic_denoise import IntrinsicConfig, IntrinsicSampler

    boxes, visible = sample_boxes(trajectory_for(tm))
    return IntrinsicSampler(IntrinsicConfig(boxes=boxes, visible=visible, **kw))


def run_custom(tm, sampler, *, steps=3, seed=5, scheduler="simple", patcher=None, callback=None, noise_mask=None,
               latent=None):
    """ComfyUI's SamplerCustom path (comfy.sample.sample_custom), as the node calls it."""
    import comfy.sample
    import comfy.samplers

    model = patcher or tm.patcher
    latent = tm.empty_latent()["samples"] if latent is None else latent
    noise = comfy.sample.prepare_noise(latent, seed)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    pos, neg = tm.conditioning()
    return comfy.sample.sample_custom(model, noise, tm.default_cfg, sampler, sigmas, pos, neg, latent,
                                      noise_mask=noise_mask, callback=callback, disable_pbar=True, seed=seed)


@pytest.mark.comfy
def test_off_reproduces_comfy_euler_bit_for_bit(wan):
    import comfy.samplers

    want = run_custom(wan, comfy.samplers.sampler_object("euler"))
    assert torch.equal(run_custom(wan, intrinsic(wan, iterations=0)), want)
    # Iterations that cannot move the latent (c_g = eta_l = eta_k = 0) still leave it bit for bit.
    assert torch.equal(run_custom(wan, intrinsic(wan, iterations=2, c_g=0.0, eta_l=0.0, eta_k=0.0, end=1.0)), want)
    # ... and the KSampler node's own path gives the same.
    import tiny_models

    assert torch.equal(tiny_models.sample(wan, steps=3, seed=5, sampler="euler", scheduler="simple"), want)


@pytest.mark.comfy
def test_ddim_reproduces_comfy_ddim_bit_for_bit_with_inpainting(wan):
    import comfy.samplers
    import tiny_models

    latent = torch.randn(wan.latent_shape, generator=torch.Generator().manual_seed(9))
    mask = torch.zeros(1, 1, *wan.latent_shape[2:])
    mask[..., :, 4:] = 1.0                        # regenerate the right half (exercises the inpaint noise)
    kw = {"scheduler": "ddim_uniform", "latent": latent, "noise_mask": mask}
    want = run_custom(wan, comfy.samplers.sampler_object("ddim"), **kw)
    assert torch.equal(run_custom(wan, intrinsic(wan, base="ddim", iterations=0), **kw), want)
    assert not torch.equal(run_custom(wan, intrinsic(wan, base="euler", iterations=0), **kw), want)
    # The KSampler node with sampler "ddim".
    plain = run_custom(wan, intrinsic(wan, base="ddim", iterations=0), scheduler="ddim_uniform")
    assert torch.equal(tiny_models.sample(wan, steps=3, seed=5, sampler="ddim", scheduler="ddim_uniform"), plain)


@pytest.mark.comfy
def test_seeded_runs_are_deterministic_and_refinement_acts(wan):
    import comfy.samplers

    plain = run_custom(wan, comfy.samplers.sampler_object("euler"))
    # eta_k 1: the refinement noise is what the seed draws (the default, 0, draws none)
    runs = [run_custom(wan, intrinsic(wan, iterations=1, c_g=1.0, seed=s, end=0.5, eta_k=1.0)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], plain)
    assert torch.isfinite(runs[0]).all()


@pytest.mark.comfy
def test_prior_raises_tau_of_the_refined_latent_and_progress_counts_evaluations(wan):
    """With M = 2 before step 1, evaluation 3 sees the refined latent: its tau is higher with the
    prior than with the score alone (same refinement noise). ComfyUI's progress callback counts
    evaluations: 3 steps + 2 x 2 iterations."""
    from boxdirector.core.trajectory import sample_boxes

    boxes, visible = sample_boxes(trajectory_for(wan))
    prior = idn.TemporalPrior.from_boxes(boxes, visible, wan.latent_shape, "wan21")
    seen = {}
    for c_g in (0.0, 1.0):
        calls = []
        # Steps 1 and 2 of 3 (step 0 is at sigma = 1, where a flow model's score needs no evaluation).
        run_custom(wan, intrinsic(wan, iterations=2, c_g=c_g, start=0.3, end=1.0, seed=4),
                   callback=lambda i, x0, x, total, calls=calls: calls.append((i, total, x.clone())))
        assert [(i, t) for i, t, _ in calls] == [(i, 7) for i in range(7)]
        seen[c_g] = calls
    assert torch.equal(seen[0.0][1][2], seen[1.0][1][2])                          # same start of step 1
    tau = {c: float(prior.value(calls[3][2])[0]) for c, calls in seen.items()}   # step 1, refined
    start = float(prior.value(seen[0.0][1][2])[0])
    assert tau[1.0] > tau[0.0] + 0.05 and tau[1.0] > start + 0.05, (start, tau)


@pytest.mark.comfy
def test_runs_under_inference_mode_like_the_executor(wan):
    """ComfyUI executes nodes under torch.inference_mode(): the prior's autograd must still work."""
    with torch.inference_mode():
        a = run_custom(wan, intrinsic(wan, iterations=1, c_g=1.0, end=0.5, seed=3))
    b = run_custom(wan, intrinsic(wan, iterations=1, c_g=1.0, end=0.5, seed=3))
    assert torch.equal(a, b)


@pytest.mark.comfy
def test_with_masked_attention_patch(wan):
    """The paper's full method: masked attention + intrinsic denoising. Off, the sampler equals
    euler on the patched model bit for bit; on, it changes the result and stays finite."""
    import comfy.samplers
    from boxdirector.core.masks import box_masks
    from boxdirector.core.regions import Regions
    from boxdirector.core.trajectory import sample_boxes
    from boxdirector.nodes import attention_seam
    from boxdirector.nodes.masked_attention import MaskedAttention

    boxes, visible = sample_boxes(trajectory_for(wan))
    h, w = wan.pixel_size
    regions = Regions(box_masks(boxes, visible, h, w), ("a", "b"), ("a", "b"))
    rule = MaskedAttention(regions=regions, subject_tokens=((1, 2), (5,)), kinds=frozenset({"self", "cross"}),
                           start=0.0, end=0.5, mask_norm=True)
    patched = attention_seam.install(wan.patcher, rule)
    euler = run_custom(wan, comfy.samplers.sampler_object("euler"), patcher=patched)
    assert not torch.equal(euler, run_custom(wan, comfy.samplers.sampler_object("euler")))
    assert torch.equal(run_custom(wan, intrinsic(wan, iterations=0), patcher=patched), euler)
    on = run_custom(wan, intrinsic(wan, iterations=1, c_g=1.0, end=0.5), patcher=patched)
    assert torch.isfinite(on).all() and not torch.equal(on, euler)


@pytest.mark.comfy
@pytest.mark.parametrize("family, parametrisation", [("hunyuan_video", "flow"), ("ltxv", "flow"), ("svd", "ve")])
def test_other_families(tiny_model, one_torch_thread, family, parametrisation):
    """HunyuanVideo and LTX-Video (flow, 4x / 8x time) and SVD (v-prediction, frames as the batch):
    the layout and parametrisation are found, refinement runs and progress counts evaluations; off,
    it reproduces euler bit for bit."""
    import comfy.samplers
    from boxdirector.nodes.intrinsic_denoise import layout_of, parametrisation_of

    tm = tiny_model(family)
    model_sampling = tm.patcher.get_model_object("model_sampling")
    assert parametrisation_of(model_sampling) == parametrisation
    kw = {"steps": 2, "scheduler": tm.default_scheduler}
    if family != "svd":   # (SVD's forced widths make it ~20x slower; the loop is the same code)
        assert torch.equal(run_custom(tm, intrinsic(tm, iterations=0), **kw),
                           run_custom(tm, comfy.samplers.sampler_object("euler"), **kw))
    calls = []
    out = run_custom(tm, intrinsic(tm, iterations=1, c_g=1.0, start=0.5, end=1.0), **kw,
                     callback=lambda i, x0, x, total: calls.append((i, total)))
    assert calls == [(0, 3), (1, 3), (2, 3)] and torch.isfinite(out).all()
    probe = type("K", (), {"inner_model": type("G", (), {"model_patcher": tm.patcher})()})()
    layout, frames_are_batch = layout_of(probe, tm.patcher.model, out)
    assert layout == {"hunyuan_video": "hunyuan_video", "ltxv": "ltxv", "svd": "svd"}[family]
    assert frames_are_batch == (family == "svd")


@pytest.mark.comfy
def test_parametrisation_is_read_from_the_model_sampling(wan, comfy):
    import comfy.model_sampling as ms
    from boxdirector.nodes.intrinsic_denoise import parametrisation_of

    class Eps(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    class VPred(ms.ModelSamplingDiscrete, ms.V_PREDICTION):
        pass

    assert parametrisation_of(wan.patcher.get_model_object("model_sampling")) == "flow"
    assert parametrisation_of(Eps()) == "ve" and parametrisation_of(VPred()) == "ve"


# ================================================================================================
# the node


def node_prompt(**overrides):
    inputs = {"base_sampler": "euler", "iterations": 2, "c_g": 1.0, "gradient_scale": "per_element", "eta_l": 0.05,
              "eta_k": 1.0, "start_percent": 0.0, "end_percent": 0.25, "seed": 0, "trajectory": ["9", 0]}
    inputs.update(overrides)
    return {
        "1": {"class_type": "BoxDirector.TemporalIntrinsicDenoise", "inputs": inputs},
        "9": {"class_type": "BoxDirector.BBoxTrajectory", "inputs": {
            "trajectory": json.dumps({"version": 1, "frames": 9, "width": 64, "height": 32, "objects": [
                {"id": "a", "prompt": "a", "keyframes": [{"frame": 0, "box": [0.1, 0.1, 0.5, 0.5]}]}]}),
            "frames": 0, "width": 0, "height": 0}},
        "2": {"class_type": "SamplerCustom", "inputs": {
            "model": ["3", 0], "add_noise": True, "noise_seed": 0, "cfg": 6.0, "positive": ["4", 0],
            "negative": ["4", 0], "sampler": ["1", 0], "sigmas": ["5", 0], "latent_image": ["6", 0]}},
        "3": {"class_type": "UNETLoader", "inputs": {"unet_name": "none.safetensors", "weight_dtype": "default"}},
        "4": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["4", 0]}},
        "5": {"class_type": "BasicScheduler", "inputs": {"model": ["3", 0], "scheduler": "simple", "steps": 4,
                                                          "denoise": 1.0}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 32, "length": 9,
                                                                   "batch_size": 1}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "x"}},
    }


@pytest.mark.comfy
@pytest.mark.parametrize("overrides, field", [
    ({"start_percent": 0.6, "end_percent": 0.2}, "start_percent"),
    ({"eta_l": 0.9}, "eta_l"),
    ({"eta_k": -1.0}, "eta_k"),
    ({"iterations": -1}, "iterations"),
    ({"c_g": -2.0}, "c_g"),
    ({"eta_k": 3.0}, "eta_k"),
    ({"base_sampler": "heun"}, "base_sampler"),
    ({"gradient_scale": "unit"}, "gradient_scale"),
    ({"prior": "spatial"}, "prior"),
])
def test_node_validation_names_the_field(pack_nodes, overrides, field):
    import harness

    ok, errors = harness.validate_prompt(node_prompt(**overrides))
    assert not ok
    mine = harness.error_text({"1": errors["1"]}) if "1" in errors else ""
    assert field in mine, errors


@pytest.mark.comfy
def test_node_builds_the_sampler_from_a_trajectory_or_regions(wan, pack_nodes):
    import harness
    from boxdirector.core.masks import box_masks
    from boxdirector.core.regions import Regions
    from boxdirector.core.trajectory import sample_boxes
    from boxdirector.nodes.intrinsic_denoise import IntrinsicSampler

    node = "BoxDirector.TemporalIntrinsicDenoise"
    args = {"base_sampler": "ddim", "iterations": 2, "c_g": 1.0, "gradient_scale": "raw", "eta_l": 0.05,
            "eta_k": 1.0, "start_percent": 0.0, "end_percent": 0.25, "seed": 7}
    # The trajectory as the pack loaded by ComfyUI makes it (its own module, as in a server).
    doc = trajectory_for(wan).to_dict()
    traj = harness.run_node("BoxDirector.BBoxTrajectory", trajectory=json.dumps(doc), frames=0, width=0,
                            height=0).result[0]
    (sampler,) = harness.run_node(node, trajectory=traj, **args).result
    import comfy.samplers

    # (ComfyUI's loader imports the pack as its own module: compare classes by name.)
    assert isinstance(sampler, comfy.samplers.KSAMPLER) and type(sampler).__name__ == IntrinsicSampler.__name__
    assert sampler.inpaint_options == {"random": True}
    assert sampler.config.gradient_scale == "raw" and sampler.config.seed == 7
    boxes, visible = sample_boxes(trajectory_for(wan))
    h, w = wan.pixel_size
    regions = Regions(box_masks(boxes, visible, h, w), ("a", "b"), ("a", "b"))
    (from_regions,) = harness.run_node(node, regions=regions, **args).result
    assert torch.allclose(from_regions.config.boxes, boxes, atol=1.0 / min(h, w))
    for bad in ({}, {"trajectory": traj, "regions": regions}):
        with pytest.raises(ValueError, match="trajectory / regions"):
            harness.run_node(node, **bad, **args)
