"""Training: multi-agent GRPO (through TRL) or turn-level PPO, one LoRA adapter per learner.

``config`` (what to run) -> ``lineup`` (who plays whom) -> runner -> ``rollout`` (samples, reward terms) ->
``grpo`` (baselines, TRL steps) or ``ppo`` (``critic``, ``gae``, clipped steps) -> ``loop`` (monitors, evaluation)
-> ``checkpoint`` (resume, adapters/ + manifest.json). ``league`` keeps the pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmmarl.train.config import TrainConfig

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer

__all__ = ["TrainConfig", "train"]


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> MultiAgentTrainer:
    """Train ``cfg`` with the trainer of its ``algorithm``; returns the trainer for inspection."""
    # Imported here: the trainers load torch and (GRPO) TRL, which takes seconds.
    if cfg.algorithm == "ppo":
        from llmmarl.train.ppo import train as train_ppo

        return train_ppo(cfg, resume, progress)
    from llmmarl.train.grpo import train as train_grpo

    return train_grpo(cfg, resume, progress)
