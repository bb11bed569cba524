"""Names shared by every node of the pack."""

NODE_ID_PREFIX = "BoxDirector."   # node ids are global in a ComfyUI install and saved in workflows: never change
CATEGORY = "Box Director"


def node_id(name: str) -> str:
    return NODE_ID_PREFIX + name
