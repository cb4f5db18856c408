"""deploy's engine choice (handlers/_vllm.py): vLLM where the site installed it and the job
has a GPU, transformers otherwise, behind the same OpenAI API and usage report.

vLLM is not installable here (it needs CUDA): these tests use a fake `vllm` module written
below, with the calls _vllm.py makes of the real one (AsyncEngineArgs,
AsyncLLMEngine.from_engine_args, generate as an async iterator of RequestOutput with
cumulative text, abort, SamplingParams, lora.request.LoRARequest). They check the selection
rule, the adapter from vLLM's outputs to the endpoint's text pieces and token counts, the
usage contract through the real HTTP handler, and the fallback to transformers when vLLM
does not start. The real vLLM has not run this code.
"""
import http.client
import importlib
import json
import sys
import textwrap
import threading

import pytest
from handlers_kit import HANDLERS

sys.path.insert(0, str(HANDLERS))

FAKE_VLLM = '''
import asyncio, os

ARGS, ABORTED, SAMPLING = [], [], []
WORDS = ["alpha", " beta", " gamma", " delta", " epsilon", " zeta"]


class SamplingParams:
    def __init__(self, max_tokens=16, temperature=0.0, seed=None, top_k=-1):
        self.max_tokens, self.temperature, self.seed, self.top_k = (
            max_tokens, temperature, seed, top_k)
        SAMPLING.append(self)


class AsyncEngineArgs:
    def __init__(self, **kw):
        self.kw = kw
        ARGS.append(kw)


class CompletionOutput:
    def __init__(self, text, token_ids, finish_reason):
        self.text, self.token_ids, self.finish_reason = text, token_ids, finish_reason


class RequestOutput:
    def __init__(self, prompt_token_ids, outputs):
        self.prompt_token_ids, self.outputs = prompt_token_ids, outputs


class AsyncLLMEngine:
    def __init__(self, args):
        self.args = args

    @classmethod
    def from_engine_args(cls, args):
        if os.environ.get("FAKE_VLLM_FAIL"):
            raise RuntimeError("head size 8 is not supported")
        return cls(args)

    async def generate(self, prompt, params, request_id, lora_request=None):
        n = min(params.max_tokens, len(WORDS))
        text, ids = "", []
        for i in range(n):
            text += WORDS[i]
            ids.append(100 + i)
            await asyncio.sleep(0)
            yield RequestOutput(list(range(len(prompt.split()) + 1)),
                                [CompletionOutput(text, list(ids),
                                                  "length" if i == n - 1 else None)])

    async def abort(self, request_id):
        ABORTED.append(request_id)
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "vllm"
    (pkg / "lora").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM))
    (pkg / "lora" / "__init__.py").write_text("")
    (pkg / "lora" / "request.py").write_text(
        "class LoRARequest:\n    def __init__(self, name, id, path):\n"
        "        self.name, self.id, self.path = name, id, path\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    import _vllm

    monkeypatch.setattr(_vllm, "cuda_available", lambda: True)
    monkeypatch.setenv("NF_GPU_COUNT", "1")
    monkeypatch.setenv("NEXA_MODEL_CACHE", str(tmp_path / "models"))
    return importlib.import_module("vllm")


@pytest.mark.parametrize("env,importable,cuda,engine", [
    ({"NF_GPU_COUNT": "1"}, True, True, "vllm"),
    ({"NF_GPU_COUNT": "2", "NEXA_SERVE_ENGINE": "auto"}, True, True, "vllm"),
    ({"NF_GPU_COUNT": "1"}, False, True, "transformers"),       # not installed
    ({"NF_GPU_COUNT": "0"}, True, True, "transformers"),        # the job asked for no GPU
    ({}, True, True, "transformers"),
    ({"NF_GPU_COUNT": "1"}, True, False, "transformers"),       # no CUDA on this worker
    ({"NF_GPU_COUNT": "1", "NEXA_SERVE_ENGINE": "transformers"}, True, True, "transformers"),
    ({"NF_GPU_COUNT": "x"}, True, True, "transformers"),
])
def test_the_selection_rule(env, importable, cuda, engine):
    import _vllm

    assert _vllm.engine_for(env, importable, cuda)[0] == engine


def test_without_vllm_installed_transformers_serves():
    import _vllm

    assert not _vllm.vllm_importable()  # it is not installable on our machines


def stand_in():
    import _hf

    return _hf.stand_in_dir("llama-3-8b")


def test_vllm_is_chosen_and_streams_pieces_with_its_token_counts(fake_vllm):
    import _vllm

    logs = []
    gen, engine = _vllm.make_generator(stand_in(), log=logs.append)
    assert engine == "vllm" and isinstance(gen, _vllm.VLLMGenerator), logs
    assert fake_vllm.ARGS[-1]["tensor_parallel_size"] == 1
    stats = {}
    pieces = list(gen.stream("one two three", 4, 0.0, None, stats, threading.Event()))
    assert pieces == ["alpha", " beta", " gamma", " delta"]
    assert stats == {"prompt_tokens": 4, "completion_tokens": 4, "finish_reason": "length"}
    assert fake_vllm.ABORTED == []  # a finished request is not aborted
    # a consumer that stops early (a stop string, a client gone) aborts the request
    it = gen.stream("one", 6, 0.0, None, {}, threading.Event())
    next(it)
    it.close()
    assert len(fake_vllm.ABORTED) == 1


def test_the_endpoint_reports_usage_the_same_way(fake_vllm):
    import _serve
    import _vllm

    gen, engine = _vllm.make_generator(stand_in(), log=lambda m: None)
    assert engine == "vllm"
    server = _serve.Server(("127.0.0.1", 0), _serve.make_handler(
        "llama-3-8b", gen, threading.BoundedSemaphore(1)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/completions", json.dumps(
            {"prompt": "a b c", "max_tokens": 3}), {"Content-Type": "application/json"})
        body = json.loads(conn.getresponse().read())
        assert body["choices"][0]["text"] == "alpha beta gamma"
        assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3,
                                 "total_tokens": 7}
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
             "stream": True}), {"Content-Type": "application/json"})
        text = conn.getresponse().read().decode()
        assert ': usage {"prompt_tokens": ' in text and '"completion_tokens": 2}' in text
        assert text.rstrip().endswith("data: [DONE]")
    finally:
        server.shutdown()
        server.server_close()


def test_vllm_that_does_not_start_falls_back_to_transformers(fake_vllm, monkeypatch):
    import _serve
    import _vllm

    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    logs = []
    gen, engine = _vllm.make_generator(stand_in(), log=logs.append)
    assert engine == "transformers" and isinstance(gen, _serve.TextGenerator)
    assert any("did not start" in m and "head size 8" in m for m in logs)
    text, _reason, prompt_tokens, completion_tokens = gen.complete("### User:\nhi", 3, 0, 0)
    assert prompt_tokens > 0 and completion_tokens <= 3
