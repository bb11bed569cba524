"""Temporal intrinsic denoising (domain-adaptation paper, arXiv 2505.24253, §"temporal intrinsic
denoising"): before a sampler step, refine the latent with the model's own score plus the gradient
of a temporal prior that rewards each object's box content for agreeing between adjacent frames.
This closes the *initialisation gap*: random starting noise does not agree with the boxes.

Plain torch; never imports comfy. The model enters only as a callable ``denoise(x, sigma) -> x0_hat``
(the CFG-combined denoised prediction in the sampler's space), so this runs in ComfyUI, a script or
a diffusers pipeline alike. Every choice the paper leaves open is made here and said why.

The iteration
-------------
Paper (no public code)::

    z <- z + eta_l * (score(z) + c_g * grad tau(z)) + eta_k * noise,      M times before a step

Ours, with step sizes *relative to the noise level* (``b`` = the noise scale of the current
marginal, see "Score"; ``xi ~ N(0, I)``)::

    z <- z + eta_l * b^2 * (score(z) + c_g * g(z)) + eta_k * sqrt(2 * eta_l) * b * xi

* ``eta_l * b^2`` is the Langevin step. A fixed absolute step is meaningless across a schedule
  (the score grows like 1/b^2: 1/14.6^2 .. 1/0.03^2 for SD-style EPS models, 1 .. 1/0.001^2 for flow
  models), so the step is a fraction of b^2, exactly as annealed Langevin dynamics sets it
  (Song & Ermon 2019, alpha_i proportional to sigma_i^2). Then ``eta_l * b^2 * score =
  eta_l * (a * x0_hat - z)``: each iteration moves z the fraction eta_l of the way towards the
  model's denoised mean. Default eta_l = 0.05, reading the paper's gamma = 0.05 as this step
  (*unverified*: the paper's z lives in a VP space; there gamma would be an absolute step, which on
  a VP latent of unit variance is roughly this relative one).
* ``eta_k = 1`` makes the iteration the unadjusted Langevin algorithm for p_sigma (step
  eps = eta_l b^2, noise sqrt(2 eps)): with the exact score it keeps z on the noise level sigma the
  next step expects. ``eta_k = 0`` is deterministic but shrinks the noise part of z by (1 - eta_l)
  per iteration, i.e. hands the next step a latent that is less noisy than its sigma says.
  Default 1. The literal paper form is recovered by eta_l(paper) = eta_l b^2,
  eta_k(paper) = eta_k sqrt(2 eta_l) b (:func:`langevin_step_sizes`).
* Each iteration costs one model evaluation (the score); the sampler step after it costs its own.
  M iterations before each refined step: M + 1 evaluations for that step. Exception: a flow model
  at sigma = 1 (the first step of its usual schedules) has a = 0, the marginal is N(0, I) whatever
  the data and the score is exactly -x: the model is not asked, and the iteration is Langevin on
  pure noise plus the prior -- the purest form of "make the starting noise agree with the boxes".

Score (derived from ComfyUI 0.3.75 ``comfy/model_sampling.py``; verified in the tests)
-------------------------------------------------------------------------------------
ComfyUI's samplers integrate ``x`` in the space fixed by ``model_sampling.noise_scaling``:
``x = a(sigma) * x0 + b(sigma) * eps`` with

* ``"ve"`` -- EPS, V_PREDICTION, EDM, X0, COSMOS_RFLOW (``noise * sigma + latent``): a = 1, b = sigma.
  ``p_sigma(x | x0) = N(x0, sigma^2 I)``; Tweedie, ``E[x0 | x] = x + sigma^2 grad log p_sigma(x)``:
  **score = (x0_hat - x) / sigma^2**.
* ``"flow"`` -- CONST (rectified flow: Wan 2.x, HunyuanVideo, LTX-Video, SD3, Flux;
  ``sigma * noise + (1 - sigma) * latent``): a = 1 - sigma, b = sigma.
  ``p_sigma(x | x0) = N((1 - sigma) x0, sigma^2 I)``; Tweedie on y = (1 - sigma) x0:
  **score = ((1 - sigma) x0_hat - x) / sigma^2**. With ComfyUI's ``x0_hat = x - sigma * v``
  (``CONST.calculate_denoised``) and v = eps - x0 this is ``-eps_hat / sigma``, as it must be.

In both, score = -eps_hat / b with eps_hat = (x - a x0_hat) / b. ``x0_hat`` is the denoised output
*after* classifier-free guidance; since the score is affine in x0_hat with the same coefficients for
cond and uncond, the CFG-combined x0_hat gives exactly the CFG-combined score
s_u + w (s_c - s_u), which is what the paper's "score from the CFG output" means.

The temporal prior tau
----------------------
tau = mean, over objects k and adjacent latent frames (t, t+1) where k is visible in both, of the
Pearson correlation between k's box content at t and at t+1.

* **Box content.** Each object's box on each latent frame is resampled to one common size per
  object with bilinear ``grid_sample`` (differentiable in z; sample points at the centres of an
  h x w grid inside the box). Boxes move and change size, so crops of one size are what makes
  "the same part of the object" comparable across frames. The size is the object's mean box size
  in latent pixels over its visible latent frames (rounded, at least 2 x 2, at most the latent):
  so one crop sample ~ one latent pixel, as the paper's "foreground pixels" are.
* **Pearson.** Over all C x h x w crop values, after removing each channel's mean over the crop
  (latent channels have different offsets; a global mean would score a channel offset present in
  both frames as correlation, and its gradient would push channel means around).
  r = <a, b> / sqrt((|a|^2 + e)(|b|^2 + e)), e = 1e-12 * N (a guard for constant crops only).
* **Latent frames.** A latent frame aggregates several pixel frames (``core.token_layout``: Wan /
  Hunyuan 4x, LTX 8x, first frame alone). Its box is the *mean* box over those of its pixel frames
  where the object is visible: the latent stores the chunk's content at (roughly) its mean position
  and at the object's own size, so crops at mean boxes align content across frames. (The union box
  would grow with speed and mix in background, and resampling it to the common size would change
  the object's scale from frame to frame.) An object counts as visible on a latent frame when it is
  visible on at least half of that frame's pixel frames. Pixel frames the VAE drops are ignored; a
  trajectory with a frame count that does not give the latent's frame count is stretched over time
  (nearest frame), as ``token_layout`` stretches masks. Pairs with an invisible end are left out;
  an object with no visible pair contributes nothing; with no pair at all tau = 0 and the prior's
  gradient is 0.
* **On z, not on x0_hat.** (1) The gap to close is the *noise's* disagreement with the boxes:
  raising tau(z) at high noise makes the noise inside each box agree along the path (what FreeTraj
  does by copying a noise patch), and Pearson is scale-invariant, so at low noise tau(z) ~ tau of
  the content. (2) grad tau(z) is an autograd over the crops only: for a Wan 2.1 480 x 832 x 81
  latent [1, 16, 21, 60, 104] with two objects, 0.7-1 s on two shared CPU cores (element-wise
  work on ~1 M crop values; milliseconds on a GPU), against one Wan-1.3B evaluation of ~85 TFLOP.
  grad_z tau(x0_hat(z)) needs a vector-Jacobian product through the whole denoiser every
  iteration. Measured on two Wan-1.3B-width blocks (ComfyUI's WanModel, dim 1536, 520 tokens, CPU):
  forward + backward = 1.4-2.6x a no-grad forward (noisy shared CPU; ~2x expected), and the
  forward must keep ~95 KiB of activations per block per token (fp32, excluding attention
  scores), i.e. ~44 GiB in bf16 for Wan 2.1-1.3B at 480 x 832 x 81 (30 blocks, 32760 tokens) and
  ~450 GiB for Wan 14B at 720p without checkpointing -- under ComfyUI's inference mode, through
  offloaded / quantised weights and attention kernels that may have no backward. So the exact
  gradient of tau(x0_hat(z)) is not offered.
* **Or on x0_hat, without the Jacobian** (``prior_on="x0_hat"``, an option measured against
  the above in ``bench/quality.py``): tau of the model's own denoised estimate, its gradient taken
  with respect to x0_hat and applied to z as if dx0_hat/dz were the identity (for a flow model
  x0_hat = z - sigma v: exact when v does not change with z). No backward through the model, so
  it costs what tau(z) costs; it pushes the *content* the model is about to draw to agree along
  the boxes, where tau(z) at high noise pushes mostly noise. At a flow model's sigma = 1 the model
  is then evaluated (its x0_hat there is the layout it would draw) -- one more evaluation.
* **Gradient scale** (``gradient_scale``). The paper reports that *normalised* gradients (unit-norm
  directions) cause spatio-temporal artefacts and uses unnormalised ones; both options here keep the
  magnitude information (the Pearson gradient has norm sqrt(1 - r^2) / |a|, vanishing as r -> 1):

  - ``"raw"``: g = grad tau, the paper's. Its size per latent element is ~ 1 / (P * N * std(z)) for
    P valid pairs and N = C h w crop elements, so a given c_g acts more on small boxes, on models
    with fewer latent channels and on short videos. The paper's c_g = 10000 is of this kind.
  - ``"per_element"`` (default): g = grad sum_{k,t} N_k r_{k,t}. Each element's push is then
    ~ c_g / std(z), independent of box size, channel count (16 Wan 2.1, 48 Wan 2.2 5B, 128 LTX) and
    video length; with the b^2 step it is ~ c_g times the score's push at high noise. c_g ~ 1: the
    prior as strong as the model's own score (measured on the tiny Wan model, inside the boxes:
    RMS prior push / RMS score push = 1.18 at sigma 1, 1.0 at 0.89, 0.43 at 0.62 -- on a flow
    model it falls with sigma as the latent's spread stops being b). (Roughly, paper c_g = 10000 on ZeroScope, N ~ 3000,
    P = 23, corresponds to c_g ~ 0.15 here; *unverified*, the paper's step convention is unknown.)

Base samplers
-------------
:func:`sample` runs Euler in ComfyUI's k-diffusion form (``comfy.k_diffusion.sampling.
sample_euler`` with s_churn = 0, op for op, so that with refinement off it reproduces it bit for
bit). ComfyUI's "ddim" sampler *is* this Euler (``sampler_object("ddim")`` = ``ksampler("euler",
inpaint_options={"random": True})``): Euler on x = x0 + sigma eps is DDIM with eta = 0, and on the
flow marginal it is flow-DDIM. The two differ only in how inpainting noise is drawn, which the
ComfyUI adapter passes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import token_layout

PARAMETRISATIONS = ("ve", "flow")
PRIOR_TARGETS = ("z", "x0_hat")
GRADIENT_SCALES = ("per_element", "raw")
PRIOR_KINDS = ("temporal", "temporal_contrast")   # the paper's tau; tau minus tau against displaced boxes
MIN_CROP = 2

# x -> x0_hat at noise level sigma (a 0-d tensor or float), in the sampler's space.
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- score --------------------------------------------------------------------------------------

def marginal_coefficients(sigma, parametrisation: str) -> tuple[float, float]:
    """(a, b) of the marginal x = a * x0 + b * eps at noise level ``sigma`` (see the docstring)."""
    s = float(sigma)
    if parametrisation == "ve":
        return 1.0, s
    if parametrisation == "flow":
        return 1.0 - s, s
    raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}")


def score_from_denoised(x: torch.Tensor, denoised: torch.Tensor, sigma, parametrisation: str) -> torch.Tensor:
    """grad_x log p_sigma(x) from the (CFG) denoised prediction: (a * x0_hat - x) / b^2."""
    a, b = marginal_coefficients(sigma, parametrisation)
    if b <= 0:
        raise ValueError(f"the score is undefined at sigma = {float(sigma)}")
    return (a * denoised - x) / (b * b)


def langevin_step_sizes(sigma, parametrisation: str, eta_l: float, eta_k: float) -> tuple[float, float]:
    """The absolute (step, noise std) of one iteration for the relative ``eta_l``, ``eta_k``:
    (eta_l * b^2, eta_k * sqrt(2 eta_l) * b)."""
    if eta_l < 0 or eta_k < 0:
        raise ValueError(f"eta_l and eta_k must be >= 0, got {eta_l}, {eta_k}")
    _, b = marginal_coefficients(sigma, parametrisation)
    return eta_l * b * b, eta_k * math.sqrt(2.0 * eta_l) * b


# --- boxes on latent frames --------------------------------------------------------------------

def _pixel_groups(n_pixel: int, n_latent: int, layout) -> list[list[int]]:
    """For each latent frame, the pixel frames (indices into the trajectory) it stands for."""
    if layout is None:  # unknown model: spread the trajectory evenly over the latent frames
        groups = []
        for t in range(n_latent):
            lo = min(n_pixel - 1, (t * n_pixel) // n_latent)
            hi = max(lo + 1, ((t + 1) * n_pixel) // n_latent)
            groups.append(list(range(lo, min(hi, n_pixel))))
        return groups
    lay = token_layout.get_layout(layout)
    if token_layout.latent_frames(lay, n_pixel) == n_latent:
        index = list(range(n_pixel))
    else:  # made for another length: stretch over the frames this latent represents (nearest)
        p = token_layout.pixel_frames_for(lay, n_latent)
        index = torch.linspace(0, n_pixel - 1, p).round().long().tolist()
    return [[index[f] for f in token_layout.pixel_frames_of_latent(lay, t)] for t in range(n_latent)]


def latent_frame_boxes(boxes: torch.Tensor, visible: torch.Tensor, n_latent: int, layout=None,
                       min_visible: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-frame boxes ``[K, F, 4]`` (normalised x0, y0, x1, y1) and visibility ``[K, F]`` ->
    latent-frame boxes ``[K, T, 4]`` (mean over the visible pixel frames of each latent frame) and
    visibility ``[K, T]`` (visible on at least ``min_visible`` of them). ``layout``: a
    ``token_layout`` family name or None (unknown model: frames spread evenly)."""
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or visible.shape != boxes.shape[:2]:
        raise ValueError(f"boxes must be [objects, frames, 4] with visible [objects, frames], got "
                         f"{tuple(boxes.shape)} and {tuple(visible.shape)}")
    k, f, _ = boxes.shape
    dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    boxes = boxes.to(torch.float64)
    vis = visible.to(torch.float64)
    out_b = boxes.new_zeros(k, n_latent, 4)
    out_v = torch.zeros(k, n_latent, dtype=torch.bool)
    if f == 0 or k == 0:
        return out_b.to(dtype), out_v
    for t, idx in enumerate(_pixel_groups(f, n_latent, layout)):
        v = vis[:, idx]                                           # [K, n]
        count = v.sum(1)
        out_b[:, t] = (boxes[:, idx] * v[..., None]).sum(1) / count.clamp_min(1)[:, None]
        out_v[:, t] = (count > 0) & (count >= min_visible * len(idx) - 1e-9)
    return out_b.to(dtype), out_v


def crop_sizes(boxes: torch.Tensor, visible: torch.Tensor, height: int, width: int) -> tuple:
    """Per object (h, w): its mean box size in latent pixels over its visible latent frames,
    rounded, clamped to [2, latent size]; None for an object never visible."""
    sizes = []
    for k in range(boxes.shape[0]):
        v = visible[k]
        if not bool(v.any()):
            sizes.append(None)
            continue
        bh = float((boxes[k, v, 3] - boxes[k, v, 1]).mean()) * height
        bw = float((boxes[k, v, 2] - boxes[k, v, 0]).mean()) * width
        sizes.append((max(MIN_CROP, min(height, round(bh))), max(MIN_CROP, min(width, round(bw)))))
    return tuple(sizes)


def box_grid(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` grid ``[T, h, w, 2]`` sampling an h x w grid of cell centres inside each box
    ``[T, 4]`` (normalised, align_corners=False: -1 and 1 are the outer edges of the latent)."""
    h, w = size
    ys = (torch.arange(h, dtype=boxes.dtype, device=boxes.device) + 0.5) / h
    xs = (torch.arange(w, dtype=boxes.dtype, device=boxes.device) + 0.5) / w
    x0, y0, x1, y1 = boxes.unbind(-1)
    gx = x0[:, None] + xs[None, :] * (x1 - x0)[:, None]        # [T, w]
    gy = y0[:, None] + ys[None, :] * (y1 - y0)[:, None]        # [T, h]
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return grid * 2 - 1


def box_crops(video: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear crops ``[B, T, C, h, w]`` of ``video`` ``[B, C, T, H, W]`` at one object's boxes
    ``[T, 4]`` (differentiable in ``video``)."""
    b, c, t, hh, ww = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, hh, ww)
    grid = box_grid(boxes.to(device=video.device, dtype=video.dtype), size)
    grid = grid.unsqueeze(0).expand(b, -1, -1, -1, -1).reshape(b * t, *size, 2)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, t, c, *size)


def adjacent_pearson(crops: torch.Tensor) -> torch.Tensor:
    """``[B, T, C, h, w]`` -> ``[B, T-1]``: Pearson r between frames t and t+1, each channel
    centred over the crop, all C*h*w values pooled."""
    a = crops - crops.mean(dim=(-2, -1), keepdim=True)
    a = a.flatten(2)                                             # [B, T, N]
    n = a.shape[-1]
    eps = 1e-12 * n
    sq = (a * a).sum(-1)                                         # [B, T]
    dot = (a[:, :-1] * a[:, 1:]).sum(-1)                         # [B, T-1]
    return dot / torch.sqrt((sq[:, :-1] + eps) * (sq[:, 1:] + eps))


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[..., C, h, w]`` x2 -> ``[...]``: Pearson r of two crops, each channel centred over the crop,
    all C*h*w values pooled (as :func:`adjacent_pearson`)."""
    a = (a - a.mean(dim=(-2, -1), keepdim=True)).flatten(-3)
    b = (b - b.mean(dim=(-2, -1), keepdim=True)).flatten(-3)
    eps = 1e-12 * a.shape[-1]
    return (a * b).sum(-1) / torch.sqrt(((a * a).sum(-1) + eps) * ((b * b).sum(-1) + eps))


# One box width / height left, right, up, down: where the object must *not* have gone.
DISPLACEMENTS = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))


def displaced_boxes(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T, 4]`` -> (``[D, T, 4]`` the boxes moved by one box size in each of DISPLACEMENTS,
    ``[D, T]`` bool: the moved box's centre is inside the frame)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    out, ok = [], []
    for dx, dy in DISPLACEMENTS:
        shift = torch.stack([dx * w, dy * h, dx * w, dy * h], -1)
        moved = boxes + shift
        cx, cy = (moved[:, 0] + moved[:, 2]) / 2, (moved[:, 1] + moved[:, 3]) / 2
        out.append(moved)
        ok.append((cx > 0) & (cx < 1) & (cy > 0) & (cy < 1))
    return torch.stack(out), torch.stack(ok)


# --- the prior ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TemporalPrior:
    """tau and its gradient for one latent shape. ``boxes`` ``[K, T, 4]`` and ``visible`` ``[K, T]``
    are per *latent* frame (:func:`latent_frame_boxes`); ``sizes`` per object (:func:`crop_sizes`).
    ``frames_are_batch``: the latent is ``[F, C, H, W]`` with the frames as batch (SVD); otherwise
    ``[B, C, T, H, W]``."""

    boxes: torch.Tensor
    visible: torch.Tensor
    sizes: tuple
    frames_are_batch: bool = False
    gradient_scale: str = "per_element"
    contrast: bool = False

    def __post_init__(self):
        if self.gradient_scale not in GRADIENT_SCALES:
            raise ValueError(f"gradient_scale must be one of {GRADIENT_SCALES}, got {self.gradient_scale!r}")

    @classmethod
    def from_boxes(cls, boxes: torch.Tensor, visible: torch.Tensor, latent_shape: Sequence[int], layout=None,
                   *, frames_are_batch: bool = False, gradient_scale: str = "per_element",
                   min_visible: float = 0.5, contrast: bool = False) -> TemporalPrior:
        """From pixel-frame boxes ``[K, F, 4]`` / visibility ``[K, F]`` for a latent of
        ``latent_shape`` ([B, C, T, H, W], or [F, C, H, W] with ``frames_are_batch``)."""
        shape = tuple(int(s) for s in latent_shape)
        if frames_are_batch:
            if len(shape) != 4:
                raise ValueError(f"a frames-as-batch latent is [F, C, H, W], got {shape}")
            t, h, w = shape[0], shape[2], shape[3]
        else:
            if len(shape) != 5:
                raise ValueError(f"a video latent is [B, C, T, H, W], got {shape}")
            t, h, w = shape[2], shape[3], shape[4]
        lb, lv = latent_frame_boxes(boxes, visible, t, layout, min_visible)
        return cls(lb, lv, crop_sizes(lb, lv, h, w), frames_are_batch, gradient_scale, contrast)

    # The frames-as-batch latent viewed as one video and back.
    def _video(self, z: torch.Tensor) -> torch.Tensor:
        return z.transpose(0, 1).unsqueeze(0) if self.frames_are_batch else z

    def _pairs(self) -> torch.Tensor:
        return self.visible[:, :-1] & self.visible[:, 1:]       # [K, T-1]

    @property
    def num_pairs(self) -> int:
        return int(self._pairs().sum())

    def correlations(self, z: torch.Tensor) -> list:
        """Per object: ``[B, T-1]`` Pearson r of adjacent latent frames (None if never visible);
        with ``contrast``, minus the mean r of the box at t with the boxes one box size away at t+1."""
        video = self._video(z)
        if video.shape[2] != self.boxes.shape[1]:
            raise ValueError(f"prior made for {self.boxes.shape[1]} latent frames, latent has {video.shape[2]}")
        out = []
        for k, size in enumerate(self.sizes):
            if size is None:
                out.append(None)
                continue
            crops = box_crops(video, self.boxes[k], size)
            r = adjacent_pearson(crops)
            if self.contrast:
                r = r - self._away(video, crops, k, size)
            out.append(r)
        return out

    def _away(self, video, crops, k, size) -> torch.Tensor:
        """``[B, T-1]``: mean Pearson r of the box at t with the displaced boxes at t+1 (0 where none
        is inside the frame). Static content -- background, or noise at high sigma -- correlates
        with them as much as with the next box, so only content that follows the box scores."""
        moved, ok = displaced_boxes(self.boxes[k].to(video.dtype))
        total = video.new_zeros(video.shape[0], crops.shape[1] - 1)
        count = video.new_zeros(crops.shape[1] - 1)
        for d in range(moved.shape[0]):
            valid = ok[d, 1:].to(video.device, video.dtype)
            if not bool(valid.any()):
                continue
            away = box_crops(video, moved[d], size)
            total = total + pearson(crops[:, :-1], away[:, 1:]) * valid
            count = count + valid
        return total / count.clamp(min=1)

    def _reduce(self, corr: list, weighted: bool, channels: int, like: torch.Tensor) -> torch.Tensor:
        pairs = self._pairs().to(like.device)
        total = like.new_zeros(self._video(like).shape[0])
        for k, r in enumerate(corr):
            if r is None or not bool(pairs[k].any()):
                continue
            weight = math.prod(self.sizes[k]) * channels if weighted else 1.0
            total = total + weight * (r * pairs[k].to(r.dtype)).sum(-1)
        return total

    def _value_and_objective(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        corr = self.correlations(z)
        channels = self._video(z).shape[1]
        tau = self._reduce(corr, False, channels, z) / max(1, self.num_pairs)
        if self.gradient_scale == "raw":
            return tau, tau
        return tau, self._reduce(corr, True, channels, z)

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """tau ``[B]``: the mean Pearson r over visible adjacent pairs (0 when there is none)."""
        return self._value_and_objective(z)[0]

    def objective(self, z: torch.Tensor) -> torch.Tensor:
        """``[B]``: what the gradient is taken of: tau ("raw") or sum_k N_k sum_t r ("per_element")."""
        return self._value_and_objective(z)[1]

    def gradient(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tau ``[B]``, d objective / dz shaped like ``z``). Autograd over the crops only; works
        under ``torch.inference_mode`` (ComfyUI runs nodes in it) and under ``no_grad``.
        Computed in float32 at least."""
        dtype = torch.promote_types(z.dtype, torch.float32)
        with torch.inference_mode(False), torch.enable_grad():
            zz = z.detach().to(dtype).clone().requires_grad_(True)
            if self.num_pairs == 0:
                return zz.new_zeros(self._video(zz).shape[0]).detach(), torch.zeros_like(z)
            tau, obj = self._value_and_objective(zz)
            (grad,) = torch.autograd.grad(obj.sum(), zz)
        return tau.detach().clone(), grad.to(z.dtype)


# --- the iteration -----------------------------------------------------------------------------

def gaussian_noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) like ``like``; drawn on the CPU in float32 (device-independent for one seed)."""
    return torch.randn(like.shape, generator=generator, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


def intrinsic_refine(x: torch.Tensor, sigma, denoise: Denoise, *, iterations: int, parametrisation: str,
                     prior: TemporalPrior | None = None, c_g: float = 0.0, eta_l: float = 0.05,
                     eta_k: float = 1.0, generator: torch.Generator | None = None,
                     on_eval: Callable[[dict], None] | None = None, prior_on: str = "z") -> torch.Tensor:
    """``iterations`` intrinsic-denoising iterations at noise level ``sigma`` (see the docstring).
    ``on_eval`` gets ``{"x", "denoised", "sigma", "iteration", "tau"}`` after each model evaluation
    (``tau``: the prior on that x, or None when c_g = 0). Where the marginal holds no signal
    (a = 0: a flow model at sigma = 1, where x is pure noise and the score is exactly -x / b^2)
    the model is not evaluated: its prediction would be multiplied by 0 -- unless the prior is on
    x0_hat (``prior_on="x0_hat"``), which needs the prediction itself."""
    if prior_on not in PRIOR_TARGETS:
        raise ValueError(f"prior_on must be one of {PRIOR_TARGETS}, got {prior_on!r}")
    a, _ = marginal_coefficients(sigma, parametrisation)
    step, noise_std = langevin_step_sizes(sigma, parametrisation, eta_l, eta_k)
    with_prior = prior is not None and c_g != 0.0
    needs_model = a != 0.0 or (with_prior and prior_on == "x0_hat")
    for m in range(iterations):
        denoised = denoise(x, sigma) if needs_model else None
        # a = 0: the score is exactly -x / b^2 whatever the model says
        drift = score_from_denoised(x, torch.zeros_like(x) if a == 0.0 else denoised, sigma, parametrisation)
        tau = None
        if with_prior:
            tau, g = prior.gradient(denoised if prior_on == "x0_hat" else x)
            drift = drift + c_g * g
        if on_eval is not None and denoised is not None:
            on_eval({"x": x, "denoised": denoised, "sigma": sigma, "iteration": m, "tau": tau})
        x = x + step * drift
        if noise_std != 0.0:
            x = x + noise_std * gaussian_noise(x, generator)
    return x


def refined_steps(n_steps: int, start: float, end: float) -> list[bool]:
    """Which of ``n_steps`` steps are refined: step i when start <= i / n_steps < end (end = 1
    includes the last step) -- the rule MaskedAttentionPatch uses for its steps."""
    return [start <= i / n_steps < end or (end >= 1.0 and i / n_steps >= start) for i in range(n_steps)]


def count_evaluations(sigmas, parametrisation: str, start: float, end: float, iterations: int,
                      model_at_pure_noise: bool = False) -> int:
    """Model evaluations of :func:`sample` over ``sigmas``: one per step, plus ``iterations`` per
    refined step whose marginal holds signal (not a flow model's sigma = 1, see intrinsic_refine,
    unless ``model_at_pure_noise``: the prior is on x0_hat there)."""
    n = len(sigmas) - 1
    if n <= 0:
        return 0
    extra = sum(1 for i, r in enumerate(refined_steps(n, start, end))
                if r and float(sigmas[i]) > 0
                and (model_at_pure_noise or marginal_coefficients(sigmas[i], parametrisation)[0] != 0.0))
    return n + iterations * extra


def sample(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, parametrisation: str,
           prior: TemporalPrior | None = None, iterations: int = 2, c_g: float = 1.0, eta_l: float = 0.05,
           eta_k: float = 1.0, start: float = 0.0, end: float = 0.25, generator: torch.Generator | None = None,
           on_eval: Callable[[dict], None] | None = None, prior_on: str = "z") -> torch.Tensor:
    """Euler (= DDIM, see the docstring) over ``sigmas`` with intrinsic refinement before the
    refined steps. ``on_eval`` gets, after every model evaluation, ``{"i": evaluations so far - 1,
    "step", "iteration" (None for the sampler step), "x", "denoised", "sigma", "tau"}``."""
    n = len(sigmas) - 1
    refine = refined_steps(n, start, end) if n > 0 else []
    count = [0]

    def report(info: dict, step: int) -> None:
        if on_eval is not None:
            on_eval(dict(info, i=count[0], step=step))
        count[0] += 1

    s_in = x.new_ones([x.shape[0]])
    for i in range(n):
        sigma = sigmas[i]
        if refine[i] and iterations > 0 and float(sigma) > 0:
            x = intrinsic_refine(x, sigma, lambda z, s: denoise(z, s * s_in), iterations=iterations,
                                 parametrisation=parametrisation, prior=prior, c_g=c_g, eta_l=eta_l,
                                 eta_k=eta_k, generator=generator, on_eval=lambda info, step=i: report(info, step),
                                 prior_on=prior_on)
        # comfy.k_diffusion.sampling.sample_euler (s_churn = 0), op for op.
        denoised = denoise(x, sigma * s_in)
        d = (x - denoised) / sigma[(...,) + (None,) * x.ndim]
        report({"x": x, "denoised": denoised, "sigma": sigma, "iteration": None, "tau": None}, i)
        dt = sigmas[i + 1] - sigma
        x = x + d * dt
    return x
