"""Transport behaviour against a local HTTP server: retries and backoff, Retry-After,
idempotency keys reused on retry, timeouts, dead servers, connection reuse, threads."""
import threading
import time

import pytest

import nexa_forge

from fake_api import Reply, error_reply, free_port, job

SNIPPET = '''
from nexa_forge import NexaForgeClient
client = NexaForgeClient(api_key="nexa_abc123...")
job = client.generate(domain="biology", num_samples=100)
print(f"Job ID: {job['job_id']}")
status = client.get_job(job['job_id'])
print(f"Status: {status['status']}")
'''


def test_overview_snippet_runs_verbatim(api, monkeypatch, capsys):
    monkeypatch.setenv("NEXA_API_URL", api.url)
    api.on("POST", "/api/jobs/generate", Reply(202, job()))
    api.on("GET", "/api/jobs/job_01HZZZZZZZZZZZZZZZZZZZZZZZ", Reply(200, job(status="running")))
    exec(compile(SNIPPET, "<overview>", "exec"), {})
    out = capsys.readouterr().out
    assert out == "Job ID: job_01HZZZZZZZZZZZZZZZZZZZZZZZ\nStatus: running\n"
    [submit] = api.calls("POST")
    assert submit.header("X-Nexa-Api-Key") == "nexa_abc123..."
    assert submit.json() == {"params": {"domain": "biology", "num_samples": 100}}


# ---- missing key ------------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "", "   "])
def test_missing_key_raises_before_any_request(api, monkeypatch, key):
    monkeypatch.setenv("NEXA_API_URL", api.url)
    with pytest.raises(nexa_forge.AuthenticationError) as info:
        nexa_forge.NexaForgeClient(api_key=key)
    assert "NEXA_API_KEY" in str(info.value) and info.value.code == "missing_api_key"
    assert info.value.status is None
    assert api.calls() == [], "no request was made"


def test_key_with_a_line_break_is_refused_locally(api):
    with pytest.raises(nexa_forge.AuthenticationError) as info:
        nexa_forge.NexaForgeClient(api_key="nexa_abc\r\nX-Evil: 1", base_url=api.url)
    assert info.value.code == "malformed_api_key"
    assert api.calls() == []


def test_key_and_url_come_from_the_environment(api, monkeypatch):
    monkeypatch.setenv("NEXA_API_KEY", "nexa_from_env")
    monkeypatch.setenv("NEXA_API_URL", api.url + "/")
    api.on("GET", "/api/auth/me", Reply(200, {"user_id": "usr_1"}))
    client = nexa_forge.NexaForgeClient()
    assert client.base_url == api.url
    assert client.me() == {"user_id": "usr_1"}
    [req] = api.calls()
    assert req.header("X-Nexa-Api-Key") == "nexa_from_env"
    assert req.header("User-Agent").startswith("nexa-forge-python/")


def test_default_url_is_localhost_8000(monkeypatch):
    client = nexa_forge.NexaForgeClient(api_key="nexa_k")
    assert client.base_url == "http://localhost:8000"
    assert client.timeout == 30 and client.max_retries == 3


def test_base_url_path_prefix_is_kept(api):
    api.on("GET", "/forge/api/jobs/job_1", Reply(200, job("job_1")))
    client = nexa_forge.NexaForgeClient(api_key="k", base_url=api.url + "/forge/")
    assert client.get_job("job_1")["job_id"] == "job_1"


def test_bad_base_url_is_a_value_error():
    with pytest.raises(ValueError):
        nexa_forge.NexaForgeClient(api_key="k", base_url="ftp://example.com")


# ---- retries --------------------------------------------------------------------------

def test_503_then_success_is_retried_with_the_same_idempotency_key(api, client, sleeps):
    api.on("POST", "/api/jobs/generate",
           error_reply(503, "unavailable", "kafka down", headers={"Retry-After": "1"}),
           Reply(502, "bad gateway"),
           Reply(202, job()))
    result = client.generate(domain="biology", num_samples=100)
    assert result["job_id"] == job()["job_id"]
    calls = api.calls("POST", "/api/jobs/generate")
    assert len(calls) == 3
    keys = {c.header("Idempotency-Key") for c in calls}
    assert len(keys) == 1 and None not in keys, "one key, reused on every retry"
    assert len(next(iter(keys))) >= 32
    assert sleeps[0] == 1.0, "Retry-After honoured"
    assert 0.25 <= sleeps[1] <= 1.0, "then exponential backoff with jitter (attempt 1)"


def test_each_submission_gets_its_own_idempotency_key(api, client):
    api.on("POST", "/api/jobs/generate", Reply(202, job()))
    client.generate(domain="a", num_samples=1)
    client.generate(domain="a", num_samples=1)
    keys = [c.header("Idempotency-Key") for c in api.calls()]
    assert len(set(keys)) == 2


def test_caller_idempotency_key_is_sent_as_is(api, client):
    api.on("POST", "/api/jobs/train", Reply(202, job()))
    client.train(model_id="m", dataset_uri="s3://b/k", idempotency_key="order-42")
    assert api.calls()[0].header("Idempotency-Key") == "order-42"


def test_retried_submission_after_a_lost_answer_reuses_the_key(api, client):
    # The first attempt reaches the server, which drops the connection without answering
    # (say, a proxy cut): the retry must carry the same key so the server can replay.
    api.on("POST", "/api/jobs/generate", Reply(close=True), Reply(202, job()))
    client.generate(domain="biology", num_samples=5)
    calls = api.calls("POST")
    assert len(calls) == 2
    assert calls[0].header("Idempotency-Key") == calls[1].header("Idempotency-Key")


def test_backoff_grows_exponentially_with_jitter(api, client, sleeps):
    api.on("GET", "/api/jobs/job_1", Reply(500, "boom"))
    with pytest.raises(nexa_forge.ServerError) as info:
        client.get_job("job_1")
    assert len(api.calls()) == 4, "first try + max_retries (3)"
    assert "gave up after 4 attempts" in str(info.value)
    for n, delay in enumerate(sleeps):
        ceiling = 0.5 * 2 ** n
        assert ceiling / 2 <= delay <= ceiling, (n, delay)


def test_backoff_is_capped(client):
    t = client._transport
    t._rand = lambda: 1.0
    assert t.backoff_delay(0) == 0.5 and t.backoff_delay(2) == 2.0
    assert t.backoff_delay(10) == 8.0
    t._rand = lambda: 0.0
    assert t.backoff_delay(10) == 4.0


def test_rate_limit_retries_honour_retry_after_then_raise(api, client, sleeps):
    api.on("GET", "/api/jobs/job_1",
           error_reply(429, "rate_limited", "slow down", headers={"Retry-After": "2"}))
    with pytest.raises(nexa_forge.RateLimitError) as info:
        client.get_job("job_1")
    assert info.value.retry_after == 2.0
    assert sleeps == [2.0, 2.0, 2.0]
    assert len(api.calls()) == 4


def test_retry_after_longer_than_the_timeout_raises_at_once(api, client, sleeps):
    api.on("GET", "/api/jobs/job_1",
           error_reply(429, "rate_limited", "slow down", headers={"Retry-After": "60"}))
    with pytest.raises(nexa_forge.RateLimitError) as info:
        client.get_job("job_1")
    assert info.value.retry_after == 60.0
    assert sleeps == [] and len(api.calls()) == 1


def test_retry_after_is_really_waited(api):
    api.on("GET", "/api/jobs/job_1",
           error_reply(429, "rate_limited", "slow", headers={"Retry-After": "1"}),
           Reply(200, job("job_1")))
    client = nexa_forge.NexaForgeClient(api_key="k", base_url=api.url, timeout=10)
    t0 = time.monotonic()
    client.get_job("job_1")
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 3.0, elapsed
    assert len(api.calls()) == 2


def test_non_idempotent_post_is_not_retried_on_500(api, client):
    api.on("POST", "/api/auth/api-keys", Reply(500, "boom"))
    with pytest.raises(nexa_forge.ServerError):
        client.create_api_key("laptop")
    assert len(api.calls()) == 1
    assert api.calls()[0].header("Idempotency-Key") is None


def test_non_idempotent_post_is_retried_on_429_and_503(api, client):
    api.on("POST", "/api/auth/api-keys",
           error_reply(429, "rate_limited", "wait", headers={"Retry-After": "0"}),
           error_reply(503, "unavailable", "wait", headers={"Retry-After": "0"}),
           Reply(201, {"key_id": "key_1", "api_key": "nexa_new"}))
    assert client.create_api_key("laptop")["api_key"] == "nexa_new"
    assert len(api.calls()) == 3


def test_non_idempotent_post_is_not_retried_after_a_lost_answer(api, client):
    api.on("POST", "/api/auth/api-keys", Reply(close=True),
           Reply(201, {"key_id": "key_1", "api_key": "nexa_new"}))
    with pytest.raises(nexa_forge.ConnectionError):
        client.create_api_key("laptop")
    assert len(api.calls()) == 1, "a second key must not be created behind the user's back"


def test_4xx_is_not_retried(api, client, sleeps):
    api.on("POST", "/api/jobs/generate", error_reply(422, "invalid_params", "x", "domain"))
    with pytest.raises(nexa_forge.ValidationError):
        client.generate(domain="", num_samples=1)
    assert len(api.calls()) == 1 and sleeps == []


def test_max_retries_zero_tries_once(api):
    api.on("GET", "/api/jobs/job_1", Reply(503, "down"))
    client = nexa_forge.NexaForgeClient(api_key="k", base_url=api.url, max_retries=0)
    with pytest.raises(nexa_forge.ServerError):
        client.get_job("job_1")
    assert len(api.calls()) == 1


# ---- timeouts and dead servers --------------------------------------------------------

def test_slow_server_times_out_within_the_timeout(api):
    api.on("GET", "/api/jobs/job_1", Reply(200, job("job_1"), delay=3))
    client = nexa_forge.NexaForgeClient(api_key="k", base_url=api.url, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(nexa_forge.APITimeoutError):
        client.get_job("job_1")
    assert time.monotonic() - t0 < 1.0


def test_timeout_bounds_the_retries_too(api):
    # Each attempt is slow; the whole call still ends near the timeout.
    api.on("GET", "/api/jobs/job_1", Reply(503, "down", delay=0.3))
    client = nexa_forge.NexaForgeClient(api_key="k", base_url=api.url, timeout=1.0,
                                        max_retries=10, backoff_base=0.05)
    t0 = time.monotonic()
    with pytest.raises(nexa_forge.NexaForgeError):
        client.get_job("job_1")
    assert time.monotonic() - t0 < 1.5


def test_dead_server_gives_connection_error_after_retries(sleeps):
    client = nexa_forge.NexaForgeClient(api_key="k", base_url=f"http://127.0.0.1:{free_port()}",
                                        timeout=5, max_retries=3)
    client._transport._sleep = sleeps.append
    with pytest.raises(nexa_forge.ConnectionError) as info:
        client.generate(domain="biology", num_samples=1)
    assert len(sleeps) == 3, "retried max_retries times"
    assert "cannot connect" in str(info.value) and "4 attempts" in str(info.value)


def test_dead_server_never_hangs_beyond_the_timeout():
    client = nexa_forge.NexaForgeClient(api_key="k", base_url=f"http://127.0.0.1:{free_port()}",
                                        timeout=1.0, max_retries=10, backoff_base=0.4)
    t0 = time.monotonic()
    with pytest.raises(nexa_forge.ConnectionError):
        client.get_job("job_1")
    assert time.monotonic() - t0 < 1.2


def test_unresolvable_host_is_a_connection_error():
    client = nexa_forge.NexaForgeClient(api_key="k", base_url="http://nexa-forge.invalid",
                                        timeout=5, max_retries=1, backoff_base=0.01)
    with pytest.raises(nexa_forge.ConnectionError):
        client.get_job("job_1")


# ---- connections ----------------------------------------------------------------------

def test_connection_is_reused_between_calls(api, client):
    api.on("GET", "/api/jobs/job_1", Reply(200, job("job_1")))
    for _ in range(5):
        client.get_job("job_1")
    ports = {c.port for c in api.calls()}
    assert len(ports) == 1, "one kept-alive connection for five calls"


def test_connection_closed_by_server_is_replaced_transparently(api, client):
    api.on("GET", "/api/jobs/job_1", Reply(200, job("job_1"), keep_open=False))
    client.get_job("job_1")
    client.get_job("job_1")
    assert len({c.port for c in api.calls()}) == 2


def test_idle_connection_closed_by_server_is_detected(api, client):
    # The server closes the kept-alive connection after answering, without a
    # "Connection: close": the next call - a non-idempotent POST - must not be sent on
    # the dead socket (nor fail), but on a fresh connection.
    api.on("GET", "/api/auth/me", Reply(200, {"user_id": "u"}, silent_close=True))
    api.on("POST", "/api/auth/api-keys", Reply(201, {"key_id": "key_1"}))
    client.me()
    time.sleep(0.1)  # let the FIN arrive
    assert client.create_api_key("x") == {"key_id": "key_1"}
    assert len(api.calls("POST")) == 1
    assert len({c.port for c in api.calls()}) == 2


def test_threads_can_share_one_client(api, client):
    api.on("GET", "/api/jobs/job_1", Reply(200, job("job_1")))
    failures = []

    def work():
        try:
            for _ in range(20):
                assert client.get_job("job_1")["job_id"] == "job_1"
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(api.calls()) == 160
    assert len({c.port for c in api.calls()}) <= 8 + 8, "connections are pooled"


def test_redirect_to_another_host_drops_the_api_key(api, client):
    other = type(api)()
    try:
        other.on("GET", "/blob", Reply(200, b"bytes!", content_type="application/octet-stream"))
        api.on("GET", "/api/artifacts/art_1/content",
               Reply(302, b"", headers={"Location": other.url + "/blob"}))
        assert client.read_artifact("art_1") == b"bytes!"
        [req] = other.calls()
        assert req.header("X-Nexa-Api-Key") is None
    finally:
        other.stop()


def test_dropped_detects_a_closed_peer():
    import socket

    from nexa_forge._transport import _dropped
    a, b = socket.socketpair()
    try:
        assert not _dropped(a), "an idle, open connection is kept"
        b.close()
        assert _dropped(a), "a peer that closed is detected before reuse"
    finally:
        a.close()
