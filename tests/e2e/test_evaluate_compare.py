"""evaluate through lm-evaluation-harness with compare_to, and train's early stopping
(issue 20 items 3 and 5): a model fine-tuned on one corpus domain beats its base on a
held-out sample of the same domain, in one evaluate job; compare_to resolves like
model_id (an account model becomes an input; an unknown one is a 422 naming it);
early_stopping_patience needs validation data."""
import json
import pathlib
import random
import sys
import uuid

import pytest
from test_data_plane import refused, run_ok, upload_ok

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "handlers"))
import _corpus  # noqa: E402

ML_TIMEOUT = 600


def corpus_jsonl(n, seed, domain="law"):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        q, a = _corpus.sample(rng, domain)
        lines.append(json.dumps({"instruction": q, "response": a}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def fine_tuned(api):
    """A LoRA fine-tune of llama-3-8b on law questions, registered under a fresh name, and
    a held-out law sample (other seeds)."""
    tag = uuid.uuid4().hex[:8]
    train = upload_ok(api, corpus_jsonl(96, 1), uri=f"s3://e2e-eval/{tag}/train.jsonl",
                      filename="train.jsonl")
    test = upload_ok(api, corpus_jsonl(24, 3), uri=f"s3://e2e-eval/{tag}/test.jsonl",
                     filename="test.jsonl")
    name = f"e2e-law-{tag}"
    done = run_ok(api, "train", {"model_id": "llama-3-8b", "dataset_uri": train["s3_uri"],
                                 "epochs": 2, "seed": 7, "max_seq_length": 96,
                                 "output_model": name}, timeout=ML_TIMEOUT)
    model = next(a for a in done["artifacts"] if a["kind"] == "model")
    yield {"name": name, "test": test["s3_uri"], "artifact": model}
    api.call("DELETE", f"/api/models/{name}", "/api/models/{model}")


def test_the_fine_tune_beats_its_base_in_one_job(api, events, fine_tuned):
    done = run_ok(api, "evaluate", {"model_id": fine_tuned["name"], "benchmark": "custom",
                                    "dataset_uri": fine_tuned["test"],
                                    "compare_to": "llama-3-8b"}, timeout=ML_TIMEOUT)
    res = done["result"]
    base = res["compare_to"]
    assert res["harness"].startswith("lm-evaluation-harness 0.4"), res
    assert res["model_source"] == "trained" and res["base_model"] == "llama-3-8b", res
    assert base["model"] == "llama-3-8b" and base["model_source"] == "stand_in", base
    for m in (res["metrics"], base["metrics"]):
        assert m["loss"]["samples"] == 24 and m["loss"]["stderr"] > 0, m
        assert m["perplexity"]["samples"] == 24, m
    assert res["perplexity"] < 0.8 * base["perplexity"], (res, base)
    assert res["delta"]["perplexity"] < 0 and res["delta"]["loss"] < 0, res
    # the account's model is an input (its artifact); the base is not
    dispatch = events.wait_for(done["job_id"], "forge.job.dispatch")[0]["data"]
    assert [i["param"] for i in dispatch["inputs"] if i["param"] != "dataset_uri"] == \
        ["model_id"], dispatch
    assert dispatch["models"]["compare_to"]["kind"] == "base", dispatch
    assert any(a["name"] == "eval.json" for a in done["artifacts"]), done


def test_compare_to_an_account_model_or_artifact(api, events, fine_tuned):
    done = run_ok(api, "evaluate", {"model_id": "llama-3-8b", "benchmark": "arc_easy",
                                    "compare_to": fine_tuned["name"]}, timeout=ML_TIMEOUT)
    res = done["result"]
    assert res["compare_to"]["model"] == fine_tuned["name"], res
    assert res["compare_to"]["model_source"] == "trained", res
    acc = res["compare_to"]["metrics"]["acc"]
    assert acc["samples"] == 10 and acc["stderr"] is not None, acc
    assert res["delta"]["acc"] == round(res["metrics"]["acc"]["value"] - acc["value"], 6)
    dispatch = events.wait_for(done["job_id"], "forge.job.dispatch")[0]["data"]
    inputs = {i["param"]: i for i in dispatch["inputs"]}
    assert set(inputs) == {"compare_to"}, dispatch
    assert inputs["compare_to"]["object_key"] == fine_tuned["artifact"]["object_key"]
    assert dispatch["models"]["compare_to"]["artifact_id"] == \
        fine_tuned["artifact"]["artifact_id"]
    # by artifact:// too
    uri = f"artifact://{fine_tuned['artifact']['artifact_id']}"
    done = run_ok(api, "evaluate", {"model_id": "llama-3-8b", "benchmark": "mmlu",
                                    "compare_to": uri}, timeout=ML_TIMEOUT)
    assert done["result"]["compare_to"]["model"] == uri
    assert "acc" in done["result"]["delta"], done["result"]


def test_bad_compare_to_is_refused(api, other_user_key, fine_tuned):
    base = {"model_id": "llama-3-8b", "benchmark": "mmlu"}
    refused(api.submit("evaluate", {**base, "compare_to": "no-such-model"}), "compare_to",
            "unknown model no-such-model")
    refused(api.submit("evaluate", {**base, "compare_to": "s3://b/k"}), "compare_to",
            "model name")
    refused(api.submit("evaluate", {**base, "compare_to": 7}), "compare_to", "")
    refused(api.submit("evaluate", {**base, "compare_to": "artifact://art_nope"}),
            "compare_to", "")
    # another tenant's model is unknown
    refused(api.submit("evaluate", {**base, "compare_to": fine_tuned["name"]},
                       key=other_user_key), "compare_to", f"unknown model {fine_tuned['name']}")


def test_early_stopping_needs_validation_data(api, seeded_object):
    body = {"model_id": "llama-3-8b", "dataset_uri": "s3://b/k",
            "early_stopping_patience": 2}
    refused(api.submit("train", body), "early_stopping_patience", "validation")
    refused(api.submit("train", {**body, "validation_split": 0}), "early_stopping_patience",
            "validation")
    refused(api.submit("train", {**body, "early_stopping_patience": 0,
                                 "validation_split": 0.2}), "early_stopping_patience", "")


def test_early_stopping_runs_through_the_stack(api):
    tag = uuid.uuid4().hex[:8]
    train = upload_ok(api, corpus_jsonl(16, 1), uri=f"s3://e2e-eval/{tag}/law.jsonl",
                      filename="law.jsonl")
    valid = upload_ok(api, corpus_jsonl(16, 2, "medicine"),
                      uri=f"s3://e2e-eval/{tag}/medicine.jsonl", filename="medicine.jsonl")
    done = run_ok(api, "train", {"model_id": "llama-3-8b", "dataset_uri": train["s3_uri"],
                                 "validation_uri": valid["s3_uri"], "epochs": 6, "seed": 7,
                                 "max_seq_length": 96, "batch_size": 4,
                                 "learning_rate": 0.03, "early_stopping_patience": 1,
                                 "output_model": f"e2e-es-{tag}"}, timeout=ML_TIMEOUT)
    res = done["result"]
    losses = res["loss_by_epoch"]["valid_loss"]
    assert res["stopped_early"] is True and res["epochs_run"] == len(losses) < 6, res
    assert res["best_valid_loss"] == min(losses) == losses[res["best_epoch"] - 1], res
    api.call("DELETE", f"/api/models/e2e-es-{tag}", "/api/models/{model}")
