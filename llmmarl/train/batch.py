"""What a loss is computed on: :class:`Batch`, a micro-batch of one learner's samples, and :func:`micro_batches`,
the one way every algorithm cuts an optimizer step's samples into micro-batches whose gradients add up.

A sample is a :class:`~llmmarl.train.samples.TurnSample`: its prompt and answer tokens, the engine's log-probs of
the answer, the reward terms and reward, the advantage its algorithm's estimator set
(:mod:`llmmarl.train.advantages`) and its exploration weight. :func:`~llmmarl.train.logprobs.answer_logprobs` scores
a batch's answers under the learner's adapter (tokens, mask, tempered log-softmax).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from llmmarl.train.samples import TurnSample, split

__all__ = ["Batch", "answer_length", "micro_batches"]

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """A micro-batch of one learner's samples, and how many samples its optimizer step has in all: a loss divides
    by ``total`` so that the micro-batches' gradients add up to the step's mean."""

    learner: str
    samples: list[TurnSample]
    total: int

    def advantages(self, device: str | torch.device) -> torch.Tensor:
        """(B,) each answer's advantage times its weight (pi / mu under label-level exploration; 1 without it)."""
        return torch.tensor([s.advantage * s.weight for s in self.samples], device=device)


def answer_length(s: TurnSample) -> int:
    """A sample's row length in a learner pass: prompt and answer tokens."""
    return len(s.prompt_ids) + len(s.completion_ids)


def micro_batches(
    items: Sequence[T], size: int, length: Callable[[T], int] | None = None, even: bool = True
) -> list[list[T]]:
    """``items`` in micro-batches of at most ``size``.

    ``length``: sort by it first, so that rows of similar length share a batch (less padding; the order of a
    summed gradient's parts does not change it). ``even``: as many batches as needed, of about equal sizes;
    otherwise batches of exactly ``size`` and a smaller last one.
    """
    ordered = sorted(items, key=length) if length is not None else list(items)
    if even:
        return split(ordered, math.ceil(len(ordered) / size))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]
