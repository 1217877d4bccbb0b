"""What a run keeps on disk and reads back: resumable checkpoints, the checks a resume makes, and the exported
adapters with their ``manifest.json``.

The files themselves (adapter folders, optimizer state, pruning old checkpoints, the manifest's layout) are
:mod:`llmmarl.train.checkpoint`'s; this module decides what a run puts in them.
:class:`~llmmarl.train.loop.MultiAgentTrainer` calls these with itself; its ``save``, ``resume`` and ``export``
methods are the public entry points.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmmarl.models import portable_name
from llmmarl.train.checkpoint import (
    CheckpointData,
    CheckpointError,
    UnsafeCheckpointError,
    list_checkpoints,
    read_checkpoint,
    restore_checkpoint,
    save_adapter,
    save_checkpoint,
    write_manifest,
)
from llmmarl.train.config import TrainConfig
from llmmarl.train.league import League
from llmmarl.train.registry import lookup

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer

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


def run_state(trainer: MultiAgentTrainer) -> dict[str, Any]:
    """What a checkpoint's state.json keeps besides the step: the config, league, engine counters, evaluation,
    the time budget's clock and the algorithm's own :meth:`~llmmarl.train.loop.MultiAgentTrainer.json_state`."""
    engine = trainer.engine
    return {
        "config": trainer.cfg.model_dump(mode="json"),
        "league": trainer.league.model_dump() if trainer.league else None,
        "engine": trainer.backend.state_dict(),  # e.g. the counter each generate call's seed derives from
        "engine_calls": int(engine.state_dict().get("calls", 0)) if engine else trainer.engine_calls,
        "eval": trainer.eval_results,
        "train_seconds": trainer.train_seconds,
        "longest_update_s": trainer.longest_update_s,
        "pretrained": trainer.pretrained,  # a resumed run does not pre-train again
        **trainer.json_state(),
    }


def save(trainer: MultiAgentTrainer) -> Path:
    """A resumable checkpoint of the current step, and the adapters exported beside their manifest."""
    path = save_checkpoint(
        trainer.out / "checkpoints",
        trainer.step,
        trainer.model,
        trainer.optimizers(),
        trainer._state(),
        trainer.cfg.keep_checkpoints,
        extra=trainer.extra_state(),
    )
    trainer.export()
    return path


def resume(trainer: MultiAgentTrainer) -> bool:
    """Continue from the newest readable checkpoint in ``output_dir``; False if there is none.

    A checkpoint that cannot be read (a file missing, empty or cut short) is skipped with a warning for the one
    before it; one whose files would run code when loaded stops the resume (:class:`UnsafeCheckpointError`).
    """
    found = list_checkpoints(trainer.out / "checkpoints")
    if not found:
        return False
    data = _newest_readable(found, trainer.optimizers())
    saved, ours = data.state.get("config") or {}, trainer.cfg.model_dump(mode="json")
    for key in _RESUME_KEYS:
        theirs = saved.get(key, _LEGACY_ALGORITHM if key == "algorithm" else None)
        if theirs != ours[key]:
            raise ValueError(
                f"{data.path} was written with {key}={theirs!r}, this config has {ours[key]!r}: "
                "resume with the same config, or use another output_dir"
            )
    learners = [lr["name"] for lr in saved.get("learners", [])]
    if sorted(learners) != sorted(trainer.learners):
        raise ValueError(f"{data.path} has learners {learners}: not this config's")
    state = restore_checkpoint(data, trainer.model, trainer.optimizers())
    trainer.load_extra_state(data.extra)
    trainer.step = state["step"]
    # Checkpoints from before the engine interface kept the transformers backend's call counter on its own.
    trainer.backend.load_state_dict(state.get("engine") or {"calls": state["backend_calls"]})
    trainer.engine_calls = state.get("engine_calls", 0)
    trainer.eval_results = state.get("eval") or {}
    trainer.train_seconds = state.get("train_seconds", 0.0)
    trainer.longest_update_s = state.get("longest_update_s", 0.0)
    trainer.pretrained = bool(state.get("pretrained", False))
    if state.get("league") is not None:
        trainer.league = League.model_validate(state["league"])
    trainer.load_json_state(state)
    return True


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


def export(trainer: MultiAgentTrainer) -> Path:
    """Write every learner's adapter to ``<adapters_dir>/<name>/`` and list them in ``manifest.json``."""
    cfg = trainer.cfg
    folder = cfg.adapters_path
    entries = []
    for lr in cfg.learners:
        save_adapter(trainer.model, lr.name, folder / lr.name, portable_name(cfg.model))
        entries.append(
            {
                "name": lr.name,
                "path": lr.name,
                "algorithm": cfg.algorithm,
                "base_model": cfg.model,
                "base_model_id": portable_name(cfg.model),  # not the local cache path: manifests travel
                "game": cfg.env,
                "env_kwargs": cfg.env_kwargs,
                "seats": lr.seats or list(trainer.env.possible_agents),
                "role": lr.seats[0] if len(lr.seats) == 1 else "any seat",
                "setting": cfg.setting,
                "steps": trainer.step,
                "config": {"learner": lr.model_dump(mode="json"), **training_summary(cfg)},
                "eval": {lineup: r[lr.name] for lineup, r in trainer.eval_results.items() if lr.name in r},
            }
        )
    return write_manifest(folder, entries, {"output_dir": cfg.output_dir, "config": cfg.model_dump(mode="json")})
