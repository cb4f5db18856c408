"""The nexa-forge command line against the fake server: what it sends, prints and exits."""
import json
import subprocess
import sys
import pathlib

import pytest

from nexa_forge.cli import main

from fake_api import Reply, error_reply, job

JID = "job_01HZZZZZZZZZZZZZZZZZZZZZZZ"


@pytest.fixture
def cli(api, monkeypatch, capsys):
    monkeypatch.setenv("NEXA_API_KEY", "nexa_cli_key")
    monkeypatch.setenv("NEXA_API_URL", api.url)

    def run(*argv):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_submit_generate_and_wait(api, cli):
    api.on("POST", "/api/jobs/generate", Reply(202, job()))
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running", progress=0.5)),
           Reply(200, job(status="succeeded", progress=1, result={"num_samples": 100})))
    code, out, err = cli("jobs", "submit", "generate", "--domain", "biology",
                         "--num-samples", "100", "--wait", "--poll-interval", "0.01")
    assert code == 0, err
    assert json.loads(out)["result"] == {"num_samples": 100}
    assert f"submitted {JID}" in err and "running 50%" in err and "succeeded 100%" in err
    [submit] = api.calls("POST")
    assert submit.json() == {"params": {"domain": "biology", "num_samples": 100}}
    assert submit.header("X-Nexa-Api-Key") == "nexa_cli_key"
    assert submit.header("Idempotency-Key")


def test_submit_with_common_options_and_extra_params(api, cli):
    api.on("POST", "/api/jobs/train", Reply(202, job(job_type="train")))
    code, out, err = cli("jobs", "submit", "train", "--model-id", "tiny", "--dataset-uri",
                         "s3://b/k", "--lora", "--epochs", "2", "--param", "warmup=0.1",
                         "--param", "note=hi", "--metadata", "team=bio", "--label", "zone=eu",
                         "--priority", "7", "--idempotency-key", "abc")
    assert code == 0, err
    assert json.loads(out)["job_type"] == "train"
    req = api.calls()[0]
    assert req.json() == {"params": {"model_id": "tiny", "dataset_uri": "s3://b/k",
                                     "epochs": 2, "lora": True, "warmup": 0.1, "note": "hi"},
                          "metadata": {"team": "bio"}, "labels": {"zone": "eu"},
                          "priority": 7}
    assert req.header("Idempotency-Key") == "abc"


def test_submit_failing_job_with_wait_exits_1(api, cli):
    api.on("POST", "/api/jobs/deploy", Reply(202, job(job_type="deploy")))
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="failed", error={
        "code": "boom", "message": "handler crashed", "class": "user_error"})))
    code, out, err = cli("jobs", "submit", "deploy", "--model-id", "m", "--wait")
    assert code == 1
    assert json.loads(out)["status"] == "failed"
    assert "handler crashed" in err


def test_missing_required_param_is_a_usage_error(cli):
    with pytest.raises(SystemExit) as info:
        cli("jobs", "submit", "generate", "--domain", "biology")
    assert info.value.code == 2


def test_server_validation_error_exits_1_with_the_message(api, cli):
    api.on("POST", "/api/jobs/generate",
           error_reply(422, "invalid_params", "num_samples must be 1..1000000", "num_samples"))
    code, out, err = cli("jobs", "submit", "generate", "--domain", "b", "--num-samples", "0")
    assert code == 1 and out == ""
    assert "num_samples must be 1..1000000" in err and "param=num_samples" in err


def test_jobs_list_table_and_json(api, cli):
    api.on("GET", "/api/jobs/", Reply(200, {"data": [job(status="running", progress=0.25)],
                                            "has_more": True, "next_cursor": "c1"}))
    code, out, err = cli("jobs", "list", "--status", "running")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["JOB_ID", "TYPE", "STATUS"]
    assert JID in lines[1] and "running" in lines[1] and "0.25" in lines[1]
    assert "--cursor c1" in err
    code, out, _ = cli("--json", "jobs", "list")
    assert json.loads(out)["next_cursor"] == "c1"
    code, out, _ = cli("jobs", "list", "--json")
    assert json.loads(out)["next_cursor"] == "c1"


def test_jobs_list_all_pages(api, cli):
    api.on("GET", "/api/jobs/", lambda req: Reply(200, (
        {"data": [job("job_a")], "has_more": True, "next_cursor": "c1"}
        if not req.query.get("cursor") else
        {"data": [job("job_b")], "has_more": False, "next_cursor": None})))
    code, out, _ = cli("jobs", "list", "--all", "--json")
    assert [j["job_id"] for j in json.loads(out)["data"]] == ["job_a", "job_b"]


def test_jobs_get_cancel_and_events(api, cli):
    api.on("GET", f"/api/jobs/{JID}", Reply(200, job(status="running")))
    api.on("POST", f"/api/jobs/{JID}/cancel", Reply(200, job(status="cancel_requested")))
    api.on("GET", f"/api/jobs/{JID}/events",
           Reply(200, {"data": [{"type": "forge.job.queued"}], "has_more": False}))
    assert json.loads(cli("jobs", "get", JID)[1])["status"] == "running"
    assert json.loads(cli("jobs", "cancel", JID)[1])["status"] == "cancel_requested"
    code, out, _ = cli("jobs", "events", JID)
    assert [json.loads(line) for line in out.splitlines()] == [{"type": "forge.job.queued"}]


def test_keys_create_list_revoke(api, cli):
    api.on("POST", "/api/auth/api-keys", Reply(201, {"key_id": "key_1", "api_key": "nexa_new",
                                                     "prefix": "nexa_new"}))
    api.on("GET", "/api/auth/api-keys", Reply(200, {"data": [
        {"key_id": "key_1", "prefix": "nexa_new1234", "name": "laptop", "status": "active",
         "created_at": "2025-01-01T00:00:00.000Z", "last_used_at": None,
         "expires_at": None}]}))
    api.on("DELETE", "/api/auth/api-keys/key_1", Reply(204))
    code, out, err = cli("keys", "create", "laptop", "--expires-in-days", "30")
    assert code == 0 and json.loads(out)["api_key"] == "nexa_new"
    assert "shown only this once" in err
    assert api.calls()[0].json() == {"name": "laptop", "expires_in_days": 30}
    code, out, _ = cli("keys", "list")
    assert "laptop" in out and "active" in out and "nexa_new" not in out.replace(
        "nexa_new1234", "")
    code, _, err = cli("keys", "revoke", "key_1")
    assert code == 0 and "revoked key_1" in err


def test_billing_defaults_to_the_summary(api, cli):
    api.on("GET", "/api/billing/summary", Reply(200, {"total_usd": "0.010000"}))
    api.on("GET", "/api/billing/usage", Reply(200, {"points": []}))
    api.on("GET", "/api/billing/budget", Reply(200, {"monthly_limit_usd": None}))
    assert json.loads(cli("billing")[1]) == {"total_usd": "0.010000"}
    cli("billing", "--period-start", "2025-01-01T00:00:00Z")
    assert api.calls()[-1].query == {"period_start": ["2025-01-01T00:00:00Z"]}
    assert json.loads(cli("billing", "usage", "--bucket", "day")[1]) == {"points": []}
    assert api.calls()[-1].query == {"bucket": ["day"]}
    assert json.loads(cli("billing", "budget")[1]) == {"monthly_limit_usd": None}


def test_workers_and_artifacts(api, cli, tmp_path):
    api.on("GET", "/api/workers/", Reply(200, {"data": [
        {"worker_id": "wrk_1", "hostname": "gpu-1", "status": "busy", "gpu_type": None,
         "gpu_count": 0, "current_jobs": [JID], "last_heartbeat_at": None}]}))
    api.on("GET", "/api/artifacts", Reply(200, {"data": [{"artifact_id": "art_1",
                                                           "job_id": JID, "name": "a.jsonl",
                                                           "kind": "dataset", "bytes": 3}]}))
    api.on("GET", "/api/artifacts/art_1/content", Reply(200, b"abc"))
    code, out, _ = cli("workers")
    assert "gpu-1" in out and "busy" in out and JID in out
    code, out, _ = cli("artifacts", "list", "--job", JID)
    assert "a.jsonl" in out
    code, out, _ = cli("artifacts", "download", "art_1", str(tmp_path / "a.bin"))
    assert code == 0 and (tmp_path / "a.bin").read_bytes() == b"abc"


def test_missing_key_exits_1_without_a_request(api, cli, monkeypatch):
    monkeypatch.delenv("NEXA_API_KEY")
    code, out, err = cli("jobs", "list")
    assert code == 1 and "no API key" in err
    assert api.calls() == []


def test_no_command_prints_help(cli):
    code, out, err = cli()
    assert code == 2 and "usage: nexa-forge" in err
    code, out, err = cli("jobs")
    assert code == 2 and "submit" in err


def test_python_dash_m_runs_the_cli():
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "nexa_forge", "--version"], cwd=str(root),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("nexa-forge ")
