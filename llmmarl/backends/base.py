"""The backend contracts: :class:`Backend` answers chat requests; :class:`RolloutEngine` also serves training.

Every consumer (runner, trainers, tournaments) talks to models only through these. A backend turns chat messages
into text *and* returns the token ids and per-token logprobs of what it generated, because training needs them.
Implementations: :mod:`llmmarl.backends.transformers` (one base model, many PEFT LoRA adapters, in-process) and
:mod:`llmmarl.backends.openai` (any OpenAI-compatible endpoint, e.g. our vLLM server). One function,
:func:`llmmarl.backends.factory.build_backend`, builds them for the CLI, tournaments and training.

The rollout engine of a trainer
-------------------------------
A trainer (:mod:`llmmarl.train.loop`) holds two things: its *learner model* (a torch model with one LoRA adapter per
learner, which its optimizers step) and a :class:`RolloutEngine` that plays the games. It never reads an engine's
fields; the whole conversation is::

    engine = build_backend(BackendSpec(model=cfg.model, ...))   # or any RolloutEngine the caller passes
    base = engine.learner_model()            # in-process engine: its own model, trained in place; else None and
                                             # the trainer loads its own copy of the base model
    model = add LoRA adapters to base        # one per learner (+ PPO's critics)
    engine.use_model(model) if base is not None else engine.refresh_adapters(model, learners, version=0)
    for update in 1, 2, ...:
        games = Runner(engine).play(...)     # engine.generate: text, token ids, logprobs per answer
        ...optimizer steps on model...
        engine.refresh_adapters(model, learners, version=update)   # the next games see the new weights
    engine.load_adapter(name, folder) / engine.unload_adapter(name)  # frozen opponents, league snapshots
    checkpoint: engine.state_dict(); resume: engine.load_state_dict(state)

Two kinds of engine fit:

* **In-process, colocated** (:class:`~llmmarl.backends.transformers.TransformersBackend`): the learner model *is*
  the engine's model; ``learner_model()`` returns it, adapters the trainer adds are served at once, and
  ``refresh_adapters`` only drops what was cached under the old weights (the prefix cache).
* **Separate** (e.g. a vLLM server): ``learner_model()`` is None. ``refresh_adapters`` saves each named adapter of
  the trainer's model to a new folder and hot-loads it under a new id for that ``version`` (reusing an id or a
  folder would keep serving the old weights from the engine's caches), so that requests naming ``name`` reach the
  newest version; the engine unloads stale versions. Its logprobs come from the engine, as every backend's do.
  ``TransformersBackend(colocate=False)`` behaves this way in-process, which tests the path on a CPU.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

ChatMessage = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


class GenerationRequest(BaseModel):
    """One decision to generate: a chat, which adapter answers it, and how to decode."""

    model_config = ConfigDict(frozen=True)

    messages: list[ChatMessage] = Field(description="The chat so far; the backend applies the chat template.")
    adapter: str | None = Field(None, description="Name of the LoRA adapter that answers; None = the base model.")
    max_new_tokens: int = Field(96, ge=1, description="Generation stops after this many new tokens.")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    grammar: str | None = Field(
        None, description="EBNF grammar (xgrammar/vLLM syntax) the output must follow; None = unconstrained."
    )
    choices: list[str] | None = Field(
        None,
        description="The answer is exactly one of these texts, spelled in the tokenizer's own tokens (one token path "
        "per answer; see backends/choices.py); replaces grammar. A server that cannot hold to the tokens takes "
        "them as a choice of texts.",
    )
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**31,
        description="Sampling seed of this request alone, so its draw does not depend on the batch it shares "
        "(the runner derives it from the game's seed, turn, seat and attempt); None = the backend's own seeding.",
    )


class Generation(BaseModel):
    """What a backend produced for one request."""

    text: str = Field(description="The decoded completion, special tokens removed.")
    prompt_ids: list[int] = Field(description="Token ids of the templated prompt (empty if the server hides them).")
    completion_ids: list[int] = Field(description="Token ids generated, including the stop token if one was hit.")
    logprobs: list[float] = Field(
        description="Log-probability of each completion token under the model's untempered distribution "
        "(the quantity trainers compare against); empty if the server did not return them."
    )
    finish_reason: Literal["stop", "length"] = Field(description="stop: an end token; length: max_new_tokens.")
    error: str | None = Field(
        None,
        description="Set when the server gave no usable answer (an outage or a malformed response, not the "
        "model's choice): why. ``text`` is then empty and the decision is not the model's.",
    )
    adapter_version: str | None = Field(
        None, description="Stamp (hash) of the adapter weights that produced it, set by distributed rollout workers."
    )

    # Model text goes into prompts, teammates' inboxes, JSONL, SQLite, terminals and HTML: make it safe once, here.
    @field_validator("text")
    @classmethod
    def _safe(cls, text: str) -> str:
        return safe_text(text)

    @classmethod
    def failed(cls, reason: str) -> Generation:
        """The stand-in for a request the server did not answer."""
        return cls(text="", prompt_ids=[], completion_ids=[], logprobs=[], finish_reason="stop", error=reason)


@runtime_checkable
class Backend(Protocol):
    """Anything that can answer a batch of :class:`GenerationRequest`.

    Optional members the rest of the package reads when a backend has them: ``tokenizer`` (the base model's
    Hugging Face tokenizer, see :class:`RolloutEngine`) and ``special_tokens`` (the control strings of the model(s)
    it answers with). A backend that wraps others (routes requests, stamps answers) has no tokenizer of its own and
    must expose ``special_tokens``: the union of :func:`special_tokens` of what it wraps, so that teammates' messages
    are cleaned of them whichever wrapper the runner holds.
    """

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer every request; the i-th generation answers the i-th request. Must batch internally."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """Cut ``text`` to at most ``max_tokens`` tokens of this backend's tokenizer (message budgets)."""
        ...

    @property
    def adapters(self) -> list[str]:
        """Names of the adapters requests may name."""
        ...


@runtime_checkable
class RolloutEngine(Backend, Protocol):
    """A :class:`Backend` that a trainer can play its rollouts with (see the module docs for the sequence of calls)."""

    @property
    def tokenizer(self) -> Any:
        """The base model's Hugging Face tokenizer: trainers build inputs with it (same ids the engine generates)."""
        ...

    @property
    def device(self) -> str:
        """Where the engine computes: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (a server engine: its own device)."""
        ...

    def learner_model(self) -> Any | None:
        """The engine's own torch model when a trainer may train it in place (in-process engine), else None."""
        ...

    def use_model(self, model: Any) -> None:
        """Generate with ``model`` from now on: the trainer's PEFT-wrapped version of :meth:`learner_model`."""
        ...

    def load_adapter(self, name: str, path: str | Path, version: int | None = None) -> None:
        """Serve the PEFT adapter folder ``path`` under ``name`` (replacing what ``name`` served).

        ``version`` tells versions of one adapter apart (an engine that caches by folder or id needs it); None = a
        fixed adapter (frozen opponent, league snapshot)."""
        ...

    def unload_adapter(self, name: str) -> None:
        """Stop serving ``name`` and free what it holds; unknown names are ignored."""
        ...

    def refresh_adapters(self, model: Any, names: Sequence[str], version: int) -> None:
        """After an update: requests naming any of ``names`` are answered with ``model``'s current adapter weights.

        ``version`` increases with every call (the trainer's update count); an engine that reloads adapters uses
        it to give each new version a folder and an id of its own."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for a resumed run to continue as the killed one would (e.g. seeding counters)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class AnswerQuery(BaseModel):
    """A request whose answers are to be read with their probabilities instead of sampled."""

    model_config = ConfigDict(frozen=True)

    request: GenerationRequest = Field(description="The request as it would be generated (grammar and decoding too).")
    prefix_ids: list[int] = Field(
        default_factory=list,
        description="Answer tokens already fixed (e.g. a sampled PLAN line); the distribution is of what follows "
        "them. Empty: the whole answer.",
    )


class AnswerDistribution(BaseModel):
    """Every answer a request can get, with the probability that generation produces it."""

    answers: dict[str, float] = Field(
        description="Decoded answer text (prefix included, special tokens removed) -> probability. Token paths "
        "that spell the same text are summed."
    )
    unexplored: float = Field(
        description="Probability of the answers the reader did not follow to their end (too improbable): the "
        "answers' probabilities plus this sum to 1, and this bounds the error of each."
    )
    nodes: int = Field(0, description="Answer prefixes scored to read it (the reader's work).")


@runtime_checkable
class AnswerReader(Backend, Protocol):
    """Optional capability of a :class:`Backend`: read the distribution of answers exactly instead of sampling.

    A policy read this way has no sampling error (see :mod:`llmmarl.agents.policy_read`, which maps answers to
    action labels). The in-process transformers backend has it; check with ``isinstance(backend, AnswerReader)``.
    """

    def answer_distribution(self, queries: Sequence[AnswerQuery]) -> list[AnswerDistribution]:
        """The i-th distribution is of the i-th query's answers, under its grammar, temperature and top-p."""
        ...


class BackendError(RuntimeError):
    """A backend could not answer (server down, unknown adapter...). The message says how to fix it."""


# Terminal escape sequences (CSI "ESC [ ... final", OSC "ESC ] ... BEL|ESC \\", two-byte ESC x), then the C0/C1
# control characters left over (NUL included; tab and newline are kept), then UTF-16 surrogates: in a Python str
# a surrogate is always a lone one (a valid pair decodes to one code point), and it cannot be encoded as UTF-8,
# so it would break the next request's body, ``model_dump_json`` and SQLite.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-Z\\-_]?"  # the other two-byte escapes, or a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"  # the one-byte (C1) CSI
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` without terminal escapes, control characters (NUL...) or lone surrogates (each becomes U+FFFD).

    Carriage returns go too: ``\\r`` lets text overwrite a terminal line. Tabs and newlines stay.
    """
    text = _ESCAPES.sub("", text)
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub("\ufffd", text)


def special_tokens(backend: object) -> list[str]:
    """The control strings (``<|im_start|>``, ``<start_of_turn>``...) of the model(s) behind ``backend``: its
    ``special_tokens`` if it says (a wrapper), else its tokenizer's ``all_special_tokens``, else [] (no local one)."""
    tokens = getattr(backend, "special_tokens", None)
    if tokens is None:
        tokenizer = getattr(backend, "tokenizer", None)
        tokens = getattr(tokenizer, "all_special_tokens", None) or []
    return [t for t in tokens if isinstance(t, str) and t.strip()]


def check_adapters(backend: Backend, requests: Sequence[GenerationRequest]) -> None:
    known = set(backend.adapters)
    unknown = sorted({r.adapter for r in requests if r.adapter is not None and r.adapter not in known})
    if unknown:
        raise BackendError(f"unknown adapter(s) {unknown}; this backend has {sorted(known) or 'none'}")


def word_truncate(text: str, max_tokens: int) -> str:
    """Fallback token budget for backends without a tokenizer: whitespace-separated words."""
    return " ".join(text.split()[:max_tokens])
