"""Make the shipped toy models visible to ComfyUI's own loaders: symlink the DiT into
``<base>/models/diffusion_models/`` (UNETLoader) and the VAE into ``<base>/models/vae/``
(VAELoader). ``base`` is a ComfyUI base directory (its install dir or ``--base-directory``)."""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parent / "weights"
DIT_NAME = "toy_wan_dit.safetensors"
VAE_NAME = "toy_wan_vae.safetensors"
TARGETS = {DIT_NAME: "diffusion_models", VAE_NAME: "vae"}


def link_models(comfy_base_dir) -> dict:
    """Symlink the toy weights into the ComfyUI base dir's model folders (replacing stale links;
    an existing regular file of the same name is left alone). Returns {file name: link path}."""
    out = {}
    for name, folder in TARGETS.items():
        src = WEIGHTS / name
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing; train it with python -m toyworld.train_"
                                    f"{'dit' if name == DIT_NAME else 'vae'}")
        dst = Path(comfy_base_dir) / "models" / folder / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink():
            if Path(os.readlink(dst)) != src:
                dst.unlink()
        if not dst.exists():
            dst.symlink_to(src)
        out[name] = dst
    return out


if __name__ == "__main__":
    import sys

    for k, v in link_models(sys.argv[1]).items():
        print(k, "->", v)
