"""Training: multi-agent GRPO (through TRL), turn-level PPO or RLOO, one LoRA adapter per learner.

``config`` (what to run) -> ``lineup`` (who plays whom) -> ``playing`` (the games, on the run's engine) ->
``rollout`` (samples, reward terms) -> ``grpo`` (baselines, TRL steps), ``ppo`` (``critic``, ``gae``, clipped
steps) or ``rloo`` -> ``loop`` (the update and the run) -> ``evaluation`` -> ``saving`` (checkpoints, resume,
adapters/ + manifest.json). ``league`` keeps the pool; ``adapters`` builds the learner model.

Algorithms are registered by name (:func:`register_algorithm`): a config's ``algorithm:`` picks the trainer class.
A new algorithm is a :class:`~llmmarl.train.loop.MultiAgentTrainer` subclass plus one registration; see
docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

from llmmarl.train.config import TrainConfig

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer

__all__ = ["TrainConfig", "algorithms", "register_algorithm", "train", "trainer_class"]

#: Algorithm name -> a function returning its trainer class. Loaded on first use: the trainers import torch and
#: (GRPO) TRL, which takes seconds, and a config must validate without them.
_ALGORITHMS: dict[str, Callable[[], type[MultiAgentTrainer]]] = {}


def register_algorithm(name: str, trainer: Callable[[], type[MultiAgentTrainer]]) -> None:
    """Make ``algorithm: name`` in a config train with the class ``trainer()`` returns (replaces a same name)."""
    _ALGORITHMS[name] = trainer


def algorithms() -> list[str]:
    """The registered algorithm names."""
    return sorted(_ALGORITHMS)


def trainer_class(name: str) -> type[MultiAgentTrainer]:
    """The trainer class of a registered algorithm; a clear error for an unknown name."""
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; registered: {', '.join(algorithms())}")
    return _ALGORITHMS[name]()


def _builtin(module: str, cls: str) -> Callable[[], type[MultiAgentTrainer]]:
    return lambda: getattr(import_module(module), cls)  # type: ignore[no-any-return]


register_algorithm("grpo", _builtin("llmmarl.train.grpo", "MultiAgentGRPO"))
register_algorithm("ppo", _builtin("llmmarl.train.ppo", "MultiAgentPPO"))
register_algorithm("rloo", _builtin("llmmarl.train.rloo", "MultiAgentRLOO"))
register_algorithm("all_action", _builtin("llmmarl.train.all_action_trainer", "MultiAgentAllAction"))


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> MultiAgentTrainer:
    """Train ``cfg`` with the trainer of its ``algorithm``; returns the trainer for inspection."""
    from llmmarl.train.loop import run

    return run(trainer_class(cfg.algorithm), cfg, resume, progress)
