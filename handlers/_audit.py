"""Dataset quality checks for audit: the per-row work and the near-duplicate index.

    rows --chunks of CHUNK_ROWS--> analyze_chunk (in NEXA_AUDIT_WORKERS processes):
        format check, exact fingerprints, MinHash signature, personal data, language,
        token count  --> RowInfo, in file order
    --> main process: exact duplicates (first seen wins), near-duplicates (MinHash LSH:
        query, verify the estimated Jaccard, then insert; union-find clusters)

Near-duplicates: datasketch MinHash (128 permutations over the character 5-grams of the
lowercased text, punctuation made spaces, hashed by shingle_hashes) in a MinHashLSH at `near_duplicate_threshold`, banded
towards recall (weights 0.3/0.7) and every candidate verified against the threshold. Language:
py3langid (its model ships in the wheel: no download). Token lengths: the `tokenizers`
tokenizer.json of a stand-in or of a model train wrote, counted as train encodes a row
(<s> prompt ### Assistant: completion </s>), so "over max_seq_length" means truncated by train.

The optional LLM judge (_audit_judge.py) scores rows with the rubric JUDGE_RUBRIC below,
through a model of handlers/_providers.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field

import _audit_format as fmt
import _audit_pii as pii
import _forge as forge

CHUNK_ROWS = 512
NUM_PERM = 128
SHINGLE = 5
LANG_CHARS = 200  # language is decided on the first characters of a row
LSH_WEIGHTS = (0.3, 0.7)  # false positive vs false negative weight: recall first

# The rubric the judge model is given (_audit_judge.py).
JUDGE_RUBRIC = (
    "Score the assistant's answer to the user from 1 to 5. 5: correct, complete, clear and "
    "safe. 4: correct with minor gaps or style issues. 3: partly correct or unclear. 2: "
    "mostly wrong, evasive or unhelpful. 1: wrong, harmful, empty or unrelated. Answer with "
    "the number only.")


@dataclass(slots=True)
class RowInfo:
    """What the per-row checks found in one line/row (malformed: error set, rest empty)."""

    number: int
    error: str | None = None
    shape: str = ""
    issues: list = field(default_factory=list)
    record_fp: int = 0
    content_fp: int = 0
    signature: object = None  # numpy uint32[NUM_PERM], None when no text
    pii: list = field(default_factory=list)  # ["email", "secret:aws_access_key", ...]
    language: str | None = None
    language_score: float | None = None
    tokens: int | None = None
    chars: int = 0
    words: int = 0
    empty_keys: list = field(default_factory=list)
    keyset: str = ""


def fingerprint(text: str) -> int:
    """64 bits of the text's SHA-256 (a chance collision among ten million rows: ~1e-5)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def shingle_hashes(text: str) -> list[int]:
    """32-bit hashes of the character 5-grams of the lowercased text with runs of
    punctuation and spaces made one space: a polynomial rolling hash over the code points,
    vectorised with numpy. These are the items of the row's MinHash (its hashfunc is the
    identity; datasketch's affine32 scheme mixes them with murmur3's finaliser), which
    saves hashing each 5-gram as a Python bytes object. Repeats are left in: they do not
    change a minimum."""
    import numpy as np

    norm = _NON_WORD.sub(" ", text.lower()).strip()
    if not norm:
        return []
    cp = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = max(1, len(cp) - SHINGLE + 1)
    h = np.zeros(n, dtype=np.uint64)
    for k in range(min(SHINGLE, len(cp))):
        h = (h * np.uint64(1000003) + cp[k:k + n]) & np.uint64(0xFFFFFFFF)
    return h.tolist()


def _identity(x: int) -> int:
    return x


class Analyzer:
    """The per-row checks, set up once per process (the language model and tokenizer are
    loaded before the worker processes fork, so they share the pages)."""

    def __init__(self, checks: set[str], tokenizer_dir: str | None = None):
        self.checks = checks
        self.minhash = None
        if "near_duplicates" in checks:
            from datasketch import MinHash

            self._MinHash = MinHash
            self.minhash = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=_identity)
        self.ident = None
        if "language" in checks:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self.ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.tok = None
        if tokenizer_dir:
            from tokenizers import Tokenizer

            self.tok = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))

    def chunk(self, items: list) -> list[RowInfo]:
        """RowInfo of each (number, record, error) in items, in order."""
        out = [self.row(number, rec, error) for number, rec, error in items]
        if self.tok is not None:
            self._count_tokens(items, out)
        return out

    def row(self, number: int, rec: dict | None, error: str | None) -> RowInfo:
        if error is not None:
            return RowInfo(number, error=error)
        info = RowInfo(number)
        info.shape, info.issues = fmt.check(rec)
        text = fmt.content_text(rec)
        info.chars = len(text)
        info.words = len(text.split())
        info.record_fp = fingerprint(json.dumps(rec, sort_keys=True, default=str))
        info.content_fp = fingerprint(text)
        info.empty_keys = [k for k, v in rec.items()
                           if v is None or (isinstance(v, str) and not v.strip())]
        info.keyset = ",".join(sorted(rec.keys()))
        if self.minhash is not None and text.strip():
            sh = shingle_hashes(text)
            if sh:
                m = self._MinHash(num_perm=NUM_PERM, seed=1, hashfunc=_identity,
                                  permutations=self.minhash.permutations, scheme="affine32")
                m.update_batch(sh)
                info.signature = m.hashvalues.astype("uint32")
        if "pii" in self.checks:
            # one scan of all the row's strings: no pattern matches across a newline
            for kind, detail, _a, _b in pii.find("\n".join(fmt.texts(rec))):
                info.pii.append(kind if kind == detail else f"{kind}:{detail}")
        if self.ident is not None:
            sample = text[:LANG_CHARS]
            if sum(1 for w in sample.split() if w.isalpha()) >= 2:
                lang, score = self.ident.classify(sample)
                info.language, info.language_score = lang, round(float(score), 4)
            elif text.strip():
                info.language = "und"
        return info

    def _count_tokens(self, items, out):
        """Tokens as train encodes the row: <s> + prompt + '### Assistant:' + completion +
        </s> for a row train reads, else the row's text."""
        import _hf as hf

        firsts, seconds, where = [], [], []
        for (number, rec, error), info in zip(items, out):
            if error is not None:
                continue
            try:
                prompt, completion = hf.record_pair(rec)
                firsts.append(prompt + hf.ASSISTANT_TAG if prompt else "")
                seconds.append(completion)
                where.append((info, 2))
            except ValueError:
                firsts.append(fmt.content_text(rec))
                seconds.append("")
                where.append((info, 0))
        if not where:
            return
        a = self.tok.encode_batch(firsts, add_special_tokens=False)
        b = self.tok.encode_batch(seconds, add_special_tokens=False)
        for (info, specials), ea, eb in zip(where, a, b):
            info.tokens = len(ea.ids) + len(eb.ids) + specials


# One Analyzer per worker process (set by the pool initializer, or before forking).
_ANALYZER: Analyzer | None = None


def _init(analyzer: Analyzer) -> None:
    global _ANALYZER
    _ANALYZER = analyzer


def _work(items: list) -> list[RowInfo]:
    return _ANALYZER.chunk(items)


def workers_for(dataset_bytes: int) -> int:
    """NEXA_AUDIT_WORKERS, else the CPUs this process may use (at most 8) for a dataset
    over 256 KiB, else 1 (no pool: small files do not pay for process start-up)."""
    env = os.environ.get("NEXA_AUDIT_WORKERS")
    if env:
        try:
            return max(1, min(64, int(env)))
        except ValueError:
            pass
    if dataset_bytes < 256 * 1024:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def analyze(rows, analyzer: Analyzer, workers: int):
    """Yields RowInfo for every Row of the iterable, in order, computed in `workers`
    processes (fork) with at most 2 chunks per worker in flight, so memory stays bounded."""
    def chunks():
        batch = []
        for row in rows:
            batch.append((row.number, row.record, row.error))
            if len(batch) >= CHUNK_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch

    if workers <= 1:
        for items in chunks():
            yield from analyzer.chunk(items)
        return
    import multiprocessing as mp
    from collections import deque

    ctx = mp.get_context("fork")
    _init(analyzer)  # inherited by the forked workers
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        for items in chunks():
            pending.append(pool.apply_async(_work, (items,)))
            while len(pending) >= 2 * workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


class NearDuplicates:
    """Streaming near-duplicate clustering: each signature is looked up in the LSH index
    (candidates whose bands collide), candidates at or over the threshold (estimated
    Jaccard) are joined to its cluster, then it is inserted. Clusters are union-find sets
    keyed by row index; a cluster's representative is its first row."""

    def __init__(self, threshold: float):
        from datasketch import LeanMinHash, MinHashLSH

        self._Lean = LeanMinHash
        self.threshold = threshold
        try:
            self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
        except ValueError:
            # over ~0.95 the optimal banding has one band; 4 bands of 32 rows still make a
            # pair at 0.99 a candidate with probability 0.99 (verified after)
            self.lsh = MinHashLSH(num_perm=NUM_PERM, params=(4, 32))
        self.sigs: dict[int, object] = {}
        self.parent: dict[int, int] = {}
        self.best: dict[int, float] = {}  # row -> highest similarity to a cluster member

    def add(self, idx: int, sig) -> None:
        import numpy as np

        lean = self._Lean(seed=1, hashvalues=sig, scheme="affine32")
        for j in self.lsh.query(lean):
            sim = float(np.count_nonzero(self.sigs[j] == sig)) / NUM_PERM
            if sim >= self.threshold:
                self._union(idx, j)
                self.best[idx] = max(self.best.get(idx, 0.0), sim)
                self.best[j] = max(self.best.get(j, 0.0), sim)
        self.lsh.insert(idx, lean, check_duplication=False)
        self.sigs[idx] = sig

    def _find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            self.parent[hi] = lo  # the first row stays the representative
            self.parent.setdefault(lo, lo)

    def clusters(self) -> list[list[int]]:
        """Clusters of 2 or more row indexes, each sorted, ordered by their first row."""
        groups: dict[int, list[int]] = {}
        for x in self.parent:
            groups.setdefault(self._find(x), []).append(x)
        return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def resolve_tokenizer(job: dict, name: str) -> tuple[str, dict]:
    """(directory holding tokenizer.json, what to report about it) for tokenizer_model:
    a stand-in name (built on first use), or a model train wrote (the gateway resolved
    it as an input: inputs.tokenizer_model, a model.tar). Exits 2 naming the parameter
    for any other name."""
    import _hf as hf

    path = forge.model_input(job, "tokenizer_model")
    if path is not None:
        model_dir = hf.unpack_model(path, "tokenizer_model")
    elif hf.is_stand_in(name):
        built = os.path.join(hf.cache_root(), f"{name}-{hf.STAND_IN_VERSION}", "nexa.json")
        if not os.path.isfile(built):
            hf.require_ml()  # the first use builds it with torch + transformers
        model_dir = hf.stand_in_dir(name)
    else:
        forge.fail(f"params.tokenizer_model: no tokenizer for {name!r} on this worker "
                   f"(use {', '.join(sorted(hf.STAND_INS))}, or a model train wrote)")
    if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
        forge.fail(f"params.tokenizer_model: {name!r} has no tokenizer.json")
    about = {"tokenizer_model": name}
    meta_path = os.path.join(model_dir, "nexa.json")
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        about["stand_in"] = bool(meta.get("stand_in") or hf.is_stand_in(meta.get("base_model")))
    return model_dir, about
