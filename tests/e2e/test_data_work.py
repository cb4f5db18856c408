"""generate and distill with a real model through the stack's provider (issue 21): the
catalogue's gpt-4 is provider:openai/gpt-4, which the local stack serves with a stand-in
(deploy/local/providers.sh) behind a generated key. The key shows nowhere a user or a log
can see."""
import json
import os
import pathlib
import random
import sys
import time

import pytest
import requests

from conftest import env
from test_data_plane import content, run_ok, upload_ok

HANDLERS = pathlib.Path(__file__).resolve().parents[2] / "handlers"
sys.path.insert(0, str(HANDLERS))
import _corpus  # noqa: E402
import _rows  # noqa: E402


STUDENT = "distilled-e2e-" + os.urandom(3).hex()


def provider_key():
    secrets = pathlib.Path(env("NF_TEST_STATE_DIR")) / "secrets.env"
    for line in secrets.read_text().splitlines():
        if line.startswith("NF_PROVIDER_KEY_OPENAI="):
            return line.split("=", 1)[1]
    raise AssertionError("the stack made no provider key")


def final_cost(api, job_id, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        job = api.get_job(job_id).json()
        if job.get("cost_final") or time.monotonic() > deadline:
            return job["cost_usd"]
        time.sleep(0.25)


def rows_of(api, art):
    body = content(api, art["artifact_id"]).content.decode()
    return [json.loads(x) for x in body.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def generated(api):
    return run_ok(api, "generate", {"domain": "biology", "num_samples": 12,
                                    "generator": "gpt-4", "task": "instruction",
                                    "max_tokens": 48, "seed": 5}, timeout=300)


def test_the_stand_in_provider_is_marked_and_checks_its_key():
    port = 8105 + int(os.environ.get("FORGE_TEST_PORT_OFFSET", "10000"))
    url = f"http://127.0.0.1:{port}/v1/models"
    assert requests.get(url, timeout=5).status_code == 401
    models = requests.get(url, headers={"Authorization": "Bearer " + provider_key()},
                          timeout=5).json()
    [model] = models["data"]
    assert model["id"] == "gpt-4" and model["stand_in"] is True


def test_generate_writes_num_samples_chat_rows_without_near_duplicates(api, generated):
    res = generated["result"]
    assert res["num_samples"] == 12 and res["stand_in"] is True
    assert res["generator"]["model"] == "openai/gpt-4" and res["calls"] >= 24
    [art] = [a for a in generated["artifacts"] if a["kind"] == "dataset"]
    rows = rows_of(api, art)
    assert len(rows) == 12
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    sets = [_rows.shingles(_rows.row_text(r)) for r in rows]
    for i in range(len(sets)):
        for j in range(i):
            assert len(sets[i] & sets[j]) / len(sets[i] | sets[j]) < 0.8
    # the provider's tokens are metered on the job: its final cost is above zero
    assert float(final_cost(api, generated["job_id"])) > 0


@pytest.fixture(scope="module")
def distilled(api):
    rng = random.Random(9)
    data = []
    for _ in range(40):
        q, a = _corpus.sample(rng, "chemistry")
        data.append({"instruction": q, "response": a})
    body = b"".join(json.dumps(r).encode() + b"\n" for r in data)
    upload_ok(api, body, uri="s3://e2e-data-work/prompts.jsonl", filename="prompts.jsonl")
    return run_ok(api, "distill", {"teacher_model": "gpt-4", "student_model": "llama-3-8b",
                                   "dataset_uri": "s3://e2e-data-work/prompts.jsonl",
                                   "max_tokens": 48, "epochs": 2, "holdout": 0.2, "seed": 3,
                                   "output_model": STUDENT},
                  timeout=600)


def test_distill_end_to_end_the_student_beats_the_untrained_student(api, distilled):
    res = distilled["result"]
    assert res["teacher_calls"] == 40 and res["stand_in"] is True
    assert res["teacher_tokens"]["completion"] > 0 and res["cost_usd"] > 0
    held = res["student"]["heldout"]
    assert held["student_loss"] < held["untrained_student_loss"], held
    names = {a["name"]: a["kind"] for a in distilled["artifacts"]}
    assert any(n.endswith("distilled.jsonl") and k == "dataset" for n, k in names.items())
    assert any(n.endswith("model.tar") and k == "model" for n, k in names.items())
    assert "checkpoint" in names.values()
    # the student is registered in the account's catalogue, as train's output_model
    model = api.call("GET", f"/api/models/{STUDENT}", "/api/models/{model}").json()
    assert model["kind"] == "fine_tuned" and model["base_model"] == "llama-3-8b", model
    assert model["artifact_id"] in {a["artifact_id"] for a in distilled["artifacts"]
                                    if a["kind"] == "model"}


def test_no_provider_key_anywhere(api, generated, distilled):
    key = provider_key()
    for job in (generated, distilled):
        job_id = job["job_id"]
        assert key not in json.dumps(api.get_job(job_id).json())
        events = api.call("GET", f"/api/jobs/{job_id}/events", "/api/jobs/{job_id}/events",
                          params={"limit": 1000}).text
        assert key not in events
        for art in job["artifacts"]:
            assert key.encode() not in content(api, art["artifact_id"]).content, art["name"]
    for log in pathlib.Path(env("NF_TEST_LOG_DIR")).glob("*.log"):
        assert key.encode() not in log.read_bytes(), log
