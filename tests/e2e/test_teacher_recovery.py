"""A teacher that fails, and a worker that dies mid-collection: distill jobs recover
(issue 21) on the real test stack.

The teacher is the stack's own gpt-4 stand-in (deploy/local/providers.sh: a real
OpenAI-compatible server behind a generated key), reached through a small proxy this
test runs and controls (TeacherProxy): it counts every request, answers 503 (with
Retry-After, and the caller's Authorization header echoed in the error text, which the
handler must scrub) to the first N of them, or holds the requests after the first N
until the test lets them go; every other request is passed to the stand-in unchanged,
key included.

The jobs run on agents the test starts itself (test_workers.Fleet: a private `pool`
label, so the stack's worker never takes them), whose handlers read a providers file the
test writes: the catalogue's gpt-4 is provider:openai/gpt-4, and this file's `openai`
points at the proxy. Nothing of the stack is reconfigured: NF_PROVIDERS_FILE and the key
variable reach the handlers through NF_WORKER_HANDLER_ENV, as on the stack's worker.

- 503 for a while: attempt 1's one teacher call (concurrency 1) is retried within the
  attempt max_retries times, then the handler exits 75: the attempt fails as `infra`, the
  scheduler retries it, attempt 2's first call meets one more 503, retries it, and the job
  succeeds on attempt 2 having asked the teacher once per prompt.
- SIGKILL mid-collection: the proxy answers the first CKPT prompts (the collection
  checkpoints every CKPT answers) and holds the next ones; once that checkpoint is
  recorded the test SIGKILLs the agent and its handler (by pid, never by a name pattern)
  and starts another agent. The retried attempt resumes the collection from the
  checkpoint: over the whole job the teacher answers exactly one request per prompt, and
  receives besides only the requests in flight (held) at the kill, at most `concurrency`.

The student is the tiny bigram model (seconds to train): what is tested is collection.
"""
import json
import os
import pathlib
import random
import shutil
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT
from test_data_plane import upload_ok
from test_data_work import provider_key
from test_jobs import all_events
from test_resume import children, kill_agent, logs
from test_workers import HANDLERS, Fleet, alive, wait

sys.path.insert(0, str(ROOT / "handlers"))
import _corpus

MAX_RETRIES = 3  # per teacher call, within an attempt (the providers file below)
LIFECYCLE = ("queued", "assigned", "running", "failed", "retrying", "succeeded",
             "dead_lettered", "cancelled")


def standin_url():
    """The stack's gpt-4 stand-in (providers.sh: port 8105 + the profile's offset)."""
    port = 8105 + int(os.environ.get("FORGE_TEST_PORT_OFFSET", "10000"))
    return f"http://127.0.0.1:{port}"


class TeacherProxy:
    """The test's OpenAI-compatible server in front of the stand-in (see the module doc).

    fail_first: the first N requests get 503 (Retry-After: 1).
    pass_first: only the first N requests are passed on; later ones are held until
    release(), then answered 503 (their caller is gone by then).
    Counts: requests (all arrivals), answered (200s from the stand-in), failed (503s sent
    by the proxy), held (requests held by pass_first)."""

    def __init__(self, fail_first=0, pass_first=None):
        self.fail_first, self.pass_first = fail_first, pass_first
        self.requests = self.answered = self.failed = self.held = self.admitted = 0
        self.statuses = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.upstream = standin_url()
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # a request line names no key, but say nothing
                pass

            def reply(self, status, body, ctype="application/json", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller was killed meanwhile

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization", "")
                with proxy.lock:
                    proxy.requests += 1
                    n = proxy.requests
                    hold = False
                    if n > proxy.fail_first and proxy.pass_first is not None \
                            and not proxy.released.is_set():
                        hold = proxy.admitted >= proxy.pass_first
                    if n > proxy.fail_first and not hold:
                        proxy.admitted += 1
                    if hold:
                        proxy.held += 1
                if n <= proxy.fail_first:
                    with proxy.lock:
                        proxy.failed += 1
                        proxy.statuses.append(503)
                    msg = {"error": {"message": f"overloaded, retry later ({auth})"}}
                    return self.reply(503, json.dumps(msg).encode(),
                                      headers=[("Retry-After", "1")])
                if hold:
                    proxy.released.wait()
                    return self.reply(503, b'{"error": {"message": "the test let it go"}}')
                req = urllib.request.Request(
                    proxy.upstream + self.path, data=body, method="POST",
                    headers={"Content-Type": "application/json", "Authorization": auth})
                try:
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        status, out = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, out = exc.code, exc.read()
                with proxy.lock:
                    proxy.statuses.append(status)
                    proxy.answered += status == 200
                self.reply(status, out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def release(self):
        self.released.set()

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_fleet(request):
    """(make_proxy, start_agent, fleet): a Fleet running the real handlers (train too:
    distill trains its student with it), whose agents' handlers call gpt-4 through the
    proxy made by make_proxy(**TeacherProxy kwargs) with the stack's provider key."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nf-teacher-"))
    fleet = Fleet(tmp)
    shutil.copy(HANDLERS / "train", fleet.handlers / "train")
    proxies = []
    key = provider_key()

    def make_proxy(concurrency, **kw):
        p = TeacherProxy(**kw)
        proxies.append(p)
        doc = {"providers": {"openai": {
            "base_url": p.base_url, "api_key_env": "NF_PROVIDER_KEY_OPENAI",
            "models": {"gpt-4": {"input_per_1m_usd": 30.0, "output_per_1m_usd": 60.0}},
            "concurrency": concurrency, "requests_per_minute": 0, "stand_in": True,
            # retries counted, not timed: max_retries ends a call, never the budget;
            # a held request outwaits any slow moment of a loaded machine
            "max_retries": MAX_RETRIES, "retry_budget_s": 3600, "timeout_s": 900}}}
        (tmp / "providers.json").write_text(json.dumps(doc))
        return p

    def start_agent(name, role):
        return fleet.start(name, labels={"role": role}, extra={
            "NF_PROVIDERS_FILE": str(tmp / "providers.json"),
            "NF_PROVIDER_KEY_OPENAI": key,
            "NF_WORKER_HANDLER_ENV": "NF_PROVIDERS_FILE,NF_PROVIDER_KEY_OPENAI"})

    yield make_proxy, start_agent, fleet
    for p in proxies:
        p.close()
    bad = fleet.close()
    shutil.rmtree(tmp, ignore_errors=True)
    assert not bad, "agents did not stop cleanly:\n" + "\n".join(bad)


def prompts_file(api, n, seed):
    rng = random.Random(seed)
    body = b""
    for _ in range(n):
        q, _a = _corpus.sample(rng, "biology")
        body += json.dumps({"instruction": q}).encode() + b"\n"
    uri = f"s3://e2e-teacher/{uuid.uuid4().hex[:8]}.jsonl"
    upload_ok(api, body, uri=uri, filename="prompts.jsonl")
    return uri


def submit_distill(api, fleet, role, dataset, n):
    body = {"teacher_model": "gpt-4", "student_model": "tiny-bigram", "dataset_uri": dataset,
            "num_samples": n, "max_tokens": 16, "holdout": 0, "epochs": 1, "seed": 7,
            "max_attempts": 3, "labels": {"pool": fleet.pool, "role": role}}
    resp = api.submit("distill", body)
    assert resp.status_code == 202, resp.text
    return resp.json()["job_id"]


def trail(api, job_id):
    """The job's lifecycle events as (kind, attempt), in order, and the events."""
    evs = [e for e in all_events(api, job_id)
           if e["type"].rsplit(".", 1)[1] in LIFECYCLE]
    return [(e["type"].rsplit(".", 1)[1], e["attempt"]) for e in evs], evs


def wait_trail(api, job_id, last, timeout=60):
    """The trail once its last entry is `last` (the scheduler records its own follow-up
    events when it reads them back, a moment after the job's row changes)."""
    def done():
        t = trail(api, job_id)
        return t if t[0] and t[0][-1] == last else None
    return wait(done, timeout, f"{job_id}'s events up to {last}", step=0.5)


def assert_key_nowhere(api, job_id, agent_logs):
    key = provider_key()
    assert key not in json.dumps(api.get_job(job_id).json())
    assert key not in json.dumps(all_events(api, job_id))
    for log in agent_logs:
        assert key.encode() not in log.read_bytes(), log


def test_a_teacher_answering_503_for_a_while_fails_the_attempt_as_infra_then_succeeds(
        api, proxy_fleet):
    make_proxy, start_agent, fleet = proxy_fleet
    n = 6
    # attempt 1: its first call is tried 1 + MAX_RETRIES times, all 503 -> exit 75;
    # attempt 2: its first request is the last 503, retried within the attempt
    proxy = make_proxy(concurrency=1, fail_first=MAX_RETRIES + 2)
    agent = start_agent("flaky", "flaky")
    job_id = submit_distill(api, fleet, "flaky", prompts_file(api, n, 21), n)

    done = api.wait_terminal(job_id, timeout=900)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2, done
    kinds, evs = wait_trail(api, job_id, ("succeeded", 2))
    assert kinds == [("queued", 1), ("assigned", 1), ("running", 1), ("failed", 1),
                     ("retrying", 2), ("assigned", 2), ("running", 2), ("succeeded", 2)], kinds
    failed = next(e for e in evs if e["type"] == "forge.job.failed")
    error = failed["data"]["error"]
    assert error["class"] == "infra", failed
    assert "openai/gpt-4 is unavailable" in error["message"] and "503" in error["message"], error
    assert "retry later" in error["message"] and "***" in error["message"], error  # scrubbed
    retrying = next(e for e in evs if e["type"] == "forge.job.retrying")
    assert retrying["data"]["previous_attempt"] == 1, retrying

    res = done["result"]
    assert res["prompts"] == n and res["teacher_calls"] == n and res["resumed_answers"] == 0
    assert res["retries"] == 1, res  # attempt 2's one 503, retried within the attempt
    assert res["stand_in"] is True and res["num_samples"] >= 1, res
    # the teacher: 1 + MAX_RETRIES 503s (attempt 1), one more 503 and n answers (attempt 2)
    assert proxy.failed == MAX_RETRIES + 2 and proxy.answered == n, proxy.statuses
    assert proxy.requests == n + MAX_RETRIES + 2 and proxy.held == 0
    assert_key_nowhere(api, job_id, [agent.log])
    print(f"\n  teacher 503 x{proxy.failed}: attempt 1 failed as infra, attempt 2 "
          f"succeeded; {proxy.answered} answers for {n} prompts")


def collection_checkpoints(api, job_id):
    resp = api.call("GET", "/api/artifacts", params={"job_id": job_id, "limit": 100})
    assert resp.status_code == 200, resp.text
    return sorted(a["name"] for a in resp.json()["data"]
                  if a["kind"] == "checkpoint" and a["name"].startswith("distill-collection-"))


def test_a_worker_killed_mid_collection_asks_the_teacher_only_for_what_is_missing(
        api, proxy_fleet):
    make_proxy, start_agent, fleet = proxy_fleet
    n, concurrency = 20, 2
    ckpt = max(16, n // 8)  # _distill's default checkpoint_every for n prompts
    assert ckpt < n
    proxy = make_proxy(concurrency=concurrency, pass_first=ckpt)
    victim = start_agent("victim", "victim")
    job_id = submit_distill(api, fleet, "victim", prompts_file(api, n, 22), n)

    first = f"distill-collection-{ckpt:07d}.jsonl"
    wait(lambda: first in collection_checkpoints(api, job_id), 600,
         f"the checkpoint of the first {ckpt} answers to be recorded", step=0.5)
    job = api.get_job(job_id).json()
    assert job["status"] == "running" and job["attempt"] == 1, job
    # mid-collection: the teacher answered ckpt prompts and holds the next requests
    wait(lambda: proxy.held == concurrency, 120, "the next requests to be in flight")
    assert proxy.answered == ckpt, proxy.statuses
    assert children(victim.proc.pid), "the distill handler runs under the agent"
    assert kill_agent(victim, timeout=30)
    in_flight = proxy.held
    proxy.release()  # the held requests' caller is dead: they are answered 503 to nobody
    rescuer = start_agent("rescuer", "victim")

    done = api.wait_terminal(job_id, timeout=900)
    assert done["status"] == "succeeded", done
    assert done["attempt"] >= 2, done
    res = done["result"]
    assert res["prompts"] == n, res
    assert res["resumed_answers"] == ckpt and res["teacher_calls"] == n - ckpt, res
    assert res["retries"] == 0, res
    # the teacher was asked for each prompt once over the whole job, plus the requests
    # that were in flight when the worker died
    assert proxy.answered == n, proxy.statuses
    assert proxy.requests == n + in_flight and in_flight <= concurrency, \
        (proxy.requests, in_flight)
    # attempt 1 was lost with its worker, not failed by the handler
    kinds, evs = wait_trail(api, job_id, ("succeeded", done["attempt"]))
    failed = [e["data"] for e in evs if e["type"] == "forge.job.failed"]
    assert failed and failed[0]["attempt"] == 1, kinds
    assert failed[0]["error"]["class"] == "worker_lost", failed
    said = [m for m in logs(api, job_id, done["attempt"]) if m.startswith("resuming the coll")]
    assert said and f"{ckpt} answers from NF_RESUME_DIR, {n - ckpt} to ask" in said[0], said
    assert_key_nowhere(api, job_id, [victim.log, rescuer.log])
    print(f"\n  killed after {ckpt} of {n} answers ({in_flight} in flight): the retry asked "
          f"{res['teacher_calls']}; the teacher answered {proxy.answered} requests in all")
