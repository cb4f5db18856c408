"""Files: upload_file streams a multipart/form-data body from disk (purpose and uri before
the file, never the whole file in memory) and checks the stored hash; list/get/delete;
download_artifact resumes a broken download with Range; the `files` and `artifacts
download` commands."""
import email.parser
import email.policy
import hashlib
import json
import os
import threading
import tracemalloc

import pytest

import nexa_forge
from fake_api import Reply, error_reply

FID = "art_01J0FILE0000000000000000"


def file_object(form, **extra):
    """What the gateway answers: built from what the fake server actually received."""
    fields = dict(form["fields"])
    info = form["file"]
    obj = {"id": FID, "object": "file", "uri": f"artifact://{FID}",
           "s3_uri": fields.get("uri") or f"s3://uploads/{FID}/{info['filename']}",
           "filename": info["filename"], "purpose": fields.get("purpose"),
           "bytes": info["bytes"], "sha256": info["sha256"],
           "created_at": "2025-01-01T00:00:00Z"}
    obj.update(extra)
    return obj


def stored(req):
    assert req.form and not req.form["error"], req.form
    return Reply(201, file_object(req.form))


def parse_multipart(req):
    """An independent parser (the email package) over the raw body of a small upload."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + req.header("Content-Type").encode() + b"\r\n\r\n" + req.body)
    assert msg.is_multipart()
    return [(part.get_param("name", header="content-disposition"),
             part.get_param("filename", header="content-disposition"),
             part.get_payload(decode=True)) for part in msg.iter_parts()]


# ---- upload -----------------------------------------------------------------------------

def test_upload_sends_purpose_and_uri_before_the_file(api, client, tmp_path):
    data = b"PAR1" + bytes(range(256)) * 40 + b"PAR1"
    path = tmp_path / "data.parquet"
    path.write_bytes(data)
    api.on("POST", "/api/files", stored)
    obj = client.upload_file(path, purpose="dataset", uri="s3://bucket/data.parquet")
    assert obj["s3_uri"] == "s3://bucket/data.parquet" and obj["uri"] == f"artifact://{FID}"
    assert obj["bytes"] == len(data) and obj["sha256"] == hashlib.sha256(data).hexdigest()
    [req] = api.calls("POST", "/api/files")
    assert req.header("X-Nexa-Api-Key") == "nexa_test_key"
    assert req.header("Content-Type").startswith("multipart/form-data; boundary=")
    assert int(req.header("Content-Length")) == len(req.body)
    assert "chunked" not in (req.header("Transfer-Encoding") or "")
    assert parse_multipart(req) == [("purpose", None, b"dataset"),
                                    ("uri", None, b"s3://bucket/data.parquet"),
                                    ("file", "data.parquet", data)]
    assert req.form["file"]["content_type"] in ("application/octet-stream",
                                                "application/vnd.apache.parquet")


def test_upload_without_uri_and_other_purpose(api, client, tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{"type": "interpolated-bigram"}')
    api.on("POST", "/api/files", stored)
    obj = client.upload_file(str(path), purpose="model")
    assert obj["purpose"] == "model" and obj["s3_uri"] == f"s3://uploads/{FID}/model.json"
    [req] = api.calls()
    assert [name for name, _, _ in parse_multipart(req)] == ["purpose", "file"]
    assert req.form["file"]["content_type"] == "application/json"


def test_an_empty_file_uploads(api, client, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    api.on("POST", "/api/files", stored)
    assert client.upload_file(path)["bytes"] == 0


def test_a_filename_cannot_break_the_form(api, client, tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("x")
    api.on("POST", "/api/files", stored)
    client.upload_file(path, filename='evil"\r\nname="uri.txt')
    [req] = api.calls()
    assert req.form["fields"] == [("purpose", "dataset")]
    assert req.form["file"]["filename"] == "evil%22%0D%0Aname=%22uri.txt"


def test_upload_streams_the_file_from_disk(api, client, tmp_path):
    """A 50 MiB upload: the client's Python allocations peak far below the file's size
    (tracemalloc also sees the fake server's thread, which reads in 64 KiB pieces)."""
    path = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(50):
            f.write(block[i:] + block[:i])
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    api.on("POST", "/api/files", stored)
    progress = []
    tracemalloc.start()
    try:
        obj = client.upload_file(path, uri="s3://bucket/big.bin",
                                 on_progress=lambda done, total: progress.append(done))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert obj["bytes"] == 50 << 20 and obj["sha256"] == want
    print(f"upload peak {peak / (1 << 20):.2f} MiB")
    assert peak < 8 << 20, f"peak {peak / (1 << 20):.1f} MiB for a 50 MiB upload"
    assert progress[-1] == 50 << 20 and len(progress) >= 50


def test_a_retried_upload_sends_the_whole_file_again(api, client, tmp_path, sleeps):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 5000)
    api.on("POST", "/api/files",
           error_reply(503, "unavailable", "store busy", headers={"Retry-After": "1"}),
           stored)
    obj = client.upload_file(path)
    assert obj["bytes"] == path.stat().st_size
    reqs = api.calls("POST", "/api/files")
    assert len(reqs) == 2 and sleeps == [1.0]
    assert reqs[0].form["file"] == reqs[1].form["file"]


def test_a_dropped_upload_is_retried_only_when_a_uri_makes_it_idempotent(api, client,
                                                                         tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n")
    api.on("POST", "/api/files", Reply(close=True), stored)
    with pytest.raises(nexa_forge.ConnectionError):
        client.upload_file(path)  # a second file could result: not retried
    assert len(api.calls("POST", "/api/files")) == 1
    api.on("POST", "/api/files", Reply(close=True), stored)
    assert client.upload_file(path, uri="s3://bucket/d.csv")["s3_uri"] == "s3://bucket/d.csv"
    assert len(api.calls("POST", "/api/files")) == 3


@pytest.mark.parametrize("reply,exc,param", [
    (error_reply(413, "payload_too_large", "the file is larger than 5 GiB"),
     nexa_forge.ValidationError, None),
    (error_reply(422, "invalid_params", "uri must be s3://bucket/key", "uri"),
     nexa_forge.ValidationError, "uri"),
    (error_reply(422, "invalid_params", "purpose must be dataset, model or other", "purpose"),
     nexa_forge.ValidationError, "purpose"),
    (error_reply(403, "forbidden", "invalid API key"), nexa_forge.AuthenticationError, None),
])
def test_upload_errors_map_to_the_sdks_exceptions(api, client, tmp_path, reply, exc, param):
    path = tmp_path / "d.csv"
    path.write_text("a\n1\n")
    api.on("POST", "/api/files", reply)
    with pytest.raises(exc) as info:
        client.upload_file(path, uri="s3://bucket/d.csv")
    assert info.value.param == param
    assert len(api.calls()) == 1


def test_a_different_stored_hash_is_an_error(api, client, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a\n1\n")
    api.on("POST", "/api/files",
           lambda req: Reply(201, file_object(req.form, sha256="0" * 64)))
    with pytest.raises(nexa_forge.NexaForgeError) as info:
        client.upload_file(path)
    assert info.value.code == "checksum_mismatch"


def test_local_problems_raise_before_any_request(api, client, tmp_path):
    with pytest.raises(FileNotFoundError):
        client.upload_file(tmp_path / "missing.parquet")
    with pytest.raises(ValueError):
        client.upload_file(tmp_path)  # a directory
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError):
        client.upload_file(tmp_path / "f", purpose="")
    assert api.calls() == []


# ---- list, get, delete -----------------------------------------------------------------

FILE = {"id": FID, "object": "file", "uri": f"artifact://{FID}", "s3_uri": "s3://b/k",
        "filename": "k", "purpose": "dataset", "bytes": 3, "sha256": "ab" * 32,
        "created_at": "2025-01-01T00:00:00Z"}


def test_list_get_delete(api, client):
    second = dict(FILE, id="art_2")
    api.on("GET", "/api/files",
           Reply(200, {"data": [FILE], "has_more": True, "next_cursor": "c1"}),
           Reply(200, {"data": [second], "has_more": False, "next_cursor": None}))
    assert [f["id"] for f in client.iter_files(purpose="dataset", page_size=1)] == [
        FID, "art_2"]
    first, nxt = api.calls("GET", "/api/files")
    assert first.query == {"purpose": ["dataset"], "limit": ["1"]}
    assert nxt.query == {"purpose": ["dataset"], "limit": ["1"], "cursor": ["c1"]}
    api.on("GET", "/api/files", Reply(200, {"data": [FILE], "has_more": False}))
    assert client.list_files(limit=5)["data"] == [FILE]
    api.on("GET", f"/api/files/{FID}", Reply(200, FILE))
    assert client.get_file(FID) == FILE
    assert client.get_file(f"artifact://{FID}") == FILE
    api.on("DELETE", f"/api/files/{FID}", Reply(200, dict(FILE, deleted=True)))
    assert client.delete_file(FILE)["deleted"] is True
    api.on("DELETE", "/api/files/art_2", Reply(204))
    assert client.delete_file("art_2") == {"id": "art_2", "deleted": True}


def test_deleting_a_job_output_or_a_missing_file(api, client):
    api.on("DELETE", "/api/files/art_job", error_reply(409, "conflict", "a job's output"))
    with pytest.raises(nexa_forge.ConflictError):
        client.delete_file("art_job")
    api.on("GET", "/api/files/art_9", error_reply(404, "not_found", "no such file"))
    with pytest.raises(nexa_forge.NotFoundError):
        client.get_file("art_9")


# ---- download with resume ---------------------------------------------------------------

CONTENT = bytes(range(256)) * 4096  # 1 MiB


def ranged(content, etag='"v1"', cut_first_at=None):
    """A content route that honours Range; the first full answer breaks after
    cut_first_at bytes (a dropped connection)."""
    state = {"cut": cut_first_at}

    def reply(req):
        rng = req.header("Range")
        if rng:
            assert req.header("If-Range") == etag
            start = int(rng.split("=")[1].rstrip("-"))
            body = content[start:]
            return Reply(206, chunks=[body], content_type="application/octet-stream",
                         headers={"Content-Range": f"bytes {start}-{len(content) - 1}/"
                                                   f"{len(content)}", "ETag": etag})
        headers = {"ETag": etag, "Content-Disposition": 'attachment; filename="blob.bin"'}
        if state["cut"] is not None:
            cut, state["cut"] = state["cut"], None
            return Reply(200, chunks=[content[:cut], None], headers=headers,
                         content_type="application/octet-stream")
        return Reply(200, content, headers=headers)
    return reply


def test_a_broken_download_resumes_with_range(api, client, tmp_path):
    api.on("GET", "/api/artifacts/art_1/content", ranged(CONTENT, cut_first_at=300_000))
    path = client.download_artifact({"artifact_id": "art_1",
                                     "sha256": hashlib.sha256(CONTENT).hexdigest()}, tmp_path)
    assert path == tmp_path / "blob.bin" and path.read_bytes() == CONTENT
    first, second = api.calls("GET", "/api/artifacts/art_1/content")
    assert first.header("Range") is None
    # resumed after the bytes already on disk (a read cut short is asked for again)
    start = int(second.header("Range").split("=")[1].rstrip("-"))
    assert 0 < start <= 300_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin"]


def test_a_server_ignoring_range_restarts_the_file(api, client, tmp_path):
    calls = {"n": 0}

    def reply(req):
        calls["n"] += 1
        if calls["n"] == 1:
            return Reply(200, chunks=[CONTENT[:1000], None],
                         content_type="application/octet-stream")
        return Reply(200, CONTENT)  # no Range support: the whole body again

    api.on("GET", "/api/artifacts/art_1/content", reply)
    path = client.download_artifact("artifact://art_1", tmp_path / "out.bin",
                                    expected_sha256=hashlib.sha256(CONTENT).hexdigest())
    assert path.read_bytes() == CONTENT


def test_a_download_that_keeps_breaking_gives_up_and_leaves_nothing(api, client, tmp_path,
                                                                    sleeps):
    api.on("GET", "/api/artifacts/art_1/content",
           Reply(200, chunks=[b"abc", None], content_type="application/octet-stream"),
           lambda req: Reply(206, chunks=[None], content_type="application/octet-stream",
                             headers={"Content-Range": "bytes 3-9/10"}))
    with pytest.raises(nexa_forge.ConnectionError) as info:
        client.download_artifact("art_1", tmp_path / "out.bin")
    assert "keeps breaking" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert len(sleeps) == client.max_retries


def test_download_accepts_a_file_object(api, client, tmp_path):
    api.on("GET", f"/api/artifacts/{FID}/content", Reply(200, b"abc"))
    path = client.download_artifact(dict(FILE, sha256=hashlib.sha256(b"abc").hexdigest()),
                                    tmp_path)
    assert path == tmp_path / "k" and path.read_bytes() == b"abc"


# ---- command line ------------------------------------------------------------------------

@pytest.fixture
def cli(api, monkeypatch, capsys):
    from nexa_forge.cli import main
    monkeypatch.setenv("NEXA_API_KEY", "nexa_cli_key")
    monkeypatch.setenv("NEXA_API_URL", api.url)

    def run(*argv):
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_cli_files_upload_list_delete(api, cli, tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1....PAR1")
    api.on("POST", "/api/files", stored)
    code, out, err = cli("files", "upload", str(path), "--uri", "s3://bucket/train.parquet")
    assert code == 0, err
    assert json.loads(out)["s3_uri"] == "s3://bucket/train.parquet"
    assert api.calls()[-1].form["fields"] == [("purpose", "dataset"),
                                              ("uri", "s3://bucket/train.parquet")]
    code, out, err = cli("files", "upload", str(path), "--purpose", "other")
    assert code == 0 and api.calls()[-1].form["fields"] == [("purpose", "other")]

    api.on("GET", "/api/files", Reply(200, {"data": [FILE], "has_more": False}))
    code, out, _ = cli("files", "list", "--purpose", "dataset")
    assert code == 0 and FID in out and "s3://b/k" in out and "FILENAME" in out
    code, out, _ = cli("--json", "files", "list")
    assert json.loads(out) == {"data": [FILE]}

    api.on("GET", f"/api/files/{FID}", Reply(200, FILE))
    assert json.loads(cli("files", "get", FID)[1]) == FILE
    api.on("DELETE", f"/api/files/{FID}", Reply(200, FILE))
    code, _, err = cli("files", "delete", FID)
    assert code == 0 and f"deleted {FID}" in err


def test_cli_upload_of_a_missing_file_exits_1(api, cli, tmp_path):
    code, _, err = cli("files", "upload", str(tmp_path / "nope.parquet"))
    assert code == 1 and "nope.parquet" in err
    assert api.calls() == []


def test_cli_artifacts_download_resumes(api, cli, tmp_path):
    api.on("GET", "/api/artifacts/art_1/content", ranged(CONTENT, cut_first_at=5000))
    code, out, err = cli("artifacts", "download", "art_1", str(tmp_path / "x.bin"))
    assert code == 0, err
    assert out.strip() == str(tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == CONTENT


def test_uploads_from_threads_share_one_client(api, client, tmp_path):
    api.on("POST", "/api/files", stored)
    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}.jsonl"
        p.write_bytes(b'{"i": %d}\n' % i * 1000)
        paths.append(p)
    results = [None] * 4

    def up(i):
        results[i] = client.upload_file(paths[i])

    threads = [threading.Thread(target=up, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["filename"] for r in results) == [p.name for p in paths]
