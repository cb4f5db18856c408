"""The job lifecycle on the real stack (issue 4): typed params, idempotent submission,
lists with filters and cursors, cancel, retries and dead-lettering, timeouts, events
(paged and live), artifacts, and the scheduler losing nothing when it is killed.

State transitions these tests drive (DESIGN §4), each asserted through the API and the
job's recorded events:
  queued -> assigned -> running -> succeeded               (artifacts, SSE, restart)
  queued -> cancel_requested -> cancelled                  (queued cancel: dequeued)
  running -> cancel_requested -> cancelled                 (running cancel: worker told)
  running -> failed (user_error, not retried)              (handler exit 1)
  running -> queued (attempt + 1, retrying) -> ... -> dead_lettered  (exit 75, timeout)
  cancelled/succeeded -> anything: refused (409 on cancel, stale events ignored)
"""
import concurrent.futures
import hashlib
import json
import os
import pathlib
import subprocess
import threading
import time
import uuid

import pytest
import requests

from conftest import env, stack

TERMINAL = ("succeeded", "failed", "cancelled", "dead_lettered")
NOWHERE = {"pool": "none"}  # no worker has this label: the job stays queued


# --------------------------------------------------------------------------- helpers

def submit_ok(api, job_type, body, **kw):
    resp = api.submit(job_type, body, **kw)
    assert resp.status_code == 202, resp.text
    return resp.json()


def wait_status(api, job_id, statuses, timeout=90):
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = api.get_job(job_id).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not in {statuses} after {timeout}s: {job}")


def job_events(api, job_id, **params):
    resp = api.call("GET", f"/api/jobs/{job_id}/events", "/api/jobs/{job_id}/events",
                    params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def all_events(api, job_id):
    out, cursor = [], None
    while True:
        page = job_events(api, job_id, limit=100, **({"cursor": cursor} if cursor else {}))
        out += page["data"]
        if not page["has_more"]:
            return out
        cursor = page["next_cursor"]


def trail_until(api, job_id, last, timeout=30):
    """The recorded events once the last one (kind, attempt) is in: the scheduler records
    its own follow-up events (retrying, dead_lettered) when it reads them back."""
    deadline = time.monotonic() + timeout
    while True:
        trail = all_events(api, job_id)
        if kinds(trail) and kinds(trail)[-1] == last or time.monotonic() > deadline:
            return trail
        time.sleep(0.2)


def kinds(events):
    return [(e["type"].rsplit(".", 1)[1], e["attempt"]) for e in events
            if e["type"] not in ("forge.job.progress", "forge.job.log")]


def list_jobs(api, **params):
    resp = api.call("GET", "/api/jobs/", "/api/jobs/", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def walk(api, **params):
    """Every page of a job list; returns (jobs, number of pages)."""
    jobs, pages, cursor = [], 0, None
    while True:
        page = list_jobs(api, **params, **({"cursor": cursor} if cursor else {}))
        pages += 1
        jobs += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return jobs, pages
        assert page["next_cursor"]
        cursor = page["next_cursor"]


def cancel(api, job_id, key="default"):
    return api.call("POST", f"/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/cancel", key=key)


def redis(*args):
    host, port = env("NF_TEST_REDIS_ADDR").rsplit(":", 1)
    out = subprocess.run(["redis-cli", "-h", host, "-p", port, *args], capture_output=True,
                         text=True, check=True, timeout=10)
    return out.stdout.strip()


def psql(sql):
    out = subprocess.run(["psql", env("NF_TEST_PG_DSN"), "-Atc", sql], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def dataset_uri(api):
    job = submit_ok(api, "generate", {"domain": "finance", "num_samples": 20, "seed": 3})
    done = api.wait_terminal(job["job_id"])
    assert done["status"] == "succeeded", done
    return done["artifacts"][0]["uri"]


@pytest.fixture(scope="module")
def dlq(contract):
    """forge.jobs.dlq read from the beginning, every event checked against its schema."""
    from confluent_kafka import Consumer
    seen, stop = [], threading.Event()
    consumer = Consumer({"bootstrap.servers": env("NF_TEST_KAFKA_BROKERS"),
                         "group.id": f"e2e-dlq-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["forge.jobs.dlq"])

    def run():
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            event = json.loads(msg.value())
            contract.check_event(event)
            seen.append(event)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield seen
    stop.set()
    thread.join(5)
    consumer.close()


# --------------------------------------------------------------------------- params

@pytest.mark.parametrize("job_type,body,param,message", [
    ("generate", {"domain": "x", "num_samples": 0}, "num_samples",
     "num_samples must be an integer between 1 and 1000000"),
    ("generate", {"domain": "", "num_samples": 1}, "domain", "non-empty string"),
    ("generate", {"domain": "x", "num_samples": 1, "seed": -1}, "seed", "seed must be an integer"),
    ("audit", {"dataset_uri": "ftp://host/x"}, "dataset_uri",
     "s3://<bucket>/<key> URI of your uploaded files or an artifact://"),
    ("audit", {"dataset_uri": "artifact://nope"}, "dataset_uri", "artifact://"),
    ("audit", {"dataset_uri": "s3://b/k", "checks": [1]}, "checks", "list of non-empty strings"),
    ("distill", {"teacher_model": "t", "student_model": "s", "dataset_uri": "s3://b/k",
                 "num_samples": 1000001}, "num_samples", "between 1 and 1000000"),
    ("distill", {"teacher_model": "t", "dataset_uri": "s3://b/k"}, "student_model",
     "student_model is required"),
    ("train", {"model_id": "m", "dataset_uri": "s3://b/k", "learning_rate": 2}, "learning_rate",
     "greater than 0 and at most 1"),
    ("train", {"model_id": "m", "dataset_uri": "s3://b/k", "lora": "yes"}, "lora", "boolean"),
    ("train", {"model_id": "m", "dataset_uri": "s3://b/k", "epochs": 0}, "epochs",
     "between 1 and 100"),
    ("evaluate", {"model_id": "m", "benchmark": "mmlu", "dataset_uri": "s3://b/k"},
     "dataset_uri", "only allowed when benchmark is custom"),
    ("evaluate", {"model_id": "m", "benchmark": "custom"}, "dataset_uri",
     "required when benchmark is custom"),
    ("deploy", {"model_id": "m", "region": "US EAST"}, "region", "region name"),
    ("deploy", {"model_id": "m", "replicas": 10 ** 12}, "replicas", "between 1 and 64"),
    ("deploy", {"params": {"model_id": "m", "colour": "red"}}, "colour",
     "unknown parameter \"colour\" for a deploy job"),
    ("generate", {"domain": "x", "num_samples": 1, "max_attempts": 11}, "max_attempts",
     "between 1 and 10"),
    ("generate", {"domain": "x", "num_samples": 1, "timeout_seconds": 0}, "timeout_seconds",
     "timeout_seconds must be an integer"),
    ("generate", {"domain": "x", "num_samples": 1, "labels": {"pool": 7}}, "labels",
     "must be a string"),
    ("generate", {"domain": "x", "num_samples": 1,
                  "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
])
def test_invalid_params_name_the_param_and_the_rule(api, job_type, body, param, message):
    resp = api.submit(job_type, body)
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_params" and err["param"] == param, err
    assert message in err["message"], err


# --------------------------------------------------------------------------- idempotency

def test_idempotent_replay_returns_the_original_answer(api):
    key = f"idem-{uuid.uuid4()}"
    tag = uuid.uuid4().hex
    first = api.submit("generate", {"domain": "law", "num_samples": 2, "metadata": {"t": tag}},
                       headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    # the same request in its nested shape is the same request
    again = api.submit("generate", {"params": {"num_samples": 2, "domain": "law"},
                                    "metadata": {"t": tag}}, headers={"Idempotency-Key": key})
    assert again.status_code == 202, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json(), "the original answer, byte for byte"
    assert again.headers["Location"] == f"/api/jobs/{first.json()['job_id']}"
    api.wait_terminal(first.json()["job_id"])
    # and later, after the job moved on, still the original answer
    later = api.submit("generate", {"domain": "law", "num_samples": 2, "metadata": {"t": tag}},
                       headers={"Idempotency-Key": key})
    assert later.json() == first.json() and later.headers["Idempotent-Replayed"] == "true"
    assert [j["job_id"] for j in list_jobs(api, **{"metadata[t]": tag})["data"]] == \
        [first.json()["job_id"]]


def test_idempotency_key_with_another_body_is_409(api):
    key = f"idem-{uuid.uuid4()}"
    assert api.submit("generate", {"domain": "law", "num_samples": 2},
                      headers={"Idempotency-Key": key}).status_code == 202
    resp = api.submit("generate", {"domain": "law", "num_samples": 3},
                      headers={"Idempotency-Key": key})
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"] == "idempotency_key_reused"
    other_type = api.submit("audit", {"dataset_uri": "s3://b/k"},
                            headers={"Idempotency-Key": key})
    assert other_type.status_code == 409


def test_idempotency_keys_are_per_user(api, other_user_key):
    key = f"idem-{uuid.uuid4()}"
    body = {"domain": "law", "num_samples": 2}
    mine = api.submit("generate", body, headers={"Idempotency-Key": key})
    theirs = api.submit("generate", body, headers={"Idempotency-Key": key}, key=other_user_key)
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["job_id"] != theirs.json()["job_id"]
    assert "Idempotent-Replayed" not in theirs.headers


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9"])
def test_bad_idempotency_key_is_400(api, key):
    resp = requests.post(env("NF_TEST_API_URL") + "/api/jobs/generate",
                         headers={"X-Nexa-Api-Key": api.key,
                                  "Idempotency-Key": key.encode("utf-8")},
                         json={"domain": "law", "num_samples": 1}, timeout=10)
    api.contract.check_response("POST", "/api/jobs/generate", resp)
    if key == "":
        assert resp.status_code == 202  # an empty header is no key at all
        return
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "Idempotency-Key"


def test_concurrent_duplicates_create_exactly_one_job(api):
    key, tag = f"idem-{uuid.uuid4()}", uuid.uuid4().hex
    body = {"domain": "law", "num_samples": 2, "metadata": {"t": tag}}

    def one(_):
        return api.submit("generate", body, headers={"Idempotency-Key": key})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    ids = {a.json()["job_id"] for a in answers}
    assert len(ids) == 1, ids
    assert sum(1 for a in answers if "Idempotent-Replayed" not in a.headers) == 1
    job_id = ids.pop()
    api.wait_terminal(job_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = list_jobs(api, **{"metadata[t]": tag})["data"]
        if found:
            break
        time.sleep(0.2)
    assert [j["job_id"] for j in found] == [job_id]
    assert psql(f"select count(*) from sched.jobs where metadata->>'t' = '{tag}'") == "1"


# --------------------------------------------------------------------------- lists

def test_list_pagination_returns_every_job_exactly_once(api):
    tag = uuid.uuid4().hex
    submitted = [submit_ok(api, "generate", {"domain": "law", "num_samples": 1,
                                             "labels": NOWHERE, "metadata": {"batch": tag,
                                                                             "i": str(i)}})
                 ["job_id"] for i in range(7)]
    deadline = time.monotonic() + 30
    while len(list_jobs(api, limit=100, **{"metadata[batch]": tag})["data"]) < 7:
        assert time.monotonic() < deadline, "the scheduler did not record all 7 jobs"
        time.sleep(0.2)
    try:
        jobs, pages = walk(api, limit=3, **{"metadata[batch]": tag})
        ids = [j["job_id"] for j in jobs]
        assert pages == 3
        assert len(ids) == len(set(ids)) == 7 and set(ids) == set(submitted)
        assert ids == sorted(ids, reverse=True), "newest first"
        # filters combine
        assert len(walk(api, limit=2, status="queued", job_type="generate",
                        **{"metadata[batch]": tag})[0]) == 7
        assert walk(api, job_type="audit", **{"metadata[batch]": tag})[0] == []
        assert walk(api, status="succeeded,failed", **{"metadata[batch]": tag})[0] == []
        assert [j["job_id"] for j in walk(api, **{"metadata[batch]": tag, "metadata[i]": "3"})[0]] \
            == [submitted[3]]
        assert walk(api, **{"metadata[batch]": "no-such-batch"})[0] == []
    finally:
        for job_id in submitted:
            cancel(api, job_id)


def test_list_is_per_user(api, other_user_key):
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 1})["job_id"]
    api.wait_terminal(job_id)
    resp = api.call("GET", "/api/jobs/", "/api/jobs/", key=other_user_key, params={"limit": 100})
    assert job_id not in [j["job_id"] for j in resp.json()["data"]]


@pytest.mark.parametrize("params,param", [
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "ZTE6MQ"}, "cursor"),  # a valid events cursor is not a jobs cursor
    ({"status": "sleeping"}, "status"),
    ({"status": "queued,"}, "status"),
    ({"job_type": "teleport"}, "job_type"),
    ({"metadata[" + "k" * 65 + "]": "v"}, "metadata[" + "k" * 65 + "]"),
    ({"user_id": "usr_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"}, "user_id"),
    ({"colour": "red"}, "colour"),
])
def test_bad_list_query_is_400_naming_it(api, params, param):
    resp = api.call("GET", "/api/jobs/", "/api/jobs/", params=params)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_query" and err["param"] == param, err


def test_repeated_query_parameter_is_400(api):
    resp = api.call("GET", "/api/jobs/?limit=2&limit=3", "/api/jobs/")
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "limit"


# --------------------------------------------------------------------------- cancel

def test_cancel_queued_job_is_immediate(api, events):
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 1,
                                         "labels": NOWHERE})["job_id"]
    wait_for_record(api, job_id)
    resp = cancel(api, job_id)
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert job["status"] == "cancelled" and job["finished_at"], job
    assert api.get_job(job_id).json()["status"] == "cancelled"
    # a finished job cannot be cancelled again
    again = cancel(api, job_id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    assert kinds(all_events(api, job_id)) == [("queued", 1), ("cancel_requested", 1),
                                              ("cancelled", 1)]
    events.wait_for(job_id, "forge.job.cancel_requested")
    events.wait_for(job_id, "forge.job.cancelled")


def wait_for_record(api, job_id, timeout=30):
    """Until the scheduler has recorded the job (its events list exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = api.call("GET", f"/api/jobs/{job_id}/events", "/api/jobs/{job_id}/events")
        if resp.status_code == 200 and resp.json()["data"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"{job_id} not recorded by the scheduler")


def test_cancel_running_job(api, events):
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 1_000_000})["job_id"]
    wait_status(api, job_id, ("running",) + TERMINAL)
    resp = cancel(api, job_id)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] in ("cancel_requested", "cancelled")
    done = wait_status(api, job_id, TERMINAL, timeout=60)
    assert done["status"] == "cancelled", done
    assert done["progress"] < 1
    trail = kinds(all_events(api, job_id))
    assert trail[:3] == [("queued", 1), ("assigned", 1), ("running", 1)], trail
    assert ("cancel_requested", 1) in trail and trail[-1] == ("cancelled", 1), trail
    events.wait_for(job_id, "forge.job.cancelled")


def test_cancel_of_unknown_or_other_users_job_is_404(api, other_user_key):
    assert cancel(api, "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M").status_code == 404
    assert cancel(api, "job_nope").status_code == 404
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 1,
                                         "labels": NOWHERE})["job_id"]
    wait_for_record(api, job_id)
    assert cancel(api, job_id, key=other_user_key).status_code == 404
    assert api.get_job(job_id).json()["status"] == "queued", "untouched by the other user"
    assert cancel(api, job_id).json()["status"] == "cancelled"


# --------------------------------------------------------------------------- failures

def test_retryable_failure_is_retried_then_dead_lettered(api, events, dlq):
    job_id = submit_ok(api, "generate", {"domain": "__fail_infra__", "num_samples": 1,
                                         "max_attempts": 2})["job_id"]
    done = wait_status(api, job_id, TERMINAL, timeout=120)
    assert done["status"] == "dead_lettered", done
    assert done["attempt"] == 2 and done["max_attempts"] == 2
    assert done["error"]["class"] == "infra" and done["finished_at"], done
    trail = trail_until(api, job_id, ("dead_lettered", 2))
    assert kinds(trail) == [("queued", 1), ("assigned", 1), ("running", 1), ("failed", 1),
                            ("retrying", 2), ("assigned", 2), ("running", 2), ("failed", 2),
                            ("dead_lettered", 2)], kinds(trail)
    retrying = next(e for e in trail if e["type"] == "forge.job.retrying")
    assert retrying["data"]["retry_in_ms"] == 2000  # 2^attempt s after attempt 1
    failed1 = next(e for e in trail if e["type"] == "forge.job.failed")
    assigned2 = [e for e in trail if e["type"] == "forge.job.assigned"][1]
    assert ms(assigned2["time"]) - ms(failed1["time"]) >= 1500, "waited for the backoff"
    events.wait_for(job_id, "forge.job.dead_lettered")
    deadline = time.monotonic() + 30
    while not any(e["subject"] == job_id for e in dlq):
        assert time.monotonic() < deadline, "nothing on forge.jobs.dlq"
        time.sleep(0.2)
    [dead] = [e for e in dlq if e["subject"] == job_id]
    assert dead["type"] == "forge.job.dead_lettered"
    assert dead["data"]["params"]["domain"] == "__fail_infra__", "enough to resubmit"


def ms(ts):
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000


def test_user_error_is_not_retried(api):
    broken = api.call("POST", "/api/files", data={"purpose": "dataset",
                                                  "uri": "s3://b/broken.parquet"},
                      files={"file": ("broken.parquet", b"PAR1 not parquet", "text/plain")})
    assert broken.status_code == 201, broken.text
    job_id = submit_ok(api, "audit", {"dataset_uri": "s3://b/broken.parquet",
                                      "max_attempts": 3})["job_id"]
    done = wait_status(api, job_id, TERMINAL)
    assert done["status"] == "failed" and done["attempt"] == 1, done
    assert done["error"]["class"] == "user_error", done
    assert ("retrying", 2) not in kinds(all_events(api, job_id))


def test_timeout_is_enforced(api):
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 1_000_000,
                                         "timeout_seconds": 1, "max_attempts": 1})["job_id"]
    done = wait_status(api, job_id, TERMINAL, timeout=90)
    assert done["status"] == "dead_lettered", done  # timeout is retryable; no attempts left
    assert done["error"]["class"] == "timeout", done
    started, finished = ms(done["started_at"]), ms(done["finished_at"])
    assert finished - started < 30_000, "stopped near its 1 s timeout, not at the end"


# --------------------------------------------------------------------------- events

def test_events_list_pages_in_order(api):
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 300})["job_id"]
    assert api.wait_terminal(job_id)["status"] == "succeeded"
    everything = job_events(api, job_id, limit=100)["data"]
    paged, cursor = [], None
    while True:
        page = job_events(api, job_id, limit=2, **({"cursor": cursor} if cursor else {}))
        paged += page["data"]
        assert page["job_status"] == "succeeded"
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert paged == everything and len(paged) >= 5
    assert [e["event_id"] for e in paged] == [e["event_id"] for e in everything]
    # next_cursor of the last page points after the end: nothing new
    tail = job_events(api, job_id, cursor=page["next_cursor"])
    assert tail["data"] == [] and tail["next_cursor"] is None
    bad = api.call("GET", f"/api/jobs/{job_id}/events", "/api/jobs/{job_id}/events",
                   params={"cursor": "garbage"})
    assert bad.status_code == 400


def sse_events(api, job_id, last_event_id=None, timeout=90):
    headers = {"X-Nexa-Api-Key": api.key, "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    resp = requests.get(f"{env('NF_TEST_API_URL')}/api/jobs/{job_id}/events", headers=headers,
                        stream=True, timeout=timeout)
    api.contract.check_response("GET", "/api/jobs/{job_id}/events", resp)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
    messages, current = [], {}
    for raw in resp.iter_lines(decode_unicode=True):
        if raw == "":
            if current:
                messages.append(current)
                if current.get("event") == "end":
                    break
            current = {}
        elif not raw.startswith(":"):
            field, _, value = raw.partition(": ")
            current[field] = value
    resp.close()
    return messages


def test_events_stream_live_until_the_job_ends(api, contract):
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 2000})["job_id"]
    messages = sse_events(api, job_id)  # opened while the job is queued or running
    assert messages[-1]["event"] == "end"
    assert json.loads(messages[-1]["data"]) == {"job_id": job_id, "status": "succeeded"}
    body = messages[:-1]
    validator = contract._validator({"$ref": "urn:nexa-forge:openapi#/components/schemas/JobEvent"})
    for m in body:
        event = json.loads(m["data"])
        validator.validate(event)
        assert m["event"] == event["type"] and m["id"] == event["cursor"]
    streamed = [json.loads(m["data"]) for m in body]
    assert streamed == all_events(api, job_id), "the stream is the recorded history, in order"
    assert kinds(streamed)[-1] == ("succeeded", 1)
    # resume after the third event with Last-Event-ID
    resumed = sse_events(api, job_id, last_event_id=body[2]["id"])
    assert [m["id"] for m in resumed[:-1]] == [m["id"] for m in body[3:]]


def test_events_of_unknown_job_are_404_in_both_forms(api):
    missing = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M"
    resp = api.call("GET", f"/api/jobs/{missing}/events", "/api/jobs/{job_id}/events")
    assert resp.status_code == 404
    resp = requests.get(f"{env('NF_TEST_API_URL')}/api/jobs/{missing}/events",
                        headers={"X-Nexa-Api-Key": api.key, "Accept": "text/event-stream"},
                        timeout=10)
    api.contract.check_response("GET", "/api/jobs/{job_id}/events", resp)
    assert resp.status_code == 404


# --------------------------------------------------------------------------- artifacts

def test_artifacts_are_listed_downloaded_and_private(api, other_user_key):
    job = submit_ok(api, "generate", {"domain": "biology", "num_samples": 50, "seed": 9})
    done = api.wait_terminal(job["job_id"])
    assert done["status"] == "succeeded", done
    [art] = done["artifacts"]
    page = api.call("GET", "/api/artifacts", params={"job_id": job["job_id"]}).json()
    assert [a["artifact_id"] for a in page["data"]] == [art["artifact_id"]]
    assert page["has_more"] is False and page["data"][0]["job_id"] == job["job_id"]
    record = api.call("GET", f"/api/artifacts/{art['artifact_id']}",
                      "/api/artifacts/{artifact_id}").json()
    assert record["sha256"] == art["sha256"] and record["bytes"] == art["bytes"]

    content = api.call("GET", f"/api/artifacts/{art['artifact_id']}/content",
                       "/api/artifacts/{artifact_id}/content")
    assert content.status_code == 200
    assert int(content.headers["Content-Length"]) == art["bytes"] == len(content.content)
    assert content.headers["Content-Type"] == "application/x-ndjson"
    assert "attachment" in content.headers["Content-Disposition"]
    assert hashlib.sha256(content.content).hexdigest() == art["sha256"]
    assert len(content.content.decode().splitlines()) == 50

    # another user sees none of it
    for path, template in [(f"/api/artifacts/{art['artifact_id']}", "/api/artifacts/{artifact_id}"),
                           (f"/api/artifacts/{art['artifact_id']}/content",
                            "/api/artifacts/{artifact_id}/content")]:
        assert api.call("GET", path, template, key=other_user_key).status_code == 404
    theirs = api.call("GET", "/api/artifacts", key=other_user_key,
                      params={"job_id": job["job_id"]}).json()
    assert theirs["data"] == []
    assert api.call("GET", "/api/artifacts/art_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M",
                    "/api/artifacts/{artifact_id}").status_code == 404
    assert api.call("GET", "/api/artifacts", params={"cursor": "x"}).status_code == 400
    assert api.call("GET", "/api/artifacts", params={"job_id": "nope"}).status_code == 400


def test_artifact_list_pagination(api, dataset_uri):
    jobs, cursor = [], None
    while True:
        page = api.call("GET", "/api/artifacts",
                        params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        jobs += page["data"]
        if not page["has_more"] or len(jobs) >= 4:
            break
        cursor = page["next_cursor"]
    ids = [a["artifact_id"] for a in jobs]
    assert len(ids) == len(set(ids)) >= 1 and ids == sorted(ids, reverse=True)


# --------------------------------------------------------------------------- restarts and repairs

def test_killed_scheduler_loses_no_accepted_job(api):
    stack("""pid=$(forge_svc_pid scheduler)
kill -KILL "$pid"
while forge_pid_exists "$pid"; do sleep 0.1; done""")
    try:
        accepted = [submit_ok(api, "generate", {"domain": "chemistry", "num_samples": 3})
                    for _ in range(5)]
        # readable while the scheduler is down (the gateway's snapshot)
        assert all(api.get_job(j["job_id"]).json()["status"] == "queued" for j in accepted)
    finally:
        stack("forge_svc_start scheduler && forge_svcs_wait_ready")
    for job in accepted:
        done = api.wait_terminal(job["job_id"], timeout=150)
        assert done["status"] == "succeeded", done
        assert psql(f"select status from sched.jobs where job_id = '{job['job_id']}'") == \
            "succeeded"


def test_lost_dispatch_is_dispatched_again(api):
    """Redis loses the worker-manager's copy of a queued job; the reconciler notices
    (NF_SCHEDULER_STUCK_S, 30 s by default) and dispatches it again."""
    job = submit_ok(api, "generate", {"domain": "law", "num_samples": 1, "labels": NOWHERE})
    job_id = job["job_id"]
    deadline = time.monotonic() + 30
    while redis("ZSCORE", "wm:queue:generate", job_id) == "":
        assert time.monotonic() < deadline, "never reached the worker-manager's queue"
        time.sleep(0.2)
    redis("ZREM", "wm:queue:generate", job_id)
    redis("DEL", f"wm:job:{job_id}")
    deadline = time.monotonic() + 90
    try:
        while redis("ZSCORE", "wm:queue:generate", job_id) == "":
            assert time.monotonic() < deadline, "the lost dispatch was not repaired"
            time.sleep(0.5)
        assert api.get_job(job_id).json()["status"] == "queued"
        assert api.get_job(job_id).json()["attempt"] == 1, "same attempt, dispatched again"
    finally:
        assert cancel(api, job_id).json()["status"] == "cancelled"


def test_stale_snapshot_is_repaired_from_postgres(api):
    job_id = submit_ok(api, "generate", {"domain": "law", "num_samples": 1})["job_id"]
    assert api.wait_terminal(job_id)["status"] == "succeeded"
    doc = json.loads(redis("HGET", f"job:{job_id}", "doc"))
    doc["status"] = "queued"
    redis("HSET", f"job:{job_id}", "status", "queued", "doc", json.dumps(doc), "ver", "0")
    assert api.get_job(job_id).json()["status"] == "queued", "served from the snapshot"
    deadline = time.monotonic() + 30
    while api.get_job(job_id).json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the reconciler did not repair the snapshot"
        time.sleep(0.5)
    # the same version with another doc (two writers raced): repaired too
    ver = redis("HGET", f"job:{job_id}", "ver")
    good = api.get_job(job_id).json()
    assert good["artifacts"], good
    bad = dict(good, artifacts=[])
    text = json.dumps(bad, separators=(",", ":"))
    redis("HSET", f"job:{job_id}", "doc", text, "ver", ver,
          "h", hashlib.sha256(text.encode()).hexdigest()[:16])
    assert api.get_job(job_id).json()["artifacts"] == []
    deadline = time.monotonic() + 30
    while not api.get_job(job_id).json()["artifacts"]:
        assert time.monotonic() < deadline, "a same-version snapshot was not repaired"
        time.sleep(0.5)
    assert api.get_job(job_id).json() == good
