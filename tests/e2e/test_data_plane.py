"""The data plane (issue 13, DESIGN §12) against the real object store of the test stack:
files in and out, URIs owner-checked before the 202, job outputs feeding the next job,
nothing of another tenant reachable, large transfers streamed."""
import hashlib
import io
import json
import pathlib
import random
import socket
import time
import urllib.parse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import stack


def upload(api, data, uri=None, purpose="dataset", filename="data.jsonl", key="default"):
    fields = {"purpose": purpose}
    if uri is not None:
        fields["uri"] = uri
    return api.call("POST", "/api/files", data=fields,
                    files={"file": (filename, data, "application/octet-stream")}, key=key)


def upload_ok(api, data, **kw):
    resp = upload(api, data, **kw)
    assert resp.status_code == 201, resp.text
    return resp.json()


def parquet_bytes(rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def rows(n, seed=1):
    rnd = random.Random(seed)
    topics = ["rates", "bonds", "equity", "credit", "fx", "loans"]
    return [{"instruction": f"Explain {rnd.choice(topics)} risk case {i}.",
             "response": f"In case {i}, the {rnd.choice(topics)} exposure is hedged by "
                         f"{rnd.choice(topics)} positions over {rnd.randint(1, 30)} days."}
            for i in range(n)]


def run_ok(api, job_type, body, key="default", timeout=120):
    resp = api.submit(job_type, body, key=key)
    assert resp.status_code == 202, resp.text
    done = api.wait_terminal(resp.json()["job_id"], timeout=timeout) if key == "default" else \
        wait_as(api, resp.json()["job_id"], key, timeout)
    assert done["status"] == "succeeded", done
    return done


def wait_as(api, job_id, key, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.call("GET", f"/api/jobs/{job_id}", "/api/jobs/{job_id}", key=key).json()
        if job["status"] in ("succeeded", "failed", "cancelled", "dead_lettered"):
            return job
        time.sleep(0.25)
    raise AssertionError(f"{job_id} did not finish")


def refused(resp, param, text):
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["param"] == param, err
    assert text in err["message"], err


def content(api, art_id, key="default", headers=None):
    return api.call("GET", f"/api/artifacts/{art_id}/content", "/api/artifacts/{artifact_id}/content",
                    key=key, headers=headers)


# --------------------------------------------------------------------------- files API

def test_upload_list_get_download_delete(api):
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows(25))
    f = upload_ok(api, data, uri="s3://e2e-files/one/data.jsonl", filename="data.jsonl")
    assert f["object"] == "file" and f["id"].startswith("art_"), f
    assert f["uri"] == f"artifact://{f['id']}" and f["s3_uri"] == "s3://e2e-files/one/data.jsonl"
    assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert f["filename"] == "data.jsonl" and f["purpose"] == "dataset" and f["created_at"]

    listed = api.call("GET", "/api/files", params={"purpose": "dataset", "limit": 100}).json()
    assert f["id"] in {x["id"] for x in listed["data"]}
    assert api.call("GET", f"/api/files/{f['id']}", "/api/files/{file_id}").json()["id"] == f["id"]
    # a file is an artifact too: listed, downloadable, byte-exact
    got = api.call("GET", f"/api/artifacts/{f['id']}", "/api/artifacts/{artifact_id}").json()
    assert got["bytes"] == len(data)
    body = content(api, f["id"])
    assert body.status_code == 200 and body.content == data
    assert body.headers["Accept-Ranges"] == "bytes"

    key = got["object_key"]
    assert key.startswith("tenants/") and f"/files/{f['id']}/" in key and store_has(key)
    gone = api.call("DELETE", f"/api/files/{f['id']}", "/api/files/{file_id}")
    assert gone.status_code == 200 and gone.json()["deleted"] is True, gone.text
    assert not store_has(key)
    assert api.call("GET", f"/api/files/{f['id']}", "/api/files/{file_id}").status_code == 404
    assert content(api, f["id"]).status_code == 404
    # the name is free again, and a job naming it is refused before the 202
    refused(api.submit("audit", {"dataset_uri": "s3://e2e-files/one/data.jsonl"}),
            "dataset_uri", "no such object")


def store_has(object_key):
    """Whether the platform's bucket holds the object (a signed HEAD to the store)."""
    code = stack(f'forge_s3_code HEAD "/$FORGE_S3_BUCKET/{urllib.parse.quote(object_key)}"')
    assert code in ("200", "404"), code
    return code == "200"


def test_same_name_replaces_the_file(api):
    first = upload_ok(api, b'{"a": 1}\n', uri="s3://e2e-files/replace.jsonl")
    old_key = api.call("GET", f"/api/artifacts/{first['id']}",
                       "/api/artifacts/{artifact_id}").json()["object_key"]
    assert store_has(old_key)
    second = upload_ok(api, b'{"a": 2}\n{"a": 3}\n', uri="s3://e2e-files/replace.jsonl")
    assert api.call("GET", f"/api/files/{first['id']}", "/api/files/{file_id}").status_code == 404
    assert content(api, second["id"]).content == b'{"a": 2}\n{"a": 3}\n'
    # each upload has an object of its own; the replaced one is deleted from the store
    new_key = api.call("GET", f"/api/artifacts/{second['id']}",
                       "/api/artifacts/{artifact_id}").json()["object_key"]
    assert new_key != old_key and store_has(new_key)
    deadline = time.monotonic() + 5
    while store_has(old_key) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store_has(old_key)
    done = run_ok(api, "audit", {"dataset_uri": "s3://e2e-files/replace.jsonl"})
    assert done["result"]["rows"] == 2, done["result"]


def test_range_requests(api):
    data = bytes(range(256)) * 64
    f = upload_ok(api, data, filename="blob.bin", purpose="other")
    part = content(api, f["id"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = content(api, f["id"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    bad = content(api, f["id"], headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("fields, param", [
    ({"purpose": "dataset", "uri": "file:///etc/passwd"}, "uri"),
    ({"purpose": "dataset", "uri": "s3://bucket/../x"}, "uri"),
    ({"purpose": "dataset", "uri": "https://example.com/x"}, "uri"),
    ({"purpose": "weights"}, "purpose"),
    ({}, "purpose"),
])
def test_upload_bad_fields(api, fields, param):
    resp = api.call("POST", "/api/files", data=fields,
                    files={"file": ("x.jsonl", b"{}\n", "application/octet-stream")})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["param"] == param


def test_upload_without_file_or_key(api):
    resp = api.call("POST", "/api/files", data={"purpose": "dataset"},
                    files={"other": ("x", b"1")})
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "file", resp.text
    resp = api.call("POST", "/api/files", data={"purpose": "dataset"},
                    files={"file": ("x", b"1")}, key=None)
    assert resp.status_code == 403


# --------------------------------------------------------------------------- URIs at submit

def test_file_uris_are_refused_everywhere(api):
    for job_type, body, param in (
            ("audit", {"dataset_uri": "file:///etc/passwd"}, "dataset_uri"),
            ("distill", {"teacher_model": "t", "student_model": "s",
                         "dataset_uri": "file:///etc/passwd"}, "dataset_uri"),
            ("train", {"model_id": "m", "dataset_uri": "file:///etc/passwd"}, "dataset_uri"),
            ("evaluate", {"model_id": "file:///etc/passwd", "benchmark": "mmlu"}, "model_id"),
            ("deploy", {"model_id": "/etc/passwd"}, "model_id")):
        resp = api.submit(job_type, body)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["param"] == param


def test_missing_objects_are_refused_before_queueing(api):
    refused(api.submit("audit", {"dataset_uri": "s3://nowhere/x.parquet"}),
            "dataset_uri", "no such object s3://nowhere/x.parquet")
    refused(api.submit("train", {"model_id": "tiny-bigram",
                                 "dataset_uri": "artifact://art_01ARYZ6S41041061050R3GG28A"}),
            "dataset_uri", "no such artifact")


def test_tenants_cannot_reach_each_other(api, other_user_key):
    mine = upload_ok(api, b'{"secret": "mine"}\n', uri="s3://private/secret.jsonl")
    # B names A's object by URI: B's namespace has no such object
    refused(api.submit("audit", {"dataset_uri": "s3://private/secret.jsonl"}, key=other_user_key),
            "dataset_uri", "no such object")
    # ... or by artifact id: unknown to B
    refused(api.submit("audit", {"dataset_uri": mine["uri"]}, key=other_user_key),
            "dataset_uri", "no such artifact")
    assert api.call("GET", f"/api/files/{mine['id']}", "/api/files/{file_id}",
                    key=other_user_key).status_code == 404
    assert content(api, mine["id"], key=other_user_key).status_code == 404
    assert mine["id"] not in {f["id"] for f in api.call(
        "GET", "/api/files", key=other_user_key).json()["data"]}
    assert api.call("DELETE", f"/api/files/{mine['id']}", "/api/files/{file_id}",
                    key=other_user_key).status_code == 404
    assert content(api, mine["id"]).content == b'{"secret": "mine"}\n'  # still there


# --------------------------------------------------------------------------- jobs on stored data

def test_overview_calls_on_parquet(api):
    """The product overview's dataset calls, verbatim URIs, on uploaded Parquet."""
    upload_ok(api, parquet_bytes(rows(60)), uri="s3://bucket/data.parquet",
              filename="data.parquet")
    upload_ok(api, parquet_bytes(rows(40, seed=2)), uri="s3://bucket/dataset.parquet",
              filename="dataset.parquet")
    upload_ok(api, parquet_bytes(rows(80, seed=3)), uri="s3://bucket/train.parquet",
              filename="train.parquet")
    audited = run_ok(api, "audit", {"dataset_uri": "s3://bucket/data.parquet"})
    assert audited["result"]["rows"] == 60, audited["result"]
    run_ok(api, "distill", {"teacher_model": "gpt-4", "student_model": "llama-3-8b",
                            "dataset_uri": "s3://bucket/dataset.parquet", "num_samples": 20})
    trained = run_ok(api, "train", {"model_id": "llama-3-8b",
                                    "dataset_uri": "s3://bucket/train.parquet", "epochs": 1})
    assert trained["artifacts"], trained


def test_outputs_feed_the_next_job(api):
    gen = run_ok(api, "generate", {"domain": "finance", "num_samples": 50, "seed": 11,
                                   "format": "parquet"})
    sample = next(a for a in gen["artifacts"] if a["kind"] == "dataset")
    assert sample["uri"] == f"artifact://{sample['artifact_id']}"
    assert sample["name"].endswith(".parquet")
    audited = run_ok(api, "audit", {"dataset_uri": sample["uri"]})
    assert audited["result"]["rows"] == 50, audited["result"]
    trained = run_ok(api, "train", {"model_id": "tiny-bigram", "dataset_uri": sample["uri"],
                                    "epochs": 1})
    model = next(a for a in trained["artifacts"] if a["kind"] == "model")
    evaluated = run_ok(api, "evaluate", {"model_id": model["uri"], "benchmark": "custom",
                                         "dataset_uri": sample["uri"]})
    assert evaluated["result"], evaluated
    run_ok(api, "deploy", {"model_id": model["uri"]})
    # every output downloads byte-exact with the registered hash
    for art in gen["artifacts"] + trained["artifacts"]:
        body = content(api, art["artifact_id"]).content
        assert len(body) == art["bytes"] and hashlib.sha256(body).hexdigest() == art["sha256"]


def test_broken_dataset_is_a_user_error(api):
    upload_ok(api, b"PAR1 this is not parquet at all", uri="s3://e2e-files/broken.parquet",
              filename="broken.parquet")
    resp = api.submit("audit", {"dataset_uri": "s3://e2e-files/broken.parquet", "max_attempts": 3})
    assert resp.status_code == 202, resp.text
    done = api.wait_terminal(resp.json()["job_id"])
    assert done["status"] == "failed" and done["attempt"] == 1, done
    assert done["error"]["class"] == "user_error", done


# --------------------------------------------------------------------------- large transfers

def gateway_rss_kb():
    pid = stack('forge_svc_pid gateway')
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Pattern(io.RawIOBase):
    """size bytes of a reproducible pattern, read in chunks (never all in memory)."""

    def __init__(self, size):
        self.size, self.pos = size, 0
        self.block = hashlib.sha256(b"nexa").digest() * 2048  # 64 KiB

    def readable(self):
        return True

    def readinto(self, b):
        off = self.pos % len(self.block)
        n = min(len(b), self.size - self.pos, len(self.block) - off)  # up to the block's end
        b[:n] = self.block[off:off + n]
        self.pos += n
        return n


def pattern_sha(size):
    h, p = hashlib.sha256(), Pattern(size)
    while True:
        chunk = p.read(1 << 20)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)


class MultipartStream(io.RawIOBase):
    """A multipart/form-data body read in chunks from a pattern, with a known length (so
    requests sends Content-Length, not chunked encoding)."""

    def __init__(self, boundary, fields, filename, size):
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
        self.parts = [io.BytesIO(head), Pattern(size), io.BytesIO(f"\r\n--{boundary}--\r\n".encode())]
        self.len = len(head) + size + len(self.parts[2].getvalue())

    def readable(self):
        return True

    def readinto(self, b):
        while self.parts:
            n = self.parts[0].readinto(b)
            if n:
                return n
            self.parts.pop(0)
        return 0


SIZE = 100 * 1024 * 1024


def test_100mib_upload_and_download_stream(api):
    before = gateway_rss_kb()
    body = MultipartStream("nfboundary7", {"purpose": "other"}, "big.bin", SIZE)
    resp = api.call("POST", "/api/files", data=body, headers={
        "Content-Type": "multipart/form-data; boundary=nfboundary7"})
    assert resp.status_code == 201, resp.text
    f = resp.json()
    assert f["bytes"] == SIZE and f["sha256"] == pattern_sha(SIZE)
    after_up = gateway_rss_kb()

    h, n = hashlib.sha256(), 0
    with api.http.get(f"{api.base}/api/artifacts/{f['id']}/content", stream=True, timeout=60,
                      headers={"X-Nexa-Api-Key": api.key}) as dl:
        assert dl.status_code == 200 and int(dl.headers["Content-Length"]) == SIZE
        for chunk in dl.iter_content(1 << 20):
            h.update(chunk)
            n += len(chunk)
    assert n == SIZE and h.hexdigest() == f["sha256"]
    after_down = gateway_rss_kb()
    print(f"\ngateway RSS: {before} kB before, {after_up} kB after a 100 MiB upload, "
          f"{after_down} kB after its download")
    assert after_up - before < 20 * 1024, (before, after_up)
    assert after_down - before < 20 * 1024, (before, after_down)

    # a reader that takes 1 MiB then stalls: the gateway stops reading the store
    url = urllib.parse.urlsplit(api.base)
    sock = socket.create_connection((url.hostname, url.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall((f"GET /api/artifacts/{f['id']}/content HTTP/1.1\r\nHost: x\r\n"
                  f"X-Nexa-Api-Key: {api.key}\r\n\r\n").encode())
    got = 0
    while got < 1 << 20:
        got += len(sock.recv(65536))
    time.sleep(3)
    stalled = gateway_rss_kb()
    sock.close()
    print(f"gateway RSS with a stalled reader of the 100 MiB file: {stalled} kB")
    assert stalled - before < 20 * 1024, (before, stalled)
    api.call("DELETE", f"/api/files/{f['id']}", "/api/files/{file_id}")


def test_uploads_in_flight_are_capped_per_account(api):
    """Each upload in flight holds store buffers: a fifth at once is a 429, and the slots
    come back when the stalled clients go."""
    url = urllib.parse.urlsplit(api.base)
    head = (f"POST /api/files HTTP/1.1\r\nHost: x\r\nX-Nexa-Api-Key: {api.key}\r\n"
            "Content-Type: multipart/form-data; boundary=bb\r\nContent-Length: 100000\r\n\r\n"
            '--bb\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nother\r\n').encode()
    stalled = []
    for _ in range(4):  # NF_GATEWAY_UPLOADS_PER_ACCOUNT's default
        sock = socket.create_connection((url.hostname, url.port))
        sock.sendall(head)
        stalled.append(sock)
    time.sleep(1)
    refused = upload(api, b"x\n", purpose="other")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_uploads"
    assert refused.headers["Retry-After"]
    for sock in stalled:
        sock.close()
    deadline = time.monotonic() + 10
    while True:
        resp = upload(api, b"x\n", purpose="other")
        if resp.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resp.status_code == 201, resp.text
