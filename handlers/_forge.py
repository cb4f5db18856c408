"""Shared helpers for the reference handlers: the nf-worker stdout protocol (DESIGN §7).

A handler reads the job JSON on stdin and writes one JSON object per stdout line:
  {"progress": 0.4}  {"log": "..."}  {"usage": {"input_tokens": n, "output_tokens": n}}
  {"artifact": {"path": "...", "kind": "..."}}  {"result": {...}}
Exit 0 = succeeded, 75 = retryable failure, anything else = user error. Bad params exit 2
with the reason on stderr. Environment: NF_JOB_ID, NF_ARTIFACT_DIR, NF_GPU_COUNT.

Python standard library only.
"""

import hashlib
import json
import os
import sys
import time

EXIT_BAD_PARAMS = 2
EXIT_RETRYABLE = 75


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def progress(fraction):
    emit({"progress": round(min(1.0, max(0.0, float(fraction))), 4)})


def log(message):
    emit({"log": str(message)})


def usage(input_tokens=0, output_tokens=0):
    counts = {}
    if input_tokens:
        counts["input_tokens"] = int(input_tokens)
    if output_tokens:
        counts["output_tokens"] = int(output_tokens)
    if counts:
        emit({"usage": counts})


def artifact(path, kind):
    emit({"artifact": {"path": path, "kind": kind}})


def result(obj):
    emit({"result": obj})


def fail(message, code=EXIT_BAD_PARAMS):
    """Ends the handler: message on stderr (the agent keeps the last line)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    sys.exit(code)


class Progress:
    """Emits progress at most every `interval` seconds (the agent throttles too)."""

    def __init__(self, interval=0.2):
        self.interval = interval
        self.last = 0.0

    def __call__(self, fraction, force=False):
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            progress(fraction)


def read_job():
    raw = sys.stdin.read()
    try:
        job = json.loads(raw)
    except ValueError as exc:
        fail(f"job on stdin is not JSON: {exc}")
    if not isinstance(job, dict):
        fail("job on stdin is not a JSON object")
    params = job.get("params")
    if params is None:
        job["params"] = {}
    elif not isinstance(params, dict):
        fail("params must be an object")
    return job


def job_id(job):
    return job.get("job_id") or os.environ.get("NF_JOB_ID") or "job_local"


def artifact_dir():
    path = os.environ.get("NF_ARTIFACT_DIR")
    if not path:
        fail("NF_ARTIFACT_DIR is not set", EXIT_RETRYABLE)
    os.makedirs(path, exist_ok=True)
    return path


def seed_for(job, params, salt=""):
    """The seed param, or a deterministic one derived from the job id."""
    if params.get("seed") is not None:
        return int_param(params, "seed", required=True, lo=0, hi=2**53 - 1)
    digest = hashlib.sha256((job_id(job) + salt).encode()).hexdigest()
    return int(digest[:13], 16)  # 52 bits: exact in JSON numbers (doubles)


# ---- parameter checks: exit 2 with a message naming the parameter ---------------------


def str_param(params, key, required=False, default=None, max_len=1024):
    value = params.get(key)
    if value is None:
        if required:
            fail(f"params.{key} is required")
        return default
    if not isinstance(value, str) or not value.strip():
        fail(f"params.{key} must be a non-empty string")
    if len(value) > max_len:
        fail(f"params.{key} must be at most {max_len} characters")
    return value


def int_param(params, key, required=False, default=None, lo=None, hi=None):
    value = params.get(key)
    if value is None:
        if required:
            fail(f"params.{key} is required")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        fail(f"params.{key} must be an integer")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        fail(f"params.{key} must be between {lo} and {hi}")
    return value


def float_param(params, key, default=None, lo=None, hi=None):
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"params.{key} must be a number")
    if (lo is not None and value <= lo) or (hi is not None and value > hi):
        fail(f"params.{key} must be greater than {lo} and at most {hi}")
    return float(value)


def bool_param(params, key, default=False):
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        fail(f"params.{key} must be true or false")
    return value


# ---- datasets -----------------------------------------------------------------------


def dataset_path(uri, key="dataset_uri"):
    """Local path of a dataset URI; only file:// can be read by the reference handlers."""
    if not isinstance(uri, str) or not uri:
        fail(f"params.{key} is required")
    if uri.startswith("file://"):
        path = uri[len("file://"):]
        if not path.startswith("/"):
            fail(f"params.{key} must be an absolute file:// URI")
        if not os.path.isfile(path):
            fail(f"params.{key}: {path} does not exist or is not a file")
        return path
    if uri.startswith("artifact://"):
        fail(f"params.{key}: artifact:// URIs are not supported by the reference handlers yet; "
             "pass the artifact's file:// uri")
    if uri.startswith(("s3://", "https://")):
        fail(f"params.{key}: {uri.split(':', 1)[0]}:// is not supported by the reference "
             "handlers; use file://")
    fail(f"params.{key} must be a file://, s3://, https:// or artifact:// URI")


def read_jsonl(path, on_progress=None):
    """Yields (record, None) for each JSON object line, (None, reason) for bad lines."""
    total = max(1, os.path.getsize(path))
    with open(path, "rb") as f:
        for raw in f:
            if on_progress is not None:
                on_progress(f.tell() / total)
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                yield None, "not JSON"
                continue
            if not isinstance(rec, dict):
                yield None, "not an object"
                continue
            yield rec, None


def record_text(rec):
    """The text a record carries: its instruction/prompt and response fields, or every
    string value when it has none of those."""
    parts = [rec[k] for k in ("instruction", "prompt", "text", "response", "teacher_response")
             if isinstance(rec.get(k), str)]
    if not parts:
        parts = [v for v in rec.values() if isinstance(v, str)]
    return " ".join(parts)


def tokens(text):
    return text.split()


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return os.path.getsize(path)
