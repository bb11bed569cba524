"""ComfyUI glue: thin V3 node classes over ``core``.

A node is listed here only once it works; until an issue builds it, it does not appear.
"""

from comfy_api.latest import ComfyExtension, io


def node_classes() -> list[type[io.ComfyNode]]:
    from .first_frame import FirstFrameShare, SharedNoise
    from .intrinsic_denoise import TemporalIntrinsicDenoise
    from .long_video import LongVideoChunks
    from .masked_attention import MaskedAttentionPatch
    from .reattention_edit import ReAttentionEdit
    from .regions_nodes import MaskSequence
    from .toy_nodes import ToyTextEncoderLoader
    from .trajectory_nodes import (BBoxTrajectory, TrajectoryExport, TrajectoryFromBBox,
                                   TrajectoryFromCoordinates, TrajectoryFromMask, TrajectoryFromTracks,
                                   TrajectoryPreview)

    return [BBoxTrajectory, MaskSequence, MaskedAttentionPatch, TemporalIntrinsicDenoise, TrajectoryPreview,
            TrajectoryFromCoordinates, TrajectoryFromTracks, TrajectoryFromBBox, TrajectoryFromMask, TrajectoryExport,
            ToyTextEncoderLoader, FirstFrameShare, SharedNoise, LongVideoChunks, ReAttentionEdit]


class BoxDirectorExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from . import ui_notes

        ui_notes.install()     # warnings such as "trajectory resampled" appear on the running node
        return node_classes()
