"""distill (handlers/distill's doc says the params): collect -> filter -> package -> train.

    prompts of dataset_uri (first num_samples) --+--> held out (holdout, by seed)
                                                 +--> training prompts
    teacher answers every prompt; answers already in NF_RESUME_DIR's collection are reused
      (keyed by sha256 of teacher, messages, max_tokens, temperature, seed), and the
      collection so far is written as distill-collection-<n>.jsonl (checkpoint) every
      checkpoint_every answers, when the collection ends, and before a teacher outage
      exits 75
    filter: empty, refusal, too long (max_chars), disagrees with the row's reference
    distilled.jsonl / .parquet + heldout.jsonl --> handlers/train (student/, its own job
      JSON; the same trainer as a train job) with heldout.jsonl as validation: its
      valid_loss_before / valid_loss are the untrained and the trained student on the
      held-out sample. method logits: _kd.py (local teacher, same tokenizer).

The collection file: line 1 {"nexa_distill_collection": 1, "teacher", "answers"}, then one
{"key", "text", "finish_reason", "prompt_tokens", "completion_tokens"} (or "refused") per
answer. It also rides inside every student checkpoint tar as distill-collection.jsonl, so
whichever checkpoint is an attempt's newest, a retry finds the answers in it.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter

import _forge as forge
import _providers as providers
import _rows as rows_mod

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_PROMPTS = 100_000
COLLECTION = "distill-collection"
METHODS = ("sequence", "logits")


def params_of(job: dict) -> dict:
    p = job["params"]
    method = forge.str_param(p, "method", default="sequence", max_len=16)
    if method not in METHODS:
        forge.fail("params.method must be sequence or logits")
    holdout = p.get("holdout", 0.1)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or \
            not 0 <= holdout < 1:
        forge.fail("params.holdout must be a number in [0, 1)")
    temperature = p.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not 0 <= temperature <= 2:
        forge.fail("params.temperature must be a number in [0, 2]")
    return {
        "teacher": forge.str_param(p, "teacher_model", required=True, max_len=256),
        "student": forge.str_param(p, "student_model", required=True, max_len=256),
        "n": forge.int_param(p, "num_samples", default=None, lo=1, hi=1_000_000),
        "method": method, "holdout": float(holdout), "temperature": float(temperature),
        "max_tokens": forge.int_param(p, "max_tokens", default=128, lo=1, hi=4096),
        "system_prompt": forge.str_param(p, "system_prompt", default=None, max_len=4000),
        "max_chars": forge.int_param(p, "max_chars", default=rows_mod.DEFAULT_MAX_CHARS,
                                     lo=1, hi=1_000_000),
        "checkpoint_every": forge.int_param(p, "checkpoint_every", default=None, lo=1,
                                            hi=1_000_000),
        "kd_temperature": forge.float_param(p, "kd_temperature", default=2.0, lo=0.0,
                                            hi=100.0),
        "kd_alpha": forge.float_param(p, "kd_alpha", default=0.5, lo=0.0, hi=1.0),
        "seed": forge.seed_for(job, p, ":distill"),
    }


# ---- prompts --------------------------------------------------------------------------


def row_prompt(rec: dict) -> tuple[list[dict] | None, str | None]:
    """(the prompt as chat messages, the reference answer or None) of a record."""
    ref = next((rec[k] for k in ("reference", "answer", "expected_answer")
                if isinstance(rec.get(k), (str, int, float)) and not isinstance(rec.get(k),
                                                                               bool)), None)
    ref = str(ref).strip() if ref is not None and str(ref).strip() else None
    msgs = rec.get("messages")
    if isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str) for m in msgs):
        while msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        if msgs and msgs[-1]["role"] == "user" and msgs[-1]["content"].strip():
            return [{"role": m["role"], "content": m["content"]} for m in msgs], ref
        return None, ref
    for k in ("instruction", "prompt", "question", "text"):
        v = rec.get(k)
        if isinstance(v, str) and v.strip():
            extra = rec.get("input")
            if k == "instruction" and isinstance(extra, str) and extra.strip():
                v = v + "\n" + extra
            return [{"role": "user", "content": v}], ref
    return None, ref


def read_prompts(job: dict, P: dict) -> list[tuple[list[dict], str | None]]:
    dataset = forge.open_dataset(job, "dataset_uri")
    forge.log(f"reading prompts from {dataset}")
    out = []
    limit = min(P["n"] or MAX_PROMPTS, MAX_PROMPTS)
    for row in dataset.rows():
        if row.error or not row.record:
            continue
        msgs, ref = row_prompt(row.record)
        if msgs is not None:
            if P["system_prompt"] and msgs[0]["role"] != "system":
                msgs = [{"role": "system", "content": P["system_prompt"]}] + msgs
            out.append((msgs, ref))
        if len(out) >= limit:
            break
    if not out:
        forge.fail("params.dataset_uri: no records with a prompt (messages ending with a "
                   "user turn, instruction, prompt, question or text)")
    return out


# ---- the collection and its checkpoints ------------------------------------------------


def item_key(teacher: str, msgs: list[dict], P: dict, seed: int) -> str:
    doc = json.dumps([teacher, msgs, P["max_tokens"], P["temperature"], seed],
                     sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def parse_collection(lines) -> dict:
    answers = {}
    for i, raw in enumerate(lines):
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        raw = raw.strip()
        if not raw:
            continue
        doc = json.loads(raw)
        if i == 0:
            if doc.get("nexa_distill_collection") != 1:
                raise ValueError("not a distill collection")
            continue
        answers[doc["key"]] = doc
    return answers


def load_resume(resume_dir: str | None) -> dict:
    """The largest collection in NF_RESUME_DIR ({} when none): a distill-collection*.jsonl
    file, or distill-collection.jsonl inside a checkpoint tar."""
    best: dict = {}
    if not resume_dir or not os.path.isdir(resume_dir):
        return best
    for root, _dirs, files in os.walk(resume_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                if name.startswith(COLLECTION) and name.endswith(".jsonl"):
                    with open(path, "rb") as f:
                        found = parse_collection(f)
                elif name.endswith(".tar") and tarfile.is_tarfile(path):
                    with tarfile.open(path) as tar:
                        try:
                            member = tar.extractfile(COLLECTION + ".jsonl")
                        except KeyError:
                            continue
                        if member is None:
                            continue
                        found = parse_collection(member.read().splitlines())
                else:
                    continue
            except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
                forge.log(f"NF_RESUME_DIR: skipping {name}: {exc}")
                continue
            if len(found) > len(best):
                best = found
    return best


class Collection:
    """The answers so far (key -> entry) and their checkpoints in the artifact dir."""

    def __init__(self, teacher: str, answers: dict, every: int):
        self.teacher = teacher
        self.answers = dict(answers)
        self.every = every
        self.lock = threading.Lock()
        self.since = 0
        self.written: list[str] = []

    def add(self, key: str, entry: dict) -> None:
        with self.lock:
            self.answers[key] = dict(entry, key=key)
            self.since += 1
            due = self.since >= self.every
        if due:
            self.checkpoint()

    def text(self) -> str:
        with self.lock:
            entries = list(self.answers.values())
        head = {"nexa_distill_collection": 1, "teacher": self.teacher,
                "answers": len(entries)}
        return "".join(json.dumps(x, ensure_ascii=False, sort_keys=True) + "\n"
                       for x in [head] + entries)

    def checkpoint(self) -> str | None:
        """Writes distill-collection-<n>.jsonl (atomically) and reports it as a checkpoint
        artifact; None when nothing is new since the last one."""
        with self.lock:
            n = len(self.answers)
            self.since = 0
        name = f"{COLLECTION}-{n:07d}.jsonl"
        if name in self.written:
            return None
        path = os.path.join(forge.artifact_dir(), name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.text())
        os.replace(tmp, path)
        self.written.append(name)
        forge.artifact(name, "checkpoint")
        return name

    def add_to_tar(self, tar_path: str) -> None:
        """Appends the whole collection to a student checkpoint tar."""
        import io

        data = self.text().encode()
        info = tarfile.TarInfo(COLLECTION + ".jsonl")
        info.size = len(data)
        with tarfile.open(tar_path, "a") as tar:
            tar.addfile(info, io.BytesIO(data))


def collect(teacher, prompts, P, coll: Collection, tick) -> tuple[list, int]:
    """The teacher's answer entry for every prompt (resumed ones reused), and how many
    were asked now."""
    keys = [item_key(teacher.label, msgs, P, P["seed"] + i)
            for i, (msgs, _ref) in enumerate(prompts)]
    todo = [i for i, k in enumerate(keys) if k not in coll.answers]
    resumed = len(prompts) - len(todo)
    if resumed:
        forge.log(f"resuming the collection: {resumed} answers from NF_RESUME_DIR, "
                  f"{len(todo)} to ask")
    lock = threading.Lock()
    done = [resumed]
    last_flush = [time.monotonic()]

    def ask(i):
        msgs = prompts[i][0]
        try:
            a = teacher.chat(msgs, max_tokens=P["max_tokens"], temperature=P["temperature"],
                             seed=P["seed"] + i)
            entry = {"text": a.text, "finish_reason": a.finish_reason,
                     "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens}
        except providers.Refused as exc:
            entry = {"refused": str(exc)[:300]}
        coll.add(keys[i], entry)
        return entry

    def on_done(_i, _e):
        with lock:
            done[0] += 1
            tick(0.6 * done[0] / len(prompts))
            if time.monotonic() - last_flush[0] >= 2.0:
                last_flush[0] = time.monotonic()
                teacher.meter.flush()

    try:
        teacher.map(todo, ask, on_done)
    except providers.ProviderOutage as exc:
        teacher.meter.flush()
        coll.checkpoint()
        providers.outage_exit(exc)
    teacher.meter.flush()
    coll.checkpoint()
    return [coll.answers[k] for k in keys], len(todo)


# ---- filters ----------------------------------------------------------------------------


def _norm(s: str) -> list[str]:
    return re.findall(r"[a-z0-9.]+", s.lower())


def agrees(answer: str, reference: str) -> bool:
    """The answer agrees with a reference: it contains it, ends on the same number, or
    holds at least 60% of its words."""
    a, r = " ".join(_norm(answer)), " ".join(_norm(reference))
    if not r or r in a:
        return True
    nums_a = re.findall(r"-?\d+(?:\.\d+)?", answer.replace(",", ""))
    nums_r = re.findall(r"-?\d+(?:\.\d+)?", reference.replace(",", ""))
    if nums_r and nums_a and len(nums_r) == 1:
        try:
            return float(nums_a[-1]) == float(nums_r[0])
        except ValueError:
            return False
    rw, aw = set(_norm(reference)), set(_norm(answer))
    return len(rw & aw) / max(1, len(rw)) >= 0.6


def why_dropped(msgs, ref, entry, P) -> str | None:
    if "refused" in entry:
        return "provider_refused"
    why = rows_mod.check_text(msgs[-1]["content"], entry.get("text") or "", 1, P["max_chars"])
    if why == "too_short":
        why = None  # a one-word answer is an answer
    if why is None and ref is not None and not agrees(entry["text"], ref):
        why = "disagrees_with_reference"
    return why


# ---- the run ----------------------------------------------------------------------------


def split_holdout(n: int, fraction: float, seed: int) -> set[int]:
    if fraction <= 0 or n < 5:
        return set()
    k = max(1, int(round(n * fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return set(order[:k])


def main(job: dict) -> None:
    P = params_of(job)
    out = forge.artifact_dir()
    student = P["student"]
    if forge.is_uri(student) or (isinstance(job.get("inputs"), dict)
                                 and "student_model" in job["inputs"]):
        forge.fail("params.student_model must be a base model train fine-tunes (llama-3-8b, "
                   "mistral-7b, or a bigram model name); training your own model further is "
                   "not supported yet")
    import _hf

    if P["method"] == "logits" and not _hf.is_stand_in(student):
        forge.fail("params.method: logits needs a PyTorch student (llama-3-8b, mistral-7b)")
    prompts = read_prompts(job, P)
    teacher = providers.resolve(job, "teacher_model")
    if P["method"] == "logits":
        import _kd

        _kd.check_teacher(teacher, student)
    every = P["checkpoint_every"] or max(16, len(prompts) // 8)
    coll = Collection(teacher.label, load_resume(os.environ.get("NF_RESUME_DIR")), every)
    forge.log(f"distilling {teacher.label} ({teacher.kind}"
              f"{', stand-in' if teacher.stand_in else ''}) into {student}: "
              f"{len(prompts)} prompts, method {P['method']}")
    tick = forge.Progress()
    entries, asked = collect(teacher, prompts, P, coll, tick)
    resumed = len(prompts) - asked
    held = split_holdout(len(prompts), P["holdout"], P["seed"])
    kept, heldout, dropped, truncated = [], [], Counter(), 0
    for i, ((msgs, ref), e) in enumerate(zip(prompts, entries)):
        why = why_dropped(msgs, ref, e, P)
        if why:
            dropped[why] += 1
            continue
        truncated += e.get("finish_reason") == "length"
        row = {"messages": msgs + [{"role": "assistant", "content": e["text"].strip()}]}
        (heldout if i in held else kept).append(row)
    if not kept:
        forge.fail(f"no teacher answers survived the filters (dropped {dict(dropped)}); "
                   "nothing to train the student on")
    rows_mod.write_jsonl(os.path.join(out, "distilled.jsonl"), kept)
    rows_mod.write_parquet(os.path.join(out, "distilled.parquet"), kept)
    forge.artifact("distilled.jsonl", "dataset")
    forge.artifact("distilled.parquet", "dataset")
    if heldout:
        rows_mod.write_jsonl(os.path.join(out, "heldout.jsonl"), heldout)
        forge.artifact("heldout.jsonl", "dataset")
    forge.log(f"{len(kept)} rows to train on, {len(heldout)} held out; dropped "
              f"{dict(dropped) or 'none'}")
    m = teacher.meter
    teacher_tokens = {"prompt": sum(e.get("prompt_tokens", 0) for e in entries),
                      "completion": sum(e.get("completion_tokens", 0) for e in entries)}
    if resumed:
        # Resumed answers were paid for by no billed attempt (an infra failure is not
        # billed): they are metered once, here.
        r_in = teacher_tokens["prompt"] - m.prompt_tokens
        r_out = teacher_tokens["completion"] - m.completion_tokens
        forge.usage(input_tokens=max(0, r_in), output_tokens=max(0, r_out))

    if P["method"] == "logits":
        import _kd

        trained = _kd.train(job, teacher, student, kept, heldout, P, coll, tick)
    else:
        trained = train_student(job, student, kept, heldout, P, coll, tick)
    price_in, price_out = m.input_per_1m, m.output_per_1m
    cost = round(teacher_tokens["prompt"] * price_in / 1e6
                 + teacher_tokens["completion"] * price_out / 1e6, 6)
    forge.progress(1.0)
    forge.result({
        "teacher_model": P["teacher"], "student_model": student, "method": P["method"],
        "output_model": job["params"].get("output_model"),
        "teacher": teacher.describe(), "stand_in": teacher.stand_in,
        "prompts": len(prompts), "num_samples": len(kept), "heldout_samples": len(heldout),
        "teacher_calls": asked, "resumed_answers": resumed, "retries": m.retries,
        "teacher_tokens": teacher_tokens, "cost_usd": cost,
        "rows_kept": len(kept) + len(heldout), "rows_dropped": sum(dropped.values()),
        "dropped": dict(sorted(dropped.items())), "truncated_answers": truncated,
        "student": trained})


def train_student(job, student, kept, heldout, P, coll, tick) -> dict:
    """Runs handlers/train on the distilled rows in student/ (its own job JSON, the same
    trainer a train job runs), forwarding its protocol lines: artifact paths under
    student/, the collection added to each checkpoint tar, its result kept for ours."""
    out = forge.artifact_dir()
    sdir = os.path.join(out, "student")
    os.makedirs(sdir, exist_ok=True)
    p = job["params"]
    params = {"model_id": student, "dataset_uri": "artifact://distilled.jsonl",
              "seed": P["seed"]}
    inputs = {"dataset_uri": os.path.join(out, "distilled.jsonl")}
    if heldout:
        params["validation_uri"] = "artifact://heldout.jsonl"
        inputs["validation_uri"] = os.path.join(out, "heldout.jsonl")
    import _hf

    if not _hf.is_stand_in(student):
        # the bigram trainer reads prompt/response text, not chat rows
        for key, rows in (("dataset_uri", kept), ("validation_uri", heldout)):
            if key in inputs:
                path = os.path.join(sdir, f".{key}.jsonl")
                rows_mod.write_jsonl(path, [{"prompt": r["messages"][-2]["content"],
                                             "response": r["messages"][-1]["content"]}
                                            for r in rows])
                inputs[key] = path
    for k in ("epochs", "batch_size", "learning_rate", "max_seq_length"):
        if p.get(k) is not None:
            params[k] = p[k]
    if p.get("train_method") is not None:
        params["method"] = p["train_method"]
    sub = {"job_id": forge.job_id(job), "job_type": "train", "params": params,
           "inputs": inputs, "attempt": job.get("attempt", 1)}
    env = dict(os.environ, NF_ARTIFACT_DIR=sdir, NF_JOB_TYPE="train")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "train")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    proc.stdin.write(json.dumps(sub))
    proc.stdin.close()
    result = None
    for raw in proc.stdout:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict):
            continue
        if "result" in line:
            result = line["result"]
            continue
        if "progress" in line:
            tick(0.6 + 0.38 * float(line["progress"]))
            continue
        if "artifact" in line:
            a = dict(line["artifact"])
            if a.get("kind") == "checkpoint":
                coll.add_to_tar(os.path.join(sdir, a["path"]))
            a["path"] = "student/" + a["path"]
            line = {"artifact": a}
        forge.emit(line)
    rc = proc.wait()
    if rc != 0:
        forge.fail(f"training the student {student} failed (train exited {rc})",
                   rc if rc == forge.EXIT_RETRYABLE else forge.EXIT_BAD_PARAMS)
    result = result or {}
    summary = {k: result.get(k) for k in (
        "model_id", "method", "epochs", "steps", "train_loss", "valid_loss",
        "valid_loss_before", "loss_history", "final_loss", "train_examples",
        "valid_examples", "stand_in", "parameters", "trainable_parameters",
        "resumed_from_epoch") if k in result}
    summary["artifact"] = ("student/model.tar" if os.path.exists(
        os.path.join(sdir, "model.tar")) else "student/model.json")
    if result.get("valid_loss_before") is not None and result.get("valid_loss") is not None:
        summary["heldout"] = {"untrained_student_loss": result["valid_loss_before"],
                              "student_loss": result["valid_loss"],
                              "student_beats_untrained": result["valid_loss"]
                              < result["valid_loss_before"]}
    return summary
