"""First-frame sharing and mask-biased cross-attention (dynamic mask guidance, METHODS.md §4, paper 003).

The paper keeps an object's identity across a video by letting every frame's self-attention
queries Q_i use the *first* frame's keys and values (K_1, V_1) -- Eq. 5, "first-frame sharing" --
and biases cross-attention with a mask term, softmax((Q K^T + M K^T) / sqrt(d)) V. The paper's
M is a learned projection of the mask; the training-free form here adds a constant logit bias to
the *subject tokens'* columns for the queries inside that object's region.

On the video DiTs (Wan, LTX-Video, HunyuanVideo) self-attention is joint over all (frame, row,
col) tokens; tokens are frame-major, so the video tokens are ``T`` consecutive frames of ``S``
tokens each (``core.token_layout``). The rules:

* ``add_first`` -- the paper on top of full attention. The paper's UNet keeps its temporal layers
  and *appends* (K_1, V_1) to each frame's spatial self-attention (Eq. 5, "[K_i, K_1]"). On joint
  3-D attention every frame already sees every frame, so appending frame 0's keys ``s`` more times
  is the same as a logit bias ``log(1 + s)`` on frame 0's keys for the queries of frames >= 1
  (a key present m times gets m times its softmax weight). s = 1: the paper's one extra copy;
  s = 0: plain attention. Frame-0 queries are unchanged (frame 0 appended to itself changes no
  softmax). Attention between the other frames stays: motion is not routed through frame 0.
  Cost: two SDPA calls (frame-0 queries, the rest) with a per-key bias; no extra score work.
  On a UNet's spatial layers (own frame only) appending frame 0 ``s`` times is ``anchor`` with
  strength ``s``: the node maps it so.

* ``paper``  -- every frame's queries attend the first latent frame's keys/values only (Eq. 5).
  Frame 0 attends itself, as before.
* ``anchor`` -- every frame's queries attend their *own* frame plus the first frame. Frame 0 sees
  its keys once (its own frame *is* the first frame; a key seen twice would count double in the
  softmax). Cost: N x 2S score work instead of N x N -- on joint 3-D attention a speed feature
  (Wan 1.3B at 81 frames: 21 latent frames, so ~2/21 of the full attention's scores).
* ``full``   -- no first-frame restriction (plain attention); only the mask bias applies. The node
  uses it when the bias is active and the sharing is not.

Strength (``strength`` s >= 0), different forms because the rules differ:

* add_first: frame 0's K/V appended s more times, a logit bias ``log(1 + s)`` (above).
* anchor: a logit bias ``log(s)`` on the first-frame keys, for queries of frames >= 1. s = 1 is
  plain attention over (own frame + first frame); s = 0 is own-frame attention only (no anchor);
  s > 1 pulls towards the first frame (s = e adds 1 to those logits). Equivalently the first
  frame's keys get s times their softmax weight before renormalisation.
* paper: a softmax over the first frame alone is invariant to a logit bias, so s is an output
  blend, ``s * A_first + (1 - s) * A_model`` with A_model the attention the model would have run
  (``base``, given by the caller; needed only when s < 1). s is clamped to [0, 1] there.

Extra keys: joint-attention models (HunyuanVideo) append text tokens after the video tokens in the
same attention. Video queries always keep every text key (the text conditioning must stay); text
queries attend everything, unchanged. A per-key ``key_mask`` (HunyuanVideo's text padding; any
[B?, 1?, 1?, Lk] additive or boolean mask) applies on top.

Mask bias: ``subject_bias(labels, subjects, n_keys, bias)`` is the [N, T_text] additive matrix --
``bias`` on object k's subject-token columns for the queries labelled k + 1 (0 elsewhere). It is
N x T_text at most, never N x N. On joint models the bias is applied per label group as a per-key
bias on the text keys (one kernel call per group present: labels are few).

Everything runs SDPA's fused kernels on dense sub-problems; nothing of size N x N is built.
Layouts as ``core.region_attention``: q/k/v [B, H, L, D] (``skip_reshape``) or ComfyUI's default
[B, L, H*D] through the ``*_bnc`` wrappers.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

MODES = ("add_first", "paper", "anchor", "full")

__all__ = ["MODES", "first_frame_attention", "first_frame_split", "add_first_attention", "first_frame_bias", "first_frame_attention_bnc", "subject_bias", "label_groups",
           "biased_cross_attention", "biased_cross_attention_bnc", "shared_noise", "NOISE_VARIANCE"]


def _to4(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _from4(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _additive(key_mask: Optional[torch.Tensor], batch: int, n_keys: int, dtype) -> Optional[torch.Tensor]:
    """A per-key mask as an additive float [b, 1, 1, Lk] (b = 1 or batch); None stays None."""
    if key_mask is None:
        return None
    m = key_mask
    if m.shape[-1] != n_keys:
        raise ValueError(f"key_mask's last dim must be the number of keys {n_keys}, got {tuple(m.shape)}")
    m = m.reshape(m.shape[0] if m.dim() > 1 else 1, -1, n_keys)
    if m.shape[1] != 1:
        raise ValueError(f"key_mask must be per key ([B, 1, Lk]), got {tuple(key_mask.shape)}: a per-query mask "
                         "is the N x N object this module avoids")
    if m.shape[0] not in (1, batch):
        raise ValueError(f"key_mask batch {m.shape[0]} does not match batch {batch}")
    if m.dtype == torch.bool:
        m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill_(~m, float("-inf"))
    return m.to(dtype)[:, None]   # [b, 1, 1, Lk]


def _sdpa(q, k, v, mask, scale):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _log_strength(strength: float) -> float:
    return float("-inf") if strength <= 0 else math.log(strength)


def first_frame_bias(strength: float) -> float:
    """add_first's logit bias on frame 0's keys: frame 0 appended ``strength`` more times."""
    return math.log1p(strength)


def _video_queries(q, k, v, frames, n, mode, strength, mask, extra_bias, scale):
    """Outputs of the n video queries q [B, H, n, D] under ``mode``; k/v hold the n video keys then
    E extra keys. ``mask``: additive [b, 1, 1, Lk] or None; ``extra_bias``: [E] bias on the extra
    keys or None."""
    B, H, _, D = q.shape
    Lk = k.shape[2]
    E = Lk - n
    S = n // frames
    dtype = q.dtype

    def cols_bias(sel_mask, eb):
        """Additive bias over (selected video keys, extra keys): [b, 1, 1, *]."""
        parts = []
        if sel_mask is not None:
            parts.append(sel_mask)
        if E:
            xm = mask[..., n:] if mask is not None else q.new_zeros(1, 1, 1, E)
            if eb is not None:
                xm = xm + eb.to(q.device, dtype)
            parts.append(xm)
        return parts

    if mode in ("full", "add_first"):
        full = mask
        if extra_bias is not None and E:
            vm = mask[..., :n] if mask is not None else q.new_zeros(1, 1, 1, n)
            xm = (mask[..., n:] if mask is not None else q.new_zeros(1, 1, 1, E)) + extra_bias.to(q.device, dtype)
            full = torch.cat([vm, xm], -1)
        if mode == "full" or frames == 1 or strength == 0:
            return _sdpa(q, k, v, full, scale)
        # Frame-0 queries plain; later frames' queries with log(1 + s) on frame 0's keys.
        first = q.new_zeros(1, 1, 1, Lk)
        first[..., :S] = first_frame_bias(strength)
        rest = first if full is None else full + first
        return torch.cat([_sdpa(q[:, :, :S], k, v, full, scale), _sdpa(q[:, :, S:], k, v, rest, scale)], 2)

    k0, v0 = k[:, :, :S], v[:, :, :S]
    kx, vx = k[:, :, n:], v[:, :, n:]
    m0 = None if mask is None else mask[..., :S]
    need_mask = mask is not None or extra_bias is not None

    def first_only(qq):
        kk = torch.cat([k0, kx], 2) if E else k0
        vv = torch.cat([v0, vx], 2) if E else v0
        m = None
        if need_mask:
            vid = m0 if m0 is not None else q.new_zeros(1, 1, 1, S)
            parts = [vid] + cols_bias(None, extra_bias)
            b = max(p.shape[0] for p in parts)
            m = torch.cat([p.expand(b, -1, -1, -1) for p in parts], -1)
        return _sdpa(qq, kk, vv, m, scale)

    if mode == "paper" or frames == 1:
        return first_only(q)

    # anchor: frame 0 attends itself (once); frames 1.. attend [first frame, own frame, extra].
    out0 = first_only(q[:, :, :S])
    T1 = frames - 1

    def per_frame(x):   # [B, H, n - S, D] -> [B * T1, H, S, D]
        return x.reshape(B, H, T1, S, x.shape[-1]).transpose(1, 2).reshape(B * T1, H, S, x.shape[-1])

    def with_first(x, x0, xx):   # keys/values [B * T1, H, 2S + E, D]
        d = x.shape[-1]
        parts = [x0.unsqueeze(1).expand(B, T1, H, S, d), x.reshape(B, H, T1, S, d).transpose(1, 2)]
        if E:
            parts.append(xx.unsqueeze(1).expand(B, T1, H, E, d))
        return torch.cat(parts, 3).reshape(B * T1, H, 2 * S + E, d)

    qr = per_frame(q[:, :, S:n])
    kr = with_first(k[:, :, S:n], k0, kx)
    vr = with_first(v[:, :, S:n], v0, vx)
    mr = None
    if need_mask or strength != 1.0:
        bias0 = torch.full((1, 1, 1, S), _log_strength(strength), dtype=dtype, device=q.device)
        if m0 is not None:
            bias0 = bias0 + m0
        own = (mask[..., S:n] if mask is not None else q.new_zeros(1, 1, 1, n - S))   # [b, 1, 1, n - S]
        b = max(bias0.shape[0], own.shape[0])
        own = own.expand(b, -1, -1, -1).reshape(b, 1, T1, S).transpose(1, 2)           # [b, T1, 1, S]
        parts = [bias0.expand(b, -1, -1, -1).reshape(b, 1, 1, S).expand(b, T1, 1, S), own]
        for p in cols_bias(None, extra_bias):
            parts.append(p.expand(b, -1, -1, -1).reshape(b, 1, 1, E).expand(b, T1, 1, E))
        mr = torch.cat(parts, -1)                                                      # [b, T1, 1, 2S + E]
        mr = mr.expand(B, T1, 1, mr.shape[-1]).reshape(B * T1, 1, 1, mr.shape[-1])
    outr = _sdpa(qr, kr, vr, mr, scale)
    dv = outr.shape[-1]
    outr = outr.reshape(B, T1, H, S, dv).transpose(1, 2).reshape(B, H, n - S, dv)
    return torch.cat([out0, outr], 2)


def first_frame_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int, mode: str = "anchor",
                          strength: float = 1.0, *, n_video: Optional[int] = None, scale: Optional[float] = None,
                          key_mask: Optional[torch.Tensor] = None, base: Optional[torch.Tensor] = None,
                          groups: Optional[Sequence] = None) -> torch.Tensor:
    """First-frame sharing for q/k/v [B, H, L, D] whose first ``n_video`` (default: all) tokens are
    ``frames`` frames of equal size, frame-major; the rest are extra tokens (joint text).

    ``groups``: optional ``[(rows, extra_bias), ...]`` from :func:`label_groups` -- video query
    positions and the per-extra-key bias they get (the joint-attention form of the mask bias).
    ``base``: the model's own output (same layout), blended in paper mode when strength < 1.
    Returns [B, H, L, Dv].
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if strength < 0 or not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    B, H, L, D = q.shape
    Lk = k.shape[2]
    n = L if n_video is None else int(n_video)
    if frames < 1 or n % frames or n > min(L, Lk):
        raise ValueError(f"{n} video tokens cannot be {frames} equal frames within {L} queries / {Lk} keys")
    if L - n != Lk - n and L != n:
        raise ValueError(f"extra queries ({L - n}) and extra keys ({Lk - n}) must match (joint attention)")
    mask = _additive(key_mask, B, Lk, q.dtype)
    out = q.new_empty(B, H, L, v.shape[-1])
    if L > n:   # extra (text) queries: plain attention over every key
        out[:, :, n:] = _sdpa(q[:, :, n:], k, v, mask, scale)
    qv = q[:, :, :n]
    if not groups:
        out[:, :, :n] = _video_queries(qv, k, v, frames, n, mode, strength, mask, None, scale)
    else:
        vid = out[:, :, :n]
        for rows, eb in groups:
            res = _video_queries(qv, k, v, frames, n, mode, strength, mask, eb, scale)
            rows = rows.to(q.device)
            vid.index_copy_(2, rows, res.index_select(2, rows))
    if mode == "paper" and strength < 1.0:
        if base is None:
            raise ValueError("paper mode with strength < 1 blends with the model's own attention: pass base")
        s = float(strength)
        out[:, :, :n] = s * out[:, :, :n] + (1.0 - s) * base[:, :, :n].to(out.dtype)
    return out


def first_frame_attention_bnc(q, k, v, heads: int, frames: int, mode: str = "anchor", strength: float = 1.0, *,
                              n_video: Optional[int] = None, scale: Optional[float] = None, key_mask=None,
                              base: Optional[torch.Tensor] = None, groups=None) -> torch.Tensor:
    """:func:`first_frame_attention` for ComfyUI's default layout [B, L, H*D] -> [B, L, H*Dv]."""
    if q.shape[-1] % heads or k.shape[-1] % heads or v.shape[-1] % heads:
        raise ValueError(f"channel counts {q.shape[-1]}, {k.shape[-1]}, {v.shape[-1]} not divisible by heads={heads}")
    b4 = None if base is None else _to4(base, heads)
    out = first_frame_attention(_to4(q, heads), _to4(k, heads), _to4(v, heads), frames, mode, strength,
                                n_video=n_video, scale=scale, key_mask=key_mask, base=b4, groups=groups)
    return _from4(out)


# --------------------------------------------------------------------------------------------
# Mask-biased cross-attention
# --------------------------------------------------------------------------------------------


def subject_bias(labels: torch.Tensor, subjects: Sequence[Sequence[int]], n_keys: int, bias: float,
                 dtype=torch.float32) -> torch.Tensor:
    """[N, n_keys]: ``bias`` where query i is labelled k + 1 and key j is one of object k's subject
    tokens, 0 elsewhere. N x T_text, built once per sampling run."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    k = len(subjects)
    cols = torch.zeros(k + 1, n_keys, dtype=dtype, device=labels.device)   # row 0: background, no bias
    for i, pos in enumerate(subjects):
        bad = [p for p in pos if not 0 <= p < n_keys]
        if bad:
            raise ValueError(f"subject tokens {bad} of object {i} are outside the {n_keys} text keys")
        cols[i + 1, list(pos)] = bias
    if labels.numel() and int(labels.max()) > k:
        raise ValueError(f"labels name object {int(labels.max()) - 1} but only {k} objects have subject tokens")
    return cols[labels]


def label_groups(labels: torch.Tensor, subjects: Sequence[Sequence[int]], n_keys: int, bias: float,
                 dtype=torch.float32) -> list:
    """The joint-attention form of :func:`subject_bias`: ``[(rows, extra_bias [n_keys]), ...]`` per
    label present (background gets no bias)."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    out = []
    for g in torch.unique(labels).tolist():
        rows = (labels == g).nonzero().flatten()
        eb = None
        if g > 0:
            eb = torch.zeros(n_keys, dtype=dtype)
            eb[list(subjects[g - 1])] = bias
        out.append((rows, eb))
    return out


def biased_cross_attention(q, k, v, bias_matrix: torch.Tensor, *, key_mask=None, scale=None) -> torch.Tensor:
    """softmax(q k^T * scale + bias_matrix + key_mask) v for q/k/v [B, H, N/T, D]; ``bias_matrix``
    [N, T] (or [B, N, T]) from :func:`subject_bias`."""
    B, _, N, _ = q.shape
    T = k.shape[2]
    bm = bias_matrix.to(q.device, q.dtype)
    if bm.shape[-2:] != (N, T):
        raise ValueError(f"bias matrix {tuple(bm.shape)} does not match {N} queries x {T} keys")
    bm = bm.reshape(-1, 1, N, T)
    mask = _additive(key_mask, B, T, q.dtype)
    if mask is not None:
        bm = bm + mask
    return _sdpa(q, k, v, bm, scale)


def biased_cross_attention_bnc(q, k, v, heads: int, bias_matrix, *, key_mask=None, scale=None) -> torch.Tensor:
    return _from4(biased_cross_attention(_to4(q, heads), _to4(k, heads), _to4(v, heads), bias_matrix,
                                         key_mask=key_mask, scale=scale))


# --------------------------------------------------------------------------------------------
# Shared noise
# --------------------------------------------------------------------------------------------

NOISE_VARIANCE = ("preserve", "paper")


def shared_noise(noise: torch.Tensor, alpha: float, variance: str = "preserve", frame_dim: int = 2,
                 first: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. 8: eps_i <- alpha * E(v_1) + b * eps_i for every frame i >= 1; frame 0 keeps its noise.

    ``first``: E(v_1), the encoded first frame, in the latent space the sampler adds noise in (the
    model's ``latent_format.process_in`` of a VAE encoding); [B?, C, H, W], or a latent whose frame
    0 is taken. ``first=None`` shares frame 0's own *noise* instead (an older form, not Eq. 8).

    ``variance="preserve"`` (default) keeps every frame's noise at unit second moment -- what the
    sampler's sigma schedule assumes (the first step scales noise by sigma_max; a smaller one is a
    partly denoised start the schedule does not know about). With frame 0's noise (independent unit
    Gaussians) b = sqrt(1 - alpha^2); with E(v_1), a fixed signal of mean square m per batch item,
    b = sqrt(1 - alpha^2 m) (m ~ 1 for normalised latents, so b ~ sqrt(0.96) at alpha 0.2).
    ``variance="paper"``: b = 1 - alpha as Eq. 8 is written (0.8 at alpha 0.2: with unit-scale
    terms later frames start less noisy than the schedule says); kept for fidelity to the paper.
    """
    if variance not in NOISE_VARIANCE:
        raise ValueError(f"variance must be one of {NOISE_VARIANCE}, got {variance!r}")
    if not 0.0 <= alpha <= 1.0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if noise.shape[frame_dim] < 2 or alpha == 0.0:
        return noise.clone()
    fd = frame_dim % noise.ndim
    if first is None:
        eps1 = noise.narrow(fd, 0, 1)
        m2 = torch.ones(())
    else:
        eps1 = first.to(noise)
        if eps1.ndim == noise.ndim - 1:
            eps1 = eps1.unsqueeze(fd)
        if eps1.ndim != noise.ndim:
            raise ValueError(f"first_frame: a latent {tuple(first.shape)} does not fit noise {tuple(noise.shape)}")
        eps1 = eps1.narrow(fd, 0, 1)
        want = noise.shape[:fd] + (1,) + noise.shape[fd + 1:]
        if eps1.shape[1:] != want[1:] or eps1.shape[0] not in (1, noise.shape[0]):
            raise ValueError(f"first_frame: its latent frame {tuple(eps1.shape)} does not match the video latent's "
                             f"frames {want}; encode the first frame at the video's size with the model's VAE")
        m2 = eps1.pow(2).mean(dim=tuple(range(1, eps1.ndim)), keepdim=True)
    if variance == "paper":
        b = torch.full_like(m2, 1.0 - alpha)
    else:
        if float((alpha * alpha * m2).max()) >= 1.0:
            raise ValueError(f"alpha: {alpha} times the first frame (mean square {float(m2.max()):.3g}) already "
                             "exceeds unit variance; lower alpha or use variance 'paper'")
        b = (1.0 - alpha * alpha * m2).sqrt()
    out = noise.clone()
    rest = out.narrow(fd, 1, noise.shape[fd] - 1)
    rest.mul_(b.to(noise)).add_(alpha * eps1)
    return out


# --------------------------------------------------------------------------------------------
# Together with region masking (MaskedAttentionPatch): one plan for both rules
# --------------------------------------------------------------------------------------------

PLAN_MODES = ("paper", "anchor", "own", "all")


def region_frame_plan(labels: torch.Tensor, frames: int, mode: str):
    """The intersection of PEEKABOO's region rule with a frame rule, as a
    ``core.region_attention`` group plan over N = frames * S video tokens (frame-major).

    Query token i (frame f, label g) attends the keys labelled g in the frames ``mode`` names:
    ``paper`` frame 0; ``anchor`` frame 0 and f; ``own`` f only; ``all`` every frame (the region
    rule alone, DiT self-attention). An object absent from frame 0 (it enters later) has no
    first-frame keys: its queries then attend their own frame's (never an empty softmax).
    Groups: one per (frame, label) present -- T x labels kernel calls, memoised per run.
    """
    from . import region_attention as ra

    if mode not in PLAN_MODES:
        raise ValueError(f"mode must be one of {PLAN_MODES}, got {mode!r}")
    labels = torch.as_tensor(labels).long().reshape(-1)
    n = labels.numel()
    if frames < 1 or n % frames:
        raise ValueError(f"{n} tokens cannot be {frames} equal frames")
    S = n // frames
    lab = labels.view(frames, S)
    if mode == "all":
        return ra.self_attention_plan(labels)
    queries, keys = [], []
    for f in range(frames):
        for g in torch.unique(lab[f]).tolist():
            own = f * S + (lab[f] == g).nonzero().flatten()
            first = (lab[0] == g).nonzero().flatten()
            if mode == "own" or first.numel() == 0:
                k = own
            elif mode == "paper" or f == 0:
                k = first
            else:
                k = torch.cat([first, own])
            queries.append(own)
            keys.append(k)
    return ra.group_attention_plan(queries, keys, n, n)


# --------------------------------------------------------------------------------------------
# add_first under a region rule: the region rule's own plan, plus the frame-0 bias
# --------------------------------------------------------------------------------------------


def _restrict(plan, rows: torch.Tensor):
    """``plan`` (one item's AttentionPlan, a BatchPlan of them, or None) for the queries at ``rows``
    only, renumbered 0..len(rows)-1; every group keeps its key set."""
    from . import region_attention as ra

    if plan is None:
        return None
    if isinstance(plan, ra.BatchPlan):
        return ra.BatchPlan(tuple((b, _restrict(p, rows)) for b, p in plan.items), plan.batch_size)
    new = torch.full((plan.num_queries,), -1, dtype=torch.long)
    new[rows] = torch.arange(rows.numel())
    queries, keys = [], []
    for g in plan.groups:
        qpos = torch.arange(plan.num_queries)[g.queries] if isinstance(g.queries, slice) else g.queries.cpu()
        kept = new[qpos]
        kept = kept[kept >= 0]
        if kept.numel():
            kidx = g.queries if g.keys is None else g.keys
            queries.append(kept)
            keys.append(torch.arange(plan.num_keys)[kidx] if isinstance(kidx, slice) else kidx.cpu())
    return ra.group_attention_plan(queries, keys, rows.numel(), plan.num_keys)


def first_frame_split(plan, num_queries: int, frame_tokens: int, n_video: int) -> tuple:
    """Split a region rule's plan (or None: unrestricted) between the queries add_first leaves alone
    -- frame 0's video tokens and any extra (text) tokens after the ``n_video`` video tokens -- and
    the later frames' queries, which get the frame-0 bias. Returns ((rows, plan), (rows, plan)).
    Built once per run (a plan is a pure function of the latent shape)."""
    a = torch.cat([torch.arange(frame_tokens), torch.arange(n_video, num_queries)])
    b = torch.arange(frame_tokens, n_video)
    return (a, _restrict(plan, a)), (b, _restrict(plan, b))


def add_first_attention(q, k, v, split, first_bias, frame_tokens: int, *, heads: Optional[int] = None,
                        key_mask=None, scale=None) -> torch.Tensor:
    """add_first where a region rule restricts the keys: each query attends what the region plan
    allows (PEEKABOO: its own region in every frame), and the later frames' queries also get
    ``first_bias`` (log(1 + s), a float or one per batch item: 0 where the rule is off) on frame 0's
    keys. ``split`` from :func:`first_frame_split`, with the plans as ``core.region_attention``
    batch plans. q/k/v [B, H, L, D], or [B, L, H*D] with ``heads``. Two plan runs, no N x N object."""
    from . import region_attention as ra

    dim = 1 if heads else 2
    B, Lk = q.shape[0], k.shape[dim]
    run = (lambda qq, p, m: ra.masked_attention_bnc(qq, k, v, heads, p, key_mask=m, scale=scale)) if heads else \
        (lambda qq, p, m: ra.masked_attention(qq, k, v, p, key_mask=m, scale=scale))
    (rows_a, plan_a), (rows_b, plan_b) = split
    fb = torch.as_tensor(first_bias, dtype=q.dtype, device=q.device).reshape(-1, 1)
    bias = torch.zeros(fb.shape[0], Lk, dtype=q.dtype, device=q.device)
    bias[:, :frame_tokens] = fb
    base = None
    if key_mask is not None:
        base = _additive(key_mask, B, Lk, q.dtype).reshape(-1, Lk)
        bias = bias + base
    out = q.new_empty(q.shape[:dim + 1] + v.shape[dim + 1:])
    rows_a, rows_b = rows_a.to(q.device), rows_b.to(q.device)
    if rows_a.numel():
        out.index_copy_(dim, rows_a, run(q.index_select(dim, rows_a), plan_a, base))
    if rows_b.numel():
        out.index_copy_(dim, rows_b, run(q.index_select(dim, rows_b), plan_b, bias))
    return out
