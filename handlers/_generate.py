"""generate with a model (handlers/generate's doc says the params): topics -> prompts ->
responses, then filters and duplicate removal until num_samples rows survive or the attempt
budget runs out. Rows are OpenAI chat rows (_rows.py)."""
from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import Counter

import _corpus
import _forge as forge
import _providers as providers
import _rows as rows_mod

TASKS = ("instruction", "qa", "chat")
TOPIC_CALL_COUNT = 20
MIN_TOPICS = 4
MAX_PROMPT_CHARS = 2000

PROMPT_ASK = {
    "instruction": "Write one instruction that a user could give an AI assistant about "
                   "{topic} (the domain is {domain}). Reply with the instruction only.",
    "qa": "Write one question about {topic} (the domain is {domain}) that has a clear, "
          "factual answer. Reply with the question only.",
    "chat": "Write the first message a user might send to a chatbot to talk about {topic} "
            "(the domain is {domain}). Reply with the message only.",
}
EXAMPLE_ASK = ("Here is an example: {example}\nWrite one new and different {what} about "
               "{domain}. Reply with it only.")
FOLLOW_UP_ASK = ("Here is a conversation between a user and an assistant:\n{conv}\nWrite "
                 "the user's next message. Reply with the message only.")
TOPICS_ASK = ("List {k} distinct subtopics of {domain}, one per line, without numbering "
              "or explanations.")
WHAT = {"instruction": "instruction", "qa": "question", "chat": "opening chat message"}


def budget_for(n: int) -> int:
    """The row attempts allowed for n surviving rows."""
    return max(n + 16, 3 * n)


def params_of(job: dict) -> dict:
    p = job["params"]
    task = forge.str_param(p, "task", default="instruction", max_len=32)
    if task not in TASKS:
        forge.fail("params.task must be instruction, qa or chat")
    topics = p.get("seed_topics")
    if topics is not None:
        if (not isinstance(topics, list) or not topics or len(topics) > 1000
                or not all(isinstance(t, str) and t.strip() and len(t) <= 256
                           for t in topics)):
            forge.fail("params.seed_topics must be a list of 1..1000 non-empty strings "
                       "(at most 256 characters each)")
        if p.get("dataset_uri") is not None:
            forge.fail("params.seed_topics: give seed_topics or dataset_uri, not both")
    temperature = p.get("temperature", 0.9)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not 0 <= temperature <= 2:
        forge.fail("params.temperature must be a number in [0, 2]")
    thr = p.get("near_duplicate_threshold", rows_mod.DEFAULT_NEAR_DUP)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 < thr <= 1:
        forge.fail("params.near_duplicate_threshold must be a number in (0, 1]")
    return {
        "task": task, "topics": [t.strip() for t in topics] if topics else None,
        "temperature": float(temperature),
        "system_prompt": forge.str_param(p, "system_prompt", default=None, max_len=4000),
        "max_tokens": forge.int_param(p, "max_tokens", default=128, lo=8, hi=1024),
        "threshold": float(thr),
        "min_chars": forge.int_param(p, "min_chars", default=rows_mod.DEFAULT_MIN_CHARS,
                                     lo=0, hi=100_000),
        "max_chars": forge.int_param(p, "max_chars", default=rows_mod.DEFAULT_MAX_CHARS,
                                     lo=1, hi=1_000_000),
        "seed": forge.seed_for(job, p),
    }


def clean(text: str) -> str:
    """A generated prompt: its first non-empty paragraph, without quotes or a label."""
    text = (text or "").strip()
    text = re.sub(r"^(instruction|question|message|user)\s*:\s*", "", text, flags=re.I)
    para = next((x.strip() for x in re.split(r"\n\s*\n", text) if x.strip()), "")
    return para.strip().strip('"').strip()[:MAX_PROMPT_CHARS]


def seed_examples(job: dict) -> list[str]:
    dataset = forge.open_dataset(job, "dataset_uri", required=False)
    if dataset is None:
        return []
    out = []
    for row in dataset.rows():
        if row.error or not row.record:
            continue
        rec = row.record
        text = None
        msgs = rec.get("messages")
        if isinstance(msgs, list):
            text = next((m.get("content") for m in msgs if isinstance(m, dict)
                         and m.get("role") == "user"), None)
        for k in ("instruction", "prompt", "question", "text"):
            if not isinstance(text, str) or not text.strip():
                text = rec.get(k)
        if isinstance(text, str) and text.strip():
            out.append(text.strip()[:MAX_PROMPT_CHARS])
        if len(out) >= 10_000:
            break
    if not out:
        forge.fail("params.dataset_uri: no records with a prompt (messages, instruction, "
                   "prompt, question or text)")
    return out


def topics_from(gen, domain: str, P: dict) -> tuple[list[str], str]:
    """(topics, where they came from) when neither seed_topics nor a seed dataset names
    any: asked of the generator, topped up from the domain's vocabulary."""
    try:
        a = gen.chat([{"role": "user", "content": TOPICS_ASK.format(
            k=TOPIC_CALL_COUNT, domain=domain)}], max_tokens=min(512, 8 * P["max_tokens"]),
            temperature=P["temperature"], seed=P["seed"])
        lines = [re.sub(r"^\s*([-*\u2022]|\d+[.)])\s*", "", x).strip()
                 for x in a.text.splitlines()]
    except providers.Refused:
        lines = []
    seen, topics = set(), []
    for x in lines:
        if 3 <= len(x) <= 80 and x.lower() not in seen:
            seen.add(x.lower())
            topics.append(x)
    source = "generator"
    if len(topics) < MIN_TOPICS:
        for s in _corpus.domain_vocab(domain)["subjects"]:
            if s.lower() not in seen:
                seen.add(s.lower())
                topics.append(s)
        source = "generator+domain_vocabulary" if lines and topics else "domain_vocabulary"
    return topics, source


def main(job: dict, domain: str, n: int, fmt: str) -> None:
    P = params_of(job)
    examples = seed_examples(job)
    gen = providers.resolve(job, "generator")
    try:
        run(job, gen, domain, n, fmt, P, examples)
    except providers.ProviderOutage as exc:
        gen.meter.flush()  # the calls that were answered are still metered
        providers.outage_exit(exc)
    finally:
        gen.close()


def run(job, gen, domain, n, fmt, P, examples):
    task = P["task"]
    if P["topics"]:
        topics, topic_source = P["topics"], "seed_topics"
    elif examples:
        topics, topic_source = examples, "dataset_uri"
    else:
        topics, topic_source = topics_from(gen, domain, P)
    budget = budget_for(n)
    forge.log(f"generating {n} {task} rows for {domain!r} with {gen.label} "
              f"({gen.kind}{', stand-in' if gen.stand_in else ''}); {len(topics)} topics "
              f"({topic_source}); attempt budget {budget} rows")
    dedup = rows_mod.Deduper(P["threshold"])
    kept: list[dict] = []
    dropped: Counter = Counter()
    attempts = 0
    tick = forge.Progress()
    lock = threading.Lock()
    done = [0]
    last_flush = [time.monotonic()]
    sys_msgs = [{"role": "system", "content": P["system_prompt"]}] if P["system_prompt"] else []

    def ask(messages, seed):
        return gen.chat(messages, max_tokens=P["max_tokens"], temperature=P["temperature"],
                        seed=seed).text

    def make(i):
        """Row i: (row, None) or (None, why it was not made)."""
        seed = (P["seed"] + 7919 * i) % (2 ** 31)
        topic = topics[i % len(topics)]
        if topic_source == "dataset_uri":
            ask_text = EXAMPLE_ASK.format(example=topic, what=WHAT[task], domain=domain)
        else:
            ask_text = PROMPT_ASK[task].format(topic=topic, domain=domain)
        try:
            prompt = clean(ask([{"role": "user", "content": ask_text}], seed))
            if not prompt:
                return None, "empty"
            history = []
            if task == "chat":
                first = ask(sys_msgs + [{"role": "user", "content": prompt}], seed + 1)
                why = rows_mod.check_text(prompt, first, P["min_chars"], P["max_chars"])
                if why:
                    return None, why
                history = [{"role": "user", "content": prompt},
                           {"role": "assistant", "content": first}]
                conv = "\n".join(f"{m['role']}: {m['content']}" for m in history)
                prompt = clean(ask([{"role": "user", "content": FOLLOW_UP_ASK.format(
                    conv=conv)}], seed + 2))
                if not prompt:
                    return None, "empty"
            response = ask(sys_msgs + history + [{"role": "user", "content": prompt}],
                           seed + 3)
        except providers.Refused:
            return None, "provider_refused"
        why = rows_mod.check_text(prompt, response, P["min_chars"], P["max_chars"])
        if why:
            return None, why
        return rows_mod.chat_row(prompt, response.strip(), P["system_prompt"], history), None

    def on_done(_i, _res):
        with lock:
            done[0] += 1
            tick(min(0.95, 0.95 * done[0] / max(1, min(budget, n * 1.3))))
            if time.monotonic() - last_flush[0] >= 2.0:
                last_flush[0] = time.monotonic()
                gen.meter.flush()

    while len(kept) < n and attempts < budget:
        want = min(budget - attempts, max(4, math.ceil((n - len(kept)) * 1.25)))
        batch = list(range(attempts, attempts + want))
        attempts += want
        for row, why in gen.map(batch, make, on_done):
            if len(kept) >= n:
                break
            if why is None:
                why = dedup.add(str(len(kept)), rows_mod.row_text(row))
            if why is None:
                kept.append(row)
            else:
                dropped[why] += 1
        gen.meter.flush()
        forge.log(f"{len(kept)}/{n} rows kept after {attempts} attempts"
                  + (f"; dropped {dict(dropped)}" if dropped else ""))
    if not kept:
        forge.fail(f"no rows survived the filters in {attempts} attempts (dropped "
                   f"{dict(dropped)}); try another generator, temperature or max_chars")

    name = f"samples.{fmt}"
    size = rows_mod.write_rows(os.path.join(forge.artifact_dir(), name), kept, fmt)
    m = gen.meter
    forge.progress(1.0)
    forge.artifact(name, "dataset")
    forge.result({
        "num_samples": len(kept), "requested": n, "domain": domain, "task": task,
        "format": fmt, "bytes": size, "seed": P["seed"], "row_format": "openai_chat",
        "generator": gen.describe(), "stand_in": gen.stand_in,
        "topics": len(topics), "topics_source": topic_source,
        "attempts": attempts, "attempt_budget": budget, "budget_exhausted": len(kept) < n,
        "dropped": dict(sorted(dropped.items())),
        "near_duplicate_threshold": P["threshold"],
        "calls": m.calls, "retries": m.retries, "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens, "cost_usd": m.cost_usd})
