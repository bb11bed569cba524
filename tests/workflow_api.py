"""UI-format workflows (what the frontend saves, what example_workflows/ ships) to API-format
prompts (what POST /prompt takes), from the server's own /object_info.

Kept free of pytest, like harness.py, so that the demo uses the very same code as the tests.

The frontend stores a node's widget values by *position* in ``widgets_values``; the position of a
widget is the order of the node's widget inputs in /object_info (``input_order``: required, then
optional), and an INT widget with ``control_after_generate`` (or, lacking that flag, named seed /
noise_seed: the frontend's own rule) is followed by its control value ("fixed", "randomize", ...),
which is never sent. Links are ``[id, from node, from slot, to node, to slot, type]``. Frontend-only
nodes (notes, reroutes, primitives) are not sent; muted nodes are dropped and bypassed nodes are
bridged, as the frontend's graphToPrompt does.
"""

from __future__ import annotations

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTE_TYPES = {"Note", "MarkdownNote"}
MODE_MUTED, MODE_BYPASS = 2, 4


class WorkflowError(ValueError):
    pass


def _input_order(info: dict) -> list[tuple[str, list]]:
    """[(name, spec)] of a node's inputs in the order the frontend creates its widgets."""
    out = []
    order = info.get("input_order") or {g: list(info["input"].get(g, {})) for g in ("required", "optional")}
    for group in ("required", "optional"):
        specs = info["input"].get(group, {})
        out += [(name, specs[name]) for name in order.get(group, []) if name in specs]
    return out


def _is_widget(spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_value(name: str, spec) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    flag = opts.get("control_after_generate")
    if kind == "INT":
        return bool(flag) if flag is not None else name in ("seed", "noise_seed")
    return bool(flag)


def widget_names(info: dict) -> list[str | None]:
    """The meaning of each ``widgets_values`` position of a node (None: a control value)."""
    out = []
    for name, spec in _input_order(info):
        if _is_widget(spec):
            out.append(name)
            if _has_control_value(name, spec):
                if isinstance(spec[0], list) or spec[0] == "COMBO":
                    raise WorkflowError(f"input {name!r}: combo widgets with control_after_generate are not supported")
                out.append(None)
    return out


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """An API-format prompt ``{node id: {class_type, inputs, _meta}}`` from a UI-format workflow."""
    if "nodes" not in workflow or "links" not in workflow:
        raise WorkflowError("not a UI-format workflow (no 'nodes' and 'links'); an API-format prompt is queued as is")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {}
    for link in workflow["links"]:
        lid, src, src_slot, dst, dst_slot = link[:5] if isinstance(link, list) else (
            link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"])
        links[lid] = (src, src_slot)

    def source(lid, seen=()):
        """The real (node, slot) behind a link, through reroutes and bypassed nodes; None if muted."""
        src, slot = links[lid]
        node = nodes[src]
        if lid in seen:
            raise WorkflowError(f"link {lid}: loops through reroutes/bypassed nodes")
        if node.get("type") == "Reroute" or node.get("mode") == MODE_BYPASS:
            want = node["outputs"][slot].get("type") if node.get("type") != "Reroute" else None
            for inp in node.get("inputs", []):
                if inp.get("link") is not None and (want is None or inp.get("type") in (want, "*")):
                    return source(inp["link"], seen + (lid,))
            return None
        if node.get("mode") == MODE_MUTED:
            return None
        if node.get("type") == "PrimitiveNode":
            raise WorkflowError(f"node {src} (PrimitiveNode): primitives are not supported; put the value into "
                                "the widgets it feeds")
        return str(src), slot

    prompt = {}
    for nid, node in nodes.items():
        kind = node.get("type")
        if kind in NOTE_TYPES or kind in ("Reroute", "PrimitiveNode") or node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        where = f"node {nid} ({kind}{', ' + repr(node['title']) if node.get('title') else ''})"
        if kind not in object_info:
            raise WorkflowError(f"{where}: the server has no node type {kind!r}; install the pack that provides it")
        info = object_info[kind]
        names = widget_names(info)
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise WorkflowError(f"{where}: widgets_values by name are not supported")
        if len(values) != len(names):
            raise WorkflowError(f"{where}: {len(values)} widget values but the server's {kind} has {len(names)} "
                                f"widget slots {names}; the workflow was saved by another version of the node")
        inputs = {name: value for name, value in zip(names, values) if name is not None}
        for inp in node.get("inputs", []):
            if inp.get("link") is None:
                continue
            src = source(inp["link"])
            if src is None:
                inputs.pop(inp["name"], None)
                continue
            inputs[inp["name"]] = [src[0], src[1]]
        prompt[str(nid)] = {"class_type": kind, "inputs": inputs,
                            "_meta": {"title": node.get("title") or info.get("display_name") or kind}}
    return prompt


def find_nodes(prompt: dict, class_type: str) -> list[str]:
    """Ids of an API prompt's nodes of one type, in id order."""
    return sorted((k for k, v in prompt.items() if v["class_type"] == class_type), key=lambda k: int(k))
