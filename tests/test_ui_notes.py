"""The pack's warnings reach the node that is running (its progress text), not only the console."""

import logging

import harness


def test_a_resampling_note_is_sent_to_the_running_node(comfy):
    harness.load_pack_nodes()
    from comfy_execution.utils import CurrentNodeContext

    from boxdirector.core import token_layout
    from boxdirector.nodes import ui_notes

    sent = []
    handler = ui_notes.install(lambda text, node: sent.append((node, text)))
    try:
        token_layout.note_resampling("Note test", "wan21", 33, (64, 64), (1, 16, 5, 8, 8))   # 33 frames on a 17-frame latent
        assert sent == []                                  # nothing runs: console only
        with CurrentNodeContext("p1", "42"):
            token_layout.note_resampling("Note test", "wan21", 33, (64, 64), (1, 16, 5, 8, 12))
            logging.getLogger("boxdirector").info("not a warning")
        assert len(sent) == 1 and sent[0][0] == "42"
        assert "Note test" in sent[0][1] and "33 frames" in sent[0][1], sent
    finally:
        logging.getLogger("boxdirector").removeHandler(handler)
        ui_notes.install()
