"""Checkpoints, retry resume and from_checkpoint (issue 20 §3) on the real test stack.

A train on the llama-3-8b stand-in announces a checkpoint per epoch; the agent uploads
each one while training goes on and the scheduler records it at once (forge.job.
checkpoint). The test starts its own agent (a private `pool` label, as test_workers.py
does, so the stack's worker never takes these jobs), waits until the first checkpoint is
recorded, then SIGKILLs that agent and its handler - the processes it started itself,
by pid, never by a name pattern - and starts another agent. The lease runs out, the
retry's dispatch names the job's newest checkpoint, the new agent fetches it into
NF_RESUME_DIR and the handler resumes after its epoch: the attempt logs that it resumed
from epoch N's checkpoint (its first step follows the last checkpointed one) and ends with
exactly the final loss of the same job run without interruption (same seed).

from_checkpoint: artifact:// of one of the caller's checkpoints continues from it; a model
artifact, another account's checkpoint or an s3:// name is refused at submit (422 naming
from_checkpoint).
"""
import json
import os
import pathlib
import random
import re
import shutil
import signal
import sys
import tempfile
import uuid

import pytest
from conftest import ROOT
from test_workers import HANDLERS, Fleet, alive, wait

sys.path.insert(0, str(ROOT / "handlers"))
import _corpus

EPOCHS = 3
ROWS = 220  # 25 steps of 8 per epoch: a few seconds an epoch (a minute on a loaded CPU)


def dataset_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q, a = _corpus.sample(rng, "law")
        rows.append({"instruction": q, "response": a})
    return rows


@pytest.fixture(scope="module")
def dataset(api):
    uri = f"s3://resume/{uuid.uuid4().hex[:8]}.jsonl"
    body = "".join(json.dumps(r) + "\n" for r in dataset_rows(ROWS, 5)).encode()
    resp = api.call("POST", "/api/files", data={"purpose": "dataset", "uri": uri},
                    files={"file": ("train.jsonl", body, "application/x-ndjson")})
    assert resp.status_code == 201, resp.text
    return uri


@pytest.fixture
def fleet():
    """test_workers' fleet, running the real train handler (it swaps in a sleeper)."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nf-resume-"))
    f = Fleet(tmp)
    shutil.copy(HANDLERS / "train", f.handlers / "train")
    yield f
    bad = f.close()
    shutil.rmtree(tmp, ignore_errors=True)
    assert not bad, "agents did not stop cleanly:\n" + "\n".join(bad)


def train_body(dataset, fleet=None, role=None, **extra):
    body = {"model_id": "llama-3-8b", "dataset_uri": dataset, "epochs": EPOCHS, "seed": 11,
            "batch_size": 8, "max_seq_length": 96, "max_attempts": 3, **extra}
    if fleet is not None:
        body["labels"] = {"pool": fleet.pool, "role": role}
    return body


def submit(api, body, **kw):
    resp = api.submit("train", body, **kw)
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def checkpoints(api, job_id):
    """The job's recorded checkpoint artifacts, oldest epoch first."""
    resp = api.call("GET", "/api/artifacts", params={"job_id": job_id, "limit": 100})
    assert resp.status_code == 200, resp.text
    out = [a for a in resp.json()["data"] if a["kind"] == "checkpoint"]
    return sorted(out, key=lambda a: int(re.search(r"epoch-(\d+)", a["name"]).group(1)))


def art_id(a):
    return a.get("artifact_id") or a.get("id")


def logs(api, job_id, attempt=None):
    out, cursor = [], None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api.call("GET", f"/api/jobs/{job_id}/events", "/api/jobs/{job_id}/events",
                        params=params).json()
        out += [e for e in page["data"] if e.get("type", "").endswith("log")
                and (attempt is None or e.get("attempt") == attempt)]
        if not page["has_more"]:
            return [(e.get("data") or {}).get("message", "") for e in out]
        cursor = page["next_cursor"]


def children(pid):
    """The direct children of one of our own processes (/proc, no name matching)."""
    kids = []
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def kill_agent(victim, timeout=5):
    """SIGKILLs a fleet agent and the handlers it runs (they would die with it anyway),
    by pid, and waits until they are gone."""
    handlers = [p for p in children(victim.proc.pid) if alive(p)]
    victim.proc.kill()
    for pid in handlers:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    victim.proc.wait(timeout)
    for pid in handlers:
        wait(lambda p=pid: not alive(p), timeout, "the handler to die")
    return handlers


def test_killed_worker_retry_resumes_from_the_last_checkpoint(api, dataset, fleet):
    # role=victim jobs run on the agent that is killed (then on its successor), the same
    # job never interrupted on an agent of its own meanwhile (role=steady)
    victim = fleet.start("victim", labels={"role": "victim"})
    fleet.start("steady", labels={"role": "steady"})
    killed_id = submit(api, train_body(dataset, fleet, "victim"))
    whole_id = submit(api, train_body(dataset, fleet, "steady"))

    first = wait(lambda: checkpoints(api, killed_id), 240, "the first checkpoint recorded",
                 step=0.25)
    assert first[0]["name"] == "checkpoint-epoch-1.tar", first
    job = api.get_job(killed_id).json()
    assert job["status"] == "running" and job["attempt"] == 1, job
    kill_agent(victim)
    fleet.start("rescuer", labels={"role": "victim"})

    done = api.wait_terminal(killed_id, timeout=600)
    assert done["status"] == "succeeded", done
    assert done["attempt"] >= 2, done
    res = done["result"]
    ckpts = checkpoints(api, killed_id)
    resumed = res["resumed_from_epoch"]
    assert resumed is not None and 1 <= resumed < EPOCHS, res
    # every epoch has its checkpoint, the killed attempt's included
    assert {a["name"] for a in ckpts} == {f"checkpoint-epoch-{e}.tar"
                                          for e in range(1, EPOCHS + 1)}, ckpts
    said = [m for m in logs(api, killed_id, done["attempt"]) if m.startswith("resumed from")]
    assert said, logs(api, killed_id)
    m = re.match(r"resumed from the checkpoint of epoch (\d+) \(step (\d+)\); the first step "
                 r"is (\d+)", said[0])
    assert m and int(m.group(1)) == resumed, said
    steps_per_epoch = res["steps"] // EPOCHS
    assert int(m.group(2)) == resumed * steps_per_epoch  # the last checkpointed step
    assert int(m.group(3)) == int(m.group(2)) + 1

    whole = api.wait_terminal(whole_id, timeout=600)
    assert whole["status"] == "succeeded" and whole["attempt"] == 1, whole
    full = whole["result"]
    assert full["resumed_from_epoch"] is None
    assert res["steps"] == full["steps"]
    assert res["final_loss"] == full["final_loss"], (res, full)
    assert res["loss_by_epoch"] == full["loss_by_epoch"]
    assert res["tokens_processed"] == full["tokens_processed"]
    # GET /api/jobs/{id}/checkpoints: owner only, epoch, step and the attempt of each
    listed = api.call("GET", f"/api/jobs/{killed_id}/checkpoints",
                      "/api/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["epoch"] for c in listed] == list(range(1, EPOCHS + 1)), listed
    assert [c["step"] for c in listed] == [e * steps_per_epoch for e in range(1, EPOCHS + 1)]
    assert listed[0]["attempt"] == 1 and listed[-1]["attempt"] == done["attempt"], listed
    assert all(c["uri"] == f"artifact://{c['artifact_id']}" for c in listed)
    print(f"\n  resume: killed after epoch {first[0]['name']}, resumed from epoch {resumed}, "
          f"final loss {res['final_loss']} = uninterrupted {full['final_loss']}")


def test_checkpoints_of_another_account_are_not_found(api, other_user_key, seeded_object):
    job_id = submit(api, {"model_id": "tiny-bigram", "dataset_uri": "s3://b/k", "epochs": 1})
    path = f"/api/jobs/{job_id}/checkpoints"
    # 200 (an empty list) once the scheduler recorded the job, milliseconds after the 202
    wait(lambda: api.call("GET", path, "/api/jobs/{job_id}/checkpoints").status_code == 200,
         10, "the job to be recorded")
    assert api.call("GET", path, "/api/jobs/{job_id}/checkpoints",
                    key=other_user_key).status_code == 404


def test_from_checkpoint_continues_and_bad_ones_are_refused(api, dataset, other_user_key):
    earlier_id = submit(api, train_body(dataset, epochs=1))
    earlier = api.wait_terminal(earlier_id, timeout=600)
    assert earlier["status"] == "succeeded", earlier
    ckpt = checkpoints(api, earlier_id)[-1]
    uri = f"artifact://{art_id(ckpt)}"

    later_id = submit(api, train_body(dataset, epochs=1, from_checkpoint=uri))
    later = api.wait_terminal(later_id, timeout=600)
    assert later["status"] == "succeeded", later
    res, prev = later["result"], earlier["result"]
    assert res["from_checkpoint"]["uri"] == uri and res["from_checkpoint"]["epoch"] == 1
    assert res["from_checkpoint"]["job_id"] == earlier_id
    # it starts where the earlier job ended (the earlier job's validation loss)
    assert res["valid_loss_before"] == pytest.approx(prev["valid_loss"], abs=1e-5)
    assert res["valid_loss"] < prev["valid_loss"]

    def refused(resp):
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["param"] == "from_checkpoint", resp.text

    model = next(a for a in earlier["artifacts"] if a["kind"] == "model")
    refused(api.submit("train", train_body(dataset, from_checkpoint=f"artifact://{art_id(model)}")))
    refused(api.submit("train", train_body(dataset, from_checkpoint="s3://resume/x.tar")))
    # another account's checkpoint does not exist for it (its own dataset does)
    theirs = f"s3://resume/{uuid.uuid4().hex[:8]}.jsonl"
    resp = api.call("POST", "/api/files", key=other_user_key,
                    data={"purpose": "dataset", "uri": theirs},
                    files={"file": ("t.jsonl", b'{"text": "hello"}\n', "application/x-ndjson")})
    assert resp.status_code == 201, resp.text
    refused(api.submit("train", train_body(theirs, from_checkpoint=uri), key=other_user_key))
    # a checkpoint of another method: the job fails naming the param
    bad_id = submit(api, train_body(dataset, epochs=1, method="full", from_checkpoint=uri))
    bad = api.wait_terminal(bad_id, timeout=600)
    assert bad["status"] == "failed" and bad["error"]["class"] == "user_error", bad
    assert "params.from_checkpoint" in bad["error"]["message"], bad
