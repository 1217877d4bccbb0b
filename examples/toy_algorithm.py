"""A new algorithm in one file: REINFORCE with a baseline, its own estimator and its own settings block.

Put this file where Python finds it and name its class in a training config; nothing else is registered or edited::

    algorithm: toy_algorithm:ToyReinforce       # module:Class, as a game from outside is module:factory
    toy_reinforce: {baseline: mean}             # its settings block, under its name (optional: defaults)

An algorithm is an advantage estimator plus a loss (:class:`~llmmarl.train.policy_gradient.PolicyGradientTrainer`):

* the estimator sets each sample's ``advantage`` - here its reward minus the mean reward of the learner's samples of
  this seat in the update (``baseline: mean``), or the reward itself (``baseline: none``). It is registered by name
  beside the built-in ones (:mod:`llmmarl.train.advantages`);
* the loss scores the answers under the learner's adapter at the sampling temperature
  (:func:`~llmmarl.train.logprobs.answer_logprobs`, as every hand-written loss does, with the shared prompt prefix
  computed once) and pushes each answer's mean token log-probability by its advantage.

The base class does the rest, as for RLOO: micro-batches, the AdamW step on the learner's own adapter weights
(:func:`~llmmarl.train.adapters.adapter_parameters`), clipping, subsampling, the optimizer's step count; the shared
loop (:class:`~llmmarl.train.loop.MultiAgentTrainer`) plays the rollout and owns evaluation, checkpoints and export.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field

from llmmarl.train.advantages import register_estimator
from llmmarl.train.algorithm_settings import AlgorithmSettings
from llmmarl.train.batch import Batch
from llmmarl.train.logprobs import answer_logprobs, per_answer
from llmmarl.train.policy_gradient import PolicyGradientTrainer
from llmmarl.train.samples import TurnSample


class ToySettings(AlgorithmSettings):
    """The ``toy_reinforce:`` block of a config."""

    baseline: Literal["mean", "none"] = Field("mean", description="Subtract the seat's mean reward, or nothing.")


@register_estimator("seat_mean")
def seat_mean(samples: Sequence[TurnSample], subtract: bool = True) -> None:
    """Each sample's reward minus the mean reward of its learner's samples in the same seat, in place."""
    seats: dict[tuple[str, str], list[TurnSample]] = defaultdict(list)
    for s in samples:
        seats[(s.learner, s.seat)].append(s)
    for members in seats.values():
        mean = sum(s.reward for s in members) / len(members) if subtract else 0.0
        for s in members:
            s.advantage = s.reward - mean


class ToyReinforce(PolicyGradientTrainer):
    algorithm: ClassVar[str] = "toy_reinforce"  # its runs' name, and the key of its settings block
    settings_model = ToySettings

    def estimate(self, samples: list[TurnSample]) -> dict[str, float]:
        seat_mean(samples, subtract=self.cfg.settings_of(ToySettings).baseline == "mean")
        return {"toy/advantage_abs": sum(abs(s.advantage) for s in samples) / max(len(samples), 1)}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        scored = answer_logprobs(  # (B, K) tempered log-probs of the answer tokens, with gradient
            self.model, batch.samples, self.tokenizer.pad_token_id, cfg.temperature, self.device, cfg.shared_prefix
        )
        logp = per_answer(scored.token, scored.mask)  # (B,): each answer's mean token log-probability
        return -(batch.advantages(self.device) * logp).sum() / batch.total, {
            "toy/answer_logp": float(logp.detach().sum())
        }
