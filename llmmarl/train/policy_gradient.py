"""An algorithm as an advantage estimator plus a loss: :class:`PolicyGradientTrainer`.

Per learner and update, :meth:`PolicyGradientTrainer.learn` does what every such algorithm does, and a subclass
supplies the two parts that make it an algorithm::

    metrics = self.estimate(samples)                 # the estimator: advantages on every sample, its monitors
    batch   = subsample(self.trainable(samples))     # at most max_samples_per_learner, after the baselines
    for micro in micro_batches(batch):               # llmmarl.train.batch: one way to cut, for every algorithm
        loss, monitors = self.loss(Batch(learner, micro, len(batch)))
        loss.backward()                              # micro-batch losses add up to the batch's mean
    AdamW step on the learner's adapter (adapter_parameters), clipped at max_grad_norm

RLOO (:mod:`llmmarl.train.rloo`), the all-action estimator (:mod:`llmmarl.train.all_action_trainer`) and
``examples/toy_algorithm.py`` are built this way. GRPO (TRL's loss, :mod:`llmmarl.train.grpo`) and PPO (several
epochs, a critic, :mod:`llmmarl.train.ppo`) step differently, with the same estimators and micro-batching.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from llmmarl.backends.base import RolloutEngine
from llmmarl.records import EpisodeRecord
from llmmarl.train.adapters import adapter_parameters
from llmmarl.train.batch import Batch, answer_length, micro_batches
from llmmarl.train.checkpoint import AdamWHolder
from llmmarl.train.config import TrainConfig
from llmmarl.train.loop import MultiAgentTrainer
from llmmarl.train.samples import TurnSample, subsample

__all__ = ["PolicyGradientTrainer"]


class PolicyGradientTrainer(MultiAgentTrainer):
    """One AdamW step per learner and update on the gradient of :meth:`loss`, after :meth:`estimate`.

    Its arguments are :class:`~llmmarl.train.loop.MultiAgentTrainer`'s. Metrics go to ``metrics.jsonl`` only.
    """

    def __init__(self, cfg: TrainConfig, backend: RolloutEngine | None = None, progress: bool = True) -> None:
        super().__init__(cfg, backend, progress)
        self.optims = {
            name: AdamWHolder(adapter_parameters(self.model, name), cfg.learning_rate) for name in self.learners
        }
        self.rng = random.Random(cfg.seed)  # the update's subsampling; reseeded by begin_update

    # ---- what an algorithm supplies ----------------------------------------------------------------------------
    @abstractmethod
    def estimate(self, samples: list[TurnSample]) -> dict[str, float]:
        """Set every sample's ``advantage`` (an estimator of :mod:`llmmarl.train.advantages`), before subsampling so
        that baselines see every answer; returns the estimator's monitors."""

    @abstractmethod
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch, scaled so that the micro-batches of a step add up to its mean (divide by
        ``batch.total``), and monitors summed over its samples (reported per sample of the step)."""

    def trainable(self, samples: list[TurnSample]) -> list[TurnSample]:
        """The samples the loss is computed on (all of them by default)."""
        return samples

    def micro_batches(self, batch: Sequence[TurnSample]) -> list[list[TurnSample]]:
        """``batch`` cut for the forward/backward passes: similar lengths together, about equal sizes."""
        return micro_batches(batch, self.cfg.micro_batch_size, answer_length)

    # ---- the loop's hooks --------------------------------------------------------------------------------------
    def optimizers(self) -> Mapping[str, AdamWHolder]:
        return self.optims

    def log(self, learner: str, metrics: dict[str, float]) -> dict[str, Any]:
        return dict(metrics)  # metrics.jsonl only

    def begin_update(self, episodes: Sequence[EpisodeRecord]) -> None:
        self.rng = random.Random(f"{self.cfg.seed}/{self.state.step}/{self.algorithm}")

    def learn(self, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        cfg, opt = self.cfg, self.optims[learner]
        metrics = self.estimate(samples)
        batch = subsample(self.trainable(samples), cfg.max_samples_per_learner, self.rng)
        if batch:  # none if every game broke, or the learner never reached an LLM turn
            self.model.set_adapter(learner)  # PEFT: this adapter's weights are the trainable ones
            self.model.train()
            loss, sums = 0.0, defaultdict[str, float](float)
            for micro in self.micro_batches(batch):
                part, monitors = self.loss(Batch(learner, micro, len(batch)))
                part.backward()  # gradients of the micro-batches add up to the batch mean's
                loss += float(part.detach())
                for key, value in monitors.items():
                    sums[key] += value
            norm = opt.step(cfg.max_grad_norm)
            self.model.eval()
            metrics |= {"loss": loss, "grad_norm": norm, "learning_rate": cfg.learning_rate}
            metrics |= {key: value / len(batch) for key, value in sums.items()}
        opt.state.global_step += 1  # the optimizer's count equals the update count
        return metrics
