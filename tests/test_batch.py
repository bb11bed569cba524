"""The batch command (python -m tools.batch) against two live ComfyUI servers: 20 jobs of the toy
workflow (UI format, converted with /object_info) with one invalid job, the command killed with
SIGKILL mid-run and started again. What the servers executed is counted from their /history."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import harness
import pytest

pytestmark = pytest.mark.server

ROOT = harness.ROOT
WORKFLOW = ROOT / "example_workflows" / "toyworld_masked_attention.json"
TINY = {"KSampler.steps": 2, "EmptyHunyuanLatentVideo.width": 32, "EmptyHunyuanLatentVideo.height": 32,
        "EmptyHunyuanLatentVideo.length": 5, "BoxDirector.BBoxTrajectory.frames": 5,
        "BoxDirector.BBoxTrajectory.width": 32, "BoxDirector.BBoxTrajectory.height": 32}


def traj(x0: float, x1: float, y=0.3) -> dict:
    return {"version": 1, "frames": 17, "width": 128, "height": 128, "objects": [
        {"id": "circle", "prompt": "red circle", "keyframes": [
            {"frame": 0, "box": [x0, y, x0 + 0.3, y + 0.3]}, {"frame": 16, "box": [x1, y, x1 + 0.3, y + 0.3]}]}]}


@pytest.fixture(scope="module")
def servers(comfy_server, tmp_path_factory):
    from boxdirector.toyworld.install import link_models

    link_models(comfy_server.base_dir)
    base = tmp_path_factory.mktemp("comfy_base_2")
    link_models(base)
    with harness.ComfyServer(base) as second:
        yield [comfy_server, second]


def history_keys(servers) -> collections.Counter:
    """How many times each batch job key was executed, over all servers."""
    seen = collections.Counter()
    for s in servers:
        for entry in s.get("/history").values():
            extra = entry["prompt"][3]
            if "boxdirector_batch" in extra:
                seen[extra["boxdirector_batch"]["key"]] += 1
    return seen


def run_batch(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "tools.batch", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def journal(out) -> dict:
    recs = {}
    path = out / "manifest.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            recs[r["key"]] = {**recs.get(r["key"], {}), **r}
    return recs


def test_twenty_jobs_one_invalid_killed_and_resumed(servers, tmp_path):
    prompts = ["a red circle", "a red circle and a blue square", "a red circle and a yellow triangle"]
    jobs = []
    for i in range(20):
        job = {"KSampler.seed": 100 + i, "Prompt.value": prompts[i % 3],
               "BoxDirector.BBoxTrajectory.trajectory": traj(0.05 + 0.02 * (i % 5), 0.6)}
        jobs.append(job)
    bad = json.loads(json.dumps(jobs[13]))
    bad["BoxDirector.BBoxTrajectory.trajectory"]["objects"][0]["keyframes"][1]["box"] = [0.7, 0.3, 0.4, 0.6]
    jobs[13] = bad  # x0 > x1: refused at validation, naming the field
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"set": TINY, "jobs": jobs}))
    out = tmp_path / "out"
    urls = [a for s in servers for a in ("--server", s.url)]
    before = history_keys(servers)

    # First run: kill it (SIGKILL, no clean-up) once some jobs are done and others are in flight.
    proc = run_batch([WORKFLOW, sweep, "--out", out, *urls, "--max-queued", "1", "--no-progress"],
                     start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        recs = journal(out).values()
        done = sum(r["status"] == "done" for r in recs)
        in_flight = sum(r["status"] in ("submitting", "queued") for r in recs)
        if done >= 4 and in_flight:
            break
        time.sleep(0.1)
    assert proc.poll() is None, f"the batch ended before it could be killed:\n{proc.stdout.read()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = journal(out)
    done_first = {k for k, r in first.items() if r["status"] == "done"}
    assert 4 <= len(done_first) < 19, len(done_first)

    # Second run: same command. Finishes the rest; re-attaches to what was in flight.
    proc = run_batch([WORKFLOW, sweep, "--out", out, *urls, "--max-queued", "1", "--no-progress"])
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 1, log              # 1: one job was refused
    assert f"{len(done_first)} done" in log, log  # finished jobs are not run again

    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest["jobs"]
    assert [r["index"] for r in rows] == list(range(20))
    assert manifest["counts"] == {"done": 19, "rejected": 1}, manifest["counts"]
    for r in rows:
        assert r["inputs"]["KSampler.seed"] == 100 + r["index"]       # inputs -> outputs
        if r["index"] == 13:
            assert r["status"] == "rejected" and not r["outputs"]
            assert "BBoxTrajectory" in r["error"] and "objects[0].keyframes[1].box" in r["error"], r["error"]
            assert "job 13 [" in log and "objects[0].keyframes[1].box" in log
        else:
            assert r["status"] == "done", r
            assert len(r["outputs"]) == 1 and r["outputs"][0].endswith(".webp"), r
            assert (out / r["outputs"][0]).stat().st_size > 100
    assert len({r["outputs"][0] for r in rows if r["outputs"]}) == 19
    assert {r["server"] for r in rows if r["status"] == "done"} == {s.url for s in servers}, "one server idle"

    # The servers' own record: each of the 19 valid jobs executed exactly once, the invalid one never.
    ran = history_keys(servers) - before
    assert sorted(ran.values()) == [1] * 19, ran
    assert set(ran) == {r["key"] for r in rows if r["status"] == "done"}

    # A third run has nothing to do.
    proc = run_batch([WORKFLOW, sweep, "--out", out, *urls, "--no-progress"])
    log, _ = proc.communicate(timeout=300)
    assert "19 done, 1 refused/failed before, 0 to run" in log, log
    assert history_keys(servers) - before == ran


def test_crash_between_journal_and_post_is_resolved_through_the_server(servers, tmp_path):
    """The one window a kill can hit: the prompt_id is journalled, and the POST may or may not have
    reached the server. Both cases, made on purpose: the job that reached the server is waited for,
    the one that did not is posted (once) under the journalled id."""
    sys.path.insert(0, str(ROOT))
    from boxdirector.tools import batch
    from boxdirector.tools import workflow as wf

    server = servers[0]
    info = server.get("/object_info")
    sweep = {"set": TINY, "grid": {"KSampler.seed": [7001, 7002]}}
    jobs = batch.plan_jobs(wf.to_api(json.loads(WORKFLOW.read_text()), info), sweep, info, ROOT)
    out = tmp_path / "out"
    out.mkdir()
    reached, lost = jobs
    m = batch.Manifest(out)
    for job, pid in ((reached, "aaaaaaaa-0000-4000-8000-000000000001"), (lost, "aaaaaaaa-0000-4000-8000-000000000002")):
        m.write(job.key, status="submitting", index=job.index, prompt_id=pid, server=server.url)
    m.close()
    status, _ = server.post("/prompt", {"prompt": reached.prompt, "prompt_id": "aaaaaaaa-0000-4000-8000-000000000001",
                                        "extra_data": {"boxdirector_batch": {"key": reached.key, "index": 0}}})
    assert status == 200
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    proc = run_batch([WORKFLOW, tmp_path / "sweep.json", "--out", out, "--server", server.url, "--no-progress"])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert "found prompt aaaaaaaa" in log, log
    rows = {r["key"]: r for r in json.loads((out / "manifest.json").read_text())["jobs"]}
    assert rows[reached.key]["prompt_id"].endswith("0001") and rows[lost.key]["prompt_id"].endswith("0002")
    keys = history_keys([server])
    assert keys[reached.key] == 1 and keys[lost.key] == 1, keys


EDIT_WORKFLOW = ROOT / "example_workflows" / "toyworld_reattention_edit.json"
EDIT_TINY = {"KSampler.steps": 2, "EmptyHunyuanLatentVideo.width": 32, "EmptyHunyuanLatentVideo.height": 32,
             "EmptyHunyuanLatentVideo.length": 5, **{f"{t}.{k}": v for t in ("Source boxes", "Edit boxes")
                                                    for k, v in (("frames", 5), ("width", 32), ("height", 32))}}


def test_job_refused_in_one_branch_is_rejected_not_done(comfy_server, tmp_path):
    """ComfyUI answers 200 with node_errors when one output branch fails validation and runs the
    others: here the source video is saved but the edit never runs, so the job is not done."""
    from boxdirector.toyworld.install import link_models

    link_models(comfy_server.base_dir)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"set": EDIT_TINY, "jobs": [{"BoxDirector.ReAttentionEdit.steps": 0},
                                                            {"BoxDirector.ReAttentionEdit.cfg": 1000.0}]}))
    out = tmp_path / "out"
    proc = run_batch([EDIT_WORKFLOW, sweep, "--out", out, "--server", comfy_server.url, "--no-progress"])
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"rejected": 2}, (manifest["counts"], log)
    rows = {r["index"]: r for r in manifest["jobs"]}
    for index, field in ((0, "steps"), (1, "cfg")):
        row = rows[index]
        assert "BoxDirector.ReAttentionEdit" in row["error"] and f"'{field}'" in row["error"], row["error"]
        assert "not run: 21 (SaveAnimatedWEBP)" in row["error"], row["error"]
        # The branch that passed ran: its file is kept and listed, the edit's is not there.
        assert [p.split("/")[-1].split("_")[0] for p in row["outputs"]] == ["14"], row["outputs"]
        assert f"rejected: job {index} [" in log and field in log, log
    ran = history_keys([comfy_server])
    assert all(ran[r["key"]] == 1 for r in rows.values()), ran


def test_bad_sweep_keys_are_named(servers, tmp_path):
    sweep = tmp_path / "sweep.json"
    for content, expected in (({"set": {"KSampler.sed": 1}}, "node 12 (KSampler) has no input 'sed'"),
                              ({"set": {"NoSuchNode.seed": 1}}, "no node 'NoSuchNode'"),
                              ({"set": {"CLIPTextEncode.text": "x"}}, "names several nodes"),
                              ({"zip": {"KSampler.seed": [1, 2], "KSampler.cfg": [1.0]}}, "one length"),
                              ({"sweep": {}}, "unknown sweep section")):
        sweep.write_text(json.dumps(content))
        proc = run_batch([WORKFLOW, sweep, "--out", tmp_path / "o", "--server", servers[0].url])
        log, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2 and expected in log, (content, log)


def test_shipped_example_sweep_plans_six_jobs(servers, tmp_path):
    sweep = ROOT / "examples" / "batch" / "toy_sweep.json"
    proc = run_batch([WORKFLOW, sweep, "--out", tmp_path / "o", "--server", servers[0].url, "--dry-run"])
    log, _ = proc.communicate(timeout=120)
    lines = [line for line in log.splitlines() if " job " in line]
    assert proc.returncode == 0 and len(lines) == 6, log
    assert sum("@corners.json" in line for line in lines) == 3, log


def test_server_restart_mid_batch_is_reported_and_its_lost_job_sent_again(tmp_path):
    """A server that goes away with a job queued and comes back empty (a restart): the batch says
    that it stopped answering, that it answers again and that the job was lost and is sent again,
    and every job ends done."""
    from boxdirector.toyworld.install import link_models

    base = tmp_path / "restarting"
    link_models(base)
    jobs = [{"KSampler.seed": 300 + i, "Prompt.value": "a red circle",
             "BoxDirector.BBoxTrajectory.trajectory": traj(0.05 + 0.05 * i, 0.6)} for i in range(4)]
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"set": TINY, "jobs": jobs}))
    out = tmp_path / "out"
    server = harness.ComfyServer(base)
    server.start()
    try:
        proc = run_batch([WORKFLOW, sweep, "--out", out, "--server", server.url, "--max-queued", "2",
                          "--no-progress"])
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            recs = journal(out).values()
            if any(r["status"] == "queued" for r in recs):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read()
        server.stop()                                   # its queue is lost with it
        time.sleep(3)
        server.start()                                  # same port, same folder, an empty queue
        log, _ = proc.communicate(timeout=600)
    finally:
        server.stop()
    assert proc.returncode == 0, log
    assert f"{server.url} stopped answering" in log, log
    assert f"{server.url} answers again" in log, log
    assert "came back without job" in log and "sending it again" in log, log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 4}, manifest["counts"]
