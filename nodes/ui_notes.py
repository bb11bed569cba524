"""The pack's warnings, shown on the node that is running when they happen.

``core`` logs its notes (e.g. a trajectory resampled onto a video of another length) to the
"boxdirector" logger; the console is where few users look. This handler also sends each warning
as the running node's progress text (the text ComfyUI's frontend draws on that node).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

LOGGER = "boxdirector"


def _executing_node() -> Optional[str]:
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:           # a ComfyUI without execution contexts: console only
        return None
    ctx = get_executing_context()
    return None if ctx is None else str(ctx.node_id)


def _send_to_frontend(text: str, node_id: str) -> None:
    from server import PromptServer

    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_progress_text(text, node_id)


class NodeNotes(logging.Handler):
    """Warnings and above of ``LOGGER`` -> ``send(text, node_id)`` of the executing node."""

    def __init__(self, send: Callable[[str, str], None] = _send_to_frontend):
        super().__init__(level=logging.WARNING)
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        node = _executing_node()
        if node is None:
            return
        try:
            self.send(f"Box Director: {record.getMessage()}", node)
        except Exception:         # a note must never break the run it describes
            self.handleError(record)


def install(send: Callable[[str, str], None] = _send_to_frontend) -> NodeNotes:
    """Attach one handler to the pack's logger (again: replace it, so reloads do not duplicate)."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, NodeNotes) or type(h).__name__ == "NodeNotes"]:
        logger.removeHandler(old)
    handler = NodeNotes(send)
    logger.addHandler(handler)
    return handler
