"""Models, deployments, chat, the openai helper, a job's live metrics and checkpoints, the
typed job parameters, wait()'s progress bar and the CLI commands for them (issue 22
§1-2), against the scripted server."""
import io
import json
import sys
import types

import pytest

import nexa_forge
from nexa_forge import _progress
from nexa_forge.cli import main

from fake_api import Reply, error_reply, job

JID = "job_01HZZZZZZZZZZZZZZZZZZZZZZZ"
DEP = "dep-0123456789ab"
MODEL = {"id": "llama-3-8b", "object": "model", "kind": "base", "architecture": "llama",
         "parameters": 8030261248, "stand_in": True, "base_model": None, "job_id": None}
DEPLOYMENT = {"id": DEP, "object": "deployment", "model": "llama-3-8b", "status": "ready",
              "region": "us-east-1", "replicas": 1, "job_id": JID,
              "base_url": f"/api/deployments/{DEP}/v1", "created_at": "2026-12-08T00:00:00Z",
              "stopped_at": None}


def point(step, cursor, **values):
    return {"type": "metric", "step": step, "epoch": None, "attempt": 1,
            "time": "2026-12-08T00:00:00.000Z", "values": values, "cursor": cursor}


# ---- models and deployments ----------------------------------------------------------

def test_models_namespace(api, client):
    api.on("GET", "/api/models", Reply(200, {"object": "list", "data": [MODEL]}))
    api.on("GET", "/api/models/my-ft", Reply(200, dict(MODEL, id="my-ft", kind="fine_tuned")))
    api.on("POST", "/api/models", Reply(201, dict(MODEL, id="mine", kind="uploaded")))
    api.on("DELETE", "/api/models/mine", Reply(200, {"id": "mine", "deleted": True}))
    assert client.models.list() == [MODEL]
    assert client.models.get("my-ft")["kind"] == "fine_tuned"
    assert client.models.register("mine", "artifact://art_1")["kind"] == "uploaded"
    assert api.calls("POST")[0].json() == {"name": "mine", "uri": "artifact://art_1"}
    assert client.models.delete("mine") == {"id": "mine", "deleted": True}
    # the flat methods stay as they were
    assert client.list_models()["data"] == [MODEL]
    api.on("GET", "/api/models/nope", error_reply(404, "not_found", "model not found"))
    with pytest.raises(nexa_forge.NotFoundError):
        client.models.get("nope")


def test_deployments_namespace(api, client):
    api.on("GET", "/api/deployments", Reply(200, {"object": "list", "data": [DEPLOYMENT]}))
    api.on("GET", f"/api/deployments/{DEP}", Reply(200, DEPLOYMENT))
    api.on("DELETE", f"/api/deployments/{DEP}", Reply(200, dict(DEPLOYMENT, status="stopped")))
    assert client.deployments.list() == [DEPLOYMENT]
    assert client.deployments.get(DEP)["model"] == "llama-3-8b"
    # a deploy job names its deployment too
    assert client.deployments.get(job(status="succeeded", result={"deployment_id": DEP}))["id"] \
        == DEP
    assert client.deployments.delete(DEPLOYMENT)["status"] == "stopped"
    assert client.deployments.base_url(DEP) == f"{api.url}/api/deployments/{DEP}/v1"
    assert client.get_deployment(DEP)["id"] == DEP  # flat alias


# ---- chat and openai -----------------------------------------------------------------

def test_chat_returns_the_completion(api, client):
    completion = {"object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi."},
         "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    path = f"/api/deployments/{DEP}/v1/chat/completions"
    api.on("POST", path, Reply(200, completion))
    out = client.chat(DEP, [{"role": "user", "content": "Hello"}], max_tokens=8,
                      temperature=0.2, top_p=0.9)
    assert out["choices"][0]["message"]["content"] == "Hi."
    [req] = api.calls("POST", path)
    assert req.json() == {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8,
                          "temperature": 0.2, "top_p": 0.9, "stream": False}
    assert req.header("X-Nexa-Api-Key") == "nexa_test_key"


def test_chat_stream_yields_the_deltas(api, client):
    def chunk(text):
        return ("data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": text}}]}) + "\n\n").encode()
    chunks = [b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n\n',
              chunk("A cat"), b": usage {\"completion_tokens\": 2}\n\n", chunk("alyst."),
              b'data: {"choices": [], "usage": {"completion_tokens": 2}}\n\n',
              b"data: [DONE]\n\n", chunk("never read")]
    path = f"/api/deployments/{DEP}/v1/chat/completions"
    api.on("POST", path, Reply(200, chunks=chunks, chunk_delay=0.01,
                               content_type="text/event-stream"))
    deltas = list(client.chat(DEP, [{"role": "user", "content": "?"}], stream=True))
    assert deltas == ["A cat", "alyst."]
    [req] = api.calls("POST", path)
    assert req.json()["stream"] is True and req.header("Accept") == "text/event-stream"


def test_openai_helper_points_the_client_at_the_deployment(client, monkeypatch):
    made = {}

    class FakeOpenAI:
        def __init__(self, **kw):
            made.update(kw)

    monkeypatch.setitem(sys.modules, "openai", types.SimpleNamespace(OpenAI=FakeOpenAI))
    oai = client.openai({"id": DEP}, max_retries=0)
    assert isinstance(oai, FakeOpenAI)
    assert made == {"base_url": f"{client.base_url}/api/deployments/{DEP}/v1",
                    "api_key": "nexa_test_key", "max_retries": 0}


def test_openai_helper_names_the_extra_when_openai_is_missing(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai raises ImportError
    with pytest.raises(ImportError, match=r"nexa-forge\[openai\]"):
        client.openai(DEP)


# ---- metrics and checkpoints -----------------------------------------------------------

def test_job_metrics_reads_every_page(api, client):
    path = f"/api/jobs/{JID}/metrics"
    api.on("GET", path, lambda req: Reply(200, {
        "object": "list",
        "data": [point(1, "c1", train_loss=2.5)] if not req.query.get("cursor")
        else [point(2, "c2", train_loss=2.1, valid_loss=2.3)],
        "has_more": not req.query.get("cursor"), "next_cursor": "c1" if not
        req.query.get("cursor") else "c2", "job_status": "succeeded"}))
    points = client.job_metrics({"job_id": JID})
    assert [p["step"] for p in points] == [1, 2]
    assert points[1]["values"] == {"train_loss": 2.1, "valid_loss": 2.3}
    assert api.calls()[0].query == {"limit": ["1000"]}


def test_job_metrics_stream_until_the_end(api, client):
    frames = [f"id: c{i}\nevent: metric\ndata: {json.dumps(point(i, f'c{i}', train_loss=3.0 - i))}"
              f"\n\n".encode() for i in (1, 2)]
    frames.append(b'event: end\ndata: {"job_id": "x", "status": "succeeded"}\n\n')
    api.on("GET", f"/api/jobs/{JID}/metrics", Reply(200, chunks=frames, chunk_delay=0.01,
                                                    content_type="text/event-stream"))
    got = list(client.job_metrics(JID, stream=True, last_event_id="c0"))
    assert [p["step"] for p in got] == [1, 2]
    [req] = api.calls()
    assert req.header("Accept") == "text/event-stream" and req.header("Last-Event-ID") == "c0"


def test_checkpoints(api, client):
    ckpt = {"artifact_id": "art_1", "uri": "artifact://art_1", "name": "checkpoint-epoch-1.tar",
            "bytes": 10, "sha256": None, "epoch": 1, "step": 3, "attempt": 1,
            "created_at": "2026-12-08T00:00:00Z"}
    api.on("GET", f"/api/jobs/{JID}/checkpoints", Reply(200, {"object": "list", "data": [ckpt]}))
    assert client.checkpoints(JID) == [ckpt]


# ---- every handler parameter -----------------------------------------------------------

@pytest.mark.parametrize("method,args,kwargs", [
    ("train", ("llama-3-8b", "s3://b/t.jsonl"), {
        "epochs": 2, "validation_split": 0.2, "method": "lora", "lora_r": 8, "lora_alpha": 16,
        "lora_dropout": 0.05, "batch_size": 4, "warmup_ratio": 0.1, "max_seq_length": 128,
        "seed": 1, "train_on_inputs": False, "merge": True, "metric_every": 1,
        "output_model": "my-ft", "learning_rate_multiplier": 2.0,
        "from_checkpoint": "artifact://art_c", "early_stopping_patience": 2}),
    ("distill", ("gpt-4", "llama-3-8b", "s3://b/p.jsonl"), {
        "method": "logits", "max_tokens": 64, "temperature": 0.0, "system_prompt": "Be brief.",
        "holdout": 0.1, "epochs": 1, "batch_size": 2, "learning_rate": 1e-4,
        "train_method": "full", "max_seq_length": 64, "seed": 2, "kd_temperature": 2.0,
        "kd_alpha": 0.5, "output_model": "student"}),
    ("generate", ("law", 10), {
        "generator": "gpt-4", "task": "qa", "seed_topics": ("contracts",),
        "temperature": 0.7, "system_prompt": "x", "max_tokens": 64,
        "near_duplicate_threshold": 0.8, "output_format": "parquet"}),
    ("audit", ("s3://b/d.jsonl",), {"judge": "gpt-4", "judge_max_rows": 20}),
    ("evaluate", ("my-ft", "custom"), {"dataset_uri": "s3://b/e.jsonl",
                                       "compare_to": "llama-3-8b"}),
])
def test_every_handler_parameter_is_sent(api, client, method, args, kwargs):
    api.on("POST", f"/api/jobs/{method}", Reply(202, job(job_type=method)))
    getattr(client, method)(*args, **kwargs)
    sent = api.calls()[0].json()["params"]
    for key, value in kwargs.items():
        assert sent[key] == (list(value) if isinstance(value, tuple) else value), key


# ---- wait()'s progress bar ---------------------------------------------------------------

def test_render_shows_step_loss_and_eta():
    text = _progress.render({"job_id": JID, "job_type": "train", "status": "running",
                             "progress": 0.5}, 12, 2.31415, 75)
    assert "[" + "█" * 10 + "░" * 10 + "]" in text
    assert " 50%" in text and "step 12" in text and "loss 2.3142" in text
    assert "ETA 1:15" in text


def test_wait_draws_the_bar_only_when_asked_or_on_a_terminal(api, client, monkeypatch):
    running = job(status="running", progress=0.5, job_type="train")
    done = job(status="succeeded", progress=1, job_type="train")
    api.on("GET", f"/api/jobs/{JID}", Reply(200, running), Reply(200, done))
    api.on("GET", f"/api/jobs/{JID}/metrics", Reply(200, {
        "object": "list", "data": [point(7, "c7", train_loss=1.25)], "has_more": False,
        "next_cursor": "c7", "job_status": "running"}))
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)  # not a terminal: no bar by default
    client.wait(JID, poll_interval=0.01)
    assert err.getvalue() == "" and not api.calls("GET", f"/api/jobs/{JID}/metrics")

    api.on("GET", f"/api/jobs/{JID}", Reply(200, running), Reply(200, done))
    client.wait(JID, poll_interval=0.01, progress=True)
    out = err.getvalue()
    assert "\r" in out and out.endswith("\n")
    assert "step 7" in out and "loss 1.2500" in out and "succeeded" in out and "100%" in out
    # only the new points are asked for after the first page
    queries = [c.query for c in api.calls("GET", f"/api/jobs/{JID}/metrics")]
    assert queries[0] == {"limit": ["1000"]} and queries[-1].get("cursor") == ["c7"]


def test_a_bar_never_breaks_the_wait(api, client, monkeypatch):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running", job_type="train")),
           Reply(200, job(status="succeeded", progress=1, job_type="train")))
    api.on("GET", f"/api/jobs/{JID}/metrics", error_reply(404, "not_found", "no such route"))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert client.wait(JID, poll_interval=0.01, progress=True)["status"] == "succeeded"


# ---- CLI ------------------------------------------------------------------------------

@pytest.fixture
def cli(api, monkeypatch, capsys):
    monkeypatch.setenv("NEXA_API_KEY", "nexa_cli_key")
    monkeypatch.setenv("NEXA_API_URL", api.url)

    def run(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_cli_models_and_deployments(api, cli):
    api.on("GET", "/api/models", Reply(200, {"object": "list", "data": [MODEL]}))
    api.on("GET", "/api/deployments", Reply(200, {"object": "list", "data": [DEPLOYMENT]}))
    api.on("DELETE", f"/api/deployments/{DEP}", Reply(200, dict(DEPLOYMENT, status="stopped")))
    code, out, _ = cli("models", "list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["MODEL", "KIND", "BASE"]
    assert "llama-3-8b" in out and "8030261248" in out
    code, out, _ = cli("deployments", "list")
    assert code == 0 and DEP in out and "ready" in out
    code, out, _ = cli("deployments", "list", "--json")
    assert json.loads(out) == [DEPLOYMENT]
    code, out, _ = cli("deployments", "delete", DEP)
    assert code == 0 and json.loads(out)["status"] == "stopped"


def test_cli_jobs_metrics(api, cli):
    api.on("GET", f"/api/jobs/{JID}/metrics", Reply(200, {
        "object": "list", "data": [point(1, "c1", train_loss=2.5),
                                   point(2, "c2", valid_loss=2.25)],
        "has_more": False, "next_cursor": "c2", "job_status": "succeeded"}))
    code, out, _ = cli("jobs", "metrics", JID)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["STEP", "EPOCH", "ATTEMPT", "TRAIN_LOSS",
                                              "VALID_LOSS"]
    assert lines[1].split() == ["1", "-", "1", "2.5", "-"]
    frames = [f"id: c1\nevent: metric\ndata: {json.dumps(point(1, 'c1', train_loss=2.5))}\n\n"
              .encode(), b'event: end\ndata: {"job_id": "x", "status": "succeeded"}\n\n']
    api.on("GET", f"/api/jobs/{JID}/metrics", Reply(200, chunks=frames,
                                                    content_type="text/event-stream"))
    code, out, _ = cli("jobs", "metrics", JID, "--follow")
    assert code == 0 and json.loads(out)["values"] == {"train_loss": 2.5}


def test_cli_chat_streams_each_reply_and_keeps_the_conversation(api, cli):
    api.on("GET", f"/api/deployments/{DEP}", Reply(200, DEPLOYMENT))
    path = f"/api/deployments/{DEP}/v1/chat/completions"

    def reply(req):
        n = len(req.json()["messages"])
        text = f"reply to {n} messages"
        return Reply(200, chunks=[("data: " + json.dumps({"choices": [
            {"delta": {"content": text}}]}) + "\n\n").encode(), b"data: [DONE]\n\n"],
            content_type="text/event-stream")
    api.on("POST", path, reply)
    code, out, _ = cli("chat", DEP, "--system", "Be brief.", "--max-tokens", "16",
                       stdin="Hello\n\nAnd then?\n")
    assert code == 0, out
    assert out.splitlines() == ["reply to 2 messages", "reply to 4 messages"]
    second = api.calls("POST", path)[1].json()
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "user"]
    assert second["messages"][2]["content"] == "reply to 2 messages"
    assert second["max_tokens"] == 16 and second["stream"] is True


def test_cli_chat_unknown_deployment_exits_1(api, cli):
    api.on("GET", f"/api/deployments/{DEP}", error_reply(404, "not_found", "not found"))
    code, _, err = cli("chat", DEP, stdin="hi\n")
    assert code == 1 and "not found" in err
