"""An attempt that fails through the platform's fault is not charged (issue 15).

A fresh user's train job runs on an agent of the test's own (test_workers' Fleet: a
private `pool` label, the 40 s test handler, usage windows of 1 s). Once billing has
priced some of attempt 1's GPU windows (the job's cost_usd is above 0), the test SIGKILLs
that agent and its handler - processes it started itself, by pid, never by a name
pattern. The lease runs out, the worker-manager reports attempt 1 failed (worker_lost),
a second agent runs attempt 2 (at most 3 s) and it succeeds. Then:
  - the job's final cost_usd and the user's bill (summary, usage series) are exactly the
    price of attempt 2's usage, computed here from what went over Kafka;
  - attempt 1's usage is still metered: every one of its events is in
    billing.usage_events, its quantities in billing.usage_waived, and billing.attempts
    says attempt 1 ended worker_lost, waived.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
from conftest import env
from test_billing import COMPUTE, cells_cost, logged_events, new_user, poll, usd
from test_workers import Fleet, alive


def children(pid):
    """The direct children of one of our own processes (/proc, no name matching)."""
    kids = []
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def psql(sql):
    out = subprocess.run(["psql", env("NF_TEST_PG_DSN"), "-Atc", sql], check=True,
                         capture_output=True, text=True, timeout=30)
    return [line.split("|") for line in out.stdout.splitlines() if line]


def attempt_usage(events, job_id, attempt):
    """{event id: data} of the job's compute usage events of one attempt (from Kafka)."""
    return {e["id"]: e["data"] for e in logged_events(
        events, lambda e: e["type"] == "forge.usage.recorded"
        and e["data"]["job_id"] == job_id and e["data"].get("attempt") == attempt
        and e["data"]["meter"] in COMPUTE)}


def cells(usage):
    out = {}
    for d in usage.values():
        key = (d["job_id"], d["meter"], d["window_start"][:13])
        out[key] = out.get(key, 0) + d["quantity"]
    return out


@pytest.fixture
def fleet():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nf-waived-"))
    f = Fleet(tmp)
    yield f
    bad = f.close()
    shutil.rmtree(tmp, ignore_errors=True)
    assert not bad, "agents did not stop cleanly:\n" + "\n".join(bad)


def test_lost_worker_attempt_is_not_charged(api, events, fleet):
    _, key = new_user("waived")
    uri = f"s3://waived/{uuid.uuid4().hex[:8]}.jsonl"
    resp = api.call("POST", "/api/files", key=key, data={"purpose": "dataset", "uri": uri},
                    files={"file": ("d.jsonl", b'{"instruction": "a", "response": "b"}\n',
                                    "application/x-ndjson")})
    assert resp.status_code == 201, resp.text
    windows = {"NF_WORKER_USAGE_WINDOW_S": "1"}
    victim = fleet.start("victim", extra=windows)
    body = {"model_id": "tiny-bigram", "dataset_uri": uri, "epochs": 40, "max_attempts": 3,
            "labels": {"pool": fleet.pool}}
    resp = api.submit("train", body, key=key)
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]

    # attempt 1 runs and billing prices its first GPU windows (provisionally)
    def priced():
        j = api.get_job(job_id, key=key).json()
        return j if j["status"] == "running" and float(j["cost_usd"]) > 0 else None

    running = poll("attempt 1 priced", priced, timeout=90)
    assert running["attempt"] == 1 and running["worker_id"] == victim.worker_id, running
    time.sleep(1.5)  # another window or two
    handlers = [p for p in children(victim.proc.pid) if alive(p)]
    victim.proc.kill()  # SIGKILL the agent and its handler, by pid
    for pid in handlers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    victim.proc.wait(5)
    rescuer = fleet.start("rescuer", extra=windows)

    # the lease runs out, attempt 2 runs on the rescuer; wait for the final cost
    def final():
        j = api.get_job(job_id, key=key).json()
        return j if j["cost_final"] else None

    done = poll("the job terminal with its final cost", final, timeout=120)
    assert done["status"] == "succeeded" and done["cost_final"], done
    assert done["attempt"] == 2 and done["worker_id"] == rescuer.worker_id, done
    failed = [e["data"] for e in events.wait_for(job_id, "forge.job.failed", timeout=30)]
    assert any(f["attempt"] == 1 and f["error"]["class"] == "worker_lost" for f in failed)

    # what each attempt metered, from Kafka (the worker's outbox may still hold nothing
    # more of attempt 1: its agent is dead; attempt 2 is complete, its cost is final)
    first = attempt_usage(events, job_id, 1)
    second = attempt_usage(events, job_id, 2)
    assert first and second, (first, second)
    owed = sum(c for _, c in cells_cost(cells(second)).values())
    free = sum(c for _, c in cells_cost(cells(first)).values())
    assert owed > 0 and free > 0
    print(f"\n  waived: attempt 1 metered {len(first)} events worth {usd(free)} USD (not "
          f"charged), attempt 2 {len(second)} events, {usd(owed)} USD; job cost "
          f"{done['cost_usd']}")

    # the job's cost is attempt 2's usage only
    assert done["cost_usd"] == usd(owed), (done["cost_usd"], usd(owed), usd(free))

    # the bill too: summary and usage series of the fresh user
    start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400))
    summ = api.call("GET", "/api/billing/summary", key=key,
                    params={"period_start": start}).json()
    assert summ["total_micros"] == owed, summ
    assert {m["meter"]: (m["quantity"], m["cost_micros"]) for m in summ["meters"]} == \
        cells_cost(cells(second)), summ
    series = api.call("GET", "/api/billing/usage", key=key,
                      params={"period_start": start, "bucket": "day"}).json()
    assert sum(p["cost_micros"] for p in series["points"]) == owed, series

    # attempt 1's usage is still metered, as waived: operators see it in Postgres
    recorded = {r[0] for r in psql(
        f"SELECT event_id FROM billing.usage_events WHERE job_id = '{job_id}' AND attempt = 1")}
    assert set(first) <= recorded, (set(first) - recorded)
    waived = {m: int(q) for m, q in psql(
        "SELECT meter, sum(quantity) FROM billing.usage_waived"
        f" WHERE job_id = '{job_id}' AND attempt = 1 GROUP BY meter")}
    metered = {}
    for d in first.values():
        metered[d["meter"]] = metered.get(d["meter"], 0) + d["quantity"]
    assert waived == metered, (waived, metered)
    ends = psql("SELECT attempt, coalesce(error_class, '-'), waived FROM billing.attempts"
                f" WHERE job_id = '{job_id}' ORDER BY attempt")
    assert ends == [["1", "worker_lost", "t"], ["2", "-", "f"]], ends
    charged = psql("SELECT coalesce(sum(quantity), 0) FROM billing.usage_jobs"
                   f" WHERE job_id = '{job_id}' AND meter = 'gpu_ms'")
    assert int(charged[0][0]) == sum(d["quantity"] for d in second.values()
                                     if d["meter"] == "gpu_ms"), charged
    print("  attempt 1 waived in billing.usage_waived: " + json.dumps(waived))
