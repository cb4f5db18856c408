"""NexaForgeClient: every public endpoint of the Nexa Forge API as a method.

Answers are plain ``dict`` objects shaped as ``proto/openapi.yaml`` documents them (a job
has ``job_id``, ``status``, ``params``, ``result``, ``artifacts``, ``cost_usd``...). Errors
are raised as :mod:`nexa_forge.errors` exceptions.
"""
from __future__ import annotations

import datetime as _dt
import decimal
import os
import pathlib
import re
import sys
import time
import urllib.parse
import uuid
from typing import (Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence,
                    Union, overload)

from . import _files, errors
from ._files import ProgressFn
from ._jobs import _SubmitMixin
from ._ml import _MLMixin
from ._progress import WaitProgress, is_terminal
from ._sse import ServerSentEvent, SSEDecoder, iter_sse_lines
from ._transport import Response, Transport


__all__ = ["NexaForgeClient", "JOB_TYPES", "TERMINAL_STATUSES", "DEFAULT_BASE_URL"]

DEFAULT_BASE_URL = "http://localhost:8000"
JOB_TYPES = ("generate", "audit", "distill", "train", "evaluate", "deploy")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "dead_lettered"})
# How often wait() polls a terminal job whose cost is not final yet.
_COST_POLL_S = 0.2

Job = Dict[str, Any]
Page = Dict[str, Any]
FileObject = Dict[str, Any]
JobRef = Union[str, Mapping[str, Any]]
TimeParam = Union[str, _dt.datetime, _dt.date, None]
Names = Union[str, Sequence[str], None]

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


class NexaForgeClient(_SubmitMixin, _MLMixin):
    """A client for the Nexa Forge API.

    ``api_key`` defaults to ``$NEXA_API_KEY`` and ``base_url`` to ``$NEXA_API_URL``, then
    ``http://localhost:8000``. ``timeout`` (seconds) bounds each call, retries included;
    ``max_retries`` is how many times a failed call is retried (connection errors, 429 and
    5xx, with exponential backoff and jitter, honouring ``Retry-After``). A missing key
    raises :class:`~nexa_forge.AuthenticationError` here, before any request.

    One client may be shared by threads; it keeps connections open per host. Use it as a
    context manager, or call :meth:`close`, to close them.

    The job types (:meth:`generate`, :meth:`audit`, :meth:`distill`, :meth:`train`,
    :meth:`evaluate`, :meth:`deploy`) take every parameter their handlers accept
    (``_jobs.py``); models, deployments, chat and a job's live metrics are in ``_ml.py``
    (``client.models``, ``client.deployments``, :meth:`chat`, :meth:`openai`,
    :meth:`job_metrics`, :meth:`checkpoints`).
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        timeout: Optional[float] = 30,
        max_retries: int = 3,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        user_agent: Optional[str] = None,
        default_headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("NEXA_API_KEY")
        key = (key or "").strip()
        if not key:
            raise errors.AuthenticationError(
                "no API key: pass NexaForgeClient(api_key=\"nexa_...\") or set NEXA_API_KEY "
                "(keys are made in the dashboard; `./forge up` prints one for a local stack)",
                code="missing_api_key")
        if any(ord(c) < 33 or ord(c) > 126 for c in key):
            raise errors.AuthenticationError(
                "the API key contains spaces, control or non-ASCII characters; "
                "was it copied whole?", code="malformed_api_key")
        url = base_url or os.environ.get("NEXA_API_URL") or DEFAULT_BASE_URL
        self._transport = Transport(
            url, key, timeout=timeout, max_retries=max_retries, backoff_base=backoff_base,
            backoff_max=backoff_max, user_agent=user_agent, default_headers=default_headers)

    # ------------------------------------------------------------------ plumbing

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    @property
    def timeout(self) -> Optional[float]:
        return self._transport.timeout

    @property
    def max_retries(self) -> int:
        return self._transport.max_retries

    def close(self) -> None:
        """Closes the idle connections (the client stays usable)."""
        self._transport.close()

    def __enter__(self) -> "NexaForgeClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NexaForgeClient(base_url={self.base_url!r})"

    def _get(self, path: str, params: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        return _object(self._transport.request("GET", path, params=params))

    def request(self, method: str, path: str, *, params: Optional[Mapping[str, Any]] = None,
                json: Any = None, headers: Optional[Mapping[str, str]] = None,
                idempotent: Optional[bool] = None) -> Any:
        """Any API call (for endpoints newer than this SDK): the parsed JSON answer, or
        None for an empty one. Same authentication, retries and errors as the methods."""
        resp = self._transport.request(method, path, params=params, json_body=json,
                                       headers=headers, idempotent=idempotent)
        return resp.json()

    # ------------------------------------------------------------------ jobs: submit

    def submit(
        self,
        job_type: str,
        params: Optional[Mapping[str, Any]] = None,
        *,
        metadata: Optional[Mapping[str, str]] = None,
        priority: Optional[int] = None,
        max_attempts: Optional[int] = None,
        timeout_seconds: Optional[int] = None,
        gpu_type: Optional[str] = None,
        gpu_count: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        **extra_params: Any,
    ) -> Job:
        """Submits a job of ``job_type`` with ``params`` (plus ``extra_params``); returns
        the accepted job (status ``queued``).

        Every submission carries an ``Idempotency-Key`` (``idempotency_key``, or a fresh
        UUID), the same on every retry, so a retried submission never creates a second
        job. Pass your own key to make resubmitting from another process safe too. Keys
        whose value is None are left out, so the server applies its defaults.
        """
        if not _SEGMENT.match(job_type or ""):
            raise ValueError(f"invalid job type {job_type!r}; one of {', '.join(JOB_TYPES)}")
        merged = {k: v for k, v in dict(params or {}, **extra_params).items() if v is not None}
        body: Dict[str, Any] = {"params": merged}
        common = {"metadata": metadata, "priority": priority, "max_attempts": max_attempts,
                  "timeout_seconds": timeout_seconds, "gpu_type": gpu_type,
                  "gpu_count": gpu_count, "labels": labels}
        body.update({k: v for k, v in common.items() if v is not None})
        key = idempotency_key or str(uuid.uuid4())
        resp = self._transport.request("POST", f"/api/jobs/{job_type}", json_body=body,
                                       headers={"Idempotency-Key": key}, idempotent=True)
        return _object(resp)

    # ------------------------------------------------------------------ jobs: read

    def get_job(self, job_id: JobRef) -> Job:
        """The job (a dict with every field of the Job schema)."""
        return self._get(f"/api/jobs/{_seg(_job_id(job_id))}")

    def list_checkpoints(self, job_id: JobRef) -> List[Dict[str, Any]]:
        """A train job's checkpoints, oldest first: ``[{artifact_id, uri, name, bytes,
        sha256, epoch, step, attempt, created_at}]``, each recorded as soon as the worker
        uploaded it. Pass a ``uri`` as ``from_checkpoint`` to a new train to continue from
        it (the new job then trains its own ``epochs`` from that state); a retried attempt
        of the job resumes from the newest by itself."""
        return self._get(f"/api/jobs/{_seg(_job_id(job_id))}/checkpoints")["data"]

    def list_jobs(self, *, status: Names = None, job_type: Names = None,
                  metadata: Optional[Mapping[str, str]] = None, limit: Optional[int] = None,
                  cursor: Optional[str] = None) -> Page:
        """One page of the caller's jobs, newest first: ``{data, has_more, next_cursor}``.
        Pass ``next_cursor`` back as ``cursor`` for the next page, or use
        :meth:`iter_jobs`. ``status`` and ``job_type`` take one name or several
        (``["queued", "running"]``); ``metadata`` keeps jobs having all these pairs. A job
        is listed once the scheduler has recorded it, normally milliseconds after its
        submission was accepted."""
        return self._get("/api/jobs/", {"status": _names(status),
                                        "job_type": _names(job_type), "metadata": metadata,
                                        "limit": limit, "cursor": cursor})

    def iter_jobs(self, *, status: Names = None, job_type: Names = None,
                  metadata: Optional[Mapping[str, str]] = None,
                  page_size: Optional[int] = 100) -> Iterator[Job]:
        """Every job matching the filters, fetching pages as the iteration needs them."""
        return self._paginate("/api/jobs/", {"status": _names(status),
                                             "job_type": _names(job_type),
                                             "metadata": metadata}, page_size)

    def cancel_job(self, job_id: JobRef) -> Job:
        """Requests cancellation; the job moves to ``cancel_requested`` then ``cancelled``.
        A finished job raises :class:`~nexa_forge.ConflictError`."""
        resp = self._transport.request("POST", f"/api/jobs/{_seg(_job_id(job_id))}/cancel",
                                       idempotent=True)
        return _object(resp)

    def wait(self, job_id: JobRef, timeout: Optional[float] = None, poll_interval: float = 1.0,
             *, raise_on_failure: bool = True,
             on_update: Optional[Callable[[Job], None]] = None,
             final_cost: bool = True, progress: Optional[bool] = None) -> Job:
        """Polls the job until it reaches a terminal state and returns it.

        With ``final_cost`` (the default) it also waits until the job's cost is final
        (``cost_final`` true: billing has priced every usage event of every attempt), so
        the returned ``cost_usd`` is what the job costs; that takes a moment after the
        terminal state, and the job is polled more often meanwhile. A server that does
        not send ``cost_final`` is taken as final.

        Raises :class:`~nexa_forge.JobFailedError` (with ``.job``) when it ends
        ``failed``, ``cancelled`` or ``dead_lettered`` (unless ``raise_on_failure`` is
        False), and :class:`~nexa_forge.WaitTimeoutError` after ``timeout`` seconds
        (None = no limit), also when the job ended but its cost is not final by then.
        ``on_update`` is called with the job whenever its status or progress changes.

        ``progress``: a progress bar on stderr (status, percent, and for a training job
        its step, latest loss and ETA from :meth:`job_metrics`); None (the default) draws
        it only when stderr is a terminal.
        """
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        jid = _job_id(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if progress or (progress is None and is_terminal(sys.stderr)):
            bar = WaitProgress(lambda path, params: self._get(path, params))
        try:
            return self._wait_loop(jid, timeout, deadline, poll_interval, raise_on_failure,
                                   on_update, final_cost, bar)
        finally:
            if bar is not None:
                bar.close()

    def _wait_loop(self, jid: str, timeout: Optional[float], deadline: Optional[float],
                   poll_interval: float, raise_on_failure: bool,
                   on_update: Optional[Callable[[Job], None]], final_cost: bool,
                   bar: Optional[WaitProgress]) -> Job:
        seen = None
        job: Optional[Job] = None
        while True:
            job = self.get_job(jid)
            state = (job.get("status"), job.get("progress"))
            if on_update is not None and state != seen:
                on_update(job)
            if bar is not None:
                bar.update(job, force=state != seen)
            seen = state
            pause = poll_interval
            if job.get("status") in TERMINAL_STATUSES:
                if not final_cost or job.get("cost_final", True) is not False:
                    if raise_on_failure and job.get("status") != "succeeded":
                        raise errors.JobFailedError(job)
                    return job
                pause = min(poll_interval, _COST_POLL_S)  # the cost follows within moments
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.WaitTimeoutError(jid, timeout or 0, job)
                pause = min(pause, left)
            time.sleep(pause)

    # ------------------------------------------------------------------ jobs: events

    @overload
    def job_events(self, job_id: JobRef, *, stream: Literal[False] = ...,
                   limit: Optional[int] = ..., cursor: Optional[str] = ...) -> Page: ...

    @overload
    def job_events(self, job_id: JobRef, *, stream: Literal[True],
                   limit: Optional[int] = ..., cursor: Optional[str] = ...
                   ) -> Iterator[Dict[str, Any]]: ...

    def job_events(self, job_id: JobRef, *, stream: bool = False, limit: Optional[int] = None,
                   cursor: Optional[str] = None) -> Any:
        """The job's events: one page ``{data, has_more, next_cursor}``, oldest first; or,
        with ``stream=True``, an iterator over live events (see
        :meth:`stream_job_events`)."""
        if stream:
            return self.stream_job_events(job_id)
        return self._get(f"/api/jobs/{_seg(_job_id(job_id))}/events",
                         {"limit": limit, "cursor": cursor})

    def iter_job_events(self, job_id: JobRef, *, page_size: Optional[int] = 100
                        ) -> Iterator[Dict[str, Any]]:
        """Every recorded event of the job, across pages."""
        return self._paginate(f"/api/jobs/{_seg(_job_id(job_id))}/events", {}, page_size)

    @overload
    def stream_job_events(self, job_id: JobRef, *, last_event_id: Optional[str] = ...,
                          raw: Literal[False] = ...) -> Iterator[Dict[str, Any]]: ...

    @overload
    def stream_job_events(self, job_id: JobRef, *, last_event_id: Optional[str] = ...,
                          raw: Literal[True]) -> Iterator[ServerSentEvent]: ...

    def stream_job_events(self, job_id: JobRef, *, last_event_id: Optional[str] = None,
                          raw: bool = False) -> Iterator[Any]:
        """Live events of the job (server-sent events) until the job has ended.

        Yields each event's JSON data as a dict (``raw=True``: every
        :class:`~nexa_forge.ServerSentEvent` itself, the closing ``end`` event included).
        The stream ends with the server's ``end`` event. A dropped connection is resumed
        with ``Last-Event-ID`` (up to ``max_retries`` times in a row without an event); a
        stream that closes, or stays silent longer than the client's timeout, without
        ``end`` is resumed too - once more only when the job has finished meanwhile, to
        collect the events after the last one seen.
        """
        jid = _job_id(job_id)
        path = f"/api/jobs/{_seg(jid)}/events"
        return self._stream(jid, path, last_event_id, raw)

    def _stream(self, jid: str, path: str, last_event_id: Optional[str], raw: bool,
                fallback: Optional[Callable[[], Iterator[Any]]] = None) -> Iterator[Any]:
        decoder = SSEDecoder()
        decoder.last_event_id = last_event_id
        failures = 0  # rounds in a row that ended without an event (silence excepted)
        last_round = False
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if decoder.last_event_id:
                headers["Last-Event-ID"] = decoder.last_event_id
            resp = self._transport.stream("GET", path, headers=headers)
            ctype = (resp.header("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "text/event-stream":
                # The server answered a plain list: hand out what it has, then stop.
                resp.close()
                yield from (fallback() if fallback is not None else self.iter_job_events(jid))
                return
            got_event = silent = False
            broke: Optional[errors.ConnectionError] = None
            try:
                with resp:
                    for event in iter_sse_lines(resp.iter_lines(), decoder):
                        got_event = True
                        failures = 0
                        if event.event == "end":  # the server's "job over" marker
                            if raw:
                                yield event
                            return
                        yield event if raw else _event_data(event)
            except errors.APITimeoutError:
                silent = True  # no heartbeat for a while: resume at once, not a failure
            except errors.ConnectionError as exc:
                broke = exc
            if last_round:
                return
            if self.get_job(jid).get("status") in TERMINAL_STATUSES:
                last_round = True  # one more round for the events after the last one seen
                continue
            if got_event or silent:
                continue
            failures += 1
            if failures > self._transport.max_retries:
                raise errors.ConnectionError(
                    f"the event stream of {jid} keeps ending before the job does"
                    + (f": {broke}" if broke else "")) from broke
            self._transport.sleep(decoder.retry / 1000.0 if decoder.retry is not None
                                  else self._transport.backoff_delay(failures - 1))

    # ------------------------------------------------------------------ artifacts

    def artifacts(self, *, job_id: Optional[JobRef] = None, limit: Optional[int] = None,
                  cursor: Optional[str] = None) -> Page:
        """One page of the caller's artifacts (optionally of one job)."""
        return self._get("/api/artifacts", {
            "job_id": _job_id(job_id) if job_id is not None else None,
            "limit": limit, "cursor": cursor})

    list_artifacts = artifacts

    def iter_artifacts(self, *, job_id: Optional[JobRef] = None,
                       page_size: Optional[int] = 100) -> Iterator[Dict[str, Any]]:
        """Every artifact (optionally of one job), across pages."""
        return self._paginate("/api/artifacts", {
            "job_id": _job_id(job_id) if job_id is not None else None}, page_size)

    def get_artifact(self, artifact_id: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
        """The artifact's record: ``artifact_id, job_id, name, kind, uri, bytes, sha256``."""
        return self._get(f"/api/artifacts/{_seg(_artifact_id(artifact_id))}")

    def read_artifact(self, artifact_id: Union[str, Mapping[str, Any]]) -> bytes:
        """The artifact's content, in memory (use :meth:`download_artifact` for big ones)."""
        resp = self._transport.request(
            "GET", f"/api/artifacts/{_seg(_artifact_id(artifact_id))}/content",
            headers={"Accept": "*/*"})
        return resp.body

    def download_artifact(self, artifact_id: Union[str, Mapping[str, Any]],
                          path: Union[str, "os.PathLike[str]"], *,
                          expected_sha256: Optional[str] = None,
                          on_progress: Optional[ProgressFn] = None) -> pathlib.Path:
        """Streams the artifact's content (a job output or an uploaded file) to ``path``
        (into it, named after the artifact, when ``path`` is a directory) and returns the
        file's path. ``artifact_id`` is an id (``art_...``), an ``artifact://`` URI, or an
        artifact or file dict.

        The file appears only complete: it is written next to its destination, checked
        (length; SHA-256 when ``expected_sha256`` is given or ``artifact_id`` is a dict
        carrying ``sha256``) and then renamed into place. A connection that breaks
        mid-download is resumed where it stopped (``Range``), up to ``max_retries`` times
        in a row without progress. ``on_progress(bytes_done, bytes_total)`` is called as
        it goes (total -1 when the server did not say)."""
        aid = _artifact_id(artifact_id)
        if expected_sha256 is None and isinstance(artifact_id, Mapping):
            expected_sha256 = artifact_id.get("sha256")
        fallback = None
        if isinstance(artifact_id, Mapping):
            fallback = artifact_id.get("name") or artifact_id.get("filename")
        return _files.download(self._transport, aid, path, expected_sha256, fallback,
                               on_progress)

    # ------------------------------------------------------------------ files

    def upload_file(self, path: Union[str, "os.PathLike[str]"], purpose: str = "dataset",
                    uri: Optional[str] = None, *, filename: Optional[str] = None,
                    content_type: Optional[str] = None,
                    on_progress: Optional[ProgressFn] = None) -> FileObject:
        """Uploads a file (``POST /api/files``, multipart/form-data) and returns the file
        object: ``id, object, uri (artifact://...), s3_uri, filename, purpose, bytes,
        sha256, created_at``.

        ``purpose`` is ``dataset``, ``model`` or ``other``. ``uri`` (``s3://bucket/key``)
        places the file at that name in your namespace, replacing a file already there;
        jobs may then name it (``audit(dataset_uri="s3://bucket/data.parquet")``), as they
        may name the file's ``uri``. Without ``uri`` it is stored under
        ``s3://uploads/<id>/<filename>``.

        The file is streamed from disk, never read whole into memory, and its SHA-256 is
        computed on the way; the server's ``sha256`` and ``bytes`` are checked against it
        (``checksum_mismatch``). ``timeout`` bounds each network stall here, not the whole
        upload. Retries: with ``uri`` like any idempotent call (the same object is written
        again); without, only when the server provably did not act. A file larger than
        the server's cap raises :class:`~nexa_forge.ValidationError` (413).
        ``on_progress(bytes_sent, bytes_total)`` is called as the file goes out."""
        return _files.upload(self._transport, path, purpose, uri, filename, content_type,
                             on_progress)

    def list_files(self, *, purpose: Optional[str] = None, limit: Optional[int] = None,
                   cursor: Optional[str] = None) -> Page:
        """One page of the caller's uploaded files, newest first: ``{data, has_more,
        next_cursor}`` (``purpose`` keeps one kind). :meth:`iter_files` reads every
        page."""
        return self._get("/api/files", {"purpose": purpose, "limit": limit, "cursor": cursor})

    def iter_files(self, *, purpose: Optional[str] = None,
                   page_size: Optional[int] = 100) -> Iterator[FileObject]:
        """Every uploaded file (optionally of one purpose), fetching pages as needed."""
        return self._paginate("/api/files", {"purpose": purpose}, page_size)

    def get_file(self, file_id: Union[str, Mapping[str, Any]]) -> FileObject:
        """The file object of an upload (``file-id`` = its ``art_...`` id)."""
        return self._get(f"/api/files/{_seg(_artifact_id(file_id))}")

    def delete_file(self, file_id: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
        """Deletes an uploaded file and its stored object; returns the server's answer
        (the deleted file). A job's output cannot be deleted this way
        (:class:`~nexa_forge.ConflictError`)."""
        fid = _artifact_id(file_id)
        resp = self._transport.request("DELETE", f"/api/files/{_seg(fid)}")
        data = resp.json()
        return data if isinstance(data, dict) else {"id": fid, "deleted": True}

    # ------------------------------------------------------------------ models

    def list_models(self) -> Dict[str, Any]:
        """The models this key can name as ``model_id``: the operator's base catalogue, then
        the account's own (fine-tuned by ``train``, or registered uploads), OpenAI-shaped:
        ``{"object": "list", "data": [{id, object, created, owned_by, kind, ...}]}``."""
        return self._get("/api/models")

    def get_model(self, name: str) -> Dict[str, Any]:
        """One model by name (or ``mdl_...`` id); another account's is a
        :class:`~nexa_forge.NotFoundError`."""
        return self._get(f"/api/models/{_seg(name)}")

    def register_model(self, name: str, uri: str) -> Dict[str, Any]:
        """Registers an uploaded model (``uri`` = ``artifact://`` of a ``purpose="model"``
        file of yours, see :meth:`upload_file`: an uncompressed tar of a Hugging Face model
        directory) under ``name`` in your namespace. The platform checks that it loads
        (config, tokenizer, safetensors headers) and returns its architecture and
        parameter count; a bad upload raises the 422 naming what is wrong."""
        resp = self._transport.request("POST", "/api/models", json_body={"name": name, "uri": uri})
        data = resp.json()
        return data if isinstance(data, dict) else {"id": name}

    def delete_model(self, name: str) -> Dict[str, Any]:
        """Removes one of your models from the catalogue (its artifact stays); a base
        model cannot be deleted (:class:`~nexa_forge.AuthenticationError`, 403)."""
        resp = self._transport.request("DELETE", f"/api/models/{_seg(name)}")
        data = resp.json()
        return data if isinstance(data, dict) else {"id": name, "deleted": True}

    # ------------------------------------------------------------------ deployments

    def list_deployments(self) -> Dict[str, Any]:
        """Your deployments (a succeeded ``deploy`` job's endpoint each), newest first:
        ``{"object": "list", "data": [{id, object: "deployment", model, status (ready,
        stopped or failed), region, replicas, job_id, base_url, created_at, stopped_at}]}``."""
        return self._get("/api/deployments")

    def get_deployment(self, deployment: "DeploymentRef") -> Dict[str, Any]:
        """One deployment by id (``dep-...``), deployment object or its deploy job (its
        ``result.deployment_id``); another account's is a :class:`~nexa_forge.NotFoundError`."""
        return self._get(f"/api/deployments/{_seg(_deployment_id(deployment))}")

    def delete_deployment(self, deployment: "DeploymentRef") -> Dict[str, Any]:
        """Stops a deployment's endpoint; returns the deployment (status ``stopped``, or
        as it was when it had stopped or failed already: deleting twice is harmless)."""
        dep = _deployment_id(deployment)
        resp = self._transport.request("DELETE", f"/api/deployments/{_seg(dep)}")
        data = resp.json()
        return data if isinstance(data, dict) else {"id": dep, "status": "stopped"}

    def deployment_base_url(self, deployment: "DeploymentRef") -> str:
        """The OpenAI-compatible base URL of a deployment, for the official ``openai``
        client with this client's API key::

            openai.OpenAI(base_url=client.deployment_base_url(dep), api_key=key)
        """
        dep = _deployment_id(deployment)
        return f"{self.base_url.rstrip('/')}/api/deployments/{_seg(dep)}/v1"

    # ------------------------------------------------------------------ workers, billing

    def workers(self) -> Page:
        """The worker fleet: ``{data: [{worker_id, hostname, status, gpu_type, ...}]}``."""
        return self._get("/api/workers/")

    def billing_summary(self, period_start: TimeParam = None, period_end: TimeParam = None
                        ) -> Dict[str, Any]:
        """Costs for a period (default: this month to date): totals per meter and per job
        type, and ``total_usd``."""
        return self._get("/api/billing/summary", {"period_start": _time_param(period_start),
                                                  "period_end": _time_param(period_end)})

    def usage(self, *, bucket: Optional[str] = None, meter: Optional[str] = None,
              job_type: Optional[str] = None, period_start: TimeParam = None,
              period_end: TimeParam = None) -> Dict[str, Any]:
        """Usage over time in ``hour`` or ``day`` buckets, optionally for one meter
        (gpu_ms, input_tokens, output_tokens, storage_byte_hours) or job type."""
        return self._get("/api/billing/usage", {
            "bucket": bucket, "meter": meter, "job_type": job_type,
            "period_start": _time_param(period_start), "period_end": _time_param(period_end)})

    def get_budget(self) -> Dict[str, Any]:
        """The monthly budget and this month's spending."""
        return self._get("/api/billing/budget")

    def set_budget(self, monthly_limit_usd: Union[str, int, float, decimal.Decimal, None]
                   ) -> Dict[str, Any]:
        """Sets the monthly budget in USD (None removes it); returns the budget."""
        value: Any = monthly_limit_usd
        if isinstance(value, float):  # to the micro-dollar, without binary noise
            value = format(decimal.Decimal(repr(value)).quantize(decimal.Decimal("0.000001")),
                           "f")
        elif isinstance(value, decimal.Decimal):
            value = format(value, "f")
        resp = self._transport.request("PUT", "/api/billing/budget",
                                       json_body={"monthly_limit_usd": value})
        return _object(resp)

    # ------------------------------------------------------------------ account, API keys

    def me(self) -> Dict[str, Any]:
        """Who is calling: ``user_id, email, auth_method, key_id``."""
        return self._get("/api/auth/me")

    def create_api_key(self, name: str, *, expires_in_days: Optional[int] = None,
                       rate_limit_per_minute: Optional[int] = None,
                       burst: Optional[int] = None) -> Dict[str, Any]:
        """Creates an API key. The answer's ``api_key`` is the secret, shown this once."""
        body = {"name": name, "expires_in_days": expires_in_days,
                "rate_limit_per_minute": rate_limit_per_minute, "burst": burst}
        # Not idempotent: retried only when the server provably did not act (429, 503,
        # connection never made).
        resp = self._transport.request("POST", "/api/auth/api-keys", idempotent=False,
                                       json_body={k: v for k, v in body.items()
                                                  if v is not None})
        return _object(resp)

    def list_api_keys(self) -> Page:
        """The caller's keys, never their secrets: ``{data: [{key_id, prefix, name,
        status, ...}]}``."""
        return self._get("/api/auth/api-keys")

    def revoke_api_key(self, key_id: Union[str, Mapping[str, Any]]) -> None:
        """Revokes a key (also when it already was); it stops working at once."""
        kid = key_id.get("key_id") if isinstance(key_id, Mapping) else key_id
        if not isinstance(kid, str) or not kid:
            raise ValueError("revoke_api_key needs a key id such as 'key_01J...'")
        self._transport.request("DELETE", f"/api/auth/api-keys/{_seg(kid)}")

    # ------------------------------------------------------------------ pagination

    def _paginate(self, path: str, params: Mapping[str, Any], page_size: Optional[int]
                  ) -> Iterator[Dict[str, Any]]:
        def pages() -> Iterator[Dict[str, Any]]:
            cursor: Optional[str] = None
            seen = set()
            while True:
                page = self._get(path, dict(params, limit=page_size, cursor=cursor))
                items = page.get("data") if isinstance(page, dict) else page
                for item in items or []:
                    yield item
                if not isinstance(page, dict) or not page.get("has_more"):
                    return
                cursor = page.get("next_cursor")
                if not cursor:
                    return
                if cursor in seen:
                    raise errors.NexaForgeError(
                        f"GET {path}: the server repeated cursor {cursor!r}",
                        code="pagination_loop")
                seen.add(cursor)
        return pages()


# ---------------------------------------------------------------------- helpers

def _object(resp: Response) -> Dict[str, Any]:
    """The answer's JSON object; anything else is an ``invalid_response`` error."""
    data = resp.json()
    if not isinstance(data, dict):
        raise errors.NexaForgeError(
            f"expected a JSON object from the server, got {type(data).__name__}",
            status=resp.status, code="invalid_response",
            request_id=resp.header("X-Request-Id"), body=data)
    return data


def _job_id(job: Any) -> str:
    if isinstance(job, Mapping):
        job = job.get("job_id")
    if not isinstance(job, str) or not job:
        raise ValueError("expected a job id such as 'job_01J...' or a job dict")
    return job


def _artifact_id(artifact: Any) -> str:
    """The id of an artifact or file: from an id, an ``artifact://`` URI, or a dict (an
    artifact's ``artifact_id``, a file's ``id``)."""
    if isinstance(artifact, Mapping):
        artifact = artifact.get("artifact_id") or artifact.get("id")
    if isinstance(artifact, str) and artifact.startswith("artifact://"):
        artifact = artifact[len("artifact://"):]
    if not isinstance(artifact, str) or not artifact:
        raise ValueError("expected an artifact id such as 'art_01J...', an artifact:// URI, "
                         "or an artifact or file dict")
    return artifact


def _names(value: Names) -> Optional[str]:
    """One name, or several comma-separated (the API's form for multi-value filters)."""
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


DeploymentRef = Union[str, Mapping[str, Any]]


def _deployment_id(ref: DeploymentRef) -> str:
    """A deployment id from ``dep-...``, a deployment object ({"id"}) or a deploy job
    ({"result": {"deployment_id"}})."""
    if isinstance(ref, Mapping):
        result = ref.get("result")
        if isinstance(ref.get("id"), str) and str(ref["id"]).startswith("dep-"):
            ref = ref["id"]
        elif isinstance(result, Mapping) and isinstance(result.get("deployment_id"), str):
            ref = result["deployment_id"]
    if not isinstance(ref, str) or not ref:
        raise ValueError("a deployment is its id (dep-...), a deployment object or the "
                         "deploy job that made it (once it succeeded)")
    return ref


def _seg(value: str) -> str:
    """A path segment, percent-encoded so an id can never change the path."""
    return urllib.parse.quote(value, safe="")


def _time_param(value: TimeParam) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        value = value.astimezone(_dt.timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S") + (
            f".{value.microsecond // 1000:03d}Z" if value.microsecond else "Z")
    if isinstance(value, _dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    raise TypeError(f"expected a datetime, date or RFC 3339 string, not {type(value).__name__}")


def _event_data(event: ServerSentEvent) -> Dict[str, Any]:
    try:
        data = event.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    return {"event": event.event, "data": data if data is not None else event.data,
            "id": event.id}
