"""UI-format workflows (what the ComfyUI frontend saves and example_workflows/ holds) against a
server's /object_info: a static check, and the conversion to the API format that POST /prompt takes.

The frontend stores widget values by *position* in ``widgets_values``; which position belongs to
which input is only known from the node definitions the server publishes in /object_info. This
module repeats the frontend's rules (ComfyUI frontend 1.32):

- widgets are the inputs of widget types (INT, FLOAT, BOOLEAN, STRING, combos) in the order of the
  node's ``input_order``, required before optional, minus those with ``forceInput``;
- an INT with ``control_after_generate`` (or, when that option is absent, one named ``seed`` or
  ``noise_seed``) and a combo with ``control_after_generate`` are followed by a "control after
  generate" value (``fixed``/``increment``/``decrement``/``randomize``) that is never sent;
- an input with ``image_upload``/``video_upload``/... may be followed by the upload button's value
  (older frontends saved it);
- a widget converted to an input keeps its place in ``widgets_values``; when it is linked, the link
  wins;
- Note/MarkdownNote nodes are dropped; Reroute nodes are followed; a PrimitiveNode's value is the
  target widget's value; muted nodes (mode 2) are dropped with their links; bypassed nodes (mode 4)
  pass the input of the matching type through to their output.

Stdlib only: used by tools.batch, the tests and anyone with a workflow file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
MODE_MUTED, MODE_BYPASS = 2, 4
# Combo values that name a file the server does not have: expected when a workflow is checked on a
# machine without the models (the only problem ``check`` reports as "missing_file", not an error).
FILE_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx",
                   ".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm", ".mov", ".wav", ".flac", ".mp3")


class WorkflowError(ValueError):
    """A workflow that cannot be converted; the message names the node and the fix."""


@dataclass
class Problem:
    kind: str          # missing_node | bad_link | bad_value | missing_input | missing_file | widget_count
    node: str          # "12 (KSampler)"
    message: str
    node_type: str | None = None
    input: str | None = None
    value: object = None

    @property
    def is_error(self) -> bool:
        return self.kind != "missing_file"

    def __str__(self) -> str:
        return f"node {self.node}: {self.message}"


# --- /object_info -----------------------------------------------------------------------------
def fetch_object_info(server: str, timeout: float = 60) -> dict:
    with urllib.request.urlopen(server.rstrip("/") + "/object_info", timeout=timeout) as r:
        return json.loads(r.read())


def is_ui_workflow(data: dict) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def _spec(entry) -> tuple:
    typ = entry[0]
    opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    return typ, opts


def ordered_inputs(node_def: dict) -> list[tuple[str, object, dict, bool]]:
    """[(name, type, options, required)] in the frontend's order (hidden inputs left out)."""
    out = []
    for group in ("required", "optional"):
        specs = node_def.get("input", {}).get(group, {}) or {}
        order = (node_def.get("input_order") or {}).get(group) or list(specs)
        for name in order:
            if name in specs:
                typ, opts = _spec(specs[name])
                out.append((name, typ, opts, group == "required"))
    return out


def combo_options(typ, opts) -> list | None:
    if isinstance(typ, list):
        return typ
    if typ == "COMBO":
        return list(opts.get("options") or [])
    return None


def is_widget(typ, opts) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def has_control(name, typ, opts) -> bool:
    if combo_options(typ, opts) is not None:
        return bool(opts.get("control_after_generate"))
    if typ == "INT":
        flag = opts.get("control_after_generate")
        return bool(flag) if flag is not None else name in SEED_NAMES
    return False


def widget_layout(node_def: dict) -> list[tuple[str, str]]:
    """[(input name, "value" | "control" | "upload")]: what each position of widgets_values holds."""
    slots = []
    for name, typ, opts, _req in ordered_inputs(node_def):
        if not is_widget(typ, opts):
            continue
        slots.append((name, "value"))
        if has_control(name, typ, opts):
            slots.append((name, "control"))
        if any(opts.get(k) for k in UPLOAD_OPTIONS):
            slots.append((name, "upload"))
    return slots


def widget_values(node: dict, node_def: dict) -> dict:
    """{input name: value} of a UI node's widgets, by the server's definition of its type."""
    wv = node.get("widgets_values")
    if wv is None:
        return {}
    layout = widget_layout(node_def)
    names = {n for n, _ in layout}
    if isinstance(wv, dict):  # some nodes save {name: value}
        return {k: v for k, v in wv.items() if k in names}
    candidates = [layout,
                  [s for s in layout if s[1] != "upload"],
                  [s for s in layout if s[1] != "control"],
                  [s for s in layout if s[1] == "value"]]
    chosen = next((c for c in candidates if len(c) == len(wv)), None)
    if chosen is None:
        chosen = candidates[1]
        if len(wv) < len(chosen):
            raise WorkflowError(
                f"node {label(node)}: widgets_values has {len(wv)} values but the server's {node['type']} has "
                f"{len(chosen)} widgets ({', '.join(n for n, k in chosen if k == 'value')}); the workflow was "
                "saved with another version of this node: open it in the UI and save it again")
    return {name: v for (name, kind), v in zip(chosen, wv) if kind == "value"}


def label(node: dict) -> str:
    title = node.get("title")
    return f"{node.get('id')} ({node.get('type')}{', ' + repr(title) if title and title != node.get('type') else ''})"


# --- links -------------------------------------------------------------------------------------
def _links(workflow: dict) -> dict:
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                               link.get("type"))
        else:
            out[link[0]] = (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
    return out


def _check_no_subgraphs(workflow: dict, nodes: dict) -> None:
    subgraphs = {sg.get("id") for sg in ((workflow.get("definitions") or {}).get("subgraphs") or [])}
    for node in nodes.values():
        t = str(node.get("type", ""))
        if t in subgraphs or t.startswith(("workflow>", "workflow/")):
            raise WorkflowError(f"node {label(node)} is a subgraph/group node; this tool converts flat graphs "
                                "only: in the UI, right-click it and choose Unpack/Convert to nodes, then save")


class _Resolver:
    def __init__(self, workflow: dict):
        self.nodes = {n["id"]: n for n in workflow.get("nodes") or []}
        self.links = _links(workflow)

    def source(self, link_id, depth=0):
        """Where a link's value really comes from: ("node", id, slot) | ("primitive", value) | None."""
        if depth > 100:
            raise WorkflowError("a cycle of Reroute/bypassed nodes")
        link = self.links.get(link_id)
        if link is None:
            return None
        src_id, slot, _t_id, _t_slot, ltype = link
        src = self.nodes.get(src_id)
        if src is None:
            return None
        mode = src.get("mode", 0)
        if src["type"] == "Reroute":
            inp = (src.get("inputs") or [{}])[0]
            return self.source(inp.get("link"), depth + 1)
        if src["type"] == "PrimitiveNode":
            wv = src.get("widgets_values") or [None]
            return ("primitive", wv[0])
        if mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            inputs = src.get("inputs") or []
            out_type = ltype or ((src.get("outputs") or [{}] * (slot + 1))[slot].get("type"))
            order = ([inputs[slot]] if slot < len(inputs) else []) + inputs
            for inp in order:
                if inp.get("link") is not None and inp.get("type") == out_type:
                    return self.source(inp["link"], depth + 1)
            return None
        return ("node", src_id, slot)


def _widget_input_linked(node: dict) -> dict:
    """{input name: link id} for every connected input of a UI node (sockets and converted widgets)."""
    out = {}
    for inp in node.get("inputs") or []:
        if inp.get("link") is not None:
            name = (inp.get("widget") or {}).get("name") or inp.get("name")
            out[name] = inp["link"]
    return out


# --- UI -> API ---------------------------------------------------------------------------------
def to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI workflow: {node id: {class_type, inputs, _meta}}."""
    if not is_ui_workflow(workflow):
        raise WorkflowError("not a UI-format workflow (no 'nodes' and 'links'); API-format prompts need no conversion")
    res = _Resolver(workflow)
    _check_no_subgraphs(workflow, res.nodes)
    prompt = {}
    for nid in sorted(res.nodes, key=lambda k: (str(type(k)), k)):
        node = res.nodes[nid]
        t = node["type"]
        if t in FRONTEND_ONLY or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        node_def = object_info.get(t)
        if node_def is None:
            raise WorkflowError(f"node {label(node)}: node type {t!r} is not installed on the server "
                                "(install its custom node pack, or remove the node)")
        values = widget_values(node, node_def)
        linked = _widget_input_linked(node)
        inputs = {}
        for name, _typ, _opts, _req in ordered_inputs(node_def):
            if name in linked:
                src = res.source(linked[name])
                if src is None:
                    if name in values:
                        inputs[name] = values[name]
                    continue
                if src[0] == "primitive":
                    inputs[name] = values.get(name, src[1])
                else:
                    inputs[name] = [str(src[1]), src[2]]
            elif name in values:
                inputs[name] = values[name]
        prompt[str(nid)] = {"class_type": t, "inputs": inputs,
                            "_meta": {"title": node.get("title") or node_def.get("display_name") or t}}
    # Links into dropped nodes would dangle: drop inputs that point at nodes not in the prompt.
    for entry in prompt.values():
        for name, v in list(entry["inputs"].items()):
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] not in prompt:
                del entry["inputs"][name]
    return prompt


def load_prompt(path, object_info: dict | None = None) -> dict:
    """An API-format prompt from a file holding either format (UI needs object_info)."""
    data = json.loads(Path(path).read_text())
    if is_ui_workflow(data):
        if object_info is None:
            raise WorkflowError(f"{path} is a UI-format workflow: converting it needs a server's /object_info")
        return to_api(data, object_info)
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict):
        data = data["prompt"]
    if not (isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values())):
        raise WorkflowError(f"{path}: neither a UI workflow (nodes, links) nor an API prompt ({{id: {{class_type, inputs}}}})")
    return data


# --- static check --------------------------------------------------------------------------------
def types_compatible(out_type, in_type) -> bool:
    if isinstance(in_type, list) or in_type == "COMBO":
        return out_type in ("COMBO", "*") or isinstance(out_type, list)
    if out_type == "*" or in_type == "*":
        return True
    a, b = set(str(out_type).split(",")), set(str(in_type).split(","))
    return bool(a & b)


def check_value(name, typ, opts, value) -> tuple[str, str] | None:
    """(kind, message) when a widget value would be refused, else None."""
    options = combo_options(typ, opts)
    if options is not None:
        if opts.get("multiselect") and isinstance(value, list):
            bad = [v for v in value if v not in options]
            return ("bad_value", f"{name}: {bad!r} not among {options!r}") if bad else None
        if value in options:
            return None
        if isinstance(value, str) and value.lower().endswith(FILE_EXTENSIONS):
            return ("missing_file", f"{name}: file {value!r} is not on this server")
        return ("bad_value", f"{name}: {value!r} is not one of {options[:12]!r}{' ...' if len(options) > 12 else ''}")
    if typ == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            return ("bad_value", f"{name}: {value!r} is not a whole number")
    elif typ == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return ("bad_value", f"{name}: {value!r} is not a number")
    elif typ == "BOOLEAN":
        if not isinstance(value, bool):
            return ("bad_value", f"{name}: {value!r} is not true/false")
    elif typ == "STRING" and not isinstance(value, str):
        return ("bad_value", f"{name}: {value!r} is not text")
    if typ in ("INT", "FLOAT"):
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and value < lo:
            return ("bad_value", f"{name}: {value} is below the minimum {lo}")
        if hi is not None and value > hi:
            return ("bad_value", f"{name}: {value} is above the maximum {hi}")
    return None


def check(workflow: dict, object_info: dict) -> list[Problem]:
    """Everything about a UI workflow that the server would refuse or the frontend would not load:
    unknown node types, links between incompatible types or to missing slots, widget values of the
    wrong type / out of range / not among a combo's options, required inputs left unconnected.
    Combo values that name a file missing on this server are reported as kind "missing_file"
    (``Problem.is_error`` is False for them): on a machine without the models that is expected."""
    problems: list[Problem] = []
    res = _Resolver(workflow)
    try:
        _check_no_subgraphs(workflow, res.nodes)
    except WorkflowError as e:
        return [Problem("missing_node", "-", str(e))]
    for node in res.nodes.values():
        t = node.get("type")
        if t in FRONTEND_ONLY:
            continue
        node_def = object_info.get(t)
        where = label(node)
        if node_def is None:
            problems.append(Problem("missing_node", where, f"node type {t!r} is not installed on the server"))
            continue
        if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
            continue
        try:
            values = widget_values(node, node_def)
        except WorkflowError as e:
            problems.append(Problem("widget_count", where, str(e)))
            continue
        linked = _widget_input_linked(node)
        socket_names = {(i.get("widget") or {}).get("name") or i.get("name") for i in node.get("inputs") or []}
        for name, typ, opts, required in ordered_inputs(node_def):
            if name in linked:
                continue
            if is_widget(typ, opts):
                if name not in values:
                    if required:
                        problems.append(Problem("missing_input", where, f"{name}: no value saved for this widget"))
                    continue
                bad = check_value(name, typ, opts, values[name])
                if bad:
                    problems.append(Problem(bad[0], where, bad[1], t, name, values[name]))
            elif required:
                hint = "" if name in socket_names else " (the node has no such socket: re-create it in the UI)"
                problems.append(Problem("missing_input", where, f"required input {name!r} ({typ}) is not connected{hint}"))
        # Links into this node: the source's output type must fit the input's type.
        defs = {n: (typ, opts) for n, typ, opts, _ in ordered_inputs(node_def)}
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            name = (inp.get("widget") or {}).get("name") or inp.get("name")
            if name not in defs:
                problems.append(Problem("bad_link", where, f"input {name!r} does not exist on the server's {t}"))
                continue
            src = res.source(inp["link"])
            if src is None or src[0] == "primitive":
                if src is not None:
                    bad = check_value(name, *defs[name], src[1])
                    if bad:
                        problems.append(Problem(bad[0], where, bad[1] + " (from a Primitive node)"))
                continue
            src_node = res.nodes[src[1]]
            src_def = object_info.get(src_node["type"])
            if src_def is None:
                continue  # reported on the source node
            outs = src_def.get("output") or []
            if src[2] >= len(outs):
                problems.append(Problem("bad_link", where, f"input {name!r} is linked to output {src[2]} of "
                                        f"{label(src_node)}, which has only {len(outs)} outputs"))
                continue
            if not types_compatible(outs[src[2]], defs[name][0]):
                want = defs[name][0] if not isinstance(defs[name][0], list) else "COMBO"
                problems.append(Problem("bad_link", where, f"input {name!r} expects {want} but is linked to "
                                        f"output {src[2]} ({outs[src[2]]}) of {label(src_node)}"))
    for lid, (src_id, _s, dst_id, _d, _t) in res.links.items():
        for end in (src_id, dst_id):
            if end not in res.nodes:
                problems.append(Problem("bad_link", "-", f"link {lid} refers to node {end}, which is not in the workflow"))
    return problems


# --- command line -----------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.workflow", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check UI workflows against a server's /object_info")
    c.add_argument("workflows", nargs="+", type=Path)
    c.add_argument("--server", default="http://127.0.0.1:8188")
    c.add_argument("--strict", action="store_true", help="count missing model/image files as errors too")
    a = sub.add_parser("to-api", help="convert a UI workflow to an API prompt")
    a.add_argument("workflow", type=Path)
    a.add_argument("--server", default="http://127.0.0.1:8188")
    a.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    args = p.parse_args(argv)
    info = fetch_object_info(args.server)
    if args.cmd == "to-api":
        prompt = load_prompt(args.workflow, info)
        text = json.dumps(prompt, indent=2)
        if args.output:
            args.output.write_text(text + "\n")
        else:
            print(text)
        return 0
    failed = 0
    for path in args.workflows:
        problems = check(json.loads(path.read_text()), info)
        errors = [q for q in problems if q.is_error or args.strict]
        missing = [q for q in problems if not q.is_error]
        status = "FAIL" if errors else "ok"
        print(f"{status:4s} {path}" + (f"  ({len(missing)} model/input files not on this server)" if missing else ""))
        for q in problems:
            print(f"     {'error' if q.is_error or args.strict else 'note '} {q}")
        failed += bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
