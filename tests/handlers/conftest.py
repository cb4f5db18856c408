"""Fixtures of the handler tests; the helpers are in handlers_kit.py."""
import pytest

from handlers_kit import RECORDS, run_handler, write_csv, write_jsonl, write_parquet


@pytest.fixture
def handler(tmp_path):
    """handler(job_type, params, inputs={param: path}) -> Run, each in its own dir."""
    count = [0]

    def call(job_type, params, inputs=None, job_id=None, **job_fields):
        count[0] += 1
        job = {"job_id": job_id or f"job_{job_type}_{count[0]}", "job_type": job_type,
               "params": params, "attempt": 1}
        if inputs is not None:
            job["inputs"] = {k: str(v) for k, v in inputs.items()}
        job.update(job_fields)
        return run_handler(job_type, job, tmp_path / f"out{count[0]}")

    return call



@pytest.fixture
def datasets(tmp_path):
    """The same six records as Parquet, JSONL, CSV and TSV."""
    d = tmp_path / "data"
    d.mkdir()
    return {"parquet": write_parquet(d / "data.parquet", RECORDS),
            "jsonl": write_jsonl(d / "data.jsonl", RECORDS),
            "csv": write_csv(d / "data.csv", RECORDS),
            "tsv": write_csv(d / "data.tsv", RECORDS, delimiter="\t")}
