"""evaluate for PyTorch models through lm-evaluation-harness (lm_eval 0.4, offline).

The model: a stand-in base by name (_hf.STAND_INS), or a model.tar written by train (an
artifact:// URI, or an account model's name the gateway resolved to its artifact; either
way the worker fetched it into inputs.<param>), or a running deployment of the caller
(dep-...: job["models"][param] has its worker-local base_url), scored through its
OpenAI API with _apilm.DeploymentLM - the same numbers as the model loaded here; its
tokens count as this job's usage. It is loaded with transformers and wrapped
as lm_eval's HFLM (the model and tokenizer objects: nothing is fetched from the hub;
HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set). handlers/evaluate calls main(job, path).

benchmark: mmlu, hellaswag, arc_easy, gsm8k - our task YAMLs in benchmarks/tasks/ (the
published tasks' prompts and metrics, zero-shot) over the JSONL samples in benchmarks/
(or NEXA_BENCHMARK_DIR, same names and formats); or custom (dataset_uri: Parquet, JSONL
or CSV): rows with `choices` and `answer` are multiple-choice (acc, acc_norm), other rows
(messages, prompt/completion, instruction/response, text) give the loss and perplexity of
their completions. Every metric comes with lm_eval's standard error (null where lm_eval
gives none: perplexity) and the sample count.

compare_to (optional): a second model (a name or artifact://, resolved like model_id)
evaluated on the same tasks in the same job; the result holds its metrics and the delta
(model - compare_to) per metric.

Artifact: eval.json (report). Usage: input_tokens = tokens the models processed,
output_tokens = tokens generated (gsm8k).
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import urllib.request

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import _benchmarks  # noqa: E402
import _forge as forge  # noqa: E402
import _hf as hf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.join(HERE, "benchmarks")
TASK_DIR = os.path.join(BENCH_DIR, "tasks")
BENCHMARKS = ("mmlu", "hellaswag", "arc_easy", "gsm8k", "custom")
LETTERS = "ABCDEFGHIJ"
PRIMARY = {"hellaswag": "acc_norm", "gsm8k": "exact_match"}
# lm_eval's filter names -> our metric names (gsm8k): the last number of the answer
# (flexible-extract) is `exact_match`, as before; the "#### n" form is `exact_match_strict`.
FILTERS = {"none": "", "flexible-extract": "", "strict-match": "_strict"}
MAX_ROWS = 5000
BOOTSTRAP_ITERS = 1000


def bench_file(job: dict, name: str, work: str) -> tuple[str, dict]:
    """(one JSONL file of benchmark name's rows, where they came from): the store's
    benchmarks/<name>/ the worker fetched (its files joined in name order), else the
    bundled sample (_benchmarks.data_for says why)."""
    files, where = _benchmarks.data_for(job, name)
    if not files:
        forge.fail(f"benchmark {name}: no data on this worker ({where})", forge.EXIT_RETRYABLE)
    if len(files) == 1:
        return files[0], where
    path = os.path.join(work, f"{name}-data.jsonl")
    with open(path, "w", encoding="utf-8") as out:
        for p in files:
            with open(p, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        out.write(line.rstrip("\n") + "\n")
    return path, where


# ---- the models ---------------------------------------------------------------------


def model_file(job: dict, key: str) -> str | None:
    """The fetched model.tar of params.<key>: an artifact:// URI, or an account model's
    name the gateway resolved to its artifact (both are inputs.<key>); None otherwise."""
    value = job["params"].get(key)
    if forge.is_uri(value):
        return forge.input_path(job, key, value)
    inputs = job.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get(key), str):
        return forge.input_path(job, key, value)
    return None


def deployment_of(job: dict, key: str) -> dict | None:
    """job["models"][key] when the gateway resolved params.<key> (dep-...) to a running
    deployment of the caller: {id, kind: "deployment", base_url (worker-local), model}."""
    m = (job.get("models") or {}).get(key)
    if isinstance(m, dict) and m.get("kind") == "deployment" and \
            isinstance(m.get("base_url"), str) and m["base_url"].startswith("http://"):
        return m
    return None


def deployment_lm(job: dict, key: str):
    """(lm, None, meta, "deployment") for a deployment: lm_eval over its API (_apilm.py);
    no tokenizer on this side."""
    import _apilm

    dep = deployment_of(job, key)
    stand_in = False
    try:
        with urllib.request.urlopen(dep["base_url"].rstrip("/") + "/models", timeout=30) as r:
            data = json.loads(r.read()).get("data") or [{}]
        stand_in = bool(data[0].get("stand_in"))
    except (OSError, ValueError, AttributeError):
        forge.fail(f"params.{key}: deployment {dep.get('id')} does not answer (stopped or its "
                   "worker is gone?)", forge.EXIT_RETRYABLE)
    try:  # can it score prompts? (a bigram deployment cannot: 400)
        _apilm.post(dep["base_url"].rstrip("/") + "/completions",
                    {"prompt": "a", "max_tokens": 0, "echo": True, "logprobs": 0})
    except _apilm.ApiFailure as exc:
        forge.fail(f"params.{key}: deployment {dep.get('id')} cannot score prompts through "
                   f"its API (echo and logprobs need a PyTorch model): {exc}")
    lm = _apilm.deployment_lm_class()(dep["base_url"], dep.get("model") or dep.get("id"))
    meta = {"architecture": None, "base_model": dep.get("model"), "name": dep.get("id"),
            "stand_in": stand_in, "method": None}
    return lm, None, meta, "deployment"


def is_torch_model(job: dict, key: str) -> bool:
    """A stand-in base by name, or a fetched tar (train's model.tar)."""
    import tarfile

    if hf.has_weights(job, key):
        return True
    path = model_file(job, key)
    return path is not None and tarfile.is_tarfile(path)


def load_lm(job: dict, key: str, device, dtype):
    """(lm_eval HFLM, meta, source) for params.<key>."""
    from tokenizers.processors import TemplateProcessing

    if deployment_of(job, key):
        return deployment_lm(job, key)
    name = job["params"][key]
    path = model_file(job, key)
    base_meta = None
    if path is None:
        if not hf.has_weights(job, key):
            forge.fail(f"params.{key}: {name} is not a PyTorch model on this worker")
        model_dir, base_source = hf.base_dir_of(job, key)
        base_meta = hf.base_meta(job, key, model_dir)
        source = "stand_in" if base_meta.get("stand_in") else "base"
        forge.log(f"base model {name}: {base_meta['architecture']}"
                  f"{' stand-in' if base_meta.get('stand_in') else ''} from {base_source}")
        base_meta["base_source"] = base_source
    else:
        model_dir, source = hf.unpack_model(path, key), "trained"
    model, tok, meta = hf.load_for_inference(model_dir, device, dtype, meta=base_meta)
    if hasattr(model, "merge_and_unload"):  # a LoRA adapter: HFLM takes a plain model
        model = model.merge_and_unload()
    # The models are trained on "<s>" + text (_hf.encode_pair); the saved tokenizers add
    # nothing, so they add <s> here, where lm_eval asks for special tokens.
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.bos_token_id)])
    lm = counting_hflm()(pretrained=model, tokenizer=tok, device=str(device), batch_size=8,
                      add_bos_token=True, max_length=model.config.max_position_embeddings)
    return lm, tok, meta, source


@functools.cache
def counting_hflm():
    """lm_eval's HFLM, counting the tokens it processes and generates (for usage); a
    class built on first use, so that importing this module does not import lm_eval."""
    from lm_eval.models.huggingface import HFLM

    class CountingHFLM(HFLM):
        in_tokens = 0
        out_tokens = 0

        def _model_call(self, inps, attn_mask=None, labels=None):
            self.in_tokens += int(inps.numel())
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

        def _model_generate(self, context, max_length, stop, **kwargs):
            out = super()._model_generate(context, max_length, stop, **kwargs)
            mask = kwargs.get("attention_mask")
            self.in_tokens += int(mask.sum()) if mask is not None else int(context.numel())
            new = out[:, context.shape[1]:]
            self.out_tokens += int((new != self.tokenizer.pad_token_id).sum())
            return out

    return CountingHFLM


# ---- the tasks ----------------------------------------------------------------------


def task_yaml(work: str, kind: str, data: str) -> str:
    """A job-private task YAML: ours (benchmarks/tasks/<kind>.yaml) over the data file."""
    path = os.path.join(work, f"{kind}.yaml")
    doc = {"include": os.path.join(TASK_DIR, f"{kind}.yaml"),
           "dataset_kwargs": {"data_files": {"test": data}}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)  # JSON is YAML
    return path


def custom_files(job: dict, tok, work: str) -> dict:
    """The custom dataset's rows as the JSONL files of custom_choice / custom_text:
    {kind: (path, rows)}. A malformed row exits 2 naming it."""
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
            mc.append({"question": q, "choices": choices, "gold": gold})
        else:
            try:
                prompt, completion = hf.record_pair(rec)
            except ValueError as exc:
                forge.fail(f"params.dataset_uri: {row.where}: {exc}")
            texts.append(_text_doc(tok, prompt, completion))
        if len(mc) + len(texts) >= MAX_ROWS:
            forge.log(f"using the first {MAX_ROWS} records of {dataset.uri}")
            break
    if not mc and not texts:
        forge.fail("params.dataset_uri: no records")
    out = {}
    for kind, docs in (("custom_choice", mc), ("custom_text", texts)):
        if docs:
            path = os.path.join(work, f"{kind}.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for d in docs:
                    f.write(json.dumps(d) + "\n")
            out[kind] = (path, len(docs))
    return out


def _text_doc(tok, prompt: str, completion: str) -> dict:
    """{context, target, tokens} in the layout the models are trained on
    (_hf.encode_pair): the prompt then the assistant tag as context; the completion and
    </s> as target. tokens: the tokens lm_eval scores - it moves the context's trailing
    whitespace (the tag's newline) into the continuation, so that newline counts too."""
    context = prompt + hf.ASSISTANT_TAG if prompt else ""
    if tok is None:  # a deployment (no tokenizer here): words stand in for tokens
        target = completion
        return {"context": context, "target": target, "tokens": max(1, len(target.split()))}
    target = completion + tok.eos_token
    whole = tok.encode(context + target, add_special_tokens=False)
    ctx = tok.encode(context.rstrip(), add_special_tokens=False) if context.strip() else []
    return {"context": context, "target": target, "tokens": max(1, len(whole) - len(ctx))}


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


# ---- running them -------------------------------------------------------------------


def run_tasks(lm, specs: list[str]) -> dict:
    """{our metric: {value, stderr, samples}} of lm on the task YAMLs, through
    lm_eval.simple_evaluate (metric names of every task merged: the tasks of one job
    never share one)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    res = lm_eval.simple_evaluate(model=lm, tasks=list(specs), bootstrap_iters=BOOTSTRAP_ITERS,
                                  log_samples=False,
                                  task_manager=TaskManager(include_defaults=False))
    metrics = {}
    for task, values in res["results"].items():
        n = res.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in values.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, flt = key.split(",", 1)
            stderr = values.get(f"{metric}_stderr,{flt}")
            name = metric + FILTERS.get(flt, "_" + flt)
            metrics[name] = {"value": _r(value), "stderr": _r(stderr), "samples": n}
    return metrics


def _r(x):
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
        return None
    return round(float(x), 6)


def evaluate_model(job, key, device, dtype, specs_for, tick):
    """(report fields, metrics) of params.<key> on the job's tasks; frees the model."""
    import gc

    lm, tok, meta, source = load_lm(job, key, device, dtype)
    specs, samples = specs_for(tok)
    where = "through its OpenAI API" if source == "deployment" else f"on {device}"
    forge.log(f"evaluating the {source} model {job['params'][key]} (base "
              f"{meta.get('base_model') or meta.get('name')}, {meta.get('architecture')}) "
              f"with lm-evaluation-harness {where}")
    try:
        metrics = run_tasks(lm, specs)
    except Exception as exc:  # noqa: BLE001  (_apilm.ApiFailure: the deployment failed)
        if type(exc).__name__ != "ApiFailure":
            raise
        forge.fail(f"params.{key}: the deployment stopped answering during the evaluation: "
                   f"{exc}")
    tick()
    info = {"model": job["params"][key], "model_source": source,
            "base_source": meta.get("base_source"),
            "base_model": meta.get("base_model") or meta.get("name"),
            "stand_in": bool(meta.get("stand_in")), "architecture": meta.get("architecture"),
            "method": meta.get("method"), "samples": samples,
            "tokens": lm.in_tokens, "output_tokens": lm.out_tokens}
    del lm
    gc.collect()
    return info, metrics


def main(job: dict, model_path: str | None = None) -> None:
    """model_path: unused (kept for callers of the older signature); the model of each
    param is found by model_file."""
    hf.require_ml()
    # a job-private datasets cache (the JSON files lm_eval loads), set before any import
    # of datasets reads it
    work = tempfile.mkdtemp(prefix="lm-eval-",
                            dir=os.path.dirname(os.path.abspath(forge.artifact_dir())))
    os.environ["HF_DATASETS_CACHE"] = os.path.join(work, "datasets-cache")
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        forge.fail(f"this worker's Python lacks lm-evaluation-harness ({exc}); install "
                   "handlers/requirements-ml.txt", forge.EXIT_RETRYABLE)
    params = job["params"]
    bench = forge.str_param(params, "benchmark", required=True, max_len=32)
    if bench not in BENCHMARKS:
        forge.fail(f"params.benchmark must be one of {', '.join(BENCHMARKS)}")
    compare = forge.str_param(params, "compare_to", max_len=4096)
    if compare is not None and not (is_torch_model(job, "compare_to")
                                    or deployment_of(job, "compare_to")):
        forge.fail(f"params.compare_to: {compare} is not a PyTorch model (a stand-in base or a "
                   "model trained from one); compare_to needs one, like model_id")
    device, dtype = hf.device_and_dtype()
    done = [0]
    total = 2 if compare else 1

    def tick():
        done[0] += 1
        forge.progress(0.95 * done[0] / total)

    cache = {}

    def specs_for(tok):
        """The task YAMLs (and the sample count), built once: both models see the same
        data (the custom rows are tokenized with the first model's tokenizer for their
        token counts; the stand-ins share one tokenizer per architecture)."""
        if "specs" not in cache:
            if bench == "custom":
                files = custom_files(job, tok, work)
                cache["specs"] = [task_yaml(work, k, p) for k, (p, _) in files.items()]
                cache["samples"] = sum(n for _, n in files.values())
            else:
                data, where = bench_file(job, bench, work)
                with open(data, encoding="utf-8") as f:
                    cache["samples"] = sum(1 for line in f if line.strip())
                cache["data"] = where
                forge.log(f"benchmark {bench}: {cache['samples']} rows from "
                          + (where.get("uri") or where.get("dir") or "the bundled sample")
                          + (f" ({where['note']})" if where.get("note") else ""))
                cache["specs"] = [task_yaml(work, bench, data)]
        return cache["specs"], cache["samples"]

    try:
        info, metrics = evaluate_model(job, "model_id", device, dtype, specs_for, tick)
        other = None
        if compare:
            other = evaluate_model(job, "compare_to", device, dtype, specs_for, tick)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    primary = PRIMARY.get(bench, "acc")
    report = {"model_id": params["model_id"], "model_source": info["model_source"],
              "base_model": info["base_model"], "stand_in": info["stand_in"],
              "architecture": info["architecture"], "method": info["method"],
              "benchmark": bench, "samples": info["samples"], "metrics": metrics,
              "benchmark_data": cache.get("data", {"source": "dataset_uri"}),
              "base_source": info["base_source"],
              "accuracy": metrics.get(primary, {}).get("value"),
              "accuracy_stderr": metrics.get(primary, {}).get("stderr"),
              "perplexity": metrics.get("perplexity", {}).get("value"),
              "device": str(device), "tokens": info["tokens"],
              "harness": f"lm-evaluation-harness {_lm_eval_version()}"}
    in_tok, out_tok = info["tokens"], info["output_tokens"]
    if other is not None:
        o_info, o_metrics = other
        report["compare_to"] = {
            "model": o_info["model"], "model_source": o_info["model_source"],
            "base_model": o_info["base_model"], "stand_in": o_info["stand_in"],
            "metrics": o_metrics, "accuracy": o_metrics.get(primary, {}).get("value"),
            "perplexity": o_metrics.get("perplexity", {}).get("value")}
        report["delta"] = {k: round(v["value"] - o_metrics[k]["value"], 6)
                           for k, v in metrics.items()
                           if v["value"] is not None and o_metrics.get(k, {}).get("value")
                           is not None}
        in_tok += o_info["tokens"]
        out_tok += o_info["output_tokens"]
    # the scores as a live metric point (step 0): "<benchmark>/<metric>", and the
    # compared model's under "compare_to/<benchmark>/<metric>"
    scores = {f"{bench}/{k}": v.get("value") for k, v in metrics.items()}
    if other is not None:
        scores.update({f"compare_to/{bench}/{k}": v.get("value") for k, v in o_metrics.items()})
    forge.metric(0, **scores)
    size = forge.write_json(os.path.join(forge.artifact_dir(), "eval.json"), report)
    forge.progress(1.0)
    forge.usage(input_tokens=in_tok, output_tokens=out_tok)
    forge.artifact("eval.json", "report")
    res = {k: report[k] for k in ("benchmark", "benchmark_data", "base_source", "model_source",
                                  "base_model", "stand_in",
                                  "architecture", "samples", "metrics", "accuracy",
                                  "accuracy_stderr", "perplexity", "harness")}
    for k in ("compare_to", "delta"):
        if k in report:
            res[k] = report[k]
    res.update({"items": info["samples"], "bytes": size})
    forge.result(res)


def _lm_eval_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return "?"
