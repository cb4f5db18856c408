"""audit's checks (issue 21 §4): planted near-duplicates, personal data of every kind with
look-alikes that are not, invalid fine-tuning rows by row number, language, token lengths
under a stand-in's tokenizer, the scored and cleaned datasets, and the params.

    python3 -m pytest tests/handlers/test_audit.py -q
"""
import json
import random

import _audit_format as fmt  # handlers/ is on sys.path (handlers_kit)
import _audit_pii as pii
import pyarrow.parquet as pq
import pytest
from handlers_kit import write_jsonl, write_parquet

# ---- personal data: each kind, and what must not be taken for it ----------------------

POSITIVES = [
    ("email", "Write to john.doe@example.com for the slides."),
    ("email", "cc: ops-team+alerts@mail.corp-example.co.uk"),
    ("phone", "Call me on (555) 123-4567 tomorrow."),
    ("phone", "The office number is 555.867.5309."),
    ("phone", "Reach the London desk at +44 20 7946 0958."),
    ("phone", "WhatsApp +4915112345678 after six."),
    ("credit_card", "Card 4111 1111 1111 1111, expiry 12/27."),
    ("credit_card", "Charge 5500-0055-5555-5559 please."),
    ("credit_card", "amex 378282246310005 on file"),
    ("ipv4", "The database is at 10.20.30.40 on port 5432."),
    ("ipv4", "Blocked 203.0.113.7 after the scan."),
    ("ipv6", "Ping 2001:db8:85a3::8a2e:370:7334 first."),
    ("ipv6", "link-local fe80::1ff:fe23:4567:890a is up"),
    ("secret:aws_access_key", "aws key AKIAIOSFODNN7EXAMPLE leaked"),
    ("secret:api_key_sk", "OPENAI_API_KEY=sk-proj-4f9Qz2Lm8Xc1Vb7Nn3Kk5Tt0Rr6Yy2Uu"),
    ("secret:github_token", "token ghp_16C7e42F292c6912E7710c838347Ae178B4a now"),
    ("secret:slack_token", "xoxb-2048-4096-abcdefABCDEF1234 in the config"),
    ("secret:google_api_key", "maps key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("secret:private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk="),
    ("secret:jwt", ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
                    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")),
    ("secret:high_entropy", "secret = Zx9kQ2mP7vL4tR8wY1nB6cH3jF5dS0gAq7Wc"),
]

NEGATIVES = [
    "Upgrade to version 1.2.3 or v10.0.0.1 before Friday.",
    "Python 3.11.7 and numpy 2.4.6 are pinned; see section 4.2.1.3.",
    "The meeting is on 2024-01-15 at 12:30:45 UTC, or 15/01/2024.",
    "The population was 7,900,000,000 and the budget $1,234,567.89.",
    "Order number 1234567890 shipped; invoice 20240115123045.",
    "pi is 3.14159265358979 and e is 2.718281828459045",
    "1234567812345678 fails the checksum, as does 4111111111111112.",
    "ISBN 978-3-16-148410-0 and call 911 in an emergency.",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "Use std::vector<int> and Foo::Bar::baz; the ratio is 16:9 at 10:20.",
    "AbstractSingletonProxyFactoryBean2 is a Spring class name.",
    "pneumonoultramicroscopicsilicovolcanoconiosis is a long word",
    "sk-learn is a typo for scikit-learn; a@b is no address.",
    "coordinates 51.5074, -0.1278; score 98.6; 3 x 4 = 12",
    "/usr/local/lib/python3.11/site-packages/numpy/core/multiarray.py",
]


@pytest.mark.parametrize("kind,text", POSITIVES)
def test_each_kind_of_personal_data_is_found(kind, text):
    found = [k if k == d else f"{k}:{d}" for k, d, _, _ in pii.find(text)]
    assert found == [kind], (text, pii.find(text))


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_are_not_personal_data(text):
    assert pii.find(text) == [], text


def test_redaction_replaces_only_the_finding():
    assert pii.redact("mail a.b@example.org, call 555-123-4567.") == \
        "mail [EMAIL], call [PHONE]."
    assert pii.redact("key AKIAIOSFODNN7EXAMPLE ok") == "key [SECRET] ok"
    assert pii.luhn_ok("4111111111111111") and not pii.luhn_ok("4111111111111112")


# ---- format checks --------------------------------------------------------------------

GOOD_CHAT = {"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "What is ATP?"},
                          {"role": "assistant", "content": "The cell's energy currency."}]}

BAD_ROWS = [  # (record, the issue it must raise)
    ({"messages": [{"role": "user", "content": "Hi"}]}, "example_missing_assistant_message"),
    ({"messages": [{"role": "wizard", "content": "Hi"}, {"role": "assistant", "content": "x"}]},
     "unrecognized_role"),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]},
     "empty_content"),
    ({"messages": [{"role": "user", "content": "q", "mood": "sad"},
                   {"role": "assistant", "content": "a"}]}, "message_unrecognized_key:mood"),
    ({"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]},
     "content_not_string"),
    ({"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]},
     "message_missing_key:role"),
    ({"messages": "user: hi"}, "messages_not_list"),
    ({"messages": []}, "empty_messages"),
    ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
     "last_message_not_assistant"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]},
     "missing_content"),
    ({"prompt": "q", "completion": ""}, "empty_field:completion"),
    ({"prompt": "q", "completion": 3}, "field_not_string:completion"),
    ({"instruction": "q"}, "field_not_string:response"),
    ({"text": "   "}, "empty_field:text"),
    ({"id": 7, "body": "no known shape"}, "unknown_format"),
]


@pytest.mark.parametrize("rec,issue", BAD_ROWS)
def test_format_issues(rec, issue):
    _shape, issues = fmt.check(rec)
    assert issue in issues, issues


def test_valid_shapes_have_no_issues():
    import _hf as hf
    for rec in (GOOD_CHAT, {"prompt": "q", "completion": "a"},
                {"instruction": "q", "input": "ctx", "response": "a"},
                {"question": "q", "answer": "a"}, {"text": "plain text"}):
        assert fmt.check(rec)[1] == [], rec
        hf.record_pair(rec)  # what train reads, too


# ---- the handler on a dataset with planted problems -----------------------------------

WORDS = ("river market signal garden theory copper winter ladder orbit engine harbor "
         "violet protein ledger canyon mirror quartz saddle tunnel beacon lantern meadow "
         "falcon glacier timber velvet anchor blossom cobalt dagger ember fossil galaxy "
         "hammer island jungle kettle lemon marble nectar oyster pepper quiver raven "
         "silver thunder umbrella vessel walnut yonder zephyr basket candle drummer "
         "feather goblet harvest insect jacket kitten lobster magnet needle orchid").split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def edit(rng, text):
    """A light edit: one word swapped, one inserted, one dropped, or case and punctuation."""
    words = text.rstrip(".").split()
    how = rng.randrange(4)
    i = rng.randrange(1, len(words))
    if how == 0:
        words[i] = rng.choice(WORDS)
    elif how == 1:
        words.insert(i, rng.choice(WORDS))
    elif how == 2:
        del words[i]
    else:
        return text.upper().replace(".", "!")
    return " ".join(words) + "."


def planted(seed=7, n_base=300, n_near=60):
    """(records, planted near-duplicate row -> its original row, exact duplicate rows).
    Rows are 1-based (the JSONL line)."""
    rng = random.Random(seed)
    recs = []
    for i in range(n_base):
        q, a = sentence(rng, rng.randint(8, 14)), sentence(rng, rng.randint(20, 40))
        recs.append({"id": f"r{i}", "instruction": q, "response": a} if i % 2 else
                    {"messages": [{"role": "user", "content": q},
                                  {"role": "assistant", "content": a}]})
    near = {}
    for src in rng.sample(range(n_base), n_near):
        rec = json.loads(json.dumps(recs[src]))
        if "messages" in rec:
            rec["messages"][1]["content"] = edit(rng, rec["messages"][1]["content"])
        else:
            rec["response"] = edit(rng, rec["response"])
            rec["id"] = f"near{src}"
        recs.append(rec)
        near[len(recs)] = src + 1
    exact = []
    for src in (3, 4):
        recs.append(json.loads(json.dumps(recs[src])))
        exact.append(len(recs))
    return recs, near, exact


def test_planted_near_duplicates_are_found(handler, tmp_path):
    recs, near, exact = planted()
    path = write_jsonl(tmp_path / "d.jsonl", recs)
    run = handler("audit", {"dataset_uri": "s3://b/d.jsonl", "checks": ["duplicates",
                                                                       "near_duplicates"]},
                  {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    report = run.json("report.json")
    assert report["duplicates"] == 2
    assert report["duplicate_clusters"] == [[4, exact[0]], [5, exact[1]]]
    clusters = report["near_duplicates"]["cluster_rows"]
    together = {(c[0], r) for c in clusters for r in c[1:]}
    found = sum(1 for row, src in near.items() if (src, row) in together)
    recall = found / len(near)
    flagged = {r for c in clusters for r in c[1:]}
    precision = len(flagged & set(near)) / max(1, len(flagged))
    print(f"near-duplicates: recall {recall:.3f}, precision {precision:.3f}")
    assert recall >= 0.9, (recall, clusters)
    assert precision >= 0.95, (precision, sorted(flagged - set(near)))
    assert run.result["near_duplicates"] == report["near_duplicates"]["rows"] == len(flagged)


def test_a_stricter_threshold_finds_fewer(handler, tmp_path):
    recs, _near, _ = planted()
    path = write_jsonl(tmp_path / "d.jsonl", recs)
    rows = {}
    for t in (0.5, 0.99):
        run = handler("audit", {"dataset_uri": "s3://b/d.jsonl", "checks": ["near_duplicates"],
                                "near_duplicate_threshold": t}, {"dataset_uri": path})
        assert run.rc == 0, run.stderr
        rows[t] = run.result["near_duplicates"]
    assert rows[0.99] < rows[0.5]


def problem_dataset():
    """Clean chat and instruction rows, each kind of personal data once, look-alikes,
    invalid rows, a planted duplicate: (records, expectations by row number)."""
    rng = random.Random(3)
    recs, expect = [], {"pii": {}, "invalid": {}, "negatives": []}
    for i in range(20):
        recs.append({"messages": [{"role": "user", "content": sentence(rng, 10)},
                                  {"role": "assistant", "content": sentence(rng, 25)}]})
    for kind, text in POSITIVES:
        recs.append({"prompt": sentence(rng, 6), "completion": text})
        expect["pii"].setdefault(kind.split(":")[0], []).append(len(recs))
    for text in NEGATIVES:
        recs.append({"prompt": sentence(rng, 6), "completion": text})
        expect["negatives"].append(len(recs))
    for rec, issue in BAD_ROWS:
        recs.append(rec)
        expect["invalid"][len(recs)] = issue
    recs.append(json.loads(json.dumps(recs[0])))
    expect["duplicate"] = len(recs)
    return recs, expect


def test_personal_data_and_invalid_rows_by_row_number(handler, tmp_path):
    recs, expect = problem_dataset()
    path = write_jsonl(tmp_path / "p.jsonl", recs)
    run = handler("audit", {"dataset_uri": "s3://b/p.jsonl", "fix": True},
                  {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    report = run.json("report.json")
    by_kind = {k: v["rows"] for k, v in report["pii"]["by_kind"].items()}
    assert by_kind == expect["pii"]
    assert report["pii"]["counts"] == {k: len(v) for k, v in expect["pii"].items()}
    assert not set(expect["negatives"]) & {r for v in by_kind.values() for r in v}
    assert report["pii"]["secret_kinds"]["aws_access_key"] == 1
    flagged = {r["row"]: r["issues"] for r in report["training_format"]["rows"]}
    assert set(flagged) == set(expect["invalid"])
    for row, issue in expect["invalid"].items():
        assert issue in flagged[row], (row, flagged[row])
    # (some invalid rows share their text too: duplicates of each other)
    assert [1, expect["duplicate"]] in report["duplicate_clusters"]
    assert report["passed"] is False and report["row_unit"] == "line"

    # scored.parquet: one row per line, its flags
    scored = pq.read_table(str(run.out_dir / "scored.parquet")).to_pylist()
    assert [s["row"] for s in scored] == list(range(1, len(recs) + 1))
    for s in scored:
        assert s["valid"] == (s["row"] not in expect["invalid"])
        assert bool(s["pii"]) == any(s["row"] in v for v in expect["pii"].values())
        assert json.loads(s["record"]) == recs[s["row"] - 1]
    assert scored[expect["duplicate"] - 1]["duplicate_of"] == 1

    # cleaned.jsonl: no duplicate, no invalid row, personal data redacted, train reads it
    import _hf as hf
    cleaned = [json.loads(x) for x in (run.out_dir / "cleaned.jsonl").read_text().splitlines()]
    assert len(cleaned) == len(recs) - len(expect["invalid"]) - 1 == run.result["kept_rows"]
    text = json.dumps(cleaned)
    assert all(pii.find(s) == [] for c in cleaned for s in fmt.texts(c))
    assert "[EMAIL]" in text and "[SECRET]" in text and "[CREDIT_CARD]" in text
    assert "AKIAIOSFODNN7EXAMPLE" not in text and "john.doe@example.com" not in text
    for rec in cleaned:
        hf.record_pair(rec)
    assert {"messages", "prompt"} <= {k for c in cleaned for k in c}  # shapes kept
    assert [a["path"] for a in run.artifacts] == ["report.json", "scored.parquet",
                                                  "cleaned.jsonl"]
    assert [a["kind"] for a in run.artifacts] == ["report", "dataset", "dataset"]


def test_language_distribution(handler, tmp_path):
    rows = [
        {"text": "The weather is lovely today and we are going to the beach with friends."},
        {"text": "Le temps est magnifique aujourd'hui et nous allons à la plage avec des amis."},
        {"text": "Das Wetter ist heute herrlich und wir gehen mit Freunden an den Strand."},
        {"text": "El tiempo está precioso hoy y vamos a la playa con nuestros amigos."},
        {"text": "I would like a cup of tea and a slice of cake in the garden, please."},
    ]
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    run = handler("audit", {"dataset_uri": "s3://b/l.jsonl", "checks": ["language"]},
                  {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    lang = run.json("report.json")["language"]
    assert lang["distribution"] == {"en": 2, "de": 1, "es": 1, "fr": 1}
    assert lang["dominant"] == "en" and lang["other_language_rows"]["rows"] == [2, 3, 4]


def test_token_lengths_match_train(handler, tmp_path):
    import _hf as hf
    from transformers import AutoTokenizer
    rows = [{"prompt": "What is ATP?", "completion": "Energy. " * n} for n in (1, 5, 40)]
    rows.append(GOOD_CHAT)
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    run = handler("audit", {"dataset_uri": "s3://b/t.jsonl", "checks": ["token_lengths"],
                            "max_seq_length": 40}, {"dataset_uri": path}, timeout=180)
    assert run.rc == 0, run.stderr
    tl = run.json("report.json")["token_lengths"]
    tok = AutoTokenizer.from_pretrained(hf.stand_in_dir("llama-3-8b"))
    want = []
    for rec in rows:
        ids, _ = hf.encode_pair(tok, *hf.record_pair(rec), 10_000, False)
        want.append(len(ids))
    scored = pq.read_table(str(run.out_dir / "scored.parquet")).to_pylist()
    assert [s["tokens"] for s in scored] == want
    assert tl["tokenizer_model"] == "llama-3-8b" and tl["stand_in"] is True
    assert tl["over_max_seq_length"]["rows"] == [i + 1 for i, n in enumerate(want) if n > 40]
    assert tl["over_max_seq_length"]["count"] >= 1 and tl["max"] == max(want)


@pytest.mark.parametrize("params,needle", [
    ({"checks": ["duplicates", "spelling"]}, "unknown check 'spelling'"),
    ({"checks": ["judge"]}, "params.judge: the judge check needs a model"),
    ({"judge": "gpt-4", "judge_max_rows": 0}, "params.judge_max_rows"),
    ({"near_duplicate_threshold": 0}, "params.near_duplicate_threshold"),
    ({"near_duplicate_threshold": 1.5}, "params.near_duplicate_threshold"),
    ({"max_seq_length": 0}, "params.max_seq_length"),
    ({"fix": "yes"}, "params.fix"),
    ({"tokenizer_model": "tiny-bigram"}, "params.tokenizer_model: no tokenizer"),
])
def test_bad_params_exit_2_naming_them(handler, tmp_path, params, needle):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "hello there"}])
    run = handler("audit", dict(params, dataset_uri="s3://b/d.jsonl"), {"dataset_uri": path})
    assert run.rc == 2 and needle in run.stderr, run.stderr


def test_the_same_rows_with_a_pool_of_workers(handler, tmp_path, monkeypatch):
    recs, _near, _ = planted(seed=11, n_base=400, n_near=40)
    path = write_jsonl(tmp_path / "d.jsonl", recs)
    runs = []
    for workers in ("1", "2"):
        monkeypatch.setenv("NEXA_AUDIT_WORKERS", workers)
        run = handler("audit", {"dataset_uri": "s3://b/d.jsonl", "checks": [
            "duplicates", "near_duplicates", "pii", "training_format"]}, {"dataset_uri": path})
        assert run.rc == 0, run.stderr
        report = run.json("report.json")
        report.pop("timing")
        runs.append(report)
    assert runs[0] == runs[1]


def test_chat_rows_in_parquet_by_row(handler, tmp_path):
    rows = [GOOD_CHAT, {"messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Hi"}]}, GOOD_CHAT]
    path = write_parquet(tmp_path / "c.parquet", rows)
    run = handler("audit", {"dataset_uri": "s3://b/c.parquet", "fix": True,
                            "checks": ["training_format", "duplicates"]}, {"dataset_uri": path})
    assert run.rc == 0, run.stderr
    report = run.json("report.json")
    assert report["row_unit"] == "row" and report["training_format"]["shapes"] == {"chat": 3}
    assert report["training_format"]["rows"] == [
        {"row": 2, "issues": ["example_missing_assistant_message"]}]
    assert report["duplicate_clusters"] == [[1, 3]]
    cleaned = [json.loads(x) for x in (run.out_dir / "cleaned.jsonl").read_text().splitlines()]
    assert cleaned == [GOOD_CHAT]


class JudgeServer:
    """An OpenAI-compatible judge (a deployment: no key): 2 for an answer that says
    "wrong", 5 for "right", else a word with no digit; counts what it was asked."""

    def __init__(self):
        import http.server
        import threading
        self.asked = []
        srv = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert req["messages"][0]["role"] == "system"  # the rubric
                text = req["messages"][-1]["content"]
                srv.asked.append(text)
                answer = "2" if "wrong" in text else "Score: 5" if "right" in text else "hmm"
                body = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant",
                                                            "content": answer}}],
                                   "usage": {"prompt_tokens": 30, "completion_tokens": 1}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def test_judge_scores_valid_rows_through_a_model(handler, tmp_path):
    """issue 21 §4: an LLM judge (here a deployment of the account) scores the valid rows
    with the stated rubric; invalid and text-only rows are not asked; its tokens are
    metered; scores land in scored.parquet and the report."""
    rows = [
        {"messages": [{"role": "user", "content": "Is the sky blue?"},
                      {"role": "assistant", "content": "Yes, that is right."}]},
        {"prompt": "2 + 2?", "completion": "5, which is wrong."},
        {"messages": [{"role": "user", "content": "Hello"}]},  # no assistant turn: invalid
        {"instruction": "Name a colour.", "response": "Blue."},
        {"messages": [{"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris is right."}]},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    judge = JudgeServer()
    try:
        dep = {"id": "dep-0123456789ab", "kind": "deployment",
               "source": "deployment:dep-0123456789ab", "base_url": judge.url,
               "model": "judge-model"}
        run = handler("audit", {"dataset_uri": "s3://b/d.jsonl", "judge": "dep-0123456789ab",
                                "checks": ["training_format", "judge"]},
                      {"dataset_uri": path}, models={"judge": dep})
    finally:
        judge.server.shutdown()
    assert run.rc == 0, run.stderr
    assert len(judge.asked) == 4  # the invalid row is not judged
    assert not any("Hello" in a for a in judge.asked)
    report = json.loads((run.out_dir / "report.json").read_text())
    j = report["judge"]
    assert j["available"] is True and j["kind"] == "deployment"
    assert j["rows_asked"] == 4 and j["rows_scored"] == 3 and j["unparsed"] == 1
    assert j["distribution"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 2}
    assert j["mean"] == 4.0 and "Score the assistant" in j["rubric"]
    scored = pq.read_table(str(run.out_dir / "scored.parquet")).to_pylist()
    assert [s["judge_score"] for s in scored] == [5.0, 2.0, None, None, 5.0]
    used = [ln["usage"] for ln in run.lines if "usage" in ln]
    assert sum(u.get("input_tokens", 0) for u in used) >= 4 * 30
    assert sum(u.get("output_tokens", 0) for u in used) >= 4
    assert run.result["judge"]["mean"] == 4.0
