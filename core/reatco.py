"""ReAtCo (paper 001): edit the regions of a source video, keep the rest.

Three parts, each a plain function of tensors so it reads next to the paper (and
/work/shared/reference/METHODS.md section 2):

1. **Inversion** (``invert``): the source latent is walked *up* the sampling schedule with the
   model's own deterministic DDIM / flow-Euler step, giving the latent the edit starts from and the
   whole trajectory.
2. **RAD** (re-attentional diffusion, ``rad_loss`` + ``rad_step_size``): before a step, the
   latent moves against the gradient of a loss on the subject tokens' cross-attention maps --
   each object's word must attend strongly inside its region (top-K 20 % of the region) and weakly
   outside it (top-K 20 % of the outside), per frame.
3. **IRJS** (invariant-region joint sampling, ``renoise`` + ``irjs_blend``): at every step the
   source latent is re-noised to the current noise level with fresh noise, and everything outside
   the regions is taken from it.

Parametrisations. ComfyUI samples every model in "sigma space": ``x = a(s) * x0 + s * noise`` with
``a(s) = 1`` for epsilon / v-prediction models ("ve": k-diffusion's variance-exploding form of
DDPM) and ``a(s) = 1 - s`` for flow models ("flow": Wan, HunyuanVideo, LTX-Video). In both, the
deterministic DDIM step (eta = 0) is: predict x0 (the denoiser's output D) and the noise
``eps = (x - a(s) D) / s``, then recombine them at the next level. That one formula (``ddim_step``)
is DDIM for epsilon models and the Euler step of the rectified-flow ODE for flow models.

The denoiser is any callable ``denoise(x, sigma) -> x0 estimate`` (in ComfyUI: the CFG output).
Nothing here imports ComfyUI.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

PARAMETRISATIONS = ("flow", "ve")

# Reference defaults (ReAtCo / Attend-and-Excite code).
TOPK_FRACTION = 0.2          # K = 20 % of the region (inside) / of the rest (outside)
STEP_SCALE = 20.0            # a_i = 20 * sqrt(s_i)
STEP_DECAY = (1.0, 0.5)      # s = linspace(1.0, 0.5, steps)
TEMPERATURE = 100.0          # maps: softmax over the prompt's words of 100 x attention probabilities
# Extra refinement iterations at steps 0 / 10 / 20 of 50 while the worst object's foreground loss
# is above 1 - threshold (Attend-and-Excite's thresholds {0: 0.05, 10: 0.5, 20: 0.8}).
REFINE_AT = ((0.0, 0.05), (0.2, 0.5), (0.4, 0.8))
MAX_REFINE = 20

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


# --- the noise model ------------------------------------------------------------------------------

def _check(parametrisation: str) -> None:
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}")


def signal_scale(sigma: float, parametrisation: str) -> float:
    """a(s): how much of x0 a latent at noise level s holds."""
    _check(parametrisation)
    return 1.0 - float(sigma) if parametrisation == "flow" else 1.0


def renoise(x0: torch.Tensor, sigma: float, noise: torch.Tensor, parametrisation: str) -> torch.Tensor:
    """The source at noise level ``sigma``: a(s) x0 + s noise (IRJS re-noises with fresh noise each step)."""
    return signal_scale(sigma, parametrisation) * x0 + float(sigma) * noise


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float,
              parametrisation: str) -> torch.Tensor:
    """Deterministic DDIM (eta 0) / flow Euler step from ``sigma`` to ``sigma_next`` (either way)."""
    sigma, sigma_next = float(sigma), float(sigma_next)
    if sigma <= 0.0:
        raise ValueError("ddim_step: the current noise level must be > 0")
    eps = (x - signal_scale(sigma, parametrisation) * denoised) / sigma
    return signal_scale(sigma_next, parametrisation) * denoised + sigma_next * eps


# --- 1. inversion ---------------------------------------------------------------------------------

@torch.no_grad()
def invert(denoise: Denoiser, x0: torch.Tensor, sigmas: Sequence[float] | torch.Tensor, parametrisation: str,
           on_step: Callable[[int, torch.Tensor], None] | None = None, fixed_point: int = 0) -> list[torch.Tensor]:
    """DDIM inversion of the clean latent ``x0`` along the sampling schedule ``sigmas`` (descending,
    usually ending in 0). Returns the trajectory ``traj`` with ``traj[i]`` at ``sigmas[i]``:
    ``traj[-1] is x0`` and ``traj[0]`` is where regeneration / editing starts.

    Each step goes from level s up to s' > s as Tune-A-Video's ``ddim_inversion`` does (the code
    ReAtCo uses): the model is asked at the *target* level s' about the current latent, its noise
    estimate ``eps = (x - a(s') D) / s'`` is taken as the latent's noise, and the latent is
    recombined at s': ``x' = a(s') x0_hat + s' eps`` with ``x0_hat = (x - s eps) / a(s)``. At s = 0
    this needs no division by zero (unlike evaluating at s), so clean latents invert in both
    parametrisations.

    ``fixed_point`` > 0 refines each step (ReNoise-style, not in ReAtCo): the model is re-asked at
    the new latent x' and x' re-solved from ``ddim_step(x', D(x', s'), s', s) = x``, so a fixed
    point is the exact inverse of the regeneration step; with few steps and a model that is poor on clean inputs at high noise levels, the plain
    estimate drifts far from that. Each iteration costs one model evaluation per step."""
    _check(parametrisation)
    s = [float(v) for v in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    if len(s) < 2 or any(b >= a for a, b in itertools.pairwise(s)):
        raise ValueError(f"invert: sigmas must be strictly decreasing with at least 2 entries, got {s}")
    traj = [x0]
    x = x0
    for n, i in enumerate(range(len(s) - 1, 0, -1)):   # from sigmas[-1] up to sigmas[0]
        cur, nxt = s[i], s[i - 1]
        d = denoise(x, nxt)
        a_next = signal_scale(nxt, parametrisation)
        eps = (x - a_next * d) / nxt
        a_cur = signal_scale(cur, parametrisation)
        x_new = a_next * (x - cur * eps) / a_cur + nxt * eps
        for _ in range(fixed_point):
            d = denoise(x_new, nxt)
            if parametrisation == "flow" and cur > 0:
                # Solve ddim_step(x', d, s', s) = x for x' with d held (at s' = 1 the form below
                # would be the identity: x' = eps(x', 1) for any x').
                x_new = a_next * d + nxt * (x - a_cur * d) / cur
            else:
                # Re-take the noise estimate at x' (contracts for the wide VE level ratios).
                eps = (x_new - a_next * d) / nxt
                x_new = a_next * (x - cur * eps) / a_cur + nxt * eps
        x = x_new
        traj.append(x)
        if on_step is not None:
            on_step(n, x)
    return traj[::-1]


@torch.no_grad()
def regenerate(denoise: Denoiser, x: torch.Tensor, sigmas: Sequence[float] | torch.Tensor,
               parametrisation: str) -> torch.Tensor:
    """Plain deterministic sampling (DDIM / flow Euler) from ``x`` at ``sigmas[0]``: the inverse of
    ``invert``, used to measure how well an inversion reconstructs its source."""
    s = [float(v) for v in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    for cur, nxt in itertools.pairwise(s):
        x = ddim_step(x, denoise(x, cur), cur, nxt, parametrisation)
    return x


# --- 2. RAD ---------------------------------------------------------------------------------------

MAP_NORMALISATIONS = ("places", "words")


def word_maps(probs: torch.Tensor, words: Sequence[int], objects: Sequence[Sequence[int]],
              grid: tuple[int, int, int], temperature: float = TEMPERATURE, smooth: bool = True,
              normalise: str = "words") -> torch.Tensor:
    """Cross-attention maps of each object's words, as RAD's loss reads them.

    ``normalise="words"`` is ReAtCo's form (below). ``"places"``: each object's map is the mean
    attention probability of its own words, scaled to 1 at each frame's maximum -- a map that
    compares places rather than words. ReAtCo's re-softmax assumes words carry different meanings;
    where the text encoder mixes a phrase into every one of its tokens (contextual encoders; the toy
    world's, by construction) it compares near-equal columns and says "no location" even where the
    raw maps locate the object sharply (``python -m bench.cross_attention``).

    ``probs``: [N, T] attention probabilities of the N video tokens (model order, ``grid`` =
    (frames, height, width) row-major) over the T text keys, averaged over heads and blocks.
    ``words``: the prompt's word positions (no start / end / padding tokens: the reference drops
    SOS and padding before its re-softmax). ``objects``: per object, its subject token positions
    (a subset of ``words``). As in the reference, the word columns are re-normalised by a softmax
    of ``temperature`` x probabilities (so a map says "this token is about *this* word rather than
    the others"), optionally smoothed by a 3x3x3 Gaussian (sigma 0.5) over (frame, y, x), and an
    object's map is the mean of its words' maps. Returns [K, F, H, W]."""
    if normalise not in MAP_NORMALISATIONS:
        raise ValueError(f"normalise must be one of {MAP_NORMALISATIONS}, got {normalise!r}")
    words = list(words)
    col = {p: i for i, p in enumerate(words)}
    missing = [p for obj in objects for p in obj if p not in col]
    if missing:
        raise ValueError(f"subject token positions {missing} are not among the prompt's words {words}")
    if normalise == "places":
        m = torch.stack([probs[:, list(obj)].float().mean(-1) for obj in objects])   # [K, N]
        m = m.reshape(len(objects), *grid)
        if smooth:
            m = gaussian_smooth(m)
        return m / m.flatten(2).amax(-1).clamp(min=1e-12)[..., None, None]
    a = torch.softmax(probs[:, words].float() * temperature, dim=-1)          # [N, W]
    a = a.T.reshape(len(words), *grid)                                          # [W, F, H, W]
    if smooth:
        a = gaussian_smooth(a)
    return torch.stack([a[[col[p] for p in obj]].mean(0) for obj in objects])


def gaussian_smooth(maps: torch.Tensor, kernel: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """[C, F, H, W] -> same, each channel smoothed by a separable 3-D Gaussian (replicate padding)."""
    r = kernel // 2
    g = torch.exp(-(torch.arange(kernel, dtype=maps.dtype, device=maps.device) - r) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    x = maps[:, None]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = kernel
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = r
        x = F.conv3d(F.pad(x, pad, mode="replicate"), g.reshape(shape))
    return x[:, 0]


def topk_mean(values: torch.Tensor, mask: torch.Tensor, fraction: float = TOPK_FRACTION) -> torch.Tensor:
    """Per row of [R, M]: mean of the top K of ``values * mask`` with K = ceil(fraction * |mask|)
    (at least 1); rows with an empty mask give 0."""
    masked = values * mask
    count = mask.sum(-1)
    k = torch.clamp(torch.ceil(fraction * count - 1e-6), min=1).long()
    top = masked.sort(dim=-1, descending=True).values
    keep = torch.arange(values.shape[-1], device=values.device)[None] < k[:, None]
    out = (top * keep).sum(-1) / k
    return torch.where(count > 0, out, torch.zeros_like(out))


def rad_loss(maps: torch.Tensor, masks: torch.Tensor, fraction: float = TOPK_FRACTION):
    """RAD's loss on object maps [K, F, H, W] and region masks [K, F, H, W] (bool / 0-1, token grid).

    Per object k and frame f where the object is visible: FG = mean(topK(A * M)), K = 20 % of |M|;
    BG = mean(topK(A * (1 - M))), K = 20 % of |1 - M|. The loss is
    ``sum_k mean_f [max(0, 1 - FG) + max(0, BG)]`` -- the reference sums its per-frame terms over
    a fixed 16-frame clip; averaging over the visible frames keeps the step size independent of
    the clip's length. Returns (loss, per-object worst foreground loss max_f(1 - FG) [K], detached)."""
    k = maps.shape[0]
    m = masks.to(maps.dtype).reshape(k * maps.shape[1], -1)
    a = maps.reshape(k * maps.shape[1], -1)
    visible = m.sum(-1) > 0
    fg = topk_mean(a, m, fraction)
    bg = topk_mean(a, 1.0 - m, fraction)
    term = (torch.relu(1.0 - fg) + torch.relu(bg)) * visible
    frames = visible.reshape(k, -1).sum(-1).clamp(min=1)
    loss = (term.reshape(k, -1).sum(-1) / frames).sum()
    fg_loss = torch.where(visible, 1.0 - fg, torch.zeros_like(fg)).reshape(k, -1).amax(-1)
    return loss, fg_loss.detach()


def rad_step_sizes(steps: int, scale: float = STEP_SCALE, decay: tuple = STEP_DECAY) -> list[float]:
    """a_i = scale * sqrt(s_i), s = linspace(decay[0], decay[1], steps) (reference: 20, 1.0 -> 0.5)."""
    return [scale * math.sqrt(v) for v in torch.linspace(decay[0], decay[1], max(1, steps)).tolist()]


def vp_gain(sigma: float, parametrisation: str) -> float:
    """Rescales a gradient step made for the reference's unit-variance (DDPM "VP") latents to the
    latent ComfyUI samples. The VP latent is ``x / c`` with ``c = sqrt(a(s)^2 + s^2)``
    (sqrt(1 + sigma^2) for epsilon models, sqrt((1-s)^2 + s^2) for flow); a VP step
    ``-a grad_vp L`` is ``-a c^2 grad_x L`` in x. So RAD moves the same amount relative to the
    latent's noise scale, whichever way the model is parametrised."""
    a = signal_scale(sigma, parametrisation)
    return a * a + float(sigma) ** 2


def rad_update(x: torch.Tensor, grad: torch.Tensor, step: float, sigma: float, parametrisation: str) -> torch.Tensor:
    """z <- z - a_i grad (in the VP scale, see ``vp_gain``)."""
    return x - step * vp_gain(sigma, parametrisation) * grad


def refinement_target(step: int, steps: int) -> float | None:
    """The foreground loss to refine down to before step ``step`` of ``steps`` (None: no
    refinement). The reference's steps 0 / 10 / 20 of 50 scale with the step count."""
    for frac, threshold in REFINE_AT:
        if step == round(frac * steps):
            return 1.0 - threshold
    return None


# --- 3. IRJS --------------------------------------------------------------------------------------

def irjs_blend(x: torch.Tensor, source_noised: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """z = M z + (1 - M) source_t: the regions from the edit, the rest from the re-noised source.
    ``region`` broadcasts against the latent (e.g. [1, 1, T, H, W])."""
    region = region.to(x.dtype)
    return region * x + (1.0 - region) * source_noised
