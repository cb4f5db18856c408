"""train data-parallel (handlers/_ddp.py) with gloo CPU ranks (NF_DDP_CPU_RANKS), the path
a job with gpu_count > 1 takes on CUDA with NCCL (that one has not run here: no GPU).

Stated tolerance: two ranks with the same effective batch (batch_size 8: 4 per rank) and
LoRA dropout 0 reach the single-process run's per-epoch train and validation losses within
1e-4 nats/token (measured: equal to 1e-6; the runs differ only in floating-point summation
order). Rank 0 alone speaks the protocol (every stdout line parses, one checkpoint per
epoch); a retry resumes from a data-parallel checkpoint; SIGTERM to the handler's process
group (what the agent sends) stops every rank; a rank that dies fails the attempt as
retryable (75).
"""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest
from handlers_kit import HANDLERS, run_handler, write_jsonl

sys.path.insert(0, str(HANDLERS))
import _corpus

TIMEOUT = 600  # per handler run: shared 2-core machines are slow under load
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def dp(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    rng = random.Random(11)
    rows = []
    for _ in range(64):
        q, a = _corpus.sample(rng, "law")
        rows.append({"instruction": q, "response": a})
    data = write_jsonl(root / "train.jsonl", rows)
    count = [0]

    def job(**params):
        count[0] += 1
        p = {"model_id": "llama-3-8b", "dataset_uri": "s3://b/train.jsonl", "epochs": 2,
             "seed": 7, "max_seq_length": 96, "batch_size": 8, "lora_dropout": 0.0,
             "validation_split": 0.125, **params}
        return {"job_id": f"job_ddp_{count[0]}", "job_type": "train", "params": p,
                "attempt": 1, "inputs": {"dataset_uri": str(data)}}

    def run(ranks=None, extra_env=None, **params):
        env = {"NEXA_MODEL_CACHE": str(root / "models"), **(extra_env or {})}
        if ranks:
            env["NF_DDP_CPU_RANKS"] = str(ranks)
        j = job(**params)
        return run_handler("train", j, root / f"out{count[0]}", env=env, timeout=TIMEOUT)

    return {"run": run, "job": job, "root": root}


@pytest.fixture(scope="module")
def single(dp):
    run = dp["run"]()
    assert run.rc == 0, run.stderr
    return run


@pytest.fixture(scope="module")
def two_ranks(dp):
    run = dp["run"](ranks=2)
    assert run.rc == 0, run.stderr
    return run


def result(run):
    return [x["result"] for x in run.lines if "result" in x][-1]


def test_two_gloo_ranks_match_the_single_process_run(single, two_ranks):
    one, two = result(single), result(two_ranks)
    assert "data_parallel" not in one
    assert two["data_parallel"] == {"world_size": 2, "backend": "gloo",
                                    "effective_batch_size": 8, "per_rank_batch_size": 4}
    assert two["steps"] == one["steps"] and two["batch_size"] == one["batch_size"] == 8
    for key in ("train_loss", "valid_loss"):
        for a, b in zip(one["loss_by_epoch"][key], two["loss_by_epoch"][key], strict=True):
            assert abs(a - b) < TOLERANCE, (key, a, b)
    assert abs(one["valid_loss_before"] - two["valid_loss_before"]) < TOLERANCE
    # the loss decreases, and usage counts the tokens once, as the single-process run does
    assert two["valid_loss"] < two["valid_loss_before"] - 0.2
    assert two["tokens_processed"] == one["tokens_processed"]
    # the learning rate follows the same schedule, step for step
    lrs = [[(m["metric"]["step"], m["metric"]["learning_rate"]) for m in r.lines
            if "metric" in m and "learning_rate" in m["metric"]] for r in (single, two_ranks)]
    assert lrs[0] == lrs[1]


def test_rank_0_alone_speaks_the_protocol(two_ranks):
    # run_handler parsed every stdout line as JSON; the other ranks wrote none of them
    ckpts = [x["artifact"]["path"] for x in two_ranks.lines
             if "artifact" in x and x["artifact"]["kind"] == "checkpoint"]
    assert ckpts == ["checkpoint-epoch-1.tar", "checkpoint-epoch-2.tar"]
    assert sum(1 for x in two_ranks.lines if "result" in x) == 1
    assert sum(1 for x in two_ranks.lines if "usage" in x) == 1
    assert (two_ranks.out_dir / "model.tar").is_file()


def test_a_retry_resumes_from_a_data_parallel_checkpoint(dp, two_ranks, tmp_path):
    resume = tmp_path / "resume"
    resume.mkdir()
    (resume / "checkpoint-epoch-1.tar").write_bytes(
        (two_ranks.out_dir / "checkpoint-epoch-1.tar").read_bytes())
    run = dp["run"](ranks=2, extra_env={"NF_RESUME_DIR": str(resume)})
    assert run.rc == 0, run.stderr
    res, full = result(run), result(two_ranks)
    assert res["resumed_from_epoch"] == 1
    steps = [m["metric"]["step"] for m in run.lines if "metric" in m]
    assert min(steps) > full["steps"] // 2  # its first step follows the checkpoint's
    for a, b in zip(res["loss_by_epoch"]["valid_loss"], full["loss_by_epoch"]["valid_loss"],
                    strict=True):
        assert abs(a - b) < TOLERANCE


def _start(dp, tmp_path, epochs):
    """The handler as the agent runs it: its own process group, the job on stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NF_")}
    env.update({"NF_ARTIFACT_DIR": str(tmp_path / "out"), "NF_DDP_CPU_RANKS": "2",
                "NEXA_MODEL_CACHE": str(dp["root"] / "models")})
    proc = subprocess.Popen([sys.executable, str(HANDLERS / "train")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    proc.stdin.write(json.dumps(dp["job"](epochs=epochs)).encode())
    proc.stdin.close()
    for raw in proc.stdout:  # until training runs on both ranks
        if "metric" in json.loads(raw):
            break
    return proc


def _children(pid):
    out = []
    for d in pathlib.Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if d.name.isdigit() and int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
            out.append(int(d.name))
    return out


def _gone(pid):
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def test_sigterm_to_the_process_group_stops_every_rank(dp, tmp_path):
    proc = _start(dp, tmp_path, epochs=50)
    ranks = _children(proc.pid)
    assert ranks, "rank 1 is a child of the handler"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) != 0
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(p) for p in ranks)


def test_a_rank_that_dies_fails_the_attempt_as_retryable(dp, tmp_path):
    proc = _start(dp, tmp_path, epochs=50)
    ranks = _children(proc.pid)
    os.kill(ranks[0], signal.SIGKILL)
    rc = proc.wait(60)
    err = proc.stderr.read().decode()
    assert rc == 75, err
    assert "data-parallel rank" in err
