"""Evaluation during and after training: the learners against the evaluation lineups, the same games under other
game settings, other agents in a learner's seat (:func:`compare`), and the game's own measures of each learner's
policy (``eval_measures``, e.g. ``nash_conv``).

Every evaluation plays the same games (deals, starts, seats) for the same seed, so two evaluations of a run, or
of two runs, differ only by the agents' own moves. :class:`~llmmarl.train.loop.MultiAgentTrainer` calls these
with itself; its methods of the same names are the public entry points.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmmarl.agents.specs import AgentSpec
from llmmarl.backends.base import Backend
from llmmarl.eval.policy import measure_agent
from llmmarl.records import AgentSummary, summarise
from llmmarl.runner import Match, Runner
from llmmarl.train.lineup import eval_lineups
from llmmarl.train.metrics import EvalWith, MetricsRow
from llmmarl.train.monitors import summary_metrics

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer


def play_lineups(
    backend: Backend,
    env: str,
    env_kwargs: dict[str, Any],
    lineups: dict[str, list[dict[str, AgentSpec]]],
    seed: int,
    concurrency: int = 64,
    progress: bool = False,
) -> dict[str, list[AgentSummary]]:
    """Play every seating of every named lineup; the same ``seed`` gives the same games (deals, starts).

    ``progress`` shows a bar per lineup: a final evaluation of a few hundred games takes minutes on a CPU.
    """
    out = {}
    for name, seatings in lineups.items():
        rng = random.Random(f"{seed}/eval")  # the same games for every lineup and every evaluation
        matches = [
            Match(game_id=i, env=env, env_kwargs=env_kwargs, seats=s, seed=rng.randrange(2**31))
            for i, s in enumerate(seatings)
        ]
        out[name] = summarise(Runner(backend, concurrency=concurrency, progress=progress).play(matches, desc=name))
    return out


def eval_backend(trainer: MultiAgentTrainer) -> Backend:
    """What plays evaluation games (``eval_backend``): the rollout engine, or the trainer's in-process model.

    On the rollout engine an evaluation sees the adapters the engine serves; those are published after every update
    (:meth:`~llmmarl.train.loop.MultiAgentTrainer.sync`), so they are the ones the learner just trained.
    """
    if trainer.cfg.eval_backend == "rollout":
        return trainer.rollout_backend()
    return trainer.backend


def eval_opponents(trainer: MultiAgentTrainer) -> list[AgentSpec]:
    """The evaluation opponents (the training lineup's if none are set), decoded as evaluation decodes."""
    cfg = trainer.cfg
    specs = cfg.eval_opponent_specs() or cfg.opponent_specs()
    return [trainer._decoding(s, cfg.eval_temperature) for s in specs]


def evaluate(
    trainer: MultiAgentTrainer, games: int | None = None, env_overrides: dict[str, Any] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """What :meth:`MultiAgentTrainer.evaluate <llmmarl.train.loop.MultiAgentTrainer.evaluate>` documents."""
    cfg = trainer.cfg
    n = cfg.eval_games if games is None else games
    if n == 0:
        return {}
    learners = [trainer.eval_spec(lr.name, lr.name) for lr in cfg.learners]
    opponents = trainer._eval_opponents()
    lineups = eval_lineups(cfg.model_copy(update={"eval_games": n}), trainer.env, learners, opponents)
    trainer.model.eval()
    env_kwargs = {**cfg.env_kwargs, **(env_overrides or {})}
    played = play_lineups(
        eval_backend(trainer), cfg.env, env_kwargs, lineups, cfg.seed, cfg.concurrency, trainer.progress
    )
    results = {
        lineup: {s.player: summary_metrics(s) for s in summaries if s.player in trainer.learners}
        for lineup, summaries in played.items()
    }
    if env_overrides:
        # Not under "eval": readers of metrics.jsonl take that key as the run's own evaluation.
        trainer._append_metrics(
            MetricsRow(step=trainer.step, eval_with=EvalWith(env_overrides=env_overrides, eval=results))
        )
        return results
    trainer.eval_results = results
    measured = trainer.measure() if cfg.eval_measures else {}
    for name in trainer.learners:
        logged = {f"eval/{lineup}/{k}": v for lineup, r in results.items() for k, v in r.get(name, {}).items()}
        for by_learner in measured.values():
            logged |= {f"eval/{k}": v for k, v in by_learner.get(name, {}).items()}
        trainer.log(name, logged)
    engine = cfg.rollout_backend if cfg.eval_backend == "rollout" else "transformers"
    trainer._append_metrics(MetricsRow(step=trainer.step, eval=results, measures=measured or None, engine=engine))
    return results


def measure(trainer: MultiAgentTrainer) -> dict[str, dict[str, dict[str, float]]]:
    """The game's measures (``eval_measures``) of each learner's policy, read as evaluation decodes it:
    ``{measure: {learner: metrics}}``."""
    cfg = trainer.cfg
    trainer.model.eval()
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in cfg.eval_measures}
    for name in trainer.learners:
        spec = trainer.eval_spec(name, name)
        by_measure = measure_agent(
            cfg.env, cfg.eval_measures, spec, eval_backend(trainer), cfg.eval_measure_samples, cfg.seed
        )
        for m, metrics in by_measure.items():
            out[m][name] = metrics
    return out


def compare(
    trainer: MultiAgentTrainer, learner: str, stand_ins: Sequence[AgentSpec], games: int | None = None
) -> dict[str, dict[str, float]]:
    """What :meth:`MultiAgentTrainer.compare <llmmarl.train.loop.MultiAgentTrainer.compare>` documents."""
    cfg = trainer.cfg
    run = cfg.model_copy(update={"eval_games": cfg.eval_games if games is None else games})
    opponents = trainer._eval_opponents()
    lineups: dict[str, list[dict[str, AgentSpec]]] = {}
    for spec in stand_ins:
        seatings = eval_lineups(run, trainer.env, [spec.model_copy(update={"name": learner})], opponents)
        for key, rows in seatings.items():  # "<learner> vs <opponent>"
            label = key.replace(learner, spec.name, 1) if key.startswith(learner) else f"{spec.name} ({key})"
            lineups[label] = [{seat: spec if a.name == learner else a for seat, a in row.items()} for row in rows]
    trainer.model.eval()
    played = play_lineups(
        eval_backend(trainer), cfg.env, cfg.env_kwargs, lineups, cfg.seed, cfg.concurrency, trainer.progress
    )
    names = {spec.name for spec in stand_ins}
    return {
        lineup: next(summary_metrics(s) for s in summaries if s.player in names) for lineup, summaries in played.items()
    }
