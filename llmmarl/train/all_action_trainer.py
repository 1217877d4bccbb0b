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

The loss is :func:`~llmmarl.train.all_action.all_action_loss`; one AdamW step per update. Reward terms other than
the game's (format, predictions...) do not enter: Q is the game's return. Not yet measured against GRPO.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from llmmarl.agents.scripted import make_policy
from llmmarl.backends.base import RolloutEngine
from llmmarl.envs import make
from llmmarl.eval.q_values import q_values
from llmmarl.records import EpisodeRecord
from llmmarl.train.adapters import adapter_parameters
from llmmarl.train.all_action import Weighting, all_action_advantages, all_action_loss
from llmmarl.train.checkpoint import AdamWHolder
from llmmarl.train.config import TrainConfig
from llmmarl.train.exploration import canonical_path
from llmmarl.train.logprobs import answer_logprobs
from llmmarl.train.loop import MultiAgentTrainer
from llmmarl.train.rollout import TurnSample, subsample

__all__ = ["MultiAgentAllAction"]


class MultiAgentAllAction(MultiAgentTrainer):
    """The all-action estimator for every learner of a :class:`TrainConfig` (``algorithm: all_action``)."""

    algorithm: ClassVar[str] = "all_action"
    weighting: Weighting = "policy"  # see llmmarl.train.all_action

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
        self.optims = {
            name: AdamWHolder(adapter_parameters(self.model, name), cfg.learning_rate) for name in self.learners
        }
        self.rng = random.Random(cfg.seed)
        self.q: dict[tuple[int, str], dict[str, float]] = {}  # (game id, seat) -> label -> Q, this update's

    def optimizers(self) -> Mapping[str, AdamWHolder]:
        return self.optims

    def log(self, learner: str, metrics: dict[str, float]) -> dict[str, Any]:
        return dict(metrics)  # metrics.jsonl only

    def begin_update(self, episodes: Sequence[EpisodeRecord]) -> None:
        self.rng = random.Random(f"{self.cfg.seed}/{self.step}/all_action")
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

    def learn(self, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        cfg, opt = self.cfg, self.optims[learner]
        decisions = [s for s in samples if s.attempt == 0 and (s.game_id, s.seat) in self.q]
        batch = subsample(decisions, cfg.max_samples_per_learner, self.rng)
        metrics: dict[str, float] = {}
        if batch:
            self.model.set_adapter(learner)  # PEFT: this adapter's weights are the trainable ones
            self.model.train()
            loss, values = 0.0, 0.0
            for micro in _chunks(batch, cfg.micro_batch_size):
                logp, q, mask = self._label_logprobs(micro)
                part = all_action_loss(logp, q, mask, self.weighting) * len(micro) / len(batch)
                part.backward()  # gradients of the micro-batches add up to the batch mean's
                loss += float(part.detach())
                values += float(all_action_advantages(logp, q, mask)[1].sum())
            norm = opt.step(cfg.max_grad_norm)
            self.model.eval()
            metrics |= {
                "loss": loss,
                "grad_norm": norm,
                "learning_rate": cfg.learning_rate,
                "all_action/value": values / len(batch),
            }
        opt.state.global_step += 1  # the optimizer's count equals the update count
        return metrics

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


def _chunks(items: Sequence[TurnSample], size: int) -> list[list[TurnSample]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
