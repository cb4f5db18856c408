"""Evaluating a running deployment (issue 20 item 5): evaluate(model_id="dep-...") and
compare_to a deployment score the model through its OpenAI-compatible API (echo +
logprobs on /v1/completions, handlers/_apilm.py) and give the same scores as evaluating
the same model by name; the tokens are the evaluation job's usage, not billed again on the
deployment; another tenant's deployment is unknown."""
import time

import pytest
from test_data_plane import refused, run_ok, wait_as
from test_deployments import ONE, deploy, deploy_usage, new_key

TOL = 1e-6


def usage_of(api, key, job_type):
    resp = api.call("GET", "/api/billing/summary", key=key)
    assert resp.status_code == 200, resp.text
    out = {}
    for jt in resp.json()["job_types"]:
        if jt["job_type"] == job_type:
            for line in jt["lines"]:
                out[line["meter"]] = out.get(line["meter"], 0) + line["quantity"]
    return out


def same_metrics(a, b):
    assert a.keys() == b.keys(), (a, b)
    for k in a:
        assert a[k]["samples"] == b[k]["samples"], (k, a[k], b[k])
        assert abs(a[k]["value"] - b[k]["value"]) <= TOL, (k, a[k], b[k])


@pytest.fixture(scope="module")
def owner():
    return new_key()


@pytest.fixture(scope="module")
def llama(api, owner):
    dep, job = deploy(api, owner, "llama-3-8b")
    yield dep
    api.call("DELETE", f"/api/deployments/{dep}", ONE, key=owner)


@pytest.mark.parametrize("bench", ["arc_easy", "hellaswag"])
def test_a_deployment_scores_like_the_model_by_name(api, owner, llama, bench):
    deadline = time.monotonic() + 60  # the deploy's smoke test is billed first
    while len(before := deploy_usage(api, owner)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    job = run_ok(api, "evaluate", {"model_id": llama, "benchmark": bench}, key=owner,
                 timeout=300)
    assert "127.0.0.1" not in str(job), "the job never shows the worker's URL"
    by_dep = job["result"]
    by_name = run_ok(api, "evaluate", {"model_id": "llama-3-8b", "benchmark": bench},
                     key=owner, timeout=300)["result"]
    assert by_dep["model_source"] == "deployment" and by_dep["base_model"] == "llama-3-8b"
    assert by_name["model_source"] == "stand_in"
    same_metrics(by_dep["metrics"], by_name["metrics"])
    assert by_dep["accuracy"] == pytest.approx(by_name["accuracy"], abs=TOL)
    # the tokens the deployment served for the evaluation are the evaluate job's usage;
    # the deployment's own bill does not count them again
    assert usage_of(api, owner, "evaluate").get("input_tokens", 0) > 0
    assert deploy_usage(api, owner) == before


def test_compare_to_a_deployment(api, owner, llama):
    res = run_ok(api, "evaluate", {"model_id": "llama-3-8b", "benchmark": "arc_easy",
                                   "compare_to": llama}, key=owner, timeout=300)["result"]
    assert res["compare_to"]["model"] == llama
    assert res["compare_to"]["model_source"] == "deployment"
    same_metrics(res["metrics"], res["compare_to"]["metrics"])
    assert all(abs(v) <= TOL for v in res["delta"].values()), res["delta"]


def test_another_tenants_deployment_is_unknown(api, owner, llama):
    other = new_key()
    refused(api.submit("evaluate", {"model_id": llama, "benchmark": "arc_easy"}, key=other),
            "model_id", "no such deployment")
    refused(api.submit("evaluate", {"model_id": "llama-3-8b", "benchmark": "arc_easy",
                                    "compare_to": llama}, key=other),
            "compare_to", "no such deployment")
    refused(api.submit("evaluate", {"model_id": "dep-000000000000", "benchmark": "arc_easy"},
                       key=owner), "model_id", "no such deployment")


def test_a_deployment_that_cannot_score_fails_the_job_clearly(api, owner):
    """A bigram deployment has no token log-probabilities: the job fails as the user's,
    naming model_id, instead of crashing inside lm-evaluation-harness."""
    dep, _ = deploy(api, owner, "tiny-bigram")
    try:
        resp = api.submit("evaluate", {"model_id": dep, "benchmark": "arc_easy"}, key=owner)
        assert resp.status_code == 202, resp.text
        done = wait_as(api, resp.json()["job_id"], owner, 240)
        assert done["status"] == "failed" and done["error"]["class"] == "user_error", done
        assert "cannot score prompts" in done["error"]["message"], done["error"]
        assert "params.model_id" in done["error"]["message"], done["error"]
    finally:
        api.call("DELETE", f"/api/deployments/{dep}", ONE, key=owner)
