"""Drives the box editor on a BBoxTrajectory node in the real frontend (playwright page).

Everything goes through what a person does (pointer events on the editor's own elements, keys
while it has focus, its form controls); page.evaluate is used only to read state, to add nodes and
links the way the graph API does, and to ask the editor where a point of the frame is on screen.
"""

from __future__ import annotations

import json
import time

NODE_ID = "BoxDirector.BBoxTrajectory"
EDITOR = ".bdx-root"
FIND_NODE = f"(() => window.app.graph.nodes.find(n => n.type === {json.dumps(NODE_ID)}))()"


def close_dialogs(page, timeout: float = 20.0) -> None:
    """Close the Templates dialog a fresh profile opens (and any other modal dialog)."""
    deadline = time.monotonic() + timeout
    seen = False
    while time.monotonic() < deadline:
        n = page.locator(".p-dialog").count()
        if n:
            seen = True
            page.keyboard.press("Escape")
            time.sleep(0.4)
            # The Templates dialog ignores Escape: its close button (an "x" icon), clicked through
            # the DOM (a toast may cover it).
            page.evaluate("""() => document.querySelectorAll('.p-dialog').forEach(dlg => {
                const close = dlg.querySelector("button[aria-label='Close'], .p-dialog-close-button")
                    || dlg.querySelector("button i.pi-times")?.closest("button");
                close?.click();
            })""")
        elif seen:
            return
        else:
            time.sleep(0.5)
            if time.monotonic() > deadline - timeout + 8:  # nothing showed up in 8 s
                return
    left = page.evaluate("() => [...document.querySelectorAll('.p-dialog')].map(d => d.innerText.slice(0, 300))")
    assert not left, f"could not close the frontend's dialog: {left}"


def set_vue_nodes(page, enabled: bool) -> bool:
    """Switch the Nodes 2.0 (Vue) renderer; False when this frontend has no such setting."""
    return page.evaluate(
        """async (on) => {
            const s = window.app.extensionManager?.setting;
            if (!s) return false;
            await s.set('Comfy.VueNodes.Enabled', on);
            return s.get('Comfy.VueNodes.Enabled') === on;
        }""",
        enabled,
    )


def add_node(page, node_type: str = NODE_ID, pos=(60, 40)) -> int:
    return page.evaluate(
        """([type, pos]) => {
            const node = window.LiteGraph.createNode(type);
            node.pos = pos;
            window.app.graph.add(node);
            window.app.canvas.setDirty(true, true);
            return node.id;
        }""",
        [node_type, list(pos)],
    )


def reset_view(page) -> None:
    page.evaluate("""() => { const ds = window.app.canvas.ds; ds.scale = 1; ds.offset = [0, 0];
                            window.app.canvas.setDirty(true, true); }""")


def wait_editor(page, timeout: float = 30_000) -> None:
    page.wait_for_function(
        f"() => {{ const n = {FIND_NODE}; const e = document.querySelector('{EDITOR}');"
        " return n && n.boxEditor && e && e.isConnected && e.getBoundingClientRect().width > 100"
        " && e.querySelector('.bdx-stage-canvas').clientHeight > 50; }",
        timeout=timeout,
    )


def text(page) -> str:
    return page.evaluate(f"() => {FIND_NODE}.widgets.find(w => w.name === 'trajectory').value")


def doc(page) -> dict:
    return json.loads(text(page))


def settle(page, timeout_ms: int = 3000) -> None:
    """Wait until the editor's layout holds still for a few animation frames.

    A change of the document re-lays the editor out in the next animation frame (the timeline's
    height follows the object count, the status line its text), and the classic renderer resizes
    the node a frame or two later. A point asked for in between is stale by the time the pointer
    lands: CI once drew a box 0.027 of the frame too high that way, right after "Clear".
    ``wait_stable`` is the coarse wait (0.25 s polls, the stage only, the editor may not exist
    yet) for a node the Vue renderer is still placing; this one counts animation frames, so it
    costs ~70 ms on a layout that is already still and can run before every pointer gesture."""
    page.evaluate(
        f"""async (timeout) => {{
            const e = {FIND_NODE}.boxEditor;
            const key = () => {{
                const a = e.stageCanvas.getBoundingClientRect(), b = e.tlCanvas.getBoundingClientRect();
                const f = e.frameRect();
                return [a.left, a.top, a.width, a.height, b.left, b.top, b.width, b.height, f.x, f.y, f.w, f.h]
                    .map(Math.round).join();
            }};
            const t0 = performance.now();
            let last = key(), same = 0;
            while (same < 4 && performance.now() - t0 < timeout) {{
                await new Promise((r) => requestAnimationFrame(r));
                const k = key();
                same = k === last ? same + 1 : 0;
                last = k;
            }}
        }}""",
        timeout_ms,
    )


def frame_point(page, nx: float, ny: float) -> tuple[float, float]:
    settle(page)
    return tuple(page.evaluate(f"([x, y]) => {FIND_NODE}.boxEditor.clientPointOfFrame(x, y)", [nx, ny]))


def timeline_point(page, frame: int, row: int = -1) -> tuple[float, float]:
    settle(page)
    return tuple(page.evaluate(f"([f, r]) => {FIND_NODE}.boxEditor.clientPointOfTimeline(f, r)", [frame, row]))


def drag(page, start, end, steps: int = 8) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for i in range(1, steps + 1):
        t = i / steps
        page.mouse.move(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)
    page.mouse.up()


def drag_frame(page, n0, n1, steps: int = 8) -> None:
    """Drag between two points of the video frame given in 0..1."""
    drag(page, frame_point(page, *n0), frame_point(page, *n1), steps)


def click(page, point) -> None:
    page.mouse.click(*point)


def editor_state(page) -> dict:
    return page.evaluate(f"""() => {{ const e = {FIND_NODE}.boxEditor;
        return {{frame: e.frame, selected: e.selected, error: e.error && e.error.message,
                 undo: e.undoStack.length, redo: e.redoStack.length, objects: e.doc.objects.length}}; }}""")


def press(page, key: str) -> None:
    page.keyboard.press(key)


def render(page) -> None:
    page.evaluate(f"() => {FIND_NODE}.boxEditor.renderNow()")


def clear_graph(page) -> None:
    page.evaluate("() => { window.app.graph.clear(); window.app.canvas.setDirty(true, true); }")


def node_corner(page) -> tuple[float, float]:
    """Client coordinates of the node's bottom-right corner (where its resize handle is)."""
    return tuple(page.evaluate(
        f"""() => {{
            const n = {FIND_NODE};
            const el = document.querySelector(`[data-node-id="${{n.id}}"]`);
            if (el && window.LiteGraph.vueNodesMode) {{
                const r = el.getBoundingClientRect();
                return [r.right - 3, r.bottom - 3];
            }}
            const c = window.app.canvas;
            const [x, y] = c.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
            const r = c.canvas.getBoundingClientRect();
            return [r.left + x * r.width / c.canvas.width * (window.devicePixelRatio || 1) - 3,
                    r.top + y * r.height / c.canvas.height * (window.devicePixelRatio || 1) - 3];
        }}"""))


def drop_image(page, selector: str, name: str, color: str = "#a33") -> None:
    """Drop a small PNG file on an element, as a file dragged from the desktop arrives."""
    page.evaluate(
        """async ([selector, name, color]) => {
            const c = document.createElement('canvas'); c.width = 64; c.height = 40;
            const g = c.getContext('2d'); g.fillStyle = color; g.fillRect(0, 0, 64, 40);
            const blob = await new Promise(r => c.toBlob(r, 'image/png'));
            const dt = new DataTransfer(); dt.items.add(new File([blob], name, {type: 'image/png'}));
            const el = document.querySelector(selector);
            el.dispatchEvent(new DragEvent('dragover', {bubbles: true, cancelable: true, dataTransfer: dt}));
            el.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: dt}));
        }""",
        [selector, name, color],
    )


def paste_image(page, selector: str, name: str, color: str = "#3a3") -> None:
    """Paste a small PNG into a focused element (a clipboard paste event with an image file)."""
    page.evaluate(
        """async ([selector, name, color]) => {
            const c = document.createElement('canvas'); c.width = 64; c.height = 40;
            const g = c.getContext('2d'); g.fillStyle = color; g.fillRect(0, 0, 64, 40);
            const blob = await new Promise(r => c.toBlob(r, 'image/png'));
            const dt = new DataTransfer(); dt.items.add(new File([blob], name, {type: 'image/png'}));
            const el = document.querySelector(selector);
            el.focus();
            el.dispatchEvent(new ClipboardEvent('paste', {bubbles: true, cancelable: true, clipboardData: dt}));
        }""",
        [selector, name, color],
    )


def wait_stable(page, timeout: float = 20.0) -> None:
    """Wait until the editor's stage stops moving (the Vue renderer settles node layout a few
    frames after a node is added or a workflow is loaded)."""
    js = """() => { const c = document.querySelector('.bdx-stage-canvas'); if (!c) return null;
                    const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height].map(Math.round); }"""
    deadline = time.monotonic() + timeout
    last, same = None, 0
    while time.monotonic() < deadline:
        cur = page.evaluate(js)
        same = same + 1 if cur == last and cur is not None else 0
        if same >= 3:
            return
        last = cur
        time.sleep(0.25)


def paste_text(page, selector: str, text: str) -> None:
    """Paste plain text into a focused element (a clipboard paste event)."""
    page.evaluate(
        """([selector, text]) => {
            const dt = new DataTransfer(); dt.setData('text/plain', text);
            const el = document.querySelector(selector);
            el.focus();
            el.dispatchEvent(new ClipboardEvent('paste', {bubbles: true, cancelable: true, clipboardData: dt}));
        }""",
        [selector, text],
    )
