"""train and evaluate on the PyTorch stand-ins (llama-3-8b, mistral-7b: handlers/_hf.py),
run as nf-worker runs them, on small JSONL and Parquet datasets of one corpus domain.

Margins stated here (CPU, float32, the pinned handlers/requirements-ml.txt): two LoRA epochs
lower the held-out loss by more than 0.3 nats/token (measured about 0.6 from 6.95), one
full epoch by more than 0.5 (measured about 1.0); a resumed run reproduces the
uninterrupted run bit for bit (losses and adapter bytes).
"""
import json
import math
import pathlib
import random
import shutil
import sys
import tarfile

import pytest
from handlers_kit import HANDLERS, run_handler, write_jsonl, write_parquet

sys.path.insert(0, str(HANDLERS))
import _corpus  # noqa: E402

# per handler run; generous: correctness tests that run on shared 2-core machines
TIMEOUT = 300


def corpus_rows(n, seed, domain="law"):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q, a = _corpus.sample(rng, domain)
        rows.append({"instruction": q, "response": a})
    return rows


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    """A shared stand-in cache, the datasets, and a runner with the cache in its env."""
    root = tmp_path_factory.mktemp("ml")
    data = root / "data"
    data.mkdir()
    files = {"train": write_jsonl(data / "train.jsonl", corpus_rows(128, 1)),
             "valid": write_parquet(data / "valid.parquet", corpus_rows(32, 2)),
             "test": write_jsonl(data / "test.jsonl", corpus_rows(32, 3))}
    env = {"NEXA_MODEL_CACHE": str(root / "models")}
    count = [0]

    def run(job_type, params, inputs=None, extra_env=None):
        count[0] += 1
        job = {"job_id": f"job_ml_{count[0]}", "job_type": job_type, "params": params,
               "attempt": 1, "inputs": {k: str(v) for k, v in (inputs or {}).items()}}
        return run_handler(job_type, job, root / f"out{count[0]}",
                           env={**env, **(extra_env or {})}, timeout=TIMEOUT)

    return {"run": run, "files": files, "root": root}


def train_job(ml, extra_env=None, **params):
    p = {"model_id": "llama-3-8b", "dataset_uri": "s3://b/train.jsonl",
         "validation_uri": "s3://b/valid.parquet", "epochs": 2, "seed": 7,
         "max_seq_length": 96, **params}
    return ml["run"]("train", p, {"dataset_uri": ml["files"]["train"],
                                  "validation_uri": ml["files"]["valid"]}, extra_env)


@pytest.fixture(scope="module")
def lora_run(ml):
    run = train_job(ml)
    assert run.rc == 0, run.stderr
    return run


def tar_names(path):
    with tarfile.open(path) as tar:
        return tar.getnames()


def tar_member(path, name):
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


def test_lora_lowers_the_validation_loss(lora_run):
    res = lora_run.result
    assert res["stand_in"] is True and res["method"] == "lora" and not res["merged"]
    assert res["architecture"] == "LlamaForCausalLM"
    assert res["real_parameters"] == 8_030_261_248
    assert 100_000 < res["parameters"] < 1_000_000
    assert 0 < res["trainable_parameters"] < res["parameters"] / 2
    assert res["valid_loss"] < res["valid_loss_before"] - 0.3, res
    assert len(res["loss_by_epoch"]["valid_loss"]) == 2
    # billed: every token processed (train x epochs + three validation passes)
    assert lora_run.of("usage") == [{"input_tokens": res["tokens_processed"]}]
    assert res["tokens_processed"] > 2 * res["tokens"]
    metrics = lora_run.of("metric")
    assert {"step", "epoch", "train_loss", "learning_rate", "tokens_per_s"} <= set(metrics[1])
    assert [m["valid_loss"] for m in metrics if m.get("valid_loss") is not None][1:] == \
        res["loss_by_epoch"]["valid_loss"]
    assert sum("epoch 2/2" in line for line in lora_run.of("log")) == 1
    kinds = {a["path"]: a["kind"] for a in lora_run.artifacts}
    assert kinds == {"checkpoint-epoch-1.tar": "checkpoint",
                     "checkpoint-epoch-2.tar": "checkpoint", "model.tar": "model",
                     "metrics.json": "metrics"}
    with tarfile.open(lora_run.out_dir / "model.tar") as tar:
        names = set(tar.getnames())
    assert {"adapter_config.json", "adapter_model.safetensors", "nexa.json",
            "tokenizer.json"} <= names
    assert "model.safetensors" not in names  # an adapter only (no merge)
    with tarfile.open(lora_run.out_dir / "checkpoint-epoch-1.tar") as tar:
        assert {"weights.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt",
                "trainer_state.json"} <= set(tar.getnames())


def test_full_training_of_mistral_lowers_the_validation_loss(ml):
    run = train_job(ml, model_id="mistral-7b", method="full", epochs=1, batch_size=16)
    assert run.rc == 0, run.stderr
    res = run.result
    assert res["architecture"] == "MistralForCausalLM" and res["merged"] is True
    assert res["real_parameters"] == 7_241_732_096
    assert res["trainable_parameters"] == res["parameters"]
    assert res["valid_loss"] < res["valid_loss_before"] - 0.5, res
    assert "model.safetensors" in tar_names(run.out_dir / "model.tar")


def test_a_resumed_run_continues_and_reaches_the_same_loss(ml, lora_run, tmp_path):
    resume = tmp_path / "resume"
    resume.mkdir()
    shutil.copy(lora_run.out_dir / "checkpoint-epoch-1.tar", resume)
    run = train_job(ml, extra_env={"NF_RESUME_DIR": str(resume)})  # the same job, resumed
    assert run.rc == 0, run.stderr
    res, full = run.result, lora_run.result
    assert res["resumed_from_epoch"] == 1
    steps = [m["step"] for m in run.of("metric")]
    assert min(steps) > full["steps"] // 2  # continued after epoch 1's last step
    assert res["steps"] == full["steps"]
    assert res["loss_by_epoch"] == full["loss_by_epoch"]  # bit-identical losses
    assert res["tokens_processed"] == full["tokens_processed"]
    assert [a["path"] for a in run.artifacts if a["kind"] == "checkpoint"] == \
        ["checkpoint-epoch-2.tar"]
    assert tar_member(run.out_dir / "model.tar", "adapter_model.safetensors") == \
        tar_member(lora_run.out_dir / "model.tar", "adapter_model.safetensors")


def test_each_checkpoint_is_announced_as_soon_as_it_is_written(lora_run):
    """The agent uploads a checkpoint during the run: its artifact line comes right after
    its epoch, before the next epoch's metrics."""
    kinds = [next(iter(line)) for line in lora_run.lines]
    first = next(i for i, line in enumerate(lora_run.lines)
                 if line.get("artifact", {}).get("path") == "checkpoint-epoch-1.tar")
    later = [line["metric"]["epoch"] for line in lora_run.lines[first:] if "metric" in line]
    assert later and min(later) > 1, later
    assert kinds.index("result") > first


def continue_job(ml, ckpt, **params):
    p = {"model_id": "llama-3-8b", "dataset_uri": "s3://b/train.jsonl",
         "validation_uri": "s3://b/valid.parquet", "epochs": 1, "seed": 7,
         "max_seq_length": 96, "from_checkpoint": "artifact://art_ck", **params}
    return ml["run"]("train", p, {"dataset_uri": ml["files"]["train"],
                                  "validation_uri": ml["files"]["valid"],
                                  "from_checkpoint": ckpt})


def test_from_checkpoint_continues_an_earlier_job(ml, lora_run):
    run = continue_job(ml, lora_run.out_dir / "checkpoint-epoch-2.tar")
    assert run.rc == 0, run.stderr
    res, prev = run.result, lora_run.result
    assert res["from_checkpoint"] == {"uri": "artifact://art_ck", "epoch": 2,
                                      "step": prev["steps"], "job_id": "job_ml_1"}
    # it starts where the earlier job ended, then runs its own epochs (numbered from 1)
    assert res["valid_loss_before"] == pytest.approx(prev["valid_loss"], abs=1e-5)
    assert res["epochs"] == 1 and len(res["loss_by_epoch"]["valid_loss"]) == 1
    assert res["valid_loss"] < prev["valid_loss_before"] - 0.3
    assert any("continuing from artifact://art_ck (epoch 2" in m for m in run.of("log"))


@pytest.mark.parametrize("params", [{"method": "full"}, {"model_id": "mistral-7b"},
                                    {"lora_r": 4}])
def test_from_checkpoint_of_another_model_or_method_is_refused(ml, lora_run, params):
    run = continue_job(ml, lora_run.out_dir / "checkpoint-epoch-1.tar", **params)
    assert run.rc == 2, run.stderr
    assert "params.from_checkpoint" in run.stderr


def test_from_checkpoint_that_is_not_a_checkpoint_is_refused(ml, lora_run):
    run = continue_job(ml, lora_run.out_dir / "model.tar")
    assert run.rc == 2 and "params.from_checkpoint" in run.stderr, run.stderr


def test_evaluate_the_trained_model_beats_the_base_on_held_out_data(ml, lora_run):
    """One job through lm-evaluation-harness: the trained model named by its account name
    (the gateway resolved it to its artifact: inputs.model_id) against compare_to, its
    base."""
    run = ml["run"]("evaluate", {"model_id": "my-model", "benchmark": "custom",
                                 "dataset_uri": "s3://b/test.jsonl", "compare_to": "llama-3-8b"},
                    {"dataset_uri": ml["files"]["test"],
                     "model_id": lora_run.out_dir / "model.tar"})
    assert run.rc == 0, run.stderr
    t = run.result
    b = t["compare_to"]
    assert t["model_source"] == "trained" and b["model_source"] == "stand_in"
    assert b["model"] == "llama-3-8b" and t["harness"].startswith("lm-evaluation-harness 0.4")
    assert t["metrics"]["loss"]["samples"] == 32 and t["metrics"]["loss"]["stderr"] > 0
    assert b["metrics"]["loss"]["samples"] == 32
    assert t["perplexity"] < 0.7 * b["perplexity"], (t, b)
    assert t["delta"]["perplexity"] == round(t["perplexity"] - b["perplexity"], 6) < 0
    assert t["delta"]["loss"] < 0
    report = run.json("eval.json")
    assert report["perplexity"] == t["perplexity"] and report["delta"] == t["delta"]
    usage = run.of("usage")[0]
    assert usage["input_tokens"] > 0 and usage.get("output_tokens", 0) == 0
    # the scores as one live metric point at step 0, the compared model's beside them
    [point] = run.of("metric")
    assert point["step"] == 0 and point["custom/perplexity"] == t["perplexity"], point
    assert point["compare_to/custom/perplexity"] == b["perplexity"], point


def test_custom_choice_and_text_rows(ml, tmp_path):
    rows = [{"question": "Which gas is a noble gas?", "choices": ["argon", "oxygen", "nitrogen"],
             "answer": "argon"},
            {"question": "What lowers the heart rate?", "choices": ["caffeine", "beta blockers"],
             "answer": 1},
            {"question": "Which is a data structure?", "choices": ["a hash map", "a catalyst"],
             "answer": "A"}] + corpus_rows(4, 9)
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    run = ml["run"]("evaluate", {"model_id": "mistral-7b", "benchmark": "custom",
                                 "dataset_uri": "s3://b/mixed.jsonl"}, {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    m = run.result["metrics"]
    assert m["acc"]["samples"] == 3 and m["acc_norm"]["samples"] == 3 and m["acc"]["stderr"] > 0
    assert m["loss"]["samples"] == 4 and m["perplexity"]["samples"] == 4
    assert m["perplexity"]["stderr"] is None  # lm_eval has none for a weighted perplexity
    assert run.result["samples"] == 7 and run.result["accuracy"] == m["acc"]["value"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [rows[0], {"question": "q", "choices": ["a", "b"],
                                                        "answer": 5}])
    run = ml["run"]("evaluate", {"model_id": "mistral-7b", "benchmark": "custom",
                                 "dataset_uri": "s3://b/bad.jsonl"}, {"dataset_uri": bad})
    assert run.rc == 2 and "params.dataset_uri: line 2: answer must be" in run.stderr


def test_compare_to_must_be_a_pytorch_model(ml):
    run = ml["run"]("evaluate", {"model_id": "llama-3-8b", "benchmark": "mmlu",
                                 "compare_to": "tiny-bigram"})
    assert run.rc == 2 and "params.compare_to: tiny-bigram is not a PyTorch model" in run.stderr


def test_early_stopping_keeps_the_best_epoch(ml, tmp_path):
    """Trained on law, validated on medicine: the held-out loss turns up after a few
    epochs; patience 1 stops there and the output is the best epoch's model."""
    train = write_jsonl(tmp_path / "law.jsonl", corpus_rows(16, 1, "law"))
    valid = write_jsonl(tmp_path / "medicine.jsonl", corpus_rows(16, 2, "medicine"))
    run = ml["run"]("train", {"model_id": "llama-3-8b", "dataset_uri": "s3://b/law.jsonl",
                              "validation_uri": "s3://b/medicine.jsonl", "epochs": 6, "seed": 7,
                              "max_seq_length": 96, "batch_size": 4, "learning_rate": 0.03,
                              "early_stopping_patience": 1},
                    {"dataset_uri": train, "validation_uri": valid})
    assert run.rc == 0, run.stderr
    res = run.result
    losses = res["loss_by_epoch"]["valid_loss"]
    assert res["stopped_early"] is True and res["early_stopping_patience"] == 1, res
    assert res["epochs_run"] == len(losses) < 6 and res["best_epoch"] == res["epochs_run"] - 1
    assert res["best_valid_loss"] == min(losses) == losses[res["best_epoch"] - 1] < losses[-1]
    assert [a["path"] for a in run.artifacts if a["kind"] == "checkpoint"] == \
        [f"checkpoint-epoch-{e}.tar" for e in range(1, res["epochs_run"] + 1)]
    # keep-best: the output adapter holds the best epoch's weights, not the last epoch's
    from safetensors.torch import load

    adapter = load(tar_member(run.out_dir / "model.tar", "adapter_model.safetensors"))

    def same(epoch):
        ckpt = load(tar_member(run.out_dir / f"checkpoint-epoch-{epoch}.tar",
                               "weights.safetensors"))
        ckpt = {k.replace(".default", ""): v for k, v in ckpt.items()}
        assert set(ckpt) == set(adapter)
        return all(ckpt[k].equal(adapter[k]) for k in adapter)

    assert same(res["best_epoch"]) and not same(res["epochs_run"])
    # and lm-evaluation-harness scores it as the trainer did: the best epoch's loss on the
    # validation rows (it also scores the newline ending each prompt: within 0.02)
    ev = ml["run"]("evaluate", {"model_id": "artifact://art_es", "benchmark": "custom",
                                "dataset_uri": "s3://b/medicine.jsonl"},
                   {"model_id": run.out_dir / "model.tar", "dataset_uri": valid})
    assert ev.rc == 0, ev.stderr
    assert abs(math.log(ev.result["perplexity"]) - res["best_valid_loss"]) < 0.02, \
        (ev.result, res)


def test_early_stopping_needs_validation_data(ml):
    run = ml["run"]("train", {"model_id": "llama-3-8b", "dataset_uri": "s3://b/train.jsonl",
                              "validation_split": 0, "early_stopping_patience": 2},
                    {"dataset_uri": ml["files"]["train"]})
    assert run.rc == 2 and "params.early_stopping_patience needs validation data" in run.stderr


@pytest.mark.parametrize("bench,metric,n", [("mmlu", "acc", 12), ("arc_easy", "acc", 10),
                                            ("hellaswag", "acc_norm", 10),
                                            ("gsm8k", "exact_match", 8)])
def test_benchmarks_report_stderr_and_samples(ml, bench, metric, n):
    if not _slow_ok():  # arc_easy runs in test_chat_and_prompt_completion_rows_train
        pytest.skip("set NEXA_TEST_ALL_BENCHMARKS=1 (keeps the suite short)")
    run = ml["run"]("evaluate", {"model_id": "mistral-7b", "benchmark": bench})
    assert run.rc == 0, run.stderr
    m = run.result["metrics"][metric]
    assert m["samples"] == n and m["stderr"] is not None and 0 <= m["value"] <= 1


def _slow_ok():
    import os
    return os.environ.get("NEXA_TEST_ALL_BENCHMARKS") == "1"


def test_a_malformed_row_is_named(ml, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", corpus_rows(4, 5), extra_lines=["{not json"])
    run = ml["run"]("train", {"model_id": "llama-3-8b", "dataset_uri": "s3://b/bad.jsonl"},
                    {"dataset_uri": bad})
    assert run.rc == 2 and "params.dataset_uri: line 5: not JSON" in run.stderr, run.stderr
    rows = corpus_rows(3, 6)
    rows[1] = {"instruction": "a question without its response", "response": None}
    bad_pq = write_parquet(tmp_path / "bad.parquet", rows)
    run = ml["run"]("train", {"model_id": "mistral-7b", "dataset_uri": "s3://b/bad.parquet"},
                    {"dataset_uri": bad_pq})
    assert run.rc == 2 and "params.dataset_uri: row 2: instruction and response" in \
        run.stderr, run.stderr


def test_chat_and_prompt_completion_rows_train(ml, tmp_path):
    rows = []
    for i, r in enumerate(corpus_rows(24, 8)):
        if i % 2:
            rows.append({"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": r["instruction"]},
                                      {"role": "assistant", "content": r["response"]}]})
        else:
            rows.append({"prompt": r["instruction"], "completion": r["response"]})
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    run = ml["run"]("train", {"model_id": "llama-3-8b", "dataset_uri": "s3://b/chat.jsonl",
                              "epochs": 1, "validation_split": 0.25, "merge": True,
                              "lora_r": 4, "train_on_inputs": True},
                    {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    res = run.result
    assert res["train_examples"] == 18 and res["valid_examples"] == 6 and res["merged"]
    assert "model.safetensors" in tar_names(run.out_dir / "model.tar")
    # a merged model evaluates without its base
    ev = ml["run"]("evaluate", {"model_id": "artifact://art_m", "benchmark": "arc_easy"},
                   {"model_id": run.out_dir / "model.tar"})
    assert ev.rc == 0 and ev.result["model_source"] == "trained", ev.stderr
    acc = ev.result["metrics"]["acc"]
    assert acc["samples"] == 10 and acc["stderr"] > 0 and ev.result["accuracy"] == acc["value"]


def test_stand_in_build_is_deterministic(tmp_path):
    import hashlib
    import subprocess

    # two builds (one process: importing torch twice would double the test's time)
    code = (f"import os, sys; sys.path.insert(0, {str(HANDLERS)!r}); import _hf\n"
            "for c in ('c0', 'c1'):\n"
            f"    os.environ['NEXA_MODEL_CACHE'] = os.path.join({str(tmp_path)!r}, c)\n"
            "    print(_hf.stand_in_dir('llama-3-8b'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                         timeout=TIMEOUT, check=True)
    dirs = [line for line in out.stdout.splitlines() if not line.startswith("{")]
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    digests = [{n: hashlib.sha256(pathlib.Path(d, n).read_bytes()).hexdigest()
                for n in ("model.safetensors", "tokenizer.json", "config.json")} for d in dirs]
    assert digests[0] == digests[1]
    assert json.loads(pathlib.Path(dirs[0], "nexa.json").read_text())["stand_in"] is True


def test_deploy_serves_the_trained_model_with_transformers(ml, lora_run):
    """The endpoint runs while the test's process (the handler's parent: the 'agent' it
    watches) lives; it answers /v1/completions with tokens counted by the tokenizer."""
    import os
    import signal
    import time
    import urllib.request

    run = ml["run"]("deploy", {"model_id": "artifact://art_model"},
                    {"model_id": lora_run.out_dir / "model.tar"})
    pid_file = run.out_dir / "endpoint.pid"
    try:
        assert run.rc == 0, run.stderr
        assert run.result["model_source"] == "trained"
        smoke = run.json("deployment.json")["smoke_test"]
        assert smoke["usage"]["prompt_tokens"] > 0 and smoke["usage"]["completion_tokens"] > 0
        body = json.dumps({"prompt": "### User:\nWhat limits liability?\n### Assistant:\n",
                           "max_tokens": 8}).encode()
        req = urllib.request.Request(run.result["internal"]["endpoint_url"] + "/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            out = json.loads(resp.read())
        assert out["model"] == "artifact://art_model"
        assert 1 <= out["usage"]["completion_tokens"] <= 8
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            for _ in range(50):
                if not pid_file.exists():
                    break
                time.sleep(0.1)
