"""vLLM behind the deploy endpoint (_serve.py), where the site installed it.

    engine_for(...)  -> "vllm" | "transformers": vLLM when it is importable, the job has a
                        GPU (NF_GPU_COUNT > 0 and CUDA available) and the operator did not
                        say otherwise (NEXA_SERVE_ENGINE=transformers|vllm|auto, default auto)
    VLLMGenerator    the interface of _serve.TextGenerator (prompt_of, stream, complete,
                     chat) over vllm.AsyncLLMEngine, run on an asyncio loop of its own
                     thread; the HTTP server, its OpenAI API and its usage report (the
                     `usage` object, the `: usage {...}` SSE comment) are _serve.py's, the
                     same for both engines
    make_generator   the generator for a model directory: VLLMGenerator when selected and
                     it starts, else (logged, with the reason) _serve.TextGenerator

Token counts are vLLM's own (the prompt's and the completion's token ids), counted by the
model's tokenizer as the transformers path counts them. An adapter (train's LoRA output,
not merged) is served on its base with vLLM's LoRA support (enable_lora, one LoRARequest).

vLLM is NOT installed on our machines (it needs CUDA): this path has run only against the
fake module of tests/handlers/test_vllm_select.py, never against vLLM itself. A model vLLM
cannot serve (the stand-ins' 8-wide attention heads may be one: its kernels want 64 or
more) falls back to transformers at start, so a deployment never fails for choosing vLLM.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import threading
import uuid

ENGINES = ("auto", "vllm", "transformers")


def vllm_importable() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def engine_for(env: dict, importable: bool, cuda: bool) -> tuple[str, str]:
    """(engine, why) for a PyTorch model directory: the pure selection rule."""
    want = (env.get("NEXA_SERVE_ENGINE") or "auto").strip().lower()
    if want not in ENGINES:
        want = "auto"
    if want == "transformers":
        return "transformers", "NEXA_SERVE_ENGINE=transformers"
    try:
        gpus = int(env.get("NF_GPU_COUNT") or "0")
    except ValueError:
        gpus = 0
    if not importable:
        return "transformers", "vllm is not installed on this worker"
    if gpus <= 0 or not cuda:
        return "transformers", "the job has no GPU"
    return "vllm", "vllm is installed and the job has a GPU"


class VLLMGenerator:
    """_serve.TextGenerator's interface over vLLM's async engine."""

    def __init__(self, model_dir: str, gpus: int):
        import _hf
        import transformers
        import vllm

        with open(os.path.join(model_dir, "nexa.json"), encoding="utf-8") as f:
            meta = json.load(f)
        self.tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        self.lora = None
        model = model_dir
        kw = {}
        if not os.path.isfile(os.path.join(model_dir, "model.safetensors")):  # an adapter
            model = _hf.stand_in_dir(meta["base_model"])
            with open(os.path.join(model_dir, "adapter_config.json"), encoding="utf-8") as f:
                rank = int(json.load(f).get("r", 16))
            kw = {"enable_lora": True, "max_lora_rank": max(16, rank), "max_loras": 1}
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, model_dir)
        self.vllm = vllm
        args = vllm.AsyncEngineArgs(
            model=model, tokenizer=model_dir, dtype="auto", seed=0,
            tensor_parallel_size=max(1, gpus),
            gpu_memory_utilization=float(os.environ.get("NEXA_VLLM_GPU_MEMORY", "0.85")),
            disable_log_stats=True, **kw)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.engine = self._call(self._start(args))

    async def _start(self, args):
        return self.vllm.AsyncLLMEngine.from_engine_args(args)

    def _call(self, coro, timeout=600):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def prompt_of(self, messages):
        from _serve import chat_prompt

        return chat_prompt(messages, self.tok)

    def chat(self, messages, max_tokens, temperature, seed):
        return self.complete(self.prompt_of(messages), max_tokens, temperature, seed)

    def complete(self, prompt, max_tokens, temperature, seed):
        stats = {}
        text = "".join(self.stream(prompt, max_tokens, temperature, seed, stats,
                                   threading.Event()))
        return text, stats["finish_reason"], stats["prompt_tokens"], stats["completion_tokens"]

    def stream(self, prompt, max_tokens, temperature, seed, stats, cancel):
        """Pieces of text as vLLM produces them; stats as TextGenerator fills them."""
        import queue

        stats.update(prompt_tokens=0, completion_tokens=0, finish_reason="length")
        params = self.vllm.SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                          seed=seed, top_k=50 if temperature > 0 else -1)
        rid = uuid.uuid4().hex
        out: queue.Queue = queue.Queue()

        async def run():
            try:
                async for ro in self.engine.generate(prompt, params, rid,
                                                     lora_request=self.lora):
                    out.put(("out", ro))
            except Exception as exc:  # noqa: BLE001  (reported by the consumer)
                out.put(("error", exc))
            out.put(("end", None))

        asyncio.run_coroutine_threadsafe(run(), self.loop)
        sent, ended = 0, False
        try:
            while True:
                kind, ro = out.get(timeout=300)
                if kind == "end":
                    ended = True
                    break
                if kind == "error":
                    raise ro
                c = ro.outputs[0]
                stats["prompt_tokens"] = len(ro.prompt_token_ids or [])
                stats["completion_tokens"] = len(c.token_ids)
                if c.finish_reason:
                    stats["finish_reason"] = "stop" if c.finish_reason == "stop" else "length"
                if len(c.text) > sent:
                    piece, sent = c.text[sent:], len(c.text)
                    yield piece
                if cancel.is_set():
                    break
        finally:
            if not ended:  # a stop string, a client gone, a cancel: vLLM stops generating
                self._call(self.engine.abort(rid), timeout=30)


def make_generator(hf_dir: str, env=None, log=None):
    """The generator serving hf_dir, and its engine's name."""
    import _serve

    env = os.environ if env is None else env
    log = log or (lambda m: (sys.stderr.write(m + "\n"), sys.stderr.flush()))
    engine, why = engine_for(env, vllm_importable(), cuda_available())
    if engine == "vllm":
        try:
            gen = VLLMGenerator(hf_dir, int(env.get("NF_GPU_COUNT") or "1"))
            log(f"engine vllm: {why}")
            return gen, "vllm"
        except Exception as exc:  # noqa: BLE001  (any start failure: transformers serves)
            log(f"engine vllm did not start ({type(exc).__name__}: {exc}); "
                "serving with transformers")
            why = f"vllm did not start: {exc}"
    log(f"engine transformers: {why}")
    return _serve.TextGenerator(hf_dir=hf_dir), "transformers"
