"""The first job on the real path of DESIGN §3:
gateway -> forge.jobs.requested -> scheduler (Postgres) -> forge.jobs.generate ->
worker-manager queue -> nf-worker (next_job) -> handlers/generate -> events -> scheduler ->
GET /api/jobs/{id} answers succeeded with the result and the artifact."""
import hashlib
import json
import os
import subprocess

import requests

STATUS_ORDER = ["queued", "assigned", "running", "succeeded"]


def test_health_and_meta(api):
    assert api.call("GET", "/healthz", key=None).json() == {"status": "ok"}
    ready = api.call("GET", "/readyz", key=None).json()
    assert ready["status"] == "ready", ready
    metrics = api.call("GET", "/metrics", key=None).text
    assert "nf_http_requests_total" in metrics
    served = api.call("GET", "/openapi.json", key=None).json()
    assert served == api.contract.spec, "/openapi.json is proto/openapi.yaml"
    docs = api.call("GET", "/docs", key=None)
    assert "<html" in docs.text.lower() and "/openapi.json" in docs.text


def test_request_id_is_echoed(api):
    resp = api.call("GET", "/healthz", key=None, headers={"X-Request-Id": "trace-abc.123"})
    assert resp.headers["X-Request-Id"] == "trace-abc.123"


def test_generate_job_end_to_end(api, events):
    resp = api.submit("generate", {"domain": "biology", "num_samples": 100})
    assert resp.status_code == 202, resp.text
    job = resp.json()
    job_id = job["job_id"]
    assert job["status"] == "queued" and job["job_type"] == "generate"
    assert job["params"]["domain"] == "biology" and job["params"]["num_samples"] == 100
    assert job["attempt"] == 1 and job["progress"] == 0

    final = api.wait_terminal(job_id)
    assert final["status"] == "succeeded", final
    assert final["result"]["num_samples"] == 100
    assert final["progress"] == 1
    assert final["worker_id"].startswith("wrk_")
    assert final["started_at"] and final["finished_at"]
    assert final["created_at"] <= final["started_at"] <= final["finished_at"]

    # The artifact is real: 100 JSON lines about biology, with the size and hash reported.
    [art] = final["artifacts"]
    assert art["uri"] == f"artifact://{art['artifact_id']}"
    data = api.call("GET", f"/api/artifacts/{art['artifact_id']}/content",
                    "/api/artifacts/{artifact_id}/content").content
    assert art["bytes"] == len(data)
    assert art["sha256"] == hashlib.sha256(data).hexdigest()
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert len(rows) == 100
    assert all(row["domain"] == "biology" for row in rows)
    assert len({json.dumps(r, sort_keys=True) for r in rows}) > 50, "samples vary"

    # Every step travelled through Kafka, in order, each event valid against its schema.
    events.wait_for(job_id, "forge.job.succeeded")
    trail = events.for_job(job_id)
    types = [e["type"] for _, e in trail]
    assert ("forge.jobs.requested", "forge.job.requested") in [(t, e["type"]) for t, e in trail]
    assert ("forge.jobs.generate", "forge.job.dispatch") in [(t, e["type"]) for t, e in trail]
    statuses = [e["type"].rsplit(".", 1)[1] for _, e in trail if e["type"].rsplit(".", 1)[1]
                in STATUS_ORDER]
    assert statuses == STATUS_ORDER, types

    # GPU time and tokens were metered for this job.
    usage = [e for t, e in trail if t == "forge.usage"]
    meters = {e["data"]["meter"] for e in usage}
    assert "gpu_ms" in meters and "output_tokens" in meters, usage

    # Postgres, the source of truth, agrees with the API.
    row = psql(f"select status, attempt from sched.jobs where job_id = '{job_id}'")
    assert row == "succeeded|1"


def test_unknown_job_is_404(api):
    resp = api.get_job("job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


def test_other_users_job_is_404(api, other_user_key):
    job_id = api.submit("generate", {"domain": "law", "num_samples": 3}).json()["job_id"]
    resp = api.get_job(job_id, key=other_user_key)
    assert resp.status_code == 404, "another user's job is invisible, not forbidden"
    assert api.get_job(job_id).status_code == 200


def psql(sql):
    out = subprocess.run(["psql", os.environ["NF_TEST_PG_DSN"], "-Atc", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()
