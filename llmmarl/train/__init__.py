"""Training: multi-agent GRPO (through TRL), turn-level PPO or RLOO, one LoRA adapter per learner.

``config`` (what to run) -> ``lineup`` (who plays whom) -> ``engine`` (the games, on the run's engines) ->
``samples`` (samples, reward terms) -> ``grpo`` (baselines, TRL steps), ``ppo`` (``critic``, ``gae``, clipped
steps) or ``rloo`` -> ``loop`` (the update and the run) -> ``evaluation`` -> ``saving`` (checkpoints, resume,
adapters/ + manifest.json). A trainer owns its engine, evaluator and checkpointer, which share the run's counters
(``state``); ``league`` and ``snapshots`` keep the pool; ``adapters`` builds the learner model.

Algorithms are registered by name (:mod:`llmmarl.train.registry`): a config's ``algorithm:`` picks the trainer
class, or loads one from outside the package (``algorithm: your.module:YourTrainer``); see docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

from llmmarl.train.algorithm_settings import AllActionSettings, GRPOSettings, PPOSettings
from llmmarl.train.config import TrainConfig
from llmmarl.train.registry import algorithms, lookup, register_algorithm

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer

__all__ = ["TrainConfig", "algorithms", "register_algorithm", "train", "trainer_class"]


def trainer_class(name: str) -> type[MultiAgentTrainer]:
    """The trainer class of an algorithm (a registered name or ``module:Class``); a clear error for an unknown one."""
    return lookup(name).trainer()


def _builtin(module: str, cls: str) -> Callable[[], type[MultiAgentTrainer]]:
    return lambda: getattr(import_module(module), cls)  # type: ignore[no-any-return]


register_algorithm("grpo", _builtin("llmmarl.train.grpo", "MultiAgentGRPO"), GRPOSettings)
register_algorithm("ppo", _builtin("llmmarl.train.ppo", "MultiAgentPPO"), PPOSettings)
register_algorithm("rloo", _builtin("llmmarl.train.rloo", "MultiAgentRLOO"))
register_algorithm("all_action", _builtin("llmmarl.train.all_action_trainer", "MultiAgentAllAction"), AllActionSettings)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> MultiAgentTrainer:
    """Train ``cfg`` with the trainer of its ``algorithm``; returns the trainer for inspection."""
    from llmmarl.train.loop import run

    return run(trainer_class(cfg.algorithm), cfg, resume, progress)
