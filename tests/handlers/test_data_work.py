"""generate and distill with models (issue 21): a provider configured in NF_PROVIDERS_FILE
is a tiny OpenAI-compatible server run by the test (it checks the key, counts requests,
and can answer 503 for a while or for good); a local stand-in teacher runs with
transformers. The provider key never shows in any output or artifact."""
import hashlib
import http.server
import json
import os
import pathlib
import random
import sys
import threading

import pytest
from handlers_kit import HANDLERS, run_handler, write_jsonl

sys.path.insert(0, str(HANDLERS))
import _corpus  # noqa: E402
import _rows  # noqa: E402

KEY = "sk-test-" + hashlib.sha256(b"nexa-forge-test-key").hexdigest()[:40]
WORDS = ("cell membrane enzyme protein ribosome signal glucose energy transport gradient "
         "mitosis repair strand oxygen tissue immune antigen hormone receptor pathway "
         "catalyst bond solvent yield liquidity hedge contract clause liability queue").split()


class Fake:
    """A tiny OpenAI-compatible chat server: answers from the request's seed, counts
    requests, answers 503 (Retry-After: 0) to the first `fail_first` requests, or to every
    request after `die_after` of them. A wrong key gets 401 with the header echoed (the
    handler must scrub it)."""

    def __init__(self, fail_first=0, die_after=None, key=KEY):
        self.fail_first, self.die_after, self.key = fail_first, die_after, key
        self.requests = 0
        self.answered = 0
        self.lock = threading.Lock()
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, obj, headers=()):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization", "")
                with fake.lock:
                    fake.requests += 1
                    n = fake.requests
                if fake.key is not None and auth != "Bearer " + fake.key:
                    return self.reply(401, {"error": {"message": f"bad key {auth}"}})
                if fake.key is None and auth:
                    return self.reply(401, {"error": {"message": f"bad key {auth}"}})
                if n <= fake.fail_first or (fake.die_after is not None and
                                            fake.answered >= fake.die_after):
                    return self.reply(503, {"error": {"message": f"overloaded ({auth})"}},
                                      [("Retry-After", "0")])
                rng = random.Random(json.dumps(req, sort_keys=True))
                last = req["messages"][-1]["content"]
                text = " ".join(rng.choice(WORDS) for _ in range(14))
                if "Reply with the" in last:
                    text = "How does the " + text + "?"
                with fake.lock:
                    fake.answered += 1
                self.reply(200, {"choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant",
                                                          "content": text}}],
                                 "usage": {"prompt_tokens": len(last.split()),
                                           "completion_tokens": 14}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider(tmp_path):
    """provider(**Fake options) -> (fake, env for the handler)."""
    made = []

    def make(retry_budget_s=5, **kw):
        fake = Fake(**kw)
        made.append(fake)
        conf = {"providers": {"acme": {
            "base_url": fake.url, "api_key_env": "NF_PROVIDER_KEY_ACME",
            "models": {"acme-large": {"input_per_1m_usd": 2.0, "output_per_1m_usd": 8.0}},
            "concurrency": 3, "requests_per_minute": 6000, "retry_budget_s": retry_budget_s,
            "max_retries": 20}}}
        path = tmp_path / f"providers-{len(made)}.json"
        path.write_text(json.dumps(conf))
        return fake, {"NF_PROVIDERS_FILE": str(path), "NF_PROVIDER_KEY_ACME": KEY,
                      "NEXA_MODEL_CACHE": os.environ.get("NEXA_MODEL_CACHE", str(
                          pathlib.Path.home() / ".cache" / "nexa-forge" / "models"))}

    yield make
    for f in made:
        f.close()


def run(job_type, params, out, env, inputs=None, models=None, job_id="job_dw"):
    job = {"job_id": job_id, "job_type": job_type, "params": params, "attempt": 1,
           "inputs": {k: str(v) for k, v in (inputs or {}).items()}, "models": models or {}}
    r = run_handler(job_type, job, out, env=env, timeout=300)
    no_key_anywhere(r)
    return r


def no_key_anywhere(r):
    """The key is in no stdout line, no stderr line, no file the handler wrote."""
    assert KEY not in r.stdout and KEY not in r.stderr
    for path in pathlib.Path(r.out_dir).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def prompts_file(tmp_path, n, seed=1, domain="biology", extra=None):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q, a = _corpus.sample(rng, domain)
        rows.append(dict({"instruction": q, "response": a}, **(extra or {})))
    return write_jsonl(tmp_path / f"prompts-{n}-{seed}.jsonl", rows)


def usage_sum(r):
    u = r.of("usage")
    return (sum(x.get("input_tokens", 0) for x in u), sum(x.get("output_tokens", 0) for x in u))


# ---- generate ---------------------------------------------------------------------------

@pytest.mark.parametrize("task,fmt", [("instruction", "jsonl"), ("chat", "parquet")])
def test_generate_with_a_provider_writes_distinct_chat_rows(provider, tmp_path, task, fmt):
    fake, env = provider()
    r = run("generate", {"domain": "biology", "num_samples": 24, "generator": "acme-large",
                         "task": task, "output_format": fmt, "seed": 3,
                         "system_prompt": "Be brief."}, tmp_path / "out", env)
    assert r.rc == 0, r.stderr
    res = r.result
    assert res["num_samples"] == 24 and res["row_format"] == "openai_chat"
    assert r.artifacts == [{"path": f"samples.{fmt}", "kind": "dataset"}]
    if fmt == "parquet":
        import pyarrow.parquet as pq
        rows = pq.read_table(str(r.out_dir / "samples.parquet")).to_pylist()
    else:
        rows = [json.loads(x) for x in (r.out_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    for row in rows:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system"] + ["user", "assistant"] * (2 if task == "chat" else 1)
        assert all(m["content"].strip() for m in row["messages"])
    # no near duplicates among the rows (Jaccard of word 3-grams below the threshold)
    sets = [_rows.shingles(_rows.row_text(x)) for x in rows]
    for i in range(len(sets)):
        for j in range(i):
            assert len(sets[i] & sets[j]) / len(sets[i] | sets[j]) < 0.8
    # tokens metered as usage lines; cost at the config's prices
    assert usage_sum(r) == (res["prompt_tokens"], res["completion_tokens"])
    assert res["calls"] == fake.answered
    assert res["cost_usd"] == pytest.approx(res["prompt_tokens"] * 2 / 1e6
                                            + res["completion_tokens"] * 8 / 1e6)


def test_generate_drops_duplicates_and_refusals_within_a_budget(provider, tmp_path):
    fake, env = provider()
    # temperature 0 with the same seed for every row would repeat itself; seeds differ by
    # row, but a tiny num_samples with a near-duplicate threshold of 0.01 keeps one row
    r = run("generate", {"domain": "law", "num_samples": 5, "generator": "acme-large",
                         "near_duplicate_threshold": 0.01, "seed": 1},
            tmp_path / "out", env)
    assert r.rc == 0, r.stderr
    assert r.result["budget_exhausted"] is True
    assert r.result["attempts"] == r.result["attempt_budget"] == 21
    assert r.result["num_samples"] < 5 and r.result["dropped"]["near_duplicate"] > 0


def test_generate_template_stays_the_default(tmp_path):
    r = run("generate", {"domain": "law", "num_samples": 3, "seed": 2}, tmp_path / "o", {})
    assert r.rc == 0 and r.result["num_samples"] == 3 and "generator" not in r.result


def test_a_provider_that_answers_503_for_a_while_is_retried(provider, tmp_path):
    fake, env = provider(fail_first=4, retry_budget_s=10)
    r = run("generate", {"domain": "code", "num_samples": 4, "generator": "acme-large",
                         "seed": 4}, tmp_path / "out", env)
    assert r.rc == 0, r.stderr
    assert r.result["retries"] >= 4 and r.result["num_samples"] == 4


def test_a_provider_outage_exits_75_without_the_key(provider, tmp_path):
    fake, env = provider(fail_first=10_000, retry_budget_s=1.5)
    r = run("generate", {"domain": "code", "num_samples": 4, "generator": "acme-large"},
            tmp_path / "out", env)
    assert r.rc == 75, (r.rc, r.stderr)
    assert "acme/acme-large is unavailable" in r.stderr and "retry budget" in r.stderr
    assert "***" in r.stderr  # the server echoed the Authorization header: scrubbed


def test_a_wrong_key_is_the_operators_fault(provider, tmp_path):
    fake, env = provider()
    env["NF_PROVIDER_KEY_ACME"] = "sk-wrong"
    r = run("generate", {"domain": "code", "num_samples": 2, "generator": "acme-large"},
            tmp_path / "out", env)
    assert r.rc == 75 and "answered 401" in r.stderr and "sk-wrong" not in r.stderr


def test_generate_from_a_seed_dataset_through_a_deployment(tmp_path):
    """A deployment handed in the job JSON is called at its base_url, without a key; a seed
    dataset's prompts are the examples."""
    fake = Fake(key=None)
    try:
        seeds = prompts_file(tmp_path, 5, seed=9)
        job = {"job_id": "job_dep", "job_type": "generate", "attempt": 1,
               "params": {"domain": "law", "num_samples": 6, "generator": "dep-0123456789ab",
                          "dataset_uri": "s3://b/seeds.jsonl", "seed": 2},
               "inputs": {"dataset_uri": str(seeds)},
               "models": {"generator": {"id": "dep-0123456789ab", "kind": "deployment",
                                        "source": "deployment:dep-0123456789ab",
                                        "base_url": fake.url, "model": "my-model"}}}
        r = run_handler("generate", job, tmp_path / "out", env={}, timeout=120)
        assert r.rc == 0, r.stderr
        assert r.result["generator"] == {"model": "deployment dep-0123456789ab",
                                         "kind": "deployment", "stand_in": False}
        assert r.result["topics_source"] == "dataset_uri" and r.result["num_samples"] == 6
        assert fake.answered == r.result["calls"]
    finally:
        fake.close()


def test_unknown_generator_is_a_user_error(provider, tmp_path):
    _fake, env = provider()
    r = run("generate", {"domain": "code", "num_samples": 2, "generator": "nope-9"},
            tmp_path / "out", env)
    assert r.rc == 2 and "params.generator: unknown model 'nope-9'" in r.stderr


# ---- distill ----------------------------------------------------------------------------

def test_distill_through_a_provider_filters_packages_and_trains(provider, tmp_path):
    fake, env = provider()
    data = prompts_file(tmp_path, 20)
    refs = write_jsonl(tmp_path / "refs.jsonl", [
        {"question": "What is 2 + 2?", "answer": "4"}]
        + [{"prompt": f"Say hello {i}"} for i in range(4)])
    r = run("distill", {"teacher_model": "acme-large", "student_model": "tiny-bigram",
                        "dataset_uri": "s3://b/p.jsonl", "seed": 5},
            tmp_path / "out", env, {"dataset_uri": data})
    assert r.rc == 0, r.stderr
    res = r.result
    assert res["teacher_calls"] == 20 == fake.answered and res["rows_kept"] == 20
    assert res["num_samples"] + res["heldout_samples"] == 20
    kinds = {a["path"]: a["kind"] for a in r.artifacts}
    assert kinds["distilled.jsonl"] == kinds["distilled.parquet"] == "dataset"
    assert kinds["student/model.json"] == "model"
    assert any(k.startswith("distill-collection-") and v == "checkpoint"
               for k, v in kinds.items())
    rows = [json.loads(x) for x in (r.out_dir / "distilled.jsonl").read_text().splitlines()]
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    assert usage_sum(r)[1] >= res["teacher_tokens"]["completion"]
    assert res["cost_usd"] == pytest.approx(res["teacher_tokens"]["prompt"] * 2 / 1e6
                                            + res["teacher_tokens"]["completion"] * 8 / 1e6)
    # a reference answer the teacher does not give drops the row
    r2 = run("distill", {"teacher_model": "acme-large", "student_model": "tiny-bigram",
                         "dataset_uri": "s3://b/r.jsonl", "holdout": 0},
             tmp_path / "out2", env, {"dataset_uri": refs})
    assert r2.rc == 0, r2.stderr
    assert r2.result["dropped"].get("disagrees_with_reference", 0) >= 1


def test_distill_resumes_the_collection_without_asking_again(provider, tmp_path):
    data = prompts_file(tmp_path, 24, seed=2)
    params = {"teacher_model": "acme-large", "student_model": "tiny-bigram",
              "dataset_uri": "s3://b/p.jsonl", "seed": 6, "checkpoint_every": 5}
    dying, env = provider(die_after=11, retry_budget_s=1)
    first = run("distill", params, tmp_path / "a1", env, {"dataset_uri": data})
    assert first.rc == 75, first.stderr
    assert any(a["kind"] == "checkpoint" for a in first.artifacts)
    asked_before = dying.answered
    assert asked_before == 11
    healthy, env2 = provider()
    env2["NF_RESUME_DIR"] = str(tmp_path / "a1")
    second = run("distill", params, tmp_path / "a2", env2, {"dataset_uri": data})
    assert second.rc == 0, second.stderr
    assert healthy.answered == 24 - asked_before  # only what was missing
    assert second.result["resumed_answers"] == asked_before
    # the same dataset as one uninterrupted run
    whole, env3 = provider()
    third = run("distill", params, tmp_path / "a3", env3, {"dataset_uri": data})
    assert (tmp_path / "a2" / "distilled.jsonl").read_bytes() == \
        (tmp_path / "a3" / "distilled.jsonl").read_bytes()
    assert third.result["teacher_tokens"] == second.result["teacher_tokens"]


def test_distill_logits_needs_a_local_teacher(provider, tmp_path):
    _fake, env = provider()
    data = prompts_file(tmp_path, 6)
    r = run("distill", {"teacher_model": "acme-large", "student_model": "llama-3-8b",
                        "dataset_uri": "s3://b/p.jsonl", "method": "logits"},
            tmp_path / "out", env, {"dataset_uri": data})
    assert r.rc == 2 and "params.method" in r.stderr and "logits" in r.stderr


def test_distill_a_503_teacher_then_a_stand_in_student_beats_its_base(provider, tmp_path):
    fake, env = provider(fail_first=4, retry_budget_s=10)
    data = prompts_file(tmp_path, 40, seed=3)
    r = run("distill", {"teacher_model": "acme-large", "student_model": "llama-3-8b",
                        "dataset_uri": "s3://b/p.jsonl", "seed": 7, "epochs": 2,
                        "holdout": 0.2}, tmp_path / "out", env, {"dataset_uri": data})
    assert r.rc == 0, r.stderr
    assert r.result["retries"] >= 4
    held = r.result["student"]["heldout"]
    assert held["student_loss"] < held["untrained_student_loss"]
    assert {"student/model.tar", "student/checkpoint-epoch-2.tar"} <= {
        a["path"] for a in r.artifacts}


def test_distill_logits_from_a_local_stand_in(provider, tmp_path):
    _fake, env = provider()
    data = prompts_file(tmp_path, 16, seed=4)
    r = run("distill", {"teacher_model": "mistral-7b", "student_model": "llama-3-8b",
                        "dataset_uri": "s3://b/p.jsonl", "method": "logits", "epochs": 1,
                        "max_tokens": 24, "seed": 8}, tmp_path / "out", env,
            {"dataset_uri": data})
    assert r.rc == 0, r.stderr
    st = r.result["student"]
    assert st["kd_temperature"] == 2.0 and st["heldout"]["student_loss"] < \
        st["heldout"]["untrained_student_loss"]
    assert r.result["stand_in"] is True
