"""The six reference handlers run as the worker agent runs them, on inputs named in the
job's "inputs" object: Parquet, JSONL and CSV datasets, generate's Parquet output, and a
train model.json fed to evaluate and deploy as artifact:// (handlers/README.md)."""
import hashlib
import os
import signal
import time

import pytest

from handlers_kit import RECORDS, pq


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- generate -------------------------------------------------------------------------

def test_generate_writes_parquet(handler):
    run = handler("generate", {"domain": "biology", "num_samples": 300, "seed": 5,
                               "format": "parquet"})
    assert run.rc == 0, run.stderr
    assert run.artifacts == [{"path": "samples.parquet", "kind": "dataset"}]
    assert run.result["format"] == "parquet" and run.result["num_samples"] == 300
    table = pq.read_table(str(run.out_dir / "samples.parquet"))
    assert table.num_rows == 300
    assert table.column_names == ["id", "domain", "model", "instruction", "response"]
    assert run.result["bytes"] == (run.out_dir / "samples.parquet").stat().st_size
    assert not list(run.out_dir.glob("*.tmp"))


def test_generate_formats_hold_the_same_samples_and_are_deterministic(handler):
    params = {"domain": "law", "num_samples": 40, "seed": 11}
    a = handler("generate", dict(params, format="parquet"))
    b = handler("generate", dict(params, format="parquet"), job_id="job_other")
    j = handler("generate", params)
    assert a.rc == b.rc == j.rc == 0
    assert sha256(a.out_dir / "samples.parquet") == sha256(b.out_dir / "samples.parquet")
    import json
    jsonl = [json.loads(x) for x in (j.out_dir / "samples.jsonl").read_text().splitlines()]
    assert pq.read_table(str(a.out_dir / "samples.parquet")).to_pylist() == jsonl
    assert a.of("usage") == j.of("usage")


def test_generate_refuses_other_formats(handler):
    run = handler("generate", {"domain": "law", "num_samples": 1, "format": "csv"})
    assert run.rc == 2 and "params.format" in run.stderr


# ---- audit, distill, train on every format --------------------------------------------

@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv", "tsv"])
def test_audit_reads_every_format(handler, datasets, fmt):
    uri = f"s3://bucket/data.{fmt}"
    run = handler("audit", {"dataset_uri": uri}, {"dataset_uri": datasets[fmt]})
    assert run.rc == 0, run.stderr
    assert run.result["rows"] == len(RECORDS) and run.result["malformed_lines"] == 0
    assert run.result["passed"] is True
    report = run.json("report.json")
    assert report["format"] == ("csv" if fmt == "tsv" else fmt)
    assert report["dataset_uri"] == uri


def test_audit_quotes_malformed_lines(handler, tmp_path):
    from handlers_kit import write_jsonl
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS[:2], extra_lines=["oops", "[1]"])
    run = handler("audit", {"dataset_uri": "artifact://art_1"}, {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    assert run.result["malformed_lines"] == 2 and run.result["passed"] is False
    assert run.json("report.json")["malformed_examples"] == [
        {"at": "line 3", "reason": "not JSON"}, {"at": "line 4", "reason": "not a JSON object"}]
    assert "line 3: not JSON" in run.of("log")


def test_audit_counts_parquet_nulls_as_empty_fields(handler, tmp_path):
    from handlers_kit import write_parquet
    path = write_parquet(tmp_path / "n.parquet",
                         [{"prompt": "a b", "answer": None}, {"prompt": "c d", "answer": "e"}])
    run = handler("audit", {"dataset_uri": "s3://b/n.parquet"}, {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    assert run.json("report.json")["empty_fields"] == {"answer": 1}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_train_reads_any_format(handler, datasets, fmt):
    run = handler("train", {"model_id": "tiny", "dataset_uri": "s3://bucket/train." + fmt,
                            "epochs": 2, "seed": 1}, {"dataset_uri": datasets[fmt]})
    assert run.rc == 0, run.stderr
    assert len(run.result["loss_history"]) == 2


def test_train_gives_the_same_model_from_parquet_and_jsonl(handler, datasets):
    runs = [handler("train", {"model_id": "tiny", "dataset_uri": "s3://b/t", "seed": 3},
                    {"dataset_uri": datasets[fmt]}) for fmt in ("parquet", "jsonl")]
    assert [r.rc for r in runs] == [0, 0]
    assert runs[0].json("model.json") == runs[1].json("model.json")


@pytest.mark.parametrize("job_type,params", [
    ("audit", {}),
    ("distill", {"teacher_model": "t", "student_model": "s"}),
    ("train", {"model_id": "m"}),
    ("evaluate", {"model_id": "m", "benchmark": "custom"}),
])
@pytest.mark.parametrize("uri,inputs,needle", [
    ("file:///etc/passwd", None, "file:// URIs are refused"),
    ("file:///etc/passwd", {"dataset_uri": "/etc/passwd"}, "file:// URIs are refused"),
    ("s3://bucket/data.parquet", None, "was not fetched"),
])
def test_dataset_params_without_a_fetched_input_exit_2(handler, job_type, params, uri,
                                                       inputs, needle):
    run = handler(job_type, dict(params, dataset_uri=uri), inputs)
    assert run.rc == 2, (run.stdout, run.stderr)
    assert "params.dataset_uri" in run.stderr and needle in run.stderr
    assert run.result is None and run.artifacts == []


def test_train_holds_out_a_validation_dataset(handler, datasets):
    run = handler("train", {"model_id": "tiny", "dataset_uri": "s3://bucket/train.parquet",
                            "validation_uri": "s3://bucket/valid.csv", "epochs": 1},
                  {"dataset_uri": datasets["parquet"], "validation_uri": datasets["csv"]})
    assert run.rc == 0, run.stderr
    assert f"{len(RECORDS)} training and {len(RECORDS)} held-out records" in " ".join(
        run.of("log"))
    missing = handler("train", {"model_id": "tiny", "dataset_uri": "s3://bucket/t.parquet",
                                "validation_uri": "s3://bucket/v.csv"},
                      {"dataset_uri": datasets["parquet"]})
    assert missing.rc == 2 and "params.validation_uri: s3://bucket/v.csv was not fetched" \
        in missing.stderr


# ---- train -> evaluate / deploy through artifact:// -----------------------------------

@pytest.fixture
def trained(handler, datasets):
    run = handler("train", {"model_id": "tiny", "dataset_uri": "s3://bucket/train.parquet",
                            "epochs": 2, "seed": 4}, {"dataset_uri": datasets["parquet"]})
    assert run.rc == 0, run.stderr
    assert run.artifacts == [{"path": "model.json", "kind": "model"}]
    # what the agent does with artifact://<model.json's id> for the next job
    fetched = run.out_dir.parent / "next-job" / "inputs" / "model_id"
    fetched.mkdir(parents=True)
    (fetched / "model.json").write_bytes((run.out_dir / "model.json").read_bytes())
    return fetched / "model.json"


def test_evaluate_scores_a_trained_model_by_artifact_uri(handler, trained, datasets):
    run = handler("evaluate", {"model_id": "artifact://art_model", "benchmark": "mmlu"},
                  {"model_id": trained})
    assert run.rc == 0, run.stderr
    assert run.result["model_source"] == "trained"
    # its scores as one live metric point at step 0 (forge.job.metric)
    points = run.of("metric")
    assert len(points) == 1 and points[0]["step"] == 0
    assert points[0]["mmlu/perplexity"] == run.result["perplexity"]
    custom = handler("evaluate", {"model_id": "artifact://art_model", "benchmark": "custom",
                                  "dataset_uri": "s3://bucket/eval.csv"},
                     {"model_id": trained, "dataset_uri": datasets["csv"]})
    assert custom.rc == 0, custom.stderr
    assert custom.result["items"] == len(RECORDS)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_distill_reads_prompts_from_any_format(handler, trained, datasets, fmt):
    run = handler("distill", {"teacher_model": "artifact://art_model",
                              "student_model": "tiny-bigram",
                              "dataset_uri": "s3://bucket/dataset." + fmt},
                  {"teacher_model": trained, "dataset_uri": datasets[fmt]})
    assert run.rc == 0, run.stderr
    assert run.result["prompts"] == len(RECORDS)
    assert {"path": "distilled.jsonl", "kind": "dataset"} in run.artifacts


def test_distill_from_a_trained_teacher_by_artifact_uri(handler, trained, datasets):
    """A train model.json as teacher (run here, greedy): the same answers every time; the
    student is trained by train; a student given as a URI is refused (exit 2)."""
    params = {"teacher_model": "artifact://art_model", "student_model": "tiny-bigram",
              "dataset_uri": "s3://bucket/dataset.parquet", "seed": 1}
    inputs = {"teacher_model": trained, "dataset_uri": datasets["parquet"]}
    runs = [handler("distill", params, inputs) for _ in range(2)]
    assert [r.rc for r in runs] == [0, 0], runs[0].stderr
    a, b = ((r.out_dir / "distilled.jsonl").read_text() for r in runs)
    assert a == b, "the same teacher answers the same prompts the same way"
    assert runs[0].result["teacher"]["kind"] == "local"
    assert {"path": "student/model.json", "kind": "model"} in runs[0].artifacts
    student = handler("distill", dict(params, student_model="artifact://art_s"), inputs)
    assert student.rc == 2 and "params.student_model" in student.stderr


def test_evaluate_keeps_the_baseline_for_a_bare_name(handler):
    run = handler("evaluate", {"model_id": "tiny-gpt", "benchmark": "hellaswag"})
    assert run.rc == 0, run.stderr
    assert run.result["model_source"] == "baseline"


@pytest.mark.parametrize("job_type", ["evaluate", "deploy"])
def test_a_model_uri_must_be_fetched_and_be_a_model(handler, datasets, job_type):
    params = {"model_id": "artifact://art_x", "benchmark": "mmlu"}
    if job_type == "deploy":
        params = {"model_id": "artifact://art_x"}
    missing = handler(job_type, params)
    assert missing.rc == 2 and "params.model_id: artifact://art_x was not fetched" \
        in missing.stderr
    wrong = handler(job_type, params, {"model_id": datasets["jsonl"]})
    assert wrong.rc == 2 and "is not a model written by train" in wrong.stderr
    refused = handler(job_type, dict(params, model_id="file:///etc/passwd"))
    assert refused.rc == 2 and "file:// URIs are refused" in refused.stderr


def stop_endpoint(run):
    pid_file = run.out_dir / "endpoint.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not pid_file.exists():
                break
            time.sleep(0.1)


def test_deploy_serves_a_trained_model_by_artifact_uri(handler, trained):
    run = handler("deploy", {"model_id": "artifact://art_model"}, {"model_id": trained})
    try:
        assert run.rc == 0, run.stderr
        assert run.result["model_source"] == "trained"
        manifest = run.json("deployment.json")
        assert manifest["model"] == "artifact://art_model"
        assert "endpoint_url" not in manifest and "pid" not in manifest, manifest
        assert run.result["internal"]["endpoint_url"].startswith("http://127.0.0.1:")
        assert manifest["smoke_test"]["completion"]
    finally:
        stop_endpoint(run)


def test_deploy_keeps_the_baseline_for_a_bare_name(handler):
    run = handler("deploy", {"model_id": "tiny-gpt"})
    try:
        assert run.rc == 0, run.stderr
        assert run.result["model_source"] == "baseline"
    finally:
        stop_endpoint(run)


def test_forge_metric_writes_only_what_the_agent_accepts(capsys):
    """_forge.metric: non-finite and non-number values are left out (the agent would skip
    the whole line), names are made well-formed, at most 32 values, nothing without one."""
    import json

    import _forge
    _forge.metric(3, epoch=0.5, train_loss=2.5, valid_loss=float("nan"), bad=None,
                  flag=True, **{"arc easy/acc,none": 0.25, "_lr": 1e-4})
    _forge.metric(4, loss=float("inf"))  # no value left: no line
    _forge.metric(5, **{f"m{i}": i for i in range(40)})
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"metric": {"step": 3, "epoch": 0.5, "train_loss": 2.5,
                                   "arc_easy/acc_none": 0.25, "lr": 0.0001}}
    assert len(lines) == 2 and len(lines[1]["metric"]) == 33  # step + 32 values
