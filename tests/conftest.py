"""Shared fixtures. `CannedBackend` stands in for a model's *text* so tests can feed exact (also hostile) outputs
to the runner; everything downstream of the text - parsing, re-asks, messages, predictions - runs for real."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from llmmarl.backends.base import Generation, GenerationRequest, word_truncate
from llmmarl.train.samples import TurnSample


def lowest_legal(request: GenerationRequest) -> str:
    """The smallest legal label listed in the prompt's 'Legal actions:' line."""
    user = [m["content"] for m in request.messages if m["role"] == "user"][-1]
    m = re.search(r"(?:Legal actions:|exactly one of:) (.*)", user)
    assert m, user
    return m.group(1).split(", ")[0]


# The turn-ablation harness at its smallest: one update of two games, one seed (``--set`` overrides; later ones win).
ABLATION_SMOKE = [
    "train.model=tiny",
    "train.steps=1",
    "train.games_per_update=2",
    "train.group_size=2",
    "train.max_samples_per_learner=4",
    "train.eval_games=2",
    "train.max_new_tokens=16",
    "seeds=[0]",
]


def run_ablation(config: str, tmp: Path, arms: str | None = None, extra: Sequence[str] = ()) -> str:
    """Run ``scripts/ablate_turn.py CONFIG`` under :data:`ABLATION_SMOKE` plus ``extra``, runs and report in
    ``tmp``; fails the test if it fails, else returns its stdout."""
    root = Path(__file__).resolve().parent.parent
    sets = [*ABLATION_SMOKE, f"output_dir={tmp / 'runs'}", f"report_dir={tmp / 'report'}", *extra]
    cmd = [sys.executable, str(root / "scripts/ablate_turn.py"), str(root / config), "--quiet"]
    cmd += ["--arms", arms] if arms else []
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


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
