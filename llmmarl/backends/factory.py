"""The one registry of backend kinds: the CLI, tournaments and trainers all build backends with :func:`build_backend`.

A :class:`BackendSpec` names a kind and its settings; a kind is a builder registered under a name, so a new engine
is a builder plus one :func:`register_backend` line, and every caller (``llmmarl play --backend KIND``, a
tournament participant's ``backend: KIND``, a run's ``rollout_backend: KIND``) can name it::

    backend = build_backend(BackendSpec(model="default", adapters={"ttt": "adapters/ttt"}))
    engine = build_rollout_engine(BackendSpec(kind="vllm", model="default", seed=0))  # for a trainer

Built in: ``transformers`` (in-process), ``openai`` (an OpenAI-compatible endpoint) and ``vllm`` (a vLLM server of
its own, started on first use; :mod:`llmmarl.backends.vllm_engine`). A kind may also be ``your.module:builder``,
imported when first named, as games are (``your.module:factory``): the builder takes a :class:`BackendSpec` and
returns a :class:`~llmmarl.backends.base.Backend`. Settings of such a kind go in :attr:`BackendSpec.options`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmmarl.backends.base import Backend, BackendError, RolloutEngine


class UnknownBackendError(BackendError, ValueError):
    """A kind that is neither registered nor an importable ``module:builder``; the message lists the known kinds.

    A ``ValueError`` too, so that a config naming it reports it as a bad value of its field."""


class BackendSpec(BaseModel):
    """What to build. Fields a kind does not use are ignored by it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(
        "transformers",
        description="A registered kind: transformers (in-process), openai (an OpenAI endpoint), vllm (a vLLM server "
        "of its own), one registered with register_backend, or your.module:builder.",
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
    folder: Path | None = Field(
        None, description="vllm: where adapter versions and the server's log go; None: a temporary folder."
    )
    max_loras: int | None = Field(
        None, ge=1, description="vllm: adapters in one batch; None: the adapters plus one, at least 4."
    )
    max_cpu_loras: int | None = Field(None, ge=1, description="vllm: adapters kept in memory; None: 2 x max_loras.")
    max_lora_rank: int | None = Field(
        None, ge=1, description="vllm: the largest adapter rank to load; None: the adapters' largest, at least 16."
    )
    python: str | None = Field(
        None, description="vllm: interpreter with vLLM (default: $LLMMARL_VLLM_PYTHON, then .venv-vllm)."
    )
    kv_cache_gib: float = Field(1.0, gt=0.0, description="vllm: the server's KV cache in GiB.")
    max_model_len: int = Field(4096, ge=64, description="vllm: longest prompt + answer in tokens.")
    startup_timeout: float = Field(600.0, gt=0.0, description="vllm: seconds to wait for the server to answer.")
    extra_args: list[str] = Field(default_factory=list, description="vllm: more server arguments, verbatim.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Settings of a kind registered outside llmmarl, read by its builder."
    )


Builder = Callable[[BackendSpec], Backend]
_BUILDERS: dict[str, Builder] = {}


def register_backend(kind: str, builder: Builder) -> None:
    """Make ``BackendSpec(kind=kind)`` build with ``builder`` (replacing what ``kind`` built before)."""
    _BUILDERS[kind] = builder


def backend_kinds() -> list[str]:
    """The registered kinds, sorted."""
    return sorted(_BUILDERS)


def backend_builder(kind: str) -> Builder:
    """The builder of ``kind``: a registered one, or ``module:builder`` imported now.

    Raises :class:`UnknownBackendError` listing the known kinds."""
    if kind in _BUILDERS:
        return _BUILDERS[kind]
    module, sep, attr = kind.partition(":")
    if not sep:
        raise UnknownBackendError(
            f"unknown backend kind {kind!r}; known: {', '.join(backend_kinds())}, or your.module:builder"
        )
    try:
        builder = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UnknownBackendError(f"cannot load backend kind {kind!r}: {e}") from None
    if not callable(builder):
        raise UnknownBackendError(f"backend kind {kind!r} names a {type(builder).__name__} object, not a builder")
    return builder  # type: ignore[no-any-return]


def check_kind(kind: str) -> str:
    """``kind`` if something builds it (for configs, which name a kind before anything is built)."""
    backend_builder(kind)
    return kind


def build_backend(spec: BackendSpec) -> Backend:
    """The backend ``spec`` describes. Errors (a model that cannot load, a server that does not answer) are
    :class:`~llmmarl.backends.base.BackendError` or the loader's own, with what to change."""
    return backend_builder(spec.kind)(spec)


def build_rollout_engine(spec: BackendSpec) -> RolloutEngine:
    """A backend a trainer can play its games with (see :class:`~llmmarl.backends.base.RolloutEngine`): the one
    function that builds a run's engines, its in-process one and its ``rollout_backend``."""
    backend = build_backend(spec)
    if not isinstance(backend, RolloutEngine):
        raise BackendError(
            f"a {spec.kind!r} backend cannot play a trainer's games (it does not implement RolloutEngine: "
            "refresh_adapters, load_adapter with a version, state_dict...); use transformers or vllm"
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


def _vllm(spec: BackendSpec) -> Backend:
    from llmmarl.backends.vllm_engine import VLLMEngine, adapter_ranks

    loras = spec.max_loras or max(4, len(spec.adapters) + 1)  # + 1: a new version loads before the old unloads
    engine: RolloutEngine = VLLMEngine(
        spec.model,
        spec.folder,
        adapters=spec.adapters,
        max_loras=loras,
        max_cpu_loras=spec.max_cpu_loras or 2 * loras,
        max_lora_rank=spec.max_lora_rank or max([16, *adapter_ranks(list(spec.adapters.values()))]),
        seed=spec.seed,
        **spec.model_dump(include=_VLLM_ARGS),
    )
    return engine


# The BackendSpec fields that VLLMEngine takes as they are (its server's settings).
_VLLM_ARGS = {"python", "kv_cache_gib", "max_model_len", "startup_timeout", "extra_args"}

register_backend("transformers", _transformers)
register_backend("openai", _openai)
register_backend("vllm", _vllm)
