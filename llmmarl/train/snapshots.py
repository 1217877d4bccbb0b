"""The league's bookkeeping in a run: each learner's games against the snapshots of an update, and the snapshots
themselves (every learner's adapter saved under ``<output_dir>/league``; the ones the pool drops are unloaded from
the engines and deleted)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmmarl.records import OUTCOME_POINTS, EpisodeRecord
from llmmarl.train.checkpoint import save_adapter
from llmmarl.train.engine import TrainingEngine
from llmmarl.train.league import League, Snapshot
from llmmarl.train.lineup import Group


def record_league(
    league: League, groups: Sequence[Group], episodes: Sequence[EpisodeRecord], learners: Sequence[str], group_size: int
) -> None:
    """Count each learner's games against league snapshots (games an error stopped do not count)."""
    snapshot_of = {g: group.snapshot for g, group in enumerate(groups) if group.snapshot}
    names = set(learners)
    for ep in episodes:
        snap = snapshot_of.get(int(ep.game_id) // group_size)
        if snap is None or ep.error:
            continue
        for seat, player in ep.seats.items():
            if player in names:
                league.record(snap, OUTCOME_POINTS[ep.outcomes[seat]])


def take_snapshot(league: League, model: Any, engine: TrainingEngine, step: int, out: Path) -> None:
    """Add every learner's current adapter (of ``model``, after update ``step``) to the league; the snapshots it
    drops are unloaded from the engines and deleted."""
    for name in engine.learners:
        snap = Snapshot(name=f"{name}-s{step}", learner=name, step=step, path=str(out / "league" / f"{name}-s{step}"))
        save_adapter(model, name, Path(snap.path))
        for old in league.add(snap):
            engine.unload(old.name)
            shutil.rmtree(old.path, ignore_errors=True)
