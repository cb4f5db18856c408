"""Models that generate and distill call: operator-configured OpenAI-compatible providers,
the account's deployments, and models run on the worker itself (DESIGN §15).

    resolve(job, "teacher_model") -> a ChatModel (.chat(messages) -> Answer) for:
      job["models"][param] of kind     a deployment of the caller (the gateway resolved
      "deployment"                     dep-... to its worker-local base_url): called
                                       directly, no key
      a catalogue model whose source   that provider of NF_PROVIDERS_FILE (gpt-4 ->
      is provider:<name>/<model>       provider:openai/gpt-4), or a bare name some
                                       configured provider offers
      a stand-in name (llama-3-8b,     run here with transformers (_serve.TextGenerator,
      mistral-7b) or the account's     the deploy endpoint's generation code)
      model (inputs[param]: model.tar)

Operator config (deploy/providers.json; its path in NF_PROVIDERS_FILE, passed to handlers
by the agent with the key variables it names):
    {"providers": {"openai": {"base_url": "https://api.openai.com/v1",
        "api_key_env": "NF_PROVIDER_KEY_OPENAI", "models": {"gpt-4": {"input_per_1m_usd":
        30, "output_per_1m_usd": 60}}, "concurrency": 8, "requests_per_minute": 500,
        "stand_in": false, "retry_budget_s": 120, "max_retries": 8, "timeout_s": 120}}}
The key is read from the variable named by api_key_env and goes only into the
Authorization header: it is never printed, logged, or put in a result, artifact or error
(every text that comes back from a provider is scrubbed of it before it is shown).

Calls: up to `concurrency` at once (threads), at most `requests_per_minute` started per
minute; 429, 5xx and transport errors are retried with exponential backoff (0.5 s doubling,
at most 30 s, Retry-After honoured up to 60 s) while the provider's retry budget (the
seconds without any answer since the first failure, all calls together) lasts, and each call
at most max_retries times; after that ProviderOutage: the
handler exits 75 (class infra: the platform retries the attempt; never the user's fault).
401/403/404 from a provider are the operator's configuration: ProviderOutage too. Other
4xx answers refuse one request: that call raises Refused, and the caller drops its row.
Tokens come from the answers' `usage` (counted here by whitespace when a server sends none)
and are metered as usage lines on the job; cost = tokens x the config's prices.

Python standard library only (urllib, threading); torch only for a local model.
"""
from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import _forge as forge

DEFAULT_CONCURRENCY = 4
DEFAULT_RETRY_BUDGET_S = 120.0
DEFAULT_MAX_RETRIES = 8
DEFAULT_TIMEOUT_S = 120.0
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 60.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class ProviderOutage(Exception):
    """The provider cannot answer now (retries exhausted, or misconfigured): exit 75."""


class Refused(Exception):
    """The provider refused this one request (a 4xx other than 401/403/404/429)."""


@dataclass
class Answer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Provider:
    name: str
    base_url: str
    api_key_env: str | None
    models: dict
    concurrency: int = DEFAULT_CONCURRENCY
    requests_per_minute: int = 0
    stand_in: bool = False
    retry_budget_s: float = DEFAULT_RETRY_BUDGET_S
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout_s: float = DEFAULT_TIMEOUT_S


def providers_file() -> str | None:
    return os.environ.get("NF_PROVIDERS_FILE") or None


def load_providers(path: str | None = None) -> dict[str, Provider]:
    """The operator's providers; {} when no file is configured. A file that cannot be read
    or is malformed is this worker's fault: exit 75."""
    path = path or providers_file()
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        out = {}
        for name, p in (doc.get("providers") or {}).items():
            if not isinstance(p, dict) or not isinstance(p.get("base_url"), str):
                raise ValueError(f"provider {name}: base_url must be a string")
            models = p.get("models") or {}
            if not isinstance(models, dict):
                raise ValueError(f"provider {name}: models must be an object")
            out[name] = Provider(
                name=name, base_url=p["base_url"].rstrip("/"),
                api_key_env=p.get("api_key_env") or None, models=models,
                concurrency=max(1, int(p.get("concurrency") or DEFAULT_CONCURRENCY)),
                requests_per_minute=max(0, int(p.get("requests_per_minute") or 0)),
                stand_in=bool(p.get("stand_in", False)),
                retry_budget_s=float(p.get("retry_budget_s", DEFAULT_RETRY_BUDGET_S)),
                max_retries=int(p.get("max_retries", DEFAULT_MAX_RETRIES)),
                timeout_s=float(p.get("timeout_s", DEFAULT_TIMEOUT_S)))
        return out
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        forge.fail(f"NF_PROVIDERS_FILE: the providers configuration cannot be used: {exc}",
                   forge.EXIT_RETRYABLE)


# ---- calling a model ------------------------------------------------------------------


@dataclass
class Meter:
    """Calls and tokens of one model, the cost at its prices; thread-safe."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0
    calls: int = 0
    retries: int = 0
    refused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unreported_in: int = 0
    unreported_out: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, a: Answer) -> None:
        with self.lock:
            self.calls += 1
            self.prompt_tokens += a.prompt_tokens
            self.completion_tokens += a.completion_tokens
            self.unreported_in += a.prompt_tokens
            self.unreported_out += a.completion_tokens

    def flush(self) -> None:
        """Emits the tokens not metered yet as one usage line."""
        with self.lock:
            n_in, n_out = self.unreported_in, self.unreported_out
            self.unreported_in = self.unreported_out = 0
        forge.usage(input_tokens=n_in, output_tokens=n_out)

    @property
    def cost_usd(self) -> float:
        return round(self.prompt_tokens * self.input_per_1m / 1e6
                     + self.completion_tokens * self.output_per_1m / 1e6, 6)


class ChatModel:
    """A model answering chat messages. Subclasses implement _chat."""

    kind = "model"
    label = "model"
    stand_in = False
    concurrency = 1

    def __init__(self):
        self.meter = Meter()

    def chat(self, messages: list[dict], max_tokens: int = 128, temperature: float = 0.0,
             seed: int | None = None) -> Answer:
        a = self._chat(messages, max_tokens, temperature, seed)
        self.meter.add(a)
        return a

    def _chat(self, messages, max_tokens, temperature, seed) -> Answer:
        raise NotImplementedError

    def map(self, jobs: list, fn, on_done=None) -> list:
        """fn(job) for every job, up to self.concurrency at once; results in order.
        on_done(index, result) runs as each finishes (from the worker threads). The first
        ProviderOutage stops the rest and is raised."""
        results = [None] * len(jobs)
        if not jobs:
            return results
        stop = threading.Event()

        def one(i):
            if stop.is_set():
                return
            try:
                results[i] = fn(jobs[i])
            except ProviderOutage:
                stop.set()
                raise
            if on_done is not None:
                on_done(i, results[i])

        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(jobs)))) as pool:
            futures = [pool.submit(one, i) for i in range(len(jobs))]
            error = None
            for fut in futures:
                try:
                    fut.result()
                except ProviderOutage as exc:
                    error = error or exc
            if error is not None:
                raise error
        return results

    def describe(self) -> dict:
        return {"model": self.label, "kind": self.kind, "stand_in": self.stand_in}

    def close(self) -> None:
        pass


class RemoteChat(ChatModel):
    """An OpenAI-compatible /v1/chat/completions endpoint (a provider or a deployment)."""

    kind = "provider"

    def __init__(self, base_url: str, model: str, label: str, key: str | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY, requests_per_minute: int = 0,
                 retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
                 max_retries: int = DEFAULT_MAX_RETRIES, timeout_s: float = DEFAULT_TIMEOUT_S,
                 prices: dict | None = None, stand_in: bool = False, kind: str = "provider"):
        super().__init__()
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.label = label
        self.kind = kind
        self._key = key
        self.concurrency = max(1, concurrency)
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.retry_budget_s = retry_budget_s
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.stand_in = stand_in
        prices = prices or {}
        self.meter.input_per_1m = float(prices.get("input_per_1m_usd") or 0)
        self.meter.output_per_1m = float(prices.get("output_per_1m_usd") or 0)
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._failing_since = None  # monotonic time of the first failure since an answer

    def scrub(self, text: str) -> str:
        """text with the key (if a provider echoed it) replaced: safe to show."""
        text = str(text)
        if self._key:
            text = text.replace(self._key, "***")
        return text[:300]

    def _pace(self) -> None:
        """Waits for this request's start slot under requests_per_minute."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.interval
        if start > now:
            time.sleep(start - now)

    def _spend(self, delay: float, why: str) -> None:
        """Sleeps delay before a retry, unless the provider would then have gone without a
        single answer for longer than the retry budget: ProviderOutage."""
        with self._lock:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            failing = now - self._failing_since
            if failing + delay > self.retry_budget_s:
                raise ProviderOutage(f"{self.label} is unavailable: {why}; gave up after "
                                     f"{failing:.0f}s without an answer (retry budget "
                                     f"{self.retry_budget_s:.0f}s)")
            self.meter.retries += 1
        time.sleep(delay)

    def _answered(self) -> None:
        with self._lock:
            self._failing_since = None

    def _chat(self, messages, max_tokens, temperature, seed) -> Answer:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "nexa-forge-handlers/1"}
        if self._key:
            headers["Authorization"] = "Bearer " + self._key
        attempt = 0
        while True:
            self._pace()
            retry_after = None
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers,
                                             method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read(MAX_ANSWER_BYTES + 1)
                answer = self._parse(raw, messages)
                self._answered()
                return answer
            except urllib.error.HTTPError as exc:
                status = exc.code
                detail = self._error_text(exc)
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
                if status in (401, 403, 404):
                    raise ProviderOutage(f"{self.label} answered {status} ({detail}): check "
                                         "the provider's configuration (key, base_url, "
                                         "model)") from None
                if status != 429 and status < 500:
                    with self._lock:
                        self.meter.refused += 1
                    raise Refused(f"{self.label} refused the request: {status} "
                                  f"{detail}") from None
                why = f"{status} {detail}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                # transport errors, timeouts, a reset, an answer that is not JSON
                why = self.scrub(getattr(exc, "reason", None) or exc)
            attempt += 1
            if attempt > self.max_retries:
                raise ProviderOutage(f"{self.label} is unavailable: {why} (after "
                                     f"{self.max_retries} retries)")
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
            delay *= 0.8 + 0.4 * random.random()
            if retry_after is not None:
                delay = max(delay, min(RETRY_AFTER_MAX_S, retry_after))
            self._spend(delay, why)

    def _error_text(self, exc) -> str:
        try:
            raw = exc.read(4096)
            doc = json.loads(raw)
            msg = (doc.get("error") or {}).get("message") if isinstance(doc, dict) else None
            text = msg if isinstance(msg, str) else raw.decode(errors="replace")
        except (ValueError, OSError, AttributeError):
            text = str(exc.reason)
        return self.scrub(text.strip().replace("\n", " "))

    def _parse(self, raw: bytes, messages) -> Answer:
        if len(raw) > MAX_ANSWER_BYTES:
            raise ValueError("the answer is too large")
        doc = json.loads(raw)
        choice = doc["choices"][0]
        msg = choice.get("message") or {}
        text = msg.get("content")
        if text is None:
            text = choice.get("text") or ""
        if not isinstance(text, str):
            raise ValueError("the answer's content is not text")
        usage = doc.get("usage") or {}
        p = usage.get("prompt_tokens")
        c = usage.get("completion_tokens")
        if not isinstance(p, int):
            p = sum(len(m.get("content", "").split()) for m in messages)
        if not isinstance(c, int):
            c = len(text.split())
        return Answer(text, str(choice.get("finish_reason") or "stop"), p, c)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date; None when absent or unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class LocalChat(ChatModel):
    """A model run on this worker with the deploy endpoint's generation code
    (_serve.TextGenerator): a stand-in base, the account's model.tar, or a bigram
    model.json. One call at a time."""

    kind = "local"

    def __init__(self, label: str, hf_dir: str | None = None, bigram=None,
                 stand_in: bool = False):
        super().__init__()
        from _serve import TextGenerator

        if hf_dir is not None:
            import torch

            if not torch.cuda.is_available():
                # Token-by-token generation of a small model is latency bound: on a shared
                # CPU one thread beats many (measured: 1-2 s against 23 s for 128 tokens
                # on a loaded 2-core machine). NEXA_GENERATE_THREADS overrides.
                torch.set_num_threads(int(os.environ.get("NEXA_GENERATE_THREADS", "1")))
        self.label = label
        self.stand_in = stand_in
        self.hf_dir = hf_dir
        self.gen = TextGenerator(bigram=bigram, hf_dir=hf_dir)
        self._lock = threading.Lock()

    def _chat(self, messages, max_tokens, temperature, seed) -> Answer:
        with self._lock:
            text, reason, n_in, n_out = self.gen.chat(messages, max_tokens, temperature, seed)
        return Answer(text, reason, n_in, n_out)


# ---- resolving a model parameter -------------------------------------------------------


def provider_model(job: dict, param: str, name: str,
                   providers: dict[str, Provider]) -> tuple[Provider, str] | None:
    """(provider, model) for a name the catalogue maps to provider:<p>/<model>, or that a
    configured provider offers; None otherwise. A catalogue provider that is not
    configured here is this worker's fault: exit 75."""
    models = job.get("models") if isinstance(job.get("models"), dict) else {}
    entry = models.get(param) if isinstance(models.get(param), dict) else {}
    source = entry.get("source") if isinstance(entry.get("source"), str) else ""
    if source.startswith("provider:"):
        pname, _, model = source[len("provider:"):].partition("/")
        if pname not in providers:
            forge.fail(f"params.{param}: {name} is served by provider {pname!r}, which this "
                       "worker has no configuration for (NF_PROVIDERS_FILE)",
                       forge.EXIT_RETRYABLE)
        return providers[pname], model or name
    for p in providers.values():
        if name in p.models:
            return p, name
    return None


def resolve(job: dict, param: str, allow_template: bool = False) -> ChatModel | None:
    """The ChatModel params.<param> names (see the module doc); None for "template" when
    allow_template. Exits 2 naming the parameter for a name nothing serves."""
    name = job["params"].get(param)
    models = job.get("models") if isinstance(job.get("models"), dict) else {}
    dep = models.get(param)
    if not (isinstance(dep, dict) and dep.get("kind") == "deployment"):
        dep = None
    if isinstance(dep, dict) and isinstance(dep.get("base_url"), str):
        return RemoteChat(dep["base_url"], dep.get("model") or str(name),
                          label=f"deployment {dep.get('id') or name}", kind="deployment")
    if allow_template and name == "template":
        return None
    providers = load_providers()
    found = provider_model(job, param, name, providers) if isinstance(name, str) else None
    if found is not None:
        p, model = found
        key = None
        if p.api_key_env:
            key = os.environ.get(p.api_key_env)
            if not key:
                forge.fail(f"params.{param}: provider {p.name} has no API key on this worker "
                           f"({p.api_key_env} is not set)", forge.EXIT_RETRYABLE)
        return RemoteChat(p.base_url, model, label=f"{p.name}/{model}", key=key,
                          concurrency=p.concurrency, requests_per_minute=p.requests_per_minute,
                          retry_budget_s=p.retry_budget_s, max_retries=p.max_retries,
                          timeout_s=p.timeout_s, prices=p.models.get(model) or {},
                          stand_in=p.stand_in)
    return local_model(job, param, name)


def local_model(job: dict, param: str, name) -> ChatModel:
    """A base model with weights on this worker (a stand-in by name, or one the worker
    fetched from the store), or the account's model (inputs[param]: model.tar or a bigram
    model.json), run on this worker."""
    import _hf

    fetched = _hf.base_entry(job, param).get("local_dir")  # from the store, by the worker
    if isinstance(fetched, str) or _hf.is_stand_in(name):
        _hf.require_ml()
        hf_dir = _hf.base_dir_of(job, param)[0] if isinstance(fetched, str) else \
            _hf.stand_in_dir(name)
        return LocalChat(name, hf_dir=hf_dir,
                         stand_in=bool(_hf.base_meta(job, param, hf_dir).get("stand_in")))
    path = local_input(job, param)
    if path is None:
        forge.fail(f"params.{param}: unknown model {name!r}: not a provider's model, a "
                   "deployment, a catalogue model or one of your models")
    import tarfile

    if tarfile.is_tarfile(path):
        _hf.require_ml()
        mdir = _hf.unpack_model(path, param)
        with open(os.path.join(mdir, "nexa.json"), encoding="utf-8") as f:
            meta = json.load(f)
        return LocalChat(str(name), hf_dir=mdir, stand_in=bool(meta.get("stand_in")))
    from _lm import BigramModel

    try:
        with open(path, encoding="utf-8") as f:
            bigram = BigramModel.from_json(json.load(f))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        forge.fail(f"params.{param}: {name} is not a model written by train: {exc}")
    return LocalChat(str(name), bigram=bigram)


def local_input(job: dict, param: str) -> str | None:
    """The fetched file of a model param: an artifact:// URI, or an account model's name
    the gateway resolved to its artifact (inputs[param]); None when there is none."""
    value = job["params"].get(param)
    if forge.is_uri(value):
        return forge.input_path(job, param, value)
    inputs = job.get("inputs") if isinstance(job.get("inputs"), dict) else {}
    if param in inputs:
        return forge.input_path(job, param, str(value))
    return None


def outage_exit(exc: ProviderOutage) -> None:
    """Ends the handler for a provider outage: exit 75, class infra (retried)."""
    forge.fail(str(exc), forge.EXIT_RETRYABLE)
