"""Training: multi-agent GRPO through TRL, one LoRA adapter per learner (see :mod:`llmmarl.train.grpo`).

``config`` (what to run) -> ``lineup`` (who plays whom) -> runner -> ``rollout`` (samples, advantages) -> ``grpo``
(TRL steps, monitors, evaluation) -> ``checkpoint`` (resume, adapters/ + manifest.json). ``league`` keeps the pool.
"""

from llmmarl.train.config import TrainConfig

__all__ = ["TrainConfig"]
