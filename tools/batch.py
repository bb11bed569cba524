"""Queue a sweep of jobs on one or more ComfyUI servers through the HTTP API, follow them over the
websocket, save their outputs with a manifest, and resume after a crash without repeating work.

    python -m tools.batch WORKFLOW SWEEP --out DIR [--server URL ...]

WORKFLOW is an API-format prompt (Workflow -> Export (API)) or a UI-format workflow, which is
converted with the first server's /object_info (tools.workflow). SWEEP (JSON, or YAML) says what
varies; every key is ``<node>.<input>``, the node named by its id, its title or its class type:

    {"set":  {"KSampler.steps": 20},                       # the same for every job
     "grid": {"KSampler.seed": [1, 2, 3]},                 # every combination
     "zip":  {"Prompt.value": ["a red circle", "a blue square"],
              "BBox Trajectory.trajectory": ["@left.json", {"version": 1, ...}]},   # side by side
     "jobs": [{"KSampler.cfg": 4.0}, {"KSampler.cfg": 6.0}]}                         # listed one by one

Jobs = jobs x zip rows x grid combinations, each over ``set``. A value ``"@file"`` is that file's
text (relative to the sweep file); a JSON object or list given for a text input is sent as JSON
text (trajectories). Identical jobs are queued once.

DIR/manifest.jsonl is the journal: a job's key is the hash of its resolved prompt; before a prompt
is posted its prompt_id is chosen and written down, so after a crash or restart the command finds
it again on the server (/queue, then /history) and waits for it instead of queueing it twice.
Finished jobs are skipped, refused or failed ones too unless --retry-failed. DIR/manifest.json
lists every job of the sweep: inputs, status, prompt_id, server, output files, error text.
Outputs (files of type "output", or all with --all-outputs) are saved under DIR/outputs/.
A job is done only when every output node of its prompt ran: ComfyUI answers 200 with node_errors
when only some output branches pass validation and runs just those; such a job ends "rejected"
(the error names the refused node and input; the other branches' files are still saved).
Exit status: 0 all done, 1 some job refused or failed, 2 bad arguments, 3 no server reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from . import workflow as wf

FINAL = ("done", "rejected", "error")


class BatchError(ValueError):
    """Bad workflow or sweep; the message names the key and the fix."""


# --- sweep -------------------------------------------------------------------------------------
def load_sweep(path: Path) -> dict:
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, list):
        data = {"jobs": data}
    if not isinstance(data, dict):
        raise BatchError(f"{path}: a sweep is an object with set/grid/zip/jobs (or a list of jobs)")
    unknown = set(data) - {"set", "grid", "zip", "jobs"}
    if unknown:
        raise BatchError(f"{path}: unknown sweep section(s) {sorted(unknown)}; use set, grid, zip, jobs")
    return data


def expand_sweep(sweep: dict) -> list[dict]:
    """The list of jobs, each {address: value}, in a fixed order."""
    base = sweep.get("set") or {}
    rows = sweep.get("jobs") or [{}]
    zipped = sweep.get("zip") or {}
    grid = sweep.get("grid") or {}
    for name, section in (("set", base), ("zip", zipped), ("grid", grid)):
        if not isinstance(section, dict):
            raise BatchError(f"sweep '{name}' must be an object of <node>.<input>: value(s)")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BatchError("sweep 'jobs' must be a list of objects {<node>.<input>: value}")
    for name, section in (("zip", zipped), ("grid", grid)):
        for k, v in section.items():
            if not isinstance(v, list) or not v:
                raise BatchError(f"sweep {name}[{k!r}] must be a non-empty list of values")
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise BatchError(f"sweep 'zip' lists must have one length; got {lengths}")
    zip_rows = [dict(zip(zipped, vals)) for vals in zip(*zipped.values())] if zipped else [{}]
    grid_rows = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] if grid else [{}]
    return [{**base, **r, **z, **g} for r in rows for z in zip_rows for g in grid_rows]


def find_node(prompt: dict, ref: str) -> str:
    if ref in prompt:
        return ref
    by_title = [k for k, v in prompt.items() if (v.get("_meta") or {}).get("title") == ref]
    by_class = [k for k, v in prompt.items() if v.get("class_type") == ref]
    for found in (by_title, by_class):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise BatchError(f"{ref!r} names several nodes ({', '.join(found)}): use the node id")
    names = sorted({(v.get("_meta") or {}).get("title") or v["class_type"] for v in prompt.values()})
    raise BatchError(f"no node {ref!r} in the workflow; nodes: ids {', '.join(sorted(prompt, key=str))}, "
                     f"titles/types {', '.join(names)}")


def apply_inputs(prompt: dict, inputs: dict, object_info: dict | None, base_dir: Path) -> dict:
    out = json.loads(json.dumps(prompt))
    for address, value in inputs.items():
        if "." not in address:
            raise BatchError(f"sweep key {address!r}: write <node>.<input>, e.g. KSampler.seed")
        ref, name = address.rsplit(".", 1)
        nid = find_node(out, ref)
        node = out[nid]
        known = set(node.get("inputs", {}))
        if object_info and node["class_type"] in object_info:
            known |= {n for n, *_ in wf.ordered_inputs(object_info[node["class_type"]])}
        if name not in known:
            raise BatchError(f"sweep key {address!r}: node {nid} ({node['class_type']}) has no input {name!r}; "
                             f"its inputs: {', '.join(sorted(known))}")
        if isinstance(value, str) and value.startswith("@"):
            path = (base_dir / value[1:]).resolve()
            if not path.is_file():
                raise BatchError(f"sweep key {address!r}: file {path} not found")
            value = path.read_text()
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        node.setdefault("inputs", {})[name] = value
    return out


def job_key(prompt: dict) -> str:
    canonical = {k: {"class_type": v["class_type"], "inputs": v.get("inputs", {})} for k, v in prompt.items()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Job:
    index: int
    key: str
    inputs: dict
    prompt: dict
    duplicates: list = field(default_factory=list)
    varying: tuple = ()     # the inputs that differ between jobs: what names this job to a person

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v if not isinstance(v, str) or len(v) < 40 else v[:37] + '...'}"
                          for k, v in self.inputs.items() if k in self.varying)
        return f"job {self.index} [{shown}]" if shown else f"job {self.index}"


def plan_jobs(prompt: dict, sweep: dict, object_info: dict | None, base_dir: Path) -> list[Job]:
    jobs, by_key = [], {}
    for i, inputs in enumerate(expand_sweep(sweep)):
        resolved = apply_inputs(prompt, inputs, object_info, base_dir)
        key = job_key(resolved)
        if key in by_key:
            by_key[key].duplicates.append(i)
            continue
        job = Job(i, key, inputs, resolved)
        by_key[key] = job
        jobs.append(job)
    keys = {k for j in jobs for k in j.inputs}
    varying = tuple(k for k in keys if len({json.dumps(j.inputs.get(k), sort_keys=True) for j in jobs}) > 1)
    for job in jobs:
        job.varying = varying
    return jobs


# --- errors as people read them ---------------------------------------------------------------
def rejection_text(answer: dict, prompt: dict) -> str:
    """POST /prompt's 400 answer -> one line per problem, naming node, input(s) and message."""
    import re

    problems: dict = {}      # (who, text) -> [input names]
    err = answer.get("error")
    for nid, entry in (answer.get("node_errors") or {}).items():
        node = prompt.get(str(nid), {})
        title = (node.get("_meta") or {}).get("title")
        cls = entry.get("class_type") or node.get("class_type", "?")
        who = f"node {nid} ({cls}{', ' + repr(title) if title and title != cls else ''})"
        for e in entry.get("errors", []):
            inp = (e.get("extra_info") or {}).get("input_name")
            details = e.get("details") or ""
            msg = e.get("message") or ""
            if msg.startswith("Custom validation failed"):
                # ComfyUI repeats a node's own validation message once per input its validate_inputs
                # declares: show it once, blaming only the inputs the message names.
                msg, details = re.sub(r"^(Custom validation failed for node: )?\S+ - ", "", details or msg), ""
                if inp and not re.search(rf"\b{re.escape(inp)}\b", msg):
                    inp = None
            text = f"{msg}: {details}" if details and details not in msg and details != inp else msg
            problems.setdefault((who, text), [])
            if inp and inp not in problems[(who, text)]:
                problems[(who, text)].append(inp)
    lines = [f"{who}{' input ' + ', '.join(map(repr, inps)) if inps else ''}: {text}"
             for (who, text), inps in problems.items()]
    if not lines and err:
        lines.append(err.get("message", str(err)) if isinstance(err, dict) else str(err))
        if isinstance(err, dict) and err.get("details"):
            lines[-1] += f": {err['details']}"
    return "; ".join(lines) or json.dumps(answer)[:500]


def execution_error_text(entry: dict) -> str:
    for kind, data in (entry.get("status") or {}).get("messages", []):
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{str(data.get('exception_type', 'Error')).rsplit('.', 1)[-1]}: "
                    f"{str(data.get('exception_message', '')).strip()}")
        if kind == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return f"execution failed: {json.dumps(entry.get('status'))[:300]}"


# --- manifest -------------------------------------------------------------------------------------
class Manifest:
    """An append-only journal (manifest.jsonl, fsynced line by line; a torn last line from a crash is
    ignored) and the summary manifest.json rewritten atomically after every change."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir
        self.path = out_dir / "manifest.jsonl"
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.records[rec["key"]] = {**self.records.get(rec["key"], {}), **rec}
        self._fh = open(self.path, "a")  # noqa: SIM115 -- the journal stays open for the whole run

    def write(self, key: str, **fields) -> dict:
        rec = {"key": key, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records[key] = {**self.records.get(key, {}), **rec}
        return self.records[key]

    def summary(self, jobs: list[Job], meta: dict) -> dict:
        rows = []
        for job in jobs:
            rec = self.records.get(job.key, {})
            rows.append({"index": job.index, "key": job.key, "inputs": job.inputs, "duplicates": job.duplicates,
                         "status": rec.get("status", "pending"), "prompt_id": rec.get("prompt_id"),
                         "server": rec.get("server"), "outputs": rec.get("outputs", []),
                         "error": rec.get("error"), "seconds": rec.get("seconds")})
        counts = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        return {**meta, "counts": counts, "jobs": rows}

    def save_summary(self, jobs: list[Job], meta: dict) -> None:
        tmp = self.dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.summary(jobs, meta), indent=1) + "\n")
        os.replace(tmp, self.dir / "manifest.json")

    def close(self):
        self._fh.close()


# --- one server -----------------------------------------------------------------------------------
class Server:
    def __init__(self, url: str, session, client_id: str, request_timeout: float):
        self.url = url.rstrip("/")
        self.session = session
        self.client_id = client_id
        self.timeout = request_timeout
        self.events: dict[str, asyncio.Event] = {}
        self.progress: dict[str, str] = {}     # prompt_id -> "node 5 3/20"
        self.ws_task = None

    def _t(self):
        import aiohttp

        return aiohttp.ClientTimeout(total=self.timeout)

    async def get_json(self, path: str):
        async with self.session.get(self.url + path, timeout=self._t()) as r:
            r.raise_for_status()
            return await r.json()

    async def post_prompt(self, prompt: dict, prompt_id: str, extra: dict) -> tuple[int, dict]:
        body = {"prompt": prompt, "prompt_id": prompt_id, "client_id": self.client_id, "extra_data": extra}
        async with self.session.post(self.url + "/prompt", json=body, timeout=self._t()) as r:
            try:
                return r.status, await r.json(content_type=None)
            except (json.JSONDecodeError, ValueError):
                return r.status, {"error": (await r.text())[:500]}

    async def locate(self, prompt_id: str) -> str | None:
        """"queue" when pending/running, "history" when finished, None when the server never had it
        (the queue is read before the history: a prompt moves from one to the other atomically)."""
        q = await self.get_json("/queue")
        for item in q.get("queue_running", []) + q.get("queue_pending", []):
            if len(item) > 1 and item[1] == prompt_id:
                return "queue"
        return "history" if await self.history(prompt_id) else None

    async def history(self, prompt_id: str) -> dict | None:
        h = await self.get_json(f"/history/{prompt_id}")
        return h.get(prompt_id)

    async def download(self, item: dict) -> bytes:
        q = urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                       "type": item.get("type", "output")})
        async with self.session.get(f"{self.url}/view?{q}", timeout=self._t()) as r:
            r.raise_for_status()
            return await r.read()

    def event(self, prompt_id: str) -> asyncio.Event:
        return self.events.setdefault(prompt_id, asyncio.Event())

    async def listen(self):
        """Websocket /ws: progress per prompt, and a nudge when one finishes (history is the truth)."""
        import aiohttp

        ws_url = self.url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        while True:
            try:
                async with self.session.ws_connect(ws_url, heartbeat=20) as ws:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        m = json.loads(msg.data)
                        data = m.get("data") or {}
                        pid = data.get("prompt_id")
                        if not pid:
                            continue
                        kind = m.get("type")
                        if kind == "progress":
                            self.progress[pid] = f"step {data.get('value')}/{data.get('max')}"
                        elif kind == "executing" and data.get("node") is not None:
                            self.progress[pid] = f"node {data.get('node')}"
                        elif kind == "execution_start":
                            self.progress[pid] = "started"
                        if kind in ("execution_success", "execution_error", "execution_interrupted") or (
                                kind == "executing" and data.get("node") is None):
                            self.event(pid).set()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 -- server restarting or gone: history polling carries on, retry the socket
                await asyncio.sleep(1.0)


# --- the batch ----------------------------------------------------------------------------------------
class Batch:
    def __init__(self, jobs: list[Job], servers: list[str], out_dir: Path, manifest: Manifest, meta: dict,
                 max_queued: int = 2, retry_failed: bool = False, all_outputs: bool = False,
                 progress: bool = True, poll: float = 2.0, request_timeout: float = 120.0, client_id: str = "",
                 server_grace: float = 120.0):
        self.jobs, self.urls, self.out_dir = jobs, servers, out_dir
        self.manifest, self.meta = manifest, meta
        self.max_queued, self.retry_failed, self.all_outputs = max_queued, retry_failed, all_outputs
        self.show_progress, self.poll, self.request_timeout = progress, poll, request_timeout
        self.client_id = client_id
        self.server_grace = server_grace
        self.pending: asyncio.Queue = asyncio.Queue()
        self.remaining = 0
        self.bar = None
        self.down: dict[str, float] = {}
        self.output_classes: set | None = None     # class types that are output nodes (/object_info)
        self.unreachable: set = set()               # servers whose outage was reported, until they answer

    # progress output
    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def finished(self, job: Job, status: str, **fields) -> None:
        self.manifest.write(job.key, status=status, index=job.index, **fields)
        self.manifest.save_summary(self.jobs, self.meta)
        self.remaining -= 1
        if self.bar is not None:
            self.bar.update(1)
        if status != "done":
            self.say(f"{status.upper()}: {job.describe()}: {fields.get('error')}")

    def outputs_present(self, rec: dict) -> bool:
        return all((self.out_dir / p).is_file() for p in rec.get("outputs", []))

    # following one prompt
    async def follow(self, server: Server, job: Job, prompt_id: str, t0: float) -> None:
        import aiohttp

        ev = server.event(prompt_id)
        lost_since = None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ev.wait(), self.poll)
            try:
                entry = await server.history(prompt_id)
                if lost_since is not None:
                    self.back(server)
                if entry is None and lost_since is not None and await server.locate(prompt_id) is None:
                    # The server came back without it (restarted, queue lost): send it again, same id.
                    self.say(f"{server.url} came back without {job.describe()} (prompt {prompt_id[:8]}, lost with "
                             "its queue): sending it again under the same id")
                    server.events.pop(prompt_id, None)
                    await self.submit(server, job, prompt_id)
                    return
                lost_since = None
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                if lost_since is None:
                    self.lost(server, e)
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > self.server_grace:
                    self.say(f"{server.url} has not answered for {self.server_grace:.0f} s; {job.describe()} "
                             "goes to another server")
                    self.down[server.url] = time.monotonic()
                    server.events.pop(prompt_id, None)
                    await self.pending.put(job)
                    return
                continue
            if entry is not None and (entry.get("status") or {}).get("completed") is not None:
                break
            if ev.is_set():
                ev.clear()
        server.events.pop(prompt_id, None)
        server.progress.pop(prompt_id, None)
        status = entry.get("status") or {}
        if status.get("status_str") == "error" or not status.get("completed", True):
            self.finished(job, "error", prompt_id=prompt_id, server=server.url, error=execution_error_text(entry))
            return
        saved = await self.save_outputs(server, job, entry)
        missing = self.missing_outputs(job, entry)
        if missing:
            # The server accepted only some output branches (200 with node_errors): the rest never ran.
            rec = self.manifest.records.get(job.key, {})
            error = rec.get("partial_error") or (
                f"output node(s) {', '.join(missing)} did not run: the server refused their branch at validation")
            self.finished(job, "rejected", prompt_id=prompt_id, server=server.url, outputs=saved,
                          error=f"{error} (outputs of the other branches saved; not run: {', '.join(missing)})")
            return
        self.finished(job, "done", prompt_id=prompt_id, server=server.url, outputs=saved, error=None,
                      seconds=round(time.monotonic() - t0, 2))

    def missing_outputs(self, job: Job, entry: dict) -> list[str]:
        """The output nodes of the job's prompt that the server did not execute ("id (class)")."""
        queued = entry.get("prompt") or []
        ran = {str(n) for n in queued[4]} if len(queued) > 4 and isinstance(queued[4], list) else None
        rec = self.manifest.records.get(job.key, {})
        asked = [nid for nid, node in job.prompt.items()
                 if self.output_classes is not None and node.get("class_type") in self.output_classes]
        if ran is None or not asked:
            # Nothing to compare with: trust the answer to the POST.
            return [f"{n} ({job.prompt.get(n, {}).get('class_type', '?')})" for n in rec.get("refused_nodes") or []]
        return [f"{n} ({job.prompt[n].get('class_type')})" for n in asked if n not in ran]

    def lost(self, server: Server, exc: BaseException) -> None:
        if server.url not in self.unreachable:
            self.unreachable.add(server.url)
            self.say(f"{server.url} stopped answering ({type(exc).__name__}: {exc or 'no answer'}); its jobs wait "
                     f"up to {self.server_grace:.0f} s, then go to another server")

    def back(self, server: Server) -> None:
        if server.url in self.unreachable:
            self.unreachable.discard(server.url)
            self.say(f"{server.url} answers again; checking which of its jobs it still has")

    async def save_outputs(self, server: Server, job: Job, entry: dict) -> list[str]:
        folder = Path("outputs") / f"job{job.index:04d}_{job.key[:10]}"
        saved = []
        for node_id, out in sorted((entry.get("outputs") or {}).items()):
            for items in out.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if not (isinstance(item, dict) and "filename" in item):
                        continue
                    if item.get("type", "output") != "output" and not self.all_outputs:
                        continue
                    rel = folder / f"{node_id}_{Path(item['filename']).name}"
                    dst = self.out_dir / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    tmp = dst.with_suffix(dst.suffix + ".part")
                    tmp.write_bytes(await server.download(item))
                    os.replace(tmp, dst)
                    saved.append(str(rel))
        return saved

    async def submit(self, server: Server, job: Job, prompt_id: str | None = None) -> None:
        import aiohttp

        prompt_id = prompt_id or str(uuid.uuid4())
        # Written (and fsynced) before the POST: a crash after the server took the prompt leaves its id here.
        self.manifest.write(job.key, status="submitting", index=job.index, prompt_id=prompt_id, server=server.url,
                            error=None, partial_error=None, refused_nodes=None)
        t0 = time.monotonic()
        extra = {"boxdirector_batch": {"key": job.key, "index": job.index}}
        try:
            status, answer = await server.post_prompt(job.prompt, prompt_id, extra)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            # Did it arrive? Ask before queueing it anywhere else.
            try:
                where = await server.locate(prompt_id)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                where = None
                self.down[server.url] = time.monotonic()
            if where:
                self.manifest.write(job.key, status="queued", prompt_id=prompt_id, server=server.url)
                await self.follow(server, job, prompt_id, t0)
            else:
                self.say(f"{server.url} did not take {job.describe()}; it goes back to the queue")
                await self.pending.put(job)
            return
        if status != 200:
            self.finished(job, "rejected", prompt_id=None, server=server.url, error=rejection_text(answer, job.prompt))
            return
        partial = {}
        if answer.get("node_errors"):
            # 200 with node_errors: the server runs only the output branches that passed validation.
            partial = {"partial_error": rejection_text(answer, job.prompt),
                       "refused_nodes": sorted(map(str, answer["node_errors"]))}
            self.say(f"{job.describe()}: the server refused part of it and runs the rest: {partial['partial_error']}")
        self.manifest.write(job.key, status="queued", prompt_id=prompt_id, server=server.url,
                            number=answer.get("number"), **partial)
        await self.follow(server, job, prompt_id, t0)

    async def reattach(self, server: Server, job: Job, rec: dict) -> None:
        prompt_id = rec["prompt_id"]
        where = await server.locate(prompt_id)
        if where is None:
            # The server never got it (crash between journal and POST) or lost its queue (restart).
            self.say(f"{job.describe()}: prompt {prompt_id[:8]} is not on {server.url} (never received, or lost in "
                     "a restart): sending it under the same id")
            await self.submit(server, job, prompt_id)
            return
        self.say(f"{job.describe()}: found prompt {prompt_id[:8]} in the {where} of {server.url}; waiting for it")
        await self.follow(server, job, prompt_id, time.monotonic())

    async def worker(self, server: Server, attach: list) -> None:
        import aiohttp

        running = {asyncio.create_task(self.reattach(server, job, rec)): job for job, rec in attach}
        tries: dict = {}
        while self.remaining > 0:
            while (len(running) < self.max_queued and not self.pending.empty()
                   and time.monotonic() - self.down.get(server.url, -1e9) > 10):
                job = self.pending.get_nowait()
                running[asyncio.create_task(self.submit(server, job))] = job
            if not running:
                await asyncio.sleep(0.2)
                continue
            done, _ = await asyncio.wait(set(running), timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                job = running.pop(task)
                exc = task.exception()
                if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
                    # Lost contact mid-way (reading the queue, downloading): the journal still holds the
                    # prompt id, so the job is looked up again rather than sent blindly.
                    self.say(f"{server.url}: {type(exc).__name__}: {exc}; {job.describe()} will be looked up again")
                    self.down[server.url] = time.monotonic()
                    rec = self.manifest.records.get(job.key, {})
                    tries[job.key] = tries.get(job.key, 0) + 1
                    if rec.get("prompt_id") and rec.get("server") == server.url and tries[job.key] * 2 < self.server_grace:
                        await asyncio.sleep(2)
                        running[asyncio.create_task(self.reattach(server, job, rec))] = job
                    else:
                        await self.pending.put(job)
                elif exc is not None:
                    raise exc

    async def ticker(self, servers: list[Server]) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.bar is not None:
                parts = [f"{s.url.split('//')[-1]} {p}" for s in servers for p in list(s.progress.values())[:1]]
                self.bar.set_postfix_str(" | ".join(parts)[:80], refresh=True)

    async def run(self) -> int:
        import aiohttp

        done = failed = 0
        attach: dict[str, list] = {u.rstrip("/"): [] for u in self.urls}
        for job in self.jobs:
            rec = self.manifest.records.get(job.key, {})
            status = rec.get("status")
            if status == "done" and self.outputs_present(rec):
                done += 1
            elif status in ("rejected", "error") and not self.retry_failed:
                failed += 1
            elif status in ("submitting", "queued") and rec.get("server") in attach and rec.get("prompt_id"):
                attach[rec["server"]].append((job, rec))
                self.remaining += 1
            else:
                self.pending.put_nowait(job)
                self.remaining += 1
        self.say(f"{len(self.jobs)} jobs: {done} done, {failed} refused/failed before, {self.remaining} to run "
                 f"on {len(attach)} server(s); manifest {self.manifest.dir / 'manifest.json'}")
        self.manifest.save_summary(self.jobs, self.meta)
        if self.remaining == 0:
            return self.exit_code()
        if self.show_progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(self.jobs), initial=done + failed, unit="job", file=sys.stderr,
                            dynamic_ncols=True)
        async with aiohttp.ClientSession() as session:
            servers = [Server(u, session, self.client_id, self.request_timeout) for u in attach]
            reachable = []
            for s in servers:
                try:
                    await s.get_json("/queue")
                    reachable.append(s)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                    self.say(f"{s.url} is not reachable ({e}); its jobs go to the others")
                    for job, _rec in attach[s.url]:
                        await self.pending.put(job)
            if not reachable:
                self.say("no ComfyUI server reachable: start one (python main.py --listen) or fix --server")
                return 3
            try:
                info = await reachable[0].get_json("/object_info")
                self.output_classes = {k for k, v in info.items() if isinstance(v, dict) and v.get("output_node")}
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                self.say(f"{reachable[0].url}/object_info did not answer: a job counts as done when the server "
                         "reported no node_errors for it")
            for s in reachable:
                s.ws_task = asyncio.create_task(s.listen())
            ticker = asyncio.create_task(self.ticker(reachable))
            try:
                await asyncio.gather(*(self.worker(s, attach[s.url]) for s in reachable))
            finally:
                ticker.cancel()
                for s in reachable:
                    s.ws_task.cancel()
                if self.bar is not None:
                    self.bar.close()
        self.manifest.save_summary(self.jobs, self.meta)
        return self.exit_code()

    def exit_code(self) -> int:
        summary = self.manifest.summary(self.jobs, self.meta)
        bad = [j for j in summary["jobs"] if j["status"] in ("rejected", "error")]
        self.say(f"finished: {summary['counts']}")
        for j in bad:
            job = next(x for x in self.jobs if x.key == j["key"])
            self.say(f"  {j['status']}: {job.describe()}: {j['error']}")
        return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.batch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("workflow", type=Path, help="API-format prompt or UI-format workflow (.json)")
    p.add_argument("sweep", type=Path, help="sweep file (.json, .yaml)")
    p.add_argument("--out", type=Path, required=True, help="output folder: manifest and files (resume: same folder)")
    p.add_argument("--server", action="append", help="ComfyUI URL; repeat for several (default http://127.0.0.1:8188)")
    p.add_argument("--max-queued", type=int, default=2, help="prompts in flight per server (default 2)")
    p.add_argument("--retry-failed", action="store_true", help="run refused/failed jobs again")
    p.add_argument("--all-outputs", action="store_true", help="also save temp files (previews)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and stop")
    args = p.parse_args(argv)
    servers = [s.rstrip("/") for s in (args.server or ["http://127.0.0.1:8188"])]
    try:
        raw = json.loads(args.workflow.read_text())
        info = None
        if wf.is_ui_workflow(raw):
            try:
                info = wf.fetch_object_info(servers[0])
            except OSError as e:
                print(f"cannot read /object_info from {servers[0]} to convert the UI workflow: {e}", file=sys.stderr)
                return 3
        prompt = wf.load_prompt(args.workflow, info)
        jobs = plan_jobs(prompt, load_sweep(args.sweep), info, args.sweep.resolve().parent)
    except (BatchError, wf.WorkflowError, json.JSONDecodeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for job in jobs:
            print(job.key, job.describe())
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "batch.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"client_id": f"boxdirector-batch-{uuid.uuid4()}"}
    state.update(workflow=str(args.workflow), sweep=str(args.sweep))
    state_path.write_text(json.dumps(state, indent=1) + "\n")
    manifest = Manifest(args.out)
    meta = {"workflow": str(args.workflow), "sweep": str(args.sweep), "servers": servers}
    batch = Batch(jobs, servers, args.out, manifest, meta, max_queued=args.max_queued,
                  retry_failed=args.retry_failed, all_outputs=args.all_outputs, progress=not args.no_progress,
                  client_id=state["client_id"])
    try:
        return asyncio.run(batch.run())
    finally:
        manifest.close()


if __name__ == "__main__":
    sys.exit(main())
