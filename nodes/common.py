"""Names and helpers shared by every node of the pack."""

import contextlib

NODE_ID_PREFIX = "BoxDirector."   # node ids are global in a ComfyUI install and saved in workflows: never change
CATEGORY = "Box Director"


def node_id(name: str) -> str:
    return NODE_ID_PREFIX + name


@contextlib.contextmanager
def model_training():
    """Within the block, ComfyUI models compute in forms autograd can differentiate: newer ComfyUI
    runs rope (and more) through comfy_kitchen kernels that have no backward unless
    ``comfy.model_management.in_training`` is set. Restored on exit, also by an exception; a
    ComfyUI without the flag (0.3.75) has nothing to switch."""
    import comfy.model_management as mm

    if not hasattr(mm, "in_training"):
        yield
        return
    before = mm.in_training
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = before
