"""Live training metrics end to end (issue 17 §2): the train handler's {"metric": ...} lines
are checked by the worker agent, published as forge.job.metric, kept by the scheduler and
served as GET /api/jobs/{id}/metrics - as pages, and as an SSE stream that delivers the
points while the job runs and ends when it does. evaluate's scores are a point too."""
import json
import pathlib
import random
import sys
import threading
import time
import uuid

import pytest
import requests
from conftest import env
from test_data_plane import run_ok, upload_ok

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "handlers"))
import _corpus  # noqa: E402

ONE = "/api/jobs/{job_id}/metrics"
ML_TIMEOUT = 600


def corpus_jsonl(n, seed):
    rng = random.Random(seed)
    rows = [json.dumps({"instruction": q, "response": a})
            for q, a in (_corpus.sample(rng, "law") for _ in range(n))]
    return ("\n".join(rows) + "\n").encode()


class SSEReader(threading.Thread):
    """Reads GET <path> as text/event-stream in the background: every (arrival time,
    event, data) until the server ends the stream."""

    def __init__(self, url, key, headers=None):
        super().__init__(daemon=True)
        self.url, self.key, self.headers = url, key, headers or {}
        self.frames, self.status, self.ctype, self.error = [], None, None, None

    def run(self):
        try:
            with requests.get(self.url, headers={"X-Nexa-Api-Key": self.key, **self.headers},
                              stream=True, timeout=(10, 120)) as resp:
                self.status = resp.status_code
                self.ctype = resp.headers.get("Content-Type", "")
                event, data = "message", []
                for line in resp.iter_lines(decode_unicode=True):
                    if line == "":
                        if data:
                            self.frames.append((time.monotonic(), event, json.loads("\n".join(data))))
                        event, data = "message", []
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.fixture(scope="module")
def trained(api, events):
    """A 2-epoch stand-in train (llama-3-8b, LoRA) with a metric point every step, read
    live by an SSE client started right after the submission."""
    tag = uuid.uuid4().hex[:8]
    data = upload_ok(api, corpus_jsonl(32, 1), uri=f"s3://e2e-metrics/{tag}/train.jsonl",
                     filename="train.jsonl")
    resp = api.submit("train", {"model_id": "llama-3-8b", "dataset_uri": data["s3_uri"],
                                "epochs": 2, "validation_split": 0.25, "metric_every": 1,
                                "max_seq_length": 64, "seed": 3,
                                "output_model": f"e2e-metrics-{tag}"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    reader = SSEReader(f"{api.base}/api/jobs/{job_id}/metrics?stream=true", api.key)
    reader.start()
    job = api.wait_terminal(job_id, timeout=ML_TIMEOUT)
    ended = time.monotonic()
    assert job["status"] == "succeeded", job
    reader.join(timeout=30)
    assert not reader.is_alive(), "the metrics stream did not end with the job"
    yield {"job": job, "reader": reader, "ended": ended}
    api.call("DELETE", f"/api/models/e2e-metrics-{tag}", "/api/models/{model}")


def all_points(api, job_id, key="default", limit=None):
    points, cursor = [], None
    while True:
        q = {"limit": limit} if limit else {}
        if cursor:
            q["cursor"] = cursor
        resp = api.call("GET", f"/api/jobs/{job_id}/metrics", ONE, key=key, params=q)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        points += page["data"]
        if not page["has_more"]:
            assert page["job_status"] == "succeeded"
            return points
        cursor = page["next_cursor"]


def test_train_reports_loss_per_step_and_per_epoch(api, trained):
    points = all_points(api, trained["job"]["job_id"])
    assert all(p["attempt"] == 1 and p["type"] == "metric" for p in points), points
    steps = [p for p in points if "train_loss" in p["values"] and "valid_loss" not in p["values"]]
    epochs = [p for p in points if "valid_loss" in p["values"]]
    # train_loss at every optimizer step, in order, with the learning rate and throughput
    assert [p["step"] for p in steps] == list(range(1, len(steps) + 1)), steps
    assert len(steps) >= 4, steps  # 2 epochs of at least 2 steps each
    for p in steps:
        assert p["values"]["train_loss"] > 0 and "learning_rate" in p["values"], p
        assert p["values"]["tokens_per_s"] > 0, p
    # valid_loss before training (step 0) and at the end of each of the 2 epochs
    assert [p["epoch"] for p in epochs] == [0, 1, 2], epochs
    assert epochs[0]["step"] == 0 and epochs[-1]["step"] == steps[-1]["step"], epochs
    assert epochs[-1]["values"]["valid_loss"] < epochs[0]["values"]["valid_loss"], epochs
    # the result's history agrees with the per-epoch points
    res = trained["job"]["result"]
    if "history" in res:
        assert [round(v, 4) for v in res["history"]["valid_loss"]] == \
            [round(p["values"]["valid_loss"], 4) for p in epochs[1:]], res["history"]
    # pages of 2 give the same points, in the same order
    assert all_points(api, trained["job"]["job_id"], limit=2) == points


def test_the_stream_delivered_the_points_live_then_ended(api, trained):
    reader = trained["reader"]
    assert reader.error is None, reader.error
    assert reader.status == 200 and reader.ctype.startswith("text/event-stream")
    kinds = [e for _, e, _ in reader.frames]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"metric"}, kinds
    assert reader.frames[-1][2] == {"job_id": trained["job"]["job_id"], "status": "succeeded"}
    streamed = [d for _, e, d in reader.frames if e == "metric"]
    assert streamed == all_points(api, trained["job"]["job_id"])
    # live: the first points arrived while the job was still running
    first = reader.frames[0][0]
    assert first < trained["ended"] - 1.0, "no point arrived before the job ended"


def test_metric_events_follow_their_schema(api, events, trained):
    job_id = trained["job"]["job_id"]
    evs = events.wait_for(job_id, "forge.job.metric")  # validated by the contract
    assert all(e["data"]["attempt"] == 1 and "step" in e["data"]["metric"] for e in evs)


def test_a_stream_of_a_finished_job_replays_it_and_resumes_after_last_event_id(api, trained):
    job_id = trained["job"]["job_id"]
    points = all_points(api, job_id)
    # Accept: text/event-stream works like stream=true; Last-Event-ID resumes after a point
    reader = SSEReader(f"{api.base}/api/jobs/{job_id}/metrics", api.key,
                       {"Accept": "text/event-stream", "Last-Event-ID": points[2]["cursor"]})
    reader.run()
    assert [d for _, e, d in reader.frames if e == "metric"] == points[3:]
    # stream=false keeps the JSON page even with that Accept header
    resp = api.call("GET", f"/api/jobs/{job_id}/metrics?stream=false", ONE,
                    headers={"Accept": "text/event-stream, application/json"})
    assert resp.status_code == 200 and resp.json()["data"] == points[:100]


def test_another_tenant_and_bad_queries(api, trained, other_user_key):
    job_id = trained["job"]["job_id"]
    for q in ("", "?stream=true"):
        resp = api.call("GET", f"/api/jobs/{job_id}/metrics{q}", ONE, key=other_user_key)
        assert resp.status_code == 404, resp.text
    resp = api.call("GET", "/api/jobs/job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M/metrics", ONE)
    assert resp.status_code == 404
    for q, param in (("limit=0", "limit"), ("limit=1001", "limit"), ("stream=yes", "stream"),
                     ("cursor=nope", "cursor"), ("color=red", "color")):
        resp = api.call("GET", f"/api/jobs/{job_id}/metrics?{q}", ONE)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == param, resp.text


def test_evaluate_reports_its_scores_as_a_point(api):
    done = run_ok(api, "evaluate", {"model_id": "tiny-bigram", "benchmark": "hellaswag"})
    points = all_points(api, done["job_id"])
    assert len(points) == 1 and points[0]["step"] == 0, points
    assert points[0]["values"]["hellaswag/perplexity"] == done["result"]["perplexity"]


def test_a_job_without_metrics_has_an_empty_list(api):
    done = run_ok(api, "generate", {"domain": "law", "num_samples": 3})
    resp = api.call("GET", f"/api/jobs/{done['job_id']}/metrics", ONE)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == [] and resp.json()["next_cursor"] is None
    assert env("NF_TEST_API_URL")  # the stack this ran against
