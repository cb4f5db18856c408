"""Bad input gets a clear JSON error with a 4xx status - never a crash, a hang or a 500 -
and the gateway keeps serving. Each answer is validated against the OpenAPI contract
(the Error schema with a request_id) by the api fixture."""
import http.client
import json
import re
import urllib.parse

import pytest
import requests

from conftest import OPENAPI_URI, env


def error_of(resp, status, code=None, param=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    if code:
        assert err["code"] == code, err
    if param:
        assert err.get("param") == param, err
    assert err["message"] and err["request_id"] == resp.headers["X-Request-Id"]
    return err


def test_malformed_json_is_400(api):
    resp = api.call("POST", "/api/jobs/generate", data=b'{"domain": "bio', 
                    headers={"Content-Type": "application/json"})
    error_of(resp, 400)


def test_non_object_json_is_400(api):
    resp = api.call("POST", "/api/jobs/generate", data=b'[1, 2]',
                    headers={"Content-Type": "application/json"})
    error_of(resp, 400)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x"])
def test_body_of_another_media_type_is_415(api, ctype):
    """Issue 15: a JSON route refuses a body declared as something else (it used to parse
    it anyway); a JSON type with parameters, or +json, is fine."""
    resp = api.call("POST", "/api/jobs/generate",
                    data=b'{"domain": "bio", "num_samples": 1}', headers={"Content-Type": ctype})
    error_of(resp, 415, "unsupported_media_type")
    for ok in ("application/json; charset=utf-8", "application/merge-patch+json"):
        resp = api.call("POST", "/api/jobs/generate", data=b'{"domain": "bio", "num_samples": 1}',
                        headers={"Content-Type": ok})
        assert resp.status_code == 202, resp.text


def test_unknown_job_type_is_404(api, contract):
    resp = requests.post(env("NF_TEST_API_URL") + "/api/jobs/teleport",
                         headers={"X-Nexa-Api-Key": api.key}, json={"x": 1}, timeout=10)
    error_of(resp, 404)
    contract.check_response("GET", "/api/jobs/{job_id}", resp)  # same Error shape


@pytest.mark.parametrize("body,param", [
    ({"num_samples": 100}, "domain"),
    ({"domain": "biology"}, "num_samples"),
    ({"domain": "biology", "num_samples": 0}, "num_samples"),
    ({"domain": "biology", "num_samples": 1000001}, "num_samples"),
    ({"domain": "biology", "num_samples": "100"}, "num_samples"),
    ({"domain": "biology", "num_samples": 1.5}, "num_samples"),
    ({"domain": 7, "num_samples": 10}, "domain"),
    ({"domain": "biology", "num_samples": 10, "colour": "red"}, "colour"),
    ({"domain": "biology", "num_samples": 10, "user_id": "usr_x"}, "user_id"),
    ({"domain": "biology", "num_samples": 10, "priority": 10}, "priority"),
    ({"domain": "biology", "num_samples": 10, "format": "csv"}, "format"),
    ({"domain": "biology", "num_samples": 10, "metadata": {"a": 1}}, "metadata"),
])
def test_bad_generate_params_are_422_naming_the_param(api, body, param):
    err = error_of(api.submit("generate", body), 422)
    assert param in err.get("param", ""), err


@pytest.mark.parametrize("job_type,body,param", [
    ("audit", {"dataset_uri": "ftp://x/y"}, "dataset_uri"),
    ("audit", {}, "dataset_uri"),
    ("distill", {"teacher_model": "t", "student_model": "s"}, "dataset_uri"),
    ("train", {"model_id": "m", "dataset_uri": "s3://b/k", "epochs": 101}, "epochs"),
    ("evaluate", {"model_id": "m", "benchmark": "trivia"}, "benchmark"),
    ("evaluate", {"model_id": "m", "benchmark": "custom"}, "dataset_uri"),
    ("deploy", {"model_id": "m", "replicas": 65}, "replicas"),
    ("deploy", {"region": "eu-west-1"}, "model_id"),
])
def test_bad_params_for_every_type_are_422(api, job_type, body, param):
    err = error_of(api.submit(job_type, body), 422)
    assert param in err.get("param", ""), err


def test_body_over_limit_is_413(api):
    big = {"domain": "biology", "num_samples": 1, "metadata": {"pad": "x" * (1 << 20)}}
    error_of(api.submit("generate", big), 413)


@pytest.mark.parametrize("key", [
    None,                                   # missing
    "not-a-key",                            # malformed
    "nexa_" + "A" * 43 + "000000",          # right shape, wrong checksum
])
def test_missing_or_bad_key_is_403(api, key):
    error_of(api.submit("generate", {"domain": "biology", "num_samples": 1}, key=key), 403)


def test_unknown_well_formed_key_is_403(api):
    # A syntactically perfect key that was never issued: checked against auth, refused.
    import nexa_key
    error_of(api.submit("generate", {"domain": "biology", "num_samples": 1},
                        key=nexa_key.make()), 403)


def test_bearer_header_works(api, contract):
    resp = requests.get(env("NF_TEST_API_URL") + "/api/jobs/job_01JDQ7Z6V1TB6Y4Q4ZKX3R1V9M",
                        headers={"Authorization": f"Bearer {api.key}"}, timeout=10)
    contract.check_response("GET", "/api/jobs/{job_id}", resp)
    assert resp.status_code == 404  # authenticated, and the job does not exist


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _sample_path(template):
    """A concrete path for a template of the spec, each {param} a value of its shape."""
    values = {"job_id": "job_" + "0" * 26, "artifact_id": "art_" + "0" * 26,
              "file_id": "art_" + "0" * 26}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), template)


def _method_not_allowed(contract, resp, allow=None):
    """A 405 as the MethodNotAllowed response of the spec documents it."""
    error_of(resp, 405, "method_not_allowed")
    doc = contract.spec["components"]["responses"]["MethodNotAllowed"]
    contract._validator(doc["headers"]["Allow"]["schema"]).validate(resp.headers["Allow"])
    contract._validator({"$ref": f"{OPENAPI_URI}#/components/schemas/Error"}).validate(resp.json())
    methods = {m.strip() for m in resp.headers["Allow"].split(",")}
    if allow is not None:
        assert methods == set(allow), resp.headers["Allow"]
    return methods


def test_undeclared_methods_are_405_with_allow(contract):
    """Issues 15/16: TRACE (and CONNECT) used to be a 501 from the HTTP library; a method a
    path does not take is a JSON 405 whose Allow names at least every method the spec
    declares for the path, on every path of the spec, before authentication."""
    base = env("NF_TEST_API_URL")
    for template, item in contract.spec["paths"].items():
        declared = {m.upper() for m in item if m in HTTP_METHODS}
        resp = requests.request("TRACE", base + _sample_path(template), timeout=10)
        allowed = _method_not_allowed(contract, resp)
        assert declared <= allowed, (template, resp.headers["Allow"])
    # a method missing from a path's route, with and without a body
    _method_not_allowed(contract, requests.patch(base + "/api/jobs", json={}, timeout=10),
                        allow={"GET"})
    _method_not_allowed(contract, requests.delete(base + "/api/billing/summary", timeout=10),
                        allow={"GET"})
    _method_not_allowed(contract, requests.put(base + "/healthz", timeout=10), allow={"GET"})
    # /api/jobs/generate and /api/jobs/{job_id} share a pattern shape: each still refuses
    # the other's method, with or without a key
    for key in (None, env("NF_TEST_API_KEY")):
        hdrs = {"X-Nexa-Api-Key": key} if key else {}
        _method_not_allowed(contract, requests.get(base + "/api/jobs/generate", headers=hdrs,
                                                   timeout=10), allow={"POST"})
        _method_not_allowed(contract, requests.post(base + "/api/jobs/job_" + "0" * 26, json={},
                                                    headers=hdrs, timeout=10), allow={"GET"})
    conn = http.client.HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=10)
    conn.request("CONNECT", "/api/auth/api-keys")
    raw = conn.getresponse()
    assert raw.status == 405 and raw.getheader("Allow") == "GET, POST", raw.getheaders()
    assert json.loads(raw.read())["error"]["code"] == "method_not_allowed"
    conn.close()


@pytest.mark.parametrize("method", ["TRACE", "GET", "PATCH", "OPTIONS"])
def test_unknown_path_stays_404(method):
    resp = requests.request(method, env("NF_TEST_API_URL") + "/api/nothing/here", timeout=10)
    error_of(resp, 404, "not_found")
    assert "Allow" not in resp.headers


def test_still_serving_after_bad_input(api):
    assert api.call("GET", "/healthz", key=None).status_code == 200
    resp = api.submit("generate", {"domain": "chemistry", "num_samples": 2})
    assert resp.status_code == 202
