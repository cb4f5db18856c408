"""audit end to end (issue 21 §4): a dataset with planted problems is uploaded, audited with
fix: true; the report finds the planted near-duplicates (recall >= 0.9), personal data
and invalid chat rows by line number; the scored and cleaned datasets download; a short
train of the llama-3-8b stand-in runs on the cleaned one. The gateway refuses unknown
checks and the judge's model before queueing; the judge (the stack's gpt-4 stand-in
provider) scores rows."""
import io
import json
import random

import pyarrow.parquet as pq

WORDS = ("river market signal garden theory copper winter ladder orbit engine harbor "
         "violet protein ledger canyon mirror quartz saddle tunnel beacon lantern meadow "
         "falcon glacier timber velvet anchor blossom cobalt dagger ember fossil galaxy "
         "hammer island jungle kettle lemon marble nectar oyster pepper quiver raven").split()

PII_ROWS = {  # kind -> a completion carrying it
    "email": "Send the report to maria.lopez@example.com by Monday.",
    "phone": "Her direct line is (555) 201-7788.",
    "credit_card": "Bill card 4111 1111 1111 1111 for the order.",
    "ipv4": "The staging host is 10.12.0.34 behind the VPN.",
    "secret": "Use the key AKIAIOSFODNN7EXAMPLE for the bucket.",
}
LOOK_ALIKES = ["Upgrade to version 2.4.1 on 2024-03-15 at 10:30.",
               "The invoice total is 1234567890 cents, order 4111111111111112."]
INVALID = [  # (record, the issue the report must give its line)
    ({"messages": [{"role": "user", "content": "Where is the harbor?"}]},
     "example_missing_assistant_message"),
    ({"messages": [{"role": "captain", "content": "Ahoy"},
                   {"role": "assistant", "content": "Hello."}]}, "unrecognized_role"),
    ({"messages": [{"role": "user", "content": ""},
                   {"role": "assistant", "content": "Nothing to say."}]}, "empty_content"),
]


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def planted_dataset():
    """(JSONL bytes, expectations by line number)."""
    rng = random.Random(21)
    recs = []
    for _ in range(80):
        recs.append({"messages": [{"role": "system", "content": "Answer briefly."},
                                  {"role": "user", "content": sentence(rng, 10)},
                                  {"role": "assistant", "content": sentence(rng, 30)}]})
    near = {}
    for src in rng.sample(range(80), 20):
        rec = json.loads(json.dumps(recs[src]))
        words = rec["messages"][2]["content"].rstrip(".").split()
        i = rng.randrange(1, len(words))
        words[i] = rng.choice([w for w in WORDS if w != words[i]])  # one word changed
        rec["messages"][2]["content"] = " ".join(words) + "."
        recs.append(rec)
        near[len(recs)] = src + 1
    recs.append(json.loads(json.dumps(recs[0])))
    exact = len(recs)
    pii = {}
    for kind, text in PII_ROWS.items():
        recs.append({"prompt": sentence(rng, 8), "completion": text})
        pii[kind] = len(recs)
    look_alikes = []
    for text in LOOK_ALIKES:
        recs.append({"prompt": sentence(rng, 8), "completion": text})
        look_alikes.append(len(recs))
    invalid = {}
    for rec, issue in INVALID:
        recs.append(rec)
        invalid[len(recs)] = issue
    data = "".join(json.dumps(r) + "\n" for r in recs).encode()
    return data, {"rows": len(recs), "near": near, "exact": exact, "pii": pii,
                  "look_alikes": look_alikes, "invalid": invalid}


def upload(api, data, uri):
    resp = api.call("POST", "/api/files", data={"purpose": "dataset", "uri": uri},
                    files={"file": ("planted.jsonl", data, "application/x-ndjson")})
    assert resp.status_code == 201, resp.text
    return resp.json()


def run_ok(api, job_type, body, timeout=240):
    resp = api.submit(job_type, body)
    assert resp.status_code == 202, resp.text
    done = api.wait_terminal(resp.json()["job_id"], timeout=timeout)
    assert done["status"] == "succeeded", done
    return done


def download(api, art):
    resp = api.call("GET", f"/api/artifacts/{art['artifact_id']}/content",
                    "/api/artifacts/{artifact_id}/content")
    assert resp.status_code == 200, resp.text
    return resp.content


def refused(resp, param, text):
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and text in err["message"], err


def test_audit_finds_planted_problems_and_its_cleaned_dataset_trains(api):
    data, expect = planted_dataset()
    upload(api, data, "s3://e2e-audit/planted.jsonl")
    done = run_ok(api, "audit", {"dataset_uri": "s3://e2e-audit/planted.jsonl", "fix": True,
                                 "near_duplicate_threshold": 0.8, "max_seq_length": 128})
    result = done["result"]
    assert result["rows"] == expect["rows"] and result["passed"] is False
    arts = {a["name"]: a for a in done["artifacts"]}
    assert {n: a["kind"] for n, a in arts.items()} == {
        "report.json": "report", "scored.parquet": "dataset", "cleaned.jsonl": "dataset"}

    report = json.loads(download(api, arts["report.json"]))
    # near-duplicates: the planted pairs share a cluster
    clusters = report["near_duplicates"]["cluster_rows"]
    together = {(c[0], r) for c in clusters for r in c[1:]}
    found = sum(1 for row, src in expect["near"].items() if (src, row) in together)
    assert found / len(expect["near"]) >= 0.9, (found, clusters)
    flagged = {r for c in clusters for r in c[1:]}
    assert flagged <= set(expect["near"]), flagged - set(expect["near"])  # precision 1 here
    assert [1, expect["exact"]] in report["duplicate_clusters"]
    # personal data: each planted kind on its line, the look-alikes not at all
    by_kind = {k: v["rows"] for k, v in report["pii"]["by_kind"].items()}
    assert by_kind == {k: [row] for k, row in expect["pii"].items()}, by_kind
    assert result["pii"] == {k: 1 for k in expect["pii"]}
    # invalid chat rows by line number
    bad = {r["row"]: r["issues"] for r in report["training_format"]["rows"]}
    assert set(bad) == set(expect["invalid"]), bad
    for row, issue in expect["invalid"].items():
        assert issue in bad[row]
    assert report["language"]["dominant"] == "en"
    assert report["token_lengths"]["tokenizer_model"] == "llama-3-8b"
    assert report["token_lengths"]["stand_in"] is True

    scored = pq.read_table(io.BytesIO(download(api, arts["scored.parquet"]))).to_pylist()
    assert [s["row"] for s in scored] == list(range(1, expect["rows"] + 1))
    assert [s["row"] for s in scored if not s["valid"]] == sorted(expect["invalid"])
    assert all(s["tokens"] > 0 for s in scored)

    cleaned = [json.loads(x) for x in download(api, arts["cleaned.jsonl"]).splitlines()]
    assert report["duplicates"] == 1
    dropped = len(expect["invalid"]) + 1 + len(flagged)
    assert len(cleaned) == expect["rows"] - dropped == result["kept_rows"]
    text = json.dumps(cleaned)
    for sample in ("maria.lopez@example.com", "201-7788", "4111 1111 1111 1111",
                   "10.12.0.34", "AKIAIOSFODNN7EXAMPLE"):
        assert sample not in text
    assert all(t in text for t in ("[EMAIL]", "[PHONE]", "[CREDIT_CARD]", "[IP_ADDRESS]",
                                   "[SECRET]"))
    assert "version 2.4.1" in text and "4111111111111112" in text  # look-alikes untouched
    assert sum("messages" in c for c in cleaned) > 0 and sum("prompt" in c for c in cleaned) > 0

    trained = run_ok(api, "train", {"model_id": "llama-3-8b",
                                    "dataset_uri": arts["cleaned.jsonl"]["uri"], "epochs": 1},
                     timeout=300)
    model_tar = next(a for a in trained["artifacts"] if a["name"] == "model.tar")
    # the fine-tuned model's own tokenizer (fetched as an input) counts the tokens too
    counted = run_ok(api, "audit", {"dataset_uri": arts["cleaned.jsonl"]["uri"],
                                    "checks": ["token_lengths"],
                                    "tokenizer_model": model_tar["uri"]})
    tl = json.loads(download(api, next(a for a in counted["artifacts"]
                                       if a["name"] == "report.json")))["token_lengths"]
    assert tl["tokenizer_model"] == model_tar["uri"] and tl["stand_in"] is True
    assert tl["total"] > 0


def test_the_gateway_refuses_bad_audit_params(api):
    ok = {"dataset_uri": "s3://b/k"}  # the session's seeded object
    refused(api.submit("audit", dict(ok, checks=["pii", "spelling"])), "checks",
            'unknown check "spelling"')
    refused(api.submit("audit", dict(ok, checks=["judge"])), "judge", "needs a model")
    refused(api.submit("audit", dict(ok, judge="no-such-model")), "judge", "unknown model")
    refused(api.submit("audit", dict(ok, near_duplicate_threshold=0)),
            "near_duplicate_threshold", "greater than 0")
    refused(api.submit("audit", dict(ok, max_seq_length=0)), "max_seq_length", "")
    refused(api.submit("audit", dict(ok, fix="yes")), "fix", "")
    resp = api.submit("audit", dict(ok, tokenizer_model="no-such-model"))
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "tokenizer_model", \
        resp.text


def test_checks_select_what_runs(api):
    done = run_ok(api, "audit", {"dataset_uri": "s3://b/k", "checks": ["pii", "language"]})
    assert done["result"]["pii_rows"] == 0 and "near_duplicates" not in done["result"]
    assert sorted(a["name"] for a in done["artifacts"]) == ["report.json", "scored.parquet"]


def test_a_judge_scores_rows_through_the_stacks_provider(api):
    """issue 21 §4: judge="gpt-4" (the stack's stand-in provider, behind its key) is asked
    about every valid row up to judge_max_rows; its answers, scores or not (a stand-in's
    random weights rarely say a digit), and its tokens are on the job."""
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"It is {2 * i}."}]}
            for i in range(5)] + [{"messages": [{"role": "user", "content": "no answer"}]}]
    upload(api, "".join(json.dumps(r) + "\n" for r in rows).encode(),
           "s3://e2e-audit/judged.jsonl")
    done = run_ok(api, "audit", {"dataset_uri": "s3://e2e-audit/judged.jsonl",
                                 "checks": ["training_format", "judge"], "judge": "gpt-4",
                                 "judge_max_rows": 4}, timeout=300)
    report = json.loads(download(api, next(a for a in done["artifacts"]
                                           if a["name"] == "report.json")))
    j = report["judge"]
    assert j["available"] is True and j["model"] == "openai/gpt-4" and j["stand_in"] is True
    assert j["rows_asked"] == 4 and j["rows_scored"] + j["unparsed"] == 4, j
    assert j["calls"] == 4 and j["prompt_tokens"] > 0, j
    assert "Score the assistant" in j["rubric"]
    assert done["result"]["judge"]["model"] == "openai/gpt-4"
