"""How a trainer plays an update's games: the lineups of the update, on which engine (the trainer's own, the
``rollout_backend`` engine, or Ray rollout actors), games an outage broke played again, the engines' adapter sync
after each update, and the league's bookkeeping of those games and of its snapshots.

:class:`~llmmarl.train.loop.MultiAgentTrainer` calls these with itself; its methods ``rollout``,
``rollout_backend``, ``sync`` and ``close`` are the entry points (and the ones a test or subclass replaces).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmmarl.backends.base import Backend, BackendError
from llmmarl.backends.factory import build_rollout_engine
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.records import OUTCOME_POINTS, EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.train.checkpoint import save_adapter
from llmmarl.train.engine import engine_spec, rollout_spec
from llmmarl.train.exploration import LabelExplorer
from llmmarl.train.league import Snapshot
from llmmarl.train.lineup import Group, group_matches, training_groups

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer

OUTAGE_REPLAYS = 2  # times a training game stopped by a server outage is played again before the run stops


def rollout(trainer: MultiAgentTrainer) -> tuple[list[EpisodeRecord], float]:
    """The games of update ``trainer.step``, played by the current adapters; returns them and the seconds taken."""
    cfg = trainer.cfg
    t0 = time.perf_counter()
    specs = trainer.learner_specs
    if trainer.constrained_rollout:  # e.g. GRPO's format warm-up
        specs = [s.model_copy(update={"constrained": True}) for s in specs]
    groups, seeds = training_groups(
        cfg, trainer.env, trainer.step, specs, trainer.opponents, trainer.league, trainer._snapshot_spec
    )
    trainer.model.eval()  # PEFT's mixed-adapter generation refuses training mode
    matches = group_matches(cfg, groups, seeds)
    play = trainer._remote_rollout if cfg.rollout_workers else trainer._play_replaying_outages
    episodes = play(matches)
    record_league(trainer, groups, episodes)
    return episodes, time.perf_counter() - t0


def rollout_backend(trainer: MultiAgentTrainer) -> Backend:
    """What plays the training games: the trainer's own engine, or the ``rollout_backend`` engine (built on first
    use, its sampling seeds continued, every learner's current adapter handed to it; a vLLM server starts then)."""
    if trainer.cfg.rollout_backend == "transformers":
        return trainer.backend
    if trainer.engine is None:
        engine = build_rollout_engine(rollout_spec(trainer.cfg))
        engine.load_state_dict({"calls": trainer.engine_calls})
        trainer.engine = engine
        engine.refresh_adapters(trainer.model, trainer.learners, trainer.step)
    return trainer.engine


def explorer(trainer: MultiAgentTrainer) -> LabelExplorer | None:
    """The label-level exploration of this update's rollout (``exploration:``), or None."""
    settings = trainer.cfg.exploration
    if settings is None:
        return None
    backend = trainer.rollout_backend()
    if not isinstance(backend, TransformersBackend):
        raise BackendError(f"exploration scores answers with the in-process model; {type(backend).__name__} cannot")
    return LabelExplorer(backend, trainer.learners, settings.epsilon, trainer.cfg.seed, trainer.step)


def play_replaying_outages(trainer: MultiAgentTrainer, matches: Sequence[Match]) -> list[EpisodeRecord]:
    """Play ``matches``; games an outage stopped are played again (same seed), up to ``OUTAGE_REPLAYS`` times.

    A game the server broke is no sample of the policy: training on what was left of it, or on a smaller group
    than the baseline expects, would bias the update. If the outage persists the run stops with one clear error
    (the last checkpoint resumes it).
    """
    runner = Runner(
        trainer.rollout_backend(), concurrency=trainer.cfg.concurrency, progress=False, explore=explorer(trainer)
    )
    done = {ep.game_id: ep for ep in runner.play(matches)}
    for _ in range(OUTAGE_REPLAYS):
        broken = [m for m in matches if done[m.game_id].outage]
        if not broken:
            break
        trainer.outage_replays += len(broken)
        done.update({ep.game_id: ep for ep in runner.play(broken)})
    still = [ep for ep in done.values() if ep.outage]
    if still:
        raise BackendError(
            f"{len(still)} training games were still stopped by server outages after {OUTAGE_REPLAYS} replays "
            f"(first: {still[0].error}); fix the server, then resume from the last checkpoint with --resume"
        )
    return [done[m.game_id] for m in matches]


def remote_rollout(trainer: MultiAgentTrainer, matches: Sequence[Match]) -> list[EpisodeRecord]:
    """Play on the rollout actors with the learners' current adapters; refuse answers from stale weights."""
    from llmmarl.train.distributed import (  # imports ray: only when asked for
        RolloutPool,
        RolloutWorker,
        VLLMRolloutWorker,
        check_versions,
    )

    cfg = trainer.cfg
    if trainer.rollout_pool is None:
        # vLLM: each actor runs its own engine replica; transformers: its own copy of the model.
        vllm = cfg.rollout_backend == "vllm"
        trainer.rollout_pool = RolloutPool(
            cfg.rollout_workers,
            engine_spec(cfg),
            address=cfg.ray_address,
            concurrency=cfg.concurrency,
            num_gpus=cfg.rollout_worker_gpus,
            worker_cls=VLLMRolloutWorker if vllm else RolloutWorker,
            worker_args=(cfg.model_dump(mode="json"), cfg.concurrency) if vllm else None,
            placement_timeout=cfg.ray_placement_timeout,
            stall_timeout=cfg.ray_stall_timeout,
        )
    versions = trainer.rollout_pool.sync(trainer.model, trainer.learners)  # every actor, before every rollout
    episodes: list[EpisodeRecord] = trainer.rollout_pool.play(matches)
    check_versions(episodes, versions)
    return episodes


def sync(trainer: MultiAgentTrainer) -> float:
    """After an update (``trainer.step`` already counts it): every engine serves the new adapters, as version
    ``trainer.step``. Returns the seconds taken."""
    t0 = time.perf_counter()
    trainer.backend.refresh_adapters(trainer.model, trainer.learners, version=trainer.step)
    if trainer.engine is not None:
        trainer.engine.refresh_adapters(trainer.model, trainer.learners, trainer.step)
    return time.perf_counter() - t0


def close(trainer: MultiAgentTrainer) -> None:
    """Stop the rollout engine and the rollout actors, if any run (the next rollout starts them again)."""
    if trainer.engine is not None:
        trainer.engine_calls = int(trainer.engine.state_dict().get("calls", 0))
        close = getattr(trainer.engine, "close", None)  # an engine that runs a server stops it
        if close is not None:
            close()
        trainer.engine = None
    if trainer.rollout_pool is not None:
        trainer.rollout_pool.close()
        trainer.rollout_pool = None


def record_league(trainer: MultiAgentTrainer, groups: Sequence[Group], episodes: Sequence[EpisodeRecord]) -> None:
    """Count each learner's games against league snapshots (games an error stopped do not count)."""
    if trainer.league is None:
        return
    snapshot_of = {g: group.snapshot for g, group in enumerate(groups) if group.snapshot}
    learners = set(trainer.learners)
    for ep in episodes:
        snap = snapshot_of.get(int(ep.game_id) // trainer.cfg.group_size)
        if snap is None or ep.error:
            continue
        for seat, player in ep.seats.items():
            if player in learners:
                trainer.league.record(snap, OUTCOME_POINTS[ep.outcomes[seat]])


def take_snapshot(trainer: MultiAgentTrainer) -> None:
    """Add every learner's current adapter to the league; the snapshots it drops are unloaded and deleted."""
    assert trainer.league is not None
    for name in trainer.learners:
        snap = Snapshot(
            name=f"{name}-s{trainer.step}",
            learner=name,
            step=trainer.step,
            path=str(trainer.out / "league" / f"{name}-s{trainer.step}"),
        )
        save_adapter(trainer.model, name, Path(snap.path))
        for old in trainer.league.add(snap):
            trainer.backend.unload_adapter(old.name)  # loaded by the runner when the snapshot played
            if trainer.engine is not None:
                trainer.engine.unload_adapter(old.name)
            shutil.rmtree(old.path, ignore_errors=True)
