"""RLOO (REINFORCE Leave-One-Out, as in TRL's ``RLOOTrainer``): ``algorithm: rloo``.

Each answer's advantage is its reward minus the mean reward of the *other* answers of its set: the same learner,
seat and group of games (a group's games share seed and seating, see ``group_size``)::

    A_i = r_i - (sum_j r_j - r_i) / (k - 1)        k = the set's size

The baseline never includes the answer itself, so the estimate is unbiased without a critic. A set of one answer
has no baseline and gets advantage 0 (no gradient). The loss is REINFORCE's, on-policy and unclipped: minus the
advantage times the answer's mean token log-probability (tempered as it was sampled), averaged over the learner's
answers; one optimizer step per update. ``normalize_advantages`` is not applied: RLOO's advantages are already
centred per set.

This file is the whole algorithm: the loop (:class:`~llmmarl.train.loop.MultiAgentTrainer`) plays the rollout,
builds each learner's samples, checkpoints and exports; it is registered in :mod:`llmmarl.train`.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from llmmarl.backends.base import RolloutEngine
from llmmarl.records import EpisodeRecord
from llmmarl.train.adapters import adapter_parameters
from llmmarl.train.checkpoint import AdamWHolder
from llmmarl.train.config import TrainConfig
from llmmarl.train.logprobs import answer_logprobs, per_answer
from llmmarl.train.loop import MultiAgentTrainer
from llmmarl.train.rollout import TurnSample, split, subsample

__all__ = ["MultiAgentRLOO", "leave_one_out"]


def leave_one_out(samples: Sequence[TurnSample]) -> None:
    """Set every sample's ``advantage`` to its reward minus the mean of the others in its (learner, group, seat)
    set, in place; 0 for a sample alone in its set."""
    sets: dict[tuple[str, int, str], list[TurnSample]] = defaultdict(list)
    for s in samples:
        sets[(s.learner, s.group, s.seat)].append(s)
    for members in sets.values():
        k, total = len(members), sum(s.reward for s in members)
        for s in members:
            s.advantage = s.reward - (total - s.reward) / (k - 1) if k > 1 else 0.0


class MultiAgentRLOO(MultiAgentTrainer):
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
        self.optims = {
            name: AdamWHolder(adapter_parameters(self.model, name), cfg.learning_rate) for name in self.learners
        }
        self.rng = random.Random(cfg.seed)  # the update's subsampling; reseeded by begin_update

    def optimizers(self) -> Mapping[str, AdamWHolder]:
        return self.optims

    def log(self, learner: str, metrics: dict[str, float]) -> dict[str, Any]:
        return dict(metrics)  # metrics.jsonl only

    def begin_update(self, episodes: Sequence[EpisodeRecord]) -> None:
        self.rng = random.Random(f"{self.cfg.seed}/{self.step}/rloo")

    def learn(self, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        cfg, opt = self.cfg, self.optims[learner]
        leave_one_out(samples)
        batch = subsample(samples, cfg.max_samples_per_learner, self.rng)  # after the baselines saw every answer
        metrics = {"rloo/advantage_abs": sum(abs(s.advantage) for s in samples) / max(len(samples), 1)}
        if batch:  # none if every game broke, or the learner never reached an LLM turn
            self.model.set_adapter(learner)  # PEFT: this adapter's weights are the trainable ones
            self.model.train()
            loss, pad = 0.0, self.tokenizer.pad_token_id
            ordered = sorted(batch, key=lambda s: len(s.prompt_ids) + len(s.completion_ids))  # less padding
            for micro in split(ordered, -(-len(ordered) // cfg.micro_batch_size)):
                # pi / mu of each answer under label-level exploration (llmmarl.train.exploration); 1 without it
                advantages = torch.tensor([s.advantage * s.weight for s in micro], device=self.device)
                scored = answer_logprobs(self.model, micro, pad, cfg.temperature, self.device, cfg.shared_prefix)
                part = -(advantages * per_answer(scored.token, scored.mask)).sum() / len(batch)
                part.backward()  # gradients of the micro-batches add up to the batch mean's
                loss += float(part.detach())
            norm = opt.step(cfg.max_grad_norm)
            self.model.eval()
            metrics |= {"loss": loss, "grad_norm": norm, "learning_rate": cfg.learning_rate}
        opt.state.global_step += 1  # the optimizer's count equals the update count
        return metrics
