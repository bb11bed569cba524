"""ComfyUI glue: thin V3 node classes over ``core``.

A node is listed here only once it works; until an issue builds it, it does not appear.
"""

from comfy_api.latest import ComfyExtension, io

NODE_ID_PREFIX = "BoxDirector."
CATEGORY = "Box Director"


def node_classes() -> list[type[io.ComfyNode]]:
    return []


class BoxDirectorExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_classes()
