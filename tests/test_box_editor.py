"""The box editor on BBoxTrajectory, in the real ComfyUI frontend (headless Chromium), both node
renderers: draw two objects with two keyframes each with pointer events, change easings, undo,
save and reload the workflow, queue it and check that the backend received the same document;
plus keys, timeline keyframe moves, node resizing, backgrounds (upload, drop, paste, a connected
IMAGE input), hand-edited documents and the server's validation errors shown in the editor. The
browser-side document code (web/lib/trajectory.js) is checked against core/trajectory.py.

Screenshots go to test-artifacts/ (repo root) so that a person can look at the editor.
Set BOXDIRECTOR_TEST_SERVER=http://127.0.0.1:PORT to reuse a running server (the pack linked in).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import editor_driver as d
import harness
import pytest
from browser import open_frontend, pack_errors

pytestmark = pytest.mark.browser

ARTIFACTS = harness.ROOT / "test-artifacts"
VIEWPORT = (1400, 1300)
TOL = 0.012  # a pixel or two of the drawn frame, in 0..1


class _Server:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def server(request):
    url = os.environ.get("BOXDIRECTOR_TEST_SERVER")
    if url:
        return _Server(url.rstrip("/"))
    return _Server(request.getfixturevalue("comfy_server").url)


def _close(a, b, tol=TOL):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def _wait(page, js: str, arg=None, timeout=30_000):
    page.wait_for_function(js, arg=arg, timeout=timeout)


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    d.render(page)
    path = ARTIFACTS / f"{name}.png"
    page.locator(d.EDITOR).screenshot(path=str(path))
    page.screenshot(path=str(ARTIFACTS / f"{name}_page.png"))
    return path


def _png(path: Path, size=(832, 480)) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (40, 90, 60))
    draw = ImageDraw.Draw(img)
    for x in range(0, size[0], 64):
        draw.line([(x, 0), (x, size[1])], fill=(70, 130, 90), width=2)
    draw.ellipse([300, 200, 420, 320], fill=(200, 180, 60))
    img.save(path)
    return path


def _open(page, renderer: str) -> None:
    _wait(page, "() => window.app.extensions.some(e => e.name === 'boxdirector.bboxEditor')", timeout=60_000)
    d.close_dialogs(page)
    ok = d.set_vue_nodes(page, renderer == "vue")
    if renderer == "vue" and not ok:
        pytest.skip("this frontend offers no Vue node renderer")
    d.clear_graph(page)
    d.reset_view(page)


def _queue(page) -> dict:
    """Queue the graph as the Run button does; returns the server's node_errors ({} when accepted)."""
    return page.evaluate("async () => { await window.app.queuePrompt(0); return window.app.lastNodeErrors || {}; }")


def _queue_and_wait(page, server, node_ids, timeout=120.0) -> dict:
    """Queue the current graph through the frontend (app.queuePrompt) and return the history entry
    that holds the given nodes."""
    before = set(server.get("/history"))
    errors = _queue(page)
    assert not errors, errors
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = server.get("/history")
        for pid in set(hist) - before:
            entry = hist[pid]
            if all(str(n) in entry.get("outputs", {}) for n in node_ids):
                return entry
            if entry.get("status", {}).get("status_str") == "error":
                raise AssertionError(json.dumps(entry["status"], indent=1))
        time.sleep(0.3)
    raise TimeoutError("the queued prompt did not finish")


@pytest.mark.parametrize("renderer", ["classic", "vue"])
def test_box_editor_draw_keyframe_save_reload_queue(server, tmp_path, renderer):
    name = f"box_editor_{renderer}"
    ARTIFACTS.mkdir(exist_ok=True)
    with open_frontend(server.url, tmp_path / "profile", viewport=VIEWPORT) as (page, console):
        _open(page, renderer)
        if renderer == "classic":  # the renderer plays no part here: checked once
            _check_js_model(page)
        d.add_node(page, pos=(80, 180))
        d.wait_editor(page)
        d.wait_stable(page)
        # The editor lives on the node in the renderer that is on.
        host = ".lg-node" if renderer == "vue" else ".dom-widget"
        assert page.locator(f"{host} {d.EDITOR}").count() == 1
        assert d.doc(page)["objects"], "a new node starts with the example document"
        page.locator(".bdx-chip").nth(1).click()  # the example's cube: a smooth path with a hidden stretch
        d.click(page, d.timeline_point(page, 45))
        _shot(page, f"{name}_0_example")
        d.press(page, "Home")

        # --- start empty, draw object A at frame 0, move it at frame 40 ---------------------
        page.locator(".bdx-clear").click()
        assert d.doc(page)["objects"] == []
        d.drag_frame(page, (0.10, 0.20), (0.30, 0.50))
        assert d.editor_state(page)["objects"] == 1
        d.click(page, d.timeline_point(page, 40))  # scrub on the ruler
        assert d.editor_state(page)["frame"] == 40
        d.drag_frame(page, (0.20, 0.35), (0.50, 0.45))  # move A: keyframe at 40

        # --- object B at frame 0, resized by its top-left handle at frame 80 ----------------
        d.press(page, "Home")
        assert d.editor_state(page)["frame"] == 0
        d.drag_frame(page, (0.60, 0.55), (0.85, 0.90))
        d.press(page, "End")
        assert d.editor_state(page)["frame"] == 80
        d.drag_frame(page, (0.60, 0.55), (0.50, 0.40))  # nw handle

        # --- names from the numeric panel --------------------------------------------------
        page.locator(".bdx-chip").nth(0).click()
        page.locator(".bdx-id").fill("cat")
        page.locator(".bdx-id").press("Enter")
        page.locator(".bdx-prompt").fill("a black cat")
        page.locator(".bdx-prompt").press("Enter")

        # --- easing: A's first segment ease_in_out; B's hold, then undo once ----------------
        d.click(page, d.timeline_point(page, 0, row=0))  # A's keyframe diamond at frame 0
        assert d.editor_state(page)["selected"] == 0 and d.editor_state(page)["frame"] == 0
        page.locator(".bdx-ease").select_option("ease_in_out")
        d.click(page, d.timeline_point(page, 0, row=1))  # B's first keyframe
        page.locator(".bdx-ease").select_option("hold")
        assert d.doc(page)["objects"][1]["keyframes"][0]["ease"] == "hold"
        d.click(page, d.timeline_point(page, 30, row=1))  # focus the editor (scrub inside B's row)
        d.press(page, "Control+z")
        doc = d.doc(page)
        assert "ease" not in doc["objects"][1]["keyframes"][0], "undo restores B's linear ease"
        d.press(page, "Control+Shift+z")
        assert d.doc(page)["objects"][1]["keyframes"][0]["ease"] == "hold"
        d.press(page, "Control+z")

        doc = d.doc(page)
        (ARTIFACTS / f"{name}_document.json").write_text(d.text(page))
        a, b = doc["objects"]
        assert (a["id"], a["prompt"], b["id"], b["prompt"]) == ("cat", "a black cat", "obj1", "obj1")
        assert [k["frame"] for k in a["keyframes"]] == [0, 40]
        assert [k["frame"] for k in b["keyframes"]] == [0, 80]
        assert _close(a["keyframes"][0]["box"], [0.10, 0.20, 0.30, 0.50])
        assert _close(a["keyframes"][1]["box"], [0.40, 0.30, 0.60, 0.60])
        assert _close(b["keyframes"][0]["box"], [0.60, 0.55, 0.85, 0.90])
        assert _close(b["keyframes"][1]["box"], [0.50, 0.40, 0.85, 0.90])
        assert a["keyframes"][0]["ease"] == "ease_in_out" and "ease" not in b["keyframes"][0]
        text = d.text(page)
        assert text.startswith('{\n  "version": 1,\n  "frames": 81,'), "canonical JSON in the widget"
        assert d.editor_state(page)["error"] is None

        # --- more keys and the timeline; every edit is undone again --------------------------
        d.click(page, d.timeline_point(page, 20, row=1))  # B at frame 20
        d.press(page, "k")
        assert [k["frame"] for k in d.doc(page)["objects"][1]["keyframes"]] == [0, 20, 80]
        d.press(page, "Delete")
        assert d.text(page) == text
        d.press(page, "End")
        d.press(page, "h")
        assert d.doc(page)["objects"][1]["keyframes"][1]["visible"] is False
        d.press(page, "Control+z")
        d.press(page, "Home")
        d.press(page, "e")
        assert d.doc(page)["objects"][1]["keyframes"][0]["ease"] == "ease_in"
        d.press(page, "Control+z")
        d.press(page, "Shift+ArrowRight")
        nudged = d.doc(page)["objects"][1]["keyframes"][0]["box"]
        assert abs(nudged[0] - b["keyframes"][0]["box"][0] - 10 / 832) < 2e-4
        d.press(page, "Control+z")
        d.drag(page, d.timeline_point(page, 40, row=0), d.timeline_point(page, 50, row=0))  # move A's key
        assert [k["frame"] for k in d.doc(page)["objects"][0]["keyframes"]] == [0, 50]
        d.press(page, "Control+z")
        assert d.text(page) == text

        # --- resizing the node resizes the editor; the frame keeps the video's aspect --------
        before = page.evaluate(f"() => {d.FIND_NODE}.boxEditor.frameRect()")
        corner = d.node_corner(page)
        d.drag(page, corner, (corner[0] + 160, corner[1] + 60))
        _wait(page, f"(w) => {d.FIND_NODE}.boxEditor.frameRect().w > w + 40", arg=before["w"])
        after = page.evaluate(f"() => {d.FIND_NODE}.boxEditor.frameRect()")
        assert abs(after["w"] / after["h"] - 832 / 480) < 0.01

        # --- background: upload from the editor's file input (stored as a reference) --------
        page.locator(f"{d.EDITOR} input[type=file]").set_input_files(str(_png(tmp_path / "bg.png")))
        _wait(page, f"() => {d.FIND_NODE}.properties.boxdirector_background")
        _wait(page, "() => [...document.querySelectorAll('.bdx-bg-label')].some(e => e.textContent.includes('.png'))")
        time.sleep(0.5)  # the image loads
        d.click(page, d.timeline_point(page, 20, row=0))  # mid-segment: path, ghosts and handles show
        _shot(page, f"{name}_1_drawn")

        # --- save the workflow, reload the page, load it back ------------------------------
        raw = page.evaluate("() => JSON.stringify(window.app.graph.serialize())")  # what a saved file holds
        workflow = json.loads(raw)
        (ARTIFACTS / f"{name}_workflow.json").write_text(json.dumps(workflow, indent=1))
        assert "data:image" not in raw and len(raw) < 30_000, "no embedded image in the workflow"
        node = next(n for n in workflow["nodes"] if n["type"] == d.NODE_ID)
        assert node["widgets_values"][0] == text, "the document is the node's widget value"
        assert len(node["widgets_values"]) == 4, "the editor adds no value of its own"
        assert node["properties"]["boxdirector_background"]["filename"].endswith(".png")

        page.reload(wait_until="domcontentloaded")
        _wait(page, "() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        _wait(page, "() => window.app.extensions.some(e => e.name === 'boxdirector.bboxEditor')", timeout=60_000)
        d.close_dialogs(page)
        page.evaluate("async (raw) => { await window.app.loadGraphData(JSON.parse(raw)); }", raw)
        d.reset_view(page)
        d.wait_editor(page)
        d.wait_stable(page)
        assert d.text(page) == text
        state = d.editor_state(page)
        assert state["objects"] == 2 and state["error"] is None and state["undo"] == 0
        assert page.locator(".bdx-chip").count() == 2
        _wait(page, "() => [...document.querySelectorAll('.bdx-bg-label')].some(e => e.textContent.includes('.png'))")
        time.sleep(0.5)
        _shot(page, f"{name}_2_reloaded")

        # --- queue: BBoxTrajectory -> TrajectoryExport -> PreviewAny -----------------------
        ids = page.evaluate(
            f"""() => {{
                const src = {d.FIND_NODE};
                const ex = window.LiteGraph.createNode('BoxDirector.TrajectoryExport');
                ex.pos = [880, 180]; window.app.graph.add(ex);
                const pv = window.LiteGraph.createNode('PreviewAny');
                pv.pos = [1120, 180]; window.app.graph.add(pv);
                src.connect(0, ex, 0); ex.connect(0, pv, 0);
                return [src.id, ex.id, pv.id];
            }}"""
        )
        entry = _queue_and_wait(page, server, [ids[2]])
        received = entry["outputs"][str(ids[2])]["text"][0]
        assert received == text, "the backend's TrajectoryExport JSON is the editor's document, byte for byte"
        assert entry["prompt"][2][str(ids[0])]["inputs"]["trajectory"] == text

        # --- hand edits: a valid compact document (pasted) is read as it is; a bad one (typed
        # into the JSON panel) shows the editor's error and, once queued, the server's -------
        compact = json.dumps(json.loads(text), separators=(",", ":"))
        d.paste_text(page, ".bdx-keys", compact)
        assert d.text(page) == compact and d.editor_state(page)["error"] is None
        assert d.editor_state(page)["objects"] == 2
        page.locator(".bdx-json-btn").click()
        bad = json.loads(text)
        bad["objects"][0]["keyframes"][1]["box"] = [0.7, 0.3, 0.3, 0.6]
        page.locator(".bdx-json-text").fill(json.dumps(bad))
        page.locator(".bdx-json-apply").click()
        err = "objects[0].keyframes[1].box: x0 (0.7) must be < x1 (0.3)"
        assert err in (d.editor_state(page)["error"] or "")
        node_errors = _queue(page)
        assert err in json.dumps(node_errors.get(str(ids[0]))), "the server refuses it, naming the field"
        _wait(page, "(err) => [...document.querySelectorAll('.bdx-status .bdx-err')].some("
                    "e => e.textContent.startsWith('Server:') && e.textContent.includes(err))", arg=err)
        server_line = page.evaluate("() => [...document.querySelectorAll('.bdx-status .bdx-err')]"
                                    ".map(e => e.textContent).find(t => t.startsWith('Server:'))")
        assert server_line.count(err) == 1, server_line  # ComfyUI repeats it per input: shown once
        d.close_dialogs(page)  # the frontend's own error dialog
        _shot(page, f"{name}_3_server_error")
        page.locator(".bdx-json-btn").click()  # close the JSON panel again
        d.click(page, d.timeline_point(page, 10))
        d.press(page, "Control+z")
        assert d.text(page) == compact
        d.press(page, "Control+z")
        assert d.text(page) == text

        # --- background by drop and by paste; then from a connected IMAGE input -------------
        bg = f"{d.FIND_NODE}.properties.boxdirector_background"
        d.drop_image(page, ".bdx-stage-canvas", "dropped.png")
        _wait(page, f"() => ({bg} || {{}}).filename?.startsWith('dropped')")
        d.paste_image(page, ".bdx-keys", "pasted.png")
        _wait(page, f"() => ({bg} || {{}}).filename?.startsWith('pasted')")
        page.evaluate(
            f"""(value) => {{
                const src = {d.FIND_NODE};
                const ld = window.LiteGraph.createNode('LoadImage');
                ld.pos = [880, 520]; window.app.graph.add(ld);
                const w = ld.widgets.find(w => w.name === 'image');
                w.value = value; w.callback?.(value);
                ld.connect(0, src, src.findInputSlot('image'));
            }}""",
            f"{node['properties']['boxdirector_background']['subfolder']}/"
            f"{node['properties']['boxdirector_background']['filename']} [input]",
        )
        _wait(page, "() => [...document.querySelectorAll('.bdx-bg-label')].some(e => e.textContent.startsWith('input:'))")
        time.sleep(0.5)
        _shot(page, f"{name}_4_input_background")

        errors = pack_errors(console, harness.PACK_NAME)
        assert not errors, errors


def _check_js_model(page) -> None:
    """web/lib/trajectory.js (what the editor draws and writes) against core/trajectory.py (what
    the backend runs): canonical JSON byte for byte, sampled boxes, colours, error messages."""
    import torch
    from boxdirector.core.preview import object_colors
    from boxdirector.core.trajectory import (
        EASES,
        Keyframe,
        Trajectory,
        TrajectoryObject,
        example_trajectory,
        parse_trajectory,
        sample_boxes,
    )

    objs = [TrajectoryObject(id=f"o{i} é☃", prompt=f'a "{e}" thing', keyframes=(
        Keyframe(0, (0.1, 0.2, 0.3, 0.4), ease=e), Keyframe(7, (0.5, 0.1, 0.9, 0.35), ease=e),
        Keyframe(13, (0.2, 0.6, 0.25, 0.61), ease="smooth", visible=False),
        Keyframe(14, (0.00001, 0.5, 1.0, 0.7), ease=e), Keyframe(30, (0.4, 0.5, 0.6, 0.9)))) for i, e in enumerate(EASES)]
    docs = [example_trajectory(), Trajectory(frames=33, width=640, height=360, objects=tuple(objs))]
    texts = [t.to_json() for t in docs]
    bad = [
        '{"frames": 81.0, "width": 1, "height": 1, "objects": []}',
        '{"frames": 9, "width": 1, "height": 1, "height": 2, "objects": []}',
        ('{"frames": 9, "width": 1, "height": 1, "objects": [{"id": "a", "prompt": "b", "keyframes": '
        '[{"frame": 0, "box": [NaN, 0, 0.3, 1]}]}]}'),
        ('{"frames": 9, "width": 1, "height": 1, "objects": [{"id": "a", "prompt": "b", "keyframes": '
        '[{"frame": 3, "box": [0, 0, 0.3, 1]}, {"frame": 2, "box": [0, 0, 0.3, 1], "speed": 2}]}]}'),
        '{"frames": 9,, }',
    ]
    out = page.evaluate(
        """async ([texts, bad]) => {
            const T = await import('/extensions/boxdirector/lib/trajectory.js');
            const errors = bad.map(t => { try { T.parseTrajectory(t); return 'OK'; } catch (e) { return e.message; } });
            return {docs: texts.map(t => { const d = T.parseTrajectory(t);
                                           return {canon: T.toCanonicalJSON(d), samples: T.sampleDocument(d)}; }),
                    colors: [0, 1, 2, 3, 4, 5, 6, 7].map(T.objectColor), errors};
        }""",
        [texts, bad],
    )
    for traj, text, js in zip(docs, texts, out["docs"]):
        assert js["canon"] == text
        boxes, visible = sample_boxes(traj, dtype=torch.float64)
        js_boxes = torch.tensor([[s["box"] for s in o] for o in js["samples"]], dtype=torch.float64)
        js_visible = torch.tensor([[s["visible"] for s in o] for o in js["samples"]])
        assert torch.allclose(js_boxes, boxes, atol=1e-12, rtol=0)
        assert torch.equal(js_visible, visible)
    assert out["colors"] == [list(c) for c in object_colors(8)]
    for text, js_error in zip(bad, out["errors"]):
        with pytest.raises(Exception) as exc:
            parse_trajectory(text)
        assert js_error == str(exc.value)
