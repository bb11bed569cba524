"""Train the toy world's narrow Wan 2.1 VAE (the real ``comfy.ldm.wan.vae.WanVAE``).

    python -m toyworld.train_vae --minutes 40 --out toyworld/weights/toy_wan_vae.safetensors

The VAE is fully convolutional and causal in time, so it trains on small crops of the synthetic
clips and then works on whole clips. Its temporal parts start as "hold the frame" (see
``init_temporal_identity``); most steps train on single-frame crops (cheap), the last
``--video-frac`` of the run on 5-frame crops (2 latent frames), which teaches the temporal parts.
Loss: L1 + MSE reconstruction + a small KL on the posterior (sampled latent), Adam.

Seeded and reproducible: with ``--steps N`` the run (data, init, schedule) is a pure function of the
arguments; with ``--minutes`` alone the learning-rate schedule follows the wall clock and the run
stops at the budget (the log prints the step count to pass as ``--steps`` to repeat it).

The exported file is what ComfyUI's VAELoader reads (``comfy.sd.VAE(sd=...)`` detects a Wan 2.1
VAE of width ``decoder.head.0.gamma``). Its latent space is affinely re-mapped (folded into the
encoder's and decoder's 1x1 convs, ``conv1``/``conv2``) so that ComfyUI's fixed Wan21 latent format
``process_in`` -- ``(z - latents_mean) / latents_std`` -- turns it into zero-mean, unit-scale latents:
the DiT is trained on exactly what ComfyUI feeds it. A checkpoint is exported every
``--ckpt-minutes`` and at the end.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data
from ._comfy import ROOT, ensure_comfy_path, init_weights

DEFAULT_OUT = ROOT / "toyworld" / "weights" / "toy_wan_vae.safetensors"
VAE_DIM = 8
Z_DIM = 16


def build_vae(dim: int = VAE_DIM):
    """The module comfy.sd.VAE builds for a Wan 2.1 VAE state dict of this width."""
    ensure_comfy_path()
    import comfy.ldm.wan.vae

    return comfy.ldm.wan.vae.WanVAE(dim=dim, z_dim=Z_DIM, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                    attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)


def fresh_vae(dim: int = VAE_DIM, seed: int = 0, identity: bool = False):
    """A newly initialised VAE: seeded default init with the temporal parts holding the frame;
    ``identity`` (``--identity-init``) also makes it signal-preserving with residual branches at zero."""
    vae = build_vae(dim)
    init_weights(vae, seed)
    if identity:
        init_signal_preserving(vae, seed)
    init_temporal_identity(vae)
    if identity:
        init_residual_identity(vae)
    return vae


def init_temporal_identity(vae) -> None:
    """Start the temporal parts as "hold the frame": every causal 3x3x3 conv looks only at the
    current frame (earlier taps zero), the encoder's temporal downsamplers keep the latest frame of
    each pair and the decoder's temporal upsamplers repeat each frame. Then training on single
    frames (cheap) already gives a VAE that works on whole clips -- latent frame k stands for pixel
    frame 4k and decodes to 4 equal frames -- and the video phase only has to refine it."""
    from comfy.ldm.wan.vae import CausalConv3d, Resample

    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, Resample) and hasattr(m, "time_conv"):
                w = m.time_conv.weight  # [out, in, 3, 1, 1]
                w.zero_()
                m.time_conv.bias.zero_()
                c = w.shape[1]
                for k in range(w.shape[0] // c):
                    w[k * c:(k + 1) * c, :, -1, 0, 0] = torch.eye(c)
            elif isinstance(m, CausalConv3d) and m.weight.shape[2] > 1:
                m.weight[:, :, :-1] = 0


def reinit(module, seed: int) -> None:
    """Fresh weights for ``module`` (a part of a trained VAE), starting as close to a no-op as its
    kind allows: RMS norms at gamma 1, temporal taps "hold the frame", and a residual block with an
    identity shortcut with its residual branch's last conv at zero -- the block passes its input on
    and the rest of the network keeps working while it learns."""
    from comfy.ldm.wan.vae import RMS_norm

    init_weights(module, seed)
    init_temporal_identity(module)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, RMS_norm):
                m.gamma.fill_(1.0)
    init_residual_identity(module, identity_shortcuts_only=True)


def init_signal_preserving(module, seed: int) -> None:
    """A fresh VAE in which the input reaches the output on step 1: every conv gets weights of
    variance 1 / fan-in over its spatial taps (the temporal taps are set by init_temporal_identity
    afterwards) and zero biases. PyTorch's default init shrinks a signal ~1.7x per conv and adds a
    bias of similar size, so after the dozen convs on the path between image and latent the
    encoder's and decoder's RMS norms see mostly bias: measured on a fresh dim-8 WanVAE, the
    decoded image varied 0.04 (0.0002 with zeroed residual branches) across inputs whose pixels
    vary 0.46, and training settled on a flat grey image before it learnt any colour."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv3d, torch.nn.Conv2d)):
                w = m.weight
                fan_in = w.shape[1] * w.shape[-1] * w.shape[-2]
                w.copy_(torch.randn(w.shape, generator=g) / fan_in ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()


def init_residual_identity(module, identity_shortcuts_only: bool = False) -> None:
    """Zero the last layer of every residual branch (each ResidualBlock's last conv, each
    AttentionBlock's ``proj``), so that the block starts as its shortcut (SkipInit / Fixup): with
    init_signal_preserving the network is then a shallow conv net on step 1 and deepens as the
    branches grow. On its own, over PyTorch's default init, it measured no better (400 steps:
    colour 17 %, like the default) -- the shrinking, bias-dominated path is what has to go.
    Residual blocks whose shortcut is a 1x1 conv are included unless ``identity_shortcuts_only``."""
    from comfy.ldm.wan.vae import AttentionBlock, ResidualBlock

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, ResidualBlock):
                if identity_shortcuts_only and not isinstance(m.shortcut, torch.nn.Identity):
                    continue
                m.residual[-1].weight.zero_()
                m.residual[-1].bias.zero_()
            elif isinstance(m, AttentionBlock) and not identity_shortcuts_only:
                m.proj.weight.zero_()
                m.proj.bias.zero_()


def decoder_input(mu, log_var, latent_noise: float, eps):
    """What the decoder sees in training (``--latent-noise``): a posterior sample
    ``mu + sigma * eps`` when ``latent_noise`` < 0, else ``mu`` plus ``eps`` scaled to
    ``latent_noise`` times mu's own spread (detached: the noise does not pull mu's scale)."""
    if latent_noise < 0:
        return mu + torch.exp(0.5 * log_var) * eps
    return mu + latent_noise * mu.detach().std() * eps


def encode_stats(vae, x):
    """(mu, log_var) of the posterior, through the same chunked causal path as ``WanVAE.encode``
    (first frame alone, then groups of 4 frames, with the conv feature cache; newer ComfyUI, whose
    module has ``count_cache_layers``, feeds 2 frames at a time and flags the last chunk ``final``)."""
    import comfy.ldm.wan.vae as wan_vae

    t = x.shape[2]
    outs = []
    if hasattr(wan_vae, "count_cache_layers"):
        t = 1 + ((t - 1) // 4) * 4
        n = 1 + (t - 1) // 2
        feat_map = [None] * wan_vae.count_cache_layers(vae.encoder) if n > 1 else None
        for i in range(n):
            chunk = x[:, :, :1] if i == 0 else x[:, :, 1 + 2 * (i - 1):1 + 2 * i]
            kw = {} if i == 0 else {"final": i == n - 1}
            out = vae.encoder(chunk, feat_cache=feat_map, feat_idx=[0], **kw)
            if out is not None:   # a chunk may only fill the cache
                outs.append(out)
    else:
        count = wan_vae.count_conv3d
        feat_map = [None] * max(count(vae.encoder), count(vae.decoder))
        for i in range(1 + (t - 1) // 4):
            chunk = x[:, :, :1] if i == 0 else x[:, :, 1 + 4 * (i - 1):1 + 4 * i]
            outs.append(vae.encoder(chunk, feat_cache=feat_map, feat_idx=[0]))
    mu, log_var = vae.conv1(torch.cat(outs, 2)).chunk(2, dim=1)
    return mu, log_var


def crops(seeds, frames: int, crop: int, g: torch.Generator, shuffle: float = 0.0) -> torch.Tensor:
    """[B, 3, frames, crop, crop] in -1..1: random windows of whole clips, centred on an object
    70 % of the time (a random crop of a clip is mostly background). With probability ``shuffle``
    a crop's RGB channels are permuted (red <-> green <-> blue, yellow <-> cyan/magenta, grey stays
    grey): every channel then carries colour equally often, so no colour can be left unlearnt --
    without it one VAE learnt to encode green as dark grey."""
    out = []
    for s in seeds:
        c = data.make_clip(int(s))
        v = c.video  # [F, H, W, 3]
        F_, H, W, _ = v.shape
        f0 = int(torch.randint(0, F_ - frames + 1, (1,), generator=g))
        if torch.rand(1, generator=g).item() < 0.7:
            o = int(torch.randint(0, len(c.colors), (1,), generator=g))
            cx, cy = c.centers[o, f0].tolist()
            jx, jy = (torch.rand(2, generator=g) - 0.5).mul(crop * 0.6).tolist()
            x0, y0 = int(cx + jx - crop / 2), int(cy + jy - crop / 2)
        else:
            x0, y0 = (int(torch.randint(0, W - crop + 1, (1,), generator=g)),
                      int(torch.randint(0, H - crop + 1, (1,), generator=g)))
        x0, y0 = min(max(x0, 0), W - crop), min(max(y0, 0), H - crop)
        window = v[f0:f0 + frames, y0:y0 + crop, x0:x0 + crop].permute(3, 0, 1, 2)
        if shuffle and torch.rand(1, generator=g).item() < shuffle:
            window = window[torch.randperm(3, generator=g)]
        out.append(window)
    return torch.stack(out) * 2 - 1


@torch.no_grad()
def latent_stats(vae, seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and one global std of the raw posterior means over whole clips."""
    zs = []
    for s in seeds:
        x, _ = data.make_batch([int(s)])
        zs.append(vae.encode(x))
    z = torch.cat(zs)  # [B, C, T, h, w]
    mean = z.mean(dim=(0, 2, 3, 4))
    std = (z - mean.view(1, -1, 1, 1, 1)).pow(2).mean().sqrt()
    return mean, std


def export_state_dict(vae, stat_seeds) -> dict:
    """The VAE's state dict with the latent re-mapping folded in: new latent z' = a * z + b with
    a = S / std, b = M - mean * a (S, M: ComfyUI's Wan21 latents_std / latents_mean), so that
    ``Wan21.process_in(z') = (z - mean) / std``; the decoder's conv2 undoes it."""
    import comfy.latent_formats

    fmt = comfy.latent_formats.Wan21()
    M = fmt.latents_mean.flatten().float()
    S = fmt.latents_std.flatten().float()
    mean, std = latent_stats(vae, stat_seeds)
    a = S / std
    b = M - mean * a
    sd = {k: v.detach().clone().float() for k, v in vae.state_dict().items()}
    z = Z_DIM
    w1, b1 = sd["conv1.weight"], sd["conv1.bias"]  # [2z, 2z, 1, 1, 1]: rows :z are mu
    w1[:z] = w1[:z] * a.view(-1, 1, 1, 1, 1)
    b1[:z] = b1[:z] * a + b
    w2, b2 = sd["conv2.weight"], sd["conv2.bias"]  # [z, z, 1, 1, 1]
    w2_new = w2 / a.view(1, -1, 1, 1, 1)
    b2_new = b2 - (w2[:, :, 0, 0, 0] * (b / a).view(1, -1)).sum(1)
    sd["conv2.weight"], sd["conv2.bias"] = w2_new, b2_new
    return sd


def save(sd: dict, path: Path, meta: dict) -> None:
    import os

    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp),
                                metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=40.0, help="wall-clock budget; stops by itself")
    p.add_argument("--steps", type=int, default=0, help="exact step count (schedule by steps); 0: by time")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dim", type=int, default=VAE_DIM)
    p.add_argument("--batch", type=int, default=8, help="clips per step in the image phase")
    p.add_argument("--video-batch", type=int, default=4, help="clips per step in the video phase")
    p.add_argument("--frames", type=int, default=5, help="frames per crop in the video phase")
    p.add_argument("--crop", type=int, default=48)
    p.add_argument("--video-frac", type=float, default=0.3,
                   help="last fraction of the run (steps or time) trains on multi-frame crops")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--init", type=Path, default=None,
                   help="start from this exported VAE (a second stage; the re-export re-folds the statistics)")
    p.add_argument("--chroma", type=float, default=0.0,
                   help="extra L1 weight on colour (pixel minus its grey level) and on object pixels: blue and "
                        "red are about as bright as the background, so plain L1/MSE learns them last")
    p.add_argument("--bright-obj", action="store_true",
                   help="count pixels brighter than any background (white objects) as object pixels in --chroma")
    p.add_argument("--channel-shuffle", type=float, default=0.0,
                   help="share of crops whose RGB channels are permuted (colour balance, see crops())")
    p.add_argument("--edge", type=float, default=0.0,
                   help="extra L1 weight on the spatial finite differences: plain L1/MSE rounds the corners "
                        "of small squares and triangles off, and then the shapes cannot be told apart")
    p.add_argument("--reinit", default="",
                   help="comma-separated module names (e.g. encoder.downsamples.0) re-initialised after --init; a "
                        "residual block restarts as the identity. The shipped VAE erases green in its first encoder "
                        "block (toyworld/README.md), a minimum fine-tuning does not leave")
    p.add_argument("--identity-init", action="store_true",
                   help="a fresh VAE starts signal-preserving (init_signal_preserving) with every residual branch at "
                        "zero (init_residual_identity): it learns colours from the first steps")
    p.add_argument("--kl", type=float, default=1e-4, help="weight of the mean per-element KL")
    p.add_argument("--latent-noise", type=float, default=-1.0,
                   help="-1: decode a sample of the posterior (mu + sigma * eps). S >= 0: decode mu plus Gaussian noise of "
                        "S times mu's own (detached) spread (see decoder_input); used with --identity-init, where a fresh "
                        "sigma near 1 would drown a mu that starts small. Alone it did not fix the palette")
    p.add_argument("--num-clips", type=int, default=0, help="train on only this many clips (0: endless)")
    p.add_argument("--stat-clips", type=int, default=24, help="whole clips for the latent statistics")
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="torch device for the training (cuda where there is one)")
    p.add_argument("--log-every", type=int, default=20)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    vae = fresh_vae(args.dim, args.seed, args.identity_init)
    if args.init:
        import safetensors.torch

        vae.load_state_dict({k: v.float() for k, v in safetensors.torch.load_file(str(args.init)).items()})
    for name in filter(None, (n.strip() for n in args.reinit.split(","))):
        reinit(vae.get_submodule(name), args.seed)
    dev = torch.device(args.device)
    vae.to(dev).train()
    n_params = sum(v.numel() for v in vae.parameters())
    print(f"WanVAE dim={args.dim} z={Z_DIM}: {n_params / 1e6:.2f} M parameters", flush=True)
    opt = torch.optim.Adam(vae.parameters(), lr=args.lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(args.seed)
    noise_g = torch.Generator().manual_seed(args.seed + 1)
    # Statistics clips come from a seed range the training never draws from.
    stat_seeds = [10_000_000 + i for i in range(args.stat_clips)]
    budget = args.minutes * 60
    t0 = time.time()
    last_ckpt = t0
    step = 0
    losses = []
    history = []
    warmup = args.warmup

    def export(final: bool):
        vae.to("cpu").eval()       # the statistics clips are made on the CPU
        sd = export_state_dict(vae, stat_seeds)
        vae.to(dev).train()
        save(sd, args.out, {"toyworld": "wan21_vae", "dim": args.dim, "steps": step, "seed": args.seed,
                            "final": final, "loss": f"{sum(losses[-50:]) / max(1, len(losses[-50:])):.5f}"})
        print(f"  exported {args.out} at step {step}", flush=True)

    while True:
        elapsed = time.time() - t0
        if args.steps and step >= args.steps:
            break
        if not args.steps and elapsed >= budget:
            break
        frac = step / args.steps if args.steps else elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for grp in opt.param_groups:
            grp["lr"] = lr
        video = frac >= 1 - args.video_frac
        bsz, frames = (args.video_batch, args.frames) if video else (args.batch, 1)
        if args.num_clips:
            seeds = torch.randint(0, args.num_clips, (bsz,), generator=g).tolist()
        else:
            seeds = torch.randint(0, 2**31 - 1, (bsz,), generator=g).tolist()
        x = crops(seeds, frames, args.crop, g, args.channel_shuffle).to(dev)
        mu, log_var = encode_stats(vae, x)
        log_var = log_var.clamp(-30, 20)
        y = vae.decode(decoder_input(mu, log_var, args.latent_noise, torch.randn(mu.shape, generator=noise_g).to(dev)))
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        if args.chroma:
            cx, cy = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
            # The objects: saturated pixels (plus, with --bright-obj, white ones).
            obj = cx.abs().amax(1, keepdim=True) > 0.3
            if args.bright_obj:  # white has no chroma; it is brighter than any background
                obj = obj | (x.mean(1, keepdim=True) > 0.5)
            obj = obj.float()
            rec = rec + args.chroma * (F.l1_loss(cy, cx) + ((y - x).abs() * obj).mean())
        if args.edge:
            rec = rec + args.edge * sum(F.l1_loss(y.diff(dim=d), x.diff(dim=d)) for d in (-1, -2))
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).mean()
        loss = rec + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(rec.item())
        if step % args.log_every == 0 or step == 1:
            avg = sum(losses[-args.log_every:]) / len(losses[-args.log_every:])
            history.append((step, avg))
            print(f"step {step} {'video' if video else 'image'} rec {avg:.5f} kl {kl.item():.3f} lr {lr:.2e} t {time.time() - t0:.0f}s", flush=True)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            export(False)
            last_ckpt = time.time()
    export(True)
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min; first rec {losses[0]:.5f}, "
          f"last-50 rec {sum(losses[-50:]) / len(losses[-50:]):.5f}", flush=True)
    return {"steps": step, "losses": losses, "history": history}


if __name__ == "__main__":
    main()
