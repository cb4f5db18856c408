"""The local inference endpoint the reference `deploy` handler starts.

    python3 _serve.py --model MODEL.json --model-id ID --dir DIR --replicas N
                      [--watch-pid PID --watch-start TICKS]
    python3 _serve.py --hf-model MODEL_DIR ...   (a PyTorch model: _hf.py)

Binds 127.0.0.1 on a free port and writes DIR/endpoint.json ({"pid", "port", "url"})
once it accepts connections, and DIR/endpoint.pid. It runs in its own session (the
deploy handler starts it detached, so the job can finish while it serves) and exits:
  - on SIGTERM or SIGINT (`kill $(cat DIR/endpoint.pid)`), or
  - within a second of the watched process (the nf-worker agent that ran the deploy job)
    going away, so stopping the worker (`./forge down`, a test's teardown) stops every
    endpoint it deployed.

API (JSON):
  GET  /healthz         {"status": "ok", "model_id"}
  GET  /v1/models       {"data": [{"id", "object": "model"}]}
  POST /v1/completions  {"prompt", "max_tokens" (1..256, default 16), "temperature"
                        (0 = greedy, default 0), "seed"} ->
                        {"id", "object": "text_completion", "model", "choices": [{"text",
                        "index", "finish_reason"}], "usage": {"prompt_tokens",
                        "completion_tokens", "total_tokens"}}
At most `replicas` requests are served at once (the replica count is the endpoint's
concurrency); more wait their turn.

Python standard library only for a bigram model.json; --hf-model serves a Hugging Face
model directory (a stand-in base, or train's unpacked model.tar: merged, or an adapter on
its base) with transformers' generate, tokens counted by its tokenizer.
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import http.server  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socketserver  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402

from _lm import BigramModel, EOS, UNK, tokenize  # noqa: E402

MAX_BODY = 64 * 1024
MAX_TOKENS = 256


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


class Generator:
    """Greedy or sampled continuation from the interpolated bigram model."""

    def __init__(self, model):
        self.model = model
        ranked = sorted(model.unigram.items(), key=lambda kv: (-kv[1], kv[0]))
        self.common = [w for w, _ in ranked if w not in (UNK,)][:200]

    def complete(self, prompt_tokens, max_tokens, temperature, rng):
        prev = self.model.map(prompt_tokens[-1:])[0] if prompt_tokens else "<s>"
        out, reason = [], "length"
        for _ in range(max_tokens):
            cands = set(self.model.bigram.get(prev, {}).keys()) | set(self.common[:50])
            cands.discard(UNK)
            scored = sorted((self.model.logprob(prev, w), w) for w in cands)
            if not scored:
                reason = "stop"
                break
            if temperature <= 0:
                word = scored[-1][1]
            else:
                top = scored[-40:]
                weights = [math.exp((lp - top[-1][0]) / temperature) for lp, _ in top]
                word = rng.choices([w for _, w in top], weights)[0]
            if word == EOS:
                reason = "stop"
                break
            out.append(word)
            prev = word
        return out, reason


class TextGenerator:
    """complete(prompt text, ...) -> (text, finish_reason, prompt tokens, completion
    tokens), for either model kind."""

    def __init__(self, bigram=None, hf_dir=None):
        self.bigram = Generator(bigram) if bigram is not None else None
        if hf_dir is not None:
            import _hf

            _hf.require_ml()
            self.device, dtype = _hf.device_and_dtype()
            self.model, self.tok, _meta = _hf.load_for_inference(hf_dir, self.device, dtype)

    def complete(self, prompt, max_tokens, temperature, seed):
        if self.bigram is not None:
            toks = tokenize(prompt)
            words, reason = self.bigram.complete(toks, max_tokens, temperature,
                                                 random.Random(seed))
            return " ".join(words), reason, len(toks), len(words)
        import torch

        ids = [self.tok.bos_token_id] + self.tok.encode(prompt, add_special_tokens=False)
        x = torch.tensor([ids], device=self.device)
        kw = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(seed if isinstance(seed, int) else random.getrandbits(32))
            kw = {"do_sample": True, "temperature": float(temperature), "top_k": 50}
        with torch.no_grad():
            out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                      max_new_tokens=max_tokens,
                                      pad_token_id=self.tok.pad_token_id,
                                      eos_token_id=self.tok.eos_token_id, **kw)
        new = out[0, len(ids):].tolist()
        reason = "stop" if new and new[-1] == self.tok.eos_token_id else "length"
        return self.tok.decode(new, skip_special_tokens=True), reason, len(ids), len(new)


def make_handler(model_id, gen, gate):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "nexa-forge-endpoint/0.1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request on stderr (the log file)
            sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

        def send_json(self, status, obj):
            body = json.dumps(obj, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, status, code, message):
            self.send_json(status, {"error": {"code": code, "message": message}})

        def do_GET(self):
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path == "/healthz":
                self.send_json(200, {"status": "ok", "model_id": model_id})
            elif path == "/v1/models":
                self.send_json(200, {"data": [{"id": model_id, "object": "model"}]})
            else:
                self.error(404, "not_found", "no such resource")

        def do_POST(self):
            path = self.path.split("?", 1)[0].rstrip("/")
            if path != "/v1/completions":
                self.error(404, "not_found", "no such resource")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.error(413, "too_large", f"body must be at most {MAX_BODY} bytes")
                return
            try:
                req = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self.error(400, "invalid_json", "body is not JSON")
                return
            if not isinstance(req, dict) or not isinstance(req.get("prompt"), str):
                self.error(422, "invalid_params", "prompt must be a string")
                return
            max_tokens = req.get("max_tokens", 16)
            temperature = req.get("temperature", 0)
            seed = req.get("seed")
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or \
                    not 1 <= max_tokens <= MAX_TOKENS:
                self.error(422, "invalid_params", f"max_tokens must be 1..{MAX_TOKENS}")
                return
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
                    not 0 <= temperature <= 5:
                self.error(422, "invalid_params", "temperature must be 0..5")
                return
            with gate:
                text, reason, n_in, n_out = gen.complete(req["prompt"], max_tokens,
                                                         float(temperature), seed)
            self.send_json(200, {
                "id": "cmpl-" + uuid.uuid4().hex[:24], "object": "text_completion",
                "model": model_id,
                "choices": [{"text": text, "index": 0, "finish_reason": reason}],
                "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                          "total_tokens": n_in + n_out}})

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
    args = ap.parse_args()

    if args.hf_model:
        gen = TextGenerator(hf_dir=args.hf_model)
    else:
        with open(args.model, encoding="utf-8") as f:
            gen = TextGenerator(bigram=BigramModel.from_json(json.load(f)))
    gate = threading.BoundedSemaphore(max(1, args.replicas))
    server = Server(("127.0.0.1", 0), make_handler(args.model_id, gen, gate))
    port = server.server_address[1]
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    write_atomic(os.path.join(args.dir, "endpoint.pid"), f"{os.getpid()}\n")
    write_atomic(os.path.join(args.dir, "endpoint.json"), json.dumps(
        {"pid": os.getpid(), "port": port, "url": f"http://127.0.0.1:{port}/v1"}) + "\n")
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
