"""Stand-in base models and benchmark data in the object store (issue 20 items 2 and 5):
`./forge up` uploaded each stand-in to models/base/<name>/ of the platform bucket and the
stack's catalogue (.forge/<profile>/models.json) names that prefix as its source; the
worker fetches a base from there into its store cache (emptied first here), train and
evaluate run on it and say where it came from. `./forge benchmarks import DIR` replaces a
benchmark's data in the store, and evaluate scores exactly what was imported."""
import json
import os
import pathlib
import shutil
import subprocess
import uuid

import pytest
from test_data_plane import run_ok, upload_ok
from test_resume import logs

ROOT = pathlib.Path(__file__).resolve().parents[2]
ML_TIMEOUT = 600
MMLU = {"question": "Which number is even?", "subject": "elementary_mathematics",
        "choices": ["3", "5", "8", "9"], "answer": 2}


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} not set (run through ./forge test)")
    return value


def forge(*args):
    """./forge on the test profile this suite runs against (FORGE_TEST_PORT_OFFSET, when
    the run set one, is inherited)."""
    return subprocess.run([str(ROOT / "forge"), "--profile", "test", *args],
                          capture_output=True, text=True, timeout=120)


def source_of(api, name):
    resp = api.call("GET", f"/api/models/{name}", "/api/models/{model}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_catalogue_names_the_stand_ins_in_the_store(api):
    bucket = env("NF_TEST_S3_BUCKET")
    state = pathlib.Path(env("NF_TEST_STATE_DIR"))
    for name in ("llama-3-8b", "mistral-7b"):
        m = source_of(api, name)
        assert m["source"] == f"s3://{bucket}/models/base/{name}/", m
        assert m["stand_in"] is True and m["kind"] == "base", m
        # the Hugging Face directory is there (versitygw's POSIX backend: one file each)
        held = state / "s3" / bucket / "models" / "base" / name
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            p.name for p in held.iterdir()}, sorted(held.iterdir())


def test_train_and_evaluate_run_on_the_stand_in_fetched_from_the_store(api):
    bucket = env("NF_TEST_S3_BUCKET")
    cache = pathlib.Path(env("NF_TEST_STATE_DIR")) / "worker-cache"
    shutil.rmtree(cache, ignore_errors=True)  # nothing cached: the worker must fetch it
    uri = f"s3://{bucket}/models/base/llama-3-8b/"
    tag = uuid.uuid4().hex[:8]
    rows = [json.dumps({"instruction": f"What is {i} plus {i}?",
                        "response": f"{i} plus {i} is {2 * i}."}) for i in range(24)]
    data = upload_ok(api, ("\n".join(rows) + "\n").encode(),
                     uri=f"s3://e2e-store/{tag}/train.jsonl", filename="train.jsonl")
    done = run_ok(api, "train", {"model_id": "llama-3-8b", "dataset_uri": data["s3_uri"],
                                 "epochs": 1, "max_seq_length": 64,
                                 "output_model": f"e2e-store-{tag}"}, timeout=ML_TIMEOUT)
    res = done["result"]
    assert res["base_source"] == uri and res["stand_in"] is True, res
    lines = logs(api, done["job_id"])
    assert any(f"base model model_id: fetched {uri} into the worker's cache" in x
               for x in lines), lines
    assert any(f"from {uri}" in x for x in lines), lines
    assert (cache / bucket / "models" / "base" / "llama-3-8b" / "config.json").is_file()

    done = run_ok(api, "evaluate", {"model_id": "llama-3-8b", "benchmark": "arc_easy"},
                  timeout=ML_TIMEOUT)
    res = done["result"]
    assert res["base_source"] == uri and res["stand_in"] is True, res
    assert res["model_source"] == "stand_in", res
    lines = logs(api, done["job_id"])
    assert any(f"base model model_id: {uri} is in the worker's cache" in x for x in lines), lines
    assert res["benchmark_data"] == {"source": "store",
                                     "uri": f"s3://{bucket}/benchmarks/arc_easy/"}, res
    api.call("DELETE", f"/api/models/e2e-store-{tag}", "/api/models/{model}")


def test_an_imported_benchmark_is_what_evaluate_scores(api, tmp_path):
    bucket = env("NF_TEST_S3_BUCKET")
    env("NF_TEST_API_URL")
    # a bad set is refused as a whole, naming the line
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mmlu.jsonl").write_text(json.dumps(MMLU) + "\n" +
                                    json.dumps({**MMLU, "answer": 7}) + "\n")
    run = forge("benchmarks", "import", str(bad))
    assert run.returncode != 0 and "mmlu.jsonl:2: answer must be the index" in run.stderr, run

    # three rows (the sample has twelve), in two files of a directory
    good = tmp_path / "good" / "mmlu"
    good.mkdir(parents=True)
    (good / "part-1.jsonl").write_text(json.dumps(MMLU) + "\n" + json.dumps(MMLU) + "\n")
    (good / "part-2.jsonl").write_text(json.dumps({**MMLU, "answer": 1}) + "\n")
    try:
        run = forge("benchmarks", "import", str(tmp_path / "good"))
        assert run.returncode == 0, run
        assert "mmlu: 3 rows in 2 file(s)" in run.stdout, run
        run = forge("benchmarks", "list")
        assert run.returncode == 0 and "(imported)" in run.stdout, run

        done = run_ok(api, "evaluate", {"model_id": "llama-3-8b", "benchmark": "mmlu"},
                      timeout=ML_TIMEOUT)
        res = done["result"]
        assert res["samples"] == 3 and res["metrics"]["acc"]["samples"] == 3, res
        assert res["benchmark_data"] == {"source": "store",
                                         "uri": f"s3://{bucket}/benchmarks/mmlu/"}, res
    finally:  # the bundled sample again, for whatever runs next
        back = tmp_path / "back"
        back.mkdir()
        shutil.copy(ROOT / "handlers" / "benchmarks" / "mmlu.jsonl", back / "mmlu.jsonl")
        run = forge("benchmarks", "import", str(back))
        assert run.returncode == 0, run
