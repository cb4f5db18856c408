"""The local inference endpoint the reference `deploy` handler starts: OpenAI-compatible.

    python3 _serve.py --model MODEL.json --model-id ID --dir DIR --replicas N
                      [--watch-pid PID --watch-start TICKS]
    python3 _serve.py --hf-model MODEL_DIR ...   (a PyTorch model: _hf.py)

Binds 127.0.0.1 on a free port and writes DIR/endpoint.json ({"pid", "port", "url"})
once it accepts connections, and DIR/endpoint.pid. It runs in its own session (the
deploy handler starts it detached, so the job can finish while it serves) and exits:
  - on SIGTERM or SIGINT (`kill $(cat DIR/endpoint.pid)`), or on POST /admin/stop (the
    gateway's DELETE /api/deployments/{id}; the endpoint binds 127.0.0.1 only), or
  - within a second of the watched process (the nf-worker agent that ran the deploy job)
    going away, so stopping the worker (`./forge down`, a test's teardown) stops every
    endpoint it deployed.

API (JSON; the subset of OpenAI's that the official `openai` client uses):
  GET  /healthz               {"status": "ok", "model_id", "pid"} (not proxied: internal)
  GET  /v1/models             {"object": "list", "data": [{"id", "object": "model",
                              "created", "owned_by"}]}
  POST /v1/completions        {"prompt" (a string, or a list of up to 64 strings: one
                              choice each, index = its position), "max_tokens" (1..256,
                              default 16; 0 with echo: score the prompt only), "temperature"
                              (0..2; 0 = greedy, default 0), "stop" (a string or up to 4),
                              "n" (1 only), "seed", "echo" (the prompt starts the choice's
                              text), "logprobs" (0..5: per token its log-probability and the
                              top alternatives), "stream", "stream_options": {"include_usage"}}
                              -> {"id", "object": "text_completion", "created", "model",
                              "choices": [{"text", "index", "logprobs", "finish_reason"}],
                              "usage": {"prompt_tokens", "completion_tokens",
                              "total_tokens"}}
                              logprobs (OpenAI's legacy completions shape): {"tokens",
                              "token_logprobs", "top_logprobs", "text_offset"} over the
                              prompt's tokens (with echo; the first, <s>, has null) and the
                              completion's, each token's log-probability given all before
                              it (one forward pass; the completion re-tokenized from its
                              text). What lm-evaluation-harness needs to score multiple
                              choice and perplexity through the API (handlers/_apilm.py).
                              PyTorch models only; not with stream.
  POST /v1/chat/completions   the same with "messages" ([{"role": system|user|assistant,
                              "content": a string or [{"type": "text", "text"}]}]) instead
                              of "prompt" -> "object": "chat.completion", choices
                              [{"index", "message": {"role": "assistant", "content"},
                              "finish_reason"}]. The prompt is the tokenizer's chat template
                              when it has one, else ours (chat_prompt below).
  POST /admin/stop            {"status": "stopping"}; the process exits right after.
  --api-key-env VAR: every request but /healthz must carry "Authorization: Bearer <the
  value of VAR>" (401 otherwise; the key is read from the environment, never argv, never
  logged): a provider's stand-in checks its key (deploy/local/providers.sh). --stand-in:
  /v1/models marks the model stand_in: true. --port: a fixed port instead of a free one.
  "model" in a request is accepted and not checked (one model per endpoint).
  stream: true answers text/event-stream, chunked: one `data: {chunk}` per piece of text
  (OpenAI's text_completion / chat.completion.chunk objects), the last with its
  finish_reason, then, with stream_options.include_usage, a chunk with "choices": [] and
  "usage", then always the comment line `: usage {"prompt_tokens": n,
  "completion_tokens": m}` (clients ignore comments; the gateway meters from it), then
  `data: [DONE]`.
  Errors: OpenAI's shape {"error": {"message", "type", "param", "code"}}: 400 bad JSON or
  fields, 404 unknown path, 413 body over MAX_BODY; never a crash.
At most `replicas` requests are served at once (the replica count is the endpoint's
concurrency); more wait their turn.

Python standard library only for a bigram model.json; --hf-model serves a Hugging Face
model directory (a stand-in base, or train's unpacked model.tar: merged, or an adapter on
its base) with transformers' generate (streamed through TextIteratorStreamer), tokens
counted by its tokenizer, or with vLLM where the site installed it and the job has a GPU
(_vllm.py: the same API and usage report; endpoint.json's "engine" says which).
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import hmac  # noqa: E402
import http.server  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socketserver  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from _lm import BigramModel, EOS, UNK, tokenize  # noqa: E402

MAX_BODY = 1024 * 1024
MAX_TOKENS = 256
MAX_STOP = 4
MAX_PROMPTS = 64  # prompts of one /v1/completions request (scored one after the other)
MAX_LOGPROBS = 5  # OpenAI's legacy completions allow up to 5 alternatives per token
ROLES = ("system", "developer", "user", "assistant")


def process_start(pid):
    """The start time (clock ticks since boot) of a process, None when it is gone (or a
    zombie: dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


# ---- requests: validation (pure) --------------------------------------------------------

class ApiError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status, message, param=None, code="invalid_params",
                 kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = \
            status, message, param, code, kind

    def body(self):
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _message_text(m, i):
    if not isinstance(m, dict):
        raise ApiError(400, f"messages[{i}] must be an object", "messages")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}",
                       "messages")
    if isinstance(content, list):  # [{"type": "text", "text": ...}]
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or \
                    not isinstance(p.get("text"), str):
                raise ApiError(400, f"messages[{i}].content parts must be "
                               '{"type": "text", "text": "..."}', "messages")
            parts.append(p["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content must be a string", "messages")
    return {"role": "system" if role == "developer" else role, "content": content}


def parse_request(kind, req):
    """A request body (parsed JSON) of /v1/completions (kind "completion") or
    /v1/chat/completions (kind "chat") -> the generation parameters; ApiError (400)
    naming the field otherwise."""
    if not isinstance(req, dict):
        raise ApiError(400, "the body must be a JSON object", None, "invalid_json")
    out = {}
    if kind == "chat":
        msgs = req.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ApiError(400, "messages must be a non-empty list", "messages")
        out["messages"] = [_message_text(m, i) for i, m in enumerate(msgs)]
    else:
        prompt = req.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or len(prompts) > MAX_PROMPTS or \
                not all(isinstance(x, str) for x in prompts):
            raise ApiError(400, f"prompt must be a string or a list of 1..{MAX_PROMPTS} "
                           "strings", "prompt")
        out["prompt"], out["prompts"] = prompts[0], prompts
        echo = req.get("echo", False)
        if not isinstance(echo, bool):
            raise ApiError(400, "echo must be a boolean", "echo")
        out["echo"] = echo
        logprobs = req.get("logprobs")
        if logprobs is not None and (not _is_int(logprobs) or not 0 <= logprobs <= MAX_LOGPROBS):
            raise ApiError(400, f"logprobs must be an integer 0..{MAX_LOGPROBS}", "logprobs")
        out["logprobs"] = logprobs
    model = req.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", "model")
    max_tokens = req.get("max_tokens")
    if max_tokens is None and kind == "chat":
        max_tokens = req.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = 16
    low = 0 if out.get("echo") else 1  # echo with max_tokens 0: score the prompt only
    if not _is_int(max_tokens) or not low <= max_tokens <= MAX_TOKENS:
        raise ApiError(400, f"max_tokens must be an integer {low}..{MAX_TOKENS}", "max_tokens")
    out["max_tokens"] = max_tokens
    temperature = req.get("temperature")
    if temperature is None:
        temperature = 0
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not 0 <= temperature <= 2:
        raise ApiError(400, "temperature must be a number 0..2", "temperature")
    out["temperature"] = float(temperature)
    n = req.get("n")
    if n is not None and n != 1 or isinstance(n, bool):
        raise ApiError(400, "n must be 1: this endpoint returns one choice", "n")
    stop = req.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOP or \
            not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"stop must be a non-empty string or a list of up to {MAX_STOP}",
                       "stop")
    out["stop"] = stop
    seed = req.get("seed")
    if seed is not None and not _is_int(seed):
        raise ApiError(400, "seed must be an integer", "seed")
    out["seed"] = seed
    stream = req.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "stream must be a boolean", "stream")
    out["stream"] = bool(stream)
    opts = req.get("stream_options")
    if opts is not None:
        if not out["stream"]:
            raise ApiError(400, "stream_options is only allowed with stream: true",
                           "stream_options")
        if not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool):
            raise ApiError(400, "stream_options must be {\"include_usage\": true|false}",
                           "stream_options")
    out["include_usage"] = bool((opts or {}).get("include_usage", False))
    if kind != "chat":
        out["scored"] = out["echo"] or out["logprobs"] is not None or len(out["prompts"]) > 1
        if out["stream"] and out["scored"]:
            raise ApiError(400, "echo, logprobs and a list of prompts are not supported with "
                           "stream: true", "stream")
    return out


def chat_prompt(messages, tok=None):
    """The prompt of a chat: the tokenizer's chat template (with the generation prompt)
    when it has one; else ours, one block per message and an open assistant block:
        ### System:\\n<content>\\n### User:\\n<content>\\n### Assistant:\\n"""
    if tok is not None and getattr(tok, "chat_template", None):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    blocks = [f"### {m['role'].capitalize()}:\n{m['content']}\n" for m in messages]
    return "".join(blocks) + "### Assistant:\n"


class StopScanner:
    """Cuts a text stream at the first stop string, holding back a tail that could be the
    start of one, so that nothing past a stop is ever sent."""

    def __init__(self, stops):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.buf = ""
        self.stopped = False

    def feed(self, piece):
        """-> the text safe to send now; sets .stopped once a stop string was seen."""
        if self.stopped:
            return ""
        self.buf += piece
        cut = min((i for i in (self.buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buf, self.stopped = self.buf[:cut], "", True
            return out
        keep = len(self.buf)
        for n in range(min(self.hold, len(self.buf)), 0, -1):  # a stop string's start
            if any(s.startswith(self.buf[-n:]) for s in self.stops):
                keep -= n
                break
        out, self.buf = self.buf[:keep], self.buf[keep:]
        return out

    def flush(self):
        out, self.buf = self.buf, ""
        return out


# ---- the models ---------------------------------------------------------------------------

class Generator:
    """Greedy or sampled continuation from the interpolated bigram model, word by word."""

    def __init__(self, model):
        self.model = model
        ranked = sorted(model.unigram.items(), key=lambda kv: (-kv[1], kv[0]))
        self.common = [w for w, _ in ranked if w not in (UNK,)][:200]

    def words(self, prompt_tokens, max_tokens, temperature, rng, stats):
        prev = self.model.map(prompt_tokens[-1:])[0] if prompt_tokens else "<s>"
        stats["finish_reason"] = "length"
        for _ in range(max_tokens):
            cands = set(self.model.bigram.get(prev, {}).keys()) | set(self.common[:50])
            cands.discard(UNK)
            scored = sorted((self.model.logprob(prev, w), w) for w in cands)
            if not scored:
                stats["finish_reason"] = "stop"
                return
            if temperature <= 0:
                word = scored[-1][1]
            else:
                top = scored[-40:]
                weights = [math.exp((lp - top[-1][0]) / temperature) for lp, _ in top]
                word = rng.choices([w for _, w in top], weights)[0]
            if word == EOS:
                stats["finish_reason"] = "stop"
                return
            stats["completion_tokens"] += 1
            yield word
            prev = word

    def complete(self, prompt_tokens, max_tokens, temperature, rng):
        stats = {"completion_tokens": 0}
        out = list(self.words(prompt_tokens, max_tokens, temperature, rng, stats))
        return out, stats["finish_reason"]


class TextGenerator:
    """stream(prompt, ...) yields pieces of text and fills stats {prompt_tokens,
    completion_tokens, finish_reason}, for either model kind; stop() (another thread, or
    the consumer) ends a generation early."""

    def __init__(self, bigram=None, hf_dir=None):
        self.bigram = Generator(bigram) if bigram is not None else None
        self.tok = None
        if hf_dir is not None:
            import _hf

            _hf.require_ml()
            self.device, dtype = _hf.device_and_dtype()
            self.model, self.tok, _meta = _hf.load_for_inference(hf_dir, self.device, dtype)

    def prompt_of(self, messages):
        return chat_prompt(messages, self.tok)

    def chat(self, messages, max_tokens, temperature, seed):
        """complete() of a chat's prompt (_providers.LocalChat: a model on the worker)."""
        return self.complete(self.prompt_of(messages), max_tokens, temperature, seed)

    def stream(self, prompt, max_tokens, temperature, seed, stats, cancel):
        stats.update(prompt_tokens=0, completion_tokens=0, finish_reason="length")
        if self.bigram is not None:
            toks = tokenize(prompt)
            stats["prompt_tokens"] = len(toks)
            first = True
            for word in self.bigram.words(toks, max_tokens, temperature, random.Random(seed),
                                          stats):
                if cancel.is_set():
                    return
                yield word if first else " " + word
                first = False
            return
        yield from self._hf_stream(prompt, max_tokens, temperature, seed, stats, cancel)

    def _hf_stream(self, prompt, max_tokens, temperature, seed, stats, cancel):
        import torch
        import transformers

        ids = self.tok.encode(prompt, add_special_tokens=False)
        if self.tok.bos_token_id is not None and (not ids or ids[0] != self.tok.bos_token_id):
            ids = [self.tok.bos_token_id] + ids
        stats["prompt_tokens"] = len(ids)
        x = torch.tensor([ids], device=self.device)
        kw = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(seed if isinstance(seed, int) else random.getrandbits(32))
            kw = {"do_sample": True, "temperature": float(temperature), "top_k": 50}

        class Cancelled(transformers.StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        streamer = transformers.TextIteratorStreamer(self.tok, skip_prompt=True,
                                                     skip_special_tokens=True, timeout=300)
        done = {}

        def run():
            try:
                with torch.no_grad():
                    done["out"] = self.model.generate(
                        input_ids=x, attention_mask=torch.ones_like(x),
                        max_new_tokens=max_tokens, pad_token_id=self.tok.pad_token_id,
                        eos_token_id=self.tok.eos_token_id, streamer=streamer,
                        stopping_criteria=transformers.StoppingCriteriaList([Cancelled()]),
                        **kw)
            except Exception as exc:  # noqa: BLE001  (reported by the consumer)
                done["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        finished = False
        try:
            for piece in streamer:
                if piece:
                    yield piece
            finished = True
        finally:
            if not finished:  # the consumer stopped early (a stop string, a client gone)
                cancel.set()
            worker.join()
        if "error" in done:
            raise done["error"]
        new = done["out"][0, len(ids):].tolist()
        stats["completion_tokens"] = len(new)
        stats["finish_reason"] = "stop" if new and new[-1] == self.tok.eos_token_id \
            else "length"

    def score(self, prompt, completion, top, echo):
        """OpenAI's logprobs object of prompt + completion (the prompt's part only with
        echo), and the prompt's token count: one forward pass, no grad."""
        import torch

        if self.tok is None:
            raise ApiError(400, "echo and logprobs need a PyTorch model (this endpoint serves "
                           "a bigram model)", "logprobs")
        ids = self.tok.encode(prompt, add_special_tokens=False)
        bos = self.tok.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        n_prompt = len(ids)
        if completion:
            ids = ids + self.tok.encode(completion, add_special_tokens=False)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(ids) > limit:
            raise ApiError(400, f"the prompt and completion take {len(ids)} tokens; this "
                           f"model reads at most {limit}", "prompt")
        with torch.no_grad():
            x = torch.tensor([ids], device=self.device)
            logits = self.model(input_ids=x).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
        start = 0 if echo else n_prompt
        tokens, lps, tops, offsets = [], [], [], []
        at = 0
        for j in range(len(ids)):
            piece = self.tok.decode([ids[j]])
            special = j == 0 and bos is not None and ids[0] == bos
            if j >= start:
                tokens.append(piece)
                offsets.append(at)
                if j == 0:
                    lps.append(None)
                    tops.append(None)
                else:
                    row = logp[j - 1]
                    lps.append(float(row[ids[j]]))
                    if top:
                        vals, idx = torch.topk(row, top)
                        tops.append({self.tok.decode([int(i)]): float(v)
                                     for v, i in zip(vals.tolist(), idx.tolist())})
                    else:
                        tops.append({})
            if not special:
                at += len(piece)
        return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops,
                "text_offset": offsets}, n_prompt

    def complete(self, prompt, max_tokens, temperature, seed):
        """(text, finish_reason, prompt tokens, completion tokens): the deploy handler's
        smoke test and the tests."""
        stats = {}
        text = "".join(self.stream(prompt, max_tokens, temperature, seed, stats,
                                   threading.Event()))
        return text, stats["finish_reason"], stats["prompt_tokens"], stats["completion_tokens"]


# ---- HTTP ---------------------------------------------------------------------------------

def _usage(stats):
    return {"prompt_tokens": stats["prompt_tokens"],
            "completion_tokens": stats["completion_tokens"],
            "total_tokens": stats["prompt_tokens"] + stats["completion_tokens"]}


def make_handler(model_id, gen, gate, stopping=None, api_key=None, stand_in=False):
    created = int(time.time())

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "nexa-forge-endpoint/0.2"
        protocol_version = "HTTP/1.1"
        # the head and the body go out in separate writes: with Nagle's algorithm the body
        # would wait for the client's delayed ACK of the head (40 ms on Linux keep-alive)
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):  # one line per request on stderr (the log file)
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

        def send_json(self, status, obj):
            body = json.dumps(obj, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, status, code, message, param=None, kind="invalid_request_error"):
            self.send_json(status, ApiError(status, message, param, code, kind).body())

        def authorized(self):
            """With an API key configured: the request's Bearer token must be it."""
            if api_key is None:
                return True
            got = self.headers.get("Authorization", "")
            if got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(), api_key):
                return True
            self.error(401, "invalid_api_key", "a valid API key is required (Authorization: "
                       "Bearer ...)", kind="authentication_error")
            return False

        def model_entry(self):
            entry = {"id": model_id, "object": "model", "created": created,
                     "owned_by": "nexa-forge"}
            if stand_in:
                entry["stand_in"] = True
            return entry

        def do_GET(self):
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path != "/healthz" and not self.authorized():
                return
            if path == "/healthz":
                self.send_json(200, {"status": "ok", "model_id": model_id, "pid": os.getpid()})
            elif path == "/v1/models":
                self.send_json(200, {"object": "list", "data": [self.model_entry()]})
            elif path.startswith("/v1/models/"):
                if path[len("/v1/models/"):] == model_id:
                    self.send_json(200, self.model_entry())
                else:
                    self.error(404, "model_not_found", "no such model", "model")
            else:
                self.error(404, "not_found", "no such resource")

        def read_body(self):
            """The parsed JSON body, or None once an error was answered."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                self.error(400, "invalid_request", "send the body with a Content-Length")
                return None
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self.error(413, "too_large", f"the body must be at most {MAX_BODY} bytes")
                return None
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw or b"null")
            except (ValueError, UnicodeDecodeError):
                self.error(400, "invalid_json", "the body is not JSON")
                return None

        def do_POST(self):
            path = self.path.split("?", 1)[0].rstrip("/")
            if not self.authorized():
                return
            if path == "/admin/stop":
                if stopping is not None:  # set before the answer: whoever reads it sees it set
                    stopping.set()
                self.send_json(200, {"status": "stopping"})
                return
            kinds = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}
            if path not in kinds:
                self.error(404, "not_found", "no such resource")
                return
            req = self.read_body()
            if req is None:
                return
            try:
                p = parse_request(kinds[path], req)
            except ApiError as exc:
                self.send_json(exc.status, exc.body())
                return
            chat = kinds[path] == "chat"
            prompt = gen.prompt_of(p["messages"]) if chat else p["prompt"]
            with gate:
                if p["stream"]:
                    self.answer_stream(chat, prompt, p)
                elif not chat and p["scored"]:
                    self.answer_scored(p)
                else:
                    self.answer(chat, prompt, p)

        def generate(self, prompt, p, stats, cancel):
            """The pieces of text, cut at a stop string."""
            scan = StopScanner(p["stop"])
            pieces = gen.stream(prompt, p["max_tokens"], p["temperature"], p["seed"], stats,
                                cancel)
            try:
                for piece in pieces:
                    out = scan.feed(piece)
                    if out:
                        yield out
                    if scan.stopped:
                        stats["finish_reason"] = "stop"
                        return
                out = scan.flush()
                if out:
                    yield out
            finally:
                pieces.close()

        def answer(self, chat, prompt, p):
            stats, cancel = {}, threading.Event()
            try:
                text = "".join(self.generate(prompt, p, stats, cancel))
            except Exception as exc:  # noqa: BLE001  (a model failure: answered, the server lives)
                self.error(500, "generation_failed", f"generation failed: {exc}", None,
                           "server_error")
                return
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text},
                          "finish_reason": stats["finish_reason"]}
                obj, pre = "chat.completion", "chatcmpl-"
            else:
                choice = {"text": text, "index": 0, "logprobs": None,
                          "finish_reason": stats["finish_reason"]}
                obj, pre = "text_completion", "cmpl-"
            self.send_json(200, {"id": pre + uuid.uuid4().hex[:24], "object": obj,
                                 "created": int(time.time()), "model": model_id,
                                 "choices": [choice], "usage": _usage(stats)})

        def answer_scored(self, p):
            """Completions with echo, logprobs or several prompts: one choice per prompt."""
            choices, used = [], {"prompt_tokens": 0, "completion_tokens": 0}
            try:
                for i, prompt in enumerate(p["prompts"]):
                    stats, text = {"finish_reason": "length", "completion_tokens": 0}, ""
                    if p["max_tokens"] > 0:
                        text = "".join(self.generate(prompt, p, stats, threading.Event()))
                    lp, n_prompt = None, None
                    if p["logprobs"] is not None:
                        lp, n_prompt = gen.score(prompt, text, p["logprobs"], p["echo"])
                    if n_prompt is None:
                        n_prompt = stats.get("prompt_tokens") or \
                            gen.score(prompt, "", 0, False)[1]
                    used["prompt_tokens"] += n_prompt
                    used["completion_tokens"] += stats["completion_tokens"]
                    choices.append({"text": (prompt if p["echo"] else "") + text, "index": i,
                                    "logprobs": lp, "finish_reason": stats["finish_reason"]})
            except ApiError as exc:
                self.send_json(exc.status, exc.body())
                return
            except Exception as exc:  # noqa: BLE001  (a model failure: answered)
                self.error(500, "generation_failed", f"generation failed: {exc}", None,
                           "server_error")
                return
            self.send_json(200, {"id": "cmpl-" + uuid.uuid4().hex[:24],
                                 "object": "text_completion", "created": int(time.time()),
                                 "model": model_id, "choices": choices, "usage": _usage(used)})

        def write_chunk(self, data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def answer_stream(self, chat, prompt, p):
            cid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
            head = {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": int(time.time()), "model": model_id}

            def event(choices, **extra):
                return b"data: " + json.dumps(dict(head, choices=choices, **extra),
                                              separators=(",", ":")).encode() + b"\n\n"

            def choice(text, reason=None):
                if chat:
                    delta = {"content": text} if text is not None else {}
                    return {"index": 0, "delta": delta, "finish_reason": reason}
                return {"text": text or "", "index": 0, "logprobs": None,
                        "finish_reason": reason}

            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            stats, cancel = {}, threading.Event()
            try:
                if chat:
                    self.write_chunk(event([{"index": 0, "delta": {"role": "assistant",
                                                                   "content": ""},
                                             "finish_reason": None}]))
                try:
                    for piece in self.generate(prompt, p, stats, cancel):
                        self.write_chunk(event([choice(piece)]))
                except (BrokenPipeError, ConnectionResetError):
                    raise
                except Exception as exc:  # noqa: BLE001  (head sent: an error event, the end)
                    err = ApiError(500, f"generation failed: {exc}", None,
                                   "generation_failed", "server_error").body()
                    self.write_chunk(b"data: " + json.dumps(err).encode() + b"\n\n")
                    stats.setdefault("finish_reason", "error")
                self.write_chunk(event([choice(None, stats.get("finish_reason", "stop"))]))
                usage = _usage({"prompt_tokens": stats.get("prompt_tokens", 0),
                                "completion_tokens": stats.get("completion_tokens", 0)})
                if p["include_usage"]:
                    self.write_chunk(event([], usage=usage))
                self.write_chunk(b": usage " + json.dumps(
                    {"prompt_tokens": usage["prompt_tokens"],
                     "completion_tokens": usage["completion_tokens"]}).encode() + b"\n\n")
                self.write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                cancel.set()  # the client left: stop generating
                self.close_connection = True

    return Handler


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--hf-model")
    ap.add_argument("--model-id", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--watch-pid", type=int, default=0)
    ap.add_argument("--watch-start", default="")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--api-key-env", default="")
    ap.add_argument("--stand-in", action="store_true")
    args = ap.parse_args()
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "").encode()
        if not api_key:
            sys.exit(f"--api-key-env: {args.api_key_env} is not set")

    engine = "bigram"
    if args.hf_model:
        import _vllm  # vLLM where the site installed it and the job has a GPU

        gen, engine = _vllm.make_generator(args.hf_model)
    else:
        with open(args.model, encoding="utf-8") as f:
            gen = TextGenerator(bigram=BigramModel.from_json(json.load(f)))
    gate = threading.BoundedSemaphore(max(1, args.replicas))
    stop = threading.Event()
    server = Server(("127.0.0.1", args.port),
                    make_handler(args.model_id, gen, gate, stop, api_key, args.stand_in))
    port = server.server_address[1]

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    write_atomic(os.path.join(args.dir, "endpoint.pid"), f"{os.getpid()}\n")
    write_atomic(os.path.join(args.dir, "endpoint.json"), json.dumps(
        {"pid": os.getpid(), "port": port, "url": f"http://127.0.0.1:{port}/v1",
         "engine": engine}) + "\n")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    sys.stderr.write(f"serving {args.model_id} on 127.0.0.1:{port}\n")
    sys.stderr.flush()
    while not stop.wait(1.0):
        if args.watch_pid and process_start(args.watch_pid) != args.watch_start:
            sys.stderr.write(f"the worker (pid {args.watch_pid}) is gone: stopping\n")
            break
    server.shutdown()
    server.server_close()
    try:
        os.unlink(os.path.join(args.dir, "endpoint.pid"))
    except OSError:
        pass
    sys.stderr.write("stopped\n")


if __name__ == "__main__":
    main()
