"""TemporalIntrinsicDenoise: a SAMPLER (for SamplerCustom / SamplerCustomAdvanced) that runs Euler or
ComfyUI's DDIM and, before the chosen steps, refines the latent with the model's own score plus the
gradient of a temporal prior on the objects' boxes (domain-adaptation paper). The mathematics is in
``core/intrinsic_denoise.py``; this file only adapts ComfyUI's sampler interface to it.

What the sampler function gets, and how it finds out about the model: ComfyUI calls
``sampler_function(model_k, x, sigmas, extra_args, callback, disable)`` where ``model_k`` is a
``KSamplerX0Inpaint`` (x -> CFG denoised, inpainting applied), ``model_k.inner_model`` the guider
(``CFGGuider`` or a subclass: it owns ``model_patcher``) and ``model_k.inner_model.inner_model`` the
``BaseModel`` -- the very object ``KSAMPLER.sample`` itself reads ``model_sampling`` from, so this
chain is part of ComfyUI's sampler contract. The family (token layout: temporal compression, frames
as batch for SVD) comes from ``model_families.family_of(guider.model_patcher)``; the
parametrisation ("ve" or "flow") by probing ``model_sampling.noise_scaling`` itself (x = a x0 + b
eps), so a patched model sampling (ModelSamplingSD3 / shift nodes) is read as it is during sampling.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace

import comfy.samplers
import torch
from comfy_api.latest import io

from ..core import intrinsic_denoise as idn
from ..core import token_layout
from ..core.masks import masks_to_boxes
from ..core.trajectory import sample_boxes
from . import checks, model_families, types
from .common import CATEGORY, node_id

log = logging.getLogger("boxdirector")

BASE_SAMPLERS = ("euler", "ddim")
MAX_ITERATIONS, MAX_C_G, MAX_ETA_L, MAX_ETA_K = 16, 100000.0, 0.5, 2.0
# iterations and eta_k are measured defaults (bench.quality): with Langevin noise (eta_k 1) each
# iteration adds ~6x more noise than the prior pushes, and the refinement does not help; deterministic
# iterations do, more of them more. The paper's M is 2 and its eta_k unstated.
DEFAULTS = {"iterations": 4, "c_g": 1.0, "gradient_scale": "per_element", "eta_l": 0.05, "eta_k": 0.0,
            "start_percent": 0.0, "end_percent": 0.25, "seed": 0, "prior_on": "z", "prior": "temporal"}


@dataclass(frozen=True, eq=False)
class IntrinsicConfig:
    boxes: torch.Tensor        # [K, F, 4] normalised, per pixel frame
    visible: torch.Tensor      # [K, F] bool
    base: str = "euler"
    iterations: int = 4
    c_g: float = 1.0
    gradient_scale: str = "per_element"
    eta_l: float = 0.05
    eta_k: float = 0.0
    start: float = 0.0
    end: float = 0.25
    seed: int = 0
    prior_on: str = "z"
    prior: str = "temporal"

    def __deepcopy__(self, memo):
        return self

    def evaluations(self, sigmas, parametrisation: str) -> int:
        return idn.count_evaluations(sigmas, parametrisation, self.start, self.end, self.iterations,
                                     model_at_pure_noise=self.prior_on == "x0_hat" and self.c_g != 0.0)


# --- what the sampler function learns about the model ------------------------------------------

def base_model_of(model_k):
    """The ``BaseModel`` behind the denoiser ComfyUI hands a sampler function."""
    obj = model_k
    for _ in range(4):
        if obj is None:
            break
        if hasattr(obj, "model_sampling") and hasattr(obj, "diffusion_model"):
            return obj
        obj = getattr(obj, "inner_model", None)
    raise TypeError("Temporal Intrinsic Denoise: cannot find the model behind the sampler's denoiser "
                    f"({type(model_k).__name__}); use it from SamplerCustom or SamplerCustomAdvanced")


def parametrisation_of(model_sampling) -> str:
    """"ve" (x = x0 + sigma eps) or "flow" (x = (1 - sigma) x0 + sigma eps), read off
    ``noise_scaling`` at two noise levels."""
    found = []
    for s in (0.25, 0.5):
        sigma = torch.tensor(s)
        a = float(model_sampling.noise_scaling(sigma, torch.zeros(1), torch.ones(1), max_denoise=False).flatten()[0])
        b = float(model_sampling.noise_scaling(sigma, torch.ones(1), torch.zeros(1), max_denoise=False).flatten()[0])
        if not math.isclose(b, s, rel_tol=1e-5):
            found.append(None)
        elif math.isclose(a, 1.0, rel_tol=1e-5):
            found.append("ve")
        elif math.isclose(a, 1.0 - s, rel_tol=1e-5):
            found.append("flow")
        else:
            found.append(None)
    if found[0] is None or found[0] != found[1]:
        raise ValueError(f"Temporal Intrinsic Denoise: model sampling {type(model_sampling).__name__} is neither "
                         "x0 + sigma*noise (EPS/v-prediction) nor (1-sigma)*x0 + sigma*noise (flow); its score "
                         "is not known")
    return found[0]


def layout_of(model_k, base, x: torch.Tensor) -> tuple[str | None, bool]:
    """(token layout name or None if the model family is unknown, frames are the batch)."""
    patcher = getattr(getattr(model_k, "inner_model", None), "model_patcher", None)
    if patcher is None or getattr(patcher, "model", None) is not base:
        patcher = SimpleNamespace(model=base)
    try:
        name = model_families.family_of(patcher).layout
    except model_families.UnsupportedModel:
        return None, False
    return name, token_layout.get_layout(name).unet


def prior_for(config: IntrinsicConfig, model_k, base, x: torch.Tensor) -> idn.TemporalPrior | None:
    if config.c_g == 0.0 or config.iterations == 0:
        return None
    layout, frames_are_batch = layout_of(model_k, base, x)
    if layout is None:
        if x.ndim != 5:
            raise ValueError(f"Temporal Intrinsic Denoise: {type(base).__name__} is not a supported video model and "
                             f"its latent {tuple(x.shape)} has no frame axis; the temporal prior needs one "
                             "(set c_g to 0 to refine with the score alone)")
        log.warning("Temporal Intrinsic Denoise: unknown model %s; spreading the boxes evenly over its %d latent "
                    "frames", type(base).__name__, x.shape[2])
    else:
        token_layout.note_resampling("Temporal Intrinsic Denoise", layout, config.boxes.shape[1], None, x.shape)
    return idn.TemporalPrior.from_boxes(config.boxes, config.visible, x.shape, layout,
                                        frames_are_batch=frames_are_batch, gradient_scale=config.gradient_scale,
                                        contrast=config.prior == "temporal_contrast")


# --- the sampler -------------------------------------------------------------------------------

@torch.no_grad()
def sample_intrinsic(model, x, sigmas, extra_args=None, callback=None, disable=None, *, intrinsic: IntrinsicConfig):
    """The SAMPLER's function, called by ``KSAMPLER.sample`` like any k-diffusion sampler."""
    from tqdm.auto import tqdm

    config = intrinsic
    extra_args = {} if extra_args is None else extra_args
    base = base_model_of(model)
    parametrisation = parametrisation_of(base.model_sampling)
    prior = prior_for(config, model, base, x)
    generator = torch.Generator().manual_seed(int(config.seed))
    pbar = tqdm(total=config.evaluations(sigmas, parametrisation), disable=disable)

    def on_eval(info: dict) -> None:
        pbar.update(1)
        if callback is not None:
            callback({"x": info["x"], "i": info["i"], "sigma": info["sigma"], "sigma_hat": info["sigma"],
                      "denoised": info["denoised"]})

    try:
        return idn.sample(lambda z, s: model(z, s, **extra_args), x, sigmas, parametrisation=parametrisation,
                          prior=prior, iterations=config.iterations, c_g=config.c_g, eta_l=config.eta_l,
                          eta_k=config.eta_k, start=config.start, end=config.end, generator=generator,
                          on_eval=on_eval, prior_on=config.prior_on)
    finally:
        pbar.close()


class IntrinsicSampler(comfy.samplers.KSAMPLER):
    """A KSAMPLER whose progress counts model evaluations: ComfyUI's callback turns the "i" of each
    evaluation into ``pbar.update_absolute(i + 1, total)``, and total is the evaluation count here
    (the step count when nothing is refined, so plain runs report exactly as the base sampler)."""

    def __init__(self, config: IntrinsicConfig):
        inpaint = {"random": True} if config.base == "ddim" else {}   # as comfy.samplers.sampler_object("ddim")
        super().__init__(sample_intrinsic, {"intrinsic": config}, inpaint)
        self.config = config

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        if callback is not None:
            total = self.config.evaluations(sigmas, parametrisation_of(base_model_of(model_wrap).model_sampling))
            outer = callback

            def callback(step, x0, x, _total_steps):
                return outer(step, x0, x, total)

        return super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                              disable_pbar)


def boxes_from_inputs(trajectory=None, regions=None) -> tuple[torch.Tensor, torch.Tensor]:
    if (trajectory is None) == (regions is None):
        raise ValueError("trajectory / regions: connect exactly one of them (the boxes the prior follows); "
                         f"got {'both' if trajectory is not None else 'neither'}")
    if trajectory is not None:
        return sample_boxes(trajectory)
    if len(regions) == 0:
        raise ValueError("regions: there are no objects in these regions")
    return masks_to_boxes(regions.masks)


# --- the node ----------------------------------------------------------------------------------

class TemporalIntrinsicDenoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("TemporalIntrinsicDenoise"),
            display_name="Temporal Intrinsic Denoise",
            category=CATEGORY,
            description=(
                "A sampler for SamplerCustom / SamplerCustomAdvanced (domain-adaptation paper): Euler or DDIM, and "
                "before the chosen steps a few refinement iterations that move the latent along the model's own "
                "score plus the gradient of a temporal prior -- how well each object's box content agrees "
                "between adjacent frames. It closes the gap between random starting noise and the boxes. Use "
                "with a Masked Attention Patch model for the paper's full method, or on its own. Each iteration "
                "costs one model evaluation; the progress bar counts evaluations. Wan, HunyuanVideo and "
                "LTX-Video (flow) and SVD (v-prediction) are supported."),
            inputs=[
                io.Combo.Input("base_sampler", options=list(BASE_SAMPLERS), default="euler",
                               tooltip="The sampler that takes the steps. euler: ComfyUI's euler. ddim: ComfyUI's "
                                       "ddim (the same Euler update, which is DDIM with eta 0; differs only in "
                                       "inpainting noise). With nothing refined both reproduce ComfyUI's own exactly."),
                types.Trajectory.Input("trajectory", optional=True,
                                       tooltip="The objects' boxes (from BBox Trajectory). Connect this or regions."),
                types.Regions.Input("regions", optional=True,
                                    tooltip="Or regions (from Mask Sequence): each object's box is its mask's "
                                            "bounding box on each frame; a frame where the mask is empty hides it."),
                io.Int.Input("iterations", default=DEFAULTS["iterations"], min=0, max=MAX_ITERATIONS,
                             tooltip="Refinement iterations M before each refined step (paper: 2; default 4, measured on "
                                     "the toy world). Each costs one model evaluation. 0 = plain base sampler."),
                io.Float.Input("c_g", default=DEFAULTS["c_g"], min=0.0, max=MAX_C_G, step=0.01, round=False,
                               tooltip="Strength of the temporal prior. With gradient_scale per_element, 1 makes the "
                                       "prior's push about as strong as the model's own score; raw uses the "
                                       "paper's unscaled gradient (paper: 10000). 0 = score only (Langevin "
                                       "refinement without the boxes)."),
                io.Combo.Input("gradient_scale", options=list(idn.GRADIENT_SCALES), default=DEFAULTS["gradient_scale"],
                               tooltip="per_element: the prior's gradient scaled by each object's crop size, so c_g "
                                       "means the same for small and large boxes, any model and any length. raw: "
                                       "the gradient of the mean correlation, as in the paper (its effect shrinks "
                                       "with box size, channels and frames)."),
                io.Combo.Input("prior_on", options=list(idn.PRIOR_TARGETS), default=DEFAULTS["prior_on"],
                               tooltip="z: the prior's gradient on the noisy latent itself (makes the noise in each "
                                       "box agree along the path). x0_hat: on the model's denoised estimate, applied "
                                       "to the latent (makes the content it is about to draw agree); no backward "
                                       "through the model either."),
                io.Float.Input("eta_l", default=DEFAULTS["eta_l"], min=0.0, max=MAX_ETA_L, step=0.005, round=False,
                               tooltip="Step size, relative to the noise level: each iteration moves the latent this "
                                       "fraction of the way towards the model's denoised estimate (paper gamma: "
                                       "0.05)."),
                io.Float.Input("eta_k", default=DEFAULTS["eta_k"], min=0.0, max=MAX_ETA_K, step=0.01, round=False,
                               tooltip="Noise added per iteration, relative to Langevin dynamics: 1 keeps the latent "
                                       "at the noise level the next step expects but adds ~6x more noise than the "
                                       "prior pushes; 0 (default) is deterministic, leaves it slightly under-noised "
                                       "and measured better."),
                io.Float.Input("start_percent", default=DEFAULTS["start_percent"], min=0.0, max=1.0, step=0.01,
                               tooltip="Refinement starts at this fraction of this sampler's steps."),
                io.Float.Input("end_percent", default=DEFAULTS["end_percent"], min=0.0, max=1.0, step=0.01,
                               tooltip="Refinement ends at this fraction of the steps (0.25 with 20 steps refines "
                                       "steps 0-4). The paper refines every step (1.0), at (M+1)x the cost."),
                io.Int.Input("seed", default=DEFAULTS["seed"], min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the refinement noise (eta_k); the starting noise keeps its own seed."),
                # appended last: saved workflows keep their widget positions
                io.Combo.Input("prior", options=list(idn.PRIOR_KINDS), default=DEFAULTS["prior"], optional=True,
                               tooltip="temporal: the paper's prior, how well each box's content agrees between "
                                       "adjacent frames. temporal_contrast: minus how well it agrees with the places "
                                       "one box size away in the next frame, so only content that follows the box "
                                       "scores, not content (or noise) that stays put."),
            ],
            outputs=[io.Sampler.Output(tooltip="Connect to the sampler input of SamplerCustom / "
                                               "SamplerCustomAdvanced.")],
        )

    @classmethod
    def validate_inputs(cls, base_sampler=None, gradient_scale=None, iterations=None, c_g=None, eta_l=None,
                        eta_k=None, start_percent=None, end_percent=None, prior_on=None, prior=None):
        # Linked inputs arrive as None here; execute() checks them again.
        return checks.validate(cls, locals(), lambda: checks.schedule_problem(None, start_percent, end_percent))

    @classmethod
    def execute(cls, base_sampler="euler", iterations=4, c_g=1.0, gradient_scale="per_element", eta_l=0.05,
                eta_k=0.0, start_percent=0.0, end_percent=0.25, seed=0, trajectory=None, regions=None,
                prior_on="z", prior="temporal") -> io.NodeOutput:
        problem = cls.validate_inputs(base_sampler, gradient_scale, iterations, c_g, eta_l, eta_k, start_percent,
                                      end_percent, prior_on, prior)
        if problem is not True:
            raise ValueError(problem)
        boxes, visible = boxes_from_inputs(trajectory, regions)
        config = IntrinsicConfig(boxes=boxes.float(), visible=visible.bool(), base=base_sampler,
                                 iterations=int(iterations), c_g=float(c_g), gradient_scale=gradient_scale,
                                 eta_l=float(eta_l), eta_k=float(eta_k), start=float(start_percent),
                                 end=float(end_percent), seed=int(seed), prior_on=prior_on, prior=prior)
        return io.NodeOutput(IntrinsicSampler(config))
