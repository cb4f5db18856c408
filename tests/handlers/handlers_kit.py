"""Helpers of the handler tests (the fixtures are in conftest.py; tests import these by
this module's own name, never from `conftest`, which other test trees also have):
run_handler runs a reference handler as nf-worker does (the job JSON on stdin,
NF_ARTIFACT_DIR set, stdout read as protocol lines), with inputs named in the job's
"inputs" object the way the worker agent fills it (param -> absolute local path); the
write_* functions make the datasets a user would upload.

    python3 -m pytest tests/handlers -q
"""
import json
import os
import pathlib
import subprocess
import sys
from dataclasses import dataclass, field

HANDLERS = pathlib.Path(__file__).resolve().parents[2] / "handlers"
sys.path.insert(0, str(HANDLERS))

# The handlers' own dependency (pip install -r handlers/requirements.txt): a missing
# pyarrow fails these tests rather than skipping the Parquet half of them.
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    out_dir: pathlib.Path
    lines: list = field(default_factory=list)

    def of(self, key):
        return [line[key] for line in self.lines if key in line]

    @property
    def result(self):
        results = self.of("result")
        return results[-1] if results else None

    @property
    def artifacts(self):
        return self.of("artifact")

    def json(self, name):
        return json.loads((self.out_dir / name).read_text())


def run_handler(job_type, job, out_dir, env=None, timeout=60):
    """Runs handlers/<job_type> with the job on stdin; returns a Run."""
    out_dir = pathlib.Path(out_dir)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NF_")}
    full_env.update({"NF_ARTIFACT_DIR": str(out_dir), "NF_JOB_ID": job.get("job_id", "job_t"),
                     "NF_JOB_TYPE": job_type, "NF_ATTEMPT": "1"})
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(HANDLERS / job_type)], input=json.dumps(job),
                          capture_output=True, text=True, env=full_env, timeout=timeout)
    lines = []
    for raw in proc.stdout.splitlines():
        lines.append(json.loads(raw))  # every stdout line is a protocol line
    return Run(proc.returncode, proc.stdout, proc.stderr, out_dir, lines)


# ---- datasets written the way a user would -----------------------------------------

RECORDS = [
    {"instruction": "What does a catalyst do in a reaction?",
     "response": "A catalyst lowers the activation energy so the reaction runs faster."},
    {"instruction": "Explain what a force majeure clause is.",
     "response": "It excuses performance when unforeseeable events make it impossible."},
    {"instruction": "What is a hash map good for?",
     "response": "Average constant time lookups of values by key."},
    {"instruction": "Why do central banks raise interest rates?",
     "response": "To cool demand and bring inflation back towards the target."},
    {"instruction": "What do beta blockers lower?",
     "response": "They lower the heart rate and the blood pressure."},
    {"instruction": "Which gas is a noble gas?",
     "response": "Argon is a noble gas, as are neon and helium."},
]


def write_parquet(path, records, row_group_size=None):
    pq.write_table(pa.Table.from_pylist(records), str(path), row_group_size=row_group_size)
    return path


def write_jsonl(path, records, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def write_csv(path, records, delimiter=","):
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(records)
    return path
