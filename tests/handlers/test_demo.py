"""sdk/demo.py, the `./forge demo` flow, runs to the end against tests/handlers/
fake_platform.py: the SDK uploads Parquet datasets, the real handlers read them through
the job's "inputs", all six overview calls and the artifact:// evaluate succeed."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def platform(tmp_path):
    proc = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name(
        "fake_platform.py")), str(tmp_path / "state"), str(ROOT / "handlers")],
        stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()  # the deploy job's endpoint watches it and stops too
        proc.wait(10)


def test_the_demo_runs_every_job_to_success(platform):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NF_", "NEXA_"))}
    env.update({"NEXA_API_URL": platform, "NEXA_API_KEY": "nexa_demo_test"})
    proc = subprocess.run([sys.executable, str(ROOT / "sdk" / "demo.py")], env=env,
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for uri in ("s3://bucket/data.parquet", "s3://bucket/dataset.parquet",
                "s3://bucket/train.parquet"):
        assert f"uri={uri!r})" in out
    for job_type in ("generate", "audit", "distill", "train", "evaluate", "deploy"):
        assert any(line.split()[:1] == [job_type] and "succeeded" in line
                   for line in out.splitlines()), (job_type, out)
    assert '"duplicates": 1, "empty_fields": 1' in out  # the planted flaws were found
    assert '"model_source": "trained"' in out  # evaluate of the artifact:// model
    assert "Done: every job succeeded" in out
