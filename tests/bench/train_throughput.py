#!/usr/bin/env python3
"""Training throughput of the train handler vs a bare PyTorch loop, same model, same data,
same run: how much the handler's own work (protocol lines, checkpoints, validation,
bookkeeping) costs on top of the forward/backward/step.

    python3 tests/bench/train_throughput.py [--model llama-3-8b] [--method lora]
                                            [--rows 512] [--epochs 2] [--batch-size 8]

Prints tokens/s (non-padding tokens through the model in training steps) for: the handler
(the mean of its metric lines' tokens_per_s, which time training steps only), the handler
end to end (training tokens x epochs / wall time of the process, imports included), and the
bare loop (the same LoRA/full setup, batches and optimizer, timed over the same steps).
The device is the one the handler picks (CUDA when present). `./forge bench train` runs it
(forge-bench: standalone: no stack needed).
"""
import argparse
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

HANDLERS = pathlib.Path(__file__).resolve().parents[2] / "handlers"
sys.path.insert(0, str(HANDLERS))

import _corpus  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3-8b")
    ap.add_argument("--method", default="lora", choices=("lora", "full"))
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-seq-length", type=int, default=128)
    args = ap.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="nexa-bench-"))
    os.environ.setdefault("NEXA_MODEL_CACHE", str(tmp / "models"))
    rng = random.Random(1)
    data = tmp / "train.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i in range(args.rows):
            q, a = _corpus.sample(rng, sorted(_corpus.DOMAINS)[i % len(_corpus.DOMAINS)])
            f.write(json.dumps({"instruction": q, "response": a}) + "\n")
    params = {"model_id": args.model, "dataset_uri": "s3://bench/train.jsonl",
              "method": args.method, "epochs": args.epochs, "batch_size": args.batch_size,
              "max_seq_length": args.max_seq_length, "validation_split": 0, "seed": 1,
              "metric_every": 5}

    import _hf

    _hf.stand_in_dir(args.model)  # built before timing either side
    job = {"job_id": "job_bench", "params": params, "inputs": {"dataset_uri": str(data)}}
    env = dict(os.environ, NF_ARTIFACT_DIR=str(tmp / "out"))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(HANDLERS / "train")], input=json.dumps(job),
                          capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"train failed: {proc.stderr}")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    rates = [x["metric"]["tokens_per_s"] for x in lines
             if "metric" in x and "tokens_per_s" in x["metric"]]
    result = [x["result"] for x in lines if "result" in x][-1]
    handler_rate = sum(rates[1:]) / max(1, len(rates) - 1)  # the first window warms up
    e2e_rate = result["tokens"] * args.epochs / wall

    bare_rate, steps = bare_loop(args, data)
    print(f"model {args.model} ({args.method}), {args.rows} rows, {args.epochs} epochs, "
          f"batch {args.batch_size}, device {result['device']} {result['dtype']}")
    print(f"  handler, training steps:   {handler_rate:10.0f} tokens/s "
          f"({len(rates)} metric windows)")
    print(f"  handler, end to end:       {e2e_rate:10.0f} tokens/s ({wall:.1f} s wall, "
          "imports, stand-in load, checkpoints and packing included)")
    print(f"  bare PyTorch loop:         {bare_rate:10.0f} tokens/s ({steps} steps)")
    print(f"  handler / bare:            {handler_rate / bare_rate:10.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


def bare_loop(args, data):
    """The same forward/backward/step over the same batches, nothing else."""
    import _hf
    import torch
    import transformers

    class DS:
        key, uri = "dataset_uri", str(data)

        def rows(self):
            import _forge
            return _forge.Dataset(str(data)).rows()

    device, dtype = _hf.device_and_dtype()
    base = _hf.stand_in_dir(args.model)
    tok = transformers.AutoTokenizer.from_pretrained(base)
    examples = _hf.encode_pairs(tok, _hf.read_pairs(DS()), args.max_seq_length, False)
    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.05,
            target_modules=_hf.LORA_TARGETS[model.config.model_type], task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    bs = args.batch_size
    batches = [examples[i:i + bs] for i in range(0, len(examples), bs)] * args.epochs
    tokens, steps, t0 = 0, 0, None
    for i, batch in enumerate(batches):
        if i == 5:  # the same warm-up the handler's first metric window has
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, tokens = time.monotonic(), 0
        ids, labels, mask = _hf.collate(batch, tok.pad_token_id, device)
        nll, n = _hf.token_nll(model, ids, labels, mask)
        (nll / max(1, n)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.monotonic() - t0), steps


if __name__ == "__main__":
    main()
