"""Masked attention without masks: PEEKABOO's region rules as partitioned / grouped attention.

PEEKABOO (METHODS.md §1) steers a video model by masking its attention: a token inside object k's
box may only attend tokens of object k (self / temporal attention) and object k's words
(cross-attention); background attends background. The reference code builds dense additive
[2F, N, N] masks. Here every rule is expressed as *query groups*, each with the *set of keys* it
may see, and attention runs per group with the fused ``scaled_dot_product_attention`` kernels. No
tensor of size N x N (queries x keys) is ever built; extra memory is O(N), and because the score
work is sum_g |queries_g| * |keys_g|, a masked call is *cheaper* than the unmasked one.

Conventions
-----------
* Region labels: LongTensor per token, 0 = background, k + 1 = object k. Anything derived from
  labels (sort orders, index sets) is computed once in a plan object (``*_plan(...)``) and reused
  for every attention call of a sampling run: ``plan = self_attention_plan(labels)`` once, then
  ``masked_attention(q, k, v, plan)`` per call.
* Layouts: core functions take q/k/v as [B, H, N, D] (ComfyUI ``skip_reshape=True``, e.g.
  HunyuanVideo). ``*_bnc`` helpers take ComfyUI's default [B, N, H*D] with ``heads`` (Wan, LTX) and
  return [B, N, H*D], like ``optimized_attention``.
* Batches: a plan made from labels [N] applies to every batch item; labels [B, N] give one plan per
  item (items with equal labels share one kernel call). CFG chunks with different rules (e.g.
  masking cond only) are combined with :func:`batch_plan`, which takes one plan (or ``None`` =
  unmasked) per chunk.
* Empty key sets: a query group that may see no key at all (an object with no subject tokens and
  no always-visible tokens) gets output **zero** by default (``empty="zero"``): softmax over an
  empty set is undefined (NaN in a dense masked softmax); zero is its natural value (the attention
  adds nothing to the residual stream; it is also what PyTorch's SDPA returns for a fully masked
  boolean row, checked on CPU with torch 2.14). ``empty="all"`` instead lets such a group attend
  every key (unmasked for that group) -- useful when a subject phrase was not found in the prompt.
* Gradients flow (gathers, ``index_copy_``, SDPA are differentiable): ReAtCo-style guidance may
  backpropagate through masked attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

__all__ = [
    "AttentionGroup",
    "AttentionPlan",
    "BatchPlan",
    "TemporalPlan",
    "self_attention_plan",
    "cross_attention_plan",
    "joint_attention_plan",
    "group_attention_plan",
    "batch_plan",
    "masked_attention",
    "masked_attention_bnc",
    "temporal_attention_plan",
    "temporal_attention",
    "temporal_attention_bnc",
    "efdm",
]

# A set of positions: a slice when contiguous (a view, no copy), else an ascending LongTensor.
Index = Union[slice, torch.Tensor]
IndexLike = Union[torch.Tensor, Sequence[int]]

_EMPTY_MODES = ("zero", "all")
# Smallest query chunk worth a kernel call of its own (see masked_attention's query_chunk).
QUERY_CHUNK_MIN = 2048
_RULES = ("per_object", "union")


# --------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AttentionGroup:
    """Queries at ``queries`` attend exactly the keys at ``keys``.

    ``keys is None`` means "the same positions as the queries" (a block of a partition: region
    self-attention). ``n_queries`` / ``n_keys`` are plain ints so that running a plan never needs
    a device sync. ``n_keys == 0``: the group sees no key and its output is zero.
    """

    queries: Index
    keys: Optional[Index]
    n_queries: int
    n_keys: int


@dataclass(frozen=True, eq=False)
class AttentionPlan:
    """Which keys each query may see, for one batch item (shared by all heads).

    ``groups`` partition the query positions 0..num_queries-1; their key sets may overlap. The
    plan is independent of q/k/v values and dtype: build it once per sampling run.
    """

    groups: tuple
    num_queries: int
    num_keys: int
    _device_cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def is_partition(self) -> bool:
        """True when every group attends exactly itself (a block-diagonal mask after sorting)."""
        return all(g.keys is None for g in self.groups)

    @property
    def is_unmasked(self) -> bool:
        """True when the plan is plain attention (one group: all queries x all keys)."""
        if len(self.groups) != 1:
            return False
        g = self.groups[0]
        keys_all = g.n_keys == self.num_keys if g.keys is not None else g.n_queries == self.num_keys
        return g.n_queries == self.num_queries and keys_all

    def score_fraction(self) -> float:
        """Share of the unmasked score work (Nq x Nk dot products) this plan computes."""
        work = sum(g.n_queries * (g.n_queries if g.keys is None else g.n_keys) for g in self.groups)
        return work / max(1, self.num_queries * self.num_keys)

    def to(self, device) -> "AttentionPlan":
        """The same plan with its index tensors on ``device`` (cached: moved once per device)."""
        device = torch.device(device)
        if not any(isinstance(i, torch.Tensor) and i.device != device for g in self.groups for i in (g.queries, g.keys)):
            return self
        cached = self._device_cache.get(device)
        if cached is None:
            groups = tuple(
                AttentionGroup(_index_to(g.queries, device), _index_to(g.keys, device), g.n_queries, g.n_keys)
                for g in self.groups
            )
            cached = AttentionPlan(groups, self.num_queries, self.num_keys)
            self._device_cache[device] = cached
        return cached


@dataclass(frozen=True, eq=False)
class BatchPlan:
    """One plan per batch item: ``items`` pairs batch positions with the plan they use.

    A ``None`` plan means unmasked attention for those items (e.g. the uncond chunk when only the
    cond chunk is masked). Built by :func:`batch_plan` or by a ``*_plan`` function given labels
    [B, N]; items sharing a plan run in one kernel call.
    """

    items: tuple  # of (Index over the batch, AttentionPlan | None)
    batch_size: int

    def to(self, device) -> "BatchPlan":
        device = torch.device(device)
        return BatchPlan(
            tuple((_index_to(b, device), p.to(device) if p is not None else None) for b, p in self.items),
            self.batch_size,
        )


def _index_to(idx, device):
    if isinstance(idx, torch.Tensor) and idx.device != device:
        return idx.to(device)
    return idx


def _as_index(positions: torch.Tensor) -> Index:
    """An ascending LongTensor of positions as a slice when contiguous (views beat gathers)."""
    n = positions.numel()
    if n == 0:
        return positions
    first, last = int(positions[0]), int(positions[-1])
    if last - first + 1 == n:
        return slice(first, last + 1)
    return positions


def _as_long_1d(x: IndexLike, device=None) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.long, device=device).reshape(-1)
    return t


def _label_groups(labels: torch.Tensor):
    """(label value, ascending positions) for every label present: one stable argsort."""
    order = torch.argsort(labels, stable=True)
    values, counts = torch.unique_consecutive(labels[order], return_counts=True)
    return list(zip(values.tolist(), order.split(counts.tolist())))


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"region labels must be an integer tensor, got {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("region labels must be >= 0 (0 = background, k + 1 = object k)")
    return labels.long()


def _per_item(labels: torch.Tensor, build) -> Union[AttentionPlan, BatchPlan]:
    """labels [N] -> build(labels); labels [B, N] -> a BatchPlan sharing plans between equal rows."""
    if labels.dim() == 1:
        return build(labels)
    if labels.dim() != 2:
        raise ValueError(f"labels must be [N] or [B, N], got shape {tuple(labels.shape)}")
    rows, inverse = torch.unique(labels, dim=0, return_inverse=True)
    items = []
    for r in range(rows.shape[0]):
        members = (inverse == r).nonzero().flatten()
        items.append((_as_index(members), build(rows[r])))
    return BatchPlan(tuple(items), labels.shape[0])


def self_attention_plan(labels: IndexLike) -> Union[AttentionPlan, BatchPlan]:
    """Region self-attention: token i attends token j iff ``labels[i] == labels[j]``.

    PEEKABOO's spatial rule (fg -> own fg, bg -> bg) and, on the DiTs' joint 3-D attention, also its
    temporal rule: object k's tokens at every frame form one block, background another. This is a
    partition, so the plan is the label groups after one stable argsort; score work is
    sum_k n_k^2 instead of N^2. Labels absent from ``labels`` (an object outside the frame) simply
    form no group. labels: [N] (all batch items) or [B, N] (per item).
    """
    labels = _check_labels(labels)

    def build(row):
        n = row.numel()
        groups = tuple(AttentionGroup(_as_index(pos), None, pos.numel(), pos.numel()) for _, pos in _label_groups(row))
        return AttentionPlan(groups, n, n)

    return _per_item(labels, build)


def group_attention_plan(
    query_groups: Sequence[IndexLike],
    key_sets: Sequence[Optional[IndexLike]],
    num_queries: int,
    num_keys: int,
    *,
    empty: str = "zero",
) -> AttentionPlan:
    """The general primitive: queries in ``query_groups[g]`` attend exactly keys ``key_sets[g]``.

    Query groups must partition 0..num_queries-1 (every query in exactly one group). A key set may
    be ``None`` (the same positions as the group's queries: a partition block) and key sets may
    overlap. Key order inside a set does not matter (softmax is permutation invariant over keys).
    An empty key set gives zero output (``empty="zero"``) or all keys (``empty="all"``).
    """
    if empty not in _EMPTY_MODES:
        raise ValueError(f"empty must be one of {_EMPTY_MODES}, got {empty!r}")
    if len(query_groups) != len(key_sets):
        raise ValueError("query_groups and key_sets must have the same length")
    qs = [_as_long_1d(g).sort().values for g in query_groups]
    seen = torch.cat(qs) if qs else torch.zeros(0, dtype=torch.long)
    if seen.numel() != num_queries or not torch.equal(seen.sort().values, torch.arange(num_queries, device=seen.device)):
        raise ValueError("query_groups must partition the query positions 0..num_queries-1")
    groups = []
    for qpos, kset in zip(qs, key_sets):
        if qpos.numel() == 0:
            continue
        if kset is None:
            if int(qpos[-1]) >= num_keys:
                raise ValueError(f"a key set None (= the group's own positions) needs them < num_keys={num_keys}")
            groups.append(AttentionGroup(_as_index(qpos), None, qpos.numel(), qpos.numel()))
            continue
        kpos = torch.unique(_as_long_1d(kset, device=qpos.device))  # sorted, deduplicated
        if kpos.numel() and (int(kpos[0]) < 0 or int(kpos[-1]) >= num_keys):
            raise ValueError(f"key index out of range [0, {num_keys})")
        if kpos.numel() == 0 and empty == "all":
            kpos = torch.arange(num_keys, device=qpos.device)
        if num_queries == num_keys and torch.equal(kpos, qpos):
            groups.append(AttentionGroup(_as_index(qpos), None, qpos.numel(), qpos.numel()))
        else:
            groups.append(AttentionGroup(_as_index(qpos), _as_index(kpos), qpos.numel(), kpos.numel()))
    return AttentionPlan(tuple(groups), num_queries, num_keys)


def _subject_sets(subject_tokens: Sequence[IndexLike], num_keys: int, device) -> list:
    sets = []
    for k, toks in enumerate(subject_tokens):
        t = torch.unique(_as_long_1d(toks, device=device))
        if t.numel() and (int(t[0]) < 0 or int(t[-1]) >= num_keys):
            raise ValueError(f"subject_tokens[{k}] has an index outside [0, {num_keys})")
        sets.append(t)
    return sets


def cross_attention_plan(
    labels: IndexLike,
    subject_tokens: Sequence[IndexLike],
    num_keys: int,
    *,
    always_visible: IndexLike = (),
    rule: str = "per_object",
    empty: str = "zero",
) -> Union[AttentionPlan, BatchPlan]:
    """Region cross-attention: video queries (``labels``) attend text keys (length ``num_keys``).

    ``subject_tokens[k]``: key positions of object k's subject phrase (object k has label k + 1).
    Rules (A = ``always_visible`` keys, S_k = subject_tokens[k], S = union of all S_k):

    * ``rule="per_object"`` (our binding, closes PEEKABOO's multi-object gap): object k's region
      attends S_k + A; background attends every key not in S, plus A.
    * ``rule="union"`` (PEEKABOO as published): every foreground token attends S + A (any object's
      words); background as above.

    Special tokens: in PEEKABOO's code the start token (SOS) ends up visible to no pixel during
    masked steps. Here every non-subject key (EOS, padding, SOS) is the background's, and
    ``always_visible`` (default: none -- umt5 for Wan has no SOS) lists keys every query may see;
    pass e.g. the SOS position for CLIP-style encoders to keep it global.

    Keys need not be text. For Wan i2v, ComfyUI runs the CLIP-vision image tokens (``k_img``) as a
    separate cross-attention call: use ``plan=None`` there to keep them global, or a plan with
    empty subject lists to give them to the background only (object regions then get zero from
    that call, per ``empty``). When one call holds text and image keys, list the image positions
    in ``always_visible`` (global) or in no S_k (background-only).

    An object whose key set is empty (no subject tokens, no A) follows ``empty`` (module doc).
    labels: [N] or [B, N].
    """
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    labels = _check_labels(labels)
    device = labels.device
    subj = _subject_sets(subject_tokens, num_keys, device)
    n_obj = len(subj)
    if labels.numel() and int(labels.max()) > n_obj:
        raise ValueError(f"labels mention object {int(labels.max()) - 1} but only {n_obj} subject lists were given")
    always = torch.unique(_as_long_1d(always_visible, device=device))
    if always.numel() and (int(always[0]) < 0 or int(always[-1]) >= num_keys):
        raise ValueError(f"always_visible has an index outside [0, {num_keys})")
    is_subject = torch.zeros(num_keys, dtype=torch.bool, device=device)
    for s in subj:
        is_subject[s] = True
    background_keys = torch.cat([(~is_subject).nonzero().flatten(), always])
    union_keys = torch.cat([is_subject.nonzero().flatten(), always])

    def build(row):
        queries, keys = [], []
        present = dict(_label_groups(row))
        if 0 in present:
            queries.append(present.pop(0))
            keys.append(background_keys)
        if rule == "union":
            if present:  # every foreground label sees the same keys: one group, one kernel call
                queries.append(torch.cat(list(present.values())))
                keys.append(union_keys)
        else:
            for lab, pos in present.items():
                queries.append(pos)
                keys.append(torch.cat([subj[lab - 1], always]))
        return group_attention_plan(queries, keys, row.numel(), num_keys, empty=empty)

    return _per_item(labels, build)


def joint_attention_plan(
    labels: IndexLike,
    subject_tokens: Sequence[IndexLike],
    num_text: int,
    *,
    always_visible: IndexLike = (),
    rule: str = "per_object",
    text_first: bool = False,
    empty: str = "zero",
) -> Union[AttentionPlan, BatchPlan]:
    """Joint attention over one sequence of image and text tokens (HunyuanVideo double/single
    blocks: [img..., txt...]; ``text_first=True`` for [txt..., img...] as in Flux-style blocks).

    ``labels``: region label per *image* token ([N_img] or [B, N_img]); ``subject_tokens[k]`` and
    ``always_visible`` are positions *within the text* (0..num_text-1). Text tokens as queries
    get the transposed rule, so the mask stays symmetric. Let O(t) be the set of objects whose
    subject phrase contains text token t (empty for ordinary words and padding):

    * ``rule="per_object"``: image region k <-> image tokens of region k + text tokens with k in
      O(t); background image <-> background image + text tokens with O(t) empty; subject text
      token t <-> image regions of O(t) + text tokens sharing an object with t; other text <->
      background image + other text. Without overlapping phrases and without ``always_visible``
      this is exactly a partition (subject tokens of object k carry label k + 1, all other text
      label 0): region self-attention over the full sequence, the fast path.
    * ``rule="union"`` (PEEKABOO's cross-attention rule; self-attention stays per object): image
      region k <-> image region k + all subject tokens; subject text tokens <-> all foreground
      image tokens + all subject tokens; background image and other text as above. Not a
      partition: general grouped attention.

    ``always_visible`` text tokens are seen by every query and, as queries, see everything.
    Text padding belongs in ``key_mask`` of :func:`masked_attention` (as ComfyUI passes it).
    """
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    labels = _check_labels(labels)
    device = labels.device
    subj = _subject_sets(subject_tokens, num_text, device)
    n_obj = len(subj)
    if labels.numel() and int(labels.max()) > n_obj:
        raise ValueError(f"labels mention object {int(labels.max()) - 1} but only {n_obj} subject lists were given")
    always = set(_as_long_1d(always_visible).tolist())
    if any(a < 0 or a >= num_text for a in always):
        raise ValueError(f"always_visible has an index outside [0, {num_text})")
    # Text is short (hundreds of tokens): its grouping by object set is plain Python, once.
    owners = [frozenset() for _ in range(num_text)]
    for k, s in enumerate(subj):
        for t in s.tolist():
            owners[t] = owners[t] | {k}
    overlapping = any(len(o) > 1 for o in owners)

    def build(row):
        n_img = row.numel()
        n = n_img + num_text
        img_off, txt_off = (num_text, 0) if text_first else (0, n_img)

        if rule == "per_object" and not overlapping and not always:
            text_labels = torch.tensor([min(o) + 1 if o else 0 for o in owners], dtype=torch.long, device=device)
            full = torch.cat([text_labels, row]) if text_first else torch.cat([row, text_labels])
            return self_attention_plan(full)

        img_groups = dict(_label_groups(row))
        img_pos = {lab: pos + img_off for lab, pos in img_groups.items()}
        fg_img = [p for lab, p in img_pos.items() if lab > 0]
        fg_img = torch.cat(fg_img) if fg_img else torch.zeros(0, dtype=torch.long, device=device)
        always_t = torch.tensor(sorted(always), dtype=torch.long, device=device) + txt_off

        def text_where(pred):
            return torch.tensor(
                [t + txt_off for t in range(num_text) if t not in always and pred(owners[t])],
                dtype=torch.long,
                device=device,
            )

        def img_of(objs):  # image positions of the regions of objects in objs (0-based ids)
            parts = [img_pos[k + 1] for k in objs if (k + 1) in img_pos]
            return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=device)

        none = torch.zeros(0, dtype=torch.long, device=device)
        queries, keys = [], []
        # image queries
        for lab, pos in img_pos.items():
            if lab == 0:
                k_txt = text_where(lambda o: not o)
            elif rule == "union":
                k_txt = text_where(lambda o: bool(o))
            else:
                k_txt = text_where(lambda o, k=lab - 1: k in o)
            queries.append(pos)
            keys.append(torch.cat([pos, k_txt, always_t]))
        # text queries, grouped by their object set
        by_owner: dict = {}
        for t in range(num_text):
            if t not in always:
                by_owner.setdefault(owners[t], []).append(t + txt_off)
        for o, ts in by_owner.items():
            if not o:
                k_img = img_pos.get(0, none)
                k_txt = text_where(lambda oo: not oo)
            elif rule == "union":
                k_img = fg_img
                k_txt = text_where(lambda oo: bool(oo))
            else:
                k_img = img_of(o)
                k_txt = text_where(lambda oo, o=o: bool(oo & o))
            queries.append(torch.tensor(ts, dtype=torch.long, device=device))
            keys.append(torch.cat([k_img, k_txt, always_t]))
        if always:
            queries.append(always_t)
            keys.append(torch.arange(n, device=device))
        return group_attention_plan(queries, keys, n, n, empty=empty)

    return _per_item(labels, build)


def batch_plan(plans: Sequence[Optional[Union[AttentionPlan, BatchPlan]]], sizes: Sequence[int]) -> BatchPlan:
    """Combine per-chunk plans into one plan for the concatenated batch.

    ``plans[c]`` applies to the next ``sizes[c]`` batch items (a CFG chunk: ComfyUI concatenates
    cond and uncond along the batch); ``None`` = unmasked. Plans are built once per sampling run;
    this is cheap (no sorting), so an adapter may call it per step for whatever chunks ComfyUI
    batched together. Chunks given the *same* plan object run in one kernel call.
    """
    if len(plans) != len(sizes):
        raise ValueError("plans and sizes must have the same length")
    members: dict = {}
    start = 0
    for p, n in zip(plans, sizes):
        if isinstance(p, BatchPlan):
            if p.batch_size != n:
                raise ValueError(f"a BatchPlan for {p.batch_size} items was given for a chunk of {n}")
            for bidx, sub in p.items:
                pos = torch.arange(n)[bidx] + start
                members.setdefault(id(sub), (sub, []))[1].append(pos)
        else:
            members.setdefault(id(p), (p, []))[1].append(torch.arange(start, start + n))
        start += n
    items = tuple((_as_index(torch.cat(parts).sort().values), p) for p, parts in members.values())
    return BatchPlan(items, start)


# --------------------------------------------------------------------------------------------
# Running a plan
# --------------------------------------------------------------------------------------------


def _take(x: torch.Tensor, idx: Index, dim: int) -> torch.Tensor:
    if isinstance(idx, slice):
        return x[(slice(None),) * (dim % x.dim()) + (idx,)]
    return x.index_select(dim, idx)


def _put(out: torch.Tensor, idx: Index, val: torch.Tensor, dim: int) -> None:
    if isinstance(idx, slice):
        out[(slice(None),) * (dim % out.dim()) + (idx,)].copy_(val)
    else:
        out.index_copy_(dim, idx, val)


def _normalise_key_mask(key_mask: Optional[torch.Tensor], batch: int, num_keys: int):
    """A per-key mask (ComfyUI passes [1, 1, Nk] for HunyuanVideo text padding) as [b, h, 1, Nk].

    Only masks with a singleton query dimension are accepted: an [.., Nq, Nk] mask is exactly the
    N x N object this module exists to avoid.
    """
    if key_mask is None:
        return None
    m = key_mask
    if m.shape[-1] != num_keys:
        raise ValueError(f"key_mask's last dim must be the number of keys {num_keys}, got {tuple(m.shape)}")
    while m.dim() < 4:
        m = m.unsqueeze(-2) if m.dim() == 1 else m.unsqueeze(1) if m.dim() == 3 else m.unsqueeze(1).unsqueeze(1)
    if m.dim() != 4 or m.shape[-2] != 1:
        raise ValueError(f"key_mask must be broadcastable to [B, H, 1, Nk], got {tuple(key_mask.shape)}")
    if m.shape[0] not in (1, batch):
        raise ValueError(f"key_mask batch {m.shape[0]} does not match batch {batch}")
    return m


class _Layout:
    """How q/k/v tensors are laid out: tokens at ``dim``; ``to4``/``from4`` convert a gathered
    piece to / from the [B, H, n, D] view SDPA wants (views only, except ``from4`` for BNC)."""

    def __init__(self, bnc_heads: Optional[int]):
        self.heads = bnc_heads
        self.dim = 1 if bnc_heads else 2

    def to4(self, x: torch.Tensor) -> torch.Tensor:
        if self.heads is None:
            return x
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def from4(self, x: torch.Tensor) -> torch.Tensor:
        if self.heads is None:
            return x
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)


def _sdpa(q, k, v, mask, scale):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _run_plan(q, k, v, plan: Optional[AttentionPlan], lay: _Layout, key_mask, scale, out, query_chunk=None) -> torch.Tensor:
    """Attention of one batch slice under one plan, written into ``out`` (same layout as q)."""
    if plan is None or plan.is_unmasked:
        res = lay.from4(_sdpa(lay.to4(q), lay.to4(k), lay.to4(v), key_mask, scale))
        if out is None:
            return res
        out.copy_(res)
        return out
    if q.shape[lay.dim] != plan.num_queries or k.shape[lay.dim] != plan.num_keys:
        raise ValueError(
            f"plan is for {plan.num_queries} queries x {plan.num_keys} keys, got "
            f"{q.shape[lay.dim]} x {k.shape[lay.dim]}"
        )
    plan = plan.to(q.device)
    chunk = _query_chunk(query_chunk, plan.num_queries)
    if out is None:
        out = q.new_empty(q.shape[: lay.dim] + (q.shape[lay.dim],) + v.shape[lay.dim + 1 :])
    for g in plan.groups:
        if g.n_keys == 0:  # softmax over no key: defined as zero (module doc)
            if isinstance(g.queries, slice):
                _take(out, g.queries, lay.dim).zero_()
            else:
                out.index_fill_(lay.dim, g.queries, 0)
            continue
        kidx = g.queries if g.keys is None else g.keys
        # One gather per tensor per group (index_select copies only this group's rows; a
        # contiguous group is a view), then SDPA's fused kernel on the dense sub-problem.
        kg = lay.to4(_take(k, kidx, lay.dim))
        vg = lay.to4(_take(v, kidx, lay.dim))
        mg = None if key_mask is None else _take(key_mask, kidx, -1)
        # Queries of a big group go in chunks: the gathered queries and the kernel's output then
        # cost a chunk, not the group, so the extra memory is ~2 N rows (K, V) + 2 chunks instead
        # of ~4 N rows. The work is unchanged (the kernels tile queries anyway).
        for qidx in _chunks(g.queries, g.n_queries, chunk):
            qg = lay.to4(_take(q, qidx, lay.dim))
            _put(out, qidx, lay.from4(_sdpa(qg, kg, vg, mg, scale)), lay.dim)
        del kg, vg
    return out


def _chunks(idx: Index, n: int, chunk: int):
    """``idx`` (n positions) in nearly equal consecutive pieces of at most ``chunk`` (views)."""
    if chunk <= 0 or n <= chunk:
        yield idx
        return
    pieces = -(-n // chunk)
    step = -(-n // pieces)
    for a in range(0, n, step):
        b = min(n, a + step)
        if isinstance(idx, slice):
            yield slice(idx.start + a, idx.start + b)
        else:
            yield idx[a:b]


def _query_chunk(query_chunk: Optional[int], num_queries: int) -> int:
    if query_chunk is not None:
        return query_chunk
    return max(QUERY_CHUNK_MIN, -(-num_queries // 8))


def _run(q, k, v, plan, lay: _Layout, key_mask, scale, query_chunk=None) -> torch.Tensor:
    batch = q.shape[0]
    key_mask = _normalise_key_mask(key_mask, batch, k.shape[lay.dim])
    if not isinstance(plan, BatchPlan):
        return _run_plan(q, k, v, plan, lay, key_mask, scale, None, query_chunk)
    if plan.batch_size != batch:
        raise ValueError(f"BatchPlan is for batch {plan.batch_size}, got {batch}")
    if len(plan.items) == 1:
        return _run_plan(q, k, v, plan.items[0][1], lay, key_mask, scale, None, query_chunk)
    out = q.new_empty(q.shape[: lay.dim] + (q.shape[lay.dim],) + v.shape[lay.dim + 1 :])
    for bidx, sub in plan.items:
        bidx = _index_to(bidx, q.device)
        mb = key_mask if key_mask is None or key_mask.shape[0] == 1 else _take(key_mask, bidx, 0)
        qb, kb, vb = _take(q, bidx, 0), _take(k, bidx, 0), _take(v, bidx, 0)
        if isinstance(bidx, slice):  # write straight into the output's view
            _run_plan(qb, kb, vb, sub, lay, mb, scale, out[bidx], query_chunk)
        else:
            _put(out, bidx, _run_plan(qb, kb, vb, sub, lay, mb, scale, None, query_chunk), 0)
    return out


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: Optional[Union[AttentionPlan, BatchPlan]],
    *,
    scale: Optional[float] = None,
    key_mask: Optional[torch.Tensor] = None,
    query_chunk: Optional[int] = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v where the mask is the plan's rule, for q/k/v [B, H, N, D].

    Equals dense masked attention with a boolean mask that allows (i, j) iff key j is in the key
    set of query i's group (fully masked rows: zero). Never builds that mask: each query group
    runs SDPA on its gathered rows and key set. ``plan=None`` is plain attention. ``key_mask``:
    optional per-key mask (bool keep or additive float) of shape [Nk], [B, Nk], [B, 1, Nk] (as
    ComfyUI passes HunyuanVideo's text padding) or [B, H, 1, Nk], applied on top of the plan.
    ``query_chunk``: queries per kernel call within a group (None: auto, max(2048, Nq / 8),
    bounding extra memory at ~2.3 N rows; 0: never split). Returns [B, H, Nq, Dv].
    """
    return _run(q, k, v, plan, _Layout(None), key_mask, scale, query_chunk)


def masked_attention_bnc(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    plan: Optional[Union[AttentionPlan, BatchPlan]],
    *,
    scale: Optional[float] = None,
    key_mask: Optional[torch.Tensor] = None,
    query_chunk: Optional[int] = None,
) -> torch.Tensor:
    """:func:`masked_attention` for ComfyUI's default layout: q/k/v [B, N, H*D] -> [B, Nq, H*Dv].

    Gathers whole token rows ([n, H*D], contiguous) and hands SDPA the [B, H, n, D] *view*, as
    ComfyUI's own ``attention_pytorch`` does, so no layout copy is made beyond the gather.
    """
    if q.shape[-1] % heads or k.shape[-1] % heads or v.shape[-1] % heads:
        raise ValueError(f"channel counts {q.shape[-1]}, {k.shape[-1]}, {v.shape[-1]} not divisible by heads={heads}")
    return _run(q, k, v, plan, _Layout(heads), key_mask, scale, query_chunk)


# --------------------------------------------------------------------------------------------
# Temporal attention (UNets with separate temporal layers: SVD, ModelScope, ZeroScope)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TemporalPlan:
    """Boolean keep-mask [S or B*S, 1, F, F] for temporal attention over [(b s), F] tokens."""

    mask: torch.Tensor
    locations: int
    per_item: bool


def temporal_attention_plan(labels: IndexLike) -> TemporalPlan:
    """PEEKABOO's temporal rule: at spatial location s, frame i attends frame j iff
    ``labels[i, s] == labels[j, s]`` (fg in both or bg in both, same object).

    labels: [F, S] (frames x spatial locations of this layer, in the layer's token order; shared
    by every batch item) or [B, F, S]. The mask is per location F x F (F = frames, small), i.e.
    O(S F^2) booleans, never (S F)^2. The diagonal is always kept (a label equals itself), so a
    frame whose location has no same-label partner still attends itself: no empty softmax.
    """
    labels = _check_labels(labels)
    if labels.dim() not in (2, 3):
        raise ValueError(f"temporal labels must be [F, S] or [B, F, S], got {tuple(labels.shape)}")
    per_item = labels.dim() == 3
    lab = labels.transpose(-1, -2)  # [..., S, F]
    mask = lab.unsqueeze(-1) == lab.unsqueeze(-2)  # [..., S, F, F]
    s = lab.shape[-2]
    return TemporalPlan(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]), s, per_item)


def _temporal_mask(plan: TemporalPlan, batch: int, device) -> torch.Tensor:
    m = plan.mask.to(device)
    if plan.per_item:
        if m.shape[0] != batch:
            raise ValueError(f"temporal plan is for batch {m.shape[0]} (B*S), got {batch}")
        return m
    if batch % plan.locations:
        raise ValueError(f"batch {batch} is not a multiple of the plan's {plan.locations} locations")
    # ComfyUI orders the temporal batch as (b s): repeat the per-location masks per item.
    return m.repeat(batch // plan.locations, 1, 1, 1)


def temporal_attention(q, k, v, plan: TemporalPlan, *, scale: Optional[float] = None) -> torch.Tensor:
    """Masked temporal attention, q/k/v [B*S, H, F, D] ((b s) batch order, as SVD's UNet)."""
    return _sdpa(q, k, v, _temporal_mask(plan, q.shape[0], q.device), scale)


def temporal_attention_bnc(q, k, v, heads: int, plan: TemporalPlan, *, scale: Optional[float] = None) -> torch.Tensor:
    """:func:`temporal_attention` for q/k/v [B*S, F, H*D] -> [B*S, F, H*D]."""
    lay = _Layout(heads)
    return lay.from4(_sdpa(lay.to4(q), lay.to4(k), lay.to4(v), _temporal_mask(plan, q.shape[0], q.device), scale))


# --------------------------------------------------------------------------------------------
# Mask normalisation
# --------------------------------------------------------------------------------------------


def efdm(masked: torch.Tensor, reference: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Exact feature distribution matching (METHODS.md §3): rearrange ``reference``'s values into
    ``masked``'s rank order. Along ``dim``, the k-th smallest element of ``masked`` takes the
    value of the k-th smallest element of ``reference``; every other dimension is independent.

    Default ``dim=-2`` = tokens for attention outputs [B, N, C] (ComfyUI's [B, N, H*D]) or
    [B, H, N, D]. So the matching is per batch item (cond and uncond have different statistics and
    must not be mixed) and per channel (the EFDM convention: a channel's distribution over tokens
    is its "style"). In [B, N, H*D] a channel is one (head, head-dim) pair, so per-channel is also
    per-head; pooling a head's D channels would mix channels of different scales.

    The result is a permutation of ``reference`` along ``dim`` (exactly its values) in the order
    of ``masked`` (ties broken by position: stable sort). O(N log N) time, O(N) extra memory per
    channel (two sorts and one scatter; no N x N object).
    """
    if masked.shape != reference.shape:
        raise ValueError(f"masked {tuple(masked.shape)} and reference {tuple(reference.shape)} must match")
    order = masked.argsort(dim=dim, stable=True)
    ref_sorted = reference.sort(dim=dim).values.to(masked.dtype)
    return torch.empty_like(masked).scatter_(dim, order, ref_sorted)


def restore_spread(masked: torch.Tensor, reference: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """The domain-adaptation paper's premise, corrected and nothing more: where masking *lowered* a
    channel's spread over ``dim`` (tokens), scale that channel's deviations from its own mean back up
    to the reference's spread. Channels whose spread masking kept or raised are returned unchanged.
    Unlike :func:`efdm` this keeps the masked output's mean and the shape of its distribution (an
    object's tail of distinctive values stays a tail), so it undoes the variance drop (the paper's
    Fig. 2a) without pulling the masked output back towards the unmasked one."""
    if masked.shape != reference.shape:
        raise ValueError(f"masked {tuple(masked.shape)} and reference {tuple(reference.shape)} must match")
    m = masked.float()
    mean = m.mean(dim=dim, keepdim=True)
    spread, target = m.std(dim=dim, keepdim=True), reference.float().std(dim=dim, keepdim=True)
    narrowed = spread < target
    rescaled = (mean + (m - mean) * (target / spread.clamp_min(1e-12))).to(masked.dtype)
    return torch.where(narrowed, rescaled, masked)


def efdm_by_region(masked: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """:func:`efdm` within each region: along ``dim`` (tokens) the tokens of one label are matched to
    the reference's values *of the same tokens*; ``labels`` [L] holds one label per token (tokens
    beyond ``len(labels)``, e.g. HunyuanVideo's text tokens, form one more group). Masking moves an
    object's statistics away from the background's on purpose; matching over all tokens at once
    would pull them back towards the frame's mix, matching per region only undoes the shift each
    region's masking caused. Labels are few: one gather / scatter per label."""
    if masked.shape != reference.shape:
        raise ValueError(f"masked {tuple(masked.shape)} and reference {tuple(reference.shape)} must match")
    dim = dim % masked.dim()
    n = masked.shape[dim]
    lab = labels.reshape(-1).to(masked.device)
    if lab.numel() > n:
        raise ValueError(f"{lab.numel()} labels for {n} tokens")
    if lab.numel() < n:   # extra tokens (joint text): their own group
        lab = torch.cat([lab, lab.new_full((n - lab.numel(),), int(lab.max()) + 1 if lab.numel() else 0)])
    out = torch.empty_like(masked)
    for value in torch.unique(lab).tolist():
        idx = torch.nonzero(lab == value).flatten()
        out.index_copy_(dim, idx, efdm(masked.index_select(dim, idx), reference.index_select(dim, idx), dim=dim))
    return out
