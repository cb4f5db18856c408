"""Fixtures of the SDK's unit tests: a scripted local server (fake_api.FakeAPI) and a
client on it."""
import pathlib
import sys

import pytest

# The package from this checkout, installed or not.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import nexa_forge  # noqa: E402
from fake_api import FakeAPI  # noqa: E402


@pytest.fixture
def api():
    server = FakeAPI()
    yield server
    server.stop()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(api, sleeps):
    """A client on the fake server whose backoff waits are recorded, not slept."""
    c = nexa_forge.NexaForgeClient(api_key="nexa_test_key", base_url=api.url, timeout=5,
                                   max_retries=3)
    c._transport._sleep = sleeps.append
    yield c
    c.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("NEXA_API_KEY", raising=False)
    monkeypatch.delenv("NEXA_API_URL", raising=False)
