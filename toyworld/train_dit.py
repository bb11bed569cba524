"""Train the toy world's tiny Wan 2.1 text-to-video DiT (the real ``comfy.ldm.wan.model.WanModel``).

    python -m toyworld.train_dit --minutes 45 --out toyworld/weights/toy_wan_dit.safetensors

Data: synthetic clips (toyworld.data, 17 x 128 x 128) encoded once with the shipped toy VAE
(``--vae``) and normalised exactly as ComfyUI feeds latents to a WAN21 model:
``comfy.latent_formats.Wan21().process_in(vae.encode(video))`` -- 16 x 5 x 16 x 16 latents,
8 x 8 tokens per latent frame (patch 1 x 2 x 2), 320 tokens per clip. Encoding is interleaved with
training (``--encode-per-step`` new clips per step, from a seed-ordered stream, into a growing pool)
and cached under .cache/toyworld/, keyed by the VAE file's hash and ``data.DATA_VERSION``, so a rerun reuses it.

Objective: ComfyUI's WAN21 flow matching (``ModelSamplingDiscreteFlow``, CONST prediction):
x_t = (1 - sigma) x_0 + sigma * noise, the model gets timestep = 1000 * sigma and predicts the
velocity noise - x_0 (ComfyUI: denoised = x_t - sigma * output). sigma = shift(u) with u uniform
and ``--shift`` (3.0) so high noise levels, where layout is decided, are well covered.
The caption is replaced by the empty prompt 10 % of the time so classifier-free guidance works.
AdamW, warmup then cosine decay; EMA weights are exported (fp16, the bare key layout of ComfyUI's
repackaged Wan ``diffusion_models`` files, which UNETLoader detects as WAN21) every
``--ckpt-minutes`` and at the end.

Seeded and reproducible with ``--steps N`` (schedule by steps); with ``--minutes`` alone the
schedule follows the wall clock and the run stops by itself at the budget.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data, text
from ._comfy import ROOT, ensure_comfy_path, init_weights, training

DEFAULT_OUT = ROOT / "toyworld" / "weights" / "toy_wan_dit.safetensors"
DEFAULT_VAE = ROOT / "toyworld" / "weights" / "toy_wan_vae.safetensors"
CACHE = ROOT / ".cache" / "toyworld"
# two heads of 128 (Wan's fixed head_dim), six blocks: the shipped DiT (session 18), widened from a
# one-head dim-128 one in session 15 and deepened from four blocks in session 17
DIM, LAYERS, FFN = 256, 6, 1024


def dit_config(dim: int = DIM, layers: int = LAYERS, ffn: int = FFN) -> dict:
    """Exactly the config comfy.model_detection derives from the saved state dict."""
    return {"image_model": "wan2.1", "model_type": "t2v", "dim": dim, "out_dim": 16, "num_heads": dim // 128,
            "ffn_dim": ffn, "num_layers": layers, "patch_size": (1, 2, 2), "freq_dim": 256,
            "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16}


def build_dit(cfg: dict):
    ensure_comfy_path()
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    return WanModel(**cfg, text_dim=text.WIDTH, operations=comfy.ops.disable_weight_init)


def init_dit(model, seed: int) -> None:
    init_weights(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            elif ("norm" in name) and name.endswith(".weight") and p.dim() == 1:
                p.fill_(1.0)
            elif name.startswith("text_embedding") or name.startswith("time_embedding"):
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
                else:
                    p.zero_()
        model.head.head.weight.zero_()
        model.head.head.bias.zero_()


def block_count(sd: dict) -> int:
    """Number of transformer blocks in a DiT state dict."""
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))


def grow_state_dict(sd: dict, layers: int) -> dict:
    """A trained DiT's state dict deepened to ``layers`` blocks without changing what it computes.

    New block k is a copy of old block floor(k * old / new), so it starts with that block's
    trained attention and FFN features; a copy placed right after its original has its three
    residual outputs (self-attention ``o``, cross-attention ``o``, the FFN's second linear) zeroed,
    which makes it the identity at the start of training. Training the deeper model therefore
    begins exactly where the shallower one stopped (progressive depth growth, as in Net2Net /
    stacked-BERT training), instead of from scratch."""
    old = block_count(sd)
    if layers < old:
        raise ValueError(f"--layers {layers} is fewer than the {old} blocks in --init")
    out = {k: v for k, v in sd.items() if not k.startswith("blocks.")}
    prev = None
    for k in range(layers):
        src = k * old // layers
        fresh = src == prev
        prev = src
        for name, v in sd.items():
            if name.startswith(f"blocks.{src}."):
                rest = name[len(f"blocks.{src}."):]
                v = v.clone()
                if fresh and rest.split(".")[0] in ("self_attn", "cross_attn", "ffn") and \
                        rest.rsplit(".", 2)[-2] in ("o", "2"):
                    v.zero_()
                out[f"blocks.{k}.{rest}"] = v
    return out


def widen_state_dict(sd: dict, dim: int, ffn: int, seed: int = 0, noise: float = 0.01) -> dict:
    """A trained DiT's state dict widened to ``dim`` channels and ``ffn`` hidden units without
    changing what it computes (Net2WiderNet, Chen et al. 2016).

    Why: ComfyUI reads a Wan DiT's head count as dim // 128, so the dim-128 toy DiT has a single
    attention head per block, which has to serve both an object's shape and its correspondence
    across frames. Widening to 256 gives two heads and keeps everything the narrow model learnt.

    Every feature vector x becomes [x, x, ...] (concatenated copies, so that each 128-channel head
    of the wide model is one copy of the narrow model's head, RoPE layout included; LayerNorm and
    RMSNorm of [x, x] equal those of x). A layer that reads widened features gets its input weights
    split between the copies, W -> [W/k + e_1, ..., W/k + e_k] with the e_i summing to zero: the
    output is exactly W x, while the copies differ (noise * the weight's std), so their gradients
    differ and training can pull them apart. Hidden FFN units are copied the same way."""
    old_dim, old_ffn = sd["head.head.weight"].shape[1], sd["blocks.0.ffn.0.weight"].shape[0]
    if (dim, ffn) == (old_dim, old_ffn):
        return sd
    if dim % old_dim or ffn % old_ffn or dim < old_dim or ffn < old_ffn:
        raise ValueError(f"--dim {dim} / --ffn {ffn} must be multiples of --init's {old_dim} / {old_ffn}")
    kd, kf = dim // old_dim, ffn // old_ffn
    g = torch.Generator().manual_seed(seed)

    def copies(v, k, axis=0, chunks=1):
        v = v.unflatten(axis, (chunks, v.shape[axis] // chunks))
        return torch.cat([v] * k, axis + 1).flatten(axis, axis + 1)

    def split(v, k, axis=1):
        e = noise * v.std() * torch.randn((k, *v.shape), generator=g)
        return torch.cat(list(v / k + e - e.mean(0)), axis)

    out = {}
    for name, v in sd.items():
        parts = name.split(".")
        if name in ("patch_embedding.weight", "patch_embedding.bias", "text_embedding.0.weight",
                    "text_embedding.0.bias", "time_embedding.0.weight", "time_embedding.0.bias") \
                or name.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight", "norm3.bias")) \
                or (parts[-1] == "bias" and parts[-2] in ("q", "k", "v", "o")) \
                or name in ("text_embedding.2.bias", "time_embedding.2.bias") or name.endswith("ffn.2.bias"):
            v = copies(v, kd)
        elif name.endswith("modulation"):
            v = copies(v, kd, v.dim() - 1)
        elif name == "time_projection.1.bias":
            v = copies(v, kd, 0, chunks=6)
        elif name == "time_projection.1.weight":
            v = split(copies(v, kd, 0, chunks=6), kd)
        elif name in ("text_embedding.2.weight", "time_embedding.2.weight") or \
                (parts[-1] == "weight" and parts[-2] in ("q", "k", "v", "o")):
            v = split(copies(v, kd), kd)
        elif name == "head.head.weight":
            v = split(v, kd)
        elif name == "head.head.bias":
            pass
        elif name.endswith("ffn.0.weight"):
            v = split(copies(v, kf), kd)
        elif name.endswith("ffn.0.bias"):
            v = copies(v, kf)
        elif name.endswith("ffn.2.weight"):
            v = split(copies(v, kd), kf)
        else:
            raise ValueError(f"widen_state_dict does not know how to widen {name}")
        out[name] = v
    return out


def load_vae(path: Path = DEFAULT_VAE):
    """The toy VAE as plain module (same class and config that comfy.sd.VAE builds)."""
    import safetensors.torch

    from .train_vae import build_vae

    sd = safetensors.torch.load_file(str(path))
    vae = build_vae(sd["decoder.head.0.gamma"].shape[0])
    vae.load_state_dict({k: v.float() for k, v in sd.items()})
    return vae.eval()


def latent_format():
    ensure_comfy_path()
    import comfy.latent_formats

    return comfy.latent_formats.Wan21()


def object_masks(seeds, latent_frames: int = 5, cells: int = data.SIZE // 8) -> torch.Tensor:
    """[B, T, h, w] bool: latent cells inside any object's box on any pixel frame of that latent
    frame (Wan's causal layout: latent frame 0 = pixel frame 0, frame t = pixel frames 4t-3..4t).
    Seeds index the same clips as the pool: the masks come from the clips' boxes, not from pixels."""
    out = torch.zeros(len(seeds), latent_frames, cells, cells, dtype=torch.bool)
    c = torch.arange(cells, dtype=torch.float32) + 0.5
    for b, s in enumerate(seeds):
        boxes = data.make_clip(int(s)).boxes * cells                 # [N, F, 4] in latent cells
        for t in range(latent_frames):
            for f in ([0] if t == 0 else range(4 * t - 3, 4 * t + 1)):
                x0, y0, x1, y1 = boxes[:, f].unbind(-1)              # [N]
                inx = (c[None, :] >= x0[:, None] - 0.5) & (c[None, :] <= x1[:, None] + 0.5)
                iny = (c[None, :] >= y0[:, None] - 0.5) & (c[None, :] <= y1[:, None] + 0.5)
                out[b, t] |= (iny[:, :, None] & inx[:, None, :]).any(0)
    return out


def sample_sigma(g: torch.Generator, n: int, shift: float = 3.0, mid: float = 0.0, centre: float = 0.42,
                 spread: float = 0.8) -> torch.Tensor:
    """[n] training noise levels in (0, 1).

    By default sigma = shift(u) with u uniform (``--shift``), which spends most samples at high
    noise, where the layout is decided. A share ``mid`` of the samples is drawn instead from a
    logit-normal around ``centre`` (sigma = sigmoid(logit(centre) + spread * N(0, 1)), SD3's
    timestep density): the middle of the schedule, sigma ~0.25-0.6, is where the toy model decides
    an object's shape (``toyworld.sanity --redraw``), and plain shift-3 sampling puts only about a
    quarter of the samples there. Only the noise-level density changes, not the per-sample loss,
    so the minimiser at every sigma is still the true conditional velocity (unlike a weight that
    depends on the clean clip, see ``--obj-weight``)."""
    u = torch.rand(n, generator=g)
    sigma = shift * u / (1 + (shift - 1) * u)
    if mid > 0:
        z = torch.randn(n, generator=g)
        logit_c = math.log(centre / (1 - centre))
        pick = torch.rand(n, generator=g) < mid
        sigma = torch.where(pick, torch.sigmoid(logit_c + spread * z), sigma)
    return sigma


def clips_due(step: int, rate: float) -> int:
    """Clips to encode before training step ``step`` at ``rate`` clips per step (``--encode-per-step``):
    a fractional rate spreads them, and after n steps exactly floor(n * rate) were encoded."""
    return int((step + 1) * rate) - int(step * rate)


class LatentPool:
    """Clips of seeds 0, 1, 2, ... encoded with one VAE and normalised with process_in; cached."""

    def __init__(self, vae_path: Path, cache_dir: Path | None = CACHE, max_clips: int = 100000):
        self.vae = load_vae(vae_path)
        self.fmt = latent_format()
        # keyed by the VAE's bytes and the world's version: a changed VAE or changed clips re-encode
        digest = hashlib.sha256(Path(vae_path).read_bytes() + f"data{data.DATA_VERSION}".encode()).hexdigest()[:12]
        self.path = (Path(cache_dir) / f"latents-{digest}.pt") if cache_dir else None
        self.latents, self.captions = [], []
        self.max_clips = max_clips
        if self.path and self.path.is_file():
            saved = torch.load(self.path)
            self.latents = list(saved["latents"][:max_clips].unbind(0))
            self.captions = saved["captions"][:max_clips]

    def __len__(self):
        return len(self.latents)

    @torch.no_grad()
    def grow(self, n: int) -> None:
        n = min(n, self.max_clips - len(self))
        if n <= 0:
            return
        seeds = list(range(len(self), len(self) + n))
        x, caps = data.make_batch(seeds)
        z = self.fmt.process_in(self.vae.encode(x))
        self.latents.extend(z.half().unbind(0))
        self.captions.extend(caps)

    def save(self) -> None:
        if not self.path or not self.latents:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"latents": torch.stack(self.latents), "captions": self.captions}, tmp)
        os.replace(tmp, self.path)


def save_dit(model, path: Path, meta: dict) -> None:
    import safetensors.torch

    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    safetensors.torch.save_file(sd, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)


@training
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget; stops by itself")
    p.add_argument("--steps", type=int, default=0, help="exact step count (schedule by steps); 0: by time")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--vae", type=Path, default=DEFAULT_VAE)
    p.add_argument("--cache-dir", default=str(CACHE), help="latent cache folder ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None, help="continue from this exported DiT (e.g. the shipped one)")
    p.add_argument("--device", default="cpu", help="torch device for the training (cuda where there is one)")
    p.add_argument("--dim", type=int, default=DIM,
                   help="width (heads = dim // 128); a multiple of --init's widens it without changing its output")
    p.add_argument("--layers", type=int, default=LAYERS,
                   help="blocks; more than --init has deepens it (new blocks start as the identity)")
    p.add_argument("--ffn", type=int, default=FFN, help="FFN hidden units; a multiple of --init's widens it")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--mid-noise", type=float, default=0.0,
                   help="share of samples whose noise level is drawn from a logit-normal around --mid-centre "
                        "instead of shift(u): more training where shapes are decided (sample_sigma)")
    p.add_argument("--mid-centre", type=float, default=0.42)
    p.add_argument("--mid-spread", type=float, default=0.8)
    p.add_argument("--cfg-drop", type=float, default=0.1)
    p.add_argument("--obj-weight", type=float, default=0.0,
                   help="extra loss weight on latent cells inside the objects' boxes. Leave it at 0: the weight "
                        "depends on the clean clip, so the weighted MSE's minimiser is a conditional mean "
                        "tilted towards 'an object is here' and samples grow oversized blobs (measured: "
                        "median object area 0.44 of the frame at 2, data 0.06; toyworld/README.md). Kept "
                        "to reproduce the second-generation DiT's first stages")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--pool-init", type=int, default=64, help="clips encoded before the first step")
    p.add_argument("--encode-per-step", type=float, default=2,
                   help="new clips encoded into the pool per step; fractions spread them (0.5: one every other step)")
    p.add_argument("--max-clips", type=int, default=6000)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action="store_true",
                   help="run the model's forward and backward under bfloat16 autocast (weights, optimiser and "
                        "loss stay float32). The model's forward+backward alone measured 1.2-1.5x faster on this "
                        "CPU (AMX; dim 256, 4 layers, batch 16: 0.95 s vs 1.47 s); a whole dim-128 run "
                        "with clip encoding did not get faster (0.84 s per step vs 0.6-0.8 s in float32), "
                        "so time a few steps both ways first. Off by default: the shipped weights were "
                        "trained in float32")
    p.add_argument("--log-every", type=int, default=20)
    args = p.parse_args(argv)
    if not 0 <= args.mid_noise <= 1:
        p.error(f"--mid-noise is a share of the samples: give a value from 0 to 1, not {args.mid_noise}")
    if not 0 < args.mid_centre < 1:
        p.error(f"--mid-centre is a noise level: give a value strictly between 0 and 1, not {args.mid_centre}")
    if not args.mid_spread > 0:
        p.error(f"--mid-spread is a standard deviation in logit space: give a positive value, not {args.mid_spread}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = dit_config(args.dim, args.layers, args.ffn)
    model = build_dit(cfg)
    init_dit(model, args.seed)
    if args.init:
        import safetensors.torch

        sd = {k: v.float() for k, v in safetensors.torch.load_file(str(args.init)).items()}
        try:  # a width or depth --init cannot grow to is a usage error, not a traceback
            sd = grow_state_dict(widen_state_dict(sd, args.dim, args.ffn, args.seed), args.layers)
        except ValueError as e:
            p.error(str(e))
        model.load_state_dict(sd)
    dev = torch.device(args.device)
    model.to(dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    n_params = sum(v.numel() for v in model.parameters())
    print(f"WanModel t2v dim={args.dim} layers={args.layers} ffn={args.ffn}: {n_params / 1e6:.2f} M parameters",
          flush=True)

    pool = LatentPool(args.vae, Path(args.cache_dir) if args.cache_dir else None, args.max_clips)
    t_enc = time.time()
    while len(pool) < min(args.pool_init, args.max_clips):
        pool.grow(min(8, args.pool_init - len(pool)))
    print(f"latent pool: {len(pool)} clips ({time.time() - t_enc:.0f}s)", flush=True)

    encoder = text.ToyTextEncoder()
    emb_cache: dict[str, torch.Tensor] = {}
    mask_cache: dict[int, torch.Tensor] = {}

    def embed(caption: str) -> torch.Tensor:
        if caption not in emb_cache:
            emb_cache[caption] = encoder.encode_text([caption])[0]
        return emb_cache[caption]

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(args.seed + 2)
    budget = args.minutes * 60
    t0 = time.time()
    last_ckpt = t0
    step = 0
    losses, history = [], []

    def export(final: bool):
        save_dit(ema if step >= 50 else model, args.out,
                 {"toyworld": "wan21_t2v_dit", "steps": step, "seed": args.seed, "final": final,
                  "clips": len(pool), "shift_train": args.shift, "mid_noise": args.mid_noise, "bf16": args.bf16,
                  "loss": f"{sum(losses[-50:]) / max(1, len(losses[-50:])):.5f}"})
        pool.save()
        print(f"  exported {args.out} at step {step} (pool {len(pool)})", flush=True)

    while True:
        elapsed = time.time() - t0
        if args.steps and step >= args.steps:
            break
        if not args.steps and elapsed >= budget:
            break
        frac = step / args.steps if args.steps else elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for grp in opt.param_groups:
            grp["lr"] = lr
        if args.encode_per_step:
            pool.grow(clips_due(step, args.encode_per_step))
        idx = torch.randint(0, len(pool), (args.batch,), generator=g).tolist()
        x0 = torch.stack([pool.latents[i] for i in idx]).float()
        drop = torch.rand(args.batch, generator=g) < args.cfg_drop
        ctx = torch.stack([embed("" if d else pool.captions[i]) for i, d in zip(idx, drop.tolist())])
        sigma = sample_sigma(g, args.batch, args.shift, args.mid_noise, args.mid_centre, args.mid_spread)
        noise = torch.randn(x0.shape, generator=g)
        x0, ctx, sigma, noise = x0.to(dev), ctx.to(dev), sigma.to(dev), noise.to(dev)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(xt, sigma * 1000, ctx)
        err = (out.float() - (noise - x0)).pow(2)
        if args.obj_weight:
            for i in idx:
                if i not in mask_cache:
                    mask_cache[i] = object_masks([i], x0.shape[2], x0.shape[-1])[0]
            m = torch.stack([mask_cache[i] for i in idx])
            w = 1 + args.obj_weight * m.to(dev, err.dtype)[:, None]
            loss = (err * w).sum() / (w.expand_as(err).sum())
        else:
            loss = err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        if step % args.log_every == 0 or step == 1:
            avg = sum(losses[-args.log_every:]) / len(losses[-args.log_every:])
            history.append((step, avg))
            print(f"step {step} loss {avg:.4f} lr {lr:.2e} pool {len(pool)} t {time.time() - t0:.0f}s", flush=True)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            export(False)
            last_ckpt = time.time()
    export(True)
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min; first loss {losses[0]:.4f}, "
          f"last-50 loss {sum(losses[-50:]) / len(losses[-50:]):.4f}", flush=True)
    return {"steps": step, "losses": losses, "history": history, "pool": len(pool)}


if __name__ == "__main__":
    main()
