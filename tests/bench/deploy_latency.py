#!/usr/bin/env python3
"""The gateway's added latency on a deployment request: the same small requests straight
to the endpoint and through /api/deployments/{id}/v1, in the same run, interleaved.

    ./forge bench deploy       (the running stack)
    python3 tests/bench/deploy_latency.py [--requests 300] [--model tiny-bigram]
                                          [--max-tokens 1]

Deploys MODEL (default tiny-bigram: a bigram model, whose answer takes well under a
millisecond, so the figures are the transport's), then sends N sequential
POST /v1/completions {"prompt", "max_tokens"} alternately to the endpoint (its worker-local
URL from the deployment registry, sched.deployments: users never see it) and through the gateway (API key, owner check, proxy, metering), each
over its own keep-alive session; prints p50/p90/p99 of both and the difference (goal: p50
added <= 2 ms), then stops the deployment.

Environment (./forge bench sets them): NF_API_URL, NF_API_KEY, NF_TEST_PG_DSN.
"""
import argparse
import os
import statistics
import sys
import time

import requests


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def endpoint_url(dep):
    """The endpoint's worker-local base URL, as the gateway finds it."""
    import subprocess

    out = subprocess.run(["psql", os.environ["NF_TEST_PG_DSN"], "-Atc",
                          "SELECT endpoint_url FROM sched.deployments"
                          f" WHERE deployment_id = '{dep}'"],
                         check=True, capture_output=True, text=True).stdout.strip()
    if not out.startswith("http://"):
        sys.exit(f"no endpoint recorded for {dep}")
    return out.rstrip("/")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--model", default="tiny-bigram")
    ap.add_argument("--max-tokens", type=int, default=1)
    args = ap.parse_args()
    api = os.environ.get("NF_API_URL", "http://127.0.0.1:8000").rstrip("/")
    key = os.environ.get("NF_API_KEY")
    if not key:
        sys.exit("NF_API_KEY is not set (./forge bench sets it)")
    gw = requests.Session()
    gw.headers["Authorization"] = f"Bearer {key}"

    resp = gw.post(f"{api}/api/jobs/deploy", json={"params": {"model_id": args.model}})
    resp.raise_for_status()
    job_id = resp.json()["job_id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = gw.get(f"{api}/api/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled", "dead_lettered"):
            break
        time.sleep(0.25)
    if job["status"] != "succeeded":
        sys.exit(f"deploy {job_id} did not succeed: {job.get('status')} {job.get('error')}")
    dep = job["result"]["deployment_id"]
    direct_url = endpoint_url(dep) + "/v1/completions"
    proxied_url = f"{api}/api/deployments/{dep}/v1/completions"
    body = {"prompt": "the catalyst", "max_tokens": args.max_tokens}
    direct = requests.Session()
    times = {"direct": [], "gateway": []}
    try:
        for _ in range(10):  # warm both paths (connections, caches)
            direct.post(direct_url, json=body).raise_for_status()
            gw.post(proxied_url, json=body).raise_for_status()
        for _ in range(args.requests):
            for name, sess, url in (("direct", direct, direct_url),
                                    ("gateway", gw, proxied_url)):
                t0 = time.perf_counter()
                r = sess.post(url, json=body)
                times[name].append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
    finally:
        gw.delete(f"{api}/api/deployments/{dep}")

    print(f"deployment {dep} ({args.model}), {args.requests} sequential requests each, "
          f"max_tokens={args.max_tokens}")
    print(f"{'':10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    for name, xs in times.items():
        print(f"{name:10}{pct(xs, 50):9.3f}{pct(xs, 90):9.3f}{pct(xs, 99):9.3f}"
              f"{statistics.mean(xs):9.3f}")
    added50 = pct(times["gateway"], 50) - pct(times["direct"], 50)
    added99 = pct(times["gateway"], 99) - pct(times["direct"], 99)
    print(f"gateway added: p50 {added50:.3f} ms, p99 {added99:.3f} ms "
          f"(goal p50 <= 2 ms: {'met' if added50 <= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
