"""LongVideoChunks: a text-to-video longer than the model's native length, chunk by chunk along one
long trajectory, anchored on the first chunk's first frame (dynamic mask guidance, METHODS.md §4).

Layout and mathematics: ``core/long_video.py``; first-frame sharing: ``core/first_frame.py``;
box guidance per chunk: the MaskedAttentionPatch rule on the chunk's slice of the regions.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..core import first_frame as ff
from ..core import long_video as lv
from ..core import masks as core_masks
from ..core import token_layout
from ..core.regions import Regions as RegionSet
from . import attention_seam, checks, model_families, types
from .common import CATEGORY, node_id
from .first_frame import FirstFrameShareRule
from .masked_attention import MaskedAttention
from .subject_tokens import find_subject_tokens


def native_latent(model, latent: dict):
    """The latent the KSampler node would sample: an empty latent made for another VAE gets the
    model's channels, and in newer ComfyUI (whose ``fix_empty_latent_channels`` takes them) the
    model's size from the latent's ``downscale_ratio_*`` keys, e.g. Wan 2.2 TI2V-5B (16x) from an
    8x empty video latent."""
    import inspect

    import comfy.sample

    fix = comfy.sample.fix_empty_latent_channels
    params = inspect.signature(fix).parameters
    extra = {k: latent.get(k) for k in ("downscale_ratio_spacial", "downscale_ratio_temporal") if k in params}
    return fix(model, latent["samples"], **extra)


def sample_chunk(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, noise_mask,
                 first=None, noise_share=0.0):
    """One chunk through ComfyUI's own sampler (comfy.sample.sample, what KSampler runs). ``first``:
    the chunk's encoded first frame (a raw latent frame), mixed into the later frames' noise by
    ``noise_share`` (Eq. 8, unit variance kept; core.first_frame.shared_noise)."""
    import comfy.sample

    noise = comfy.sample.prepare_noise(latent, seed)
    if first is not None and noise_share > 0:
        e1 = model.model.latent_format.process_in(first[:, :, :1].float())   # the space noise is added in
        noise = ff.shared_noise(noise, noise_share, "preserve", frame_dim=2, first=e1)
    return comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                               noise_mask=noise_mask, seed=seed, disable_pbar=True)


def is_image_to_video(model) -> bool:
    """A Wan image-to-video model (Wan 2.1 I2V, Wan 2.2 I2V A14B): ComfyUI builds WAN21 with
    ``image_to_video=True`` and its patch embedding takes 16 noise + 4 mask + 16 image channels."""
    return bool(getattr(model.model, "image_to_video", False))


def start_frame(conditioning):
    """The encoded start image of image-to-video conditioning (concat_latent_image's frame 0), or None."""
    for _, opts in conditioning:
        img = opts.get("concat_latent_image")
        if img is not None and img.ndim == 5:
            return img[:, :, :1]
    return None


def continue_from(positive, negative, vae, prev, overlap):
    """Image-to-video conditioning of the next chunk: the previous chunk's sampled latent is
    decoded, its last ``1 + 4 (overlap - 1)`` frames become the start image(s), and ComfyUI's own
    WanImageToVideo sets concat_latent_image / concat_mask on both sides (its other keys, e.g.
    clip_vision_output, pass through). The whole chunk is decoded, not only its tail: the causal
    VAE decodes a latent frame with its predecessors as context, as the user's VAE Decode would."""
    from comfy_extras.nodes_wan import WanImageToVideo

    frames = vae.decode(prev)                              # [B, F, H, W, C]
    frames = frames.reshape((-1,) + tuple(frames.shape[-3:]))
    start = frames[-(1 + 4 * (overlap - 1)):]
    h, w = start.shape[1:3]
    length = 1 + 4 * (prev.shape[2] - 1)
    pos, neg, _ = WanImageToVideo.execute(positive, negative, vae, w, h, length, 1, start_image=start).result
    return pos, neg


SHARE_MODES = ("add_first", "anchor")


class LongVideoChunks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("LongVideoChunks"),
            display_name="Long Video (Chunks)",
            category=CATEGORY,
            description=(
                "Generates a text-to-video longer than the model's native length: chunk after chunk, each "
                "continuing the previous one's last latent frames and anchored on the first chunk's first frame "
                "(first-frame sharing), optionally steered along one long trajectory (regions). Returns one "
                "latent for the whole video. Text-to-video latents with a causal VAE (Wan 2.1 / 2.2); Wan "
                "image-to-video models (with a VAE): each later chunk starts from the previous chunk's last "
                "decoded frame(s) as its start image (WanImageToVideo conditioning)."),
            inputs=[
                io.Model.Input("model", tooltip="The text-to-video or Wan image-to-video model."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning (the same for every chunk)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent", tooltip="An empty latent of the model's native length (one chunk), e.g. "
                                                  "Empty Hunyuan Latent Video at 81 frames for Wan."),
                io.Int.Input("length", default=241, min=1, max=100000, step=4,
                             tooltip="Pixel frames of the whole video (Wan: 4k + 1)."),
                io.Int.Input("overlap", default=1, min=0, max=64,
                             tooltip="Latent frames each chunk re-uses from the end of the previous chunk (kept "
                                     "fixed while the rest is denoised)."),
                io.Boolean.Input("anchor_first_frame", default=True,
                                 tooltip="Put the first chunk's first latent frame in front of every later chunk "
                                         "(kept fixed), so that every chunk can see it."),
                io.Boolean.Input("first_frame_share", default=False,
                                 tooltip="Every frame's self-attention also attends the chunk's first frame (the "
                                         "anchor), First Frame Share in share_mode. Off by default: on the toy "
                                         "benchmark it does not raise mIoU over the anchor frame alone."),
                io.Combo.Input("share_mode", options=list(SHARE_MODES), default="add_first",
                               tooltip="add_first: full attention, the first frame's keys weigh 1 + strength "
                                       "(the paper's appended K/V). anchor: each frame attends only its own frame "
                                       "and the first (faster on long chunks; cuts attention between other frames)."),
                io.Float.Input("share_strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="add_first: frame 0's K/V appended this many more times (log(1 + strength) "
                                       "bias; 0 = plain). anchor: its key weight (log(strength); 1 = plain)."),
                io.Float.Input("noise_share", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Eq. 8 shared noise: every chunk after the first (and an image-to-video "
                                       "chunk with a start image) mixes its encoded first frame into the later "
                                       "frames' noise by this share (unit variance kept; paper 0.2). 0 = plain "
                                       "noise (default: 0.2 lowered mIoU on the toy benchmark)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Noise seed of the first chunk; chunk i uses seed + i."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps per chunk."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, tooltip="CFG scale."),
                io.Combo.Input("sampler_name", options=cls._samplers(), default="euler", tooltip="Sampler."),
                io.Combo.Input("scheduler", options=cls._schedulers(), default="simple", tooltip="Scheduler."),
                types.Regions.Input("regions", optional=True,
                                    tooltip="Optional: per-object regions over the WHOLE video (Mask Sequence of "
                                            "the long trajectory); each chunk is steered by its own slice."),
                io.Float.Input("box_end_percent", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="With regions: masked attention (Masked Attention Patch's rule and default) "
                                       "for this first share of each chunk's steps. 0 = off."),
                io.Clip.Input("clip", optional=True,
                              tooltip="With regions: the text encoder of the prompt; with prompt it finds each "
                                      "object's words, so cross-attention is masked too (each object's tokens see "
                                      "their own words). Without it only self-attention is masked, which places "
                                      "objects far more weakly."),
                io.String.Input("prompt", multiline=True, default="", optional=True,
                                tooltip="With regions and clip: the positive prompt exactly as encoded; every "
                                        "object's subject phrase must appear in it."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Image-to-video models only (required there): decodes the end of each chunk "
                                     "into the next chunk's start image and encodes it for the conditioning."),
            ],
            outputs=[io.Latent.Output(tooltip="The whole video's latent (decode with the model's VAE).")],
        )

    @staticmethod
    def _samplers():
        import comfy.samplers

        return list(comfy.samplers.KSampler.SAMPLERS)

    @staticmethod
    def _schedulers():
        import comfy.samplers

        return list(comfy.samplers.KSampler.SCHEDULERS)

    @classmethod
    def validate_inputs(cls, overlap=None, anchor_first_frame=None, share_strength=None, noise_share=None, cfg=None,
                        box_end_percent=None, share_mode=None, sampler_name=None, scheduler=None, length=None,
                        steps=None):
        def chunks():
            if isinstance(overlap, int) and anchor_first_frame is False and overlap < 1:
                return ("overlap: needs at least 1 latent frame without anchor_first_frame (chunks must continue "
                        "each other)")
            return None

        return checks.validate(cls, locals(), chunks)

    @classmethod
    def execute(cls, model, positive, negative, latent, length=241, overlap=1, anchor_first_frame=True,
                first_frame_share=False, share_mode="add_first", share_strength=1.0, noise_share=0.0, seed=0,
                steps=20, cfg=5.0, sampler_name="euler", scheduler="simple", regions=None, box_end_percent=0.3,
                vae=None, clip=None, prompt="") -> io.NodeOutput:
        checks.at_run(cls, locals())
        import comfy.sample
        import comfy.utils

        family = model_families.family_of(model)
        if family.layout not in ("wan21", "wan22_ti2v"):
            raise ValueError(f"model: Long Video (Chunks) supports Wan 2.1 / 2.2 text-to-video latents; got "
                             f"{family.name}")
        x = native_latent(model, latent)
        if x.ndim != 5:
            raise ValueError(f"latent: needs a video latent [B, C, T, H, W], got {tuple(x.shape)}")
        T = x.shape[2]
        total = token_layout.latent_frames(family.layout, length)
        i2v = is_image_to_video(model)
        if i2v:
            # Image-to-video: a chunk's first frame(s) are its start image, the end of the previous
            # chunk, so there is no anchor slot: first-frame sharing anchors each chunk on its start
            # image, and the user's first image reaches every chunk through the conditioning each keeps
            # (clip_vision_output, when present).
            if vae is None:
                raise ValueError("vae: an image-to-video model needs the VAE input connected (it decodes each "
                                 "chunk's last frame into the next chunk's start image)")
            if overlap < 1:
                raise ValueError("overlap: an image-to-video model needs at least 1 (the previous chunk's last "
                                 "latent frame, decoded, is the next chunk's start image)")
            if x.shape[0] != 1:
                raise ValueError(f"latent: image-to-video chunks need batch size 1, got {x.shape[0]}")
            anchor_first_frame = False
        chunks = lv.plan_chunks(total, T, overlap, anchor_first_frame)
        if regions is not None and regions.frames != length:
            # The pack's rule for another length: stretch, and say so.
            logging.getLogger("boxdirector").warning(
                "Long Video (Chunks): regions made for %d frames stretched over the %d-frame video (make the "
                "trajectory as long as the whole video to place objects exactly)", regions.frames, length)
            regions = RegionSet(core_masks.stretch_frames(regions.masks, length), regions.ids, regions.prompts)
        kinds, subjects = frozenset({"self"}), None
        if regions is not None and clip is not None and prompt.strip():
            # The whole MaskedAttentionPatch rule: self and cross (each object's own words).
            subjects = find_subject_tokens(clip, prompt, list(regions.prompts), list(regions.ids),
                                           family.layout).positions
            kinds = frozenset({"self", "cross"})
        elif clip is not None and regions is not None:
            raise ValueError("prompt: with clip connected, paste the positive prompt (exactly as encoded) so each "
                             "object's words can be found; or disconnect clip to mask self-attention only")
        elif regions is not None and prompt.strip():
            raise ValueError("clip: a prompt is given but no text encoder is connected, so cross-attention "
                             "cannot be masked; connect the clip that encoded the prompt, or clear the prompt")
        base = model
        if first_frame_share:
            if share_mode not in SHARE_MODES:
                raise ValueError(f"share_mode: must be one of {SHARE_MODES}, got {share_mode!r}")
            base = attention_seam.install(model, FirstFrameShareRule(mode=share_mode, strength=float(share_strength)))
        pbar = comfy.utils.ProgressBar(len(chunks))
        outs = []
        done = {}
        pos, neg = positive, negative
        for i, ch in enumerate(chunks):
            m = base
            if regions is not None and box_end_percent > 0:
                sub = RegionSet(lv.chunk_masks(regions.masks, ch, family.layout), regions.ids, regions.prompts)
                m = attention_seam.install(base, MaskedAttention(regions=sub, subject_tokens=subjects,
                                                                 kinds=kinds, end=box_end_percent))
            lat = torch.zeros_like(x)
            mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
            if i2v:
                # a plain WanImageToVideo run: the start image(s) condition the known frames
                if i:
                    pos, neg = continue_from(positive, negative, vae, outs[-1], overlap)
                mask = None
            else:
                for j in range(ch.known):
                    lat[:, :, j] = done[ch.frames[j]]
                    mask[:, :, j] = 0.0
                if not ch.known:
                    mask = None
            # Eq. 8: the chunk's first frame -- the anchor / overlap frame, or the start image -- is known
            first = start_frame(pos) if i2v else (lat[:, :, :1] if ch.known else None)
            out = sample_chunk(m, seed + i, steps, cfg, sampler_name, scheduler, pos, neg, lat, mask, first,
                               noise_share)
            for j, g in enumerate(ch.frames):
                if j >= ch.known:
                    done[g] = out[:, :, j]
            outs.append(out)
            pbar.update(1)
        return io.NodeOutput({"samples": lv.assemble(chunks, outs, total)})
