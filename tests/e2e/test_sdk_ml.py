"""The SDK's ML side against the real stack (issue 22 §1-2): train a stand-in with the
typed parameters and watch it (job_metrics stream, wait()'s progress bar), its model in
client.models, its checkpoints; deploy it, list and chat with the deployment (SDK chat,
streamed, and the openai client from client.openai()), the CLI's models / deployments /
jobs metrics / chat, then delete the deployment. Runs as a fresh account."""
import io
import json
import os
import pathlib
import random
import subprocess
import sys
import threading
import uuid

import pytest
import requests

from conftest import env

ROOT = pathlib.Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / "sdk" / "python"
if str(SDK_DIR) not in sys.path:
    sys.path.insert(0, str(SDK_DIR))
sys.path.insert(0, str(ROOT / "handlers"))

import _corpus  # noqa: E402
import nexa_forge  # noqa: E402
from nexa_forge import NexaForgeClient  # noqa: E402

ML_TIMEOUT = 600


@pytest.fixture(scope="module")
def key():
    resp = requests.post(f"{env('NF_TEST_AUTH_URL')}/internal/bootstrap",
                         json={"email": f"sdkml-{uuid.uuid4().hex[:10]}@nexa.dev"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["api_key"]


@pytest.fixture(scope="module")
def client(key):
    with NexaForgeClient(api_key=key, base_url=env("NF_TEST_API_URL"), timeout=60) as c:
        yield c


def cli(key, *argv, stdin=None):
    environ = dict(os.environ, NEXA_API_KEY=key, NEXA_API_URL=env("NF_TEST_API_URL"),
                   PYTHONPATH=str(SDK_DIR))
    return subprocess.run([sys.executable, "-m", "nexa_forge", *argv], input=stdin,
                          capture_output=True, text=True, env=environ, timeout=300)


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory):
    """llama-3-8b's stand-in trained 2 epochs through the SDK: a metric stream read while
    it runs, and wait() with its progress bar on (written to a buffer)."""
    rng = random.Random(5)
    path = tmp_path_factory.mktemp("sdkml") / "train.jsonl"
    path.write_text("".join(json.dumps({"instruction": q, "response": a}) + "\n"
                            for q, a in (_corpus.sample(rng, "law") for _ in range(32))))
    tag = uuid.uuid4().hex[:8]
    data = client.upload_file(path, uri=f"s3://sdkml/{tag}/train.jsonl")
    name = f"sdkml-{tag}"
    job = client.train("llama-3-8b", data["s3_uri"], epochs=2, validation_split=0.25,
                       metric_every=1, max_seq_length=64, seed=4, method="lora", lora_r=4,
                       output_model=name)
    streamed = []
    reader = threading.Thread(target=lambda: streamed.extend(
        client.job_metrics(job, stream=True)), daemon=True)
    reader.start()
    bar = io.StringIO()
    real, sys.stderr = sys.stderr, bar
    try:
        final = client.wait(job, timeout=ML_TIMEOUT, poll_interval=0.2, progress=True)
    finally:
        sys.stderr = real
    reader.join(timeout=60)
    assert not reader.is_alive(), "job_metrics(stream=True) did not end with the job"
    yield {"job": final, "name": name, "streamed": streamed, "bar": bar.getvalue()}
    client.models.delete(name)


def test_train_params_metrics_and_progress(client, trained):
    job = trained["job"]
    assert job["params"]["lora_r"] == 4 and job["params"]["metric_every"] == 1, job["params"]
    points = client.job_metrics(job)
    assert trained["streamed"] == points, "the stream gave every point, in order"
    losses = [p for p in points if "train_loss" in p["values"]]
    valid = [p for p in points if "valid_loss" in p["values"]]
    assert len(losses) >= 4 and [p["epoch"] for p in valid] == [0, 1, 2], points
    bar = trained["bar"]
    assert "\r" in bar and bar.endswith("\n"), bar[-200:]
    assert "step " in bar and "loss " in bar and "succeeded" in bar and "100%" in bar, bar[-300:]


def test_the_model_and_its_checkpoints(client, trained):
    names = {m["id"]: m for m in client.models.list()}
    assert names["llama-3-8b"]["stand_in"] is True
    mine = client.models.get(trained["name"])
    assert mine["kind"] == "fine_tuned" and mine["base_model"] == "llama-3-8b", mine
    assert mine["job_id"] == trained["job"]["job_id"], mine
    ckpts = client.checkpoints(trained["job"])
    assert [c["epoch"] for c in ckpts] == [1, 2], ckpts
    assert all(c["uri"].startswith("artifact://") for c in ckpts)


def test_cli_models_and_jobs_metrics(key, trained):
    out = cli(key, "models", "list")
    assert out.returncode == 0, out.stderr
    assert trained["name"] in out.stdout and "llama-3-8b" in out.stdout
    out = cli(key, "jobs", "metrics", trained["job"]["job_id"], "--json")
    assert out.returncode == 0, out.stderr
    assert [p["step"] for p in json.loads(out.stdout)] == \
        [p["step"] for p in trained["streamed"]]
    out = cli(key, "jobs", "metrics", trained["job"]["job_id"], "--follow")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(trained["streamed"])


@pytest.fixture(scope="module")
def deployment(client, trained):
    job = client.deploy(trained["name"])
    done = client.wait(job, timeout=300, poll_interval=0.5, progress=False)
    dep = client.deployments.get(done)
    yield dep
    client.deployments.delete(dep)


def test_deployments_chat_and_openai(client, key, deployment):
    dep = deployment
    assert dep["status"] == "ready" and dep["id"] in [d["id"] for d in client.deployments.list()]
    msgs = [{"role": "user", "content": "What does a force majeure clause do?"}]
    reply = client.chat(dep, msgs, max_tokens=8)
    assert reply["choices"][0]["message"]["role"] == "assistant", reply
    assert 1 <= reply["usage"]["completion_tokens"] <= 8, reply
    deltas = list(client.chat(dep["id"], msgs, stream=True, max_tokens=12))
    assert len(deltas) >= 2 and all(isinstance(d, str) and d for d in deltas), deltas
    # the official openai client, from the helper
    oai = client.openai(dep, max_retries=0, timeout=120)
    assert [m.id for m in oai.models.list()] == [dep["model"]]
    chat = oai.chat.completions.create(model=dep["model"], messages=msgs, max_tokens=8)
    assert chat.choices[0].finish_reason in ("stop", "length")
    pieces = [c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model=dep["model"], messages=msgs, max_tokens=8, stream=True) if c.choices]
    assert len([p for p in pieces if p]) >= 2
    # the CLI: list, and a chat of two turns read from stdin
    out = cli(key, "deployments", "list")
    assert out.returncode == 0 and dep["id"] in out.stdout and "ready" in out.stdout, out
    out = cli(key, "chat", dep["id"], "--max-tokens", "6", stdin="Hello\nAnd then?\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "the replies are printed"


def test_delete_stops_the_deployment(client, trained):
    job = client.deploy(trained["name"])
    done = client.wait(job, timeout=300, poll_interval=0.5, progress=False)
    dep_id = done["result"]["deployment_id"]
    assert client.deployments.delete(dep_id)["status"] == "stopped"
    assert client.deployments.get(dep_id)["status"] == "stopped"
    with pytest.raises(nexa_forge.NexaForgeError):
        client.chat(dep_id, [{"role": "user", "content": "hi"}], max_tokens=4)
