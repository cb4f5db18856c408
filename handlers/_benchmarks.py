"""The benchmarks evaluate scores by name, their data formats, and where a job's data is.

Each benchmark's data is JSONL in the benchmark's published format (benchmarks/README.md):
one JSON object a line, checked row by row by check_row. The platform keeps them in the
object store under benchmarks/<name>/ (one or more *.jsonl files: the rows of all of
them, in file-name order): `./forge up` seeds the small samples of handlers/benchmarks/
where the store has none, `./forge benchmarks import DIR` loads a site's full sets
(validated here first, by `python3 handlers/_benchmarks.py check DIR`). The worker
fetches benchmarks/<name>/ of an evaluate job into its store cache and names that
directory in the job JSON (benchmark_data {name, uri, dir}); data_for() picks it, or the
bundled sample when the store has none, and says which.

No third-party imports: the stack's scripts run this with any python3.
"""
from __future__ import annotations

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED_DIR = os.path.join(HERE, "benchmarks")
NAMES = ("mmlu", "hellaswag", "arc_easy", "gsm8k")
MAX_ERRORS = 10  # errors reported per file before giving up on it


def _str(rec: dict, key: str) -> str | None:
    v = rec.get(key)
    return None if isinstance(v, str) and v.strip() else f"{key} must be a non-empty string"


def _str_list(v, n_min: int, n_max: int, what: str) -> str | None:
    if (not isinstance(v, list) or not n_min <= len(v) <= n_max
            or not all(isinstance(x, str) for x in v)):
        return (f"{what} must be a list of {n_min} strings" if n_min == n_max else
                f"{what} must be a list of {n_min} to {n_max} strings")
    return None


def _mmlu(rec):
    for key in ("question", "subject"):
        if (err := _str(rec, key)) is not None:
            return err
    if (err := _str_list(rec.get("choices"), 4, 4, "choices")) is not None:
        return err
    a = rec.get("answer")
    if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < 4:
        return "answer must be the index (0-3) of the right choice"
    return None


def _hellaswag(rec):
    for key in ("activity_label", "ctx_a"):
        if (err := _str(rec, key)) is not None:
            return err
    if not isinstance(rec.get("ctx_b"), str):
        return "ctx_b must be a string"
    if (err := _str_list(rec.get("endings"), 2, 10, "endings")) is not None:
        return err
    label = rec.get("label")
    if isinstance(label, bool) or not (isinstance(label, (int, str))
                                       and str(label).isdigit()
                                       and int(label) < len(rec["endings"])):
        return "label must be the index of the right ending (a string such as \"0\")"
    return None


def _arc(rec):
    if (err := _str(rec, "question")) is not None:
        return err
    ch = rec.get("choices")
    if not isinstance(ch, dict):
        return "choices must be an object {text: [...], label: [...]}"
    if (err := _str_list(ch.get("text"), 2, 10, "choices.text")) is not None:
        return err
    if (err := _str_list(ch.get("label"), 2, 10, "choices.label")) is not None:
        return err
    if len(ch["text"]) != len(ch["label"]):
        return "choices.text and choices.label must have the same length"
    if rec.get("answerKey") not in ch["label"]:
        return "answerKey must be one of choices.label"
    return None


def _gsm8k(rec):
    if (err := _str(rec, "question")) is not None:
        return err
    a = rec.get("answer")
    if not isinstance(a, str) or "####" not in a:
        return "answer must be a string ending in \"#### <number>\""
    return None


CHECKS = {"mmlu": _mmlu, "hellaswag": _hellaswag, "arc_easy": _arc, "gsm8k": _gsm8k}
FORMATS = {
    "mmlu": "question, subject, choices (4 strings), answer (index 0-3)",
    "hellaswag": "activity_label, ctx_a, ctx_b, endings (strings), label (index as a string)",
    "arc_easy": "question, choices {text, label}, answerKey (one of the labels)",
    "gsm8k": "question, answer (reasoning, then \"#### <number>\")",
}


def check_row(name: str, rec: object) -> str | None:
    """Why rec is not a row of benchmark name, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    return CHECKS[name](rec)


def check_file(name: str, path: str) -> tuple[int, list[str]]:
    """(rows, errors) of one JSONL file of benchmark name; errors say file:line: why."""
    rows, errors = 0, []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as exc:
                    why = f"not JSON ({exc.msg})"
                else:
                    why = check_row(name, rec)
                if why is None:
                    rows += 1
                    continue
                errors.append(f"{path}:{i}: {why} (a {name} row has {FORMATS[name]})")
                if len(errors) >= MAX_ERRORS:
                    errors.append(f"{path}: stopped after {MAX_ERRORS} errors")
                    break
    except UnicodeDecodeError:
        errors.append(f"{path}: not UTF-8 text")
    except OSError as exc:
        errors.append(f"{path}: {exc.strerror}")
    if rows == 0 and not errors:
        errors.append(f"{path}: no rows")
    return rows, errors


def files_of(dir_: str) -> list[str]:
    """The *.jsonl files of a benchmark directory, in name order."""
    return sorted(p for p in glob.glob(os.path.join(dir_, "*.jsonl")) if os.path.isfile(p))


def plan(src: str) -> tuple[dict[str, list[str]], list[str]]:
    """What `./forge benchmarks import DIR` loads: {name: [files]} from DIR/<name>.jsonl
    and DIR/<name>/*.jsonl, and the errors that stop it (an unknown name, a bad row)."""
    found: dict[str, list[str]] = {}
    errors = []
    if not os.path.isdir(src):
        return {}, [f"{src}: not a directory"]
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.startswith("."):
            continue
        if os.path.isdir(path):
            name, files = entry, files_of(path)
            if not files:
                if name in CHECKS:
                    errors.append(f"{path}: no *.jsonl files")
                continue  # not benchmark data (e.g. tasks/)
        elif entry.endswith(".jsonl"):
            name, files = entry[:-len(".jsonl")], [path]
        else:
            continue  # not benchmark data (e.g. README.md)
        if name not in CHECKS:
            errors.append(f"{path}: unknown benchmark {name!r} (one of {', '.join(NAMES)})")
            continue
        if name in found:
            errors.append(f"{path}: {name} given both as {name}.jsonl and as {name}/")
            continue
        for f in files:
            base = os.path.basename(f)
            if not all(c.isalnum() or c in "._-" for c in base):
                errors.append(f"{f}: a file name of letters, digits, '.', '_' and '-' only")
        found[name] = files
    if not found and not errors:
        errors.append(f"{src}: no benchmark data (<name>.jsonl or <name>/*.jsonl for "
                      f"{', '.join(NAMES)})")
    return found, errors


def data_for(job: dict, name: str) -> tuple[list[str], dict]:
    """The data files of benchmark name for this job and where they came from:
    ([files], {"source": "store", "uri": ...}) when the worker fetched the store's
    benchmarks/<name>/, else the bundled sample ({"source": "bundled", ...}, with why).
    NEXA_BENCHMARK_DIR (a directory of <name>.jsonl on the worker) still wins when set."""
    local = os.environ.get("NEXA_BENCHMARK_DIR")
    if local:
        path = os.path.join(local, f"{name}.jsonl")
        return ([path] if os.path.isfile(path) else []), {"source": "worker_dir", "dir": local}
    bd = job.get("benchmark_data")
    if isinstance(bd, dict) and bd.get("name") == name and isinstance(bd.get("dir"), str):
        files = files_of(bd["dir"]) if os.path.isdir(bd["dir"]) else []
        if files:
            return files, {"source": "store", "uri": bd.get("uri")}
        why = f"the store has no data under {bd.get('uri')}"
    else:
        why = "this worker did not fetch the store's data (an older worker)"
    path = os.path.join(BUNDLED_DIR, f"{name}.jsonl")
    return ([path] if os.path.isfile(path) else []), {
        "source": "bundled", "note": f"{why}: the sample bundled with the handlers is used"}


def _main(argv: list[str]) -> int:
    """check DIR: validates DIR for import; prints one "name<TAB>file<TAB>rows" line per
    file on stdout, the errors on stderr (exit 1). sample NAME: the bundled file's path."""
    if len(argv) == 2 and argv[0] == "check":
        found, errors = plan(argv[1])
        lines = []
        for name, files in found.items():
            for path in files:
                rows, errs = check_file(name, path)
                errors += errs
                lines.append(f"{name}\t{os.path.abspath(path)}\t{rows}")
        if errors:
            for e in errors:
                print(e, file=sys.stderr)
            return 1
        print("\n".join(lines))
        return 0
    print("usage: _benchmarks.py check DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
