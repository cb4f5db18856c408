"""The ``nexa-forge`` command line, for users who live in the terminal.

    nexa-forge jobs submit generate --domain biology --num-samples 100 --wait
    nexa-forge jobs list [--status running] [--all]
    nexa-forge jobs get job_01J...
    nexa-forge keys create laptop
    nexa-forge billing
    nexa-forge files upload data.parquet --uri s3://bucket/data.parquet
    nexa-forge artifacts download art_01J... ./out/
    nexa-forge jobs metrics job_01J... --follow
    nexa-forge models list
    nexa-forge deployments list | delete dep-...
    nexa-forge chat dep-...

The key and URL come from ``--api-key``/``--base-url`` or ``NEXA_API_KEY``/``NEXA_API_URL``.
Objects are printed as JSON on stdout; lists as a table (``--json`` for JSON); progress
and notes go to stderr. Exit status: 0 success, 1 an API error or a failed job, 2 usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import errors
from ._version import __version__
from ._cli_ml import _ml_parsers
from ._progress import is_terminal
from .client import JOB_TYPES, NexaForgeClient

# (flag, dest, type, required, help) per job type; DESIGN §4.
_TYPE_OPTIONS: Dict[str, List[Tuple[str, str, Any, bool, str]]] = {
    "generate": [
        ("--domain", "domain", str, True, "subject of the samples, e.g. biology"),
        ("--num-samples", "num_samples", int, True, "how many samples (1..1000000)"),
        ("--model", "model", str, False, "generator model"),
        ("--seed", "seed", int, False, "random seed (same seed, same samples)"),
        ("--format", "format", str, False, "output format (jsonl)"),
    ],
    "audit": [
        ("--dataset-uri", "dataset_uri", str, True, "s3://bucket/key or artifact://art_..."),
        ("--check", "checks", str, False, "a check to run (repeatable)"),
    ],
    "distill": [
        ("--teacher-model", "teacher_model", str, True, "teacher model"),
        ("--student-model", "student_model", str, True, "student model"),
        ("--dataset-uri", "dataset_uri", str, True, "dataset URI"),
        ("--num-samples", "num_samples", int, False, "samples to distill"),
    ],
    "train": [
        ("--model-id", "model_id", str, True, "base model"),
        ("--dataset-uri", "dataset_uri", str, True, "training data URI"),
        ("--epochs", "epochs", int, False, "epochs (1..100, default 3)"),
        ("--learning-rate", "learning_rate", float, False, "learning rate"),
        ("--lora", "lora", bool, False, "train a LoRA adapter"),
    ],
    "evaluate": [
        ("--model-id", "model_id", str, True, "model to evaluate"),
        ("--benchmark", "benchmark", str, True, "mmlu, gsm8k, hellaswag or custom"),
        ("--dataset-uri", "dataset_uri", str, False, "dataset URI (benchmark custom)"),
    ],
    "deploy": [
        ("--model-id", "model_id", str, True, "model to deploy"),
        ("--region", "region", str, False, "region (default us-east-1)"),
        ("--replicas", "replicas", int, False, "replicas (1..64, default 1)"),
    ],
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return 2
    try:
        client = NexaForgeClient(api_key=args.api_key, base_url=args.base_url,
                                 timeout=args.timeout, max_retries=args.max_retries)
        with client:
            return int(args.handler(client, args) or 0)
    except errors.JobFailedError as exc:
        _print_json(exc.job)
        _note(f"error: {exc}")
        return 1
    except errors.NexaForgeError as exc:
        _note(f"error: {exc}")
        return 1
    except ValueError as exc:
        _note(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `nexa-forge jobs list | head`
        return 0
    except OSError as exc:  # a local file: missing, unreadable, a directory to write...
        _note(f"error: {exc}")
        return 1


# ---------------------------------------------------------------------- parser

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nexa-forge",
        description="Nexa Forge from the terminal: jobs, files, artifacts, keys, billing.")
    p.add_argument("--version", action="version", version=f"nexa-forge {__version__}")
    p.add_argument("--api-key", help="API key (default: $NEXA_API_KEY)")
    p.add_argument("--base-url", help="API URL (default: $NEXA_API_URL or http://localhost:8000)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    p.add_argument("--max-retries", type=int, default=3, help="retries per call (default 3)")
    p.add_argument("--json", action="store_true", help="print lists as JSON, not tables")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    # jobs
    jobs = sub.add_parser("jobs", help="submit, list, inspect and cancel jobs")
    jobs.set_defaults(help_parser=jobs)
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION")
    submit = jsub.add_parser("submit", help="submit a job")
    submit.set_defaults(help_parser=submit)
    tsub = submit.add_subparsers(dest="job_type", metavar="TYPE", required=True)
    for job_type in JOB_TYPES:
        tp = tsub.add_parser(job_type, help=f"submit a {job_type} job")
        for flag, dest, typ, required, help_text in _TYPE_OPTIONS[job_type]:
            if typ is bool:
                tp.add_argument(flag, dest=dest, action="store_true", default=None,
                                help=help_text)
            elif dest == "checks":
                tp.add_argument(flag, dest=dest, action="append", help=help_text)
            else:
                tp.add_argument(flag, dest=dest, type=typ, required=required, help=help_text)
        _common_submit_options(tp)
        tp.set_defaults(handler=_cmd_submit)

    ls = jsub.add_parser("list", help="list jobs, newest first")
    ls.add_argument("--status", help="only jobs in this status")
    ls.add_argument("--type", dest="job_type", choices=JOB_TYPES, help="only jobs of this type")
    ls.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                    help="only jobs with this metadata pair (repeatable)")
    ls.add_argument("--limit", type=int, help="page size (max 100)")
    ls.add_argument("--cursor", help="the next_cursor of the previous page")
    ls.add_argument("--all", action="store_true", help="every page")
    _json_flag(ls)
    ls.set_defaults(handler=_cmd_jobs_list)

    get = jsub.add_parser("get", help="show one job")
    get.add_argument("job_id")
    get.set_defaults(handler=lambda c, a: _print_json(c.get_job(a.job_id)))

    cancel = jsub.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=lambda c, a: _print_json(c.cancel_job(a.job_id)))

    wait = jsub.add_parser("wait", help="wait until a job finishes")
    wait.add_argument("job_id")
    wait.add_argument("--wait-timeout", type=float, help="give up after this many seconds")
    wait.add_argument("--poll-interval", type=float, default=1.0)
    wait.set_defaults(handler=_cmd_wait)

    ev = jsub.add_parser("events", help="a job's events (--follow: live)")
    ev.add_argument("job_id")
    ev.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    ev.set_defaults(handler=_cmd_events)

    jm = jsub.add_parser("metrics", help="a job's metric points: loss per step, scores "
                         "(--follow: live)")
    jm.add_argument("job_id")
    jm.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    _json_flag(jm)
    jm.set_defaults(handler=_cmd_metrics)

    _ml_parsers(sub)

    # keys
    keys = sub.add_parser("keys", help="manage API keys")
    keys.set_defaults(help_parser=keys)
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    kc = ksub.add_parser("create", help="create a key (shown once)")
    kc.add_argument("name")
    kc.add_argument("--expires-in-days", type=int)
    kc.add_argument("--rate-limit-per-minute", type=int)
    kc.add_argument("--burst", type=int)
    kc.set_defaults(handler=_cmd_keys_create)
    kl = ksub.add_parser("list", help="list keys (never their secrets)")
    _json_flag(kl)
    kl.set_defaults(handler=_cmd_keys_list)
    kr = ksub.add_parser("revoke", help="revoke a key")
    kr.add_argument("key_id")
    kr.set_defaults(handler=_cmd_keys_revoke)

    # billing
    billing = sub.add_parser("billing", help="costs this month (or a period)")
    _period_options(billing)
    billing.set_defaults(handler=_cmd_billing_summary)
    bsub = billing.add_subparsers(dest="billing_command", metavar="ACTION")
    bs = bsub.add_parser("summary", help="totals per meter and job type (the default)")
    _period_options(bs)
    bs.set_defaults(handler=_cmd_billing_summary)
    bu = bsub.add_parser("usage", help="usage over time")
    _period_options(bu)
    bu.add_argument("--bucket", choices=["hour", "day"])
    bu.add_argument("--meter")
    bu.add_argument("--job-type", choices=JOB_TYPES)
    bu.set_defaults(handler=_cmd_billing_usage)
    bb = bsub.add_parser("budget", help="show or set the monthly budget")
    grp = bb.add_mutually_exclusive_group()
    grp.add_argument("--set", dest="set_usd", metavar="USD", help="new monthly limit in USD")
    grp.add_argument("--clear", action="store_true", help="remove the budget")
    bb.set_defaults(handler=_cmd_budget)

    # artifacts
    arts = sub.add_parser("artifacts", help="list and download artifacts")
    arts.set_defaults(help_parser=arts)
    asub = arts.add_subparsers(dest="artifacts_command", metavar="ACTION")
    al = asub.add_parser("list", help="list artifacts")
    al.add_argument("--job", dest="job_id", help="only this job's artifacts")
    _json_flag(al)
    al.set_defaults(handler=_cmd_artifacts_list)
    ag = asub.add_parser("get", help="show one artifact")
    ag.add_argument("artifact_id")
    ag.set_defaults(handler=lambda c, a: _print_json(c.get_artifact(a.artifact_id)))
    ad = asub.add_parser("download", help="download an artifact's content (resumes)")
    ad.add_argument("artifact_id", help="art_... or artifact://art_...")
    ad.add_argument("path", nargs="?", default=".", help="file or directory (default .)")
    ad.set_defaults(handler=_cmd_artifacts_download)

    # files
    files = sub.add_parser("files", help="upload, list and delete files (datasets, models)")
    files.set_defaults(help_parser=files)
    fsub = files.add_subparsers(dest="files_command", metavar="ACTION")
    fu = fsub.add_parser("upload", help="upload a file (streamed; prints the file object)")
    fu.add_argument("path", help="the local file")
    fu.add_argument("--purpose", default="dataset", choices=["dataset", "model", "other"],
                    help="what the file is for (default dataset)")
    fu.add_argument("--uri", help="place it at s3://bucket/key in your namespace (replaces "
                                  "a file there); jobs can then name it")
    fu.add_argument("--filename", help="the name to store (default: the file's own)")
    fu.set_defaults(handler=_cmd_files_upload)
    fl = fsub.add_parser("list", help="list uploaded files, newest first")
    fl.add_argument("--purpose", choices=["dataset", "model", "other"])
    fl.add_argument("--limit", type=int, help="page size (every page is read)")
    _json_flag(fl)
    fl.set_defaults(handler=_cmd_files_list)
    fg = fsub.add_parser("get", help="show one file")
    fg.add_argument("file_id")
    fg.set_defaults(handler=lambda c, a: _print_json(c.get_file(a.file_id)))
    fd = fsub.add_parser("delete", help="delete an uploaded file")
    fd.add_argument("file_id")
    fd.set_defaults(handler=_cmd_files_delete)
    fdl = fsub.add_parser("download", help="download a file's content")
    fdl.add_argument("file_id")
    fdl.add_argument("path", nargs="?", default=".", help="file or directory (default .)")
    fdl.set_defaults(handler=lambda c, a: _download(c, a.file_id, a.path))

    # workers, whoami
    wk = sub.add_parser("workers", help="the worker fleet")
    _json_flag(wk)
    wk.set_defaults(handler=_cmd_workers)
    me = sub.add_parser("whoami", help="the user and key in use")
    me.set_defaults(handler=lambda c, a: _print_json(c.me()))
    return p


def _json_flag(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's default must not undo a `--json` given before it
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print JSON, not a table")


def _common_submit_options(tp: argparse.ArgumentParser) -> None:
    g = tp.add_argument_group("common job options")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other parameter; VALUE is read as JSON when it parses")
    g.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    g.add_argument("--priority", type=int, help="0..9 (default 5)")
    g.add_argument("--max-attempts", type=int, help="1..10 (default 3)")
    g.add_argument("--timeout-seconds", type=int)
    g.add_argument("--gpu-type")
    g.add_argument("--gpu-count", type=int)
    g.add_argument("--idempotency-key", help="resubmitting with the same key is safe")
    g.add_argument("--wait", action="store_true", help="wait until the job finishes")
    g.add_argument("--wait-timeout", type=float, help="give up waiting after N seconds")
    g.add_argument("--poll-interval", type=float, default=1.0)


def _period_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period-start", help="RFC 3339 time (default: start of this month)")
    p.add_argument("--period-end", help="RFC 3339 time (default: now)")


# ---------------------------------------------------------------------- commands

def _cmd_submit(client: NexaForgeClient, args: argparse.Namespace) -> int:
    params: Dict[str, Any] = {}
    for _, dest, _, _, _ in _TYPE_OPTIONS[args.job_type]:
        value = getattr(args, dest, None)
        if value is not None:
            params[dest] = value
    for key, value in _pairs(args.param, "--param").items():
        params[key] = _json_or_text(value)
    job = client.submit(
        args.job_type, params,
        metadata=_pairs(args.metadata, "--metadata") or None,
        labels=_pairs(args.label, "--label") or None,
        priority=args.priority, max_attempts=args.max_attempts,
        timeout_seconds=args.timeout_seconds, gpu_type=args.gpu_type,
        gpu_count=args.gpu_count, idempotency_key=args.idempotency_key)
    if not args.wait:
        _print_json(job)
        return 0
    _note(f"submitted {job['job_id']} ({job.get('status')})")
    final = client.wait(job["job_id"], timeout=args.wait_timeout,
                        poll_interval=args.poll_interval, on_update=_updates())
    _print_json(final)
    return 0


def _cmd_wait(client: NexaForgeClient, args: argparse.Namespace) -> int:
    _print_json(client.wait(args.job_id, timeout=args.wait_timeout,
                            poll_interval=args.poll_interval, on_update=_updates()))
    return 0


def _updates() -> Optional[Callable[[Dict[str, Any]], None]]:
    """wait()'s progress bar on a terminal; a line per change elsewhere (logs, pipes)."""
    return None if is_terminal(sys.stderr) else _progress


def _progress(job: Dict[str, Any]) -> None:
    progress = job.get("progress")
    pct = f" {progress * 100:.0f}%" if isinstance(progress, (int, float)) else ""
    _note(f"  {job.get('job_id')}: {job.get('status')}{pct}")


def _cmd_jobs_list(client: NexaForgeClient, args: argparse.Namespace) -> int:
    metadata = _pairs(args.metadata, "--metadata") or None
    if args.all:
        rows = list(client.iter_jobs(status=args.status, job_type=args.job_type,
                                     metadata=metadata, page_size=args.limit or 100))
        page: Dict[str, Any] = {"data": rows, "has_more": False, "next_cursor": None}
    else:
        page = client.list_jobs(status=args.status, job_type=args.job_type, metadata=metadata,
                                limit=args.limit, cursor=args.cursor)
    if args.json:
        _print_json(page)
    else:
        _table(page.get("data") or [], [("JOB_ID", "job_id"), ("TYPE", "job_type"),
                                         ("STATUS", "status"), ("PROGRESS", "progress"),
                                         ("COST_USD", "cost_usd"), ("CREATED", "created_at")])
        if page.get("has_more"):
            _note(f"more: --cursor {page.get('next_cursor')}  (or --all)")
    return 0


def _cmd_events(client: NexaForgeClient, args: argparse.Namespace) -> int:
    if args.follow:
        for event in client.stream_job_events(args.job_id):
            print(json.dumps(event, separators=(",", ":")), flush=True)
        return 0
    for event in client.iter_job_events(args.job_id):
        print(json.dumps(event, separators=(",", ":")))
    return 0


def _cmd_keys_create(client: NexaForgeClient, args: argparse.Namespace) -> int:
    key = client.create_api_key(args.name, expires_in_days=args.expires_in_days,
                                rate_limit_per_minute=args.rate_limit_per_minute,
                                burst=args.burst)
    _print_json(key)
    _note("store api_key now: it is shown only this once")
    return 0


def _cmd_keys_list(client: NexaForgeClient, args: argparse.Namespace) -> int:
    page = client.list_api_keys()
    if args.json:
        _print_json(page)
    else:
        _table(page.get("data") or [], [("KEY_ID", "key_id"), ("PREFIX", "prefix"),
                                         ("NAME", "name"), ("STATUS", "status"),
                                         ("CREATED", "created_at"),
                                         ("LAST_USED", "last_used_at"),
                                         ("EXPIRES", "expires_at")])
    return 0


def _cmd_keys_revoke(client: NexaForgeClient, args: argparse.Namespace) -> int:
    client.revoke_api_key(args.key_id)
    _note(f"revoked {args.key_id}")
    return 0


def _cmd_billing_summary(client: NexaForgeClient, args: argparse.Namespace) -> int:
    _print_json(client.billing_summary(args.period_start, args.period_end))
    return 0


def _cmd_billing_usage(client: NexaForgeClient, args: argparse.Namespace) -> int:
    _print_json(client.usage(bucket=args.bucket, meter=args.meter, job_type=args.job_type,
                             period_start=args.period_start, period_end=args.period_end))
    return 0


def _cmd_budget(client: NexaForgeClient, args: argparse.Namespace) -> int:
    if args.clear:
        _print_json(client.set_budget(None))
    elif args.set_usd is not None:
        _print_json(client.set_budget(args.set_usd))
    else:
        _print_json(client.get_budget())
    return 0


def _cmd_artifacts_list(client: NexaForgeClient, args: argparse.Namespace) -> int:
    rows = list(client.iter_artifacts(job_id=args.job_id))
    if args.json:
        _print_json({"data": rows})
    else:
        _table(rows, [("ARTIFACT_ID", "artifact_id"), ("JOB_ID", "job_id"), ("NAME", "name"),
                      ("KIND", "kind"), ("BYTES", "bytes")])
    return 0


def _cmd_artifacts_download(client: NexaForgeClient, args: argparse.Namespace) -> int:
    return _download(client, args.artifact_id, args.path)


def _download(client: NexaForgeClient, artifact_id: str, path: str) -> int:
    done = client.download_artifact(artifact_id, path, on_progress=_Meter("downloaded"))
    print(str(done))
    return 0


def _cmd_files_upload(client: NexaForgeClient, args: argparse.Namespace) -> int:
    obj = client.upload_file(args.path, purpose=args.purpose, uri=args.uri,
                             filename=args.filename, on_progress=_Meter("uploaded"))
    _print_json(obj)
    return 0


def _cmd_files_list(client: NexaForgeClient, args: argparse.Namespace) -> int:
    rows = list(client.iter_files(purpose=args.purpose, page_size=args.limit or 100))
    if args.json:
        _print_json({"data": rows})
    else:
        _table(rows, [("FILE_ID", "id"), ("FILENAME", "filename"), ("PURPOSE", "purpose"),
                      ("BYTES", "bytes"), ("S3_URI", "s3_uri"), ("CREATED", "created_at")])
    return 0


def _cmd_files_delete(client: NexaForgeClient, args: argparse.Namespace) -> int:
    client.delete_file(args.file_id)
    _note(f"deleted {args.file_id}")
    return 0


class _Meter:
    """Progress of a transfer on stderr, when stderr is a terminal: a line redrawn at
    most every tenth of the file."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.shown = -1
        self.live = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.live or total <= 0:
            return
        tenth = done * 10 // total
        if tenth != self.shown:
            self.shown = tenth
            end = "\n" if done >= total else ""
            print(f"\r{self.verb} {done}/{total} bytes ({done * 100 // total}%)", end=end,
                  file=sys.stderr, flush=True)


def _cmd_metrics(client: NexaForgeClient, args: argparse.Namespace) -> int:
    """One line per point: JSON with --json (and always with --follow), else a table."""
    if args.follow:
        for point in client.job_metrics(args.job_id, stream=True):
            print(json.dumps(point, separators=(",", ":")), flush=True)
        return 0
    points = client.job_metrics(args.job_id)
    if args.json:
        return _print_json(points)
    names: List[str] = []
    for p in points:
        names += [n for n in (p.get("values") or {}) if n not in names]
    rows = [dict(p.get("values") or {}, step=p.get("step"), epoch=p.get("epoch"),
                 attempt=p.get("attempt")) for p in points]
    _table(rows, [("STEP", "step"), ("EPOCH", "epoch"), ("ATTEMPT", "attempt")]
           + [(n.upper(), n) for n in names])
    return 0


def _cmd_workers(client: NexaForgeClient, args: argparse.Namespace) -> int:
    page = client.workers()
    if args.json:
        _print_json(page)
    else:
        _table(page.get("data") or [], [("WORKER_ID", "worker_id"), ("HOSTNAME", "hostname"),
                                         ("STATUS", "status"), ("GPU", "gpu_type"),
                                         ("GPUS", "gpu_count"), ("JOBS", "current_jobs"),
                                         ("LAST_HEARTBEAT", "last_heartbeat_at")])
    return 0


# ---------------------------------------------------------------------- output helpers

def _print_json(obj: Any) -> int:
    print(json.dumps(obj, indent=2, sort_keys=False))
    return 0


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(rows: Iterable[Dict[str, Any]], columns: List[Tuple[str, str]]) -> None:
    cells = [[_cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [max([len(title)] + [len(r[i]) for r in cells]) for i, (title, _) in
              enumerate(columns)]
    fmt: Callable[[List[str]], str] = lambda vals: "  ".join(
        v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    print(fmt([title for title, _ in columns]))
    for r in cells:
        print(fmt(r))


def _pairs(items: Sequence[str], flag: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE, not {item!r}")
        out[key] = value
    return out


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
