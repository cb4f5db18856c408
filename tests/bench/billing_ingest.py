#!/usr/bin/env python3
"""Billing ingest benchmark: usage events through Kafka into nf-billing's ledger, against a
plain COPY of the same rows into Postgres, in the same run on the same server.

    ./forge bench              (the running dev stack)
    python3 tests/bench/billing_ingest.py --events 200000 --jobs 2000 --users 20

What it does:
  1. leases: one forge.job.assigned per synthetic job on forge.jobs.events (the lease
     billing checks every usage event against); waits until billing has them all;
  2. ingest: produces EVENTS forge.usage.recorded events (gpu_ms, input/output tokens,
     each job's windows in order, as workers send them) and waits until every one is a
     row of billing.usage_events; rate = events / (last row committed - first produce);
  3. checks the rollups: usage_hourly per meter equals the sum of what was sent;
  4. COPY: the same rows into a scratch copy of billing.usage_events (same indexes) with
     one psql \\copy; rate = rows / elapsed;
  5. prints both rates and their ratio, then removes the synthetic rows (--keep: leave them).

Environment (./forge bench sets them): NF_TEST_KAFKA_BROKERS, NF_TEST_PG_DSN.
"""
import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time

from confluent_kafka import Producer

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
METERS = [("gpu_ms", 60000), ("input_tokens", 1500), ("output_tokens", 700)]
JOB_TYPES = ["generate", "audit", "distill", "train", "evaluate", "deploy"]


def ulid(prefix, rnd):
    ms = int(time.time() * 1000)
    t = "".join(CROCKFORD[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    return prefix + "_" + t + "".join(rnd.choice(CROCKFORD) for _ in range(16))


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def envelope(etype, source, subject, eid, data):
    return json.dumps({"specversion": "1.0", "id": eid, "source": source, "type": etype,
                       "time": iso(int(time.time() * 1000)), "subject": subject,
                       "datacontenttype": "application/json", "data": data},
                      separators=(",", ":"))


def psql(dsn, sql, stdin=None):
    out = subprocess.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", dsn, "-c", sql],
                         input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


class Session:
    """One psql process kept open for the polling, so polls cost a query, not a process."""

    def __init__(self, dsn):
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", dsn],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def scalar(self, sql):
        self.proc.stdin.write(sql.rstrip(";") + ";\n\\echo __end__\n")
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                sys.exit("psql session ended")
            if line.strip() == "__end__":
                return lines[0].strip() if lines else ""
            lines.append(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def pg_array(values):
    return "ARRAY[" + ",".join("'%s'" % v for v in values) + "]::text[]"


def wait_for(what, target, probe, timeout):
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        n = probe()
        if n >= target:
            return time.monotonic()
        if n != last:
            last = n
        time.sleep(0.1)
    sys.exit(f"{what}: {last}/{target} after {timeout}s - is nf-billing running?")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--keep", action="store_true", help="leave the synthetic rows in place")
    args = ap.parse_args()
    brokers = os.environ.get("NF_TEST_KAFKA_BROKERS") or os.environ.get("NF_KAFKA_BROKERS")
    dsn = os.environ.get("NF_TEST_PG_DSN") or os.environ.get("NF_PG_DSN")
    if not brokers or not dsn:
        sys.exit("NF_TEST_KAFKA_BROKERS and NF_TEST_PG_DSN must be set (./forge bench does)")

    rnd = random.Random()
    users = [ulid("usr", rnd) for _ in range(args.users)]
    jobs = []
    for i in range(args.jobs):
        jobs.append((ulid("job", rnd), users[i % len(users)], JOB_TYPES[i % len(JOB_TYPES)],
                     ulid("wrk", rnd)))
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                         "linger.ms": 20, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 1000000})

    # 1. leases
    for job_id, user_id, _, worker_id in jobs:
        producer.produce("forge.jobs.events", key=job_id, value=envelope(
            "forge.job.assigned", "nf-worker-manager", job_id, ulid("evt", rnd),
            {"job_id": job_id, "user_id": user_id, "attempt": 1, "status": "assigned",
             "worker_id": worker_id}))
    producer.flush(60)
    uarr = pg_array(users)
    session = Session(dsn)
    wait_for("leases", len(jobs), lambda: int(session.scalar(
        f"SELECT count(*) FROM billing.leases WHERE user_id = ANY({uarr})")), 120)

    # 2. the usage events, each job's windows in order
    now = int(time.time() * 1000) - 3600 * 1000
    messages, rows, sent = [], [], {m: 0 for m, _ in METERS}
    per_job = max(1, args.events // len(jobs))
    for n in range(args.events):
        job_id, user_id, job_type, worker_id = jobs[min(n // per_job, len(jobs) - 1)]
        window = n % per_job if n // per_job < len(jobs) else per_job + n
        meter, base = METERS[n % len(METERS)]
        quantity = base + rnd.randrange(1000)
        start = now + (window // len(METERS)) * 60000
        eid = "use_" + hashlib.sha256(
            f"{job_id}:1:{meter}:{window}".encode()).hexdigest()[:32]
        data = {"user_id": user_id, "job_id": job_id, "job_type": job_type, "attempt": 1,
                "worker_id": worker_id, "meter": meter, "quantity": quantity,
                "window_start": iso(start), "window_end": iso(start + 60000)}
        messages.append((user_id, envelope("forge.usage.recorded", "nf-worker/" + worker_id,
                                           user_id, eid, data)))
        rows.append(",".join([eid, user_id, job_id, job_type, "1", worker_id, meter,
                              str(quantity), iso(start), iso(start + 60000)]))
        sent[meter] += quantity

    t0 = time.monotonic()
    for key, value in messages:
        while True:
            try:
                producer.produce("forge.usage", key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    t_produced = time.monotonic()
    t1 = wait_for("ingest", len(messages), lambda: int(session.scalar(
        f"SELECT count(*) FROM billing.usage_events WHERE user_id = ANY({uarr})")),
        args.timeout)
    session.close()
    ingest_s = t1 - t0
    ingest_rate = len(messages) / ingest_s

    # 3. the rollups hold exactly what was sent
    got = dict(line.split("|") for line in psql(
        dsn, f"SELECT meter, sum(quantity) FROM billing.usage_hourly WHERE user_id = ANY({uarr})"
             " GROUP BY meter").splitlines())
    bad = {m: (int(got.get(m, 0)), q) for m, q in sent.items() if int(got.get(m, 0)) != q}

    # 4. COPY of the same rows into a scratch copy of the table (same primary key, indexes)
    psql(dsn, "DROP SCHEMA IF EXISTS bench_copy CASCADE; CREATE SCHEMA bench_copy;"
              " CREATE TABLE bench_copy.usage_events (LIKE billing.usage_events INCLUDING ALL)")
    data = "\n".join(rows) + "\n"
    c0 = time.monotonic()
    psql(dsn, "\\copy bench_copy.usage_events (event_id, user_id, job_id, job_type, attempt,"
              " worker_id, meter, quantity, window_start, window_end) FROM STDIN WITH (FORMAT csv)",
         stdin=data)
    copy_s = time.monotonic() - c0
    copy_rate = len(rows) / copy_s
    psql(dsn, "DROP SCHEMA bench_copy CASCADE")

    if not args.keep:
        for table in ("usage_events", "usage_hourly", "usage_jobs", "leases"):
            psql(dsn, f"DELETE FROM billing.{table} WHERE user_id = ANY({uarr})")

    print(f"billing ingest: {len(messages)} usage events for {len(jobs)} jobs of "
          f"{len(users)} users")
    print(f"  produced in          {t_produced - t0:8.2f} s")
    print(f"  ingested in          {ingest_s:8.2f} s  -> {ingest_rate:10.0f} events/s "
          "(first produce to last commit)")
    print(f"  plain COPY           {copy_s:8.2f} s  -> {copy_rate:10.0f} rows/s")
    print(f"  ingest / COPY        {ingest_rate / copy_rate:8.3f}")
    print(f"  rollups match sent   {'yes' if not bad else 'NO: ' + str(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
