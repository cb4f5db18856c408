"""The exceptions the SDK raises.

Every error the API answers is JSON: ``{"error": {"code", "message", "param"?,
"request_id"}}``. Each exception keeps those fields, the HTTP status and the headers, so a
caller can branch on ``code`` and quote ``request_id`` when asking for help::

    try:
        client.generate(domain="biology", num_samples=0)
    except nexa_forge.ValidationError as exc:
        print(exc.param, exc.message)      # num_samples  must be between 1 and 1000000

Hierarchy::

    NexaForgeError
     +-- AuthenticationError   403 (and 401): missing, malformed, unknown, expired or revoked key
     +-- NotFoundError         404 (another user's object is also 404)
     +-- ValidationError       400, 413, 422; ``param`` names the offending parameter
     +-- ConflictError         409 (idempotency key reused with another body, finished job...)
     +-- RateLimitError        429; ``retry_after`` in seconds
     +-- ServerError           5xx; ``retry_after`` when the server sent one (503)
     +-- ConnectionError       the server could not be reached or stopped answering
     |    +-- APITimeoutError  no answer within the timeout
     +-- JobFailedError        wait(): the job ended failed, cancelled or dead_lettered
     +-- WaitTimeoutError      wait(): the job did not finish within its timeout
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

__all__ = [
    "NexaForgeError",
    "AuthenticationError",
    "NotFoundError",
    "ValidationError",
    "ConflictError",
    "RateLimitError",
    "ServerError",
    "ConnectionError",
    "APITimeoutError",
    "JobFailedError",
    "WaitTimeoutError",
    "error_from_response",
    "parse_retry_after",
]


class NexaForgeError(Exception):
    """Base class of every error the SDK raises.

    Attributes: ``message``; ``status`` (HTTP status, None when no answer arrived);
    ``code`` (the API's stable error code, e.g. ``invalid_params``); ``param``;
    ``request_id`` (from the body or the ``X-Request-Id`` header); ``retry_after``
    (seconds, when the server said); ``headers``; ``body`` (the parsed JSON or raw text).
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        param: Optional[str] = None,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param
        self.request_id = request_id
        self.retry_after = retry_after
        self.headers: Dict[str, str] = dict(headers or {})
        self.body = body

    def __str__(self) -> str:
        head = ""
        if self.status is not None:
            head = f"{self.status} "
        if self.code:
            head += f"{self.code}: "
        text = head + self.message
        extras = []
        if self.param:
            extras.append(f"param={self.param}")
        if self.retry_after is not None:
            extras.append(f"retry_after={self.retry_after:g}s")
        if self.request_id:
            extras.append(f"request_id={self.request_id}")
        if extras:
            text += f" ({', '.join(extras)})"
        return text

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
                f"code={self.code!r}, param={self.param!r}, request_id={self.request_id!r})")


class AuthenticationError(NexaForgeError):
    """The API key is missing, malformed, unknown, expired or revoked (HTTP 403)."""


class NotFoundError(NexaForgeError):
    """No such object for this caller (HTTP 404)."""


class ValidationError(NexaForgeError):
    """The request was refused as invalid (HTTP 400, 413, 422); see ``param``."""


class ConflictError(NexaForgeError):
    """The request conflicts with the current state (HTTP 409)."""


class RateLimitError(NexaForgeError):
    """Too many requests (HTTP 429); retry after ``retry_after`` seconds."""


class ServerError(NexaForgeError):
    """The server failed or a backend is unavailable (HTTP 5xx)."""


class ConnectionError(NexaForgeError):  # noqa: A001 - deliberately nexa_forge.ConnectionError
    """The server could not be reached, or the connection broke, after every retry."""


class APITimeoutError(ConnectionError):
    """No answer arrived within the client's timeout."""


class JobFailedError(NexaForgeError):
    """``wait()`` saw the job end without succeeding; ``job`` is its final state."""

    def __init__(self, job: Dict[str, Any]) -> None:
        status = job.get("status")
        err = job.get("error") or {}
        detail = ""
        if isinstance(err, dict) and err.get("message"):
            detail = f": {err.get('code') or 'error'}: {err['message']}"
        super().__init__(f"job {job.get('job_id')} ended {status}{detail}",
                         code=err.get("code") if isinstance(err, dict) else None)
        self.job = job
        self.job_status = status


class WaitTimeoutError(NexaForgeError):
    """``wait()`` gave up before the job finished; ``job`` is the last state seen."""

    def __init__(self, job_id: str, timeout: float, job: Optional[Dict[str, Any]]) -> None:
        status = job.get("status") if job else None
        what = f"last status: {status}"
        if job and job.get("cost_final") is False and status in (
                "succeeded", "failed", "cancelled", "dead_lettered"):
            what += ", cost not final yet"
        super().__init__(f"job {job_id} did not finish within {timeout:g}s ({what})")
        self.job_id = job_id
        self.job = job


_STATUS_CLASSES = {
    400: ValidationError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: ValidationError,
    422: ValidationError,
    429: RateLimitError,
}


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent
    or unreadable. Never negative."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        import email.utils
        import time

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds or seconds == float("inf"):  # NaN, inf
        return None
    return max(0.0, seconds)


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> NexaForgeError:
    """The exception for an error answer: the class by status, the fields from the JSON
    error envelope (or a readable fallback when the body is not one)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    parsed: Any = None
    code = message = param = request_id = None
    text = body.decode("utf-8", "replace") if body else ""
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        err = parsed["error"]
        code = _str_or_none(err.get("code"))
        message = _str_or_none(err.get("message"))
        param = _str_or_none(err.get("param"))
        request_id = _str_or_none(err.get("request_id"))
    if request_id is None:
        request_id = lowered.get("x-request-id")
    if message is None:
        snippet = text.strip().replace("\n", " ")[:200]
        message = snippet or f"HTTP {status} with no error body"
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else NexaForgeError
    return cls(
        message,
        status=status,
        code=code,
        param=param,
        request_id=request_id,
        retry_after=parse_retry_after(lowered.get("retry-after")),
        headers=dict(headers),
        body=parsed,
    )


def _str_or_none(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)
