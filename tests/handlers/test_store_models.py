"""Base models and benchmark data from the object store, as the handlers see them: the
worker fetched the catalogue's s3:// prefix into its cache and names the directory in the
job JSON (models.<param>.local_dir; benchmark_data {name, uri, dir}: services/worker/
storecache.c). A base that is any Hugging Face directory (no nexa.json: not one of our
stand-ins) trains and evaluates like a stand-in; a stand-in from the store still says
stand_in; benchmark data from the store wins over the bundled sample, which is the
fallback (and says so). Also the benchmark formats `./forge benchmarks import` checks.
"""
import json
import shutil
import sys

import pytest
from handlers_kit import HANDLERS, run_handler, write_jsonl

sys.path.insert(0, str(HANDLERS))
import _benchmarks  # noqa: E402

TIMEOUT = 300
MMLU_ROW = {"question": "2 + 2 =", "subject": "elementary_mathematics",
            "choices": ["3", "4", "5", "6"], "answer": 1}


# ---- the benchmark formats ------------------------------------------------------------


def test_bundled_samples_are_valid():
    found, errors = _benchmarks.plan(str(HANDLERS / "benchmarks"))
    assert errors == [] and sorted(found) == sorted(_benchmarks.NAMES)
    for name, files in found.items():
        rows, errs = _benchmarks.check_file(name, files[0])
        assert errs == [] and rows >= 8, (name, errs)


@pytest.mark.parametrize("name,row,why", [
    ("mmlu", {**MMLU_ROW, "choices": ["a", "b"]}, "choices must be a list of 4 strings"),
    ("mmlu", {**MMLU_ROW, "answer": 4}, "answer must be the index"),
    ("mmlu", {k: v for k, v in MMLU_ROW.items() if k != "subject"}, "subject must be"),
    ("hellaswag", {"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["1", "2"],
                   "label": "2"}, "label must be the index"),
    ("arc_easy", {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                  "answerKey": "C"}, "answerKey must be one of choices.label"),
    ("gsm8k", {"question": "q", "answer": "4"}, "#### <number>"),
    ("gsm8k", [1, 2], "not a JSON object"),
])
def test_bad_rows_say_why(name, row, why):
    assert why in _benchmarks.check_row(name, row)


def test_import_plan_names_the_bad_line(tmp_path):
    (tmp_path / "mmlu").mkdir()
    write_jsonl(tmp_path / "mmlu" / "part-1.jsonl", [MMLU_ROW], extra_lines=["{not json"])
    write_jsonl(tmp_path / "mmlu_pro.jsonl", [MMLU_ROW])
    found, errors = _benchmarks.plan(str(tmp_path))
    assert any("unknown benchmark 'mmlu_pro'" in e for e in errors)
    rows, errs = _benchmarks.check_file("mmlu", found["mmlu"][0])
    assert rows == 1 and len(errs) == 1 and "part-1.jsonl:2: not JSON" in errs[0]


def test_data_for_prefers_the_store_and_falls_back_saying_why(tmp_path):
    store = tmp_path / "cache" / "benchmarks" / "mmlu"
    job = {"benchmark_data": {"name": "mmlu", "uri": "s3://b/benchmarks/mmlu/",
                              "dir": str(store)}}
    files, where = _benchmarks.data_for(job, "mmlu")  # the store has none: no dir
    assert where["source"] == "bundled" and "no data under s3://b/benchmarks/mmlu/" in \
        where["note"] and files == [str(HANDLERS / "benchmarks" / "mmlu.jsonl")]
    store.mkdir(parents=True)
    write_jsonl(store / "b.jsonl", [MMLU_ROW])
    write_jsonl(store / "a.jsonl", [MMLU_ROW])
    files, where = _benchmarks.data_for(job, "mmlu")
    assert where == {"source": "store", "uri": "s3://b/benchmarks/mmlu/"}
    assert [f.rsplit("/", 1)[1] for f in files] == ["a.jsonl", "b.jsonl"]


# ---- models from the store ------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A worker's store cache as storecache.c leaves it: a site's Hugging Face directory
    (the llama stand-in's files without our nexa.json, so nothing marks it as ours) and a
    stand-in's copy; plus a runner."""
    root = tmp_path_factory.mktemp("store")
    env = {"NEXA_MODEL_CACHE": str(root / "models")}
    sys_path = str(HANDLERS)
    code = ("import sys; sys.path.insert(0, %r); import _hf; "
            "print(_hf.stand_in_dir('llama-3-8b'))" % sys_path)
    import subprocess

    built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, **env}, check=True)
    src = built.stdout.strip().splitlines()[-1]
    site = root / "cache" / "nexa-forge" / "weights" / "site-llama"
    shutil.copytree(src, site)
    (site / "nexa.json").unlink()
    copy = root / "cache" / "nexa-forge" / "models" / "base" / "llama-3-8b"
    shutil.copytree(src, copy)
    data = root / "data"
    data.mkdir()
    train = write_jsonl(data / "train.jsonl", [
        {"instruction": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}."}
        for i in range(24)])
    count = [0]

    def run(job_type, params, models, inputs=None, **fields):
        count[0] += 1
        job = {"job_id": f"job_st_{count[0]}", "job_type": job_type, "params": params,
               "attempt": 1, "models": models,
               "inputs": {k: str(v) for k, v in (inputs or {}).items()}, **fields}
        return run_handler(job_type, job, root / f"out{count[0]}", env=env, timeout=TIMEOUT)

    return {"run": run, "site": site, "copy": copy, "train": train, "root": root}


def base(name, uri, local_dir, stand_in, parameters=None):
    return {"id": name, "object": "model", "kind": "base", "source": uri,
            "stand_in": stand_in, "parameters": parameters, "local_dir": str(local_dir)}


def test_train_and_evaluate_a_site_model_from_the_store(store, tmp_path):
    uri = "s3://nexa-forge/weights/site-llama/"
    models = {"model_id": base("site-llama", uri, store["site"], False, 8030261248)}
    run = store["run"]("train", {"model_id": "site-llama", "dataset_uri": "s3://b/t.jsonl",
                                 "epochs": 1, "max_seq_length": 64, "merge": True},
                       models, {"dataset_uri": store["train"]})
    assert run.rc == 0, run.stderr
    r = run.result
    assert r["stand_in"] is False and r["base_source"] == uri
    assert r["architecture"] == "LlamaForCausalLM" and r["parameters"] > 100_000
    assert r["real_parameters"] == 8030261248
    assert any(f"from {uri}" in line for line in run.of("log"))
    with __import__("tarfile").open(run.out_dir / "model.tar") as tar:
        meta = json.load(tar.extractfile("nexa.json"))
    assert meta["stand_in"] is False and meta["base_source"] == uri

    # evaluate the same base on a benchmark the worker fetched from the store (3 rows
    # in two files, changed from the sample: the count shows which data was used)
    bench = tmp_path / "cache" / "benchmarks" / "mmlu"
    bench.mkdir(parents=True)
    write_jsonl(bench / "part-1.jsonl", [MMLU_ROW, MMLU_ROW])
    write_jsonl(bench / "part-2.jsonl", [{**MMLU_ROW, "answer": 2}])
    bd = {"name": "mmlu", "uri": "s3://nexa-forge/benchmarks/mmlu/", "dir": str(bench)}
    run = store["run"]("evaluate", {"model_id": "site-llama", "benchmark": "mmlu"}, models,
                       benchmark_data=bd)
    assert run.rc == 0, run.stderr
    r = run.result
    assert r["samples"] == 3 and r["metrics"]["acc"]["samples"] == 3
    assert r["benchmark_data"] == {"source": "store", "uri": bd["uri"]}
    assert r["model_source"] == "base" and r["stand_in"] is False and r["base_source"] == uri


def test_a_stand_in_from_the_store_still_says_stand_in(store):
    uri = "s3://nexa-forge/models/base/llama-3-8b/"
    models = {"model_id": base("llama-3-8b", uri, store["copy"], True, 8030261248)}
    bd = {"name": "gsm8k", "uri": "s3://nexa-forge/benchmarks/gsm8k/",
          "dir": str(store["root"] / "nothing-here")}
    run = store["run"]("evaluate", {"model_id": "llama-3-8b", "benchmark": "gsm8k"}, models,
                       benchmark_data=bd)
    assert run.rc == 0, run.stderr
    r = run.result
    assert r["stand_in"] is True and r["model_source"] == "stand_in" and r["base_source"] == uri
    assert r["benchmark_data"]["source"] == "bundled"
    assert "no data under s3://nexa-forge/benchmarks/gsm8k/" in r["benchmark_data"]["note"]
    assert r["samples"] == 8


def test_a_fetched_dir_that_is_no_model_is_the_operators_fault(store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    models = {"model_id": base("broken", "s3://nexa-forge/weights/broken/", empty, False)}
    run = store["run"]("train", {"model_id": "broken", "dataset_uri": "s3://b/t.jsonl",
                                 "epochs": 1}, models, {"dataset_uri": store["train"]})
    assert run.rc == 75, run.stderr  # retryable (infra): not the user's fault
    assert "no config.json" in run.stderr or any("no config.json" in str(x) for x in run.lines)


def test_deploy_serves_a_site_model_from_the_store(store):
    """deploy's server (_serve.TextGenerator) on a fetched directory without nexa.json."""
    import _serve

    gen = _serve.TextGenerator(hf_dir=str(store["site"]))
    prompt = gen.prompt_of([{"role": "user", "content": "what is 2 plus 2"}])
    text, reason, n_in, n_out = gen.complete(prompt, 5, 0.0, None)
    assert n_in > 0 and 1 <= n_out <= 5 and isinstance(text, str)
