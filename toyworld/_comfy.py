"""The one place the training scripts reach into ComfyUI: they train the *real* Wan 2.1 module
classes (``comfy.ldm.wan.vae.WanVAE``, ``comfy.ldm.wan.model.WanModel``) so that the weights load
through ComfyUI's own loaders unchanged. Importing those modules needs ComfyUI on ``sys.path`` and
its argument parser told ``--cpu`` (the test harness does the same)."""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_comfy_path() -> None:
    """Import the ComfyUI the pack is tested against, exactly as the tests do (tests/harness.py:
    $BOXDIRECTOR_COMFYUI or .cache/comfyui-<version>, ``--cpu``, idempotent)."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import harness

    harness.import_comfy()


def init_weights(module, seed: int) -> None:
    """ComfyUI's ``disable_weight_init`` ops leave weights uninitialised: give every conv/linear
    PyTorch's default init, seeded."""
    import torch

    torch.manual_seed(seed)
    for m in module.modules():
        for base in (torch.nn.Conv3d, torch.nn.Conv2d, torch.nn.Linear):
            if isinstance(m, base):
                base.reset_parameters(m)
                break
        else:
            if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and m.weight is not None:
                torch.nn.init.ones_(m.weight)
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)



@contextlib.contextmanager
def in_training():
    """ComfyUI's ``comfy.model_management.in_training`` set within the block (restored after): newer
    ComfyUI's rope kernels (comfy_kitchen) have no backward otherwise. 0.3.75 has no such flag."""
    ensure_comfy_path()
    import comfy.model_management as mm

    if not hasattr(mm, "in_training"):
        yield
        return
    before, mm.in_training = mm.in_training, True
    try:
        yield
    finally:
        mm.in_training = before


def training(fn):
    """``fn`` run :func:`in_training` (the training scripts' ``main``)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with in_training():
            return fn(*args, **kwargs)

    return run
