"""The example workflows in the real ComfyUI frontend (headless Chromium): each one loads, and the
frontend's own graphToPrompt gives exactly the API prompt that tools.workflow.to_api computes from
the file with the server's /object_info."""

from __future__ import annotations

import json

import browser
import harness
import pytest

pytestmark = pytest.mark.browser

EXAMPLES = sorted((harness.ROOT / "example_workflows").glob("*.json"))


def test_frontend_converts_every_example_as_tools_workflow_does(comfy_server, tmp_path):
    from boxdirector.tools import workflow as wf

    info = comfy_server.get("/object_info")
    with browser.open_frontend(comfy_server.url, tmp_path / "profile") as (page, console):
        from test_example_workflows import tricky_workflow

        cases = [(p.name, json.loads(p.read_text())) for p in EXAMPLES]
        cases.append(("toy workflow with Reroute, PrimitiveNode, bypassed and muted nodes", tricky_workflow()[0]))
        for name, data in cases:
            got = page.evaluate("""async (wfjson) => {
                await window.app.loadGraphData(JSON.parse(wfjson), true, true, null);
                const p = await window.app.graphToPrompt();
                return {output: p.output, nodes: window.app.graph.nodes.length};
            }""", json.dumps(data))
            assert got["nodes"] == len(data["nodes"]), name
            ours = wf.to_api(data, info)
            strip = lambda p: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in p.items()}
            assert strip(got["output"]) == strip(ours), f"{name}:\nfrontend {json.dumps(strip(got['output']))[:3000]}"
    assert not browser.pack_errors(console, harness.PACK_NAME), console
