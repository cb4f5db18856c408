"""Deployments (issue 20 item 6, DESIGN §15): a deploy job's model reached through the
gateway, OpenAI-compatible, by its owner only, metered per request - with the official
`openai` client, as a user would call it."""
import os
import signal
import time
import uuid

import openai
import pytest
import requests
from conftest import env
from test_data_plane import run_ok

ONE = "/api/deployments/{deployment_id}"


def new_key():
    """A fresh account's key (its bill holds only this module's usage)."""
    resp = requests.post(f"{env('NF_TEST_AUTH_URL')}/internal/bootstrap",
                         json={"email": f"dep-{uuid.uuid4().hex[:8]}@nexa.dev"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["api_key"]


@pytest.fixture(scope="module")
def owner():
    return new_key()


def deploy(api, key, model_id):
    done = run_ok(api, "deploy", {"model_id": model_id}, key=key, timeout=240)
    res = done["result"]
    dep = res["deployment_id"]
    # the public result: no worker internals (its endpoint and pid stay the platform's)
    assert res["base_url"] == f"/api/deployments/{dep}/v1" and res["status"] == "ready", res
    assert res["model"] == model_id and "internal" not in res, res
    assert "endpoint_url" not in res and "pid" not in res and "127.0.0.1" not in str(res), res
    evs = api.call("GET", f"/api/jobs/{done['job_id']}/events", "/api/jobs/{job_id}/events",
                   key=key)
    assert evs.status_code == 200 and "127.0.0.1" not in evs.text, evs.text
    assert '"internal"' not in evs.text, evs.text
    return dep, done


def endpoint_pid(dep):
    """The endpoint's pid, as the platform sees it: the registry's worker-local URL (never
    shown to users), asked on its /healthz (not proxied by the gateway)."""
    url = psql(f"SELECT endpoint_url FROM sched.deployments WHERE deployment_id = '{dep}'")
    assert url.startswith("http://127.0.0.1:"), url
    return requests.get(url + "/healthz", timeout=10).json()["pid"]


@pytest.fixture(scope="module")
def llama(api, owner):
    """llama-3-8b (its stand-in, served by transformers), deployed once for the module."""
    dep, job = deploy(api, owner, "llama-3-8b")
    yield dep, job
    api.call("DELETE", f"/api/deployments/{dep}", ONE, key=owner)


def oai(api, key, dep):
    return openai.OpenAI(base_url=f"{api.base}/api/deployments/{dep}/v1", api_key=key,
                         max_retries=0, timeout=120)


def deploy_usage(api, key):
    """{meter: quantity} billed to the account's deploy jobs."""
    resp = api.call("GET", "/api/billing/summary", key=key)
    assert resp.status_code == 200, resp.text
    out = {}
    for jt in resp.json()["job_types"]:
        if jt["job_type"] == "deploy":
            for line in jt["lines"]:
                out[line["meter"]] = out.get(line["meter"], 0) + line["quantity"]
    return out


def endpoint_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too
        return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# ---- the registry --------------------------------------------------------------------------

def test_list_and_get_show_the_deployment(api, owner, llama):
    dep, job = llama
    resp = api.call("GET", "/api/deployments", key=owner)
    assert resp.status_code == 200, resp.text
    listed = {d["id"]: d for d in resp.json()["data"]}
    d = listed[dep]
    assert d["object"] == "deployment" and d["status"] == "ready", d
    assert d["model"] == "llama-3-8b" and d["job_id"] == job["job_id"], d
    assert d["region"] == "us-east-1" and d["replicas"] == 1, d
    assert d["base_url"] == f"/api/deployments/{dep}/v1" and d["stopped_at"] is None, d
    assert "endpoint_url" not in d and "127.0.0.1" not in resp.text, "never the worker's URL"
    one = api.call("GET", f"/api/deployments/{dep}", ONE, key=owner)
    assert one.status_code == 200 and one.json() == d


# ---- the OpenAI API, with the official client -----------------------------------------------

def test_openai_client_gets_completions_chats_and_streams(api, owner, llama, events):
    dep, job = llama
    # the deploy job's own smoke test is billed first (the worker meters it)
    deadline = time.monotonic() + 60
    while len(before := deploy_usage(api, owner)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    client = oai(api, owner, dep)  # sends Authorization: Bearer <key>
    assert [m.id for m in client.models.list()] == ["llama-3-8b"]

    used = {"input_tokens": 0, "output_tokens": 0}

    def count(usage):
        used["input_tokens"] += usage.prompt_tokens
        used["output_tokens"] += usage.completion_tokens

    cmpl = client.completions.create(model="llama-3-8b", prompt="A catalyst is", max_tokens=8)
    assert cmpl.object == "text_completion" and isinstance(cmpl.choices[0].text, str)
    assert 1 <= cmpl.usage.completion_tokens <= 8 and cmpl.usage.prompt_tokens > 0
    count(cmpl.usage)

    chat = client.chat.completions.create(
        model="llama-3-8b", max_tokens=8,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "What does a catalyst do?"}])
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason in ("stop", "length")
    count(chat.usage)

    pieces, usage = [], None
    for chunk in client.chat.completions.create(
            model="llama-3-8b", max_tokens=12, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Name a reaction."}]):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
    assert usage is not None and 1 <= usage.completion_tokens <= 12
    assert len([p for p in pieces if p]) >= 2, "the text arrives in pieces"
    count(usage)

    texts = [c.choices[0].text for c in client.completions.create(
        model="llama-3-8b", prompt="The rate of", max_tokens=6, stream=True)]
    assert len(texts) >= 2  # no usage chunk asked for: billed from the usage comment
    raw = api.call("POST", f"/api/deployments/{dep}/v1/completions",
                   ONE + "/v1/completions", key=owner,
                   json={"prompt": "The rate of", "max_tokens": 6, "stream": True})
    assert raw.status_code == 200
    assert raw.headers["Content-Type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n") and "\n: usage {" in raw.text

    # every request's tokens reach the bill of the deploy job (the stream without usage
    # chunks twice: the openai one and the raw one, same prompt and greedy: same counts)
    greedy = client.completions.create(model="x", prompt="The rate of", max_tokens=6)
    count(greedy.usage)
    count(greedy.usage)
    count(greedy.usage)
    deadline = time.monotonic() + 60
    while True:
        after = deploy_usage(api, owner)
        delta = {m: after.get(m, 0) - before.get(m, 0) for m in used}
        if delta == used or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert delta == used, f"billed {delta}, used {used}"
    # metered by the gateway on the deploy job: no worker, no attempt (schema-checked)
    deadline = time.monotonic() + 30
    while True:
        metered = [e for _, e in events.for_job(job["job_id"])
                   if e["type"] == "forge.usage.recorded"
                   and e["data"].get("deployment_id") == dep]
        if len(metered) >= 12 or time.monotonic() > deadline:  # 6 requests x 2 meters
            break
        time.sleep(0.2)
    assert len(metered) >= 12 and all(e["source"] == "nf-gateway" and e["data"]["attempt"] is None
                           and "worker_id" not in e["data"] for e in metered)
    assert len({e["id"] for e in metered}) == len(metered)


def test_bad_requests_are_openai_errors(api, owner, llama):
    dep, _ = llama
    client = oai(api, owner, dep)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="llama-3-8b", prompt="x", n=2)
    assert info.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="llama-3-8b", messages=[])
    path = f"/api/deployments/{dep}/v1/completions"
    bad = api.call("POST", path, ONE + "/v1/completions", key=owner, data="{nope",
                   headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    big = api.call("POST", path, ONE + "/v1/completions", key=owner,
                   json={"prompt": "x" * (1024 * 1024 + 10)})
    assert big.status_code == 413
    assert api.call("POST", path, ONE + "/v1/completions", key=None,
                    json={"prompt": "x"}).status_code == 403


# ---- tenancy --------------------------------------------------------------------------------

def test_another_tenant_gets_404_everywhere(api, llama, other_user_key):
    dep, _ = llama
    assert api.call("GET", f"/api/deployments/{dep}", ONE,
                    key=other_user_key).status_code == 404
    assert api.call("DELETE", f"/api/deployments/{dep}", ONE,
                    key=other_user_key).status_code == 404
    listed = api.call("GET", "/api/deployments", key=other_user_key).json()["data"]
    assert dep not in [d["id"] for d in listed]
    for method, tail, body in (("GET", "/v1/models", None),
                               ("POST", "/v1/completions", {"prompt": "x"}),
                               ("POST", "/v1/chat/completions",
                                {"messages": [{"role": "user", "content": "x"}]})):
        resp = api.call(method, f"/api/deployments/{dep}{tail}", ONE + tail,
                        key=other_user_key, json=body)
        assert resp.status_code == 404, resp.text
    with pytest.raises(openai.NotFoundError):
        oai(api, other_user_key, dep).completions.create(model="x", prompt="x", max_tokens=2)


def test_a_deployment_is_a_generator_and_teacher_for_its_owner_only(api, owner, llama,
                                                                   other_user_key):
    """DESIGN §15 providers: a ready deployment of the caller, named by its id, writes a
    generate job's rows (the handler calls it at the base URL the gateway resolved); another
    account's deployment, an unknown one or a malformed id is a 422 naming the param."""
    dep, _ = llama
    done = run_ok(api, "generate", {"domain": "biology", "num_samples": 3, "generator": dep,
                                    "task": "qa", "max_tokens": 24, "seed": 4},
                  key=owner, timeout=300)
    res = done["result"]
    assert res["generator"]["kind"] == "deployment", res
    assert res["generator"]["model"] == f"deployment {dep}", res
    assert res["num_samples"] == 3 and res["calls"] >= 3, res
    for key, generator in ((other_user_key, dep), (owner, "dep-000000000000"),
                           (owner, "dep-nothex00000z")):
        resp = api.submit("generate", {"domain": "x", "num_samples": 1, "generator": generator},
                          key=key)
        assert resp.status_code == 422, resp.text
        err = resp.json()["error"]
        assert err["param"] == "generator" and "deployment" in err["message"], err


def test_unknown_deployment_is_404(api, owner):
    for dep in ("dep-000000000000", "dep-nothex00000z", "job_1"):
        assert api.call("GET", f"/api/deployments/{dep}", ONE, key=owner).status_code == 404
        assert api.call("DELETE", f"/api/deployments/{dep}", ONE, key=owner).status_code == 404
        resp = api.call("POST", f"/api/deployments/{dep}/v1/completions",
                        ONE + "/v1/completions", key=owner, json={"prompt": "x"})
        assert resp.status_code == 404


# ---- stopping and failing -------------------------------------------------------------------

def test_delete_stops_the_endpoint(api, owner):
    dep, job = deploy(api, owner, "tiny-bigram")  # not a stand-in: the bigram model
    pid = endpoint_pid(dep)
    client = oai(api, owner, dep)
    assert client.completions.create(model="tiny-bigram", prompt="the", max_tokens=3).choices
    gone = api.call("DELETE", f"/api/deployments/{dep}", ONE, key=owner)
    assert gone.status_code == 200 and gone.json()["status"] == "stopped", gone.text
    assert gone.json()["stopped_at"]
    again = api.call("DELETE", f"/api/deployments/{dep}", ONE, key=owner)
    assert again.status_code == 200 and again.json() == gone.json()
    resp = api.call("POST", f"/api/deployments/{dep}/v1/completions", ONE + "/v1/completions",
                    key=owner, json={"prompt": "x"})
    assert resp.status_code == 409 and "stopped" in resp.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while endpoint_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not endpoint_alive(pid), "the endpoint process is gone"


def test_an_endpoint_that_died_is_marked_failed(api, owner):
    dep, job = deploy(api, owner, "tiny-bigram")
    pid = endpoint_pid(dep)
    os.kill(pid, signal.SIGKILL)  # as when its worker is lost
    deadline = time.monotonic() + 10
    while endpoint_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    resp = api.call("POST", f"/api/deployments/{dep}/v1/completions", ONE + "/v1/completions",
                    key=owner, json={"prompt": "x"})
    assert resp.status_code == 503, resp.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        d = api.call("GET", f"/api/deployments/{dep}", ONE, key=owner).json()
        if d["status"] == "failed":
            break
        time.sleep(0.2)
    assert d["status"] == "failed" and d["failure"] and d["stopped_at"], d
    resp = api.call("POST", f"/api/deployments/{dep}/v1/completions", ONE + "/v1/completions",
                    key=owner, json={"prompt": "x"})
    assert resp.status_code == 409 and "failed" in resp.json()["error"]["message"]
    assert api.call("DELETE", f"/api/deployments/{dep}", ONE,
                    key=owner).json()["status"] == "failed"


# ---- streams: passed through as they come, with backpressure --------------------------------

class FloodEndpoint:
    """A stand-in endpoint whose stream is far larger than any buffer on the way: it
    counts what it could send, so a client that stops reading shows whether the gateway
    stopped reading it too (backpressure) or buffered the stream."""

    EVENT = b"data: " + b"x" * 4090 + b"\n\n"  # 4 KiB per event

    def __init__(self, events):
        import http.server
        import threading

        outer = self
        self.sent = 0
        self.events = events

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for _ in range(outer.events):
                        chunk = outer.EVENT
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        outer.sent += len(chunk)
                    tail = b': usage {"prompt_tokens": 3, "completion_tokens": 4}\n\n' \
                        b"data: [DONE]\n\n"
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def psql(sql):
    import subprocess
    out = subprocess.run(["psql", env("NF_TEST_PG_DSN"), "-Atc", sql], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def fake_job_id():
    import random
    return "job_01" + "".join(random.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
                              for _ in range(24))


def test_a_stream_is_passed_through_with_backpressure(api, owner):
    events = 16384  # 64 MiB
    flood = FloodEndpoint(events)
    dep = "dep-" + uuid.uuid4().hex[:12]
    user = api.call("GET", "/api/auth/me", key=owner).json()["user_id"]
    psql(f"INSERT INTO sched.deployments (deployment_id, user_id, job_id, model, endpoint_url)"
         f" VALUES ('{dep}', '{user}', '{fake_job_id()}', 'flood',"
         f" 'http://127.0.0.1:{flood.port}')")
    try:
        resp = requests.post(f"{api.base}/api/deployments/{dep}/v1/completions",
                             headers={"Authorization": f"Bearer {owner}"},
                             json={"prompt": "x", "stream": True}, stream=True, timeout=60)
        assert resp.status_code == 200 and \
            resp.headers["Content-Type"].startswith("text/event-stream")
        blocks = resp.iter_content(4096)
        first = next(blocks)
        assert first.startswith(b"data: xxx"), "the first event arrives before the rest"
        time.sleep(2)  # the client reads nothing: the endpoint must be held back
        held = flood.sent
        assert held < 32 * 1024 * 1024, f"the endpoint sent {held} bytes to a stalled client"
        total = len(first)
        for block in blocks:
            total += len(block)
        tail = b': usage {"prompt_tokens": 3, "completion_tokens": 4}\n\ndata: [DONE]\n\n'
        assert flood.sent == events * len(FloodEndpoint.EVENT)
        assert total == flood.sent + len(tail), "every byte arrived once the client read"
    finally:
        flood.close()
        psql(f"DELETE FROM sched.deployments WHERE deployment_id = '{dep}'")
