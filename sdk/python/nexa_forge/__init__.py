"""Nexa Forge Python SDK.

    from nexa_forge import NexaForgeClient
    client = NexaForgeClient(api_key="nexa_abc123...")
    job = client.generate(domain="biology", num_samples=100)
    print(f"Job ID: {job['job_id']}")
    status = client.get_job(job['job_id'])
    print(f"Status: {status['status']}")

Standard library only; see :class:`NexaForgeClient` for every method and
:mod:`nexa_forge.errors` for the exceptions.
"""
from ._ml import Deployment, Deployments, MetricPoint, Model, Models
from ._sse import ServerSentEvent
from ._version import __version__
from .client import DEFAULT_BASE_URL, JOB_TYPES, TERMINAL_STATUSES, NexaForgeClient
from .errors import (APITimeoutError, AuthenticationError, ConflictError, ConnectionError,
                     JobFailedError, NexaForgeError, NotFoundError, RateLimitError,
                     ServerError, ValidationError, WaitTimeoutError)

__all__ = [
    "__version__",
    "NexaForgeClient",
    "DEFAULT_BASE_URL",
    "JOB_TYPES",
    "TERMINAL_STATUSES",
    "ServerSentEvent",
    "Models",
    "Deployments",
    "Model",
    "Deployment",
    "MetricPoint",
    "NexaForgeError",
    "AuthenticationError",
    "NotFoundError",
    "ValidationError",
    "ConflictError",
    "RateLimitError",
    "ServerError",
    "ConnectionError",
    "APITimeoutError",
    "JobFailedError",
    "WaitTimeoutError",
]
