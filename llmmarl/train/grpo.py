"""Multi-agent GRPO (``algorithm: grpo``): one shared PeftModel, one named LoRA adapter and one TRL trainer per
learner.

The run around the updates (lineups, league, evaluation, checkpoints, export) is :mod:`llmmarl.train.loop`'s; the
estimator is :func:`~llmmarl.train.advantages.group_relative`; the loss and the optimizer steps are TRL's, reached
through :mod:`llmmarl.train.trl_adapter` (the one module that touches TRL, and lists how). An update is::

    episodes = Runner(backend).play(matches)          # ONE rollout: every game of the update, all learners at once
    samples  = episodes_to_samples(episodes, ...)     # each learner's own turns, with reward terms
    group_relative(samples[name], credit=...)         # our baselines: group / role / agent
    for name, trainer in trainers.items():            # steps_per_update optimizer steps per learner (default 1)
        trainer.update(samples[name])                 # TRL's loss on our samples and advantages

The rollout engine plays the games with the current adapters (an in-process engine shares the trainers' model
object; a separate one gets each update's adapters through ``refresh_adapters``), so every learner is trained
on-policy from the same games.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from llmmarl.backends.base import RolloutEngine
from llmmarl.records import EpisodeRecord
from llmmarl.train.advantages import group_relative, imitation_weights
from llmmarl.train.algorithm_settings import GRPOSettings
from llmmarl.train.checkpoint import OptimizerHolder
from llmmarl.train.config import TrainConfig
from llmmarl.train.loop import MultiAgentTrainer, run
from llmmarl.train.samples import TurnSample, subsample
from llmmarl.train.trl_adapter import AgentGRPOTrainer, grpo_args

__all__ = ["MultiAgentGRPO", "train"]


# ---- the loop --------------------------------------------------------------------------------------------------
class MultiAgentGRPO(MultiAgentTrainer):
    """Multi-agent GRPO: one :class:`AgentGRPOTrainer` per learner, all stepped on the same rollout.

    Its arguments are :class:`~llmmarl.train.loop.MultiAgentTrainer`'s.
    """

    algorithm: ClassVar[str] = "grpo"

    def __init__(self, cfg: TrainConfig, backend: RolloutEngine | None = None, progress: bool = True) -> None:
        super().__init__(cfg, backend, progress)
        self.trainers = {
            lr.name: AgentGRPOTrainer(
                self.model,
                lr.name,
                grpo_args(cfg, lr.name, self.device, self.model.dtype),
                self.tokenizer,
                self.settings.beta,
            )
            for lr in cfg.learners
        }
        self.role_baselines: dict[str, float] = {}
        self.rng = random.Random(cfg.seed)  # the update's subsampling; reseeded by begin_update
        for trainer in self.trainers.values():
            trainer.importance, trainer.importance_cap = cfg.vllm.importance, cfg.vllm.importance_cap
            trainer.shared_prefix = cfg.shared_prefix

    @property
    def settings(self) -> GRPOSettings:
        """The config's ``grpo:`` block (validation fills it in for ``algorithm: grpo``)."""
        return self.cfg.settings_of(GRPOSettings)

    def optimizers(self) -> Mapping[str, OptimizerHolder]:
        return self.trainers

    def log(self, learner: str, metrics: dict[str, float]) -> dict[str, Any]:
        trainer = self.trainers[learner]
        trainer.log(metrics)  # TRL adds its own (entropy, rewards/<term>, completion lengths) and reports
        return dict(trainer.state.log_history[-1])

    def json_state(self) -> dict[str, Any]:
        return {"role_baselines": self.role_baselines}

    def load_json_state(self, state: dict[str, Any]) -> None:
        self.role_baselines = state["role_baselines"]

    @property
    def in_warmup(self) -> bool:
        """Whether the current update is one of the format warm-up updates (``grpo.warmup_updates``)."""
        return self.state.step < self.settings.warmup_updates

    @property
    def constrained_rollout(self) -> bool:
        return self.in_warmup  # format warm-up: constrained answers, imitated

    def begin_update(self, episodes: Sequence[EpisodeRecord]) -> None:
        self.rng = random.Random(f"{self.cfg.seed}/{self.state.step}/subsample")

    def learn(self, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        """Advantages from the baselines of ``grpo.credit``, then ``grpo.steps_per_update`` TRL steps."""
        cfg, settings, trainer = self.cfg, self.settings, self.trainers[learner]
        group_relative(
            samples, settings.credit, cfg.normalize_advantages, self.role_baselines, settings.role_baseline_ema
        )
        warmup = self.in_warmup
        if warmup:  # imitate the constrained answers, the better ones more
            imitation_weights(samples)
        batch = subsample(samples, cfg.max_samples_per_learner, self.rng)
        metrics = {"warmup": float(warmup)}
        if batch:  # none if every game broke, or the learner never reached an LLM turn
            metrics.update(
                trainer.update(batch, cfg.micro_batch_size, settings.steps_per_update, self.corrects_engine_mismatch)
            )
        else:
            trainer.state.global_step += 1  # keep every adapter's step count equal to the update count
        return metrics


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> MultiAgentGRPO:
    """Train ``cfg`` to the end (resuming from ``output_dir`` if asked); returns the trainer for inspection."""
    return run(MultiAgentGRPO, cfg, resume, progress)
