"""Shared helpers for the reference handlers: the nf-worker stdout protocol (DESIGN §7).

A handler reads the job JSON on stdin and writes one JSON object per stdout line:
  {"progress": 0.4}  {"log": "..."}  {"usage": {"input_tokens": n, "output_tokens": n}}
  {"artifact": {"path": "...", "kind": "..."}}  {"result": {...}}
Exit 0 = succeeded, 75 = retryable failure, anything else = user error. Bad params exit 2
with the reason on stderr. Environment: NF_JOB_ID, NF_ARTIFACT_DIR, NF_GPU_COUNT.

Inputs come only from the job JSON's "inputs" object (filled by the worker agent);
datasets are read by `open_dataset` (Parquet, JSONL, CSV/TSV).

Python standard library, plus pyarrow for Parquet (imported on first use).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

EXIT_BAD_PARAMS = 2
EXIT_RETRYABLE = 75


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


_METRIC_BAD = re.compile(r"[^A-Za-z0-9_./-]")


def metric_name(name):
    """A metric name the agent accepts ([A-Za-z0-9_./-], alphanumeric first, <= 64)."""
    name = _METRIC_BAD.sub("_", str(name)).lstrip("_./-")[:64]
    return name or "value"


def metric(step, epoch=None, **values):
    """One live metric point ({"metric": ...}; the agent publishes it as forge.job.metric,
    GET /api/jobs/{id}/metrics). Values that are not finite numbers are left out (the agent
    would drop the whole line), and at most 32 are sent."""
    point = {"step": int(step)}
    if epoch is not None:
        point["epoch"] = epoch
    kept = 0
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        if kept == 32:
            break
        point[metric_name(k)] = round(v, 6) if isinstance(v, float) else v
        kept += 1
    if kept:
        emit({"metric": point})


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


# ---- job inputs ---------------------------------------------------------------------
#
# A user names data by URI (s3://bucket/key, artifact://art_...). The gateway checks each
# one before the job is queued and the worker agent downloads it into the job's private
# directory; the job JSON then maps the parameter to that file:
#     "inputs": {"dataset_uri": "/…/<job dir>/inputs/dataset_uri/data.parquet"}
# Handlers read inputs only from there. They never open a path a user wrote (file:// is
# refused here too, whatever let it through) and never fetch anything themselves.

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(value: object) -> bool:
    """True for a string that starts with a URI scheme (s3://, artifact://, ...)."""
    return isinstance(value, str) and _URI.match(value) is not None


def input_path(job: dict, key: str, uri: str) -> str:
    """The local file the worker agent fetched params.<key> (= uri) into. Exits 2 naming
    the parameter when the URI is file:// or the job carries no input for it; exits 75
    when the agent's entry is unusable (a worker fault, worth a retry elsewhere)."""
    if uri.lower().startswith("file://"):
        fail(f"params.{key}: file:// URIs are refused; upload the file (POST /api/files, "
             "client.upload_file) and pass its s3:// or artifact:// URI")
    inputs = job.get("inputs")
    if inputs is None or inputs == []:
        inputs = {}
    if not isinstance(inputs, dict):
        fail("the job's inputs must be an object of parameter -> local path "
             f"(got {type(inputs).__name__}: is the worker agent older than the handlers?)",
             EXIT_RETRYABLE)
    path = inputs.get(key)
    if path is None:
        fail(f"params.{key}: {uri} was not fetched for this job (the job JSON has no "
             f"inputs.{key}); only inputs the platform resolved can be read")
    if not isinstance(path, str) or not os.path.isabs(path):
        fail(f"inputs.{key} must be an absolute local path, not {path!r}", EXIT_RETRYABLE)
    if not os.path.isfile(path):
        fail(f"inputs.{key}: {path} (for params.{key} = {uri}) does not exist or is not a "
             "file", EXIT_RETRYABLE)
    return path


def model_input(job: dict, key: str = "model_id") -> str | None:
    """For a model parameter: the local path of the model file when the value is a URI
    (artifact://art_... of a `train` model.json, fetched by the agent), None for a bare
    model name."""
    value = job["params"].get(key)
    return input_path(job, key, value) if is_uri(value) else None


# ---- datasets -----------------------------------------------------------------------
#
# One reader for every handler: Parquet, JSONL and CSV/TSV, rows streamed one at a time
# with their position (line or row number) for messages, memory bounded by one Parquet
# row group or one text line whatever the file's size.

DATASET_FORMATS = ("parquet", "jsonl", "csv")
PARQUET_MAGIC = b"PAR1"
PARQUET_BATCH_ROWS = 1024
CSV_FIELD_LIMIT = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Row:
    """One record of a dataset, or why that line/row is not one.

    number: 1-based line of the file (JSONL; for CSV the line the record starts on) or
    row (Parquet). record: the record as a dict (CSV values are strings), None when bad.
    error: why the line is malformed, None for a good record."""

    number: int
    record: dict | None
    error: str | None = None
    unit: str = "line"

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


def dataset_format(path: str, key: str = "dataset_uri") -> str:
    """parquet, jsonl or csv. Parquet's magic bytes always win; otherwise the file name
    decides (.parquet/.pq, .jsonl/.ndjson/.json, .csv/.tsv); otherwise the first
    non-blank byte ('{' = JSONL, else CSV). A .parquet name without the magic exits 2."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] == PARQUET_MAGIC:
        return "parquet"
    name = os.path.basename(path).lower()
    if name.endswith((".parquet", ".pq")):
        fail(f"params.{key}: {os.path.basename(path)} is not a Parquet file "
             "(it does not start with PAR1)")
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if head.startswith(_BOM):
        head = head[len(_BOM):]
    stripped = head.lstrip()
    return "jsonl" if not stripped or stripped.startswith(b"{") else "csv"


class Dataset:
    """A dataset file the agent fetched: its format, size, and its rows as a stream."""

    def __init__(self, path: str, key: str = "dataset_uri", uri: str | None = None):
        self.path = path
        self.key = key
        self.uri = uri or path
        self.bytes = os.path.getsize(path)
        self.format = dataset_format(path, key)

    def __repr__(self) -> str:
        return f"{self.uri} ({self.bytes} bytes, {self.format})"

    def rows(self, on_progress: Callable[[float], None] | None = None) -> Iterator[Row]:
        """Every line/row in file order: Row(number, record) or Row(number, None, error).
        on_progress gets the fraction read (0..1) now and then."""
        if self.format == "parquet":
            return _parquet_rows(self.path, self.key, on_progress)
        if self.format == "csv":
            return _csv_rows(self.path, on_progress)
        return _jsonl_rows(self.path, on_progress)


def open_dataset(job: dict, key: str = "dataset_uri", required: bool = True
                 ) -> Dataset | None:
    """The dataset named by params.<key>, read from the file the agent fetched. Exits 2
    naming the parameter when it is missing (and required), not a URI, or not fetched."""
    uri = job["params"].get(key)
    if uri is None:
        if required:
            fail(f"params.{key} is required")
        return None
    if not isinstance(uri, str) or not uri.strip():
        fail(f"params.{key} must be a non-empty string")
    if not is_uri(uri):
        fail(f"params.{key} must be an s3://bucket/key or artifact://art_... URI")
    return Dataset(input_path(job, key, uri), key, uri)


def _jsonl_rows(path, on_progress):
    total = max(1, os.path.getsize(path))
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if on_progress is not None and number % 256 == 0:
                on_progress(f.tell() / total)
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # also invalid UTF-8
                yield Row(number, None, "not JSON")
                continue
            if not isinstance(rec, dict):
                yield Row(number, None, "not a JSON object")
                continue
            yield Row(number, rec)
    if on_progress is not None:
        on_progress(1.0)


def _csv_rows(path, on_progress):
    """Data rows as dicts of the header's columns (values are strings); a row whose field
    count differs from the header's is malformed. .tsv is tab-separated; otherwise the
    delimiter is sniffed from the first 8 KiB (, ; tab |)."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    total = max(1, os.path.getsize(path))
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        sample = f.read(8192)
        f.seek(0)
        if path.lower().endswith(".tsv"):
            dialect = csv.excel_tab
        else:
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
        done = [0]

        def lines():
            for line in f:
                done[0] += len(line)
                yield line

        reader = csv.reader(lines(), dialect)
        header = None
        count = 0
        while True:
            number = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield Row(number, None, f"bad CSV: {exc}")
                continue
            count += 1
            if on_progress is not None and count % 256 == 0:
                on_progress(min(1.0, done[0] / total))
            if not fields or all(not c.strip() for c in fields):
                continue
            if header is None:
                header = [h.strip() or f"column_{i + 1}" for i, h in enumerate(fields)]
                continue
            if len(fields) != len(header):
                yield Row(number, None, f"{len(fields)} fields, the header has {len(header)}")
                continue
            yield Row(number, dict(zip(header, fields)))
    if on_progress is not None:
        on_progress(1.0)


def _parquet_rows(path, key, on_progress):
    """Rows of a Parquet file, read a row group at a time in batches of
    PARQUET_BATCH_ROWS, so memory stays near one row group's column chunks whatever the
    file's size. Values are Python objects (str, int, float, bool, None, lists, dicts)."""
    pa, pq = _pyarrow()
    number = 0
    try:
        # pre_buffer (pyarrow's default) would read every column chunk of the file
        # into memory before the first batch; one row group at a time bounds it.
        pf = pq.ParquetFile(path, pre_buffer=False)
        total = max(1, pf.metadata.num_rows)
        for group in range(pf.num_row_groups):
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[group]):
                for rec in batch.to_pylist():
                    number += 1
                    yield Row(number, rec, unit="row")
                if on_progress is not None:
                    on_progress(min(1.0, number / total))
        pf.close()
    except (pa.ArrowException, OSError, ValueError) as exc:
        where = f" at row {number + 1}" if number else ""
        fail(f"params.{key}: not a readable Parquet file{where}: {exc}")
    if on_progress is not None:
        on_progress(1.0)


def _pyarrow():
    """(pyarrow, pyarrow.parquet), imported on first use: JSONL and CSV work without it,
    and --help or a bad parameter never waits for it. Missing means the worker's Python
    lacks handlers/requirements.txt: a fault of that worker (exit 75, retried)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        fail(f"Parquet needs pyarrow, which this worker's Python lacks ({exc}); "
             "install handlers/requirements.txt", EXIT_RETRYABLE)
    return pyarrow, pyarrow.parquet


def write_parquet(path: str, columns: list[str], rows: Iterable[dict],
                  batch_rows: int = 8192) -> int:
    """Writes rows (dicts of string columns) to path atomically (temp file + rename), a
    row group per batch_rows, so memory stays bounded; returns the file's size."""
    pa, pq = _pyarrow()
    schema = pa.schema([(name, pa.string()) for name in columns])
    tmp = path + ".tmp"
    batch: list[dict] = []
    with pq.ParquetWriter(tmp, schema) as writer:
        for rec in rows:
            batch.append(rec)
            if len(batch) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    os.replace(tmp, path)
    return os.path.getsize(path)


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
