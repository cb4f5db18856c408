#!/usr/bin/env python3
"""Fleet heartbeat benchmark: registers 1,000 workers with nf-worker-manager and
heartbeats them all, against a GET /healthz baseline of the same server in the same run.

    ./forge bench                (the running dev stack)
    python3 tests/bench/fleet_heartbeats.py --workers 1000 --seconds 10 --procs 4 --conns 32

What it does:
  1. baseline: closed-loop GET /healthz for SECONDS on PROCS x CONNS keep-alive
     connections (the server's HTTP floor: no Redis, no auth);
  2. register: WORKERS workers (POST /api/workers/register, registration token); every
     answer must be 201;
  3. heartbeat: closed-loop POST /api/workers/heartbeat for SECONDS, the workers taken in
     turn (each heartbeat authenticates the worker token and runs the heartbeat script);
     every answer must be 200;
  4. one full round: every worker heartbeats once more and must be listed live (wm:workers
     stamped, GET /api/workers/ shows idle);
  5. prints the rates, latency percentiles, the worker-manager's CPU (utime + stime from
     /proc/<pid>/stat over each phase: CPU seconds per second, and CPU microseconds per
     request) and the ratio heartbeat / baseline; exits 1 on any error;
  6. with --paced SECONDS (off by default): false positives of the liveness settings.
     Every worker heartbeats at the interval the manager told it at registration (its
     own phase, as agents do; a beat whose slot passed while the previous answer was
     awaited goes out at once, as the agent does), for SECONDS. With --jobs each worker
     also leases one real `generate` job (submitted through the API, labelled so only
     these workers match), confirms it at once and lists it in every beat; at the end it
     reports the job succeeded (POST /api/workers/events) and releases the lease; the last
     beat says `draining`, as the agent's farewell does, so the worker is drained. With
     --busy N, N processes burn CPU meanwhile. A live worker must never lose a lease (a
     409 naming its job) nor be declared lost: the manager's wm_workers_lost_total,
     wm_leases_reaped_total and wm_heartbeat_lost_jobs_total must not move. Prints the
     counts, the heartbeat latencies and the longest gap between two accepted beats of one
     worker (the lease expires when that gap exceeds the lease TTL);
  7. drains every benchmark worker (POST /api/workers/drain) so none is later reported
     lost.

The load generator talks HTTP/1.1 straight to the worker-manager (not through the
gateway, which would measure the gateway too), from PROCS processes with asyncio.
Environment (./forge bench sets them): NF_TEST_API_URL (the worker-manager is at its port
+ 104, the stack's layout) or NF_TEST_WM_URL, NF_TEST_WORKER_REGISTRATION_TOKEN; for
--jobs also NF_TEST_API_KEY (or NF_API_KEY).

    python3 tests/bench/fleet_heartbeats.py --seconds 5 --paced 180 --jobs --busy 2
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import sys
import time
import urllib.parse
import uuid


def wm_url():
    url = os.environ.get("NF_TEST_WM_URL")
    if url:
        return url.rstrip("/")
    api = urllib.parse.urlsplit(os.environ.get("NF_TEST_API_URL", "http://127.0.0.1:8000"))
    return f"http://{api.hostname}:{(api.port or 80) + 104}"


# ---------------------------------------------------------------- the worker-manager process

def listening_pid(port):
    """The pid of the process listening on 127.0.0.1:port (from /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            pass
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# ---------------------------------------------------------------- a tiny HTTP/1.1 client

class Conn:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method, path, body=None, headers=None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(data)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.writer.close()
            self.reader = self.writer = None
        return status, payload


# ---------------------------------------------------------------- phases (in worker processes)

def run_phase(args):
    """One load process: (kind, url, workers slice, seconds, conns, token) -> stats."""
    kind, url, workers, seconds, conns, token = args
    u = urllib.parse.urlsplit(url)
    return asyncio.run(_phase(kind, u.hostname, u.port, workers, seconds, conns, token))


async def _phase(kind, host, port, workers, seconds, conns, token):
    lat, errors, samples = [], [], []
    done = 0
    queue = list(workers)
    deadline = time.monotonic() + seconds if seconds else None

    async def one(conn, w):
        nonlocal done
        t0 = time.perf_counter()
        if kind == "healthz":
            status, body = await conn.request("GET", "/healthz")
            ok = status == 200
        elif kind == "register":
            status, body = await conn.request(
                "POST", "/api/workers/register", w,
                {"Authorization": f"Bearer {token}"})
            ok = status == 201
            if ok:
                reg = json.loads(body)
                samples.append((reg["worker_id"], reg["worker_token"],
                                reg["heartbeat_interval_s"]))
        elif kind == "submit":
            status, body = await conn.request("POST", "/api/jobs/generate", w,
                                              {"X-Nexa-Api-Key": token})
            ok = status == 202
            if ok:
                samples.append(json.loads(body)["job_id"])
        elif kind == "drain":
            status, body = await conn.request("POST", "/api/workers/drain",
                                              {"worker_id": w[0]},
                                              {"Authorization": f"Bearer {token}"})
            # 404: its record already expired (no beat for 3 intervals): nothing to drain
            ok = status in (202, 404)
        else:
            status, body = await conn.request("POST", "/api/workers/heartbeat",
                                              {"worker_id": w[0], "jobs": []},
                                              {"Authorization": f"Bearer {w[1]}"})
            ok = status == 200
            if ok and kind == "round":
                reply = json.loads(body)
                ok = reply.get("drain") is False and reply.get("lost") == []
        lat.append(time.perf_counter() - t0)
        done += 1
        if not ok:
            errors.append(f"{kind}: {status} {body[:200]!r}")

    async def loop(i):
        conn = Conn(host, port)
        k = i
        while True:
            if deadline is None:
                if not queue:
                    return
                w = queue.pop()
            else:
                if time.monotonic() >= deadline:
                    return
                w = workers[k % len(workers)] if workers else None
                k += conns
            try:
                await one(conn, w)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{kind}: {exc!r}")
                conn = Conn(host, port)

    t0 = time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(conns)))
    return {"done": done, "elapsed": time.monotonic() - t0, "lat": lat, "errors": errors[:20],
            "nerrors": len(errors), "registered": samples}


def run_paced(args):
    """One load process of the paced phase: (url, workers slice, seconds, conns, jobs)."""
    url, workers, seconds, conns, jobs = args
    u = urllib.parse.urlsplit(url)
    return asyncio.run(_paced(u.hostname, u.port, workers, seconds, conns, jobs))


async def _paced(host, port, workers, seconds, conns, jobs):
    """Each worker beats every `interval` (its registration answer) from a random phase;
    with `jobs` it first leases a job, then lists it in every beat, then reports it."""
    idle = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(Conn(host, port))
    st = {"beats": 0, "ok": 0, "lat": [], "gaps": [], "lost_jobs": [], "errors": [],
          "nerrors": 0, "leased": 0, "reported": 0, "released": 0, "late": 0}

    async def call(path, body, token):
        conn = await idle.get()
        try:
            return await conn.request("POST", path, body, {"Authorization": f"Bearer {token}"})
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            conn = Conn(host, port)
            raise
        finally:
            idle.put_nowait(conn)

    def error(what):
        st["nerrors"] += 1
        if len(st["errors"]) < 20:
            st["errors"].append(what)

    async def worker(wid, token, interval):
        held = []  # [{job_id, lease_id}]: what the beats list
        job = {}
        last_ok = None
        beat_now = asyncio.Event()
        end = time.monotonic() + seconds

        async def beat(draining=False):
            nonlocal last_ok
            t0 = time.monotonic()
            try:
                status, body = await call("/api/workers/heartbeat",
                                          {"worker_id": wid, "jobs": held,
                                           "draining": draining}, token)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                error(f"heartbeat: {exc!r}")
                return
            t1 = time.monotonic()
            st["beats"] += 1
            st["lat"].append(t1 - t0)
            if status == 409:  # a live worker's lease was taken: a false positive
                lost = json.loads(body).get("lost", [])
                st["lost_jobs"] += lost
                held[:] = [h for h in held if h["job_id"] not in lost]
            elif status != 200:
                error(f"heartbeat: {status} {body[:200]!r}")
                return
            st["ok"] += 1
            if last_ok is not None:
                st["gaps"].append(t1 - last_ok)
            last_ok = t1

        async def acquire():
            # its own connection, as the agent's: a long poll never holds up a beat
            conn = Conn(host, port)
            while not held and time.monotonic() < end:
                try:
                    status, body = await conn.request(
                        "POST", "/api/workers/next_job", {"worker_id": wid, "wait_seconds": 5},
                        {"Authorization": f"Bearer {token}"})
                except (OSError, ConnectionError, asyncio.IncompleteReadError,
                        ValueError) as exc:
                    error(f"next_job: {exc!r}")
                    conn = Conn(host, port)
                    await asyncio.sleep(1)
                    continue
                if status == 200:
                    r = json.loads(body)
                    job.update(r["job"])
                    held.append({"job_id": r["job"]["job_id"], "lease_id": r["lease_id"]})
                    st["leased"] += 1
                    beat_now.set()  # the agent confirms a new lease at once
                elif status != 204:
                    error(f"next_job: {status} {body[:200]!r}")
                    await asyncio.sleep(1)
            if conn.writer is not None:
                conn.writer.close()

        poller = asyncio.ensure_future(acquire()) if jobs else None
        slot = time.monotonic() + random.uniform(0, interval)
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if slot > now:
                try:
                    await asyncio.wait_for(beat_now.wait(), min(slot, end) - now)
                except asyncio.TimeoutError:
                    pass
                if time.monotonic() >= end:
                    break
            if beat_now.is_set():
                beat_now.clear()
            else:
                if time.monotonic() - slot > 0.5 * interval:
                    st["late"] += 1  # the previous answer kept this beat waiting
                slot += interval
            await beat()
        if poller:
            poller.cancel()
        for h in list(held):
            ev = {"specversion": "1.0", "id": f"evt_bench_{uuid.uuid4().hex}",
                  "source": f"nf-worker/{wid}", "type": "forge.job.succeeded",
                  "subject": h["job_id"], "datacontenttype": "application/json",
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                  "data": {"job_id": h["job_id"], "user_id": job.get("user_id"),
                           "attempt": job.get("attempt", 1), "status": "succeeded",
                           "result": {"bench": True}, "artifacts": []}}
            try:
                status, body = await call("/api/workers/events",
                                          {"worker_id": wid, "lease_id": h["lease_id"],
                                           "event": ev}, token)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                status, body = 0, repr(exc).encode()
            if status == 202:
                st["reported"] += 1
            else:
                error(f"report: {status} {body[:200]!r}")
        # the agent's farewell: a beat listing nothing releases the reported job's lease,
        # and `draining` makes the worker drained, not lost, once it goes silent
        released = bool(held)
        held.clear()
        await beat(draining=True)
        st["released"] += released

    await asyncio.gather(*(worker(*w) for w in workers))
    return st


def paced(pool, url, workers, seconds, procs, conns, jobs):
    parts = [(url, workers[i::procs], seconds, conns, jobs) for i in range(procs)]
    results = pool.map(run_paced, parts)
    out = {k: [] if isinstance(v, list) else 0 for k, v in results[0].items()}
    for r in results:
        for k, v in r.items():
            out[k] = out[k] + v
    out["lat"].sort()
    out["gaps"].sort()
    return out


def wm_counters(url, names):
    """The worker-manager's counters `names` from its /metrics."""
    u = urllib.parse.urlsplit(url)

    async def get():
        return await Conn(u.hostname, u.port).request("GET", "/metrics")
    status, body = asyncio.run(get())
    values = {}
    for line in body.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in names:
            values[parts[0]] = float(parts[1])
    return values


def burn(stop):
    while not stop.is_set():
        sum(i * i for i in range(10000))


def phase(pool, kind, url, items, seconds, procs, conns, token):
    """Runs a phase on `procs` processes; items are split between them."""
    if kind == "healthz":
        parts = [items] * procs
    else:
        parts = [items[i::procs] for i in range(procs)]
    jobs = [(kind, url, part, seconds, conns, token) for part in parts]
    results = pool.map(run_phase, jobs)
    lat = sorted(x for r in results for x in r["lat"])
    return {
        "done": sum(r["done"] for r in results),
        "elapsed": max(r["elapsed"] for r in results),
        "lat": lat,
        "nerrors": sum(r["nerrors"] for r in results),
        "errors": [e for r in results for e in r["errors"]][:10],
        "registered": [x for r in results for x in r["registered"]],
    }


def pct(lat, q):
    return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0


def measured(pool, pid, *a):
    c0, t0 = cpu_seconds(pid), time.monotonic()
    r = phase(pool, *a)
    r["cpu"] = cpu_seconds(pid) - c0
    r["wall"] = time.monotonic() - t0
    return r


def report(name, r):
    rate = r["done"] / r["elapsed"] if r["elapsed"] else 0
    cpu_pct = 100 * r["cpu"] / r["wall"] if r["wall"] else 0
    us = 1e6 * r["cpu"] / r["done"] if r["done"] else 0
    print(f"  {name:<10} {r['done']:>8} requests  {rate:>9.0f}/s  p50 {pct(r['lat'], .5):6.2f} ms"
          f"  p99 {pct(r['lat'], .99):6.2f} ms  wm CPU {cpu_pct:5.1f}% ({us:6.1f} us/request)"
          f"  errors {r['nerrors']}")
    for e in r["errors"]:
        print(f"      {e}")
    return rate


LIVENESS = ("wm_workers_lost_total", "wm_leases_reaped_total", "wm_heartbeat_lost_jobs_total")


def run_paced_phase(pool, args, workers, run, api_key):
    """--paced: the false-positive measurement (module docstring, step 6). True on failure."""
    interval = workers[0][2]
    failed = False
    if args.jobs:
        bodies = [{"domain": "bench", "num_samples": 1, "labels": {"run": run},
                   "metadata": {"bench": "fleet_heartbeats"}} for _ in workers]
        sub = phase(pool, "submit", args.api, bodies, 0, args.procs, args.conns, api_key)
        report("submit", {**sub, "cpu": 0, "wall": sub["elapsed"]})
        failed |= sub["nerrors"] > 0
    before = wm_counters(args.url, LIVENESS)
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    burners = [ctx.Process(target=burn, args=(stop,)) for _ in range(args.busy)]
    for b in burners:
        b.start()
    t0 = time.monotonic()
    try:
        r = paced(pool, args.url, workers, args.paced, args.procs, args.conns, args.jobs)
    finally:
        stop.set()
        for b in burners:
            b.join()
    wall = time.monotonic() - t0
    time.sleep(1)  # the reaper's last round
    after = wm_counters(args.url, LIVENESS)
    moved = {k: int(after.get(k, 0) - before.get(k, 0)) for k in LIVENESS}
    gaps = r["gaps"]
    print(f"  paced      {len(workers)} workers, one beat / {interval} s each, {args.paced:g} s"
          f" ({wall:.0f} s with the wind-down), {args.busy} CPU burners"
          f"{', each holding a leased job' if args.jobs else ''}")
    print(f"             {r['beats']} beats ({r['beats'] / wall:.0f}/s), latency p50 "
          f"{pct(r['lat'], .5):.1f} ms p99 {pct(r['lat'], .99):.1f} ms max "
          f"{pct(r['lat'], 1):.1f} ms; {r['late']} beats sent late (answer pending)")
    print(f"             longest gap between two accepted beats of one worker "
          f"{gaps[-1] if gaps else 0:.2f} s (p99 {pct(gaps, .99) / 1000:.2f} s); gaps over 2 "
          f"intervals: {sum(g > 2 * interval for g in gaps)}")
    if args.jobs:
        print(f"             jobs leased {r['leased']}, reported {r['reported']}, "
              f"released {r['released']}")
    print(f"             false positives: leases lost by live workers {len(r['lost_jobs'])}, "
          + ", ".join(f"{k} +{v}" for k, v in moved.items()))
    for e in r["errors"][:10]:
        print(f"      {e}")
    failed |= r["nerrors"] > 0 or bool(r["lost_jobs"]) or any(moved.values())
    if args.jobs:
        failed |= r["leased"] != len(workers) or r["reported"] != len(workers)
    return failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--procs", type=int, default=4, help="load processes")
    ap.add_argument("--conns", type=int, default=16, help="connections per load process")
    ap.add_argument("--url", default=wm_url(), help="the worker-manager (not the gateway)")
    ap.add_argument("--keep", action="store_true", help="do not drain the workers after")
    ap.add_argument("--paced", type=float, default=0, metavar="SECONDS",
                    help="then every worker heartbeats at its interval for SECONDS, counting "
                         "live workers declared lost and leases lost (0: skip)")
    ap.add_argument("--jobs", action="store_true",
                    help="with --paced: each worker leases a real job and lists it in its beats")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="with --paced: N processes burn CPU meanwhile")
    ap.add_argument("--api", default=os.environ.get("NF_TEST_API_URL", "http://127.0.0.1:8000"),
                    help="the gateway (--jobs submits there)")
    args = ap.parse_args()
    api_key = os.environ.get("NF_TEST_API_KEY") or os.environ.get("NF_API_KEY")
    if args.jobs and not api_key:
        sys.exit("--jobs needs NF_TEST_API_KEY (or NF_API_KEY)")
    run = uuid.uuid4().hex[:10]
    token = os.environ.get("NF_TEST_WORKER_REGISTRATION_TOKEN") or \
        os.environ.get("NF_WORKER_REGISTRATION_TOKEN")
    if not token:
        sys.exit("NF_TEST_WORKER_REGISTRATION_TOKEN is not set (./forge bench sets it)")
    port = urllib.parse.urlsplit(args.url).port
    pid = listening_pid(port)
    if pid is None:
        sys.exit(f"no process listens on port {port}: is the worker-manager at {args.url}?")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().split(b"\0")[0].decode()
    print(f"fleet heartbeat benchmark: {args.workers} workers, {args.procs} x {args.conns} "
          f"connections, {args.seconds:g} s per phase")
    print(f"  worker-manager {args.url} pid {pid} ({cmd})")

    bodies = [{"hostname": f"bench-{i:05d}", "gpu_type": "a100" if i % 2 else "h100",
               "gpu_count": 1 + i % 8, "job_types": ["train", "evaluate", "generate"],
               "labels": {"bench": "fleet", "rack": str(i % 20), "run": run},
               "version": "bench"}
              for i in range(args.workers)]
    failed = False
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.procs) as pool:
        # the baseline first: registered workers silent for 3 heartbeat intervals (6 s by
        # default) would be declared lost before their heartbeat phase
        base = measured(pool, pid, "healthz", args.url, [None], args.seconds, args.procs,
                        args.conns, token)
        base_rate = report("healthz", base)
        reg = measured(pool, pid, "register", args.url, bodies, 0, args.procs, args.conns,
                       token)
        report("register", reg)
        workers = reg["registered"]
        failed |= reg["nerrors"] > 0 or len(workers) != args.workers
        if not workers:
            sys.exit("no worker registered")
        hb = measured(pool, pid, "heartbeat", args.url, workers, args.seconds, args.procs,
                      args.conns, token)
        hb_rate = report("heartbeat", hb)
        rnd = measured(pool, pid, "round", args.url, workers, 0, args.procs, args.conns,
                       token)
        report("round", rnd)
        failed |= base["nerrors"] > 0 or hb["nerrors"] > 0 or rnd["nerrors"] > 0
        failed |= rnd["done"] != len(workers)
        # every worker beat at least once in the heartbeat phase
        per_worker = hb["done"] / len(workers)
        if args.paced > 0:
            failed |= run_paced_phase(pool, args, workers, run, api_key)
        if not args.keep:
            dr = measured(pool, pid, "drain", args.url, workers, 0, args.procs, args.conns,
                          token)
            report("drain", dr)
            failed |= dr["nerrors"] > 0
    interval = workers[0][2]  # the manager's NF_WM_HEARTBEAT_INTERVAL_S
    fleet_rate = 1000 / interval
    print(f"  heartbeat / healthz = {hb_rate / base_rate:.2f}  ({per_worker:.1f} heartbeats "
          f"per worker; at 1 beat / {interval} s, 1,000 workers send {fleet_rate:.0f}/s = "
          f"{100 * fleet_rate / hb_rate:.1f}% of the measured capacity)"
          if base_rate and hb_rate else "  no rate")
    cpu_hb = 1e6 * hb["cpu"] / hb["done"] if hb["done"] else 0
    cpu_base = 1e6 * base["cpu"] / base["done"] if base["done"] else 0
    print(f"  worker-manager CPU per heartbeat {cpu_hb:.0f} us, per healthz {cpu_base:.0f} us "
          f"(x{cpu_hb / cpu_base:.2f})" if cpu_base else "")
    if cpu_hb:
        print(f"  -> one core sustains ~{1e6 / cpu_hb:,.0f} heartbeats/s; 1,000 workers at 1 beat"
              f" / {interval} s cost {fleet_rate * cpu_hb / 1e4:.2f}% of one core (when the wm"
              f" CPU stays well under 100% above, the load generator, not the wm, set the"
              f" rates)")
    if failed:
        print("FAILED: errors above")
        sys.exit(1)
    print("ok: every registration and heartbeat answered without error")


if __name__ == "__main__":
    main()
