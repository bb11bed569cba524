"""Fuzz tier: malformed values for every input of every pack node, POSTed to a live ComfyUI server.

Each case is one API prompt (a toy-world example workflow, or a small graph around the node) with
one input of one pack node made bad. What must hold, whatever the value:
- the server answers it with a validation error (node_errors) for that node that names the input,
  or, if it is queued, the run ends in an execution error of that node naming the input: never a
  success;
- the server keeps serving: after the cases of each node, and after any case that was queued, a
  good prompt runs to success.
The expected messages are not read from the pack: a case passes when the input's own name is in
what ComfyUI reports for that node. Every input of every node gets the fixed cases; hypothesis then
draws further values for numbers, choices and the parsed text inputs.
"""

from __future__ import annotations

import json
import math
import re
import time

import harness
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.server, pytest.mark.fuzz]

ROOT = harness.ROOT
TOY = ("masked_attention", "domain_adaptation", "first_frame_share", "reattention_edit", "long_video")
SMALL = {"width": 32, "height": 32, "length": 5, "steps": 2}    # keeps a queued case to seconds
# Text inputs the pack parses, with values each must refuse.
BAD_TEXT = {
    "trajectory": ["[" * 100000, "not json", '{"frames": 200000, "width": 128, "height": 128, "objects": []}',
                   '{"frames": 1e30, "width": 128, "height": 128, "objects": []}'],
    "blocks": ["5-2", "100-200", "90%-10%", "0-20000000", "first half"],
    "coordinates": ["[" * 100000, "nope", "[]"],
}
DOC = {"version": 1, "frames": 5, "width": 32, "height": 32, "objects": [
    {"id": "circle", "prompt": "red circle", "keyframes": [
        {"frame": 0, "box": [0.1, 0.1, 0.5, 0.5]}, {"frame": 4, "box": [0.5, 0.5, 0.9, 0.9]}]}]}


# --- prompts ---------------------------------------------------------------------------------------
def shrink(prompt: dict) -> dict:
    for node in prompt.values():
        ins = node["inputs"]
        if node["class_type"] == "BoxDirector.BBoxTrajectory":
            ins.update(frames=5, width=32, height=32)
        elif node["class_type"] == "BoxDirector.LongVideoChunks":
            ins.update(length=9, steps=2)
        else:
            for k, v in SMALL.items():
                if k in ins and not isinstance(ins[k], list):
                    ins[k] = v
    return prompt


def small_graphs() -> list[dict]:
    """Graphs for the nodes no example workflow holds: converters, preview, export."""
    doc = json.dumps(DOC)
    traj = {"class_type": "BoxDirector.BBoxTrajectory", "inputs": {"trajectory": doc, "frames": 0, "width": 0,
                                                                    "height": 0}}
    masks = {"class_type": "BoxDirector.MaskSequence", "inputs": {"trajectory": ["20", 0], "mask_id": "m",
                                                                  "mask_prompt": "", "dilation": 0, "feather": 0.0}}
    show = {"class_type": "MaskToImage", "inputs": {"mask": ["21", 1]}}
    out = {"class_type": "PreviewImage", "inputs": {"images": ["22", 0]}}
    conv = {"box_width": 8, "box_height": 8, "width": 32, "height": 32, "ids": "", "prompts": ""}
    return [
        {"1": traj, "2": {"class_type": "BoxDirector.TrajectoryPreview",
                          "inputs": {"images": ["1", 2], "trajectory": ["1", 0], "mask_opacity": 0.35}},
         "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
         "4": {"class_type": "BoxDirector.TrajectoryExport", "inputs": {"trajectory": ["1", 0]}},
         "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}},
        {"20": {"class_type": "BoxDirector.TrajectoryFromCoordinates",
                "inputs": {"coordinates": json.dumps([{"x": 8, "y": 8}, {"x": 24, "y": 24}]), **conv}},
         "21": masks, "22": show, "23": out},
        {"1": traj, "20": {"class_type": "BoxDirector.TrajectoryFromMask",
                           "inputs": {"mask": ["1", 1], "threshold": 0.5, "id": "m", "prompt": ""}},
         "21": masks, "22": show, "23": out},
        # No core node makes a BBOX or TRACKS: the missing input is refused too, beside the fuzzed one.
        {"20": {"class_type": "BoxDirector.TrajectoryFromBBox", "inputs": {"width": 32, "height": 32, "id": "m",
                                                                           "prompt": ""}},
         "21": masks, "22": show, "23": out},
        {"20": {"class_type": "BoxDirector.TrajectoryFromTracks", "inputs": dict(conv)},
         "21": masks, "22": show, "23": out},
    ]


def good_prompt(tag: str) -> dict:
    """Cheap and new each time (the mask id changes, so it runs rather than hitting the cache)."""
    return {"1": {"class_type": "BoxDirector.BBoxTrajectory", "inputs": {"trajectory": json.dumps(DOC), "frames": 0,
                                                                        "width": 0, "height": 0}},
            "2": {"class_type": "BoxDirector.MaskSequence", "inputs": {"trajectory": ["1", 0], "mask_id": tag,
                                                                      "mask_prompt": "", "dilation": 1,
                                                                      "feather": 0.5}},
            "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 1]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


@pytest.fixture(scope="module")
def fuzz(comfy_server):
    """(server, object_info, {pack node class: (prompt, node id)})."""
    from boxdirector.toyworld.install import link_models
    from boxdirector.tools import workflow as wf

    link_models(comfy_server.base_dir)
    info = comfy_server.get("/object_info")
    homes = {}
    prompts = [shrink(wf.to_api(json.loads((ROOT / "example_workflows" / f"toyworld_{m}.json").read_text()), info))
               for m in TOY] + small_graphs()
    for prompt in prompts:
        for nid, node in prompt.items():
            if node["class_type"].startswith("BoxDirector.") and node["class_type"] not in homes:
                homes[node["class_type"]] = (prompt, nid)
    pack = {k for k in info if k.startswith("BoxDirector.")}
    assert set(homes) == pack, f"no fuzz prompt for {pack - set(homes)}"
    return comfy_server, info, homes


# --- one case ---------------------------------------------------------------------------------------
def names(errors: list, field: str) -> bool:
    """Does one of a node's errors name ``field``? A node's own validation message is repeated for
    every input its check declares, so there only the message text counts, not the input label."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(field)}(?!\w)")
    for e in errors:
        details = str(e.get("details") or "")
        if e.get("type") == "custom_validation_failed":
            text = details.split(" - ", 1)[1] if " - " in details else ""
        else:
            text = f"{e.get('message')} {details} {(e.get('extra_info') or {}).get('input_name', '')}"
        if pattern.search(text):
            return True
    return False


def wait(server, prompt_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and (entry.get("status") or {}).get("completed") is not None:
            return entry
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} still running after {timeout} s\n{server.log_tail()}")


def serves_a_good_prompt(server, tag: str) -> None:
    entry = wait(server, server.queue_prompt(good_prompt(tag)))
    assert entry["status"]["status_str"] == "success", entry["status"]


def check_case(server, prompt: dict, nid: str, field: str, value, what: str) -> bool:
    """POST the prompt with ``field`` of node ``nid`` set to ``value`` (None: removed); asserts the
    outcome; True when the server queued it (it ran, at least in part)."""
    bad = json.loads(json.dumps(prompt))
    if value is None:
        bad[nid]["inputs"].pop(field, None)
    else:
        bad[nid]["inputs"][field] = value
    cls = bad[nid]["class_type"]
    shown = repr(value)[:60]
    status, answer = server.post("/prompt", {"prompt": bad, "client_id": "boxdirector-fuzz"})
    errors = (answer.get("node_errors") or {}).get(nid, {}).get("errors", [])
    if errors:
        assert names(errors, field), f"{cls}.{field} = {shown} ({what}): the errors do not name it: {errors}"
        if status == 200:   # other branches passed and run; let them finish
            wait(server, answer["prompt_id"])
        return status == 200
    assert status == 200 and not answer.get("node_errors"), \
        f"{cls}.{field} = {shown} ({what}): refused, but not for this node: {json.dumps(answer)[:2000]}"
    entry = wait(server, answer["prompt_id"])
    st_ = entry["status"]
    assert st_["status_str"] == "error", f"{cls}.{field} = {shown} ({what}) was reported as success"
    err = next(d for k, d in st_["messages"] if k == "execution_error")
    assert str(err["node_id"]) == nid and re.search(rf"\b{re.escape(field)}\b", err["exception_message"]), \
        (f"{cls}.{field} = {shown} ({what}) failed when run, but not naming node {nid} and the input: node "
         f"{err['node_id']} ({err['node_type']}): {err['exception_message'][:500]}")
    return True


# --- the cases ----------------------------------------------------------------------------------------
def fixed_values(typ, opts: dict, name: str) -> list[tuple[object, str]]:
    """Bad widget values for one input type: (value, what)."""
    lo, hi = opts.get("min"), opts.get("max")
    if typ == "FLOAT":
        out = [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "-inf"), ("abc", "text")]
        out += [(lo - 1.0, "below min")] if lo is not None else []
        out += [(hi * 10 + 1.0, "above max")] if hi is not None else []
        return out
    if typ == "INT":
        out = [(math.nan, "NaN"), ("abc", "text")]
        out += [(lo - 1, "below min")] if lo is not None else []
        out += [(hi + 1, "above max")] if hi is not None else []
        return out
    if typ == "COMBO" or isinstance(typ, list):
        return [("__not_an_option__", "unknown option"), (12345, "a number")]
    if typ == "STRING" and name in BAD_TEXT:
        return [(v, "bad text") for v in BAD_TEXT[name]]
    return []


def inputs_of(info: dict, cls: str) -> list[tuple[str, object, dict, bool]]:
    node = info[cls]["input"]
    return [(n, spec[0], (spec[1] if len(spec) > 1 else {}) or {}, group == "required")
            for group in ("required", "optional") for n, spec in node.get(group, {}).items()]


def wrong_link(prompt: dict, typ) -> tuple[dict, list]:
    """The prompt with an extra BBox Trajectory whose output of another type than ``typ`` is linked."""
    prompt = json.loads(json.dumps(prompt))
    prompt["fz"] = {"class_type": "BoxDirector.BBoxTrajectory",
                    "inputs": {"trajectory": json.dumps(DOC), "frames": 0, "width": 0, "height": 0}}
    return prompt, ["fz", 1 if typ == "IMAGE" else 2]     # a MASK, or an IMAGE


WIDGETS = ("FLOAT", "INT", "STRING", "BOOLEAN", "COMBO")


def test_every_input_of_every_node_refuses_bad_values(fuzz):
    server, info, homes = fuzz
    cases = 0
    for cls, (prompt, nid) in sorted(homes.items()):
        for name, typ, opts, required in inputs_of(info, cls):
            if typ in WIDGETS or isinstance(typ, list):
                for value, what in fixed_values(typ, opts, name):
                    if check_case(server, prompt, nid, name, value, what):
                        serves_a_good_prompt(server, f"{cls}.{name}")
                    cases += 1
            else:
                base, link = wrong_link(prompt, typ)
                if check_case(server, base, nid, name, link, f"a link of another type to a {typ} input"):
                    serves_a_good_prompt(server, f"{cls}.{name}")
                cases += 1
                if required:
                    check_case(server, prompt, nid, name, None, "required input missing")
                    cases += 1
        serves_a_good_prompt(server, cls)
    assert cases > 200, cases


def number_cases(info, homes):
    out = []
    for cls, (_prompt, nid) in sorted(homes.items()):
        for name, typ, opts, _req in inputs_of(info, cls):
            if typ in ("FLOAT", "INT", "COMBO") or isinstance(typ, list) or (typ == "STRING" and name in BAD_TEXT):
                out.append((cls, name, typ, opts))
    return out


@st.composite
def malformed(draw, cases):
    cls, name, typ, opts = draw(st.sampled_from(cases))
    lo, hi = opts.get("min"), opts.get("max")
    if typ == "FLOAT":
        value = draw(st.one_of(st.sampled_from([math.nan, math.inf, -math.inf]),
                               st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False)
                               if lo is not None else st.nothing(),
                               st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False)
                               if hi is not None else st.nothing()))
    elif typ == "INT":
        value = draw(st.one_of(st.integers(max_value=lo - 1) if lo is not None else st.nothing(),
                               st.integers(min_value=hi + 1) if hi is not None else st.nothing(),
                               st.text(alphabet="abcxyz", min_size=1)))
    elif name in BAD_TEXT:
        if name == "blocks":
            hi_i = draw(st.integers(1, 10**9))
            hi_p = draw(st.integers(1, 100))
            value = draw(st.sampled_from([f"{hi_i}-{draw(st.integers(0, hi_i - 1))}",       # reversed
                                          f"{100 + hi_i}-{100 + hi_i + draw(st.integers(0, 10**9))}",  # past any model
                                          f"{hi_p}%-{draw(st.integers(0, hi_p - 1))}%",     # reversed
                                          f"{100 + hi_p}%"]))                               # past the depth
        elif name == "trajectory":
            depth = draw(st.integers(2000, 200000))
            value = draw(st.sampled_from(["[" * depth, '{"objects": ' * depth,
                                          json.dumps({**DOC, "frames": depth}),
                                          json.dumps({**DOC, "width": depth * 10})]))
        else:
            value = "[" * draw(st.integers(2000, 200000))
    else:
        options = typ if isinstance(typ, list) else opts.get("options", [])
        value = draw(st.text(min_size=1, max_size=20).filter(lambda s: s not in options))
    return cls, name, value


@pytest.fixture(scope="module")
def drawn_cases(fuzz):
    _server, info, homes = fuzz
    return number_cases(info, homes)


def test_drawn_bad_values_are_refused_naming_node_and_input(fuzz, drawn_cases):
    server, _info, homes = fuzz

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=malformed(drawn_cases))
    def one(case):
        cls, name, value = case
        prompt, nid = homes[cls]
        if check_case(server, prompt, nid, name, value, "drawn"):
            serves_a_good_prompt(server, f"drawn {cls}.{name}")

    one()
    serves_a_good_prompt(server, "after the drawn cases")
