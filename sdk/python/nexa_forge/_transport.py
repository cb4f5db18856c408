"""HTTP transport: http.client connections reused per host, retries with exponential
backoff and jitter that honour ``Retry-After``, error mapping, one overall deadline.

Retry policy (``max_retries`` retries after the first attempt):

* failures to connect (refused, unknown host, connect timeout): always retried, nothing
  was sent;
* a connection that broke or timed out after the request was sent: retried when the
  request is idempotent (GET, PUT, DELETE, a POST carrying an ``Idempotency-Key``);
* 429 and 503: retried for every request (the server refused it without acting);
* 500, 502, 504: retried for idempotent requests only.

The wait before retry ``n`` (0-based) is ``Retry-After`` when the server sent one, else
``min(backoff_max, backoff_base * 2**n)`` scaled by a random factor in [0.5, 1.0].

``timeout`` bounds a whole call, retries and waits included: each attempt gets the time
that is left, and a wait that would end past the deadline is not started - the last error
is raised instead. A dead server therefore gives ``ConnectionError`` within the timeout,
never a hang. For streamed answers (server-sent events, downloads) the deadline covers
everything up to the answer's headers; after that ``timeout`` is the longest silence
allowed between two reads. Streamed uploads (``body`` a function, ``timeout=None`` and
``io_timeout``) have no overall deadline: ``io_timeout`` is the longest a single socket
operation may stall.

Thread safety: the pool hands each request its own connection (idle ones are kept per
origin under a lock), so one client may be shared by threads.
"""
from __future__ import annotations

import http.client
import json
import platform
import random
import select
import socket
import ssl
import threading
import time
import urllib.parse
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple,
                    Union, cast)

from . import errors
from ._version import __version__

Origin = Tuple[str, str, int]
# A request body: bytes, or a function returning a fresh iterable of byte chunks for each
# attempt (a streamed upload is re-read from its start when the request is retried).
Body = Union[bytes, Callable[[], Iterable[bytes]], None]

RETRY_STATUSES_ALWAYS = frozenset({429, 503})
RETRY_STATUSES_IDEMPOTENT = frozenset({500, 502, 504})
MAX_IDLE_PER_ORIGIN = 8
MAX_REDIRECTS = 5


class Response:
    """A complete answer: ``status``, ``headers`` (case-insensitive lookups through
    :meth:`header`), ``body`` bytes."""

    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.header_list = headers
        self.headers = {k: v for k, v in headers}
        self.body = body

    def header(self, name: str) -> Optional[str]:
        lname = name.lower()
        for key, value in self.header_list:
            if key.lower() == lname:
                return value
        return None

    def json(self) -> Any:
        """The body as JSON (None when empty); a body that is not JSON raises
        NexaForgeError with code ``invalid_response``."""
        if not self.body:
            return None
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as exc:
            snippet = self.body[:200].decode("utf-8", "replace")
            raise errors.NexaForgeError(
                f"the server answered {self.status} with a body that is not JSON: {snippet!r}",
                status=self.status, code="invalid_response",
                request_id=self.header("X-Request-Id"), headers=self.headers,
                body=snippet) from exc


class StreamResponse:
    """An answer whose body is read incrementally. Close it (or use ``with``); the
    connection is not reused."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 read_timeout: Optional[float]) -> None:
        self._resp = resp
        self._conn = conn
        self.status = resp.status
        self.header_list = resp.getheaders()
        self.headers = {k: v for k, v in self.header_list}
        if conn.sock is not None:
            conn.sock.settimeout(read_timeout)

    def header(self, name: str) -> Optional[str]:
        return self._resp.getheader(name)

    def read(self, size: int = 65536) -> bytes:
        return _wrap_io(lambda: self._resp.read(size))

    def readline(self) -> bytes:
        return _wrap_io(lambda: self._resp.readline())

    def iter_lines(self) -> Iterator[str]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line.decode("utf-8", "replace")

    def close(self) -> None:
        try:
            self._resp.close()
        finally:
            self._conn.close()

    def __enter__(self) -> "StreamResponse":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _wrap_io(fn: Callable[[], bytes]) -> bytes:
    """Maps socket errors while reading a stream to the SDK's exceptions."""
    try:
        return fn()
    except socket.timeout as exc:
        raise errors.APITimeoutError(f"no data from the server for too long: {exc}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise errors.ConnectionError(f"the connection broke while reading: {_describe(exc)}") \
            from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _NotSent(Exception):
    """Internal: connecting failed before anything was written."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Transport:
    """Sends requests to one API base URL. See the module docstring for the policies."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: Optional[float] = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        user_agent: Optional[str] = None,
        default_headers: Optional[Mapping[str, str]] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 seconds (or None for no limit)")
        self.base_url = base_url.rstrip("/")
        self._origin = _origin_of(parsed)
        self._prefix = parsed.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.user_agent = user_agent or (
            f"nexa-forge-python/{__version__} (Python {platform.python_version()})")
        self.default_headers = dict(default_headers or {})
        self._ssl_context = ssl_context
        self._sleep = sleep
        self._rand = rand
        self._lock = threading.Lock()
        self._idle: Dict[Origin, List[http.client.HTTPConnection]] = {}
        self._closed = False

    # ------------------------------------------------------------------ connections

    def _new_conn(self, origin: Origin, timeout: Optional[float]) -> http.client.HTTPConnection:
        scheme, host, port = origin
        if scheme == "https":
            ctx = self._ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _acquire(self, origin: Origin, timeout: Optional[float]
                 ) -> Tuple[http.client.HTTPConnection, bool]:
        """A connection to origin and whether it was reused. Idle connections the server
        closed meanwhile (readable socket = EOF or stray bytes) are dropped."""
        while True:
            with self._lock:
                pool = self._idle.get(origin)
                conn = pool.pop() if pool else None
            if conn is None:
                break
            if conn.sock is None or _dropped(conn.sock):
                conn.close()
                continue
            conn.timeout = timeout
            conn.sock.settimeout(timeout)
            return conn, True
        conn = self._new_conn(origin, timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _NotSent(exc) from exc
        return conn, False

    def _release(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                pool = self._idle.setdefault(origin, [])
                if len(pool) < MAX_IDLE_PER_ORIGIN:
                    pool.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        """Closes every idle connection; the transport stays usable."""
        with self._lock:
            pools = list(self._idle.values())
            self._idle = {}
        for pool in pools:
            for conn in pool:
                conn.close()

    # ------------------------------------------------------------------ requests

    def url_for(self, path: str, params: Optional[Mapping[str, Any]] = None) -> str:
        """The request target (path and query) for an API path such as ``/api/jobs/``."""
        target = self._prefix + path
        query = encode_query(params)
        return f"{target}?{query}" if query else target

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        idempotent: Optional[bool] = None,
        authenticated: bool = True,
        timeout: Optional[float] = -1.0,
        body: Body = None,
        io_timeout: Optional[float] = None,
    ) -> Response:
        """Sends the request with the retry policy; returns the :class:`Response` for a
        1xx-3xx answer and raises the mapped :class:`~nexa_forge.NexaForgeError`
        otherwise. ``idempotent`` defaults to True for GET, PUT, DELETE and requests
        carrying an ``Idempotency-Key``; ``timeout=-1`` means the transport's own.

        ``body`` (instead of ``json_body``) is sent as is: bytes, or a function that
        returns an iterable of chunks, called afresh for each attempt, for bodies streamed
        from disk; such a caller sets ``Content-Type`` and ``Content-Length`` in
        ``headers``. ``io_timeout`` bounds each socket operation separately from the
        call's deadline (``timeout``), for transfers that may take long in total."""
        return cast(Response, self._request(method, path, params, json_body, headers,
                                            idempotent, authenticated, timeout, False,
                                            body, io_timeout))

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = -1.0,
        json_body: Any = None,
    ) -> StreamResponse:
        """Like :meth:`request`, but the body is left to read from the returned
        :class:`StreamResponse` (close it when done). ``json_body``: a request body (a
        streamed chat completion)."""
        return cast(StreamResponse, self._request(method, path, params, json_body, headers,
                                                  None, True, timeout, True, None, None))

    def _request(self, method: str, path: str, params: Optional[Mapping[str, Any]],
                 json_body: Any, headers: Optional[Mapping[str, str]],
                 idempotent: Optional[bool], authenticated: bool, timeout: Optional[float],
                 stream: bool, raw_body: Body, io_timeout: Optional[float]) -> Any:
        if timeout is not None and timeout < 0:
            timeout = self.timeout
        hdrs: Dict[str, str] = {
            "User-Agent": self.user_agent,
            "Accept": "application/json",
        }
        hdrs.update(self.default_headers)
        if authenticated:
            hdrs["X-Nexa-Api-Key"] = self.api_key
        body: Body = raw_body
        if json_body is not None:
            if raw_body is not None:
                raise ValueError("pass json_body or body, not both")
            body = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS") or any(
                k.lower() == "idempotency-key" for k in hdrs)
        return self._send(method.upper(), self._origin, self.url_for(path, params), body, hdrs,
                          idempotent, stream, timeout, io_timeout=io_timeout)

    def _send(self, method: str, origin: Origin, target: str, body: Body,
              hdrs: Dict[str, str], idempotent: bool, stream: bool, timeout: Optional[float],
              redirects: int = 0, io_timeout: Optional[float] = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        stale_retry_used = False
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.APITimeoutError(
                    f"{method} {target}: no answer within the {timeout:g}s timeout")
            error: errors.NexaForgeError
            delay: Optional[float] = None
            conn = None
            reused = sent = False
            sock_timeout = remaining
            if io_timeout is not None:
                sock_timeout = io_timeout if remaining is None else min(io_timeout, remaining)
            try:
                conn, reused = self._acquire(origin, sock_timeout)
                conn.request(method, target, body=body() if callable(body) else body,
                             headers=hdrs)
                sent = True
                resp = conn.getresponse()
                status = resp.status
                if status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                    location = resp.getheader("Location") or ""
                    resp.read()
                    self._finish(origin, conn, resp)
                    conn = None
                    return self._redirect(method, origin, target, location, status, body, hdrs,
                                          idempotent, stream, deadline, redirects, io_timeout)
                if stream and status < 400:
                    read_timeout = self.timeout
                    conn_for_stream, conn = conn, None
                    return StreamResponse(resp, conn_for_stream, read_timeout)
                data = resp.read()
                headers = resp.getheaders()
                self._finish(origin, conn, resp)
                conn = None
            except _NotSent as exc:
                cause = exc.cause
                if isinstance(cause, socket.timeout):
                    error = errors.APITimeoutError(
                        f"{method} {target}: connecting to {origin[1]}:{origin[2]} timed out")
                else:
                    error = errors.ConnectionError(
                        f"{method} {target}: cannot connect to {origin[1]}:{origin[2]}: "
                        f"{_describe(cause)}")
                error.__cause__ = cause
                retryable = True  # nothing was sent: safe to retry any request
            except socket.timeout as exc:
                if conn is not None:
                    conn.close()
                error = errors.APITimeoutError(f"{method} {target}: no answer in time: {exc}")
                error.__cause__ = exc
                retryable = idempotent
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                # A kept-alive connection the server closed just as we reused it: try once
                # more on a fresh connection at once - for any request when writing it
                # failed, for idempotent ones when the answer never came.
                if reused and not stale_retry_used and (idempotent or not sent) and isinstance(
                        exc, (http.client.RemoteDisconnected, ConnectionResetError,
                              BrokenPipeError)):
                    stale_retry_used = True
                    continue
                error = errors.ConnectionError(f"{method} {target}: {_describe(exc)}")
                error.__cause__ = exc
                retryable = idempotent
            except BaseException:
                # anything else (a streamed body's own error, KeyboardInterrupt) leaves the
                # connection mid-request: it can never be reused
                if conn is not None:
                    conn.close()
                raise
            else:
                if status < 400:
                    return Response(status, headers, data)
                error = errors.error_from_response(status, dict(headers), data)
                retryable = status in RETRY_STATUSES_ALWAYS or (
                    idempotent and status in RETRY_STATUSES_IDEMPOTENT)
                delay = error.retry_after
            if not retryable:
                raise error
            if attempt >= self.max_retries:
                raise _gave_up(error, attempt)
            if delay is None:
                delay = self.backoff_delay(attempt)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise _gave_up(error, attempt)
            self._sleep(delay)
            attempt += 1

    def sleep(self, seconds: float) -> None:
        """Waits between retries (replaceable in tests)."""
        self._sleep(seconds)

    def backoff_delay(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (0-based) when the server named none."""
        ceiling = min(self.backoff_max, self.backoff_base * (2.0 ** attempt))
        return ceiling * (0.5 + self._rand() / 2)

    def _finish(self, origin: Origin, conn: http.client.HTTPConnection,
                resp: http.client.HTTPResponse) -> None:
        """Returns a connection whose answer was read completely to the pool."""
        if resp.will_close or conn.sock is None:
            conn.close()
        else:
            self._release(origin, conn)

    def _redirect(self, method: str, origin: Origin, target: str, location: str, status: int,
                  body: Body, hdrs: Dict[str, str], idempotent: bool, stream: bool,
                  deadline: Optional[float], redirects: int,
                  io_timeout: Optional[float] = None) -> Any:
        if redirects >= MAX_REDIRECTS:
            raise errors.NexaForgeError(f"{method} {target}: too many redirects", status=status)
        scheme, host, port = origin
        base = f"{scheme}://{host}:{port}{target}"
        url = urllib.parse.urlsplit(urllib.parse.urljoin(base, location))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.NexaForgeError(f"{method} {target}: bad redirect to {location!r}",
                                        status=status)
        new_origin = _origin_of(url)
        new_target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        new_hdrs = dict(hdrs)
        if new_origin != origin:  # never hand the API key to another host
            new_hdrs = {k: v for k, v in hdrs.items()
                        if k.lower() not in ("x-nexa-api-key", "authorization", "cookie")}
        if status == 303 or (status in (301, 302) and method == "POST"):
            method, body = "GET", None
            new_hdrs = {k: v for k, v in new_hdrs.items()
                        if k.lower() not in ("content-type", "content-length")}
        remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
        return self._send(method, new_origin, new_target, body, new_hdrs, idempotent, stream,
                          remaining, redirects + 1, io_timeout)


def _gave_up(error: errors.NexaForgeError, attempt: int) -> errors.NexaForgeError:
    """The error to raise after attempt+1 tries; the message says how many there were."""
    if attempt > 0:
        error.message += f" (gave up after {attempt + 1} attempts)"
        error.args = (error.message,)
    return error


def _origin_of(url: urllib.parse.SplitResult) -> Origin:
    scheme = url.scheme
    port = url.port or (443 if scheme == "https" else 80)
    return (scheme, url.hostname or "", port)


def _dropped(sock: socket.socket) -> bool:
    """True when an idle socket is readable: the peer closed it (or sent stray bytes)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def encode_query(params: Optional[Mapping[str, Any]]) -> str:
    """A query string: None values left out, booleans as true/false, lists repeated,
    dicts as ``name[key]=value`` (the jobs list's metadata filter)."""
    if not params:
        return ""
    pairs: List[Tuple[str, str]] = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            for key, item in value.items():
                if item is not None:
                    pairs.append((f"{name}[{key}]", _scalar(item)))
        elif isinstance(value, (list, tuple)):
            for item in value:
                pairs.append((name, _scalar(item)))
        else:
            pairs.append((name, _scalar(value)))
    return urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
