"""The shipped demo workflow in the real frontend: it is offered as a template, loads with every node
known, and the frontend's own graphToPrompt gives exactly the API prompt that tests/workflow_api.py
makes from it (so the demo and the tests queue what a person pressing Queue would)."""

import json

import pytest

import workflow_api
from browser import open_frontend, pack_errors
from harness import PACK_NAME, ROOT
from toyworld import install

pytestmark = pytest.mark.browser

WORKFLOW = ROOT / "example_workflows" / "toyworld_demo.json"


def test_demo_workflow_loads_in_the_frontend_and_queues_what_the_converter_makes(comfy_server, tmp_path):
    install.link_models(comfy_server.base_dir)
    templates = comfy_server.get("/api/workflow_templates")
    assert "toyworld_demo" in templates.get(PACK_NAME, []), templates
    workflow = json.loads(WORKFLOW.read_text())
    ours = workflow_api.ui_to_api(workflow, comfy_server.get("/object_info"))
    with open_frontend(comfy_server.url, tmp_path / "profile") as (page, console):
        theirs = page.evaluate(
            """async (wf) => {
                await window.app.loadGraphData(wf);
                const missing = window.app.graph.nodes.filter(n => n.has_errors || n.constructor.nodeData === undefined
                                                                   && !['Note', 'MarkdownNote'].includes(n.type));
                const p = await window.app.graphToPrompt();
                return {output: p.output, missing: missing.map(n => n.type)};
            }""", workflow)
        assert not pack_errors(console, PACK_NAME), console
    assert theirs["missing"] == [], theirs["missing"]
    strip = lambda p: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in p.items()}  # noqa: E731
    assert strip(theirs["output"]) == strip(ours)
