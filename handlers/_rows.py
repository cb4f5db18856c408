"""Chat rows for generate and distill: the filters (empty, length, refusals), exact and
near-duplicate removal (MinHash LSH, datasketch), and the OpenAI chat format written as
JSONL and Parquet.

A row is {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}, the
format OpenAI's fine-tuning takes and `train` reads (_hf.record_pair). Parquet holds the
same rows: one column `messages`, list<struct<role: string, content: string>>.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

DEFAULT_MIN_CHARS = 2
DEFAULT_MAX_CHARS = 8000
DEFAULT_NEAR_DUP = 0.8  # Jaccard similarity of word 3-gram sets
NUM_PERM = 128

REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry, (but )?i|i can(not|'t)|i won'?t|i am unable|"
    r"i'?m unable|i'?m not able|as an ai( language model)?|i must decline|"
    r"unfortunately,? i (can(not|'t)|am unable))", re.IGNORECASE)

DROP_REASONS = ("empty", "too_short", "too_long", "refusal", "exact_duplicate",
                "near_duplicate")


def check_text(prompt: str, response: str, min_chars: int = DEFAULT_MIN_CHARS,
               max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """Why a (prompt, response) pair is dropped, or None to keep it."""
    p, r = (prompt or "").strip(), (response or "").strip()
    if not p or not r:
        return "empty"
    if len(r) < min_chars or len(p) < min_chars:
        return "too_short"
    if len(r) > max_chars or len(p) > max_chars:
        return "too_long"
    if REFUSAL.match(r):
        return "refusal"
    return None


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def shingles(text: str, k: int = 3) -> set[str]:
    w = _words(text)
    if len(w) < k:
        return {" ".join(w)} if w else {""}
    return {" ".join(w[i:i + k]) for i in range(len(w) - k + 1)}


class Deduper:
    """Exact (normalised text) and near (MinHash LSH over word 3-grams) duplicates of the
    texts kept so far. add() keeps a text or says why not."""

    def __init__(self, threshold: float = DEFAULT_NEAR_DUP):
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.exact: set[str] = set()
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.sigs: dict[str, object] = {}
        self.sets: dict[str, set] = {}

    def add(self, key: str, text: str) -> str | None:
        from datasketch import MinHash

        norm = " ".join(_words(text))
        digest = hashlib.sha256(norm.encode()).hexdigest()
        if digest in self.exact:
            return "exact_duplicate"
        sh = shingles(text)
        m = MinHash(num_perm=NUM_PERM, seed=1)
        for s in sh:
            m.update(s.encode())
        # LSH candidates, confirmed by the true Jaccard similarity of the shingle sets
        for other in self.lsh.query(m):
            o = self.sets[other]
            if len(sh & o) / max(1, len(sh | o)) >= self.threshold:
                return "near_duplicate"
        self.exact.add(digest)
        self.lsh.insert(key, m)
        self.sets[key] = sh
        return None


def chat_row(prompt: str, response: str, system_prompt: str | None = None,
             history: list[dict] | None = None) -> dict:
    msgs = []
    if system_prompt:
        msgs.append({"role": "system", "content": system_prompt})
    msgs.extend(history or [])
    msgs.append({"role": "user", "content": prompt})
    msgs.append({"role": "assistant", "content": response})
    return {"messages": msgs}


def row_text(row: dict) -> str:
    """The user and assistant text of a chat row (what duplicates are judged on)."""
    return "\n".join(m["content"] for m in row["messages"] if m["role"] != "system")


def write_jsonl(path: str, rows: list[dict]) -> int:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return os.path.getsize(path)


def write_parquet(path: str, rows: list[dict]) -> int:
    import _forge as forge

    pa, pq = forge._pyarrow()
    msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("messages", pa.list_(msg))])
    table = pa.Table.from_pylist([{"messages": r["messages"]} for r in rows], schema=schema)
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return os.path.getsize(path)


def write_rows(path: str, rows: list[dict], fmt: str) -> int:
    return write_parquet(path, rows) if fmt == "parquet" else write_jsonl(path, rows)
