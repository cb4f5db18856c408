#!/usr/bin/env bash
# GPU smoke test of the PyTorch handlers: train (LoRA, then full), evaluate and deploy a
# stand-in base on CUDA with bf16 autocast, as nf-worker runs them, and print training
# tokens/s and model FLOPs utilisation (MFU). Needs handlers/requirements-ml.txt and a CUDA
# GPU; exits 77 (skipped) without one. Pin the GPU with CUDA_VISIBLE_DEVICES as the agent
# does. MFU = FLOPs per token x tokens/s / the GPU's peak dense bf16 FLOP/s
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
import torch  # noqa: E402

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
print(f"GPU: {torch.cuda.get_device_name(0)}, bf16 {torch.cuda.is_bf16_supported()}, "
      f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")


def run(job_type, params, inputs, name):
    out = tmp / name
    job = {"job_id": f"job_gpu_{name}", "params": params,
           "inputs": {k: str(v) for k, v in inputs.items()}}
    env = dict(os.environ, NF_ARTIFACT_DIR=str(out / "out"), NF_GPU_COUNT="1")
    proc = subprocess.run([sys.executable, str(handlers / job_type)], input=json.dumps(job),
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"{job_type} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    return lines, [x["result"] for x in lines if "result" in x][-1], out / "out"


failed = False
for method in ("lora", "full"):
    lines, res, out = run("train", {"model_id": "llama-3-8b", "dataset_uri": "s3://g/t.jsonl",
                                    "method": method, "epochs": args.epochs,
                                    "batch_size": args.batch_size, "seed": 1},
                          {"dataset_uri": data}, method)
    rates = [x["metric"]["tokens_per_s"] for x in lines
             if "metric" in x and "tokens_per_s" in x["metric"]]
    rates = rates[1:] or rates  # the first window holds the warm-up
    tps = sum(rates) / max(1, len(rates))
    per_token = (6 if method == "full" else 4) * res["parameters"]
    ok = res["device"].startswith("cuda") and "bfloat16" in res["dtype"]
    failed |= not ok or not res["valid_loss"] < res["valid_loss_before"]
    print(f"train {method}: device {res['device']} ({res['dtype']}), valid loss "
          f"{res['valid_loss_before']:.3f} -> {res['valid_loss']:.3f}, {tps:,.0f} tokens/s, "
          f"MFU {100 * per_token * tps / peak:.4f}% {'ok' if ok else 'NOT ON CUDA/BF16'}")
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
    print(f"deploy: {n} tokens in {dt:.2f} s ({n / dt:.0f} tokens/s): "
          f"{body['choices'][0]['text']!r}")
finally:
    pid_file = dep_out / "endpoint.pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        time.sleep(1)
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(1 if failed else 0)
PY
