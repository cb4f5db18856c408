"""Every client method sends the documented request and returns the answer: submissions
of all six types, reads, pagination, wait, events (list and SSE stream), artifacts,
workers, billing and API keys."""
import datetime as dt
import hashlib
import json
import pathlib
import time

import pytest

import nexa_forge

from fake_api import Reply, error_reply, job

JID = "job_01HZZZZZZZZZZZZZZZZZZZZZZZ"


# ---- submissions ----------------------------------------------------------------------

@pytest.mark.parametrize("method,args,kwargs,params", [
    ("generate", (), {"domain": "biology", "num_samples": 100, "seed": 7},
     {"domain": "biology", "num_samples": 100, "seed": 7}),
    ("audit", ("s3://b/data.jsonl",), {"checks": ("dupes", "empty")},
     {"dataset_uri": "s3://b/data.jsonl", "checks": ["dupes", "empty"]}),
    ("audit", ("s3://b/data.jsonl",), {"near_duplicate_threshold": 0.9, "fix": True,
                                       "tokenizer_model": "llama-3-8b", "max_seq_length": 256},
     {"dataset_uri": "s3://b/data.jsonl", "near_duplicate_threshold": 0.9, "fix": True,
      "tokenizer_model": "llama-3-8b", "max_seq_length": 256}),
    ("distill", ("big", "small", "artifact://art_1"), {"num_samples": 10},
     {"teacher_model": "big", "student_model": "small", "dataset_uri": "artifact://art_1",
      "num_samples": 10}),
    ("train", ("tiny", "file:///d.jsonl"), {"epochs": 2, "learning_rate": 0.01, "lora": True},
     {"model_id": "tiny", "dataset_uri": "file:///d.jsonl", "epochs": 2, "learning_rate": 0.01,
      "lora": True}),
    ("evaluate", ("tiny", "custom"), {"dataset_uri": "https://x/y.jsonl"},
     {"model_id": "tiny", "benchmark": "custom", "dataset_uri": "https://x/y.jsonl"}),
    ("deploy", ("tiny",), {"region": "eu-west-1", "replicas": 2},
     {"model_id": "tiny", "region": "eu-west-1", "replicas": 2}),
])
def test_each_job_type_posts_its_params(api, client, method, args, kwargs, params):
    api.on("POST", f"/api/jobs/{method}", Reply(202, job(job_type=method)))
    result = getattr(client, method)(*args, **kwargs)
    assert result["job_type"] == method
    [req] = api.calls()
    assert req.path == f"/api/jobs/{method}"
    assert req.json() == {"params": params}, "None values are left out"
    assert req.header("Content-Type") == "application/json"
    assert req.header("Idempotency-Key")


def test_common_fields_go_at_the_top_level(api, client):
    api.on("POST", "/api/jobs/generate", Reply(202, job()))
    client.generate(domain="d", num_samples=1, metadata={"team": "bio"}, priority=7,
                    max_attempts=2, timeout_seconds=60, gpu_type="a100", gpu_count=2,
                    labels={"zone": "eu"})
    assert api.calls()[0].json() == {
        "params": {"domain": "d", "num_samples": 1}, "metadata": {"team": "bio"},
        "priority": 7, "max_attempts": 2, "timeout_seconds": 60, "gpu_type": "a100",
        "gpu_count": 2, "labels": {"zone": "eu"}}


def test_extra_params_reach_the_server_which_names_them(api, client):
    api.on("POST", "/api/jobs/generate",
           error_reply(422, "invalid_params", "unknown parameter colour", "colour"))
    with pytest.raises(nexa_forge.ValidationError) as info:
        client.generate(domain="d", num_samples=1, colour="red")
    assert info.value.param == "colour"
    assert api.calls()[0].json()["params"]["colour"] == "red"


def test_generic_submit(api, client):
    api.on("POST", "/api/jobs/audit", Reply(202, job(job_type="audit")))
    client.submit("audit", {"dataset_uri": "s3://b/k"}, priority=1)
    assert api.calls()[0].json() == {"params": {"dataset_uri": "s3://b/k"}, "priority": 1}


@pytest.mark.parametrize("bad", ["", "../auth", "gen erate", None])
def test_submit_refuses_a_job_type_that_is_not_a_name(client, api, bad):
    with pytest.raises(ValueError):
        client.submit(bad, {})
    assert api.calls() == []


# ---- reads ----------------------------------------------------------------------------

def test_get_job_accepts_an_id_or_a_job(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running")))
    assert client.get_job(JID)["status"] == "running"
    assert client.get_job({"job_id": JID})["status"] == "running"


def test_list_checkpoints_returns_the_jobs_checkpoints(api, client):
    ck = {"artifact_id": "art_1", "uri": "artifact://art_1", "name": "checkpoint-epoch-1.tar",
          "bytes": 10, "sha256": None, "epoch": 1, "step": 70, "attempt": 1,
          "created_at": "2026-12-07T21:00:00.000Z"}
    api.on("GET", f"/api/jobs/{JID}/checkpoints", Reply(200, {"object": "list", "data": [ck]}))
    assert client.list_checkpoints({"job_id": JID}) == [ck]


def test_ids_are_percent_encoded_into_one_segment(api, client):
    api.on("GET", "/api/jobs/a%2F..%2Fb", Reply(200, job()))
    client.get_job("a/../b")
    assert api.calls()[0].path == "/api/jobs/a%2F..%2Fb"


def test_bad_job_reference_is_a_value_error(client):
    with pytest.raises(ValueError):
        client.get_job({"no": "id"})


def test_list_jobs_sends_filters_and_returns_the_page(api, client):
    page = {"data": [job()], "has_more": True, "next_cursor": "c1"}
    api.on("GET", "/api/jobs/", Reply(200, page))
    assert client.list_jobs(status="running", job_type="train", metadata={"team": "bio"},
                            limit=10, cursor="c0") == page
    q = api.calls()[0].query
    assert q == {"status": ["running"], "job_type": ["train"], "metadata[team]": ["bio"],
                 "limit": ["10"], "cursor": ["c0"]}


def test_several_statuses_and_types_are_comma_separated(api, client):
    api.on("GET", "/api/jobs/", Reply(200, {"data": [], "has_more": False, "next_cursor": None}))
    client.list_jobs(status=["queued", "running"], job_type=("train", "deploy"))
    list(client.iter_jobs(status=("failed", "dead_lettered")))
    assert api.calls()[0].query == {"status": ["queued,running"], "job_type": ["train,deploy"]}
    assert api.calls()[1].query["status"] == ["failed,dead_lettered"]


def test_iter_jobs_follows_cursors_across_pages(api, client):
    pages = {
        None: {"data": [job("job_1"), job("job_2")], "has_more": True, "next_cursor": "c1"},
        "c1": {"data": [job("job_3")], "has_more": True, "next_cursor": "c2"},
        "c2": {"data": [job("job_4")], "has_more": False, "next_cursor": None},
    }
    api.on("GET", "/api/jobs/", lambda req: Reply(200, pages[(req.query.get("cursor") or [None])[0]]))
    ids = [j["job_id"] for j in client.iter_jobs(status="succeeded", page_size=2)]
    assert ids == ["job_1", "job_2", "job_3", "job_4"]
    calls = api.calls()
    assert len(calls) == 3
    assert all(c.query["limit"] == ["2"] and c.query["status"] == ["succeeded"] for c in calls)
    assert [c.query.get("cursor") for c in calls] == [None, ["c1"], ["c2"]]


def test_iter_jobs_is_lazy(api, client):
    api.on("GET", "/api/jobs/", Reply(200, {"data": [job()], "has_more": True,
                                            "next_cursor": "again"}),
           Reply(200, {"data": [job()], "has_more": False, "next_cursor": None}))
    it = client.iter_jobs()
    assert api.calls() == []
    next(it)
    assert len(api.calls()) == 1


def test_iter_jobs_stops_on_a_repeated_cursor(api, client):
    api.on("GET", "/api/jobs/", Reply(200, {"data": [job()], "has_more": True,
                                            "next_cursor": "same"}))
    with pytest.raises(nexa_forge.NexaForgeError) as info:
        list(client.iter_jobs())
    assert info.value.code == "pagination_loop"


def test_cancel_job(api, client):
    api.on("POST", f"/api/jobs/{JID}/cancel", Reply(200, job(status="cancel_requested")))
    assert client.cancel_job(JID)["status"] == "cancel_requested"


def test_cancel_finished_job_is_a_conflict(api, client):
    api.on("POST", f"/api/jobs/{JID}/cancel", error_reply(409, "conflict", "job is finished"))
    with pytest.raises(nexa_forge.ConflictError):
        client.cancel_job(JID)


# ---- wait -----------------------------------------------------------------------------

def test_wait_returns_the_succeeded_job_and_reports_changes(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="queued")),
           Reply(200, job(status="running", progress=0.5)),
           Reply(200, job(status="running", progress=0.5)),
           Reply(200, job(status="succeeded", progress=1, result={"n": 1})))
    seen = []
    final = client.wait(JID, poll_interval=0.01, on_update=lambda j: seen.append(j["status"]))
    assert final["result"] == {"n": 1}
    assert seen == ["queued", "running", "succeeded"]
    assert len(api.calls()) == 4


@pytest.mark.parametrize("status", ["failed", "cancelled", "dead_lettered"])
def test_wait_raises_when_the_job_does_not_succeed(api, client, status):
    err = {"code": "handler_failed", "message": "exit 1", "class": "user_error"}
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status=status, error=err)))
    with pytest.raises(nexa_forge.JobFailedError) as info:
        client.wait(JID, poll_interval=0.01)
    assert info.value.job["status"] == status


def test_wait_can_return_failed_jobs(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="failed")))
    assert client.wait(JID, raise_on_failure=False)["status"] == "failed"


def test_wait_waits_for_the_final_cost(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running", cost_final=False)),
           Reply(200, job(status="succeeded", progress=1, cost_final=False)),
           Reply(200, job(status="succeeded", progress=1, cost_usd="0.000010",
                          cost_final=False)),
           Reply(200, job(status="succeeded", progress=1, cost_usd="0.137120",
                          cost_final=True)))
    seen = []
    final = client.wait(JID, poll_interval=0.01, on_update=lambda j: seen.append(j["status"]))
    assert final["cost_usd"] == "0.137120" and final["cost_final"] is True
    assert seen == ["running", "succeeded"], "the cost alone is no status change"
    assert len(api.calls()) == 4


def test_wait_polls_a_finished_job_quickly_for_its_cost(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="succeeded", cost_final=False)),
           Reply(200, job(status="succeeded", cost_usd="0.000001", cost_final=True)))
    t0 = time.monotonic()
    final = client.wait(JID, poll_interval=30)
    assert final["cost_final"] is True
    assert time.monotonic() - t0 < 5, "not the 30 s poll interval"


def test_wait_raises_failed_jobs_with_their_final_cost(api, client):
    err = {"code": "handler_failed", "message": "exit 1", "class": "user_error"}
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="failed", error=err,
                                                     cost_final=False)),
           Reply(200, job(status="failed", error=err, cost_usd="0.000042", cost_final=True)))
    with pytest.raises(nexa_forge.JobFailedError) as info:
        client.wait(JID, poll_interval=0.01)
    assert info.value.job["cost_usd"] == "0.000042"


def test_wait_can_skip_the_final_cost(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="succeeded", cost_final=False)))
    assert client.wait(JID, final_cost=False)["cost_final"] is False
    assert len(api.calls()) == 1


def test_wait_times_out_on_a_cost_that_is_never_final(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="succeeded", cost_final=False)))
    with pytest.raises(nexa_forge.WaitTimeoutError) as info:
        client.wait(JID, timeout=0.3, poll_interval=0.05)
    assert info.value.job["status"] == "succeeded"
    assert "cost not final" in str(info.value)


def test_wait_times_out(api, client):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running")))
    with pytest.raises(nexa_forge.WaitTimeoutError) as info:
        client.wait(JID, timeout=0.2, poll_interval=0.05)
    assert info.value.job["status"] == "running"


# ---- events ---------------------------------------------------------------------------

def sse(*events):
    out = []
    for i, (etype, data) in enumerate(events, 1):
        out.append(f"id: {i}\nevent: {etype}\ndata: {json.dumps(data)}\n\n".encode())
    return out


def test_job_events_page_and_iterator(api, client):
    path = f"/api/jobs/{JID}/events"
    api.on("GET", path, lambda req: Reply(200, {
        "data": [{"type": "forge.job.queued"}] if not req.query.get("cursor") else
        [{"type": "forge.job.succeeded"}],
        "has_more": not req.query.get("cursor"), "next_cursor": "c1"}))
    assert client.job_events(JID, limit=5)["data"] == [{"type": "forge.job.queued"}]
    assert api.calls()[0].query == {"limit": ["5"]}
    assert [e["type"] for e in client.iter_job_events(JID)] == [
        "forge.job.queued", "forge.job.succeeded"]


def test_stream_yields_live_events_until_the_end_event(api, client):
    chunks = sse(("forge.job.running", {"status": "running"}),
                 ("forge.job.progress", {"status": "running", "progress": 0.5}))
    chunks.insert(1, b": keep-alive\n\n")
    chunks.append(b"id: 3\nevent: forge.job.succeeded\n")  # an event split over chunks
    chunks.append(b'data: {"status": "succeeded"}\n\n')
    chunks.append(b'event: end\ndata: {"job_id": "x", "status": "succeeded"}\n\n')
    chunks.append(b'data: {"never": "read"}\n\n')
    api.on("GET", f"/api/jobs/{JID}/events", Reply(200, chunks=chunks, chunk_delay=0.01))
    events = list(client.job_events(JID, stream=True))
    assert [e["status"] for e in events] == ["running", "running", "succeeded"]
    [req] = api.calls()
    assert req.header("Accept") == "text/event-stream"


def test_stream_resumes_with_last_event_id_after_a_drop(api, client, sleeps):
    first = sse(("forge.job.running", {"status": "running"})) + [None]  # connection drops
    second = [b'id: 2\nevent: forge.job.succeeded\ndata: {"status": "succeeded"}\n\n',
              b'event: end\ndata: {"status": "succeeded"}\n\n']
    api.on("GET", f"/api/jobs/{JID}/events", Reply(200, chunks=first), Reply(200, chunks=second))
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running")))
    events = list(client.stream_job_events(JID))
    assert [e["status"] for e in events] == ["running", "succeeded"]
    calls = api.calls("GET", f"/api/jobs/{JID}/events")
    assert len(calls) == 2
    assert calls[0].header("Last-Event-ID") is None
    assert calls[1].header("Last-Event-ID") == "1"


def test_stream_ends_when_the_job_finished_while_disconnected(api, client):
    api.on("GET", f"/api/jobs/{JID}/events",
           Reply(200, chunks=sse(("forge.job.running", {"status": "running"}))),
           Reply(200, chunks=[]))
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="succeeded")))
    events = list(client.stream_job_events(JID))
    assert [e["status"] for e in events] == ["running"]
    assert len(api.calls("GET", f"/api/jobs/{JID}/events")) == 2, "one last round, then stop"


def test_stream_gives_up_when_it_keeps_ending_without_events(api, client, sleeps):
    api.on("GET", f"/api/jobs/{JID}/events", Reply(200, chunks=[]))
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running")))
    with pytest.raises(nexa_forge.ConnectionError):
        list(client.stream_job_events(JID))
    assert len(api.calls("GET", f"/api/jobs/{JID}/events")) == 4


def test_stream_raw_yields_server_sent_events(api, client):
    api.on("GET", f"/api/jobs/{JID}/events",
           Reply(200, chunks=sse(("forge.job.failed", {"status": "failed"}),
                                 ("end", {"status": "failed"}))))
    evs = list(client.stream_job_events(JID, raw=True))
    assert all(isinstance(ev, nexa_forge.ServerSentEvent) for ev in evs)
    assert [(ev.event, ev.id) for ev in evs] == [("forge.job.failed", "1"), ("end", "2")]


def test_stream_does_not_stop_at_a_failure_that_will_be_retried(api, client):
    # An attempt failed (retryable) and the job went back to the queue: the stream goes
    # on until the server's end event.
    api.on("GET", f"/api/jobs/{JID}/events", Reply(200, chunks=sse(
        ("forge.job.failed", {"status": "failed", "attempt": 1}),
        ("forge.job.retrying", {"status": "queued", "attempt": 2}),
        ("forge.job.succeeded", {"status": "succeeded", "attempt": 2}),
        ("end", {"status": "succeeded"}))))
    events = list(client.stream_job_events(JID))
    assert [e["status"] for e in events] == ["failed", "queued", "succeeded"]


def test_stream_falls_back_to_the_list_when_the_server_does_not_stream(api, client):
    api.on("GET", f"/api/jobs/{JID}/events",
           Reply(200, {"data": [{"type": "forge.job.queued"}], "has_more": False}))
    assert list(client.stream_job_events(JID)) == [{"type": "forge.job.queued"}]


def test_stream_error_answer_raises(api, client):
    api.on("GET", f"/api/jobs/{JID}/events", error_reply(404, "not_found", "job not found"))
    with pytest.raises(nexa_forge.NotFoundError):
        list(client.stream_job_events(JID))


# ---- artifacts ------------------------------------------------------------------------

CONTENT = b'{"a": 1}\n' * 1000
ART = {"artifact_id": "art_1", "job_id": JID, "name": "samples.jsonl", "kind": "dataset",
       "uri": "file:///x", "bytes": len(CONTENT), "sha256": hashlib.sha256(CONTENT).hexdigest()}


def test_artifacts_list_get_and_read(api, client):
    api.on("GET", "/api/artifacts", Reply(200, {"data": [ART], "has_more": False}))
    api.on("GET", "/api/artifacts/art_1", Reply(200, ART))
    api.on("GET", "/api/artifacts/art_1/content",
           Reply(200, CONTENT, content_type="application/x-ndjson"))
    assert client.artifacts(job_id={"job_id": JID})["data"] == [ART]
    assert api.calls()[0].query == {"job_id": [JID]}
    assert list(client.iter_artifacts()) == [ART]
    assert client.list_artifacts()["data"] == [ART]
    assert client.get_artifact("art_1") == ART
    assert client.read_artifact(ART) == CONTENT


def test_download_to_a_directory_checks_the_hash(api, client, tmp_path):
    api.on("GET", "/api/artifacts/art_1/content",
           Reply(200, CONTENT, headers={"Content-Disposition": 'attachment; filename="s.jsonl"'},
                 content_type="application/x-ndjson"))
    path = client.download_artifact(ART, tmp_path)
    assert path == tmp_path / "s.jsonl"
    assert path.read_bytes() == CONTENT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"], "no temp files left"


def test_download_to_a_file_path(api, client, tmp_path):
    api.on("GET", "/api/artifacts/art_1/content", Reply(200, CONTENT))
    path = client.download_artifact("art_1", tmp_path / "out.bin")
    assert path.read_bytes() == CONTENT


def test_download_with_a_wrong_hash_leaves_nothing(api, client, tmp_path):
    api.on("GET", "/api/artifacts/art_1/content", Reply(200, CONTENT + b"tampered"))
    with pytest.raises(nexa_forge.NexaForgeError) as info:
        client.download_artifact(ART, tmp_path / "out.bin")
    assert info.value.code == "checksum_mismatch"
    assert list(tmp_path.iterdir()) == []


def test_download_of_a_missing_artifact_raises_not_found(api, client, tmp_path):
    api.on("GET", "/api/artifacts/art_9/content", error_reply(404, "not_found", "no artifact"))
    with pytest.raises(nexa_forge.NotFoundError):
        client.download_artifact("art_9", tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---- workers, billing, keys -----------------------------------------------------------

def test_workers(api, client):
    api.on("GET", "/api/workers/", Reply(200, {"data": [{"worker_id": "wrk_1",
                                                         "hostname": "h", "status": "idle"}]}))
    assert client.workers()["data"][0]["worker_id"] == "wrk_1"


def test_billing_summary_formats_periods(api, client):
    api.on("GET", "/api/billing/summary", Reply(200, {"total_usd": "1.250000"}))
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    assert client.billing_summary(start, dt.date(2025, 2, 1))["total_usd"] == "1.250000"
    assert api.calls()[0].query == {"period_start": ["2025-01-01T00:00:00Z"],
                                    "period_end": ["2025-02-01T00:00:00Z"]}
    client.billing_summary()
    assert api.calls()[1].query == {}


def test_time_params_are_converted_to_utc(api, client):
    api.on("GET", "/api/billing/usage", Reply(200, {"points": []}))
    cet = dt.timezone(dt.timedelta(hours=1))
    client.usage(bucket="day", meter="gpu_ms", job_type="train",
                 period_start=dt.datetime(2025, 1, 1, 1, 0, 0, 250000, tzinfo=cet),
                 period_end="2025-01-02T00:00:00Z")
    assert api.calls()[0].query == {"bucket": ["day"], "meter": ["gpu_ms"],
                                    "job_type": ["train"],
                                    "period_start": ["2025-01-01T00:00:00.250Z"],
                                    "period_end": ["2025-01-02T00:00:00Z"]}


def test_budget_get_set_and_clear(api, client):
    api.on("GET", "/api/billing/budget", Reply(200, {"monthly_limit_usd": None}))
    api.on("PUT", "/api/billing/budget", lambda req: Reply(200, req.json()))
    assert client.get_budget() == {"monthly_limit_usd": None}
    from decimal import Decimal
    assert client.set_budget(Decimal("50.5")) == {"monthly_limit_usd": "50.5"}
    assert client.set_budget(12.25) == {"monthly_limit_usd": "12.250000"}
    assert client.set_budget(0.1 + 0.2) == {"monthly_limit_usd": "0.300000"}
    assert client.set_budget(None) == {"monthly_limit_usd": None}


def test_api_keys_create_list_revoke(api, client):
    created = {"key_id": "key_1", "api_key": "nexa_secret", "prefix": "nexa_secret"}
    api.on("POST", "/api/auth/api-keys", Reply(201, created))
    api.on("GET", "/api/auth/api-keys", Reply(200, {"data": [{"key_id": "key_1"}]}))
    api.on("DELETE", "/api/auth/api-keys/key_1", Reply(204))
    assert client.create_api_key("laptop", expires_in_days=30) == created
    assert api.calls()[0].json() == {"name": "laptop", "expires_in_days": 30}
    assert client.list_api_keys()["data"] == [{"key_id": "key_1"}]
    assert client.revoke_api_key("key_1") is None
    assert client.revoke_api_key({"key_id": "key_1"}) is None
    assert [c.method for c in api.calls()] == ["POST", "GET", "DELETE", "DELETE"]


def test_revoking_an_unknown_key_is_not_found(api, client):
    api.on("DELETE", "/api/auth/api-keys/key_9", error_reply(404, "not_found", "no such key",
                                                             param="key_id"))
    with pytest.raises(nexa_forge.NotFoundError):
        client.revoke_api_key("key_9")


def test_generic_request(api, client):
    api.on("GET", "/api/things", Reply(200, {"ok": True}))
    assert client.request("GET", "/api/things", params={"a": 1, "flag": True}) == {"ok": True}
    assert api.calls()[0].query == {"a": ["1"], "flag": ["true"]}


def test_client_is_a_context_manager(api):
    api.on("GET", "/api/auth/me", Reply(200, {"user_id": "u"}))
    with nexa_forge.NexaForgeClient(api_key="k", base_url=api.url) as c:
        c.me()
        assert c._transport._idle
    assert not c._transport._idle


def test_package_is_typed():
    import nexa_forge as pkg
    assert (pathlib.Path(pkg.__file__).parent / "py.typed").exists()


# ---- deployments ----------------------------------------------------------------------

DEP = {"id": "dep-0123456789ab", "object": "deployment", "model": "llama-3-8b",
       "status": "ready", "region": "us-east-1", "replicas": 1, "job_id": JID,
       "base_url": "/api/deployments/dep-0123456789ab/v1",
       "created_at": "2026-12-07T21:00:00.000Z", "stopped_at": None}


def test_deployments_list_get_delete(api, client):
    api.on("GET", "/api/deployments", Reply(200, {"object": "list", "data": [DEP]}))
    api.on("GET", "/api/deployments/dep-0123456789ab", Reply(200, DEP))
    api.on("DELETE", "/api/deployments/dep-0123456789ab",
           Reply(200, dict(DEP, status="stopped", stopped_at="2026-12-07T22:00:00.000Z")))
    assert client.list_deployments()["data"][0]["id"] == "dep-0123456789ab"
    assert client.get_deployment("dep-0123456789ab")["status"] == "ready"
    assert client.delete_deployment(DEP)["status"] == "stopped"
    assert [(c.method, c.path) for c in api.calls()] == [
        ("GET", "/api/deployments"), ("GET", "/api/deployments/dep-0123456789ab"),
        ("DELETE", "/api/deployments/dep-0123456789ab")]


def test_a_deployment_is_named_by_id_object_or_deploy_job(api, client):
    api.on("GET", "/api/deployments/dep-0123456789ab", Reply(200, DEP), Reply(200, DEP))
    client.get_deployment(DEP)
    client.get_deployment(job(job_type="deploy", status="succeeded",
                              result={"deployment_id": "dep-0123456789ab"}))
    assert len(api.calls()) == 2
    with pytest.raises(ValueError):
        client.get_deployment(job(job_type="deploy", status="running"))


def test_another_tenants_deployment_is_not_found(api, client):
    api.on("GET", "/api/deployments/dep-0123456789ab",
           error_reply(404, "not_found", "no such deployment"))
    with pytest.raises(nexa_forge.NotFoundError):
        client.get_deployment("dep-0123456789ab")


def test_deployment_base_url_is_for_the_openai_client(client):
    assert client.deployment_base_url("dep-0123456789ab") == \
        client.base_url.rstrip("/") + "/api/deployments/dep-0123456789ab/v1"
    assert client.deployment_base_url("../x").endswith("/api/deployments/..%2Fx/v1")
