"""End-to-end fixtures: the real test stack started by `./forge test`.

Every HTTP answer the tests receive is checked against proto/openapi.yaml and every Kafka
event they read against proto/events/*.schema.json, so the code cannot drift from the
published contract without a test failing.
"""
import json
import os
import pathlib
import subprocess
import threading
import time
import uuid

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = pathlib.Path(__file__).resolve().parents[2]
OPENAPI_URI = "urn:nexa-forge:openapi"


def env(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the end-to-end tests through ./forge test", 2)
    return value


# --------------------------------------------------------------------------- contracts

class Contract:
    """Validates HTTP answers against the OpenAPI document and events against schemas."""

    def __init__(self):
        self.spec = yaml.safe_load((ROOT / "proto/openapi.yaml").read_text())
        resources = [(OPENAPI_URI, Resource.from_contents(self.spec, default_specification=_draft()))]
        self.event_schemas = {}
        for path in sorted((ROOT / "proto/events").glob("*.schema.json")):
            doc = json.loads(path.read_text())
            resources.append((doc["$id"], Resource.from_contents(doc)))
            self.event_schemas[path.name] = doc
        self.registry = Registry().with_resources(resources)
        self.responses_checked = 0
        self.events_checked = 0

    def _validator(self, schema):
        return Draft202012Validator(schema, registry=self.registry,
                                    format_checker=Draft202012Validator.FORMAT_CHECKER)

    def check_response(self, method, template, resp):
        """The status must be documented for (template, method) and the body must match."""
        op = self.spec["paths"].get(template, {}).get(method.lower())
        assert op is not None, f"{method} {template} is not in proto/openapi.yaml"
        status = str(resp.status_code)
        assert status in op["responses"], (
            f"{method} {template} answered {status}, not documented: {resp.text[:300]}")
        documented = op["responses"][status]
        if "$ref" in documented:
            name = documented["$ref"].rsplit("/", 1)[1]
            documented = self.spec["components"]["responses"][name]
        content = documented.get("content")
        if not content:
            assert resp.content == b"", f"{status} should have no body"
            return
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
        assert ctype in content, f"{method} {template} {status}: content type {ctype!r}"
        if ctype == "application/json":
            schema = content[ctype]["schema"]
            pointer = _pointer_of(self.spec, schema)
            self._validator({"$ref": f"{OPENAPI_URI}#{pointer}"}).validate(resp.json())
        self.responses_checked += 1

    def check_event(self, event):
        etype = event.get("type", "")
        name = {
            "forge.job.requested": "job.requested.schema.json",
            "forge.job.dispatch": "job.dispatch.schema.json",
            "forge.usage.recorded": "usage.recorded.schema.json",
            "forge.billing.budget_alert": "billing.budget_alert.schema.json",
            "forge.billing.job_cost": "billing.job_cost.schema.json",
        }.get(etype)
        if name is None and etype.startswith("forge.job."):
            name = "job.event.schema.json"
        if name is None and etype.startswith("forge.auth."):
            name = "audit.schema.json"
        if name is None and etype.startswith("forge.worker."):
            name = "worker.event.schema.json"
        assert name is not None, f"no schema for event type {etype!r}"
        self._validator(self.event_schemas[name]).validate(event)
        self.events_checked += 1


def _draft():
    from referencing.jsonschema import DRAFT202012
    return DRAFT202012


def _pointer_of(spec, schema):
    """JSON pointer of a schema object inside the spec (it is always found by identity)."""
    stack = [("", spec)]
    while stack:
        pointer, node = stack.pop()
        if node is schema:
            return pointer
        if isinstance(node, dict):
            for key, value in node.items():
                stack.append((f"{pointer}/{_escape(key)}", value))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                stack.append((f"{pointer}/{i}", value))
    raise AssertionError("schema not found in spec")


def _escape(key):
    return str(key).replace("~", "~0").replace("/", "~1")


@pytest.fixture(scope="session")
def contract():
    c = Contract()
    yield c
    print(f"\ncontract: {c.responses_checked} HTTP answers and {c.events_checked} Kafka events "
          "validated")


# --------------------------------------------------------------------------- stack control

def stack(script, timeout=150):
    """Runs bash with the stack scripts loaded for the test profile (./forge test's), or
    for the private stack named by NF_TEST_STACK_OVERRIDES."""
    overrides = os.environ.get("NF_TEST_STACK_OVERRIDES", "")
    prelude = f"""set -euo pipefail
FORGE_ROOT={ROOT}; export FORGE_ROOT
for f in lib env install backing objstore services; do source "$FORGE_ROOT/deploy/local/$f.sh"; done
forge_profile_load test
{f'source "{overrides}"' if overrides else ''}
"""
    out = subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"stack script failed: {out.stdout}\n{out.stderr}"
    return out.stdout.strip()


# --------------------------------------------------------------------------- HTTP client

class Api:
    """A thin requests wrapper that validates every answer against the contract."""

    def __init__(self, base, key, contract):
        self.base = base.rstrip("/")
        self.key = key
        self.contract = contract
        self.http = requests.Session()

    def call(self, method, path, template=None, key="default", headers=None, **kw):
        hdrs = dict(headers or {})
        if key == "default":
            key = self.key
        if key is not None:
            hdrs["X-Nexa-Api-Key"] = key
        resp = self.http.request(method, self.base + path, headers=hdrs, timeout=30, **kw)
        self.contract.check_response(method, template or path, resp)
        assert resp.headers.get("X-Request-Id"), "every answer carries X-Request-Id"
        return resp

    def submit(self, job_type, body, **kw):
        return self.call("POST", f"/api/jobs/{job_type}", f"/api/jobs/{job_type}", json=body, **kw)

    def get_job(self, job_id, **kw):
        return self.call("GET", f"/api/jobs/{job_id}", "/api/jobs/{job_id}", **kw)

    def wait_terminal(self, job_id, timeout=90):
        deadline = time.monotonic() + timeout
        job = None
        while time.monotonic() < deadline:
            job = self.get_job(job_id).json()
            if job["status"] in ("succeeded", "failed", "cancelled", "dead_lettered"):
                return job
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


@pytest.fixture(scope="session")
def api(contract):
    return Api(env("NF_TEST_API_URL"), env("NF_TEST_API_KEY"), contract)


@pytest.fixture(scope="session", autouse=True)
def seeded_object(api):
    """s3://b/k in the default key's namespace: the tests that only need a job with an
    existing input (queueing, cancel, pools) name it; inputs are checked before the 202."""
    body = b"".join(b'{"instruction": "say %d", "response": "%d"}\n' % (i, i) for i in range(5))
    resp = api.call("POST", "/api/files", data={"purpose": "dataset", "uri": "s3://b/k"},
                    files={"file": ("k.jsonl", body, "application/x-ndjson")})
    assert resp.status_code == 201, resp.text
    return resp.json()


@pytest.fixture(scope="session")
def other_user_key():
    """A second user's key, made through nf-auth's bootstrap route, for tenancy tests."""
    auth = env("NF_TEST_AUTH_URL")
    resp = requests.post(f"{auth}/internal/bootstrap",
                         json={"email": f"other-{uuid.uuid4().hex[:8]}@nexa.dev"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["api_key"]


# --------------------------------------------------------------------------- Kafka

# Messages a bad-input test produces on purpose (malformed usage for billing's dead-letter
# topic) carry this key prefix; the EventLog leaves them unvalidated.
MALFORMED_KEY_PREFIX = b"e2e-malformed-"

TOPICS = ["forge.jobs.requested", "forge.jobs.generate", "forge.jobs.audit",
          "forge.jobs.distill", "forge.jobs.train", "forge.jobs.evaluate",
          "forge.jobs.deploy", "forge.jobs.events", "forge.usage", "forge.audit",
          "forge.workers.events"]


class EventLog:
    """Reads our topics from the beginning in a background thread, validating every event."""

    def __init__(self, brokers, contract):
        from confluent_kafka import Consumer
        self.contract = contract
        self.events = []
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.consumer = Consumer({
            "bootstrap.servers": brokers,
            "group.id": f"e2e-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        self.consumer.subscribe(TOPICS)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            if (msg.key() or b"").startswith(MALFORMED_KEY_PREFIX):
                continue
            try:
                event = json.loads(msg.value())
                self.contract.check_event(event)
                assert msg.key().decode() == event["subject"], "message key = subject"
            except Exception as exc:  # recorded, then raised by the test that looks
                with self.lock:
                    self.errors.append(f"{msg.topic()}: {exc!r}: {msg.value()[:300]!r}")
                continue
            with self.lock:
                self.events.append((msg.topic(), event))

    def for_job(self, job_id):
        with self.lock:
            assert not self.errors, "events broke their schema:\n" + "\n".join(self.errors)
            return [(t, e) for t, e in self.events
                    if e["subject"] == job_id or e["data"].get("job_id") == job_id]

    def wait_for(self, job_id, etype, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for _, e in self.for_job(job_id) if e["type"] == etype]
            if found:
                return found
            time.sleep(0.1)
        seen = [e["type"] for _, e in self.for_job(job_id)]
        raise AssertionError(f"no {etype} for {job_id} within {timeout}s; saw {seen}")

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.consumer.close()


@pytest.fixture(scope="session")
def events(contract):
    log = EventLog(env("NF_TEST_KAFKA_BROKERS"), contract)
    yield log
    log.close()
    assert not log.errors, "events broke their schema:\n" + "\n".join(log.errors)
