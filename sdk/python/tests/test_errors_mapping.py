"""Error answers become typed exceptions keeping status, code, message, param and request
id - both from raw answers and through a real HTTP round trip."""
import email.utils
import json
import time

import pytest

import nexa_forge
from nexa_forge.errors import error_from_response, parse_retry_after

from fake_api import Reply, error_reply


def envelope(code, message, param=None, request_id="req_1"):
    err = {"code": code, "message": message, "request_id": request_id}
    if param:
        err["param"] = param
    return json.dumps({"error": err}).encode()


@pytest.mark.parametrize("status,cls", [
    (400, nexa_forge.ValidationError),
    (401, nexa_forge.AuthenticationError),
    (403, nexa_forge.AuthenticationError),
    (404, nexa_forge.NotFoundError),
    (405, nexa_forge.NexaForgeError),
    (409, nexa_forge.ConflictError),
    (413, nexa_forge.ValidationError),
    (422, nexa_forge.ValidationError),
    (429, nexa_forge.RateLimitError),
    (500, nexa_forge.ServerError),
    (502, nexa_forge.ServerError),
    (503, nexa_forge.ServerError),
])
def test_status_maps_to_class(status, cls):
    exc = error_from_response(status, {}, envelope("some_code", "some message"))
    assert type(exc) is cls
    assert isinstance(exc, nexa_forge.NexaForgeError)
    assert (exc.status, exc.code, exc.message, exc.request_id) == (
        status, "some_code", "some message", "req_1")


def test_validation_error_carries_param_and_str_names_everything():
    exc = error_from_response(422, {"X-Request-Id": "req_h"},
                              envelope("invalid_params", "must be >= 1", "num_samples"))
    assert exc.param == "num_samples"
    text = str(exc)
    assert "422" in text and "invalid_params" in text and "must be >= 1" in text
    assert "param=num_samples" in text and "request_id=req_1" in text


def test_rate_limit_error_carries_retry_after():
    exc = error_from_response(429, {"Retry-After": "7", "RateLimit-Remaining": "0"},
                              envelope("rate_limited", "slow down"))
    assert isinstance(exc, nexa_forge.RateLimitError)
    assert exc.retry_after == 7.0
    assert exc.headers["RateLimit-Remaining"] == "0"


def test_request_id_falls_back_to_header_and_message_to_body_text():
    exc = error_from_response(502, {"x-request-id": "req_hdr"}, b"<html>Bad Gateway</html>")
    assert isinstance(exc, nexa_forge.ServerError)
    assert exc.request_id == "req_hdr"
    assert "Bad Gateway" in exc.message and exc.code is None


def test_empty_error_body_still_gives_a_message():
    exc = error_from_response(500, {}, b"")
    assert exc.message == "HTTP 500 with no error body"


@pytest.mark.parametrize("value,expected", [
    ("3", 3.0), ("0", 0.0), ("1.5", 1.5), ("-4", 0.0), ("", None), (None, None),
    ("soon", None), ("nan", None), ("inf", None),
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(when) <= 31


def test_connection_error_is_ours_not_the_builtin():
    import builtins
    assert issubclass(nexa_forge.APITimeoutError, nexa_forge.ConnectionError)
    assert issubclass(nexa_forge.ConnectionError, nexa_forge.NexaForgeError)
    assert nexa_forge.ConnectionError is not builtins.ConnectionError


# ---- through HTTP ---------------------------------------------------------------------

@pytest.mark.parametrize("status,code,cls", [
    (403, "forbidden", nexa_forge.AuthenticationError),
    (404, "not_found", nexa_forge.NotFoundError),
    (409, "conflict", nexa_forge.ConflictError),
    (413, "too_large", nexa_forge.ValidationError),
])
def test_http_errors_raise_typed_exceptions(api, client, status, code, cls):
    api.on("GET", "/api/jobs/job_x", error_reply(status, code, "nope", request_id="req_77"))
    with pytest.raises(cls) as info:
        client.get_job("job_x")
    assert info.value.status == status and info.value.code == code
    assert info.value.request_id == "req_77"
    assert len(api.calls()) == 1, "4xx answers are not retried"


def test_invalid_params_surface_the_servers_param_and_message(api, client):
    api.on("POST", "/api/jobs/generate",
           error_reply(422, "invalid_params", "num_samples must be 1..1000000",
                       param="num_samples"))
    with pytest.raises(nexa_forge.ValidationError) as info:
        client.generate(domain="biology", num_samples=0)
    assert info.value.param == "num_samples"
    assert info.value.message == "num_samples must be 1..1000000"


def test_job_failed_error_describes_the_job():
    exc = nexa_forge.JobFailedError({"job_id": "job_1", "status": "failed",
                                     "error": {"code": "handler_exit", "message": "exit 3",
                                               "class": "user_error"}})
    assert "job_1 ended failed" in str(exc) and "exit 3" in str(exc)
    assert exc.code == "handler_exit" and exc.job_status == "failed"


def test_non_json_success_body_is_a_clear_error(api, client):
    api.on("GET", "/api/jobs/job_x", Reply(200, "not json", headers={"X-Request-Id": "r9"}))
    with pytest.raises(nexa_forge.NexaForgeError) as info:
        client.get_job("job_x")
    assert info.value.code == "invalid_response" and info.value.request_id == "r9"
    assert info.value.status == 200 and "not json" in info.value.message
