"""What a run keeps on disk and reads back: resumable checkpoints, the checks a resume makes, and the exported
adapters with their ``manifest.json``.

The files themselves (adapter folders, optimizer state, pruning old checkpoints, the manifest's layout) are
:mod:`llmmarl.train.checkpoint`'s; this module decides what a run puts in them. A trainer's
:class:`Checkpointer` (``trainer.checkpointer``) does it for the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmmarl.envs.base import TextEnv
from llmmarl.models import portable_name
from llmmarl.train.checkpoint import (
    CheckpointData,
    CheckpointError,
    OptimizerHolder,
    UnsafeCheckpointError,
    list_checkpoints,
    read_checkpoint,
    restore_checkpoint,
    save_adapter,
    save_checkpoint,
    write_manifest,
)
from llmmarl.train.config import TrainConfig
from llmmarl.train.engine import TrainingEngine
from llmmarl.train.league import League
from llmmarl.train.registry import lookup
from llmmarl.train.state import RunState

# Settings a checkpoint must share with the config that resumes it: the games, the model and what is trained.
_RESUME_KEYS = ("env", "env_kwargs", "model", "setting", "algorithm")
# Checkpoints written before ``algorithm:`` existed have no such key: GRPO was then the only algorithm.
_LEGACY_ALGORITHM = "grpo"


def training_summary(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that shaped an adapter, for its manifest entry."""
    keys = ("algorithm", "setting", "learning_rate", "games_per_update", "group_size", "temperature")
    out = {k: getattr(cfg, k) for k in keys}
    settings = cfg.algorithm_settings()
    if settings is not None:
        out[lookup(cfg.algorithm).name] = settings.model_dump(mode="json")  # under its block's key
    if cfg.pretrain is not None and cfg.pretrain.enabled:  # the adapter was pre-trained to forecast before RL
        out["pretrain"] = cfg.pretrain.model_dump(mode="json")
    return out | {
        "rewards": cfg.rewards.as_dict(),
        "max_new_tokens": cfg.max_new_tokens,
        "steps": cfg.steps,
        "reask": cfg.reask,
        "constrained": cfg.constrained or cfg.canonical,
        **({"canonical": True} if cfg.canonical else {}),  # absent when off: earlier manifests read the same
        "lines": cfg.lines,  # an adapter trained to answer ACTION only expects that prompt again
        "plan_actions": cfg.plan_actions,
    }


@dataclass(frozen=True)
class AlgorithmState:
    """What a checkpoint keeps of an algorithm, as the algorithm hands it over (see
    :class:`~llmmarl.train.loop.MultiAgentTrainer`'s hooks of the same names)."""

    optimizers: Callable[[], Mapping[str, OptimizerHolder]]  # adapter name -> optimizer, scheduler, step counter
    extra_state: Callable[[], dict[str, Any]]  # tensors besides adapters and optimizers
    load_extra_state: Callable[[dict[str, Any]], None]
    json_state: Callable[[], dict[str, Any]]  # plain state kept in state.json
    load_json_state: Callable[[dict[str, Any]], None]


class Checkpointer:
    """Resumable checkpoints of a run under ``<output_dir>/checkpoints``, and its exported adapters.

    Args:
        cfg: the run.
        env: the run's game (the seats an exported adapter plays).
        model: the learner model whose adapters are saved and restored.
        engine: the engine part, whose sampling-seed counters a checkpoint keeps.
        state: the run's counters, saved and restored in place.
        hooks: the algorithm's optimizers and state.
    """

    def __init__(
        self, cfg: TrainConfig, env: TextEnv, model: Any, engine: TrainingEngine, state: RunState, hooks: AlgorithmState
    ) -> None:
        self.cfg, self.env, self.model, self.engine, self.state = cfg, env, model, engine, state
        self.algorithm = hooks
        self.folder = Path(cfg.output_dir) / "checkpoints"
        self.learners = [lr.name for lr in cfg.learners]

    def run_state(self) -> dict[str, Any]:
        """What a checkpoint's state.json keeps besides the step: the config, league, engine counters, evaluation,
        the time budget's clock and the algorithm's own ``json_state``."""
        state = self.state
        return {
            "config": self.cfg.model_dump(mode="json"),
            "league": state.league.model_dump() if state.league else None,
            **self.engine.state_dict(),
            "eval": state.eval_results,
            "train_seconds": state.train_seconds,
            "longest_update_s": state.longest_update_s,
            "pretrained": state.pretrained,  # a resumed run does not pre-train again
            **self.algorithm.json_state(),
        }

    def save(self) -> Path:
        """A resumable checkpoint of the current step, and the adapters exported beside their manifest."""
        path = save_checkpoint(
            self.folder,
            self.state.step,
            self.model,
            self.algorithm.optimizers(),
            self.run_state(),
            self.cfg.keep_checkpoints,
            extra=self.algorithm.extra_state(),
        )
        self.export()
        return path

    def resume(self) -> bool:
        """Continue from the newest readable checkpoint in ``output_dir``; False if there is none.

        A checkpoint that cannot be read (a file missing, empty or cut short) is skipped with a warning for the one
        before it; one whose files would run code when loaded stops the resume (:class:`UnsafeCheckpointError`).
        """
        found = list_checkpoints(self.folder)
        if not found:
            return False
        optimizers = self.algorithm.optimizers()
        data = _newest_readable(found, optimizers)
        saved, ours = data.state.get("config") or {}, self.cfg.model_dump(mode="json")
        for key in _RESUME_KEYS:
            theirs = saved.get(key, _LEGACY_ALGORITHM if key == "algorithm" else None)
            if theirs != ours[key]:
                raise ValueError(
                    f"{data.path} was written with {key}={theirs!r}, this config has {ours[key]!r}: "
                    "resume with the same config, or use another output_dir"
                )
        learners = [lr["name"] for lr in saved.get("learners", [])]
        if sorted(learners) != sorted(self.learners):
            raise ValueError(f"{data.path} has learners {learners}: not this config's")
        state = restore_checkpoint(data, self.model, optimizers)
        self.algorithm.load_extra_state(data.extra)
        run = self.state
        run.step = state["step"]
        self.engine.load_state_dict(state)
        run.eval_results = state.get("eval") or {}
        run.train_seconds = state.get("train_seconds", 0.0)
        run.longest_update_s = state.get("longest_update_s", 0.0)
        run.pretrained = bool(state.get("pretrained", False))
        if state.get("league") is not None:
            run.league = League.model_validate(state["league"])
        self.algorithm.load_json_state(state)
        return True

    def export(self) -> Path:
        """Write every learner's adapter to ``<adapters_dir>/<name>/`` and list them in ``manifest.json``."""
        cfg = self.cfg
        folder = cfg.adapters_path
        entries = []
        for lr in cfg.learners:
            save_adapter(self.model, lr.name, folder / lr.name, portable_name(cfg.model))
            entries.append(
                {
                    "name": lr.name,
                    "path": lr.name,
                    "algorithm": cfg.algorithm,
                    "base_model": cfg.model,
                    "base_model_id": portable_name(cfg.model),  # not the local cache path: manifests travel
                    "game": cfg.env,
                    "env_kwargs": cfg.env_kwargs,
                    "seats": lr.seats or list(self.env.possible_agents),
                    "role": lr.seats[0] if len(lr.seats) == 1 else "any seat",
                    "setting": cfg.setting,
                    "steps": self.state.step,
                    "config": {"learner": lr.model_dump(mode="json"), **training_summary(cfg)},
                    "eval": {lineup: r[lr.name] for lineup, r in self.state.eval_results.items() if lr.name in r},
                }
            )
        meta = {"output_dir": cfg.output_dir, "config": cfg.model_dump(mode="json")}
        return write_manifest(folder, entries, meta)


def _newest_readable(found: list[Path], names: Iterable[str]) -> CheckpointData:
    """The newest of ``found`` (oldest first) that reads whole; unreadable ones are skipped with a warning."""
    skipped: list[tuple[Path, CheckpointError]] = []
    for path in reversed(found):
        try:
            data = read_checkpoint(path, names)
        except UnsafeCheckpointError:
            raise
        except CheckpointError as e:
            skipped.append((path, e))
            continue
        for newer, why in skipped:
            warnings.warn(f"resuming from {path.name}: the newer {newer.name} is incomplete ({why})", stacklevel=3)
        return data
    reasons = "; ".join(str(e) for _, e in skipped)
    raise CheckpointError(
        f"no checkpoint in {found[0].parent} can be read ({reasons}); start a new output_dir, or train from scratch in "
        "this one after moving its checkpoints folder away"
    )
