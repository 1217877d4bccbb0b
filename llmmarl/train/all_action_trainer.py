"""``algorithm: all_action``: the all-action estimator (:mod:`llmmarl.train.all_action`) trained on single-decision
games with ACTION-only turns under the grammar (the probes' bandits).

The rollout is played as for every algorithm; the answers sampled only pick which states are trained on. At each
of a learner's decisions:

* **Q(s, a)** of every legal label is its immediate return: the game is reset to the episode's seed (the state the
  decision was taken in) and branched on every label with :func:`~llmmarl.eval.q_values.q_values` (``m = 1``: the
  game ends at once, no noise). The label that was played must get the return the game paid; a game where it does
  not (more decisions, chance after the move) is refused.
* **pi(a|s)** is read differentiably: the log-probability of each label's canonical spelling
  (:func:`~llmmarl.train.exploration.canonical_path`) under the adapter, at the sampling temperature, normalised
  over the labels (log-softmax), so that the labels' probabilities sum to 1 as the estimator assumes.

The estimator is :func:`~llmmarl.train.advantages.all_action_advantages` and the loss
:func:`~llmmarl.train.all_action.all_action_loss`, on :class:`~llmmarl.train.policy_gradient.PolicyGradientTrainer`
(one AdamW step per update). Reward terms other than
the game's (format, predictions...) do not enter: Q is the game's return. Not yet measured against GRPO.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import torch

from llmmarl.agents.scripted import make_policy
from llmmarl.backends.base import RolloutEngine
from llmmarl.envs import make
from llmmarl.eval.q_values import q_values
from llmmarl.records import EpisodeRecord
from llmmarl.train.advantages import all_action_advantages
from llmmarl.train.algorithm_settings import AllActionSettings
from llmmarl.train.all_action import all_action_loss
from llmmarl.train.batch import Batch, micro_batches
from llmmarl.train.config import TrainConfig
from llmmarl.train.exploration import canonical_path
from llmmarl.train.logprobs import answer_logprobs
from llmmarl.train.policy_gradient import PolicyGradientTrainer
from llmmarl.train.samples import TurnSample

__all__ = ["MultiAgentAllAction"]


class MultiAgentAllAction(PolicyGradientTrainer):
    """The all-action estimator for every learner of a :class:`TrainConfig` (``algorithm: all_action``)."""

    algorithm: ClassVar[str] = "all_action"

    def __init__(self, cfg: TrainConfig, backend: RolloutEngine | None = None, progress: bool = True) -> None:
        if not cfg.constrained or cfg.lines:
            raise ValueError(
                "algorithm: all_action credits every label's canonical ACTION-only answer: set constrained: true "
                "and lines: []"
            )
        if cfg.rollout_backend != "transformers":
            raise ValueError("algorithm: all_action trains on-policy: use rollout_backend: transformers")
        super().__init__(cfg, backend, progress)
        if not self.env.cloneable:
            raise ValueError(f"algorithm: all_action branches the game on every label: {cfg.env} cannot be cloned")
        self.q: dict[tuple[int, str], dict[str, float]] = {}  # (game id, seat) -> label -> Q, this update's

    def begin_update(self, episodes: Sequence[EpisodeRecord]) -> None:
        super().begin_update(episodes)
        self.q = {}
        policy = make_policy("random")  # never moves: the game ends with the branched decision (checked below)
        for ep in episodes:
            if ep.error:
                continue
            if any(t.step != 0 for t in ep.turns):
                raise ValueError(f"algorithm: all_action trains single-decision games; {ep.env} went on after one")
            game = make(self.cfg.env, **self.cfg.env_kwargs)
            game.reset(seed=ep.seed)
            for turn in ep.turns:
                q = q_values(game, turn.seat, None, policy, m=1, seed=ep.seed)
                values = {label: e.mean for label, e in q.items()}
                if abs(values[turn.action] - ep.returns[turn.seat]) > 1e-9:
                    raise ValueError(
                        f"{ep.env}: the replayed decision pays {values[turn.action]} for {turn.action!r}, the game "
                        f"paid {ep.returns[turn.seat]}: Q(s, a) is not the immediate return here"
                    )
                self.q[(int(ep.game_id), turn.seat)] = values

    def estimate(self, samples: list[TurnSample]) -> dict[str, float]:
        return {}  # A(s, a) needs pi(a|s) under the adapter: the loss computes it, from Q of begin_update

    def trainable(self, samples: list[TurnSample]) -> list[TurnSample]:
        return [s for s in samples if s.attempt == 0 and (s.game_id, s.seat) in self.q]  # one per decision

    def micro_batches(self, batch: Sequence[TurnSample]) -> list[list[TurnSample]]:
        return micro_batches(batch, self.cfg.micro_batch_size, even=False)  # a decision's rows are its labels'

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logp, q, mask = self._label_logprobs(batch.samples)
        value = float(all_action_advantages(logp, q, mask)[1].sum())
        weighting = self.cfg.settings_of(AllActionSettings).weighting
        return all_action_loss(logp, q, mask, weighting) * len(batch.samples) / batch.total, {"all_action/value": value}

    def _label_logprobs(self, micro: Sequence[TurnSample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decisions, labels) log pi(a|s) with gradient, Q and the legal mask of ``micro``'s decisions."""
        tables = [self.q[(s.game_id, s.seat)] for s in micro]
        width = max(len(t) for t in tables)
        rows = [
            dataclasses.replace(s, completion_ids=canonical_path(self.tokenizer, label))
            for s, table in zip(micro, tables, strict=True)
            for label in table
        ]
        scored = answer_logprobs(
            self.model, rows, self.tokenizer.pad_token_id, self.cfg.temperature, self.device, self.cfg.shared_prefix
        )
        path = (scored.token * scored.mask).sum(dim=1)  # log-probability of each label's canonical spelling
        logp = torch.full((len(micro), width), float("-inf"), device=path.device)
        q = torch.zeros((len(micro), width), device=path.device)
        mask = torch.zeros((len(micro), width), dtype=torch.bool, device=path.device)
        at = 0
        for i, table in enumerate(tables):
            n = len(table)
            logp[i, :n] = torch.log_softmax(path[at : at + n], dim=0)
            q[i, :n] = torch.tensor(list(table.values()), device=path.device)
            mask[i, :n] = True
            at += n
        return logp, q, mask
