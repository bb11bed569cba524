"""tests/workflow_api.py on small hand-written graphs: widget positions (seed control values),
links, notes, reroutes, muted and bypassed nodes, and the errors. That the result equals what the
real frontend queues is checked in test_demo_workflow_browser.py; that the server runs it, in
test_demo_e2e.py."""

import pytest

import workflow_api

pytestmark = pytest.mark.core

INFO = {
    "Loader": {"input": {"required": {"name": [["a.safetensors", "b.safetensors"], {}]}},
               "input_order": {"required": ["name"]}, "display_name": "Loader"},
    "Sampler": {"input": {"required": {"model": ["MODEL", {}], "seed": ["INT", {"control_after_generate": True}],
                                       "steps": ["INT", {}], "cfg": ["FLOAT", {}]},
                          "optional": {"note": ["STRING", {"multiline": True}], "extra": ["MODEL", {}]}},
                "input_order": {"required": ["model", "seed", "steps", "cfg"], "optional": ["note", "extra"]}},
    "Patch": {"input": {"required": {"model": ["MODEL", {}], "strength": ["FLOAT", {}],
                                     "noise_seed": ["INT", {}], "forced": ["INT", {"forceInput": True}]}},
              "input_order": {"required": ["model", "strength", "noise_seed", "forced"]}},
}


def graph(patch_mode=0):
    return {
        "nodes": [
            {"id": 1, "type": "Loader", "mode": 0, "inputs": [], "outputs": [{"name": "MODEL", "type": "MODEL"}],
             "widgets_values": ["b.safetensors"]},
            {"id": 2, "type": "Patch", "mode": patch_mode, "title": "my patch",
             "inputs": [{"name": "model", "type": "MODEL", "link": 1}, {"name": "forced", "type": "INT", "link": None}],
             "outputs": [{"name": "MODEL", "type": "MODEL"}], "widgets_values": [0.5, 7, "randomize"]},
            {"id": 3, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}],
             "outputs": [{"name": "", "type": "MODEL"}]},
            {"id": 4, "type": "Sampler", "mode": 0,
             "inputs": [{"name": "model", "type": "MODEL", "link": 3}, {"name": "extra", "type": "MODEL", "link": 4}],
             "outputs": [], "widgets_values": [42, "fixed", 20, 5.0, "hello"]},
            {"id": 5, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["a note"]},
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 4, 0, "MODEL"], [4, 1, 0, 4, 5, "MODEL"]],
    }


def test_widgets_by_position_links_and_reroutes():
    p = workflow_api.ui_to_api(graph(), INFO)
    assert set(p) == {"1", "2", "4"}                     # the note and the reroute are frontend-only
    assert p["1"]["inputs"] == {"name": "b.safetensors"}
    # noise_seed has no flag but gets a control value by name, as in the frontend; forceInput is no widget.
    assert p["2"]["inputs"] == {"model": ["1", 0], "strength": 0.5, "noise_seed": 7}
    assert p["4"]["inputs"] == {"model": ["2", 0], "seed": 42, "steps": 20, "cfg": 5.0, "note": "hello",
                                "extra": ["1", 0]}
    assert p["2"]["_meta"]["title"] == "my patch"
    assert workflow_api.find_nodes(p, "Sampler") == ["4"]


def test_bypassed_node_is_bridged_and_muted_node_dropped():
    bypassed = workflow_api.ui_to_api(graph(patch_mode=4), INFO)
    assert "2" not in bypassed and bypassed["4"]["inputs"]["model"] == ["1", 0]
    muted = workflow_api.ui_to_api(graph(patch_mode=2), INFO)
    assert "2" not in muted and "model" not in muted["4"]["inputs"]


def test_errors_name_the_node_and_the_fix():
    g = graph()
    g["nodes"][3]["widgets_values"] = [42, 20, 5.0, "hello"]          # saved without the control value
    with pytest.raises(workflow_api.WorkflowError, match=r"node 4 \(Sampler\): 4 widget values .* 5 widget slots"):
        workflow_api.ui_to_api(g, INFO)
    with pytest.raises(workflow_api.WorkflowError, match="no node type 'Loader'; install the pack"):
        workflow_api.ui_to_api(graph(), {k: v for k, v in INFO.items() if k != "Loader"})
    with pytest.raises(workflow_api.WorkflowError, match="not a UI-format workflow"):
        workflow_api.ui_to_api({"1": {"class_type": "Loader", "inputs": {}}}, INFO)
