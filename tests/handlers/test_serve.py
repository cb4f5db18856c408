"""The deploy endpoint (handlers/_serve.py) in process, on a small bigram model: the
OpenAI-compatible routes, streaming (chunked SSE with the usage comment the gateway meters
from), stop strings and the 400s in OpenAI's error shape. The PyTorch path is in
test_ml.py (test_deploy_serves_the_trained_model_with_transformers)."""
import http.client
import json
import threading

import pytest

import handlers_kit  # noqa: F401  (puts handlers/ on sys.path)
import _serve
from _lm import BigramModel, tokenize

TEXT = ["the catalyst lowers the activation energy of the reaction",
        "a catalyst is not used up by the reaction it speeds",
        "the rate of the reaction rises with the temperature"] * 20


@pytest.fixture(scope="module")
def endpoint():
    model = BigramModel.from_sequences([tokenize(t) for t in TEXT], max_vocab=200)
    gen = _serve.TextGenerator(bigram=model)
    stop = threading.Event()
    server = _serve.Server(("127.0.0.1", 0), _serve.make_handler(
        "tiny-gpt", gen, threading.BoundedSemaphore(2), stop))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], stop
    server.shutdown()
    server.server_close()


def call(port, method, path, body=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), text


def test_models_lists_the_one_model(endpoint):
    status, _, text = call(endpoint[0], "GET", "/v1/models")
    doc = json.loads(text)
    assert status == 200 and doc["object"] == "list"
    assert [m["id"] for m in doc["data"]] == ["tiny-gpt"]
    assert doc["data"][0]["object"] == "model"


def test_completion_has_text_and_usage(endpoint):
    status, _, text = call(endpoint[0], "POST", "/v1/completions",
                           {"model": "tiny-gpt", "prompt": "the catalyst", "max_tokens": 5})
    doc = json.loads(text)
    assert status == 200 and doc["object"] == "text_completion"
    assert doc["choices"][0]["text"] and doc["choices"][0]["finish_reason"] in ("stop", "length")
    n = len(doc["choices"][0]["text"].split())
    assert 1 <= n <= 5
    assert doc["usage"] == {"prompt_tokens": 2, "completion_tokens": n, "total_tokens": 2 + n}


def test_chat_completion_uses_our_template(endpoint):
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is a catalyst"}]}]
    status, _, text = call(endpoint[0], "POST", "/v1/chat/completions",
                           {"model": "x", "messages": msgs, "max_tokens": 4})
    doc = json.loads(text)
    assert status == 200 and doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["role"] == "assistant"
    prompt = _serve.chat_prompt(_serve.parse_request("chat", {"messages": msgs})["messages"])
    assert prompt == "### System:\nbe brief\n### User:\nwhat is a catalyst\n### Assistant:\n"
    assert doc["usage"]["prompt_tokens"] == len(tokenize(prompt))


def sse(text):
    """(data objects, comment lines, saw [DONE] last)."""
    data, comments = [], []
    events = [e for e in text.split("\n\n") if e]
    for e in events:
        if e.startswith(": "):
            comments.append(e[2:])
        elif e != "data: [DONE]":
            data.append(json.loads(e[len("data: "):]))
    return data, comments, events[-1] == "data: [DONE]"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_stream_is_sse_with_the_usage_comment(endpoint, path):
    body = {"max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    if "chat" in path:
        body["messages"] = [{"role": "user", "content": "the catalyst"}]
    else:
        body["prompt"] = "the catalyst"
    status, ctype, text = call(endpoint[0], "POST", path, body)
    assert status == 200 and ctype == "text/event-stream"
    data, comments, done = sse(text)
    assert done
    usage = json.loads(comments[-1][len("usage "):])
    assert data[-1]["choices"] == [] and data[-1]["usage"]["completion_tokens"] == \
        usage["completion_tokens"]
    pieces = [c["choices"][0] for c in data[:-1]]
    if "chat" in path:
        assert data[0]["object"] == "chat.completion.chunk"
        text = "".join(p["delta"].get("content", "") for p in pieces)
    else:
        text = "".join(p["text"] for p in pieces)
    assert 1 <= len(text.split()) == usage["completion_tokens"] <= 6
    assert len(pieces) >= 2 and pieces[-1]["finish_reason"] in ("stop", "length")


def test_stream_without_include_usage_has_no_usage_chunk(endpoint):
    status, _, text = call(endpoint[0], "POST", "/v1/completions",
                           {"prompt": "the", "max_tokens": 3, "stream": True})
    data, comments, done = sse(text)
    assert status == 200 and done and all("usage" not in d for d in data)
    assert comments and comments[-1].startswith("usage ")


def test_stop_cuts_the_text():
    scan = _serve.StopScanner(["ab"])
    assert scan.feed("xxa") == "xx" and scan.feed("by") == "" and scan.stopped
    scan = _serve.StopScanner(["ab"])
    assert scan.feed("xa") == "x" and scan.feed("c") == "ac" and scan.flush() == ""
    scan = _serve.StopScanner(["ab"])
    assert scan.feed("xa") == "x" and scan.flush() == "a"


def test_stop_ends_a_completion(endpoint):
    free = json.loads(call(endpoint[0], "POST", "/v1/completions",
                           {"prompt": "the catalyst", "max_tokens": 8})[2])
    words = free["choices"][0]["text"].split()
    cut = json.loads(call(endpoint[0], "POST", "/v1/completions",
                          {"prompt": "the catalyst", "max_tokens": 8, "stop": [words[2]]})[2])
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert words[2] not in cut["choices"][0]["text"].split()[-1:]


@pytest.mark.parametrize("body,param", [
    ({"prompt": 3}, "prompt"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10_000}, "max_tokens"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": "x", "stop": [1]}, "stop"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "echo": "yes"}, "echo"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": ["x"] * 65}, "prompt"),
    ({"prompt": ["x", 3]}, "prompt"),
    ({"prompt": "x", "echo": True, "stream": True}, "stream"),
    ({"prompt": "x", "max_tokens": -1, "echo": True}, "max_tokens"),
    ({"prompt": "x", "echo": True, "max_tokens": 0}, "logprobs"),  # a bigram model
])
def test_bad_fields_are_400_naming_them(endpoint, body, param):
    status, ctype, text = call(endpoint[0], "POST", "/v1/completions", body)
    err = json.loads(text)["error"]
    assert status == 400 and ctype == "application/json"
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


@pytest.mark.parametrize("messages", [None, [], [{"role": "wizard", "content": "x"}],
                                      [{"role": "user", "content": 5}], ["hi"]])
def test_bad_messages_are_400(endpoint, messages):
    status, _, text = call(endpoint[0], "POST", "/v1/chat/completions", {"messages": messages})
    assert status == 400 and json.loads(text)["error"]["param"] == "messages"


def test_bad_json_and_unknown_paths(endpoint):
    status, _, text = call(endpoint[0], "POST", "/v1/completions", raw=b"{nope")
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_json"
    status, _, text = call(endpoint[0], "POST", "/v1/completions", raw=b"[1]")
    assert status == 400 and json.loads(text)["error"]["code"] == "invalid_json"
    status, _, text = call(endpoint[0], "POST", "/v1/embeddings", {"input": "x"})
    assert status == 404 and json.loads(text)["error"]["code"] == "not_found"
    status, _, _ = call(endpoint[0], "GET", "/healthz")
    assert status == 200


def test_echo_and_logprobs_score_prompts_as_the_model_does():
    """echo + logprobs + max_tokens 0 (what lm-evaluation-harness asks to score a choice):
    per token its log-probability under the model given all before it, <s> first with
    null; several prompts answer in order; a longer prompt's shared prefix scores the same."""
    pytest.importorskip("torch")
    import torch
    import _hf

    gen = _serve.TextGenerator(hf_dir=_hf.stand_in_dir("llama-3-8b"))
    stop = threading.Event()
    server = _serve.Server(("127.0.0.1", 0), _serve.make_handler(
        "llama-3-8b", gen, threading.BoundedSemaphore(2), stop))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        ctx, whole = "The catalyst", "The catalyst lowers the energy"
        status, _, text = call(port, "POST", "/v1/completions", {
            "prompt": [ctx, whole], "max_tokens": 0, "echo": True, "logprobs": 2})
        assert status == 200, text
        doc = json.loads(text)
        a, b = (c["logprobs"] for c in doc["choices"])
        assert [c["index"] for c in doc["choices"]] == [0, 1]
        assert [c["text"] for c in doc["choices"]] == [ctx, whole]
        ids = [gen.tok.bos_token_id] + gen.tok.encode(whole, add_special_tokens=False)
        assert doc["usage"]["prompt_tokens"] == len(a["tokens"]) + len(ids)
        assert doc["usage"]["completion_tokens"] == 0
        with torch.no_grad():
            logp = torch.log_softmax(gen.model(torch.tensor([ids])).logits[0].float(), -1)
        want = [None] + [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
        assert b["token_logprobs"][0] is None and a["token_logprobs"][0] is None
        assert b["token_logprobs"][1:] == pytest.approx(want[1:], abs=1e-5)
        n = len(a["tokens"])
        assert a["token_logprobs"][1:] == pytest.approx(b["token_logprobs"][1:n], abs=1e-5)
        assert "".join(b["tokens"][1:]) == whole and b["text_offset"][1] == 0
        assert all(len(t) == 2 for t in b["top_logprobs"][1:])
        assert all(lp <= max(t.values()) + 1e-6
                   for lp, t in zip(b["token_logprobs"][1:], b["top_logprobs"][1:]))
        # without echo: the completion's tokens only, after a greedy generation
        status, _, text = call(port, "POST", "/v1/completions", {
            "prompt": ctx, "max_tokens": 4, "logprobs": 0})
        c = json.loads(text)["choices"][0]
        assert status == 200 and "".join(c["logprobs"]["tokens"]) == c["text"]
        assert all(lp is not None for lp in c["logprobs"]["token_logprobs"])
    finally:
        server.shutdown()
        server.server_close()


def test_admin_stop_sets_the_stop_event(endpoint):
    port, stop = endpoint
    status, _, text = call(port, "POST", "/admin/stop")
    assert status == 200 and stop.is_set()


def test_the_pytorch_model_streams_with_its_chat_template():
    """The stand-in llama (transformers): its tokenizer's chat template makes the prompt;
    tokens stream in pieces that add up to the greedy answer; closing the stream early
    stops the generation."""
    pytest.importorskip("torch")
    import _hf

    gen = _serve.TextGenerator(hf_dir=_hf.stand_in_dir("llama-3-8b"))
    msgs = [{"role": "user", "content": "what is a catalyst"}]
    prompt = gen.prompt_of(msgs)
    assert prompt == gen.tok.apply_chat_template(msgs, tokenize=False,
                                                 add_generation_prompt=True)
    assert prompt.endswith("### Assistant:\n")
    stats, cancel = {}, threading.Event()
    pieces = list(gen.stream(prompt, 10, 0.0, None, stats, cancel))
    assert len(pieces) >= 2 and 1 <= stats["completion_tokens"] <= 10
    assert stats["prompt_tokens"] == len(gen.tok.encode(prompt, add_special_tokens=False))
    text, reason, n_in, n_out = gen.complete(prompt, 10, 0.0, None)
    assert text == "".join(pieces) and (n_in, n_out) == (stats["prompt_tokens"],
                                                         stats["completion_tokens"])
    stream = gen.stream(prompt, 200, 0.0, None, {}, cancel)
    next(stream)
    stream.close()
    assert cancel.is_set()
