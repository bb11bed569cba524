"""Input checks shared by every node's ``validate_inputs``.

ComfyUI 0.3.75 leaves three holes a V3 node must close itself: NaN passes its min/max comparisons,
V3 drop-downs are never checked against their options, and an input named in ``validate_inputs``
skips ComfyUI's own range check. ``validate`` reads the limits and options from the node's own
schema, so they are written once, and prefixes every message with the node's display name.
Linked inputs arrive as None at validation and are not checked here.
"""

from __future__ import annotations

import math
import re

from comfy_api.latest import io

# No supported model is deeper than HunyuanVideo's 60 blocks (20 double + 40 single); an index past
# this bound is a typo, and a range up to it is read without expanding every number.
MAX_BLOCK_INDEX = 99

_SCHEMAS: dict = {}


def _schema(cls):
    # Validation may run on a per-prompt clone of the class: key the cache by the class that defines it.
    owner = next(c for c in cls.__mro__ if "define_schema" in c.__dict__)
    key = (owner.__module__, owner.__qualname__)
    if key not in _SCHEMAS:
        _SCHEMAS[key] = owner.define_schema()
    return _SCHEMAS[key]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _options_text(options) -> str:
    shown = ", ".join(map(str, options[:12]))
    return shown + (f", ... ({len(options)} options)" if len(options) > 12 else "")


def widget_problem(cls, values: dict) -> str | None:
    """The first widget value of ``values`` outside its schema's limits or options, or None."""
    for inp in _schema(cls).inputs:
        v = values.get(inp.id)
        if v is None:
            continue
        if isinstance(inp, (io.Float.Input, io.Int.Input)):
            kind = "number" if isinstance(inp, io.Float.Input) else "whole number"
            lo, hi = inp.min, inp.max
            rng = f" between {lo:g} and {hi:g}" if lo is not None and hi is not None else ""
            if not _number(v) or not math.isfinite(v):
                return f"{inp.id}: must be a finite {kind}{rng}, got {v!r}; set it to e.g. {inp.default}"
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return f"{inp.id}: must be{rng or ' in range'}, got {v:g}; set it within that range (default {inp.default})"
        elif isinstance(inp, io.Combo.Input) and v not in (inp.options or []):
            return f"{inp.id}: {v!r} is not an option; choose one of {_options_text(list(inp.options or []))}"
    return None


def validate(cls, values: dict, *more) -> bool | str:
    """``validate_inputs``' answer: True, or the first problem named with the node's display name.
    ``values`` holds the declared inputs (e.g. ``locals()``); ``more`` are further messages or
    callables returning one (None when fine), checked after the widget limits."""
    problem = widget_problem(cls, values)
    for extra in more:
        if problem:
            break
        problem = extra() if callable(extra) else extra
    return True if not problem else f"{_schema(cls).display_name}: {problem}"


def at_run(cls, values: dict, *more) -> None:
    """``validate`` again when the node runs (values that came through a link were None at
    validation); raises ValueError with the message."""
    answer = validate(cls, values, *more)
    if answer is not True:
        raise ValueError(answer)


# --- block selections ------------------------------------------------------------------------------
_PART = re.compile(r"(\d+(?:\.\d+)?)(%?)\s*(?:-\s*(\d+(?:\.\d+)?)(%?))?")
BLOCKS_HINT = "write all, indices and ranges like 0-9, 20, or depth fractions like 50%-100%"


def parse_blocks(spec: str, total: int) -> frozenset:
    """"all"; indices and ranges "0-9, 20"; or fractions of the depth "50%-100%". Raises ValueError
    naming the bad part, for a reversed or out-of-range part, and when nothing of the ``total``
    blocks is selected (a selection that does nothing would look like the method not working)."""
    spec = (spec or "").strip().lower()
    if spec in ("", "all"):
        return frozenset(range(total))
    out = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        m = _PART.fullmatch(part)
        if not m:
            raise ValueError(f"blocks: cannot read {part!r}; {BLOCKS_HINT}")
        a, pa, b, pb = m.groups()
        if b is not None and bool(pa) != bool(pb):
            raise ValueError(f"blocks: {part!r} mixes an index and a fraction; write both ends with % or neither")
        lo, hi = float(a), float(b) if b is not None else float(a)
        if hi < lo:
            raise ValueError(f"blocks: {part!r} is reversed (selects nothing); write the smaller end first")
        if pa:
            if hi > 100:
                raise ValueError(f"blocks: {part!r}: depth fractions run from 0% to 100%")
            out.update(i for i in range(total) if lo / 100 <= (i + 0.5) / total <= hi / 100)
            continue
        if "." in a or (b and "." in b):
            raise ValueError(f"blocks: {part!r}: block indices are whole numbers (use % for fractions)")
        if hi > MAX_BLOCK_INDEX:
            raise ValueError(f"blocks: {part!r}: block indices run from 0 to at most {MAX_BLOCK_INDEX} (the "
                             f"deepest supported model, HunyuanVideo, has 60); use a depth fraction like 50%-100%")
        out.update(range(int(lo), min(int(hi), total - 1) + 1))
    if not out:
        raise ValueError(f"blocks: {spec!r} selects none of this model's {total} blocks (0-{total - 1}); "
                         f"pick blocks it has, or a depth fraction like 50%-100%")
    return frozenset(out)


def blocks_problem(blocks) -> str | None:
    """The message for a bad block selection (a widget value), or None. The model is not known at
    validation: parts that are unreadable, reversed or past every supported model are refused here,
    a selection past this model's depth when the node runs."""
    if isinstance(blocks, str):
        try:
            parse_blocks(blocks, MAX_BLOCK_INDEX + 1)
        except ValueError as e:
            return str(e)
    return None


def blocks_problem_for(blocks, total: int) -> str | None:
    """The message for a block selection that this model (``total`` blocks) cannot use, or None."""
    try:
        parse_blocks(blocks, total)
    except ValueError as e:
        return str(e)
    return None


def schedule_problem(blocks, start_percent, end_percent) -> str | None:
    """A seam rule's step window and block selection (widget values only), or None."""
    if _number(start_percent) and _number(end_percent) and start_percent > end_percent:
        return f"start_percent ({start_percent}) must not be after end_percent ({end_percent})"
    return blocks_problem(blocks)
