"""The backend contract: generate for a batch of chat requests, each naming its adapter.

Every consumer (runner, trainers, tournaments) talks to models only through :class:`Backend`. A backend turns
chat messages into text *and* returns the token ids and per-token logprobs of what it generated, because
training needs them. Implementations: :mod:`llmmarl.backends.transformers` (one base model, many PEFT LoRA
adapters, in-process) and :mod:`llmmarl.backends.openai` (any OpenAI-compatible endpoint, e.g. our vLLM server).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

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
    """Anything that can answer a batch of :class:`GenerationRequest`."""

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


def check_adapters(backend: Backend, requests: Sequence[GenerationRequest]) -> None:
    known = set(backend.adapters)
    unknown = sorted({r.adapter for r in requests if r.adapter is not None and r.adapter not in known})
    if unknown:
        raise BackendError(f"unknown adapter(s) {unknown}; this backend has {sorted(known) or 'none'}")


def word_truncate(text: str, max_tokens: int) -> str:
    """Fallback token budget for backends without a tokenizer: whitespace-separated words."""
    return " ".join(text.split()[:max_tokens])
