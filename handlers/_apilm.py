"""lm-evaluation-harness over an OpenAI-compatible /v1/completions API: evaluate scores a
running deployment (params.model_id or compare_to = "dep-...", which the gateway resolved
to the deployment's worker-local base_url in job["models"]).

Why our own small LM rather than lm_eval's `local-completions`: that one sends token ids
and needs the model's tokenizer on this side (the deployment's files are on its worker),
and splits context from continuation by its own tokenizer. Here every split follows
lm_eval's HFLM exactly, with the server's tokenizer:

  loglikelihood(context, continuation): the context's trailing whitespace moves into the
    continuation (as HFLM does); the server scores both the context and context +
    continuation with echo, max_tokens 0, logprobs 1 (several prompts per request; each
    context once); the continuation's tokens are those after the context's token count,
    so the score is the sum of their log-probabilities, greedy when each was the top one -
    the same numbers HFLM computes for the model in this process.
  loglikelihood_rolling(text): the echoed log-probabilities of the whole text after <s>.
  generate_until(context, {until, max_gen_toks}): a greedy completion, cut at the first
    stop string.

Tokens the deployment processes for the evaluation are counted from each answer's usage
(in_tokens, out_tokens): they are the evaluation job's usage, billed on that job; these
calls go to the worker-local endpoint directly, not through the gateway, so the
deployment's own request metering does not count them a second time.
"""
from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request

BATCH = 32  # prompts per request (the server's limit is 64)
TIMEOUT_S = 300
MAX_GEN = 256  # the server's max_tokens


class ApiFailure(Exception):
    pass


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace")
        raise ApiFailure(f"{url} answered {exc.code}: {detail}") from exc
    except (OSError, ValueError) as exc:
        raise ApiFailure(f"{url}: {exc}") from exc


@functools.cache
def deployment_lm_class():
    """The lm_eval LM subclass, built on first use (importing this module does not import
    lm_eval)."""
    from lm_eval.api.model import LM

    class DeploymentLM(LM):
        def __init__(self, base_url: str, model: str):
            super().__init__()
            self.url = base_url.rstrip("/") + "/completions"
            self.model = model
            self.in_tokens = 0
            self.out_tokens = 0

        def _complete(self, body: dict) -> dict:
            out = post(self.url, dict(body, model=self.model))
            usage = out.get("usage") or {}
            self.in_tokens += int(usage.get("prompt_tokens") or 0)
            self.out_tokens += int(usage.get("completion_tokens") or 0)
            return out

        def _echo(self, prompts: list[str]) -> dict:
            """{prompt: its logprobs object}, BATCH prompts per request."""
            out, todo = {}, list(dict.fromkeys(prompts))
            for i in range(0, len(todo), BATCH):
                chunk = todo[i:i + BATCH]
                ans = self._complete({"prompt": chunk, "max_tokens": 0, "echo": True,
                                      "logprobs": 1, "temperature": 0})
                for c in ans["choices"]:
                    out[chunk[c["index"]]] = c["logprobs"]
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            pairs = []
            for req in requests:
                context, continuation = req.args
                n = len(context) - len(context.rstrip())
                if n:
                    context, continuation = context[:-n], context[-n:] + continuation
                pairs.append((context, continuation))
            scored = self._echo([p for c, x in pairs for p in (c, c + x)])
            res = []
            for context, continuation in pairs:
                n_ctx = len(scored[context]["tokens"])
                whole = scored[context + continuation]
                lps = whole["token_logprobs"][n_ctx:]
                tops = whole["top_logprobs"][n_ctx:]
                greedy = all(lp >= max(top.values()) - 1e-6 for lp, top in zip(lps, tops)
                             if top)
                res.append((float(sum(lps)), bool(greedy)))
            return res

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            texts = [req.args[0] for req in requests]
            scored = self._echo(texts)
            return [float(sum(lp for lp in scored[t]["token_logprobs"][1:])) for t in texts]

        def generate_until(self, requests, disable_tqdm: bool = False):
            res = []
            for req in requests:
                context, kw = req.args[0], dict(req.args[1] or {})
                until = kw.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_gen = min(int(kw.get("max_gen_toks") or MAX_GEN), MAX_GEN)
                body = {"prompt": context, "max_tokens": max_gen, "temperature": 0}
                if until:
                    body["stop"] = [u for u in until if u][:4]
                text = self._complete(body)["choices"][0]["text"]
                for u in until:
                    if u and u in text:
                        text = text[:text.index(u)]
                res.append(text)
            return res

    return DeploymentLM
