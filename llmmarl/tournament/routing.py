"""The router of a tournament: one backend for its runner, whatever mix of models the participants use.

The runner holds a single :class:`~llmmarl.backends.base.Backend`. A tournament may pit a local base model with
several LoRA adapters against a model behind an OpenAI-compatible endpoint, so :class:`RoutingBackend` gives
every LLM participant a *route* (its request ``adapter`` name, :func:`route`) and forwards each request to the
backend that serves it, rewriting the adapter to the name that backend knows. All ``llm`` participants of one
backend kind (``backend:``, default transformers), base model and settings share one backend (adapters loaded
under participant names), so their turns still share one batched ``generate`` call per runner round. Backends are
built by :func:`~llmmarl.backends.factory.build_backend`, from the one registry of kinds, as everywhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends import factory
from llmmarl.backends.base import Backend, BackendError, Generation, GenerationRequest, special_tokens
from llmmarl.tournament.config import LocalLLMParticipant, OpenAIParticipant, TournamentConfig

_SPEC_FIELDS = set(LLMAgentSpec.model_fields) - {"kind", "adapter"}
# The tournament's settings a local backend takes under the same names.
_SHARED = {"max_batch_size", "dtype", "device", "seed"}


def route(participant: str) -> str:
    """The adapter name a participant's requests carry. The '@' keeps the runner from taking it for a folder."""
    return f"@{participant}"


def runner_specs(config: TournamentConfig) -> dict[str, AgentSpec]:
    """Participant name -> the spec the runner plays: LLM participants become LLM specs addressed by route."""
    out: dict[str, AgentSpec] = {}
    for p in config.participants:
        if isinstance(p, ScriptedAgentSpec):
            out[p.name] = p
        else:
            out[p.name] = LLMAgentSpec(**p.model_dump(include=_SPEC_FIELDS), adapter=route(p.name))
    return out


class RoutingBackend:
    """Forwards each request to the backend of its route; one ``generate`` call per backend per batch.

    Args:
        routes: route name -> (backend, the adapter name that backend expects; None = its base model).
    """

    def __init__(self, routes: dict[str, tuple[Backend, str | None]]) -> None:
        if not routes:
            raise ValueError("a routing backend needs at least one route")
        self.routes = routes

    @property
    def adapters(self) -> list[str]:
        return sorted(self.routes)

    @property
    def concurrent_calls(self) -> bool:
        """Whether every backend behind it takes concurrent calls: then the runner streams games (see
        :mod:`llmmarl.runner`), as it would through that backend alone."""
        return all(getattr(backend, "concurrent_calls", False) for backend, _ in self.routes.values())

    @property
    def special_tokens(self) -> list[str]:
        """Every route's control strings: a message from one participant may reach a teammate on another model."""
        tokens: dict[str, None] = {}
        for backend, _ in self.routes.values():
            tokens.update(dict.fromkeys(special_tokens(backend)))
        return list(tokens)

    def truncate(self, text: str, max_tokens: int) -> str:
        # Message budgets are counted with the first backend's tokenizer; all routes of one game share it.
        backend = next(iter(self.routes.values()))[0]
        return backend.truncate(text, max_tokens)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        groups: dict[int, tuple[Backend, list[int]]] = {}
        for i, r in enumerate(requests):
            if r.adapter not in self.routes:
                raise BackendError(f"request for {r.adapter!r}, which no tournament participant routes")
            backend = self.routes[r.adapter][0]
            groups.setdefault(id(backend), (backend, []))[1].append(i)
        out: list[Generation | None] = [None] * len(requests)
        for backend, idx in groups.values():
            sent = [requests[i].model_copy(update={"adapter": self.routes[requests[i].adapter][1]}) for i in idx]  # type: ignore[index]
            for i, gen in zip(idx, backend.generate(sent), strict=True):
                out[i] = gen
        return [g for g in out if g is not None]

    def close(self) -> None:
        """Close every backend that holds something (a server it started, a connection)."""
        for backend in {id(b): b for b, _ in self.routes.values()}.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()


def build_routing_backend(config: TournamentConfig, names: set[str]) -> RoutingBackend | None:
    """Backends for the LLM participants in ``names``; None when all of them are scripted."""
    llms = [p for p in config.participants if p.name in names and not isinstance(p, ScriptedAgentSpec)]
    if not llms:
        return None
    routes: dict[str, tuple[Backend, str | None]] = {}
    by_backend: dict[tuple[str, str, str], list[LocalLLMParticipant]] = {}
    by_endpoint: dict[tuple[str, str | None], list[OpenAIParticipant]] = {}
    for p in llms:
        if isinstance(p, LocalLLMParticipant):
            settings = json.dumps(p.backend_settings, sort_keys=True, default=str)
            by_backend.setdefault((p.backend, p.base_model or config.base_model, settings), []).append(p)
        else:
            assert isinstance(p, OpenAIParticipant)
            by_endpoint.setdefault((p.base_url, p.api_key_env), []).append(p)
    for (kind, model, _), local_ps in by_backend.items():
        local = _local_backend(config, kind, model, local_ps)
        for lp in local_ps:
            routes[route(lp.name)] = (local, lp.name if lp.adapter else None)
    for (base_url, key_env), remote_ps in by_endpoint.items():
        remote = _openai_backend(base_url, key_env, [p.name for p in remote_ps], config.seed)
        base = getattr(remote, "model", None)  # the served base model answers requests without an adapter
        for rp in remote_ps:
            routes[route(rp.name)] = (remote, None if rp.model == base else rp.model)
    return RoutingBackend(routes)


def _local_backend(config: TournamentConfig, kind: str, model: str, participants: list[LocalLLMParticipant]) -> Backend:
    adapters: dict[str, str | Path] = {}
    for p in participants:
        if p.adapter is None:
            continue
        if not Path(p.adapter).is_dir():
            raise BackendError(
                f"participant {p.name!r}: adapter {p.adapter!r} is not a folder. Local participants load PEFT "
                f"adapter folders; for an adapter served by vLLM use `kind: openai` with `model: {p.adapter}`."
            )
        adapters[p.name] = p.adapter
    # The tournament's decoding and seeding settings carry the backend's names; a participant's own settings win.
    fields = {**config.model_dump(include=_SHARED), **participants[0].backend_settings}
    if kind != "transformers":
        fields["kind"] = kind
    return factory.build_backend(factory.BackendSpec(model=model, adapters=adapters, **fields))


def _openai_backend(base_url: str, key_env: str | None, names: list[str], seed: int) -> Backend:
    api_key = None
    if key_env is not None:
        api_key = os.environ.get(key_env)
        if api_key is None:
            raise BackendError(
                f"participants {names}: the API key variable ${key_env} is not set; export it, or drop "
                f"`api_key_env` for a server without keys (a local vLLM)."
            )
    try:
        return factory.build_backend(factory.BackendSpec(kind="openai", base_url=base_url, api_key=api_key, seed=seed))
    except ImportError as e:  # the openai package missing from this install
        raise BackendError(
            f"participants {names} play through an OpenAI-compatible endpoint, which needs the openai package; "
            f"it cannot be imported in this install ({e}). Install it, or remove those participants."
        ) from None
