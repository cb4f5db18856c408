"""evaluate for PyTorch models: a stand-in base by name (_hf.STAND_INS) or a model.tar
written by train (params.model_id = its artifact:// URI, fetched into inputs.model_id).
handlers/evaluate calls main(job, model_path) for these.

benchmark: mmlu, hellaswag, arc_easy, gsm8k (the samples in handlers/benchmarks/, or
NEXA_BENCHMARK_DIR, in each benchmark's published format; scored the way
lm-evaluation-harness scores them: choices by log-likelihood, gsm8k by greedy generation and
exact match of the final number), or custom (dataset_uri): rows with `choices` and `answer`
are multiple-choice (accuracy); other rows (messages, prompt/completion,
instruction/response, text) give the perplexity of their completions. Every metric comes
with its standard error and the sample count. Artifact: eval.json (report). Usage:
input_tokens = tokens scored, output_tokens = tokens generated.
"""
from __future__ import annotations

import json
import math
import os
import re

import _forge as forge
import _hf as hf

BENCH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmarks")
BENCHMARKS = ("mmlu", "hellaswag", "arc_easy", "gsm8k", "custom")
LETTERS = "ABCDEFGHIJ"


def bench_rows(name: str) -> list[dict]:
    path = os.path.join(os.environ.get("NEXA_BENCHMARK_DIR") or BENCH_DIR, f"{name}.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as exc:
        forge.fail(f"benchmark {name}: its data is unreadable on this worker ({exc})",
                   forge.EXIT_RETRYABLE)


# Each multiple-choice item: (context, [continuations], gold index).


def mmlu_items(rows):
    out = []
    for r in rows:
        subject = r.get("subject", "").replace("_", " ")
        ctx = (f"The following are multiple choice questions (with answers) about {subject}."
               f"\n\n{r['question'].strip()}\n"
               + "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(r["choices"]))
               + "Answer:")
        out.append((ctx, [f" {LETTERS[i]}" for i in range(len(r["choices"]))],
                    int(r["answer"])))
    return out


def hellaswag_items(rows):
    out = []
    for r in rows:
        ctx = r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize()
        out.append((ctx, [" " + e for e in r["endings"]], int(r["label"])))
    return out


def arc_items(rows):
    out = []
    for r in rows:
        labels = r["choices"]["label"]
        out.append((f"Question: {r['question']}\nAnswer:",
                    [" " + t for t in r["choices"]["text"]], labels.index(r["answerKey"])))
    return out


def custom_items(job, tok):
    """(multiple-choice items, perplexity examples) of the custom dataset."""
    dataset = forge.open_dataset(job, "dataset_uri", required=False)
    if dataset is None:
        forge.fail("params.dataset_uri is required when params.benchmark is custom")
    mc, texts = [], []
    for row in dataset.rows():
        if row.error:
            forge.fail(f"params.dataset_uri: {row.where}: {row.error}")
        rec = row.record
        if "choices" in rec:
            choices, answer = rec.get("choices"), rec.get("answer")
            q = rec.get("question") or rec.get("prompt") or rec.get("instruction")
            if (not isinstance(choices, list) or len(choices) < 2
                    or not all(isinstance(c, str) for c in choices) or not isinstance(q, str)):
                forge.fail(f"params.dataset_uri: {row.where}: a multiple-choice row needs a "
                           "question and a list of at least two string choices")
            gold = _gold(answer, choices)
            if gold is None:
                forge.fail(f"params.dataset_uri: {row.where}: answer must be a choice's index, "
                           "letter or text")
            mc.append((f"Question: {q}\nAnswer:", [" " + c for c in choices], gold))
        else:
            try:
                prompt, completion = hf.record_pair(rec)
            except ValueError as exc:
                forge.fail(f"params.dataset_uri: {row.where}: {exc}")
            texts.append(hf.encode_pair(tok, prompt, completion, 512, False))
        if len(mc) + len(texts) >= 5000:
            break
    if not mc and not texts:
        forge.fail("params.dataset_uri: no records")
    return mc, texts


def _gold(answer, choices):
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return answer
    if isinstance(answer, str):
        a = answer.strip()
        if len(a) == 1 and a.upper() in LETTERS[:len(choices)]:
            return LETTERS.index(a.upper())
        if a.isdigit() and int(a) < len(choices):
            return int(a)
        if a in choices:
            return choices.index(a)
    return None


# ---- scoring ------------------------------------------------------------------------


def continuation_logprobs(model, tok, ctx, conts, device):
    """[(sum log p(cont | ctx), cont token count)] per continuation, in one batch."""
    import torch

    c_ids = [tok.bos_token_id] + tok.encode(ctx, add_special_tokens=False)
    batch = []
    for cont in conts:
        x = tok.encode(cont, add_special_tokens=False)
        batch.append((c_ids + x, [-100] * len(c_ids) + x))
    ids, labels, mask = hf.collate(batch, tok.pad_token_id, device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    return [(float(picked[i].sum()), int(keep[i].sum())) for i in range(len(conts))], \
        int(mask.sum())


def stderr_of_mean(xs):
    n = len(xs)
    if n < 2:
        return None
    m = sum(xs) / n
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def score_choices(model, tok, items, device, tick):
    acc, acc_norm, tokens = [], [], 0
    for i, (ctx, conts, gold) in enumerate(items):
        lps, n = continuation_logprobs(model, tok, ctx, conts, device)
        tokens += n
        acc.append(float(max(range(len(conts)), key=lambda j: lps[j][0]) == gold))
        norm = [lp / max(1, len(c.encode())) for (lp, _), c in zip(lps, conts)]
        acc_norm.append(float(max(range(len(conts)), key=lambda j: norm[j]) == gold))
        tick((i + 1) / len(items))
    return {"acc": _metric(acc), "acc_norm": _metric(acc_norm)}, tokens


def _metric(xs):
    return {"value": round(sum(xs) / len(xs), 6), "stderr": _r(stderr_of_mean(xs)),
            "samples": len(xs)}


def _r(x):
    return None if x is None else round(x, 6)


def score_perplexity(model, examples, device, pad_id):
    losses, total, count, tokens = [], 0.0, 0, 0
    for x, y in examples:
        ids, labels, mask = hf.collate([(x, y)], pad_id, device)
        import torch

        with torch.no_grad():
            nll, n = hf.token_nll(model, ids, labels, mask)
        tokens += len(x)
        if n:
            losses.append(float(nll) / n)
            total += float(nll)
            count += n
    loss = total / max(1, count)
    return {"loss": {"value": round(loss, 6), "stderr": _r(stderr_of_mean(losses)),
                     "samples": len(losses)},
            "perplexity": {"value": round(math.exp(loss), 4), "samples": len(losses),
                           "tokens": count}}, tokens


_NUM = re.compile(r"-?[\d,]*\.?\d+")


def _final_number(text):
    m = re.search(r"####\s*(-?[\d,]*\.?\d+)", text)
    s = m.group(1) if m else (_NUM.findall(text) or [""])[-1]
    return s.replace(",", "").rstrip(".")


def score_gsm8k(model, tok, rows, device, tick):
    import torch

    em, in_tok, out_tok = [], 0, 0
    for i, r in enumerate(rows):
        prompt = f"Question: {r['question']}\nAnswer:"
        ids = torch.tensor([[tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)],
                           device=device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=64, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[0, ids.shape[1]:]
        text = tok.decode(new, skip_special_tokens=True).split("Question:")[0]
        in_tok += ids.shape[1]
        out_tok += int(new.numel())
        em.append(float(_final_number(text) != "" and
                        _final_number(text) == _final_number(r["answer"])))
        tick((i + 1) / len(rows))
    return {"exact_match": _metric(em)}, in_tok, out_tok


# ---- the run ------------------------------------------------------------------------


def main(job: dict, model_path: str | None) -> None:
    """model_path: the fetched model.tar, or None for a stand-in base by name."""
    hf.require_ml()
    params = job["params"]
    model_id = params["model_id"]
    bench = forge.str_param(params, "benchmark", required=True, max_len=32)
    if bench not in BENCHMARKS:
        forge.fail(f"params.benchmark must be one of {', '.join(BENCHMARKS)}")
    device, dtype = hf.device_and_dtype()
    if model_path is None:
        model_dir, source = hf.stand_in_dir(model_id), "stand_in"
    else:
        model_dir, source = hf.unpack_model(model_path), "trained"
    model, tok, meta = hf.load_for_inference(model_dir, device, dtype)
    base = meta.get("base_model") or meta.get("name")
    forge.log(f"evaluating the {source} model {model_id} (base {base}, "
              f"{meta['architecture']}) on {bench}, on {device}")

    tick = forge.Progress()
    out_tok = 0
    if bench == "custom":
        mc, texts = custom_items(job, tok)
        metrics, in_tok = {}, 0
        if mc:
            m, n = score_choices(model, tok, mc, device, tick)
            metrics.update(m)
            in_tok += n
        if texts:
            m, n = score_perplexity(model, texts, device, tok.pad_token_id)
            metrics.update(m)
            in_tok += n
        samples = len(mc) + len(texts)
    elif bench == "gsm8k":
        rows = bench_rows(bench)
        metrics, in_tok, out_tok = score_gsm8k(model, tok, rows, device, tick)
        samples = len(rows)
    else:
        rows = bench_rows(bench)
        items = {"mmlu": mmlu_items, "hellaswag": hellaswag_items,
                 "arc_easy": arc_items}[bench](rows)
        metrics, in_tok = score_choices(model, tok, items, device, tick)
        samples = len(items)

    primary = {"hellaswag": "acc_norm", "gsm8k": "exact_match"}.get(bench, "acc")
    accuracy = metrics.get(primary, {}).get("value")
    report = {"model_id": model_id, "model_source": source, "base_model": base,
              "stand_in": bool(meta.get("stand_in")), "architecture": meta["architecture"],
              "method": meta.get("method"), "benchmark": bench, "samples": samples,
              "metrics": metrics, "accuracy": accuracy,
              "accuracy_stderr": metrics.get(primary, {}).get("stderr"),
              "perplexity": metrics.get("perplexity", {}).get("value"),
              "device": str(device), "tokens": in_tok,
              "harness": "built-in scorer in lm-evaluation-harness's formats "
                         "(not lm-evaluation-harness itself)"}
    size = forge.write_json(os.path.join(forge.artifact_dir(), "eval.json"), report)
    forge.progress(1.0)
    forge.usage(input_tokens=in_tok, output_tokens=out_tok)
    forge.artifact("eval.json", "report")
    res = {k: report[k] for k in ("benchmark", "model_source", "base_model", "stand_in",
                                  "architecture", "samples", "metrics", "accuracy",
                                  "accuracy_stderr", "perplexity")}
    res.update({"items": samples, "bytes": size})
    forge.result(res)
