"""A serving deployment's GPU time is metered (issue 20 item 6; services/worker/serving.c).

A deploy job succeeds once its endpoint answers, and the endpoint then serves after the
job is terminal. The worker that serves it meters gpu_ms (window x the job's gpu_count) in
windows of NF_WORKER_DEPLOY_METER_S on the deploy job (data.deployment_id, data.worker_id,
no attempt) until the endpoint stops. Here an agent of our own (test_workers.Fleet) runs
with 2 s windows (the stack's worker keeps the 60 s default): the account's deploy gpu_ms
grows by about a window every 2 s while the endpoint serves, stops growing after
DELETE /api/deployments/{id}, and adds up to about the time it served.
"""
import json
import pathlib
import shutil
import tempfile
import time

import pytest
from test_data_plane import wait_as
from test_deployments import ONE, deploy_usage, new_key
from test_workers import Fleet, wait

WINDOW_S = 2


@pytest.fixture
def fleet():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nf-meter-"))
    f = Fleet(tmp)
    yield f
    bad = f.close()
    shutil.rmtree(tmp, ignore_errors=True)
    assert not bad, "agents did not stop cleanly:\n" + "\n".join(bad)


def gpu_ms(api, key):
    return deploy_usage(api, key).get("gpu_ms", 0)


def test_a_serving_deployment_is_metered_until_it_is_deleted(api, fleet):
    agent = fleet.start("meter", labels={"region": "us-east-1"},
                        extra={"NF_WORKER_DEPLOY_METER_S": str(WINDOW_S)})
    key = new_key()
    resp = api.submit("deploy", {"model_id": "llama-3-8b", "labels": {"pool": fleet.pool}},
                      key=key)
    assert resp.status_code == 202, resp.text
    job = wait_as(api, resp.json()["job_id"], key, 240)
    assert job["status"] == "succeeded", job
    dep = job["result"]["deployment_id"]
    served_from = time.time()
    # the attempt's own usage (its windows and the final one), then the serving windows
    first = wait(lambda: gpu_ms(api, key), 30, "the deploy attempt's gpu_ms")
    grown = wait(lambda: (q := gpu_ms(api, key)) >= first + 2 * WINDOW_S * 1000 and q, 40,
                 "two serving windows billed on the deploy job", step=0.5)
    print(f"deploy gpu_ms: attempt {first}, after two serving windows {grown}")

    resp = api.call("DELETE", f"/api/deployments/{dep}", ONE, key=key)
    assert resp.status_code == 200, resp.text
    stopped_at = time.time()
    log = agent.log
    wait(lambda: "deployment_meter_stopped" in log.read_text(), 15,
         "the agent to see the endpoint stop")
    time.sleep(3)  # billing's batch linger and the last window's delivery
    final = gpu_ms(api, key)
    time.sleep(3 * WINDOW_S)
    assert gpu_ms(api, key) == final, "no window after the endpoint stopped"
    served = final - first
    elapsed_ms = (stopped_at - served_from) * 1000
    print(f"served gpu_ms {served} for {elapsed_ms:.0f} ms between success and DELETE")
    # the job's gpu_count is 1: serving time x 1, metered from the handler's exit (before
    # the test saw the success) to when the agent saw the endpoint gone (within a second)
    assert elapsed_ms - 1000 <= served <= elapsed_ms + 5000

    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    started = [x for x in lines if x.get("event") == "deployment_meter_started"]
    assert started and started[0]["deployment_id"] == dep and started[0]["window_s"] == "2"
    ended = [x for x in lines if x.get("event") == "deployment_meter_stopped"]
    assert ended and int(ended[0]["usage_events"]) >= 2
    # the job's cost follows its usage after the job is terminal
    def cost():
        return float(api.call("GET", f"/api/jobs/{job['job_id']}", "/api/jobs/{job_id}",
                              key=key).json()["cost_usd"])

    wait(lambda: cost() >= final / 3_600_000 * 2.5 - 0.000002, 15,
         "the deploy job's cost to include its serving GPU time", step=0.5)
