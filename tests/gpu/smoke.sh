#!/usr/bin/env bash
# GPU smoke test of the PyTorch handlers: train (LoRA, then full) on one GPU, train
# data-parallel over every visible GPU when there are several (NCCL, handlers/_ddp.py, as a
# job with gpu_count > 1 runs), evaluate, and deploy a stand-in base on CUDA with bf16
# autocast, as nf-worker runs them (NF_GPU_COUNT, CUDA_VISIBLE_DEVICES pinned per job), and
# print training tokens/s and model FLOPs utilisation (MFU), and which engine served the
# deployment (vLLM when installed, else transformers: handlers/_vllm.py). One command on a
# GPU machine with the repo checked out:
#     python3 -m pip install -r handlers/requirements-ml.txt   # once (or ./forge install)
#     tests/gpu/smoke.sh
# Exits 77 (skipped) without a CUDA GPU, 1 when a stage fails or did not run on CUDA/bf16.
# MFU = FLOPs per token x tokens/s / the GPU's peak dense bf16 FLOP/s
# (NEXA_GPU_PEAK_TFLOPS, default 989: an H100 SXM), with FLOPs per token = 6 x parameters
# for full training and 4 x parameters for LoRA (forward, and the backward through frozen
# weights computing input gradients only), attention's own FLOPs left out. The stand-ins
# are tiny (~0.3M parameters), so their MFU says how far a toy model is from the GPU's
# peak (launch-bound), not what a real 8B model reaches. NEXA_SMOKE_ON_CPU=1 runs it on a
# CPU to check the script itself (it then fails: not on CUDA).
#     tests/gpu/smoke.sh [--rows 2048] [--epochs 2] [--batch-size 32]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
exec python3 - "$here" "$@" <<'PY'
import argparse, json, os, pathlib, random, shutil, signal, subprocess, sys, tempfile, time
import urllib.request

root = pathlib.Path(sys.argv[1])
ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=2048)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--batch-size", type=int, default=32)
args = ap.parse_args(sys.argv[2:])
handlers = root / "handlers"
sys.path.insert(0, str(handlers))
try:
    import torch  # noqa: E402
except ImportError:
    sys.exit("torch is missing: python3 -m pip install -r handlers/requirements-ml.txt")

if not torch.cuda.is_available() and os.environ.get("NEXA_SMOKE_ON_CPU") == "1":
    torch.cuda.get_device_name = lambda i: "none (NEXA_SMOKE_ON_CPU=1: checks this script)"
    torch.cuda.is_bf16_supported = lambda: False

if not torch.cuda.is_available() and os.environ.get("NEXA_SMOKE_ON_CPU") != "1":
    print("no CUDA GPU: skipped")
    sys.exit(77)
import _corpus  # noqa: E402

tmp = pathlib.Path(tempfile.mkdtemp(prefix="nexa-gpu-smoke-"))
os.environ.setdefault("NEXA_MODEL_CACHE", str(tmp / "models"))
peak = float(os.environ.get("NEXA_GPU_PEAK_TFLOPS", "989")) * 1e12
rng = random.Random(1)
data = tmp / "train.jsonl"
with open(data, "w") as f:
    for i in range(args.rows):
        q, a = _corpus.sample(rng, sorted(_corpus.DOMAINS)[i % len(_corpus.DOMAINS)])
        f.write(json.dumps({"instruction": q, "response": a}) + "\n")
ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 1
visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(str(i) for i in range(ngpu))
first = visible.split(",")[0]
print(f"GPU: {torch.cuda.get_device_name(0)} x {ngpu}, bf16 {torch.cuda.is_bf16_supported()}, "
      f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")


def run(job_type, params, inputs, name, gpus=1):
    """A handler as the agent runs it: pinned to `gpus` of the visible GPUs."""
    out = tmp / name
    job = {"job_id": f"job_gpu_{name}", "job_type": job_type, "params": params,
           "attempt": 1, "inputs": {k: str(v) for k, v in inputs.items()}}
    pinned = first if gpus == 1 else ",".join(visible.split(",")[:gpus])
    env = dict(os.environ, NF_ARTIFACT_DIR=str(out / "out"), NF_GPU_COUNT=str(gpus),
               NF_JOB_ID=job["job_id"])
    if os.environ.get("NEXA_SMOKE_ON_CPU") != "1":
        env["CUDA_VISIBLE_DEVICES"] = pinned
    proc = subprocess.run([sys.executable, str(handlers / job_type)], input=json.dumps(job),
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"{job_type} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    return lines, [x["result"] for x in lines if "result" in x][-1], out / "out"


failed = False
runs = [("lora", 1), ("full", 1)] + ([("lora", ngpu)] if ngpu > 1 else [])
for method, gpus in runs:
    name = method if gpus == 1 else f"{method}-ddp{gpus}"
    lines, res, out = run("train", {"model_id": "llama-3-8b", "dataset_uri": "s3://g/t.jsonl",
                                    "method": method, "epochs": args.epochs,
                                    "batch_size": args.batch_size, "seed": 1},
                          {"dataset_uri": data}, name, gpus)
    rates = [x["metric"]["tokens_per_s"] for x in lines
             if "metric" in x and "tokens_per_s" in x["metric"]]
    rates = rates[1:] or rates  # the first window holds the warm-up
    tps = sum(rates) / max(1, len(rates))
    per_token = (6 if method == "full" else 4) * res["parameters"]
    ok = res["device"].startswith("cuda") and "bfloat16" in res["dtype"]
    dp = res.get("data_parallel")
    if gpus > 1:
        ok &= bool(dp) and dp["world_size"] == gpus and dp["backend"] == "nccl"
    failed |= not ok or not res["valid_loss"] < res["valid_loss_before"]
    print(f"train {name}: device {res['device']} ({res['dtype']})"
          + (f", {dp['world_size']} ranks {dp['backend']}, batch {dp['effective_batch_size']} "
             f"({dp['per_rank_batch_size']}/rank)" if dp else "")
          + f", valid loss {res['valid_loss_before']:.3f} -> {res['valid_loss']:.3f}, "
          f"{tps:,.0f} tokens/s, MFU {100 * per_token * tps / (peak * gpus):.4f}% "
          f"{'ok' if ok else 'NOT ON CUDA/BF16' + (' / NOT DATA-PARALLEL' if gpus > 1 else '')}")
    if gpus == 1:
        model_tar = out / "model.tar"

_, ev, _ = run("evaluate", {"model_id": "artifact://gpu", "benchmark": "custom",
                            "dataset_uri": "s3://g/t.jsonl"},
               {"model_id": model_tar, "dataset_uri": data}, "eval")
print(f"evaluate: perplexity {ev['perplexity']} on {ev['samples']} samples")
_, dep, dep_out = run("deploy", {"model_id": "artifact://gpu"}, {"model_id": model_tar}, "dep")
try:
    req = urllib.request.Request(dep["internal"]["endpoint_url"] + "/completions", data=json.dumps(
        {"prompt": "### User:\nWhat is a hash map for?\n### Assistant:\n",
         "max_tokens": 32}).encode(), headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = json.loads(resp.read())
    dt = time.monotonic() - t0
    n = body["usage"]["completion_tokens"]
    print(f"deploy ({dep.get('engine', '?')}): {n} tokens in {dt:.2f} s ({n / dt:.0f} "
          f"tokens/s): {body['choices'][0]['text']!r}")
finally:
    pid_file = dep_out / "endpoint.pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        time.sleep(1)
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(1 if failed else 0)
PY
