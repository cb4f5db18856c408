"""A stand-in for the platform (gateway, scheduler, worker agent) that runs the REAL
handlers, so tests/handlers/test_demo.py can run sdk/demo.py without the stack:

    python3 fake_platform.py STATE_DIR HANDLERS_DIR      (prints its port, then serves)

It follows the data plane's contracts (/work notes "dataplane"): POST /api/files
(multipart: purpose, uri, then file) stores a file per s3_uri, replacing an older one;
a job's s3:// and artifact:// inputs are resolved at submit (422 naming the param when
missing, file:// refused); the handler gets the job JSON with "inputs" = {param: local
path} of a copy in the job's own directory, and its reported artifacts become
artifact://<id>. Jobs run at once in a thread; costs are a token amount. The catalogue's
gpt-4 (provider:openai/gpt-4) is served by a tiny chat endpoint here whose answers come
from the reference corpus (the stack runs a model stand-in instead: providers.sh), given
to the handlers as the stack gives it (NF_PROVIDERS_FILE and a key). Test-only: no
auth, no tenants, everything in memory but the files."""
import email.parser
import random
import email.policy
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(sys.argv[1])
HANDLERS = pathlib.Path(sys.argv[2])
ARTS = {}
JOBS = {}
MODELS = {}  # an account's models: output_model of a succeeded train -> its model artifact
LOCK = threading.Lock()
INPUT_PARAMS = ("dataset_uri", "validation_uri", "model_id", "teacher_model", "student_model",
                "compare_to")


PROVIDER_KEY = "sk-fake-" + uuid.uuid4().hex


class ChatStandIn(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: an answer from the reference corpus for the last user
    message (sys.path has HANDLERS for _corpus), with usage; checks the key."""

    def log_message(self, *a):
        pass

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != "Bearer " + PROVIDER_KEY:
            body, status = b'{"error": {"message": "bad key"}}', 401
        else:
            import _corpus

            prompt = req["messages"][-1]["content"]
            text = _corpus.answer(random.Random(prompt), "generic", prompt)
            body, status = json.dumps({"choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": len(prompt.split()),
                          "completion_tokens": len(text.split())}}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_provider():
    """The gpt-4 endpoint and the providers file the handlers read."""
    sys.path.insert(0, str(HANDLERS))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), ChatStandIn)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ROOT.mkdir(parents=True, exist_ok=True)
    conf = {"providers": {"openai": {
        "base_url": f"http://127.0.0.1:{srv.server_address[1]}/v1",
        "api_key_env": "NF_PROVIDER_KEY_OPENAI", "stand_in": True, "concurrency": 4,
        "models": {"gpt-4": {"input_per_1m_usd": 30.0, "output_per_1m_usd": 60.0}}}}}
    (ROOT / "providers.json").write_text(json.dumps(conf))
    return {"NF_PROVIDERS_FILE": str(ROOT / "providers.json"),
            "NF_PROVIDER_KEY_OPENAI": PROVIDER_KEY}


PROVIDER_ENV = {}


def new_id(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def resolve(params):
    inputs = []
    for p in INPUT_PARAMS:
        v = params.get(p)
        if not isinstance(v, str):
            continue
        if v.startswith("file://"):
            return None, (p, "file:// is not accepted")
        if v.startswith("s3://"):
            found = [a for a in ARTS.values() if a.get("s3_uri") == v]
            if not found:
                return None, (p, f"no such object {v}")
            inputs.append((p, found[-1]))
        elif v.startswith("artifact://"):
            a = ARTS.get(v[len("artifact://"):])
            if a is None:
                return None, (p, f"no such artifact {v}")
            inputs.append((p, a))
        elif p in ("model_id",) and "://" in v:
            return None, (p, "unsupported scheme")
        elif p in ("model_id", "teacher_model", "student_model", "compare_to") and v in MODELS:
            inputs.append((p, ARTS[MODELS[v]]))  # the account's model: fetched as an input
    return inputs, None


def run_job(job, inputs):
    jdir = ROOT / "jobs" / job["job_id"]
    out = jdir / "out"
    out.mkdir(parents=True)
    local = {}
    for p, a in inputs:
        d = jdir / "inputs" / p
        d.mkdir(parents=True)
        shutil.copy(a["path"], d / a["name"])
        local[p] = str(d / a["name"])
    doc = {"job_id": job["job_id"], "job_type": job["job_type"], "params": job["params"],
           "attempt": 1, "inputs": local}
    job["status"] = "running"
    proc = subprocess.run([sys.executable, str(HANDLERS / job["job_type"])],
                          input=json.dumps(doc), capture_output=True, text=True,
                          env=dict(os.environ, NF_ARTIFACT_DIR=str(out),
                                   NF_JOB_ID=job["job_id"], **PROVIDER_ENV), timeout=240)
    arts = []
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        if "result" in msg:
            job["result"] = msg["result"]
        if "artifact" in msg:
            path = out / msg["artifact"]["path"]
            data = path.read_bytes()
            aid = new_id("art")
            rec = {"artifact_id": aid, "id": aid, "name": path.name,
                   "kind": msg["artifact"]["kind"],
                   "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                   "uri": f"artifact://{aid}", "path": str(path), "job_id": job["job_id"]}
            with LOCK:
                ARTS[aid] = rec
            arts.append({k: v for k, v in rec.items() if k not in ("path", "id")})
    job["artifacts"] = arts
    if proc.returncode == 0:
        name = job["params"].get("output_model")
        model = next((a for a in arts if a["kind"] == "model"), None)
        if job["job_type"] == "train" and name and model:
            with LOCK:
                MODELS.setdefault(name, model["artifact_id"])  # a taken name stays
        job["status"] = "succeeded"
    else:
        job["status"] = "failed"
        job["error"] = {"code": "handler_failed", "message": proc.stderr.strip()[-300:],
                        "class": "user_error"}
    job["progress"] = 1


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, obj=None, raw=None, headers=None):
        data = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream" if raw is not None
                         else "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def err(self, status, code, msg, param=None):
        e = {"code": code, "message": msg, "request_id": "req_fake"}
        if param:
            e["param"] = param
        self.reply(status, {"error": e})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        raw = self.body()
        if path == "/api/files":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
            parts = {p.get_param("name", header="content-disposition"): p
                     for p in msg.iter_parts()}
            order = [p.get_param("name", header="content-disposition")
                     for p in msg.iter_parts()]
            if order[-1] != "file" or order[0] != "purpose":
                return self.err(400, "bad_request", f"form fields in the wrong order: {order}")
            fpart = parts["file"]
            data = fpart.get_payload(decode=True)
            filename = fpart.get_param("filename", header="content-disposition")
            purpose = parts["purpose"].get_payload(decode=True).decode()
            aid = new_id("art")
            s3 = parts["uri"].get_payload(decode=True).decode() if "uri" in parts else \
                f"s3://uploads/{aid}/{filename}"
            store = ROOT / "files" / s3[len("s3://"):]
            store.parent.mkdir(parents=True, exist_ok=True)
            store.write_bytes(data)
            rec = {"id": aid, "artifact_id": aid, "object": "file", "uri": f"artifact://{aid}",
                   "s3_uri": s3, "filename": filename, "name": filename, "purpose": purpose,
                   "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                   "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ"), "path": str(store)}
            with LOCK:
                for k in [k for k, a in ARTS.items() if a.get("s3_uri") == s3]:
                    del ARTS[k]
                ARTS[aid] = rec
            return self.reply(201, {k: v for k, v in rec.items()
                                    if k not in ("path", "artifact_id", "name")})
        if path.startswith("/api/jobs/"):
            jt = path.rsplit("/", 1)[1]
            params = json.loads(raw)["params"]
            inputs, bad = resolve(params)
            if bad:
                return self.err(422, "invalid_params", bad[1], bad[0])
            jid = new_id("job")
            job = {"job_id": jid, "job_type": jt, "status": "queued", "params": params,
                   "progress": 0, "result": None, "error": None, "artifacts": [],
                   "cost_usd": "0.000100", "cost_final": True}
            JOBS[jid] = job
            threading.Thread(target=run_job, args=(job, inputs), daemon=True).start()
            return self.reply(202, dict(job))
        self.err(404, "not_found", "no route")

    def do_DELETE(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/api/models/"):
            name = urllib.parse.unquote(path.rsplit("/", 1)[1])
            with LOCK:
                gone = MODELS.pop(name, None)
            if gone is None:
                return self.err(404, "not_found", f"no model {name}")
            return self.reply(200, {"id": name, "object": "model", "deleted": True})
        self.err(404, "not_found", "no route")

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/api/jobs/"):
            job = JOBS.get(path.rsplit("/", 1)[1])
            return self.reply(200, job) if job else self.err(404, "not_found", "no job")
        if path.startswith("/api/artifacts/") and path.endswith("/content"):
            a = ARTS.get(path.split("/")[3])
            if not a:
                return self.err(404, "not_found", "no artifact")
            return self.reply(200, raw=pathlib.Path(a["path"]).read_bytes(),
                              headers={"Content-Disposition":
                                       f'attachment; filename="{a["name"]}"'})
        if path == "/api/billing/summary":
            return self.reply(200, {"total_usd": "0.000600"})
        self.err(404, "not_found", "no route")


if __name__ == "__main__":
    PROVIDER_ENV.update(start_provider())
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
