"""What a run counts and keeps across resumes: :class:`RunState`, one object the trainer and its parts share.

The trainer advances it (the update count, the time budget's clock), the evaluator records its last evaluation in it
and the checkpointer saves and restores it whole; no part reaches into another for these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmmarl.train.league import League


@dataclass
class RunState:
    """The counters and records of a run that a checkpoint keeps."""

    step: int = 0  # updates done
    pretrained: bool = False  # the FORECAST pre-training (cfg.pretrain) ran
    train_seconds: float = 0.0  # wall-clock of the updates so far, across resumes (the time budget's clock)
    longest_update_s: float = 0.0
    league: League | None = None  # setting: league only
    eval_results: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # the last evaluation
