"""A scripted local HTTP/1.1 server standing in for the Nexa Forge gateway (the fixtures
that use it are in conftest.py; tests import the helpers from here, by this module's
own name, so they never depend on which conftest module pytest loaded last).

Tests queue answers per (method, path); the server records every request it receives
(method, path, query, headers, body, client port) so tests can assert what the SDK sent,
how often, and over which connection.
"""
import hashlib
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Reply:
    """One scripted answer. body: dict/list (JSON), str or bytes. delay: seconds to wait
    before answering. close: drop the connection after reading the request, no answer."""

    def __init__(self, status=200, body=None, headers=None, delay=0.0, close=False,
                 chunks=None, chunk_delay=0.0, content_type=None, keep_open=True,
                 silent_close=False):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.delay = delay
        self.close = close
        self.chunks = chunks  # list of bytes: sent with chunked encoding
        self.chunk_delay = chunk_delay
        self.content_type = content_type
        self.keep_open = keep_open
        self.silent_close = silent_close  # close after answering, without saying so


def error_reply(status, code, message, param=None, request_id="req_test", headers=None):
    err = {"code": code, "message": message, "request_id": request_id}
    if param is not None:
        err["param"] = param
    return Reply(status, {"error": err}, headers=headers)


KEEP_BODY = 1 << 20  # multipart bodies up to this size are also kept whole, to re-parse


def read_form(rfile, length, content_type):
    """Streams a multipart/form-data body of `length` bytes: the text fields before the
    file part, in order, and the file part's name, filename, type, size and SHA-256.
    Returns (form, body) with body the raw bytes when small, else b"". Holds at most a
    64 KiB read plus the closing delimiter in memory."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    tail = b"\r\n--" + boundary + b"--\r\n"
    left = length
    kept = []
    buf = b""
    form = {"fields": [], "file": None, "error": None, "length": length}

    def more():
        nonlocal left
        chunk = rfile.read(min(65536, left)) if left else b""
        left -= len(chunk)
        if length <= KEEP_BODY:
            kept.append(chunk)
        return chunk

    # the parts before the file part are small: read until the file part's headers end
    while True:
        start = buf.find(b'name="file"')
        end = buf.find(b"\r\n\r\n", start) if start >= 0 else -1
        if end >= 0:
            break
        chunk = more()
        if not chunk:
            form["error"] = "no file part"
            return form, b"".join(kept)
        buf += chunk
    part_start = buf.rfind(b"--" + boundary, 0, start)
    for part in buf[:part_start].split(b"--" + boundary)[1:]:
        headers, _, value = part.partition(b"\r\n\r\n")
        name = headers.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        form["fields"].append((name, value[:-2].decode()))  # value ends with CRLF
    file_headers = buf[part_start:end].decode()
    disp = [h for h in file_headers.split("\r\n") if h.lower().startswith("content-disp")]
    ctype = [h for h in file_headers.split("\r\n") if h.lower().startswith("content-type")]
    filename = disp[0].split('filename="', 1)[1].rsplit('"', 1)[0] if disp else None
    digest = hashlib.sha256()
    size = 0
    hold = buf[end + 4:]
    while True:
        if len(hold) > len(tail):
            out = hold[:-len(tail)]
            digest.update(out)
            size += len(out)
            hold = hold[-len(tail):]
        chunk = more()
        if not chunk:
            break
        hold += chunk
    if hold != tail:
        form["error"] = f"the body does not end with the closing delimiter: {hold[-80:]!r}"
    form["file"] = {"filename": filename,
                    "content_type": ctype[0].split(":", 1)[1].strip() if ctype else None,
                    "bytes": size, "sha256": digest.hexdigest()}
    return form, b"".join(kept)


class Recorded:
    def __init__(self, method, path, query, headers, body, port):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.port = port
        self.form = None

    def json(self):
        return json.loads(self.body) if self.body else None

    def header(self, name):
        return self.headers.get(name.lower())


class FakeAPI:
    def __init__(self):
        self.routes = {}
        self.requests = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                ctype = self.headers.get("Content-Type") or ""
                form = None
                if ctype.startswith("multipart/form-data"):
                    # read as a server must: streamed, never the whole body in memory
                    form, body = read_form(self.rfile, length, ctype)
                else:
                    body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, parsed.path,
                               urllib.parse.parse_qs(parsed.query, keep_blank_values=True),
                               {k.lower(): v for k, v in self.headers.items()}, body,
                               self.client_address[1])
                rec.form = form
                with api.lock:
                    api.requests.append(rec)
                    reply = api._next(self.command, parsed.path)
                if callable(reply):
                    reply = reply(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.close:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.chunks is not None:
                    self.send_header("Content-Type", reply.content_type or "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for chunk in reply.chunks:
                            if chunk is None:  # drop the connection mid-stream
                                self.close_connection = True
                                self.connection.shutdown(socket.SHUT_RDWR)
                                return
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                            self.wfile.flush()
                            if reply.chunk_delay:
                                time.sleep(reply.chunk_delay)
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                    except OSError:
                        self.close_connection = True
                    return
                data = reply.body
                ctype = reply.content_type
                if isinstance(data, (dict, list)):
                    data = json.dumps(data).encode()
                    ctype = ctype or "application/json"
                elif isinstance(data, str):
                    data = data.encode()
                    ctype = ctype or "text/plain"
                data = data or b""
                if "X-Request-Id" not in reply.headers:
                    self.send_header("X-Request-Id", "req_test")
                if data or reply.status not in (204, 304):
                    self.send_header("Content-Length", str(len(data)))
                if ctype:
                    self.send_header("Content-Type", ctype)
                if not reply.keep_open:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                if reply.silent_close:
                    self.close_connection = True
                self.end_headers()
                if data:
                    try:
                        self.wfile.write(data)
                    except OSError:  # the client gave up (timeout tests)
                        self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def on(self, method, path, *replies):
        """Queue replies for (method, path); the last one repeats. A reply may be a
        callable taking the Recorded request."""
        self.routes[(method, path)] = list(replies)
        return self

    def _next(self, method, path):
        queue = self.routes.get((method, path))
        if not queue:
            return Reply(404, {"error": {"code": "not_found", "message": "no such resource",
                                         "request_id": "req_404"}})
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def calls(self, method=None, path=None):
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (path is None or r.path == path)]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def job(job_id="job_01HZZZZZZZZZZZZZZZZZZZZZZZ", status="queued", **extra):
    doc = {"job_id": job_id, "job_type": "generate", "status": status,
           "params": {"domain": "biology", "num_samples": 100}, "progress": 0,
           "result": None, "error": None, "artifacts": [], "cost_usd": "0.000000"}
    doc.update(extra)
    return doc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
