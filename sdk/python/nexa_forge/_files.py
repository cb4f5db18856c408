"""Files and downloads: a multipart/form-data upload streamed from disk, and an artifact
download streamed to disk that resumes with ``Range`` after a broken connection.

Neither ever holds a whole file in memory: the upload body is a generator that reads the
file in ``CHUNK`` pieces between a small form header and trailer (its length is known in
advance, so it goes out with a ``Content-Length``, not chunked); the download is copied
``CHUNK`` by ``CHUNK`` into a temporary file next to the destination and renamed into place
only once complete and checked.
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
import pathlib
import re
import stat
import tempfile
import urllib.parse
import uuid
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from . import errors
from ._transport import StreamResponse, Transport

CHUNK = 256 * 1024

# (bytes sent, total bytes): called as the file's bytes go out (or come in)
ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------- upload

class MultipartFile:
    """The ``multipart/form-data`` body of one upload: the text ``fields`` in their order,
    then the file as the part named ``file``. ``body()`` returns a fresh chunk iterator for
    each attempt; ``sha256``/``sent`` describe the file bytes the last attempt read."""

    def __init__(self, path: pathlib.Path, fields: Mapping[str, str], filename: str,
                 content_type: Optional[str] = None,
                 on_progress: Optional[ProgressFn] = None) -> None:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file")
        self.path = path
        self.size = st.st_size
        self.boundary = f"nexaforge-{uuid.uuid4().hex}"
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head = b"".join(self._part(name, value.encode("utf-8"))
                        for name, value in fields.items())
        head += (f"--{self.boundary}\r\n"
                 f'Content-Disposition: form-data; name="file"; '
                 f'filename="{_quote(filename)}"\r\n'
                 f"Content-Type: {ctype}\r\n\r\n").encode("utf-8")
        self.head = head
        self.tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self.on_progress = on_progress
        self.sha256 = ""
        self.sent = 0

    def _part(self, name: str, value: bytes) -> bytes:
        return (f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
                ).encode("utf-8") + value + b"\r\n"

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def body(self) -> Iterator[bytes]:
        """The whole body, reading the file from its start. Exactly ``size`` file bytes
        are sent, as the Content-Length promised: a file that shrank meanwhile raises
        NexaForgeError (code ``file_changed``); bytes appended meanwhile are not sent."""
        digest = hashlib.sha256()
        sent = 0
        self.sha256, self.sent = "", 0
        yield self.head
        with open(self.path, "rb") as f:
            while sent < self.size:
                chunk = f.read(min(CHUNK, self.size - sent))
                if not chunk:
                    raise errors.NexaForgeError(
                        f"{self.path} shrank from {self.size} to {sent} bytes while it was "
                        "being uploaded", code="file_changed")
                digest.update(chunk)
                sent += len(chunk)
                if self.on_progress is not None:
                    self.on_progress(sent, self.size)
                yield chunk
        self.sha256, self.sent = digest.hexdigest(), sent
        yield self.tail


def upload(transport: Transport, path: "os.PathLike[str] | str", purpose: str,
           uri: Optional[str], filename: Optional[str], content_type: Optional[str],
           on_progress: Optional[ProgressFn]) -> Dict[str, Any]:
    """POST /api/files with the file streamed from disk; returns the file object after
    checking that the server stored the bytes that were sent (size and SHA-256)."""
    if not isinstance(purpose, str) or not purpose:
        raise ValueError("purpose must be a non-empty string: dataset, model or other")
    if uri is not None and (not isinstance(uri, str) or not uri):
        raise ValueError("uri must be an s3://bucket/key string (or None)")
    p = pathlib.Path(path)
    fields = {"purpose": purpose}
    if uri is not None:
        fields["uri"] = uri
    form = MultipartFile(p, fields, filename or p.name, content_type, on_progress)
    headers = {"Content-Type": form.content_type, "Content-Length": str(form.content_length)}
    # With a uri the upload replaces the object at that name, so sending it twice is
    # harmless: retried like a PUT. Without one each upload makes a new file: retried only
    # when the server provably did not act (no connection, 429, 503).
    resp = transport.request("POST", "/api/files", body=form.body, headers=headers,
                             idempotent=uri is not None, timeout=None,
                             io_timeout=transport.timeout)
    obj = resp.json()
    if not isinstance(obj, dict):
        raise errors.NexaForgeError(
            f"expected a file object from POST /api/files, got {type(obj).__name__}",
            status=resp.status, code="invalid_response",
            request_id=resp.header("X-Request-Id"), body=obj)
    got_sha, got_bytes = obj.get("sha256"), obj.get("bytes")
    if (isinstance(got_sha, str) and form.sha256 and got_sha.lower() != form.sha256) or (
            isinstance(got_bytes, int) and got_bytes != form.sent):
        raise errors.NexaForgeError(
            f"{p}: the server stored {got_bytes} bytes with SHA-256 {got_sha}, but "
            f"{form.sent} bytes with SHA-256 {form.sha256} were sent",
            status=resp.status, code="checksum_mismatch",
            request_id=resp.header("X-Request-Id"), body=obj)
    return obj


def _quote(value: str) -> str:
    """A form-data name or filename as browsers send it (WHATWG): UTF-8, with the
    characters that would end the quoted string or the header line percent-encoded."""
    return value.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


# ---------------------------------------------------------------------- download

def download(transport: Transport, aid: str, path: "os.PathLike[str] | str",
             expected_sha256: Optional[str], fallback_name: Optional[str],
             on_progress: Optional[ProgressFn] = None) -> pathlib.Path:
    """GET /api/artifacts/{aid}/content into ``path`` (a file, or a directory to put it
    in, named after the answer's Content-Disposition). A connection that breaks mid-body
    is resumed from the bytes already written with ``Range: bytes=N-`` (and ``If-Range``
    when the server sent an ETag or Last-Modified), up to ``max_retries`` times in a row
    without progress; a server that answers the resume with the whole body (200) or a
    different total size starts the file over. The file appears only complete and
    checked (length; SHA-256 when one is expected)."""
    url = f"/api/artifacts/{_seg(aid)}/content"
    resp = transport.stream("GET", url, headers={"Accept": "*/*"})
    target = pathlib.Path(path)
    try:
        if target.is_dir():
            name = _filename_from(resp.header("Content-Disposition")) or fallback_name or aid
            target = target / pathlib.Path(str(name)).name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                        dir=str(target.parent))
    except BaseException:
        resp.close()
        raise
    try:
        with os.fdopen(fd, "wb") as out:
            _Copy(transport, url, aid, out, on_progress).run(resp, expected_sha256)
        os.replace(tmp_name, str(target))
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return target


class _Copy:
    """The body of one artifact into ``out``, resuming as :func:`download` describes."""

    def __init__(self, transport: Transport, url: str, aid: str, out: Any,
                 on_progress: Optional[ProgressFn]) -> None:
        self.transport, self.url, self.aid, self.out = transport, url, aid, out
        self.on_progress = on_progress
        self.restarts = -1
        self.restart()

    def restart(self) -> None:
        """Empties the file to take the body from its first byte again."""
        self.restarts += 1
        if self.restarts > self.transport.max_retries:
            raise errors.ConnectionError(
                f"artifact {self.aid}: the content kept changing while it downloaded "
                f"(started over {self.restarts} times)")
        self.digest = hashlib.sha256()
        self.written = 0
        self.total: Optional[int] = None
        self.validator: Optional[str] = None
        self.out.seek(0)
        self.out.truncate()

    def resume(self) -> Optional[StreamResponse]:
        """The answer to a ranged GET for the rest, None when the range is past the end
        (416: the object shrank) and the file was started over."""
        headers = {"Accept": "*/*"}
        if self.written:
            headers["Range"] = f"bytes={self.written}-"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            return self.transport.stream("GET", self.url, headers=headers)
        except errors.NexaForgeError as exc:
            if exc.status != 416 or not self.written:
                raise
            self.restart()
            return None

    def run(self, resp: Optional[StreamResponse], expected_sha256: Optional[str]) -> None:
        failures = 0  # rounds in a row that broke without a byte
        while True:
            if resp is None:
                resp = self.resume()
                if resp is None:
                    continue
            with resp:
                if self.written:
                    first, size = _content_range(resp.header("Content-Range"))
                    if resp.status != 206:
                        self.restart()  # a whole new body: take it from the top
                    elif first != self.written or (size is not None and self.total is not None
                                                   and size != self.total):
                        self.restart()  # not the rest of what we have: ask again, whole
                        resp = None
                        continue
                if not self.written:
                    length = resp.header("Content-Length")
                    self.total = int(length) if length and length.isdigit() else None
                    self.validator = resp.header("ETag") or resp.header("Last-Modified")
                before = self.written
                try:
                    self.copy(resp)
                    broke: Optional[errors.ConnectionError] = None
                except errors.ConnectionError as exc:  # APITimeoutError included
                    broke = exc
            resp = None
            if broke is None and (self.total is None or self.written >= self.total):
                break
            failures = 0 if self.written > before else failures + 1
            if failures > self.transport.max_retries:
                of = f" of {self.total}" if self.total is not None else ""
                raise errors.ConnectionError(
                    f"artifact {self.aid}: the download keeps breaking at byte "
                    f"{self.written}{of}" + (f": {broke}" if broke else "")) from broke
            if failures:
                self.transport.sleep(self.transport.backoff_delay(failures - 1))
        if self.total is not None and self.written != self.total:
            raise errors.ConnectionError(
                f"artifact {self.aid}: got {self.written} of {self.total} bytes")
        if expected_sha256 and self.digest.hexdigest() != expected_sha256.lower():
            raise errors.NexaForgeError(
                f"artifact {self.aid}: SHA-256 {self.digest.hexdigest()} is not the expected "
                f"{expected_sha256}", code="checksum_mismatch")

    def copy(self, resp: StreamResponse) -> None:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                return
            self.out.write(chunk)
            self.digest.update(chunk)
            self.written += len(chunk)
            if self.on_progress is not None:
                self.on_progress(self.written, self.total if self.total is not None else -1)


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """(first byte, total size) of ``bytes first-last/total``; None where unknown."""
    if not value or not value.lower().startswith("bytes "):
        return None, None
    span, _, size = value[6:].partition("/")
    first = span.split("-", 1)[0].strip()
    return (int(first) if first.isdigit() else None,
            int(size) if size.strip().isdigit() else None)


def _seg(value: str) -> str:
    """A path segment, percent-encoded so an id can never change the path."""
    return urllib.parse.quote(value, safe="")


def _filename_from(disposition: Optional[str]) -> Optional[str]:
    """The file name a Content-Disposition header gives (filename* preferred)."""
    if not disposition:
        return None
    match = re.search(r"filename\*=UTF-8''([^;]+)", disposition, re.IGNORECASE)
    if match:
        return urllib.parse.unquote(match.group(1).strip())
    match = re.search(r'filename="?([^";]+)"?', disposition, re.IGNORECASE)
    return match.group(1).strip() if match else None
