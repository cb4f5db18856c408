#!/usr/bin/env python3
"""Fleet heartbeat benchmark: registers 1,000 workers with nf-worker-manager and
heartbeats them all, against a GET /healthz baseline of the same server in the same run.

    ./forge bench                (the running dev stack)
    python3 tests/bench/fleet_heartbeats.py --workers 1000 --seconds 10 --procs 4 --conns 32

What it does:
  1. register: WORKERS workers (POST /api/workers/register, registration token); every
     answer must be 201;
  2. baseline: closed-loop GET /healthz for SECONDS on PROCS x CONNS keep-alive
     connections (the server's HTTP floor: no Redis, no auth);
  3. heartbeat: closed-loop POST /api/workers/heartbeat for SECONDS, the workers taken in
     turn (each heartbeat authenticates the worker token and runs the heartbeat script);
     every answer must be 200;
  4. one full round: every worker heartbeats once more and must be listed live (wm:workers
     stamped, GET /api/workers/ shows idle);
  5. prints the rates, latency percentiles, the worker-manager's CPU (utime + stime from
     /proc/<pid>/stat over each phase: CPU seconds per second, and CPU microseconds per
     request) and the ratio heartbeat / baseline; exits 1 on any error;
  6. drains every benchmark worker (POST /api/workers/drain) so none is later reported
     lost.

The load generator talks HTTP/1.1 straight to the worker-manager (not through the
gateway, which would measure the gateway too), from PROCS processes with asyncio.
Environment (./forge bench sets them): NF_TEST_API_URL (the worker-manager is at its port
+ 104, the stack's layout) or NF_TEST_WM_URL, NF_TEST_WORKER_REGISTRATION_TOKEN.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import time
import urllib.parse


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
                samples.append((reg["worker_id"], reg["worker_token"]))
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--procs", type=int, default=4, help="load processes")
    ap.add_argument("--conns", type=int, default=16, help="connections per load process")
    ap.add_argument("--url", default=wm_url(), help="the worker-manager (not the gateway)")
    ap.add_argument("--keep", action="store_true", help="do not drain the workers after")
    args = ap.parse_args()
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
               "gpu_count": 1 + i % 8, "job_types": ["train", "evaluate"],
               "labels": {"bench": "fleet", "rack": str(i % 20)}, "version": "bench"}
              for i in range(args.workers)]
    failed = False
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.procs) as pool:
        reg = measured(pool, pid, "register", args.url, bodies, 0, args.procs, args.conns,
                       token)
        report("register", reg)
        workers = reg["registered"]
        failed |= reg["nerrors"] > 0 or len(workers) != args.workers
        if not workers:
            sys.exit("no worker registered")
        base = measured(pool, pid, "healthz", args.url, [None], args.seconds, args.procs,
                        args.conns, token)
        base_rate = report("healthz", base)
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
        if not args.keep:
            dr = measured(pool, pid, "drain", args.url, workers, 0, args.procs, args.conns,
                          token)
            report("drain", dr)
            failed |= dr["nerrors"] > 0
    print(f"  heartbeat / healthz = {hb_rate / base_rate:.2f}  ({per_worker:.1f} heartbeats "
          f"per worker; at 1 beat / 5 s, 1,000 workers send 200/s = "
          f"{100 * 200 / hb_rate:.1f}% of the measured capacity)" if base_rate and hb_rate
          else "  no rate")
    cpu_hb = 1e6 * hb["cpu"] / hb["done"] if hb["done"] else 0
    cpu_base = 1e6 * base["cpu"] / base["done"] if base["done"] else 0
    print(f"  worker-manager CPU per heartbeat {cpu_hb:.0f} us, per healthz {cpu_base:.0f} us "
          f"(x{cpu_hb / cpu_base:.2f})" if cpu_base else "")
    if cpu_hb:
        print(f"  -> one core sustains ~{1e6 / cpu_hb:,.0f} heartbeats/s; 1,000 workers at 1 beat"
              f" / 5 s cost {200 * cpu_hb / 1e4:.2f}% of one core (when the wm CPU stays well"
              f" under 100% above, the load generator, not the wm, set the rates)")
    if failed:
        print("FAILED: errors above")
        sys.exit(1)
    print("ok: every registration and heartbeat answered without error")


if __name__ == "__main__":
    main()
