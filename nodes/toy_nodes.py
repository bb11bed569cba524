"""Toy world only: the loader of the toy text encoder that goes with the shipped toy Wan 2.1 models
(toyworld/weights: the DiT loads through UNETLoader, the VAE through VAELoader)."""

from __future__ import annotations

from comfy_api.latest import io

from .common import CATEGORY, node_id

TOY_CATEGORY = f"{CATEGORY}/toy world"


class ToyTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=node_id("ToyTextEncoderLoader"),
            display_name="Toy Text Encoder (toy world only)",
            category=TOY_CATEGORY,
            description=(
                "The text encoder of the pack's tiny toy-world Wan 2.1 model (toy_wan_dit / toy_wan_vae). "
                "It knows only the toy vocabulary: a, an, the, and, red, green, blue, yellow, white, circle, "
                "square, triangle -- e.g. \"a red circle and a blue square\". Connect its CLIP to the stock "
                "CLIP Text Encode node. Useless with any real model."),
            inputs=[],
            outputs=[io.Clip.Output(display_name="clip",
                                    tooltip="A CLIP for CLIP Text Encode; toy world only (16 tokens, width 4096).")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        from ..toyworld.comfy_clip import make_clip

        return io.NodeOutput(make_clip())
