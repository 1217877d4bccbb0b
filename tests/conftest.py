"""Shared fixtures. `CannedBackend` stands in for a model's *text* so tests can feed exact (also hostile) outputs
to the runner; everything downstream of the text - parsing, re-asks, messages, predictions - runs for real."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pytest

from llmmarl.backends.base import Generation, GenerationRequest, word_truncate
from llmmarl.train.rollout import TurnSample


def lowest_legal(request: GenerationRequest) -> str:
    """The smallest legal label listed in the prompt's 'Legal actions:' line."""
    user = [m["content"] for m in request.messages if m["role"] == "user"][-1]
    m = re.search(r"(?:Legal actions:|exactly one of:) (.*)", user)
    assert m, user
    return m.group(1).split(", ")[0]


def turn_sample(
    learner: str, group: int, seat: str, reward: float, terms: dict[str, float] | None = None
) -> TurnSample:
    """A one-token answer of ``learner`` in ``seat`` of game ``group`` whose game returned ``reward``."""
    return TurnSample(
        learner=learner,
        game_id=group,
        group=group,
        seat=seat,
        step=0,
        attempt=0,
        messages=[],
        prompt_ids=[1],
        completion_ids=[2],
        logprobs=[0.0],
        usable=True,
        episode_return=reward,
        terms=terms or {},
        reward=reward,
    )


class CannedBackend:
    """Answers each request with ``answer(request)``; counts calls. Satisfies the Backend protocol."""

    def __init__(self, answer: Callable[[GenerationRequest], str]) -> None:
        self.answer = answer
        self.calls: list[int] = []
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(len(requests))
        self.requests.extend(requests)
        return [
            Generation(
                text=self.answer(r), prompt_ids=[1], completion_ids=[2, 3], logprobs=[-0.1, -0.2], finish_reason="stop"
            )
            for r in requests
        ]

    def truncate(self, text: str, max_tokens: int) -> str:
        return word_truncate(text, max_tokens)

    @property
    def adapters(self) -> list[str]:
        return []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need a CUDA device: without one they are skipped, saying so (``-m gpu`` selects them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_backend():
    from llmmarl.backends.transformers import TransformersBackend

    return TransformersBackend("tiny", max_batch_size=16, seed=0)
