"""A new backend in one file: anything with ``generate``, ``truncate`` and ``adapters`` answers LLM agents.

This one plays the first legal action it finds in the prompt, in the turn format the parser reads. A real backend
would send the chat to a model; the runner, re-asks, parsing and records stay the same.

:func:`build` makes it a backend kind every caller can name, ``toy_backend:build`` (with this folder importable)::

    PYTHONPATH=examples llmmarl play tictactoe_v3 --backend toy_backend:build

or ``register_backend("first_legal", build)`` in your own code, then ``--backend first_legal``, a tournament
participant's ``backend: first_legal``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llmmarl.backends.base import Generation, GenerationRequest, word_truncate
from llmmarl.backends.factory import BackendSpec


class FirstLegalBackend:
    """Satisfies :class:`llmmarl.backends.base.Backend`; counts the batched calls it gets."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    @property
    def adapters(self) -> list[str]:
        return []  # no LoRA adapters: agents with ``adapter=`` are refused by the runner with a clear error

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(len(requests))
        return [self._answer(r) for r in requests]

    def truncate(self, text: str, max_tokens: int) -> str:
        return word_truncate(text, max_tokens)

    @staticmethod
    def _answer(request: GenerationRequest) -> Generation:
        prompt = request.messages[-1]["content"]
        legal = re.search(r"(?:Legal actions:|exactly one of:) (.*)", prompt)
        action = legal.group(1).split(", ")[0] if legal else "?"
        text = f"PLAN: take the first legal move.\nACTION: {action}"
        # No token ids or logprobs: this backend cannot be trained through, only played with.
        return Generation(text=text, prompt_ids=[], completion_ids=[], logprobs=[], finish_reason="stop")


def build(spec: BackendSpec) -> FirstLegalBackend:
    """The builder of the kind: it reads nothing of ``spec`` (no model, no adapters)."""
    return FirstLegalBackend()
