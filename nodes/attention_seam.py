"""The one patch seam: every Box Director node that changes a model's attention goes through here.

A node clones the ModelPatcher and calls :func:`install` with its rule. The clone then carries one
:class:`Controller` (under ``transformer_options[SEAM_KEY]``) that owns

* the ``optimized_attention_override`` — every attention call of Wan, HunyuanVideo, LTX-Video and
  the SVD UNet passes through it;
* an ``APPLY_MODEL`` wrapper that records, per model call, what the attention calls cannot see:
  the latent shape, the step, which batch chunks are cond / uncond, the text length. It travels
  down to the attention calls inside the per-call ``transformer_options`` dict, so there is no
  shared mutable state and context windows / concurrent samplers cannot mix calls up.

Rules compose like middleware: each gets the call and ``proceed`` (the next rule, ending in the
attention the model would have run — ComfyUI's own or another pack's override). Stacking a second
node appends its rule to a *copy* of the controller; the model it was cloned from keeps its own.

The composition rule (the order rules see a call in), explicit because a rule that computes
attention itself never calls ``proceed``, and nothing after it sees the call:

1. Each rule has a ``role`` (class or instance attribute): ``OBSERVER`` reads the call (q, k, v)
   and returns ``proceed()``'s result unchanged (ReAttention Edit's cross-attention capture);
   ``SHAPER`` may change the output or compute it itself (Masked Attention Patch, First Frame
   Share). A rule without a ``role`` is a shaper: it might compute attention.
2. Every observer runs before every shaper, observers in install order, then shapers in their
   order on the controller (install order; rule 4 makes their composition order-free). So an
   observer sees every call the family classifies, whichever shapers are installed
   and in whatever node order. The controller checks that an observer returned ``proceed()``'s
   result; one that did not is a bug and raises.
3. A model call made with ``ForwardCall.purpose == RECONSTRUCT`` (set through
   :func:`with_purpose`; ReAttention Edit's inversion) reaches no shaper: observers see it, the
   attention is the model's own. Reconstructing the source must not be shaped by rules meant for
   the new video (their token positions are the edit prompt's).
4. Constraints, not names: a shaper that restricts which keys a query may see to a partition of
   the tokens (Masked Attention Patch's regions) exposes ``partition(call)``, returning a
   :class:`Partition` when it is active on the call, else None. Before any rule runs, the
   controller gathers them once into ``call.constraints``. A shaper that can compute its own rule
   *inside* such constraints (First Frame Share: the intersection) exposes ``composes(call)``;
   when one says True, the rules whose partitions it took are left out of this call's chain and
   it answers for them (including their mask normalisation). Otherwise each rule runs as usual.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import torch

import comfy.patcher_extension

from . import model_families

SEAM_KEY = "boxdirector.seam"
CALL_KEY = "boxdirector.call"
WRAPPER_KEY = "boxdirector.seam"
PURPOSE_KEY = "boxdirector.purpose"    # in transformer_options: what a model call is for (ForwardCall.purpose)
SAMPLE, RECONSTRUCT = "sample", "reconstruct"
OBSERVER, SHAPER = "observer", "shaper"
log = logging.getLogger("boxdirector")


@dataclass
class ForwardCall:
    """What one model call (one apply_model) knows that its attention calls cannot see."""

    family: model_families.Family
    latent_shape: tuple                 # x as the model receives it, e.g. [B, C, T, H, W] ([B*F, C, H, W] for SVD)
    cond_or_uncond: tuple               # per batch chunk: 0 = cond, 1 = uncond (ComfyUI's order)
    step_fraction: Optional[float]      # where the call sits in sampling, ComfyUI's percent (schedule_percent)
    sigma: Optional[float]
    text_len: Optional[int]             # keys of the text cross-attention (c_crossattn length)
    counters: dict = field(default_factory=dict)
    purpose: str = SAMPLE               # RECONSTRUCT: no shaping rule applies (module docstring, rule 3)

    @property
    def chunk_size(self) -> int:
        return self.latent_shape[0] // max(1, len(self.cond_or_uncond))

    def count(self, what: str) -> int:
        """Return how many ``what`` were counted before, and count one more."""
        n = self.counters.get(what, 0)
        self.counters[what] = n + 1
        return n


@dataclass
class AttentionCall:
    """One attention call, classified by the model family: ``kind`` is "self", "cross", "joint",
    "temporal" or "other" (left alone); ``block`` is the transformer block index (None if unknown)."""

    kind: str
    block: Optional[int]
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    heads: int
    args: tuple
    kwargs: dict
    forward: ForwardCall
    info: dict = field(default_factory=dict)   # family-specific facts (e.g. joint text length, SVD level)
    constraints: tuple = ()                    # the active shapers' Partitions (module docstring, rule 4)

    @property
    def skip_reshape(self) -> bool:
        return bool(self.kwargs.get("skip_reshape", False))

    @property
    def seq_len(self) -> int:
        return self.q.shape[2] if self.skip_reshape else self.q.shape[1]

    @property
    def video_len(self) -> int:
        return self.seq_len - int(self.info.get("num_text", 0))

    @property
    def mask(self):
        """The additive / boolean key mask the model passed (LTX positionally, Hunyuan by keyword)."""
        if "mask" in self.kwargs:
            return self.kwargs["mask"]
        return self.args[0] if self.args else None


@dataclass(frozen=True, eq=False)
class Partition:
    """A shaper's restriction of one call (rule 4): queries see only keys their ``plan`` allows."""

    rule: object            # the shaper that made it (left out of the chain when a rule composes it)
    labels: object          # region label per video token of one batch item (the family's video view)
    plan: object            # core.region_attention plan of one batch item: exactly what the rule runs
    on: tuple               # per CFG chunk (cond_or_uncond order): True where the restriction applies
    normalise: bool = False  # the rule EFDM-matches its output to the unrestricted one (mask normalisation)


class Rule(Protocol):
    name: str
    role: str          # OBSERVER or SHAPER (the default when absent); see the module docstring

    def attend(self, call: AttentionCall, proceed: Callable[[], torch.Tensor]) -> torch.Tensor:
        ...


@dataclass(frozen=True)
class Controller:
    family: model_families.Family
    rules: tuple = ()
    inner: Optional[Callable] = None   # an override that was there before us (another pack's)

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options; a controller is immutable, share it.
        return self

    def with_rule(self, rule: Rule) -> "Controller":
        return Controller(self.family, self.rules + (rule,), self.inner)

    # --- the attention override -------------------------------------------------------------
    def __call__(self, func, q, k, v, heads, *args, **kwargs):
        def default():
            if self.inner is not None:
                return self.inner(func, q, k, v, heads, *args, **kwargs)
            return func(q, k, v, heads, *args, **kwargs)

        topts = kwargs.get("transformer_options") or {}
        fwd = topts.get(CALL_KEY)
        if fwd is None or not self.rules:
            return default()
        call = self.family.classify(q, k, v, heads, args, kwargs, fwd, topts)
        if call is None or call.kind == "other":
            return default()
        if call.info.get("text_first"):
            return video_first(call, default, lambda c, d: self.run(c, d))
        return self.run(call, default)

    def run(self, call: AttentionCall, default: Callable[[], torch.Tensor]) -> torch.Tensor:
        fwd = call.forward
        rules = self.observers if fwd.purpose == RECONSTRUCT else self.observers + self.shapers
        rules = constrain(call, rules)

        def chain(i: int) -> Callable[[], torch.Tensor]:
            if i == len(rules):
                return default
            rule, rest = rules[i], chain(i + 1)
            if role_of(rule) != OBSERVER:
                return lambda: rule.attend(call, rest)

            def observe():
                seen = []

                def proceed():
                    seen.append(rest())
                    return seen[-1]

                out = rule.attend(call, proceed)
                if not seen or out is not seen[-1]:
                    raise RuntimeError(f"seam rule {getattr(rule, 'name', rule)!r} has role observer but did not "
                                       "return proceed()'s result; give it role shaper or return proceed()")
                return out

            return observe

        return chain(0)()

    @property
    def observers(self) -> tuple:
        return tuple(r for r in self.rules if role_of(r) == OBSERVER)

    @property
    def shapers(self) -> tuple:
        return tuple(r for r in self.rules if role_of(r) != OBSERVER)

    # --- the APPLY_MODEL wrapper --------------------------------------------------------------
    def apply_model(self, executor, x, t, c_concat=None, c_crossattn=None, control=None,
                    transformer_options=None, **kwargs):
        topts = dict(transformer_options or {})
        sigma = float(t.flatten()[0]) if torch.is_tensor(t) and t.numel() else None
        percent = schedule_percent(getattr(getattr(executor, "class_obj", None), "model_sampling", None), sigma)
        topts[CALL_KEY] = ForwardCall(
            family=self.family,
            latent_shape=tuple(x.shape),
            cond_or_uncond=tuple(topts.get("cond_or_uncond") or (0,)),
            step_fraction=step_fraction(topts) if percent is None else percent,
            sigma=sigma,
            text_len=int(c_crossattn.shape[1]) if torch.is_tensor(c_crossattn) and c_crossattn.ndim == 3 else None,
            purpose=topts.get(PURPOSE_KEY, SAMPLE),
        )
        return executor(x, t, c_concat, c_crossattn, control, topts, **kwargs)


def video_first(call: AttentionCall, default: Callable, run: Callable) -> torch.Tensor:
    """Run ``run(call, default)`` on a joint call whose model order is [text, video] as if it were
    [video, text], the one order rules and their plans are written for; the result goes back in the
    model's order. A rotation of the token axis (queries, keys, the key mask) is exact: attention
    is equivariant to permuting queries and invariant to permuting keys with their values."""
    t = call.seq_len - call.video_len
    tok = 2 if call.skip_reshape else 1
    out_tok = 2 if call.skip_reshape and call.kwargs.get("skip_output_reshape", False) else 1
    roll = lambda x, shift, dim: torch.roll(x, shift, dims=dim)   # noqa: E731
    kwargs = dict(call.kwargs)
    args = call.args
    mask = call.mask
    if torch.is_tensor(mask) and mask.shape[-1] == call.seq_len:
        mask = roll(mask, -t, mask.ndim - 1)
        if mask.ndim >= 2 and mask.shape[-2] == call.seq_len:
            mask = roll(mask, -t, mask.ndim - 2)
        if "mask" in kwargs:
            kwargs["mask"] = mask
        elif args:
            args = (mask,) + tuple(args[1:])
    moved = AttentionCall(call.kind, call.block, roll(call.q, -t, tok), roll(call.k, -t, tok), roll(call.v, -t, tok),
                          call.heads, args, kwargs, call.forward, {**call.info, "text_first": False})
    out = run(moved, lambda: roll(default(), -t, out_tok))
    return roll(out, t, out_tok)


def constrain(call: AttentionCall, rules: tuple) -> tuple:
    """Rule 4: ``call.constraints`` from the rules' partitions; the chain without the rules whose
    partitions another rule composes."""
    parts = tuple(p for p in (getattr(r, "partition", lambda c: None)(call) for r in rules) if p is not None)
    call.constraints = parts
    if parts and any(getattr(r, "composes", lambda c: False)(call) for r in rules):
        return tuple(r for r in rules if not any(p.rule is r for p in parts))
    return rules


def role_of(rule) -> str:
    return getattr(rule, "role", SHAPER)


def with_purpose(model_options: dict, purpose: str) -> dict:
    """A copy of sampler ``model_options`` whose model calls carry ``purpose`` (e.g. RECONSTRUCT)
    down to the seam; the dicts it shares with the original are not changed."""
    out = dict(model_options)
    out["transformer_options"] = {**(model_options.get("transformer_options") or {}), PURPOSE_KEY: purpose}
    return out


def memo(cache: dict, lock, key, build):
    """``cache[key]``, built once by ``build()`` under ``lock``. Rules memoise their region plans
    (pure functions of the latent shape); the first call may come under ComfyUI's
    ``torch.inference_mode()`` (sampling, an inversion) and a later one with autograd on (ReAttention
    Edit's RAD gradient passes through a patched model). Index tensors made in inference mode cannot
    be saved for backward, so plans are always built as ordinary tensors (which serve both)."""
    with lock:
        if key not in cache:
            with torch.inference_mode(False):
                cache[key] = build()
        return cache[key]


def schedule_percent(model_sampling, sigma: Optional[float]) -> Optional[float]:
    """Where ``sigma`` sits in sampling, in the percent ComfyUI's own start/end_percent patches use:
    the inverse of ``model_sampling.percent_to_sigma`` (the least p with percent_to_sigma(p) <= sigma).
    It depends on the noise level alone, so a window masks the same steps in one sampler, in split
    KSamplerAdvanced runs (Wan 2.2's two experts) and in few-step runs. None when unknown."""
    to_sigma = getattr(model_sampling, "percent_to_sigma", None)
    if to_sigma is None or sigma is None:
        return None
    lo, hi = 0.0, 1.0
    if float(to_sigma(0.0)) <= sigma:
        return 0.0
    for _ in range(40):   # monotone: bisect to ~1e-12
        mid = (lo + hi) / 2
        if float(to_sigma(mid)) <= sigma:
            hi = mid
        else:
            lo = mid
    # Rounded: a step whose sigma is exactly percent_to_sigma(0.5) must read 0.5, not 0.4999999.
    return round(hi, 6)


def step_fraction(topts: dict) -> Optional[float]:
    """Index of the current step over the number of steps, from ComfyUI's sample_sigmas (the whole
    schedule) and sigmas (the current one): the fallback where the model has no percent_to_sigma."""
    sched, cur = topts.get("sample_sigmas"), topts.get("sigmas")
    if sched is None or cur is None or len(sched) < 2:
        return None
    s = float(cur.flatten()[0])
    idx = int(torch.argmin((sched[:-1].float().cpu() - s).abs()))
    return idx / (len(sched) - 1)


def install(model, rule: Rule):
    """A clone of ``model`` (a ModelPatcher) with ``rule`` added to its attention seam."""
    m = model.clone()
    topts = m.model_options.setdefault("transformer_options", {})
    current = topts.get(SEAM_KEY)
    if current is None:
        family = model_families.family_of(m)
        existing = topts.get("optimized_attention_override")
        current = Controller(family, (), existing)
    controller = current.with_rule(rule)
    topts[SEAM_KEY] = controller
    topts["optimized_attention_override"] = controller
    # One wrapper per model under one key; it reads the controller from transformer_options, so a
    # re-install replaces it rather than stacking another.
    m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, apply_model_wrapper)
    return m


def apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None,
                        **kwargs):
    controller = (transformer_options or {}).get(SEAM_KEY)
    if controller is None:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    return controller.apply_model(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def controller_of(model) -> Optional[Controller]:
    return model.model_options.get("transformer_options", {}).get(SEAM_KEY)
