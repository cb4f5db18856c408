"""audit's LLM judge: a model (a provider, a deployment of the account, or a catalogue
model on the worker: handlers/_providers.py) scores up to `judge_max_rows` valid rows from
1 to 5 with the stated rubric (_audit.JUDGE_RUBRIC).

    rows --> (prompt, answer) pairs: chat `messages` (the last user turn and the assistant
    turn after it), prompt/completion, instruction/response; text-only rows have no answer
    to judge and are skipped --> the judge, concurrently up to the provider's limit --> the
    first digit 1..5 of its answer is the score (none: unparsed) --> per-row scores
    (scored.parquet's judge_score) and a summary (report.json's judge)

The judge's tokens are metered on the audit job like every provider call; a provider
outage ends the attempt as infra (exit 75, retried).
"""
from __future__ import annotations

import re

import _forge as forge
import _providers as providers
from _audit import JUDGE_RUBRIC

MAX_CHARS = 4000  # of each side of a pair shown to the judge
SCORE = re.compile(r"[1-5]")


def pair_of(record) -> tuple[str, str] | None:
    """(prompt, answer) of a training row, None when it has no answer to judge."""
    if not isinstance(record, dict):
        return None
    msgs = record.get("messages")
    if isinstance(msgs, list):
        answer = prompt = None
        for m in reversed(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                continue
            if answer is None and m.get("role") == "assistant":
                answer = m["content"]
            elif answer is not None and m.get("role") == "user":
                prompt = m["content"]
                break
        return (prompt, answer) if prompt and answer else None
    for p, a in (("prompt", "completion"), ("instruction", "response"),
                 ("question", "answer")):
        if isinstance(record.get(p), str) and isinstance(record.get(a), str):
            prompt = record[p]
            if isinstance(record.get("input"), str) and record["input"]:
                prompt += "\n\n" + record["input"]
            return (prompt, record[a]) if prompt.strip() and record[a].strip() else None
    return None


def parse_score(text: str) -> int | None:
    m = SCORE.search(text or "")
    return int(m.group()) if m else None


def judge(job: dict, dataset, eligible, max_rows: int, tick=None) -> tuple[dict, dict]:
    """Scores the first max_rows rows whose number eligible(n) accepts: ({row: score},
    the report's judge section)."""
    pairs = []
    for row in dataset.rows():
        if len(pairs) >= max_rows:
            break
        if not eligible(row.number):
            continue
        pa = pair_of(row.record)
        if pa is not None:
            pairs.append((row.number, pa[0][:MAX_CHARS], pa[1][:MAX_CHARS]))
    model = providers.resolve(job, "judge")
    forge.log(f"judge: {model.label} scores {len(pairs)} rows")

    def ask(item):
        _, prompt, answer = item
        try:
            a = model.chat([{"role": "system", "content": JUDGE_RUBRIC},
                            {"role": "user", "content": f"User:\n{prompt}\n\nAssistant:\n"
                                                        f"{answer}\n\nScore (1-5):"}],
                           max_tokens=4, temperature=0.0, seed=0)
        except providers.Refused:
            return None
        return parse_score(a.text)

    try:
        got = model.map(pairs, ask)
    except providers.ProviderOutage as exc:
        model.meter.flush()
        providers.outage_exit(exc)
    finally:
        model.close()
    model.meter.flush()
    scores = {pairs[i][0]: s for i, s in enumerate(got) if s is not None}
    dist = {str(k): sum(1 for s in scores.values() if s == k) for k in range(1, 6)}
    section = {"available": True, **model.describe(), "rubric": JUDGE_RUBRIC,
               "rows_asked": len(pairs), "rows_scored": len(scores),
               "unparsed": len(pairs) - len(scores), "distribution": dist,
               "mean": round(sum(scores.values()) / len(scores), 3) if scores else None,
               "calls": model.meter.calls, "prompt_tokens": model.meter.prompt_tokens,
               "completion_tokens": model.meter.completion_tokens}
    return scores, section
