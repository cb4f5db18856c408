"""Billing on the real stack: exact prices, replay safety, crash safety, budgets.

The expected figures are computed here from what went over Kafka (the EventLog keeps
every forge.usage event) and the product's price book, never read back from billing:
    GPU $2.50/hour, input tokens $10/1M, output tokens $30/1M, storage $0.02/GB-month,
    cost of a cell = round_half_up(quantity x price_micros / per_units) micro-USD, where a
    cell is one job's quantity of one compute meter in one UTC hour (storage: one job
    type's in one hour); a job's cost and every line add up whole cells, so the jobs of a
    period add up exactly to its lines.
"""
import calendar
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
import uuid
import hashlib
import random

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import MALFORMED_KEY_PREFIX, ROOT, env, stack

# meter -> (price_micros, per_units, unit): the product overview's rates
PRICES = {
    "gpu_ms": (2500000, 3600000, "GPU hour"),
    "input_tokens": (10000000, 1000000, "1M input tokens"),
    "output_tokens": (30000000, 1000000, "1M output tokens"),
    "storage_byte_hours": (20000, 730000000000, "GB-month"),
}
COMPUTE = ("gpu_ms", "input_tokens", "output_tokens")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def cost_micros(quantity, price_micros, per_units):
    """The documented rounding rule: half up, once per cell, exact integers."""
    q, r = divmod(quantity * price_micros, per_units)
    return q + (1 if 2 * r >= per_units else 0)


def cells_cost(cells):
    """{meter: (quantity, cost)} of cells {(job, meter, hour): quantity}: each cell priced
    and rounded once, the cells added up."""
    out = {}
    for (_, meter, _), q in cells.items():
        tq, tc = out.get(meter, (0, 0))
        out[meter] = (tq + q, tc + cost_micros(q, *PRICES[meter][:2]))
    return out


def usd(micros):
    return "%d.%06d" % divmod(micros, 1000000)


def ulid(prefix):
    ms = int(time.time() * 1000)
    return prefix + "_" + "".join(CROCKFORD[(ms >> (5 * i)) & 31] for i in reversed(range(10))) \
        + "".join(random.choice(CROCKFORD) for _ in range(16))


def envelope(etype, source, subject, eid, data):
    return json.dumps({"specversion": "1.0", "id": eid, "source": source, "type": etype,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                       "subject": subject, "datacontenttype": "application/json",
                       "data": data})


def new_user(tag):
    resp = requests.post(f"{env('NF_TEST_AUTH_URL')}/internal/bootstrap",
                         json={"email": f"{tag}-{uuid.uuid4().hex[:8]}@nexa.dev"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["user_id"], resp.json()["api_key"]


def wait_terminal(api, job_id, key, timeout=90):
    """Api.wait_terminal with another user's key."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = api.get_job(job_id, key=key).json()
        if job["status"] in ("succeeded", "failed", "cancelled", "dead_lettered"):
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def poll(what, fn, timeout=45, interval=0.25):
    """fn() until it returns a truthy value; its last value on timeout is in the message."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


# --------------------------------------------------------------------------- Kafka helpers

@pytest.fixture(scope="module")
def producer():
    p = Producer({"bootstrap.servers": env("NF_TEST_KAFKA_BROKERS"), "enable.idempotence": True})
    yield p
    p.flush(30)


def produce(producer, topic, key, value):
    producer.produce(topic, key=key, value=value)
    producer.poll(0)


def group_caught_up(group, topics=("forge.usage", "forge.jobs.events")):
    """Every partition's committed offset of `group` has reached the end of the topic."""
    c = Consumer({"bootstrap.servers": env("NF_TEST_KAFKA_BROKERS"), "group.id": group,
                  "enable.auto.commit": False})
    try:
        parts = []
        for topic in topics:
            meta = c.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p) for p in meta.partitions]
        for tp in c.committed(parts, timeout=10):
            _, high = c.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        c.close()


def wait_caught_up(group="nf-billing", timeout=90):
    # billing stores offsets after each commit and librdkafka commits them every 5 s
    poll(f"consumer group {group} at the end of forge.usage", lambda: group_caught_up(group),
         timeout=timeout, interval=1)


def logged_events(events, pred):
    with events.lock:
        assert not events.errors, "events broke their schema:\n" + "\n".join(events.errors)
        return [e for _, e in events.events if pred(e)]


def usage_sums(events, job_ids):
    """Quantity per meter of the usage events of these jobs (each event id once)."""
    seen, sums = set(), {}
    for e in logged_events(events, lambda e: e["type"] == "forge.usage.recorded"
                           and e["data"]["job_id"] in job_ids):
        if e["id"] in seen:
            continue
        seen.add(e["id"])
        sums[e["data"]["meter"]] = sums.get(e["data"]["meter"], 0) + e["data"]["quantity"]
    return sums


def usage_cells(events, job_ids):
    """Quantity per cell (job, meter, UTC hour of the window start) of the compute usage of
    these jobs (each event id once)."""
    seen, cells = set(), {}
    for e in logged_events(events, lambda e: e["type"] == "forge.usage.recorded"
                           and e["data"]["job_id"] in job_ids
                           and e["data"]["meter"] in COMPUTE):
        if e["id"] in seen:
            continue
        seen.add(e["id"])
        d = e["data"]
        key = (d["job_id"], d["meter"], d["window_start"][:13])
        cells[key] = cells.get(key, 0) + d["quantity"]
    return cells


def job_cost(cells):
    return sum(c for _, c in cells_cost(cells).values())


# --------------------------------------------------------------------------- HTTP helpers

def summary(api, key, **params):
    resp = api.call("GET", "/api/billing/summary", key=key, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def meter_quantities(body):
    out = {}
    for line in body["meters"]:
        out[line["meter"]] = out.get(line["meter"], 0) + line["quantity"]
    return out


def compute_totals(body):
    """Quantity and cost per compute meter (storage keeps accruing, so it is left out of
    comparisons over time)."""
    return {m["meter"]: (m["quantity"], m["cost_micros"]) for m in body["meters"]
            if m["meter"] in COMPUTE}


def check_line(line):
    price, per, unit = PRICES[line["meter"]]
    assert line["unit"] == unit and line["unit_size"] == per, line
    assert line["rate"] == usd(price), line
    assert line["cost_usd"] == usd(line["cost_micros"]), line
    # a sum of cells each rounded once: within half a micro-dollar per cell of the line
    # priced as a whole, never below zero
    assert line["cost_micros"] >= 0, line


def check_summary_arithmetic(body, cells=None):
    """The lines add up (quantities and costs: job type lines to meter lines, meter lines
    to the total); with cells, each compute meter line is exactly their cost."""
    for line in body["meters"]:
        check_line(line)
    assert body["total_micros"] == sum(l["cost_micros"] for l in body["meters"])
    assert body["total_usd"] == usd(body["total_micros"])
    per_meter = {}
    for jt in body["job_types"]:
        for line in jt["lines"]:
            check_line(line)
            q, c = per_meter.get(line["meter"], (0, 0))
            per_meter[line["meter"]] = (q + line["quantity"], c + line["cost_micros"])
        assert jt["total_micros"] == sum(l["cost_micros"] for l in jt["lines"])
        assert jt["total_usd"] == usd(jt["total_micros"])
    meters = {}
    for line in body["meters"]:
        q, c = meters.get(line["meter"], (0, 0))
        meters[line["meter"]] = (q + line["quantity"], c + line["cost_micros"])
    assert per_meter == meters, "job type lines add up to the meter lines, costs too"
    if cells is not None:
        assert compute_totals(body) == cells_cost(cells)


# --------------------------------------------------------------------------- stack control

def billing_url():
    return "http://127.0.0.1:" + stack('echo "${SVC_PORT[billing]}"')


def billing_ready(url):
    try:
        return requests.get(url + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


# --------------------------------------------------------------------------- synthetic usage

class Synthetic:
    """A user's jobs with real leases (forge.job.assigned from a made-up worker) and the
    usage those workers report, produced straight to Kafka like a worker does."""

    def __init__(self, producer, user_id, njobs=3, job_type="train"):
        self.producer, self.user_id = producer, user_id
        self.jobs = [(ulid("job"), ulid("wrk")) for _ in range(njobs)]
        self.job_type = job_type
        self.sent = {}
        self.cells = {}  # (job, meter, hour) -> quantity of what send() sent
        self.window = 0
        for job_id, worker_id in self.jobs:
            produce(producer, "forge.jobs.events", job_id, envelope(
                "forge.job.assigned", "nf-worker-manager", job_id, ulid("evt"),
                {"job_id": job_id, "user_id": user_id, "attempt": 1, "status": "assigned",
                 "worker_id": worker_id}))
        producer.flush(30)

    def event(self, i, meter, quantity, worker_id=None):
        job_id, leased = self.jobs[i % len(self.jobs)]
        worker_id = worker_id or leased
        self.window += 1
        start = int(time.time()) - 600
        data = {"user_id": self.user_id, "job_id": job_id, "job_type": self.job_type,
                "attempt": 1, "worker_id": worker_id, "meter": meter, "quantity": quantity,
                "window_start": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start)),
                "window_end": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start + 60))}
        eid = "use_" + hashlib.sha256(f"{job_id}:1:{meter}:{self.window}:{uuid.uuid4()}"
                                      .encode()).hexdigest()[:32]
        return eid, envelope("forge.usage.recorded", "nf-worker/" + worker_id, self.user_id,
                             eid, data)

    def send(self, i, meter, quantity):
        _, value = self.event(i, meter, quantity)
        produce(self.producer, "forge.usage", self.user_id, value)
        self.sent[meter] = self.sent.get(meter, 0) + quantity
        d = json.loads(value)["data"]
        key = (d["job_id"], meter, d["window_start"][:13])
        self.cells[key] = self.cells.get(key, 0) + quantity
        return value

    def want(self):
        """{meter: (quantity, cost)} of everything send() sent."""
        return cells_cost(self.cells)


# =========================================================================== the tests

@pytest.fixture(scope="module")
def billed(api, events):
    """A fresh user runs jobs of four types; their usage is on Kafka and billed."""
    user_id, key = new_user("billing")
    jobs = []
    gen = api.submit("generate", {"domain": "finance", "num_samples": 30, "seed": 3}, key=key)
    assert gen.status_code == 202, gen.text
    done = wait_terminal(api, gen.json()["job_id"], key)
    assert done["status"] == "succeeded", done
    jobs.append(done)
    dataset = done["artifacts"][0]["uri"]
    for job_type, body in (("audit", {"dataset_uri": dataset}),
                           ("evaluate", {"model_id": "tiny-bigram", "benchmark": "mmlu"}),
                           ("deploy", {"model_id": "tiny-bigram"})):
        resp = api.submit(job_type, body, key=key)
        assert resp.status_code == 202, resp.text
        done = wait_terminal(api, resp.json()["job_id"], key)
        assert done["status"] == "succeeded", done
        jobs.append(done)
    ids = {j["job_id"] for j in jobs}
    # every job's usage, as it went over Kafka (the worker's last window may trail the
    # terminal event a little)
    poll("usage events of every job",
         lambda: all(usage_sums(events, {j}) for j in ids), timeout=30)
    time.sleep(1)
    return {"user_id": user_id, "key": key, "jobs": jobs, "ids": ids}


def test_every_summary_line_is_quantity_times_rate(api, events, billed):
    expected = usage_sums(events, billed["ids"])
    assert set(expected) >= {"gpu_ms"}, expected

    def settled():
        body = summary(api, billed["key"])
        got = {m: q for m, q in meter_quantities(body).items() if m in COMPUTE}
        return body if got == {m: q for m, q in expected.items() if m in COMPUTE} else None

    body = poll("summary matching the usage sent", settled)
    check_summary_arithmetic(body, usage_cells(events, billed["ids"]))
    assert body["user_id"] == billed["user_id"]
    assert body["currency"] == "USD"
    assert {jt["job_type"] for jt in body["job_types"]} >= {"generate", "audit", "evaluate",
                                                            "deploy"}
    assert body["period_start"].endswith("-01T00:00:00.000Z"), "defaults to this month"


def final_job(api, job_id, key, timeout=45):
    """The job once its cost is final (cost_final), which follows its end within moments."""
    return poll(f"cost_final of {job_id}",
                lambda: (lambda j: j if j["cost_final"] else None)(
                    api.get_job(job_id, key=key).json()), timeout=timeout)


def test_job_cost_usd_follows_its_usage(api, events, billed):
    for job in billed["jobs"]:
        final = final_job(api, job["job_id"], billed["key"])
        # final: the whole of its usage is priced, so it equals what went over Kafka
        assert final["cost_usd"] == usd(job_cost(usage_cells(events, {job["job_id"]})))


def test_job_costs_add_up_to_the_summary(api, events):
    """A fresh user's jobs, each with its own GPU time and tokens: the sum of their final
    cost_usd is exactly the summary's compute lines, per meter-wide total and per job type,
    for a period that covers them (rounding is per cell, so no micro-dollar goes astray)."""
    user_id, key = new_user("addup")
    ids = []
    for n in (3, 7, 11, 19, 23, 29):
        resp = api.submit("generate", {"domain": "law", "num_samples": n, "seed": n}, key=key)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["job_id"])
    jobs = [final_job(api, j, key, timeout=120) for j in ids]
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    now = time.time()
    body = summary(api, key,
                   period_start=time.strftime("%Y-%m-%d", time.gmtime(now - 2 * 86400)),
                   period_end=time.strftime("%Y-%m-%d", time.gmtime(now + 2 * 86400)))
    check_summary_arithmetic(body, usage_cells(events, set(ids)))
    micros = lambda j: int(j["cost_usd"].replace(".", ""))  # noqa: E731
    lines = sum(c for _, c in compute_totals(body).values())
    assert sum(micros(j) for j in jobs) == lines > 0
    [gen] = [jt for jt in body["job_types"] if jt["job_type"] == "generate"]
    assert sum(micros(j) for j in jobs) == sum(l["cost_micros"] for l in gen["lines"]
                                               if l["meter"] in COMPUTE)
    # and the same figures stay: final means final
    time.sleep(1)
    assert [api.get_job(j, key=key).json()["cost_usd"] for j in ids] == [
        j["cost_usd"] for j in jobs]


def test_usage_series_adds_up_and_filters(api, billed):
    body = summary(api, billed["key"])
    total = meter_quantities(body)
    line_costs = {m: c for m, (_, c) in compute_totals(body).items()}
    for bucket in ("hour", "day"):
        resp = api.call("GET", "/api/billing/usage", key=billed["key"], params={"bucket": bucket})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["bucket"] == bucket and body["meter"] is None
        sums = {}
        costs = {}
        for p in body["points"]:
            sums[p["meter"]] = sums.get(p["meter"], 0) + p["quantity"]
            costs[p["meter"]] = costs.get(p["meter"], 0) + p["cost_micros"]
            assert p["cost_usd"] == usd(p["cost_micros"]), p
            assert p["start"].endswith(":00:00.000Z" if bucket == "hour" else "T00:00:00.000Z")
        for meter in COMPUTE:
            assert sums.get(meter, 0) == total.get(meter, 0), (bucket, meter)
            # points add up whole cells too, so they add up to the line exactly
            assert costs.get(meter, 0) == line_costs.get(meter, 0), (bucket, meter)
    resp = api.call("GET", "/api/billing/usage", key=billed["key"],
                    params={"meter": "gpu_ms", "job_type": "deploy", "bucket": "day"})
    body = resp.json()
    assert body["meter"] == "gpu_ms" and body["job_type"] == "deploy"
    assert body["points"] and all(p["meter"] == "gpu_ms" for p in body["points"])
    deploy = next(jt for jt in summary(api, billed["key"])["job_types"]
                  if jt["job_type"] == "deploy")
    assert sum(p["quantity"] for p in body["points"]) == sum(
        l["quantity"] for l in deploy["lines"] if l["meter"] == "gpu_ms")
    # a period before any usage: empty, not an error
    resp = api.call("GET", "/api/billing/summary", key=billed["key"],
                    params={"period_start": "2020-01-01", "period_end": "2020-02-01"})
    assert resp.json()["meters"] == [] and resp.json()["total_usd"] == "0.000000"


@pytest.mark.parametrize("path,params,param", [
    ("/api/billing/summary", {"period_start": "yesterday"}, "period_start"),
    ("/api/billing/summary", {"period_end": "2026-02-30"}, "period_end"),
    ("/api/billing/summary", {"period_start": "2026-03-02", "period_end": "2026-03-01"},
     "period_end"),
    ("/api/billing/summary", {"period_start": "2020-01-01", "period_end": "2022-01-01"},
     "period_end"),
    ("/api/billing/usage", {"bucket": "week"}, "bucket"),
    ("/api/billing/usage", {"meter": "cpu_ms"}, "meter"),
    ("/api/billing/usage", {"job_type": "bake"}, "job_type"),
    ("/api/billing/usage", {"period_start": "2026-13-01"}, "period_start"),
])
def test_bad_billing_queries_are_422(api, path, params, param):
    resp = api.call("GET", path, params=params)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["param"] == param


@pytest.mark.parametrize("body,param", [
    ({"monthly_limit_usd": -1}, "monthly_limit_usd"),
    ({"monthly_limit_usd": "ten"}, "monthly_limit_usd"),
    ({"monthly_limit_usd": "1.0000001"}, "monthly_limit_usd"),
    ({"monthly_limit_usd": 1e12}, "monthly_limit_usd"),
    ({"monthly_limit_usd": True}, "monthly_limit_usd"),
    ({}, "monthly_limit_usd"),
    ({"monthly_limit_usd": 5, "currency": "EUR"}, "currency"),
])
def test_bad_budgets_are_422(api, body, param):
    resp = api.call("PUT", "/api/billing/budget", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["param"] == param


def test_billing_needs_a_key_and_a_json_body(api):
    for method, path in (("GET", "/api/billing/summary"), ("GET", "/api/billing/usage"),
                         ("GET", "/api/billing/budget"), ("PUT", "/api/billing/budget")):
        assert api.call(method, path, key=None, json={}).status_code == 403
    resp = api.call("PUT", "/api/billing/budget", data="{not json",
                    headers={"Content-Type": "application/json"})
    assert resp.status_code == 400


def test_tenancy_a_user_sees_only_their_bill(api, billed):
    _, other = new_user("tenant")
    body = summary(api, other)
    assert body["meters"] == [] and body["total_micros"] == 0
    # a user_id in the query is not passed on: the caller's own bill, still empty
    body = summary(api, other, user_id=billed["user_id"])
    assert body["total_micros"] == 0


def test_injected_duplicates_change_nothing(api, events, producer, billed):
    before = compute_totals(summary(api, billed["key"]))
    dup = logged_events(events, lambda e: e["type"] == "forge.usage.recorded"
                        and e["data"]["job_id"] in billed["ids"])
    assert dup
    for e in dup:
        for _ in range(2):
            produce(producer, "forge.usage", e["subject"], json.dumps(e))
    producer.flush(30)
    wait_caught_up()
    assert compute_totals(summary(api, billed["key"])) == before


def test_refused_and_malformed_usage_go_to_the_dead_letter_topic(api, producer, events):
    user_id, key = new_user("dlq")
    syn = Synthetic(producer, user_id, njobs=1)
    marker = uuid.uuid4().hex
    bad = {
        f"{MALFORMED_KEY_PREFIX.decode()}json-{marker}": "{not json",
        f"{MALFORMED_KEY_PREFIX.decode()}neg-{marker}": None,
        f"{MALFORMED_KEY_PREFIX.decode()}meter-{marker}": None,
        f"{MALFORMED_KEY_PREFIX.decode()}noid-{marker}": None,
        f"{MALFORMED_KEY_PREFIX.decode()}absurd-{marker}": None,
    }
    _, good = syn.event(0, "gpu_ms", 1000)
    tweaks = {"neg": ("quantity", -5), "meter": ("meter", "cpu_ms"), "noid": ("id", None),
              "absurd": ("quantity", 10 ** 12)}
    for k in bad:
        kind = k.split("-")[-2]
        if kind in tweaks:
            ev = json.loads(good)
            field, value = tweaks[kind]
            if field == "id":
                del ev["id"]
            else:
                ev["data"][field] = value
            bad[k] = json.dumps(ev)
    for k, v in bad.items():
        produce(producer, "forge.usage", k, v)
    # a worker billing a job it did not lease: refused (well-formed, so on the record)
    refused_id, refused = syn.event(0, "gpu_ms", 5000, worker_id=ulid("wrk"))
    produce(producer, "forge.usage", user_id, refused)
    # and after all that, good usage still goes through: nothing is stalled
    syn.send(0, "gpu_ms", 1234)
    syn.send(0, "output_tokens", 77)
    producer.flush(30)

    poll("good usage after the bad", lambda: compute_totals(summary(api, key)) == syn.want())
    dlq = Consumer({"bootstrap.servers": env("NF_TEST_KAFKA_BROKERS"),
                    "group.id": f"e2e-dlq-{marker}", "auto.offset.reset": "earliest"})
    dlq.subscribe(["forge.usage.dlq"])
    found, deadline = set(), time.monotonic() + 30
    expect = set(bad) | {refused_id}
    while time.monotonic() < deadline and found != expect:
        msg = dlq.poll(0.5)
        if msg is None or msg.error():
            continue
        if msg.key() and msg.key().decode() in bad:
            found.add(msg.key().decode())
        elif refused_id.encode() in msg.value():
            found.add(refused_id)
    dlq.close()
    assert found == expect, f"missing from forge.usage.dlq: {expect - found}"
    wait_caught_up()
    assert compute_totals(summary(api, key)) == syn.want()


def test_replay_from_the_beginning_changes_no_total(api, billed, tmp_path):
    """A second nf-billing with a new consumer group reads forge.usage and forge.jobs.events
    from offset 0 into the same ledger: every event is a duplicate, no total moves."""
    binary = pathlib.Path(os.environ.get("NF_TEST_BILLING_BIN",
                                         ROOT / "build-test" / "bin" / "nf-billing"))
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    before = summary(api, billed["key"])
    costs = {j: api.get_job(j, key=billed["key"]).json()["cost_usd"] for j in billed["ids"]}
    group = f"e2e-replay-{uuid.uuid4().hex[:12]}"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    log_path = pathlib.Path(env("NF_TEST_LOG_DIR")) / "billing-replay.log"
    child_env = dict(os.environ, NF_KAFKA_BROKERS=env("NF_TEST_KAFKA_BROKERS"),
                     NF_PG_DSN=env("NF_TEST_PG_DSN"), NF_BILLING_ADDR=f"127.0.0.1:{port}",
                     NF_BILLING_GROUP=group,
                     ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1")
    with open(log_path, "a") as log:
        child = subprocess.Popen([str(binary)], env=child_env, stdout=log, stderr=log)
    try:
        poll("replaying billing ready", lambda: billing_ready(f"http://127.0.0.1:{port}"),
             timeout=60)
        wait_caught_up(group, timeout=180)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        counts = {line.split("result=\"")[1].split("\"")[0]: int(line.rsplit(" ", 1)[1])
                  for line in metrics.splitlines()
                  if line.startswith("nf_bill_usage_events_total{")}
        # it read the whole topic, and what it read was known already
        assert counts["duplicate"] >= len(billed["ids"]), counts
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0, f"replaying billing exited badly, see {log_path}"
    after = summary(api, billed["key"])
    assert compute_totals(after) == compute_totals(before)
    assert {j: api.get_job(j, key=billed["key"]).json()["cost_usd"] for j in billed["ids"]} == costs


def test_billing_killed_mid_stream_ends_with_the_same_totals(api, producer):
    """kill -9 billing while usage streams in, restart it: at-least-once delivery plus the
    insert-if-absent ledger give exactly the totals that were sent."""
    user_id, key = new_user("crash")
    syn = Synthetic(producer, user_id, njobs=5, job_type="distill")
    url = billing_url()
    pidfile = stack("forge_svc_pidfile billing")
    stop = threading.Event()
    sent = {"n": 0}

    def stream():
        i = 0
        while not stop.is_set():
            for meter, q in (("gpu_ms", 60000 + i), ("input_tokens", 100 + i),
                             ("output_tokens", 10 + i)):
                syn.send(i, meter, q)
            i += 1
            sent["n"] = i
            if i % 20 == 0:
                producer.flush(10)
            time.sleep(0.005)
        producer.flush(30)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        poll("stream under way", lambda: sent["n"] >= 200, timeout=60)
        os.kill(int(pathlib.Path(pidfile).read_text().strip()), signal.SIGKILL)
        time.sleep(2)  # the stream goes on while billing is down
        stack("forge_svc_start billing")
        poll("billing ready again", lambda: billing_ready(url), timeout=90)
        time.sleep(2)
    finally:
        stop.set()
        t.join(60)
    assert sent["n"] >= 200
    want = syn.want()
    poll("totals after the restart", lambda: compute_totals(summary(api, key)) == want,
         timeout=90)
    wait_caught_up()
    assert compute_totals(summary(api, key)) == want


def test_billing_outage_is_remembered(api):
    """Billing down: the first job waits NF_SCHEDULER_BUDGET_WAIT_MS (4 s in the test
    profile) and is then dispatched unchecked; the outage is remembered, so a job submitted
    after that is dispatched at once instead of waiting again; once billing answers, budgets
    are checked before dispatch again."""
    _, key = new_user("outage")
    url = billing_url()
    wait_s = 4.0
    body = {"domain": "outage", "num_samples": 2}

    def left_queue(job_id):
        job = api.get_job(job_id, key=key).json()
        return job["status"] != "queued" and job

    pidfile = stack("forge_svc_pidfile billing")
    os.kill(int(pathlib.Path(pidfile).read_text().strip()), signal.SIGKILL)
    try:
        first = api.submit("generate", body, key=key)
        assert first.status_code == 202, first.text
        t0 = time.monotonic()
        poll("first job dispatched unchecked", lambda: left_queue(first.json()["job_id"]),
             timeout=60, interval=0.1)
        took = time.monotonic() - t0
        print(f"\nbilling down: first job waited {took:.2f}s", flush=True)
        assert took >= wait_s - 0.5, "the first job did not wait for billing"

        later = api.submit("generate", body, key=key)
        assert later.status_code == 202, later.text
        t0 = time.monotonic()
        poll("later job dispatched", lambda: left_queue(later.json()["job_id"]), timeout=60,
             interval=0.05)
        took = time.monotonic() - t0
        print(f"billing down: the next job waited {took:.2f}s", flush=True)
        assert took < wait_s, "the outage was not remembered: the next job waited again"
    finally:
        stack("forge_svc_start billing")
        poll("billing ready again", lambda: billing_ready(url), timeout=90)
    for job in (first, later):
        job_id = job.json()["job_id"]
        poll(f"{job_id} succeeded",
             lambda: api.get_job(job_id, key=key).json()["status"] == "succeeded", timeout=90)


def budget_alerts(events, user_id):
    return logged_events(events, lambda e: e["type"] == "forge.billing.budget_alert"
                         and e["subject"] == user_id)


def thresholds(events, user_id):
    return sorted({e["id"]: e["data"]["threshold_percent"]
                   for e in budget_alerts(events, user_id)}.values())


def test_budget_alerts_once_per_threshold(api, events, producer):
    user_id, key = new_user("alerts")
    syn = Synthetic(producer, user_id, njobs=1)
    syn.send(0, "gpu_ms", 3600000)  # $2.50
    producer.flush(30)
    poll("spending billed", lambda: summary(api, key)["total_micros"] == 2500000)

    put = api.call("PUT", "/api/billing/budget", key=key, json={"monthly_limit_usd": "3.00"})
    assert put.status_code == 200, put.text
    assert put.json()["monthly_limit_usd"] == "3.000000"
    assert put.json()["spent_usd"] == "2.500000" and put.json()["percent_used"] == 83
    assert put.json()["over_budget"] is False
    poll("alerts at 50 and 80 %", lambda: thresholds(events, user_id) == [50, 80])
    got = api.call("GET", "/api/billing/budget", key=key).json()
    assert got["alerts_sent"] == [50, 80] and got["remaining_usd"] == "0.500000"

    # usage crossing 100 %: the alert comes from the ingest path this time
    syn.send(0, "gpu_ms", 720000)  # +$0.50 -> $3.00
    producer.flush(30)
    poll("alert at 100 %", lambda: thresholds(events, user_id) == [50, 80, 100])
    # lowering the budget again this month announces nothing new
    assert api.call("PUT", "/api/billing/budget", key=key,
                    json={"monthly_limit_usd": 1}).json()["over_budget"] is True
    syn.send(0, "output_tokens", 1000)
    producer.flush(30)
    time.sleep(3)
    wait_caught_up()
    # one alert per threshold (an alert re-sent after a crash would carry the same id)
    alerts = {e["id"]: e for e in budget_alerts(events, user_id)}.values()
    assert sorted(e["data"]["threshold_percent"] for e in alerts) == [50, 80, 100], alerts
    hundred = next(e for e in alerts if e["data"]["threshold_percent"] == 100)
    assert hundred["data"]["spent_usd"] == "3.000000"
    assert hundred["data"]["monthly_limit_usd"] == "3.000000"


def test_over_budget_users_cannot_dispatch(api, events):
    user_id, key = new_user("budget")
    put = api.call("PUT", "/api/billing/budget", key=key, json={"monthly_limit_usd": 0})
    assert put.status_code == 200 and put.json()["over_budget"] is True
    resp = api.submit("generate", {"domain": "x", "num_samples": 3}, key=key)
    assert resp.status_code == 202, resp.text  # accepted (durable), then refused
    job_id = resp.json()["job_id"]
    done = wait_terminal(api, job_id, key)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "budget_exceeded" and done["error"]["class"] == "user_error"
    assert done["cost_usd"] == "0.000000" and done["worker_id"] is None
    # it never ran: billing closes its attempt on the refusal, so its cost is final at 0
    assert final_job(api, job_id, key)["cost_usd"] == "0.000000"
    failed = events.wait_for(job_id, "forge.job.failed")
    assert failed[0]["data"]["error"]["code"] == "budget_exceeded"
    assert not [e for t, e in events.for_job(job_id) if t.startswith("forge.jobs.")
                and e["type"] == "forge.job.dispatch"], "a refused job is never dispatched"

    # budget removed: the next job runs
    put = api.call("PUT", "/api/billing/budget", key=key, json={"monthly_limit_usd": None})
    assert put.status_code == 200 and put.json()["monthly_limit_usd"] is None
    assert put.json()["over_budget"] is False
    resp = api.submit("generate", {"domain": "x", "num_samples": 3}, key=key)
    assert wait_terminal(api, resp.json()["job_id"], key)["status"] == "succeeded"


def storage_window_s():
    """The scheduler's NF_SCHEDULER_STORAGE_WINDOW_S, from its effective-config log line."""
    log = pathlib.Path(env("NF_TEST_LOG_DIR")) / "scheduler.log"
    for line in log.read_text(errors="replace").splitlines():
        if '"event":"config"' in line and "NF_SCHEDULER_STORAGE_WINDOW_S" in line:
            return int(json.loads(line)["NF_SCHEDULER_STORAGE_WINDOW_S"])
    return None


def test_stored_artifacts_are_metered(api, events, billed):
    window = storage_window_s()
    if window is None or window > 30:
        pytest.skip(f"storage window {window} s: too long to wait for in a test")
    with_artifacts = {j["job_id"]: j for j in billed["jobs"] if j["artifacts"]}
    assert with_artifacts

    def metered():
        return [e for e in logged_events(events, lambda e: e["type"] == "forge.usage.recorded"
                                         and e["data"]["meter"] == "storage_byte_hours"
                                         and e["data"]["job_id"] in with_artifacts)]

    found = poll("storage_byte_hours for the stored artifacts", metered, timeout=3 * window + 20)
    for e in found:
        d, job = e["data"], with_artifacts[e["data"]["job_id"]]
        assert e["source"] == "nf-scheduler" and "worker_id" not in d
        start = calendar.timegm(time.strptime(d["window_start"][:19], "%Y-%m-%dT%H:%M:%S"))
        want = "use_" + hashlib.sha256(
            f"{d['job_id']}:{job['attempt']}:storage_byte_hours:{start}".encode()).hexdigest()[:32]
        assert e["id"] == want, "deterministic per job and window"
        stored = sum(a["bytes"] for a in job["artifacts"])
        # at most every byte for the whole window
        assert 0 < d["quantity"] <= stored * window // 3600 + 1, (d, stored)
    body = poll("storage on the bill", lambda: (lambda b: b if "storage_byte_hours" in
                                                meter_quantities(b) else None)(
        summary(api, billed["key"])))
    check_summary_arithmetic(body)


def test_uploaded_files_storage_is_on_the_bill_as_files(api, producer):
    """The storage of an uploaded file (no job made it) is billed under the group "files":
    the summary and the usage series answer 200 with it (the summary answered 500 on
    such a cell before). The stack meters storage once an hour, so the test publishes the
    record the scheduler's meter makes at a window's end (forge.usage.recorded from
    nf-scheduler, job_type "files", job_id the file's artifact id) for a real upload;
    the meter itself is test_stored_artifacts_are_metered's."""
    user_id, key = new_user("files-bill")
    resp = api.call("POST", "/api/files", key=key, data={"purpose": "dataset"},
                    files={"file": ("stored.jsonl", b'{"text": "kept"}\n' * 100,
                                    "application/octet-stream")})
    assert resp.status_code == 201, resp.text
    file_id = resp.json()["id"]
    start = (int(time.time()) // 3600 - 1) * 3600
    eid = "use_" + hashlib.sha256(f"{file_id}:1:storage_byte_hours:{start}".encode()).hexdigest()[:32]
    data = {"user_id": user_id, "job_id": file_id, "job_type": "files", "attempt": 1,
            "meter": "storage_byte_hours", "quantity": 1700,
            "window_start": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start)),
            "window_end": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(start + 3600))}
    produce(producer, "forge.usage", user_id,
            envelope("forge.usage.recorded", "nf-scheduler", user_id, eid, data))
    producer.flush(30)

    def files_group():
        body = summary(api, key)
        return body if any(g["job_type"] == "files" for g in body["job_types"]) else None

    body = poll("the files group on the bill", files_group, timeout=60)
    check_summary_arithmetic(body)
    group = next(g for g in body["job_types"] if g["job_type"] == "files")
    assert [(l["meter"], l["quantity"]) for l in group["lines"]] == \
        [("storage_byte_hours", 1700)], group
    resp = api.call("GET", "/api/billing/usage", key=key,
                    params={"job_type": "files", "meter": "storage_byte_hours"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["job_type"] == "files", resp.json()
    assert sum(p["quantity"] for p in resp.json()["points"]) == 1700, resp.json()
