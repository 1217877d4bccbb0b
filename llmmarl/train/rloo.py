"""RLOO (REINFORCE Leave-One-Out, as in TRL's ``RLOOTrainer``): ``algorithm: rloo``.

Each answer's advantage is its reward minus the mean reward of the *other* answers of its set: the same learner,
seat and group of games (a group's games share seed and seating, see ``group_size``)::

    A_i = r_i - (sum_j r_j - r_i) / (k - 1)        k = the set's size

The baseline never includes the answer itself, so the estimate is unbiased without a critic. A set of one answer
has no baseline and gets advantage 0 (no gradient). The loss is REINFORCE's, on-policy and unclipped: minus the
advantage times the answer's mean token log-probability (tempered as it was sampled), averaged over the learner's
answers; one optimizer step per update. ``normalize_advantages`` is not applied: RLOO's advantages are already
centred per set.

This file is the whole algorithm, an estimator (:func:`~llmmarl.train.advantages.leave_one_out`) and a loss on
:class:`~llmmarl.train.policy_gradient.PolicyGradientTrainer`: the loop plays the rollout, builds each learner's
samples, checkpoints and exports; it is registered in :mod:`llmmarl.train`.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from llmmarl.backends.base import RolloutEngine
from llmmarl.train.advantages import leave_one_out
from llmmarl.train.batch import Batch
from llmmarl.train.config import TrainConfig
from llmmarl.train.logprobs import answer_logprobs, per_answer
from llmmarl.train.policy_gradient import PolicyGradientTrainer
from llmmarl.train.samples import TurnSample

__all__ = ["MultiAgentRLOO"]


class MultiAgentRLOO(PolicyGradientTrainer):
    """RLOO for every learner of a :class:`TrainConfig` (``algorithm: rloo``), from shared rollouts."""

    algorithm: ClassVar[str] = "rloo"

    def __init__(self, cfg: TrainConfig, backend: RolloutEngine | None = None, progress: bool = True) -> None:
        if cfg.group_size < 2:
            raise ValueError("algorithm: rloo compares the games of a group: set group_size >= 2")
        if cfg.rollout_backend != "transformers":
            raise ValueError(
                "algorithm: rloo trains on-policy without an importance correction: use rollout_backend: transformers"
            )
        super().__init__(cfg, backend, progress)

    def estimate(self, samples: list[TurnSample]) -> dict[str, float]:
        leave_one_out(samples)
        return {"rloo/advantage_abs": sum(abs(s.advantage) for s in samples) / max(len(samples), 1)}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        scored = answer_logprobs(
            self.model, batch.samples, self.tokenizer.pad_token_id, cfg.temperature, self.device, cfg.shared_prefix
        )
        return -(batch.advantages(self.device) * per_answer(scored.token, scored.mask)).sum() / batch.total, {}
