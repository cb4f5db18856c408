"""The worker fleet end to end (issue 5), on the real test stack.

Every test starts its own nf-worker agents (the stack's binaries and environment) with a
label `pool=<random>` and submits jobs that require that label, so the stack's own
worker never takes them and the tests do not disturb each other. The agents run the
reference handlers, except `train`, which is replaced by a test handler that runs
`epochs` seconds with progress (a retry at most 3 s), writes its pid to handler.pid and,
when `lora` is true, ignores SIGTERM (to see the SIGKILL after the kill grace).

Measured figures (time from agent death to requeue, cancel latency, ...) are printed and
written to $NF_TEST_LOG_DIR/fleet-measurements.json.

Environment (set by ./forge test): NF_TEST_API_URL, NF_TEST_API_KEY, NF_TEST_KAFKA_BROKERS,
NF_TEST_REDIS_ADDR, NF_TEST_WORKER_REGISTRATION_TOKEN, NF_TEST_STATE_DIR, NF_TEST_LOG_DIR;
optional NF_TEST_WM_URL (default: the API port + 104, the stack's layout) and
NF_TEST_WORKER_BIN (default: build-test/bin/nf-worker).
"""
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import pytest
import requests

from conftest import ROOT, env

HANDLERS = ROOT / "handlers"
MEASURED = {}

TEST_TRAIN = r'''#!/usr/bin/env python3
# Test handler: runs params.epochs seconds with progress (retries - NF_ATTEMPT > 1 - at
# most 3 s); pid in $FLEET_MARKS/<job id>.pid; SIGTERM is recorded in
# $FLEET_MARKS/<job id>.sigterm (outside the job directory, which the agent removes when
# the attempt ends) and honoured, unless params.lora is true (then ignored).
import json, os, signal, sys, time
job = json.loads(sys.stdin.read())
p = job.get("params", {})
d = os.path.join(os.environ["FLEET_MARKS"], os.environ["NF_JOB_ID"])
with open(d + ".pid", "w") as f:
    f.write(str(os.getpid()))
def term(signum, frame):
    with open(d + ".sigterm", "w") as f:
        f.write(str(time.time()))
    if not p.get("lora"):
        sys.exit(143)
signal.signal(signal.SIGTERM, term)
n = float(p.get("epochs", 3))
if int(os.environ.get("NF_ATTEMPT", "1")) > 1:
    n = min(n, 3.0)
t0 = time.time()
while time.time() - t0 < n:
    print(json.dumps({"progress": round(min(1.0, (time.time() - t0) / n), 3)}), flush=True)
    time.sleep(0.2)
print(json.dumps({"usage": {"input_tokens": 7, "output_tokens": 3}}), flush=True)
print(json.dumps({"result": {"slept_s": n, "pid": os.getpid(),
                             "worker": os.environ.get("FLEET_TEST_TAG", "")}}), flush=True)
'''


def measure(name, value):
    MEASURED[name] = value
    print(f"\n[fleet] {name} = {value}")
    try:
        path = pathlib.Path(env("NF_TEST_LOG_DIR")) / "fleet-measurements.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(MEASURED)
        path.write_text(json.dumps(old, indent=2) + "\n")
    except OSError:
        pass


def wm_url():
    url = os.environ.get("NF_TEST_WM_URL")
    if url:
        return url.rstrip("/")
    api = urllib.parse.urlsplit(env("NF_TEST_API_URL"))
    return f"http://{api.hostname}:{api.port + 104}"


def worker_bin():
    path = os.environ.get("NF_TEST_WORKER_BIN") or str(ROOT / "build-test/bin/nf-worker")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no nf-worker binary at {path}")
    return path


def proc_state(pid):
    """'R', 'S', 'Z', ... or None when the process is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()[0]


def alive(pid):
    return proc_state(pid) not in (None, "Z", "X")


def wait(cond, timeout, what, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wm_defaults():
    """The worker-manager's built-in liveness defaults, read from `nf-worker-manager --help`
    (the same build the stack runs): {NF_WM_HEARTBEAT_INTERVAL_S: 2, ...}."""
    wm = pathlib.Path(worker_bin()).with_name("nf-worker-manager")
    out = subprocess.run([str(wm), "--help"], capture_output=True, text=True, timeout=30)
    found = dict(re.findall(r'^\s+(NF_WM_\w+)\s.*default "(\d+)"', out.stdout + out.stderr,
                            re.M))
    return {k: int(found[k]) for k in ("NF_WM_HEARTBEAT_INTERVAL_S", "NF_WM_LEASE_TTL_S",
                                       "NF_WM_REAP_INTERVAL_MS")}


def event_time(ev):
    """An event's `time` as seconds since the epoch."""
    return datetime.datetime.fromisoformat(ev["time"]).timestamp()


# --------------------------------------------------------------------------- the fleet

class Agent:
    def __init__(self, name, proc, log, artifacts, worker_id=None, token=None):
        self.name = name
        self.proc = proc
        self.log = log
        self.artifacts = artifacts
        self.worker_id = worker_id
        self.token = token

    def wait_registered(self, timeout=20):
        def find():
            if self.proc.poll() is not None:
                raise AssertionError(f"agent {self.name} exited: {self.tail()}")
            for line in self.log.read_text().splitlines():
                if '"event":"registered"' in line or '"event":"resumed"' in line:
                    return json.loads(line)["worker_id"]
            return None
        self.worker_id = wait(find, timeout, f"agent {self.name} to register")
        return self.worker_id

    def tail(self, n=20):
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return ""


class Fleet:
    """Starts nf-worker agents against the test stack; stops them all at the end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.pool = "p" + uuid.uuid4().hex[:10]
        self.agents = []
        self.api = env("NF_TEST_API_URL").rstrip("/")
        self.reg_token = env("NF_TEST_WORKER_REGISTRATION_TOKEN")
        self.logs = pathlib.Path(env("NF_TEST_LOG_DIR"))
        self.artifacts = pathlib.Path(env("NF_TEST_STATE_DIR")) / "artifacts-fleet"
        self.marks = tmp / "marks"  # what the test handler leaves for the test to read
        self.marks.mkdir()
        self.handlers = tmp / "handlers"
        shutil.copytree(HANDLERS, self.handlers, ignore=shutil.ignore_patterns("__pycache__"))
        train = self.handlers / "train"
        train.write_text(TEST_TRAIN)
        train.chmod(train.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def start(self, name, labels=None, gpu_type="", gpu_count=1, slots=1, extra=None,
              identity=None):
        all_labels = {"pool": self.pool, **(labels or {})}
        e = {k: v for k, v in os.environ.items() if not k.startswith("NF_")}
        e.update({
            "NF_LOG_LEVEL": "info",
            "NF_API_URL": self.api,
            "NF_WORKER_REGISTRATION_TOKEN": self.reg_token,
            "NF_KAFKA_BROKERS": env("NF_TEST_KAFKA_BROKERS"),
            "NF_WORKER_HANDLERS": str(self.handlers),
            "NF_WORKER_ARTIFACT_ROOT": str(self.artifacts),
            "NF_S3_ENDPOINT": env("NF_TEST_S3_ENDPOINT"),
            "NF_S3_ACCESS_KEY": env("NF_TEST_S3_ACCESS_KEY"),
            "NF_S3_SECRET_KEY": env("NF_TEST_S3_SECRET_KEY"),
            "NF_S3_BUCKET": env("NF_TEST_S3_BUCKET"),
            "NF_WORKER_LABELS": ",".join(f"{k}={v}" for k, v in all_labels.items()),
            "NF_WORKER_GPU_TYPE": gpu_type,
            "NF_WORKER_GPU_COUNT": str(gpu_count),
            "NF_WORKER_SLOTS": str(slots),
            "NF_WORKER_POLL_WAIT_S": "5",
            "NF_WORKER_KILL_GRACE_S": "2",
            "NF_WORKER_HOSTNAME": f"{self.pool}-{name}",
            "FLEET_TEST_TAG": name,  # handlers do not see NF_* variables
            "FLEET_MARKS": str(self.marks),
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        })
        if identity:
            e["NF_WORKER_ID"], e["NF_WORKER_TOKEN"] = identity
        e.update(extra or {})
        log = self.logs / f"fleet-{self.pool}-{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([worker_bin()], env=e, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        agent = Agent(name, proc, log, self.artifacts,
                      *(identity if identity else (None, None)))
        self.agents.append(agent)
        agent.wait_registered()
        return agent

    def register(self, name, labels=None, gpu_type=None, gpu_count=1):
        """Registers a worker through the API (the test keeps its token)."""
        body = {"hostname": f"{self.pool}-{name}", "gpu_type": gpu_type, "gpu_count": gpu_count,
                "job_types": ["generate", "audit", "distill", "train", "evaluate", "deploy"],
                "labels": {"pool": self.pool, **(labels or {})}, "version": "e2e"}
        r = requests.post(f"{self.api}/api/workers/register", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {self.reg_token}"})
        assert r.status_code == 201, r.text
        return r.json()

    def stop(self, agent, sig=signal.SIGTERM, timeout=30):
        if agent.proc.poll() is None:
            agent.proc.send_signal(sig)
            try:
                agent.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(5)
        return agent.proc.returncode

    def close(self):
        """Stops the agents still running; each must drain and exit 0 on SIGTERM (a
        sanitizer report, a leak or a hang would not)."""
        bad = []
        for agent in self.agents:
            if agent.proc.poll() is None:
                rc = self.stop(agent, timeout=30)
                if rc != 0:
                    bad.append(f"{agent.name} exited {rc}:\n{agent.tail()}")
        return bad


@pytest.fixture
def fleet():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nf-fleet-"))
    f = Fleet(tmp)
    yield f
    bad = f.close()
    shutil.rmtree(tmp, ignore_errors=True)
    assert not bad, "agents did not stop cleanly:\n" + "\n".join(bad)


@pytest.fixture(scope="module")
def worker_events():
    """Reads forge.workers.events (registered, lost, drained) from the beginning."""
    from confluent_kafka import Consumer
    events, lock, stop = [], threading.Lock(), threading.Event()
    consumer = Consumer({"bootstrap.servers": env("NF_TEST_KAFKA_BROKERS"),
                         "group.id": f"e2e-fleet-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["forge.workers.events"])

    def run():
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            ev = json.loads(msg.value())
            assert msg.key().decode() == ev["subject"]
            with lock:
                events.append(ev)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def find(etype, worker_id, timeout=20):
        def look():
            with lock:
                return [e for e in events if e["type"] == etype and e["subject"] == worker_id]
        return wait(look, timeout, f"{etype} for {worker_id}")

    yield find
    stop.set()
    thread.join(5)
    consumer.close()


def submit(api, job_type, body):
    r = api.submit(job_type, body)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def train(api, fleet, seconds, labels=None, **common):
    body = {"model_id": "tiny-bigram", "dataset_uri": "s3://b/k", "epochs": seconds,
            "labels": {"pool": fleet.pool, **(labels or {})}, **common}
    return submit(api, "train", body)


def job(api, job_id):
    return api.get_job(job_id).json()


def wait_status(api, job_id, statuses, timeout=60):
    return wait(lambda: (lambda j: j if j["status"] in statuses else None)(job(api, job_id)),
                timeout, f"{job_id} to reach {statuses}", step=0.2)


def fleet_list(api):
    r = api.call("GET", "/api/workers/")
    assert r.status_code == 200
    return {w["worker_id"]: w for w in r.json()["data"]}


def wm_cancel(job_id):
    r = requests.post(f"{wm_url()}/internal/jobs/{job_id}/cancel", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def redis_cli(*args):
    host, port = env("NF_TEST_REDIS_ADDR").rsplit(":", 1)
    out = subprocess.run(["redis-cli", "-h", host, "-p", port, *args], capture_output=True,
                         text=True, timeout=10)
    return out.stdout.strip()


# --------------------------------------------------------------------------- tests

def test_fleet_list_needs_a_user_key(api):
    r = requests.get(env("NF_TEST_API_URL") + "/api/workers/", timeout=10)
    assert r.status_code == 403
    assert r.json()["error"]["code"]
    r = requests.get(env("NF_TEST_API_URL") + "/api/workers/",
                     headers={"Authorization": "Bearer " + env("NF_TEST_WORKER_REGISTRATION_TOKEN")},
                     timeout=10)
    assert r.status_code == 403  # an operator or worker token is not a user key
    assert isinstance(fleet_list(api), dict)


def test_jobs_go_only_to_matching_workers(api, fleet):
    a = fleet.start("a100x2-eu", {"zone": "eu"}, gpu_type="a100", gpu_count=2)
    b = fleet.start("h100-us", {"zone": "us"}, gpu_type="h100", gpu_count=1)
    c = fleet.start("cpu", {}, gpu_type="", gpu_count=1)
    listed = fleet_list(api)
    for agent, gt, gc in ((a, "a100", 2), (b, "h100", 1), (c, None, 1)):
        w = listed[agent.worker_id]
        assert w["status"] == "idle" and w["gpu_type"] == gt and w["gpu_count"] == gc
        assert w["labels"]["pool"] == fleet.pool and w["last_heartbeat_at"]

    def gen(**req):
        labels = {"pool": fleet.pool, **req.pop("labels", {})}
        return submit(api, "generate", {"domain": "law", "num_samples": 5, "labels": labels,
                                        **req})

    expect = {
        gen(gpu_type="a100"): a,
        gen(gpu_type="h100", labels={"zone": "us"}): b,
        gen(gpu_count=2, labels={"zone": "eu"}): a,
        gen(gpu_type="h100"): b,
        gen(labels={"zone": "eu"}): a,
    }
    nobody = [gen(gpu_type="a100", labels={"zone": "us"}),  # a100 is in eu
              gen(gpu_count=4),                              # nobody has 4 GPUs
              gen(labels={"rack": "7"})]                     # nobody has that label
    for job_id, agent in expect.items():
        done = api.wait_terminal(job_id, timeout=60)
        assert done["status"] == "succeeded", done
        assert done["worker_id"] == agent.worker_id, (job_id, done["worker_id"], agent.name)
    time.sleep(2)  # three idle agents kept polling all along
    for job_id in nobody:
        assert job(api, job_id)["status"] == "queued"
        assert wm_cancel(job_id)["state"] == "dequeued"
    # the CPU-only worker ran nothing: every job asked for a GPU type, 2 GPUs or a label
    assert not any(j["worker_id"] == c.worker_id for j in (job(api, i) for i in expect))


def test_sigkill_mid_job_requeues_to_another_worker(api, fleet, events, worker_events):
    reg = fleet.register("victim")
    victim = fleet.start("victim", identity=(reg["worker_id"], reg["worker_token"]))
    hb, lease_ttl = reg["heartbeat_interval_s"], reg["lease_ttl_s"]
    job_id = train(api, fleet, 40)  # attempt 1 runs 40 s: it is surely killed mid-job
    pid_file = fleet.marks / f"{job_id}.pid"
    handler_pid = int(wait(lambda: pid_file.exists() and pid_file.read_text(), 30, "handler"))
    time.sleep(1.5)

    victim.proc.kill()  # SIGKILL: no goodbye, no report
    t_kill = time.monotonic()
    victim.proc.wait(5)
    running = job(api, job_id)
    assert running["status"] == "running" and running["attempt"] == 1, running
    assert running["worker_id"] == victim.worker_id
    # the handler dies with its agent (PR_SET_PDEATHSIG): no orphan keeps the GPU busy
    wait(lambda: not alive(handler_pid), 5, "the orphaned handler to die")
    rescuer = fleet.start("rescuer")

    def requeued():
        j = job(api, job_id)
        return j if j["attempt"] >= 2 else None
    j = wait(requeued, lease_ttl + 15, "the requeue", step=0.1)
    t_requeue = time.monotonic() - t_kill
    measure("agent_death_to_requeue_s", round(t_requeue, 2))
    measure("requeue_bound_s (lease TTL after the last beat)", lease_ttl)
    assert t_requeue <= lease_ttl + 1.5, t_requeue  # + reaper tick and our polling
    failed = [e["data"] for e in events.wait_for(job_id, "forge.job.failed", timeout=60)]
    assert any(f["error"]["class"] == "worker_lost" and f["attempt"] == 1 for f in failed)
    assigned = [e["data"] for e in events.wait_for(job_id, "forge.job.assigned")
                if e["data"]["attempt"] == 1][0]
    assert assigned["worker_id"] == victim.worker_id
    lease_id = assigned["lease_id"]

    done = api.wait_terminal(job_id, timeout=60)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2 and done["worker_id"] == rescuer.worker_id
    measure("agent_death_to_success_on_second_worker_s", round(time.monotonic() - t_kill, 2))

    # the dead worker is reported lost, and listed as lost
    lost = worker_events("forge.worker.lost", victim.worker_id)[0]["data"]
    assert job_id in lost["jobs"]
    assert fleet_list(api)[victim.worker_id]["status"] == "lost"

    # its late report (HTTP fallback, as an agent without Kafka would send it) is refused
    # and changes nothing
    late = {"specversion": "1.0", "id": f"evt_late_{uuid.uuid4().hex}",
            "source": f"nf-worker/{victim.worker_id}", "type": "forge.job.succeeded",
            "subject": job_id, "time": "2026-01-01T00:00:00.000Z",
            "datacontenttype": "application/json",
            "data": {"job_id": job_id, "user_id": done.get("user_id") or assigned["user_id"],
                     "attempt": 1, "status": "succeeded", "result": {"forged": True},
                     "artifacts": []}}
    hdr = {"Authorization": f"Bearer {reg['worker_token']}"}
    for route, event in (("events", late),
                         ("events", {**late, "type": "forge.job.progress",
                                     "data": {**late["data"], "status": "running",
                                              "progress": 0.9}})):
        r = requests.post(f"{fleet.api}/api/workers/{route}", headers=hdr, timeout=10,
                          json={"worker_id": victim.worker_id, "lease_id": lease_id,
                                "event": event})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "lease_lost"
    usage = {**late, "type": "forge.usage.recorded", "subject": assigned["user_id"],
             "data": {"user_id": assigned["user_id"], "job_id": job_id, "job_type": "train",
                      "attempt": 1, "worker_id": victim.worker_id, "meter": "gpu_ms",
                      "quantity": 999999, "window_start": late["time"],
                      "window_end": late["time"]}}
    r = requests.post(f"{fleet.api}/api/workers/usage", headers=hdr, timeout=10,
                      json={"worker_id": victim.worker_id, "lease_id": lease_id,
                            "event": usage})
    assert r.status_code == 409, r.text
    # a heartbeat for the job it no longer holds: 409, told the lease is lost
    r = requests.post(f"{fleet.api}/api/workers/heartbeat", headers=hdr, timeout=10,
                      json={"worker_id": victim.worker_id,
                            "jobs": [{"job_id": job_id, "lease_id": lease_id}]})
    assert r.status_code == 409 and r.json()["lost"] == [job_id], r.text
    assert r.json()["error"]["code"] == "lease_lost"
    # wrong token: 403, not a hint about the lease
    r = requests.post(f"{fleet.api}/api/workers/events", timeout=10,
                      headers={"Authorization": "Bearer not-the-token"},
                      json={"worker_id": victim.worker_id, "lease_id": lease_id, "event": late})
    assert r.status_code == 403
    time.sleep(1.5)
    after = job(api, job_id)
    assert (after["status"], after["attempt"], after["worker_id"], after["result"]) == \
        (done["status"], done["attempt"], done["worker_id"], done["result"])
    assert not [e for _, e in events.for_job(job_id) if e["id"] == late["id"]]


def test_dead_worker_job_runs_again_within_10s_with_default_liveness(api, fleet, events):
    """Issue 23 item 5: with the worker-manager's default heartbeat and lease settings (the
    test stack runs them), a worker SIGKILLed at the worst moment - right after a heartbeat
    renewed its lease - has its job requeued within 10 s, and another worker runs it to the
    end. The stages are timed from the events (same clock: one machine)."""
    defaults = wm_defaults()
    hb, ttl = defaults["NF_WM_HEARTBEAT_INTERVAL_S"], defaults["NF_WM_LEASE_TTL_S"]
    reap_s = defaults["NF_WM_REAP_INTERVAL_MS"] / 1000
    reg = fleet.register("dead")
    assert (reg["heartbeat_interval_s"], reg["lease_ttl_s"]) == (hb, ttl), \
        f"the test stack must run the default liveness settings {defaults}: {reg}"
    victim = fleet.start("dead", identity=(reg["worker_id"], reg["worker_token"]))
    job_id = train(api, fleet, 60)  # attempt 1 would run 60 s: it is surely killed mid-job
    assert wait_status(api, job_id, {"running"}, 30)["worker_id"] == victim.worker_id
    rescuer = fleet.start("rescuer")  # idle and polling before the kill

    def deadline():
        return int(float(redis_cli("ZSCORE", "wm:leases", job_id) or 0))
    # two renewals one heartbeat apart (a resumed agent beats every 1 s until the first
    # answer tells it the interval), then the kill right after the second
    d0 = wait(deadline, 10, "the lease")
    d1 = wait(lambda: (lambda d: d if d > d0 else None)(deadline()), hb + 5, "a renewal",
              step=0.01)
    d2 = wait(lambda: (lambda d: d if d > d1 else None)(deadline()), hb + 5, "a renewal",
              step=0.01)
    victim.proc.kill()  # SIGKILL: no goodbye, no report
    t_kill = time.time()
    victim.proc.wait(5)
    assert abs((d2 - d1) / 1000 - hb) < 1, (d1, d2, hb)
    expiry = d2 / 1000 - t_kill  # the lease was renewed just now: ~ the whole TTL is left

    def requeued():
        j = job(api, job_id)
        return j if j["attempt"] >= 2 else None
    wait(requeued, ttl + 30, "the requeue", step=0.05)
    t_requeue = time.time() - t_kill
    done = api.wait_terminal(job_id, timeout=60)
    t_done = time.time() - t_kill
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2 and done["worker_id"] == rescuer.worker_id, done

    lost = [e for e in events.wait_for(job_id, "forge.job.failed")
            if e["data"]["attempt"] == 1 and e["data"]["error"]["class"] == "worker_lost"]
    assert lost, "the reaper reported attempt 1 worker_lost"
    again = [e for e in events.wait_for(job_id, "forge.job.running")
             if e["data"]["attempt"] == 2]
    assert again and again[0]["source"] == f"nf-worker/{rescuer.worker_id}"
    t_reaped = event_time(lost[0]) - t_kill
    t_again = event_time(again[0]) - t_kill
    assert t_reaped >= expiry - 0.1, "never reaped before the lease deadline"
    print(f"\n[fleet] defaults: heartbeat {hb} s, lease {ttl} s, reap every {reap_s:g} s; "
          f"SIGKILL right after a renewal -> lease expiry {expiry:.2f} s, reaped "
          f"{t_reaped:.2f} s, requeued {t_requeue:.2f} s, running on another worker "
          f"{t_again:.2f} s, succeeded {t_done:.2f} s")
    measure("default_liveness_kill_to_requeue_s", round(t_requeue, 2))
    measure("default_liveness_kill_to_running_again_s", round(t_again, 2))
    assert t_reaped <= ttl + reap_s + 1, t_reaped
    assert t_requeue <= 10, f"requeued {t_requeue:.2f} s after the SIGKILL (budget 10 s)"


def test_cancel_stops_running_handler_within_grace(api, fleet, events):
    agent = fleet.start("cancel")
    grace = 2  # NF_WORKER_KILL_GRACE_S of the fleet's agents
    hb = wm_defaults()["NF_WM_HEARTBEAT_INTERVAL_S"]  # the agent hears of it in a beat
    job_id = train(api, fleet, 60, lora=True)  # lora: the test handler ignores SIGTERM
    wait_status(api, job_id, {"running"}, timeout=30)
    pid_file = fleet.marks / f"{job_id}.pid"
    handler_pid = int(wait(lambda: pid_file.exists() and pid_file.read_text(), 10, "handler"))
    time.sleep(1)

    t0 = time.monotonic()
    r = requests.post(f"{env('NF_TEST_API_URL')}/api/jobs/{job_id}/cancel", timeout=10,
                      headers={"X-Nexa-Api-Key": env("NF_TEST_API_KEY")})
    if r.status_code in (404, 405) and r.json()["error"]["code"] in ("not_found",
                                                                      "method_not_allowed"):
        state = wm_cancel(job_id)  # the public cancel route is not there yet: the wm's own
        assert state["state"] == "signalled" and state["worker_id"] == agent.worker_id
    else:
        assert r.status_code in (200, 202), r.text
    wait(lambda: not alive(handler_pid), hb + grace + 5, "the handler to stop")
    stopped = time.monotonic() - t0
    measure(f"cancel_to_handler_stopped_s (heartbeat {hb} s + grace {grace} s)",
            round(stopped, 2))
    assert stopped <= hb + grace + 2.5, stopped
    sigterm = fleet.marks / f"{job_id}.sigterm"
    assert sigterm.exists(), "SIGTERM first, SIGKILL only after the grace"
    assert stopped >= grace - 0.5  # it ignored SIGTERM: it died at the SIGKILL
    cancelled = events.wait_for(job_id, "forge.job.cancelled", timeout=15)
    assert cancelled[0]["source"] == f"nf-worker/{agent.worker_id}"
    assert not [e for _, e in events.for_job(job_id) if e["type"] == "forge.job.failed"]
    done = api.wait_terminal(job_id, timeout=30)
    assert done["status"] == "cancelled", done
    # the slot is free again
    nxt = train(api, fleet, 1)
    assert api.wait_terminal(nxt, timeout=30)["worker_id"] == agent.worker_id


def test_cancel_of_a_queued_job_dequeues_it(api, fleet):
    job_id = train(api, fleet, 1, labels={"nobody": "has-this"})
    wait(lambda: redis_cli("ZSCORE", "wm:queue:train", job_id), 15, "the job in the queue")
    assert wm_cancel(job_id)["state"] == "dequeued"
    assert redis_cli("ZSCORE", "wm:queue:train", job_id) == ""
    assert redis_cli("EXISTS", f"wm:cancelled:{job_id}") == "1"
    assert wm_cancel("job_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ")["state"] == "unknown"
    r = requests.post(f"{wm_url()}/internal/jobs/not-a-job/cancel", timeout=10)
    assert r.status_code == 422


def test_fleet_list_shows_a_user_only_their_own_jobs_and_no_host_names(api, fleet,
                                                                       other_user_key):
    """Issue 15: the fleet is shared, its jobs are not. Through the gateway a user sees
    only their own jobs in current_jobs and no host names; the operator's view (the
    worker-manager's internal port, no user) has both."""
    agent = fleet.start("shared")
    job_id = train(api, fleet, 8)
    assert wait_status(api, job_id, {"running"}, 30)["worker_id"] == agent.worker_id
    wait(lambda: fleet_list(api)[agent.worker_id]["current_jobs"] == [job_id], 10,
         "the owner to see the job")
    mine = fleet_list(api)[agent.worker_id]
    assert mine["status"] == "busy" and mine["hostname"] is None, mine

    r = requests.get(f"{fleet.api}/api/workers/", headers={"X-Nexa-Api-Key": other_user_key},
                     timeout=10)
    assert r.status_code == 200, r.text
    theirs = {w["worker_id"]: w for w in r.json()["data"]}[agent.worker_id]
    assert theirs["current_jobs"] == [], theirs  # another tenant's job id is not shown
    assert theirs["status"] == "busy" and theirs["hostname"] is None, theirs
    assert job_id not in r.text

    # a forged X-Nf-User-Id from a client is not forwarded: the gateway sets its own
    r = requests.get(f"{fleet.api}/api/workers/", timeout=10,
                     headers={"X-Nexa-Api-Key": other_user_key, "X-Nf-User-Id": "usr_x"})
    assert r.status_code == 200 and job_id not in r.text

    op = requests.get(f"{wm_url()}/api/workers/", timeout=10)
    assert op.status_code == 200, op.text
    full = {w["worker_id"]: w for w in op.json()["data"]}[agent.worker_id]
    assert full["current_jobs"] == [job_id] and full["hostname"] == f"{fleet.pool}-shared"
    assert api.wait_terminal(job_id, timeout=30)["status"] == "succeeded"


def test_drained_worker_finishes_its_job_and_takes_no_new_one(api, fleet, worker_events):
    drained = fleet.start("drained")
    first = train(api, fleet, 8)
    assert wait_status(api, first, {"running"}, 30)["worker_id"] == drained.worker_id
    second = train(api, fleet, 1)
    r = requests.post(f"{fleet.api}/api/workers/drain", json={"worker_id": drained.worker_id},
                      headers={"Authorization": f"Bearer {fleet.reg_token}"}, timeout=10)
    assert r.status_code == 202 and r.json()["status"] == "draining", r.text
    wait(lambda: fleet_list(api)[drained.worker_id]["status"] == "draining", 5, "draining")
    assert fleet_list(api)[drained.worker_id]["current_jobs"] == [first]

    done = api.wait_terminal(first, timeout=30)
    assert done["status"] == "succeeded" and done["worker_id"] == drained.worker_id
    worker_events("forge.worker.drained", drained.worker_id)
    assert drained.proc.wait(20) == 0  # it stops by itself once drained
    assert job(api, second)["status"] == "queued"  # never taken by the draining worker
    assert drained.worker_id not in fleet_list(api)  # stopped cleanly: not lost

    taker = fleet.start("taker")
    done = api.wait_terminal(second, timeout=30)
    assert done["status"] == "succeeded" and done["worker_id"] == taker.worker_id

    # bad drains
    r = requests.post(f"{fleet.api}/api/workers/drain", json={"worker_id": taker.worker_id},
                      headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert r.status_code == 403
    r = requests.post(f"{fleet.api}/api/workers/drain",
                      json={"worker_id": "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ"},
                      headers={"Authorization": f"Bearer {fleet.reg_token}"}, timeout=10)
    assert r.status_code == 404


def test_sigterm_drains_then_exits(api, fleet, worker_events):
    agent = fleet.start("sigterm")
    first = train(api, fleet, 5)
    wait_status(api, first, {"running"}, 30)
    second = train(api, fleet, 1)
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(30) == 0
    measure("sigterm_to_exit_with_5s_job_s", round(time.monotonic() - t0, 2))
    done = job(api, first)
    done = api.wait_terminal(first, timeout=20)
    assert done["status"] == "succeeded" and done["worker_id"] == agent.worker_id
    worker_events("forge.worker.drained", agent.worker_id)
    time.sleep(1)
    assert job(api, second)["status"] == "queued"
    assert agent.worker_id not in fleet_list(api)
    assert wm_cancel(second)["state"] == "dequeued"


def test_slots_run_jobs_side_by_side(api, fleet):
    agent = fleet.start("slots", slots=2)
    ids = [train(api, fleet, 3) for _ in range(3)]
    peak, seen = 0, set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        states = [job(api, i) for i in ids]
        running = [j for j in states if j["status"] == "running"]
        peak = max(peak, len(running))
        assert len(running) <= 2
        if any(j["status"] == "running" for j in states):
            listed = fleet_list(api)[agent.worker_id]
            assert len(listed["current_jobs"]) <= 2
            seen.add(listed["status"])
        if all(j["status"] == "succeeded" for j in states):
            break
        time.sleep(0.2)
    assert all(job(api, i)["status"] == "succeeded" for i in ids)
    assert peak == 2
    assert "busy" in seen


def test_hanging_handler_is_killed_at_its_timeout(api, fleet):
    fleet.start("timeout")
    t0 = time.monotonic()
    job_id = train(api, fleet, 60, lora=True, timeout_seconds=2, max_attempts=1)
    done = api.wait_terminal(job_id, timeout=40)
    assert done["status"] in ("failed", "dead_lettered"), done
    assert done["error"]["class"] == "timeout", done
    measure("timeout_2s_job_to_terminal_s", round(time.monotonic() - t0, 2))


def test_undelivered_events_outlive_their_agent(api, fleet, events, tmp_path):
    """An agent whose broker is away runs a job: its events wait in the outbox journal of
    its work directory. SIGKILLed before the broker returns, it loses nothing: the next
    agent on that work directory publishes them, oldest first (issue 23: nothing dropped)."""
    import socket
    with socket.socket() as s:  # a port nobody listens on: the broker is "away"
        s.bind(("127.0.0.1", 0))
        away = f"127.0.0.1:{s.getsockname()[1]}"
    work = tmp_path / "work"
    cut_off = fleet.start("cut-off", extra={"NF_KAFKA_BROKERS": away,
                                            "NF_WORKER_WORK_DIR": str(work)})
    job_id = train(api, fleet, 1)
    pid_file = fleet.marks / f"{job_id}.pid"
    handler_pid = int(wait(lambda: pid_file.exists() and pid_file.read_text(), 30, "handler"))
    wait(lambda: not alive(handler_pid), 20, "the handler to finish")
    wait(lambda: "publish_retry" in cut_off.log.read_text(), 20, "a failed delivery")
    journal = work / "outbox-0.log"
    assert journal.stat().st_size > 0
    assert not [e for _, e in events.for_job(job_id) if e["type"] == "forge.job.succeeded"]

    cut_off.proc.kill()  # SIGKILL: whatever it held in memory is gone
    cut_off.proc.wait(5)
    t0 = time.monotonic()
    heir = fleet.start("heir", extra={"NF_WORKER_WORK_DIR": str(work)})
    wait(lambda: "outbox_replay" in heir.log.read_text(), 20, "the heir to replay the outbox")
    source = f"nf-worker/{cut_off.worker_id}"

    def from_cut_off():
        mine = [e for _, e in events.for_job(job_id)
                if e["source"] == source and e["type"].startswith("forge.job.")]
        return mine if any(e["type"] == "forge.job.succeeded" for e in mine) else None
    mine = wait(from_cut_off, 30, "the cut-off agent's events, published by its heir")
    measure("outbox_replay_to_delivered_s", round(time.monotonic() - t0, 2))
    types = [e["type"] for e in mine]
    assert types[0] == "forge.job.running", types
    assert "forge.job.progress" in types and types[-1] == "forge.job.succeeded", types
    assert len({e["id"] for e in mine}) == len(mine), "each event published once"
    # every message delivered: the journal is emptied
    wait(lambda: not journal.exists() or journal.stat().st_size == 0, 10, "an empty journal")
    wait_status(api, job_id, ("succeeded",), timeout=60)


def test_agent_without_kafka_reports_through_the_api(api, fleet):
    agent = fleet.start("no-kafka", extra={"NF_KAFKA_BROKERS": ""})
    job_id = train(api, fleet, 1)
    done = api.wait_terminal(job_id, timeout=40)
    assert done["status"] == "succeeded" and done["worker_id"] == agent.worker_id, done
    assert done["result"]["worker"] == "no-kafka"


def test_disabled_worker_is_refused_at_once(fleet):
    """Issue 15: a disabled worker kept authenticating from the Redis cache of its token.
    An operator's disable takes effect on the very next call, with the token still cached,
    and the worker cannot disable (or re-enable) itself."""
    reg = fleet.register("disabled")
    hdr = {"Authorization": f"Bearer {reg['worker_token']}"}
    wid = reg["worker_id"]
    beat = {"worker_id": wid, "jobs": []}
    r = requests.post(f"{fleet.api}/api/workers/heartbeat", headers=hdr, json=beat, timeout=10)
    assert r.status_code == 200, r.text
    assert redis_cli("HEXISTS", f"wm:worker:{wid}", "token_hash") == "1"  # cached
    # the worker's own token cannot disable it, nor can a wrong one
    for token in (reg["worker_token"], "wrong"):
        r = requests.post(f"{fleet.api}/api/workers/disable", json={"worker_id": wid},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 403, r.text
    op = {"Authorization": f"Bearer {fleet.reg_token}"}
    r = requests.post(f"{fleet.api}/api/workers/disable", json={"worker_id": wid}, headers=op,
                      timeout=10)
    assert r.status_code == 200 and r.json() == {"worker_id": wid, "status": "disabled"}, r.text
    assert redis_cli("HEXISTS", f"wm:worker:{wid}", "token_hash") == "1"  # still cached
    for path, body in (("heartbeat", beat), ("next_job", {"worker_id": wid, "wait_seconds": 0}),
                       ("drain", {"worker_id": wid})):
        r = requests.post(f"{fleet.api}/api/workers/{path}", headers=hdr, json=body, timeout=10)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    # and with the cache gone, Postgres says the same
    redis_cli("DEL", f"wm:worker:{wid}")
    r = requests.post(f"{fleet.api}/api/workers/heartbeat", headers=hdr, json=beat, timeout=10)
    assert r.status_code == 403, r.text
    # idempotent; an unknown worker is 404
    r = requests.post(f"{fleet.api}/api/workers/disable", json={"worker_id": wid}, headers=op,
                      timeout=10)
    assert r.status_code == 200, r.text
    r = requests.post(f"{fleet.api}/api/workers/disable",
                      json={"worker_id": "wrk_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ"}, headers=op, timeout=10)
    assert r.status_code == 404, r.text


def test_worker_protocol_refusals(fleet):
    api_url = fleet.api
    reg = fleet.register("protocol")
    hdr = {"Authorization": f"Bearer {reg['worker_token']}"}
    wid = reg["worker_id"]
    r = requests.post(f"{api_url}/api/workers/heartbeat", json={"worker_id": wid}, timeout=10,
                      headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403
    r = requests.post(f"{api_url}/api/workers/register", json={"hostname": "x",
                                                               "job_types": ["train"]},
                      headers={"Authorization": "Bearer wrong-registration"}, timeout=10)
    assert r.status_code == 403
    # a job the worker never held: 409 for a heartbeat listing it (lost named in the
    # answer) and for a report about it
    ghost = "job_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ"
    r = requests.post(f"{api_url}/api/workers/heartbeat", headers=hdr, timeout=10,
                      json={"worker_id": wid, "jobs": [
                          {"job_id": ghost, "lease_id": "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ"}]})
    assert r.status_code == 409 and r.json()["lost"] == [ghost] and r.json()["cancelled"] == []
    r = requests.post(f"{api_url}/api/workers/heartbeat", headers=hdr, timeout=10,
                      json={"worker_id": wid, "jobs": []})
    assert r.status_code == 200 and r.json()["lost"] == []
    ev = {"specversion": "1.0", "id": "e1", "source": "x", "type": "forge.job.log",
          "subject": ghost, "data": {"job_id": ghost, "attempt": 1, "message": "hi"}}
    r = requests.post(f"{api_url}/api/workers/events", headers=hdr, timeout=10,
                      json={"worker_id": wid, "lease_id": "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ",
                            "event": ev})
    assert r.status_code == 409
    # an event type that is not the worker's to send: 422
    r = requests.post(f"{api_url}/api/workers/events", headers=hdr, timeout=10,
                      json={"worker_id": wid, "lease_id": "lse_01JDQ7Z6V1TB6Y4Q4ZKX3R1ZZZ",
                            "event": {**ev, "type": "forge.job.assigned"}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "event.type"
    # its own drain: an idle worker is drained at once
    r = requests.post(f"{api_url}/api/workers/drain", headers=hdr, json={"worker_id": wid},
                      timeout=10)
    assert r.status_code == 202 and r.json()["status"] == "drained"
    r = requests.post(f"{api_url}/api/workers/next_job", headers=hdr, timeout=10,
                      json={"worker_id": wid, "wait_seconds": 5})
    assert r.status_code == 204  # draining: nothing, and at once
    assert r.elapsed.total_seconds() < 2


# --------------------------------------------------------------------------- handlers

def run_handler(name, job, tmp, timeout=60):
    out = tmp / "out"
    e = {**os.environ, "NF_ARTIFACT_DIR": str(out), "NF_JOB_ID": job.get("job_id", "job_t")}
    p = subprocess.run([sys.executable, str(HANDLERS / name)], input=json.dumps(job),
                       capture_output=True, text=True, env=e, timeout=timeout)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return p.returncode, lines, out, p.stderr


def test_audit_reads_jsonl_and_csv(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("id,prompt,response\n1,What is ATP?,Energy\n2,What is ATP?,Energy\n"
                        "3,,empty\n4,too,many,fields\n")
    rc, lines, out, err = run_handler("audit", {"params": {"dataset_uri": "s3://b/d.csv"},
                                               "inputs": {"dataset_uri": str(csv_path)}},
                                      tmp_path)
    assert rc == 0, err
    result = [x["result"] for x in lines if "result" in x][0]
    assert result["format"] == "csv" and result["rows"] == 3
    assert result["malformed_lines"] == 1 and result["duplicates"] == 1
    report = json.loads((out / "report.json").read_text())
    assert report["empty_fields"] == {"prompt": 1}
    used = [x["usage"] for x in lines if "usage" in x][0]
    assert used["input_tokens"] == len("What is ATP? Energy What is ATP? Energy empty".split())

    jl = tmp_path / "d.jsonl"
    jl.write_text('{"instruction":"a b","response":"c"}\n{"instruction":"a b","response":"c"}\n'
                  "oops\n")
    rc, lines, out, err = run_handler("audit", {"params": {"dataset_uri": "s3://b/d.jsonl"},
                                               "inputs": {"dataset_uri": str(jl)}},
                                      tmp_path)
    result = [x["result"] for x in lines if "result" in x][0]
    assert rc == 0 and result["format"] == "jsonl" and result["rows"] == 2
    assert result["malformed_lines"] == 1 and result["duplicates"] == 1
    # a URI param the agent did not fetch (no inputs entry): refused, naming it
    rc, _, _, err = run_handler("audit", {"params": {"dataset_uri": "s3://b/nope.csv"}},
                                tmp_path)
    assert rc == 2 and "dataset_uri" in err


def test_deploy_serves_the_model_until_its_worker_goes(tmp_path):
    # a stand-in for the agent: the handler's parent, which we then stop
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess,sys; p=subprocess.run(sys.argv[1:]); "
         "import time; time.sleep(120)", sys.executable, str(HANDLERS / "deploy")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "NF_ARTIFACT_DIR": str(tmp_path / "out"), "NF_JOB_ID": "job_dep"})
    pid = None
    try:
        parent.stdin.write(json.dumps({"job_id": "job_dep",
                                       "params": {"model_id": "nexa-tiny", "replicas": 2}}))
        parent.stdin.close()
        lines = []
        for line in parent.stdout:
            lines.append(json.loads(line))
            if "result" in lines[-1]:
                break
        result = lines[-1]["result"]
        url = result["internal"]["endpoint_url"]
        assert "endpoint_url" not in result and result["base_url"].startswith("/api/deployments/")
        pid = int((tmp_path / "out/endpoint.pid").read_text())
        assert url.startswith("http://127.0.0.1:")
        r = requests.post(url + "/completions", json={"prompt": "what does a catalyst do",
                                                      "max_tokens": 5}, timeout=5)
        assert r.status_code == 200
        body = r.json()
        assert body["usage"]["prompt_tokens"] == 5
        assert body["usage"]["completion_tokens"] == len(body["choices"][0]["text"].split()) <= 5
        used = [x["usage"] for x in lines if "usage" in x][0]
        assert used["input_tokens"] > 0 and used["output_tokens"] > 0
        manifest = json.loads((tmp_path / "out/deployment.json").read_text())
        assert result["internal"]["pid"] == pid and alive(pid)
        assert "pid" not in manifest and "endpoint_url" not in manifest, manifest
        r = requests.post(url + "/completions", json={"prompt": 3}, timeout=5)
        assert r.status_code == 400  # OpenAI's shape: {"error": {"message", "type", "param"}}
        assert r.json()["error"]["param"] == "prompt", r.text
        parent.kill()
        parent.wait(5)
        wait(lambda: not alive(pid), 5, "the endpoint to stop with its worker")
        with pytest.raises(requests.ConnectionError):
            requests.get(url.rsplit("/v1", 1)[0] + "/healthz", timeout=2)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGTERM)


def test_train_counts_the_tokens_it_processes(tmp_path):
    rc, lines, out, err = run_handler(
        "generate", {"job_id": "job_g", "params": {"domain": "finance", "num_samples": 60,
                                                   "seed": 3}}, tmp_path)
    assert rc == 0, err
    data = out / "samples.jsonl"
    rc, lines, out2, err = run_handler(
        "train", {"job_id": "job_t", "params": {"model_id": "m", "epochs": 2,
                                                "dataset_uri": "s3://b/samples.jsonl"},
                  "inputs": {"dataset_uri": str(data)}},
        tmp_path / "t")
    assert rc == 0, err
    result = [x["result"] for x in lines if "result" in x][0]
    used = [x["usage"] for x in lines if "usage" in x][0]
    assert used["input_tokens"] == result["tokens_processed"]
    # counting pass + 2 x (EM + loss) over the held-out tenth + the train-loss pass
    assert result["tokens"] < used["input_tokens"] < 3 * result["tokens"]
