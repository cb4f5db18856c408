"""Registering an uploaded model (issue 20 item 1): POST /api/models {name, uri} checks that
the upload is a Hugging Face model directory that loads - an uncompressed tar with
config.json (a known causal-LM model_type), tokenizer files and safetensors weights whose
headers agree with their bytes - and records its architecture and its true parameter
count. Anything else is a 422 naming uri and what is wrong, never a 500."""
import io
import json
import os
import struct
import sys
import tarfile
import uuid

from conftest import ROOT
from test_data_plane import refused, run_ok, upload_ok

STAND_IN = "llama-3-8b"


def stand_in_dir():
    """The llama stand-in's directory (a real Llama model, built once, cached like the
    stack's worker does)."""
    os.environ.setdefault("NEXA_MODEL_CACHE", str(ROOT / ".forge/models"))
    sys.path.insert(0, str(ROOT / "handlers"))
    try:
        import _hf
        return _hf.stand_in_dir(STAND_IN)
    finally:
        sys.path.remove(str(ROOT / "handlers"))


def tar_of(files, extra=()):
    """An uncompressed tar of {name: bytes}, plus raw TarInfo members (links...)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def hf_files():
    """The stand-in directory's files as a user would upload them (no nexa.json: that is
    ours), and its parameter count."""
    d = stand_in_dir()
    files = {}
    for name in sorted(os.listdir(d)):
        if name != "nexa.json" and os.path.isfile(os.path.join(d, name)):
            with open(os.path.join(d, name), "rb") as f:
                files["./" + name] = f.read()
    with open(os.path.join(d, "nexa.json"), encoding="utf-8") as f:
        params = json.load(f)["parameters"]
    return files, params


def safetensors(header, data=b""):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def cut_tar(files):
    """The tar cut in the middle of model.safetensors' bytes."""
    data = tar_of(files)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        m = tar.getmember("./model.safetensors")
    return data[:m.offset_data + m.size // 2]


def register(api, name, uri, key="default"):
    return api.call("POST", "/api/models", json={"name": name, "uri": uri}, key=key)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_good_upload_is_registered_with_its_true_size_and_loads(api, other_user_key):
    files, params = hf_files()
    up = upload_ok(api, tar_of(files), purpose="model", filename="model.tar")
    name = unique("upl")
    resp = register(api, name, up["uri"])
    assert resp.status_code == 201, resp.text
    m = resp.json()
    assert m["kind"] == "uploaded" and m["artifact_id"] == up["id"], m
    assert m["architecture"] == "llama" and m["parameters"] == params, (m, params)
    got = api.call("GET", f"/api/models/{name}", "/api/models/{model}").json()
    assert got["parameters"] == params and got["architecture"] == "llama", got
    # another tenant cannot register this account's upload
    refused(register(api, unique("x"), up["uri"], key=other_user_key), "uri", "purpose=model")
    # the registered model loads on a worker: evaluate it by name
    done = run_ok(api, "evaluate", {"model_id": name, "benchmark": "arc_easy"}, timeout=240)
    assert done["result"]["model_source"] == "trained", done["result"]
    assert done["result"]["architecture"] == "llama", done["result"]
    assert api.call("DELETE", f"/api/models/{name}", "/api/models/{model}").status_code == 200


def test_bad_uploads_are_refused_naming_what_is_wrong(api):
    files, _ = hf_files()
    weights = files["./model.safetensors"]
    no_tok = {k: v for k, v in files.items() if "tokenizer" not in k}
    pickled = {k: v for k, v in files.items() if not k.endswith(".safetensors")}
    pickled["./pytorch_model.bin"] = b"\x80\x04pickle"
    link = tarfile.TarInfo("./model.safetensors")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bert = dict(files, **{"./config.json": json.dumps({"model_type": "bert"}).encode()})
    broken_config = dict(files, **{"./config.json": b"{not json"})
    # a tensor whose shape needs more bytes than its offsets give
    lying = safetensors({"model.embed_tokens.weight": {"dtype": "F32", "shape": [4, 4],
                                                       "data_offsets": [0, 32]}}, b"\0" * 32)
    # offsets past the end of the file
    past = safetensors({"w": {"dtype": "F32", "shape": [1024],
                              "data_offsets": [0, 4096]}}, b"\0" * 16)
    # a header length of 2^62 (a hostile 8 bytes), and one running past the file
    huge = struct.pack("<Q", 1 << 62) + b"{}"
    short = struct.pack("<Q", 1000) + b"{}"
    # the weights cut short (an interrupted upload)
    cut = weights[:len(weights) // 2]
    cases = [
        (b'{"bigram": {}}\n', "not a tar archive"),
        (tar_of(no_tok), "no tokenizer"),
        (tar_of(pickled), "pickled weights are not accepted"),
        (tar_of({k: v for k, v in files.items() if k != "./config.json"}),
         "config.json is missing"),
        (tar_of(files, [link]), "links are not accepted"),
        (tar_of(dict(files, **{"../evil": b"x"})), "'..'"),
        (tar_of(dict(files, **{"/etc/evil": b"x"})), "absolute paths"),
        (tar_of(bert), "model_type bert"),
        (tar_of(broken_config), "config.json is not a JSON object"),
        (tar_of(dict(files, **{"./model.safetensors": lying})), "takes 64 bytes"),
        (tar_of(dict(files, **{"./model.safetensors": past})), "out of the file's range"),
        (tar_of(dict(files, **{"./model.safetensors": huge})), "header length"),
        (tar_of(dict(files, **{"./model.safetensors": short})), "runs past the file"),
        (tar_of(dict(files, **{"./model.safetensors": cut})), "model.safetensors"),
        (tar_of(dict(files, **{"./model.safetensors.index.json": json.dumps(
            {"weight_map": {"x": "model-00002-of-00002.safetensors"}}).encode()})),
         "not a safetensors file of the upload"),
        (cut_tar(files), "runs past the end of the upload"),  # the tar itself cut short
    ]
    for data, says in cases:
        up = upload_ok(api, data, purpose="model", filename="model.tar")
        resp = register(api, unique("bad"), up["uri"])
        refused(resp, "uri", says)
        assert "not a loadable Hugging Face model directory" in resp.json()["error"]["message"]
    # the config's sizes must fit the weights
    small = dict(files, **{"./config.json": json.dumps(
        dict(json.loads(files["./config.json"]), vocab_size=7)).encode()})
    up = upload_ok(api, tar_of(small), purpose="model", filename="model.tar")
    refused(register(api, unique("bad"), up["uri"]), "uri", "do not fit the config")
