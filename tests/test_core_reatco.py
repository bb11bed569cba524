"""core.reatco against analytically known denoisers and hand-made attention maps."""

import itertools
import math

import pytest
import torch
from boxdirector.core import reatco


def gaussian_denoiser(mu: float, c: float, parametrisation: str):
    """The exact x0-estimate E[x0 | x_s] for data ~ N(mu, c^2) per element."""
    def denoise(x, s):
        a = reatco.signal_scale(s, parametrisation)
        return mu + a * c * c / (a * a * c * c + s * s) * (x - a * mu)
    return denoise


def flow_sigmas(n, shift=3.0):
    t = torch.linspace(1.0, 0.0, n + 1)
    return shift * t / (1 + (shift - 1) * t)


def ve_sigmas(n):
    return torch.cat([torch.exp(torch.linspace(math.log(14.6), math.log(0.03), n)), torch.zeros(1)])


@pytest.mark.parametrize("parametrisation,schedule", [("flow", flow_sigmas), ("ve", ve_sigmas)])
def test_inversion_converges_to_the_exact_ode(parametrisation, schedule):
    # The probability-flow ODE of N(mu, c^2) maps x0 to x_s = a(s) mu + sqrt(a^2 c^2 + s^2) z,
    # z = (x0 - mu) / c. DDIM inversion is a first-order scheme: its error to that end point, and
    # the error of inversion -> regeneration, must halve as the steps double.
    mu, c = 0.3, 0.7
    den = gaussian_denoiser(mu, c, parametrisation)
    x0 = mu + c * torch.randn(4096, generator=torch.Generator().manual_seed(0))
    errors = []
    for n in (100, 200, 400):
        sigmas = schedule(n)
        traj = reatco.invert(den, x0, sigmas, parametrisation)
        assert len(traj) == len(sigmas) and traj[-1] is x0
        s0 = float(sigmas[0])
        a0 = reatco.signal_scale(s0, parametrisation)
        exact = a0 * mu + math.sqrt(a0 * a0 * c * c + s0 * s0) * (x0 - mu) / c
        back = reatco.regenerate(den, traj[0], sigmas, parametrisation)
        errors.append((((traj[0] - exact).norm() / exact.norm()).item(), ((back - x0).norm() / x0.norm()).item()))
    for (e1, r1), (e2, r2) in itertools.pairwise(errors):
        assert e2 < 0.6 * e1 and r2 < 0.6 * r1, errors
    assert errors[-1][0] < 0.04 and errors[-1][1] < 0.04, errors


@pytest.mark.parametrize("parametrisation,schedule", [("flow", flow_sigmas), ("ve", ve_sigmas)])
def test_fixed_point_inversion_is_the_inverse_of_regeneration(parametrisation, schedule):
    # With 4 steps plain DDIM inversion is far off; its fixed point inverts each regeneration step.
    den = gaussian_denoiser(0.3, 0.7, parametrisation)
    x0 = 0.3 + 0.7 * torch.randn(2048, generator=torch.Generator().manual_seed(1))
    sig = schedule(4)
    err = {}
    for n in (0, 30):
        back = reatco.regenerate(den, reatco.invert(den, x0, sig, parametrisation, fixed_point=n)[0], sig,
                                 parametrisation)
        err[n] = ((back - x0).norm() / x0.norm()).item()
    assert err[30] < 0.02 and err[30] < 0.1 * err[0], err


@pytest.mark.parametrize("parametrisation", ["flow", "ve"])
def test_ddim_step_with_the_same_estimate_is_reversible(parametrisation):
    x, d = torch.randn(2, 7), torch.randn(2, 7)
    up = reatco.ddim_step(x, d, 0.3, 0.7, parametrisation)
    assert torch.allclose(reatco.ddim_step(up, d, 0.7, 0.3, parametrisation), x, atol=1e-5)
    assert torch.equal(reatco.ddim_step(x, d, 0.3, 0.0, parametrisation), d)   # s' = 0: the estimate


def test_invert_rejects_a_rising_schedule():
    with pytest.raises(ValueError, match="decreasing"):
        reatco.invert(lambda x, s: x, torch.zeros(2), [0.0, 1.0], "flow")
    with pytest.raises(ValueError, match="parametrisation"):
        reatco.invert(lambda x, s: x, torch.zeros(2), [1.0, 0.0], "eps")


def test_topk_mean_on_hand_made_values():
    v = torch.tensor([[0.9, 0.1, 0.8, 0.0, 0.5, 0.2, 0.3, 0.4, 0.6, 0.7]])
    m = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    # inside: 5 cells, K = ceil(1.0) = 1 -> 0.9; outside: K = 1 -> 0.7
    assert reatco.topk_mean(v, m).item() == pytest.approx(0.9)
    assert reatco.topk_mean(v, 1 - m).item() == pytest.approx(0.7)
    # 40 %: K = 2 -> (0.9 + 0.8) / 2
    assert reatco.topk_mean(v, m, 0.4).item() == pytest.approx(0.85)
    assert reatco.topk_mean(v, torch.zeros_like(m)).item() == 0.0


def test_rad_loss_values():
    # One object, two frames of 2x5 tokens; region = left column pair.
    mask = torch.zeros(1, 2, 2, 5)
    mask[..., :2] = 1                                   # 4 tokens inside, 6 outside per frame
    maps = torch.zeros(1, 2, 2, 5)
    maps[0, 0, :, :2] = 1.0                              # frame 0: perfect
    maps[0, 1, :, 3:] = 0.5                              # frame 1: all attention outside
    loss, fg = reatco.rad_loss(maps, mask)
    # frame 0: FG = 1 (K=1), BG = 0 -> 0. frame 1: FG = 0 -> 1, BG = top ceil(1.2)=2 of 0.5 -> 0.5.
    assert loss.item() == pytest.approx((0.0 + 1.5) / 2)
    assert fg.tolist() == pytest.approx([1.0])
    # An object absent from a frame contributes nothing there.
    mask[0, 1] = 0
    loss, fg = reatco.rad_loss(maps, mask)
    assert loss.item() == pytest.approx(0.0)


def test_rad_loss_gradient_pulls_attention_into_the_region():
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss, _ = reatco.rad_loss(torch.sigmoid(logits), mask)
    (g,) = torch.autograd.grad(loss, logits)
    assert (g[mask.bool()] <= 0).all() and g[mask.bool()].sum() < 0    # descent raises inside
    assert (g[~mask.bool()] >= 0).all() and g[~mask.bool()].sum() > 0  # and lowers outside


def test_word_maps_resoftmax_and_objects():
    # 2 frames x 1 x 2 tokens, text keys: [sos, red, circle, pad]; words are positions 1 and 2.
    probs = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.1, 0.0, 0.9, 0.0], [0.5, 0.25, 0.25, 0.0], [0.0, 0.5, 0.5, 0.0]])
    maps = reatco.word_maps(probs, [1, 2], [[2], [1, 2]], (2, 1, 2), temperature=1.0, smooth=False)
    assert maps.shape == (2, 2, 1, 2)
    expect = torch.softmax(probs[:, [1, 2]], -1)[:, 1].reshape(2, 1, 2)
    assert torch.allclose(maps[0], expect)
    assert torch.allclose(maps[1], torch.full((2, 1, 2), 0.5))       # mean of two words summing to 1
    with pytest.raises(ValueError, match="not among"):
        reatco.word_maps(probs, [1], [[2]], (2, 1, 2))


def test_place_maps_compare_places_not_words():
    # Two words with the same map (a contextual encoder): the word re-softmax says 0.5 everywhere,
    # the place map keeps where they point. 2 frames x 1 x 2 tokens, keys [sos, blue, square].
    probs = torch.tensor([[0.2, 0.4, 0.4], [0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.0, 0.5, 0.5]])
    words = reatco.word_maps(probs, [1, 2], [[1, 2]], (2, 1, 2), smooth=False)
    assert torch.allclose(words, torch.full((1, 2, 1, 2), 0.5))
    places = reatco.word_maps(probs, [1, 2], [[1, 2]], (2, 1, 2), smooth=False, normalise="places")
    # per frame: the words' mean probability over that frame's maximum
    assert torch.allclose(places[0, 0, 0], torch.tensor([1.0, 0.25]))
    assert torch.allclose(places[0, 1, 0], torch.tensor([0.4, 1.0]))
    with pytest.raises(ValueError, match="normalise"):
        reatco.word_maps(probs, [1, 2], [[1]], (2, 1, 2), normalise="pixels")


def test_gaussian_smooth_keeps_constants_and_spreads_peaks():
    x = torch.ones(1, 3, 4, 4)
    assert torch.allclose(reatco.gaussian_smooth(x), x)
    p = torch.zeros(1, 3, 5, 5)
    p[0, 1, 2, 2] = 1
    s = reatco.gaussian_smooth(p)
    assert s.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert s[0, 1, 2, 2] < 1 and s[0, 0, 2, 2] > 0 and s[0, 1, 2, 3] > 0


def test_step_sizes_and_vp_gain():
    a = reatco.rad_step_sizes(50)
    assert a[0] == pytest.approx(20.0) and a[-1] == pytest.approx(20 * math.sqrt(0.5))
    assert reatco.vp_gain(0.5, "flow") == pytest.approx(0.5)
    assert reatco.vp_gain(2.0, "ve") == pytest.approx(5.0)
    assert reatco.refinement_target(0, 50) == pytest.approx(0.95)
    assert reatco.refinement_target(10, 50) == pytest.approx(0.5)
    assert reatco.refinement_target(4, 20) == pytest.approx(0.5)
    assert reatco.refinement_target(3, 50) is None


def test_irjs_blend_and_renoise():
    x0 = torch.randn(1, 2, 3, 4, 4)
    noise = torch.randn_like(x0)
    assert torch.equal(reatco.renoise(x0, 0.0, noise, "flow"), x0)
    assert torch.allclose(reatco.renoise(x0, 1.0, noise, "flow"), noise)
    assert torch.allclose(reatco.renoise(x0, 2.0, noise, "ve"), x0 + 2 * noise)
    region = torch.zeros(1, 1, 3, 4, 4)
    region[..., 1:3, 1:3] = 1
    edit = torch.randn_like(x0)
    out = reatco.irjs_blend(edit, x0, region)
    inside = region.expand_as(x0).bool()
    assert torch.equal(out[inside], edit[inside]) and torch.equal(out[~inside], x0[~inside])
