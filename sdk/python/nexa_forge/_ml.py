"""Models, deployments and training runs (issue 22): the ``client.models`` and
``client.deployments`` namespaces, ``chat`` and ``openai`` for a deployment, and a job's
live metrics and checkpoints.

Mixed into :class:`~nexa_forge.NexaForgeClient` (it needs the client's ``_get``,
``_transport``, ``_stream``, ``_paginate``, ``get_job``, ``list_checkpoints`` and the
flat model and deployment methods, which stay as they were: the namespaces call them).
"""
from __future__ import annotations

import json
from typing import (TYPE_CHECKING, Any, Dict, Iterator, List, Literal, Mapping, Optional,
                    Sequence, TypedDict, Union, overload)

from . import errors
from ._sse import SSEDecoder, iter_sse_lines

if TYPE_CHECKING:  # pragma: no cover
    from .client import NexaForgeClient

# The typed shapes (total=False: a newer server may add keys, an older leave some out).


class Model(TypedDict, total=False):
    """A model of ``GET /api/models``: ``id`` (its name), ``kind`` (``base``,
    ``fine_tuned`` or ``uploaded``), ``base_model``, ``architecture``,
    ``parameters``, ``stand_in``, ``job_id``, ``artifact_id``, ``created``..."""
    id: str
    object: str
    created: int
    owned_by: str
    kind: str
    base_model: Optional[str]
    architecture: Optional[str]
    parameters: Optional[int]
    stand_in: bool
    job_id: Optional[str]
    artifact_id: Optional[str]


class Deployment(TypedDict, total=False):
    """A deployment: ``id`` (``dep-...``), ``model``, ``status`` (``ready``,
    ``stopped`` or ``failed``), ``region``, ``replicas``, ``job_id``, ``base_url``
    (``/api/deployments/{id}/v1``), ``created_at``, ``stopped_at``."""
    id: str
    object: str
    model: str
    status: str
    region: str
    replicas: int
    job_id: str
    base_url: str
    created_at: str
    stopped_at: Optional[str]


class MetricPoint(TypedDict, total=False):
    """One live metric point of a job: ``step``, ``epoch`` (or None), ``attempt``,
    ``time``, ``values`` ({"train_loss": 2.31, ...}) and ``cursor``."""
    type: str
    step: int
    epoch: Optional[float]
    attempt: int
    time: str
    values: Dict[str, float]
    cursor: str


Message = Mapping[str, Any]
DeploymentRef = Union[str, Mapping[str, Any]]
JobRef = Union[str, Mapping[str, Any]]


class Models:
    """``client.models``: the models this key can name as ``model_id``."""

    def __init__(self, client: "NexaForgeClient") -> None:
        self._client = client

    def list(self) -> List[Model]:
        """The operator's base catalogue, then the account's own (fine-tuned by ``train``,
        or registered uploads)."""
        return list(self._client.list_models().get("data") or [])

    def get(self, name: str) -> Model:
        """One model by name (or ``mdl_...`` id); another account's is a
        :class:`~nexa_forge.NotFoundError`."""
        return self._client.get_model(name)  # type: ignore[return-value]

    def register(self, name: str, uri: str) -> Model:
        """Registers an uploaded model (``uri``: the ``artifact://`` of a
        ``purpose="model"`` file of yours) under ``name`` (1..64 of ``[a-z0-9._-]``)."""
        return self._client.register_model(name, uri)  # type: ignore[return-value]

    def delete(self, name: str) -> Dict[str, Any]:
        """Removes one of your models from the catalogue (its artifact stays)."""
        return self._client.delete_model(name)

    def __repr__(self) -> str:
        return f"<Models of {self._client.base_url}>"


class Deployments:
    """``client.deployments``: your deployments (a succeeded ``deploy`` job each)."""

    def __init__(self, client: "NexaForgeClient") -> None:
        self._client = client

    def list(self) -> List[Deployment]:
        """Your deployments, newest first."""
        return list(self._client.list_deployments().get("data") or [])

    def get(self, deployment: DeploymentRef) -> Deployment:
        """One deployment by id, deployment object or its deploy job."""
        return self._client.get_deployment(deployment)  # type: ignore[return-value]

    def delete(self, deployment: DeploymentRef) -> Deployment:
        """Stops the deployment's endpoint (deleting twice is harmless)."""
        return self._client.delete_deployment(deployment)  # type: ignore[return-value]

    def base_url(self, deployment: DeploymentRef) -> str:
        """The deployment's OpenAI-compatible base URL through the gateway."""
        return self._client.deployment_base_url(deployment)

    def __repr__(self) -> str:
        return f"<Deployments of {self._client.base_url}>"


class _MLMixin:
    """chat, openai, job_metrics, checkpoints and the two namespaces."""

    @property
    def models(self) -> Models:
        """Models: ``list()``, ``get(name)``, ``register(name, uri)``, ``delete(name)``."""
        return Models(self)  # type: ignore[arg-type]

    @property
    def deployments(self) -> Deployments:
        """Deployments: ``list()``, ``get(dep)``, ``delete(dep)``, ``base_url(dep)``."""
        return Deployments(self)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- chat

    @overload
    def chat(self, deployment: DeploymentRef, messages: Sequence[Message], *,
             stream: Literal[False] = ..., model: Optional[str] = ...,
             max_tokens: Optional[int] = ..., temperature: Optional[float] = ...,
             **params: Any) -> Dict[str, Any]: ...

    @overload
    def chat(self, deployment: DeploymentRef, messages: Sequence[Message], *,
             stream: Literal[True], model: Optional[str] = ...,
             max_tokens: Optional[int] = ..., temperature: Optional[float] = ...,
             **params: Any) -> Iterator[str]: ...

    def chat(self, deployment: DeploymentRef, messages: Sequence[Message], *,
             stream: bool = False, model: Optional[str] = None,
             max_tokens: Optional[int] = None, temperature: Optional[float] = None,
             **params: Any) -> Any:
        """A chat completion from a deployment (``POST .../v1/chat/completions`` through
        the gateway, metered on its deploy job).

        ``messages``: ``[{"role": "user", "content": "..."}]``. Without ``stream`` it
        returns the OpenAI-shaped completion (``choices[0]["message"]["content"]``,
        ``usage``); with ``stream=True`` an iterator over the reply's text deltas as they
        are generated. Other OpenAI parameters (``top_p``, ``stop``, ``seed``...) pass
        through ``params``."""
        body: Dict[str, Any] = {"messages": [dict(m) for m in messages]}
        if model is not None:
            body["model"] = model
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        body.update(params)
        path = f"/api/deployments/{_seg(_deployment_id(deployment))}/v1/chat/completions"
        if not stream:
            body["stream"] = False
            resp = self._transport.request("POST", path, json_body=body)  # type: ignore
            data = resp.json()
            if not isinstance(data, dict):
                raise errors.NexaForgeError("expected a chat completion object",
                                            status=resp.status, code="invalid_response")
            return data
        body["stream"] = True
        return self._chat_stream(path, body)

    def _chat_stream(self, path: str, body: Dict[str, Any]) -> Iterator[str]:
        resp = self._transport.stream(  # type: ignore[attr-defined]
            "POST", path, json_body=body, headers={"Accept": "text/event-stream"})
        with resp:
            for event in iter_sse_lines(resp.iter_lines(), SSEDecoder()):
                if event.data.strip() == "[DONE]":
                    return
                try:
                    chunk = json.loads(event.data)
                except ValueError:
                    continue
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        yield delta

    def openai(self, deployment: DeploymentRef, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client already pointed at the deployment through the
        gateway (``<base_url>/api/deployments/{id}/v1``) with this client's API key:
        ``client.openai(dep).chat.completions.create(model=..., messages=[...])``.
        Needs the optional extra: ``pip install 'nexa-forge[openai]'``; ``kwargs`` go
        to ``openai.OpenAI`` (``timeout``, ``max_retries``...)."""
        try:
            import openai as _openai
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("client.openai() needs the openai package: "
                              "pip install 'nexa-forge[openai]'") from exc
        return _openai.OpenAI(base_url=self.deployment_base_url(deployment),  # type: ignore
                              api_key=self._transport.api_key, **kwargs)  # type: ignore

    # ---------------------------------------------------------------- training runs

    @overload
    def job_metrics(self, job_id: JobRef, *, stream: Literal[False] = ...,
                    last_event_id: Optional[str] = ...) -> List[MetricPoint]: ...

    @overload
    def job_metrics(self, job_id: JobRef, *, stream: Literal[True],
                    last_event_id: Optional[str] = ...) -> Iterator[MetricPoint]: ...

    def job_metrics(self, job_id: JobRef, *, stream: bool = False,
                    last_event_id: Optional[str] = None) -> Any:
        """A job's live metric points, oldest first: ``train`` / ``distill`` one per
        ``metric_every`` optimizer steps (``train_loss``, ``learning_rate``,
        ``tokens_per_s``) and one per epoch (``valid_loss``), ``evaluate`` its scores at
        step 0 (``<benchmark>/<metric>``). Each point: ``{step, epoch, attempt, time,
        values, cursor}``.

        Without ``stream``: the list of every point recorded so far. With
        ``stream=True``: an iterator that yields the points as they are recorded and ends
        when the job does (server-sent events, resumed after a dropped connection;
        ``last_event_id``: a point's ``cursor`` to start after)."""
        jid = _job_id(job_id)
        path = f"/api/jobs/{_seg(jid)}/metrics"
        if stream:
            return self._stream(jid, path, last_event_id, False,  # type: ignore
                                fallback=lambda: self._paginate(path, {}, 1000))  # type: ignore
        return list(self._paginate(path, {}, 1000))  # type: ignore[attr-defined]

    def checkpoints(self, job_id: JobRef) -> List[Dict[str, Any]]:
        """A train job's checkpoints, oldest first (see :meth:`list_checkpoints`)."""
        return self.list_checkpoints(job_id)  # type: ignore[attr-defined]


def _job_id(job: Any) -> str:
    from .client import _job_id as job_id  # the client's helpers (it imports this module)
    return job_id(job)


def _deployment_id(ref: DeploymentRef) -> str:
    from .client import _deployment_id as dep_id  # one definition of what a ref is
    return dep_id(ref)


def _seg(value: str) -> str:
    from .client import _seg as seg
    return seg(value)
