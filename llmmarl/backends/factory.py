"""One place that builds backends: the CLI, tournaments and trainers all call :func:`build_backend`.

A :class:`BackendSpec` names the kind of backend and its settings; builders are registered by kind, so a new engine
(a vLLM rollout engine, say) is a new builder plus one :func:`register_backend` line, and every caller gets it::

    backend = build_backend(BackendSpec(model="default", adapters={"ttt": "adapters/ttt"}))
    engine = build_engine(BackendSpec(model=cfg.model, device=cfg.device, seed=cfg.seed))  # for a trainer
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmmarl.backends.base import Backend, BackendError, RolloutEngine


class BackendSpec(BaseModel):
    """What to build. Fields a kind does not use are ignored by it."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(
        "transformers", description="A registered kind: transformers (in-process), openai (an OpenAI endpoint)."
    )
    model: str = Field("default", description="Base model: default, tiny, a folder or hub id (see llmmarl.models).")
    adapters: dict[str, str | Path] = Field(default_factory=dict, description="Adapter name -> PEFT folder.")
    max_batch_size: int = Field(64, ge=1, description="transformers: rows per generate call.")
    dtype: str = Field("auto", description="transformers: auto (bf16 on CUDA, float32 on CPU), float32, bfloat16...")
    device: str | None = Field(None, description="transformers: cpu, cuda...; None picks cuda when available.")
    seed: int = Field(0, description="Seeds sampling (each call's seed derives from it).")
    prefix_cache: bool = Field(True, description="transformers: share and keep prompt-prefix keys/values.")
    colocate: bool = Field(True, description="transformers: a trainer trains this model in place (see RolloutEngine).")
    base_url: str | None = Field(None, description="openai: the endpoint, e.g. http://127.0.0.1:8000/v1.")
    api_key: str | None = Field(
        None, description="openai: the key sent to base_url; None sends none (no variable is read)."
    )
    timeout: float = Field(300.0, gt=0, description="openai: seconds one request may take, retries included.")
    served_model: str | None = Field(
        None, description="openai: the served base model's name; None lets the backend find the server's own."
    )


Builder = Callable[[BackendSpec], Backend]
_BUILDERS: dict[str, Builder] = {}


def register_backend(kind: str, builder: Builder) -> None:
    """Make ``BackendSpec(kind=kind)`` build with ``builder``."""
    _BUILDERS[kind] = builder


def build_backend(spec: BackendSpec) -> Backend:
    """The backend ``spec`` describes. Errors (a model that cannot load, a server that does not answer) are
    :class:`~llmmarl.backends.base.BackendError` or the loader's own, with what to change."""
    if spec.kind not in _BUILDERS:
        raise BackendError(f"unknown backend kind {spec.kind!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[spec.kind](spec)


def build_engine(spec: BackendSpec) -> RolloutEngine:
    """A backend a trainer can play its rollouts with (see :class:`~llmmarl.backends.base.RolloutEngine`)."""
    backend = build_backend(spec)
    if not isinstance(backend, RolloutEngine):
        raise BackendError(
            f"a {spec.kind!r} backend cannot be a trainer's rollout engine (it does not implement RolloutEngine); "
            "use kind: transformers"
        )
    return backend


def _transformers(spec: BackendSpec) -> Backend:
    from llmmarl.backends.transformers import TransformersBackend  # torch loads only when a local model is built

    # Typed, so that mypy checks that the backend implements the engine interface.
    engine: RolloutEngine = TransformersBackend(spec.model, **spec.model_dump(include=_TRANSFORMERS_ARGS))
    return engine


# The BackendSpec fields that TransformersBackend takes as keyword arguments of the same name.
_TRANSFORMERS_ARGS = {"adapters", "max_batch_size", "dtype", "device", "seed", "prefix_cache", "colocate"}


def _openai(spec: BackendSpec) -> Backend:
    from llmmarl.backends.openai import OpenAIBackend

    if spec.base_url is None:
        raise BackendError("an openai backend needs base_url (the endpoint, e.g. http://127.0.0.1:8000/v1)")
    return OpenAIBackend(
        spec.base_url, api_key=spec.api_key, model=spec.served_model, seed=spec.seed, timeout=spec.timeout
    )


register_backend("transformers", _transformers)
register_backend("openai", _openai)
