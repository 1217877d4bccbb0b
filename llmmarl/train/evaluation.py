"""Evaluation during and after training: the learners against the evaluation lineups, the same games under other
game settings, other agents in a learner's seat (:func:`compare`), and the game's own measures of each learner's
policy (``eval_measures``, e.g. ``nash_conv``).

Every evaluation plays the same games (deals, starts, seats) for the same seed, so two evaluations of a run, or
of two runs, differ only by the agents' own moves. A trainer's :class:`Evaluator` (``trainer.evaluator``) plays
them on its engine part and records the last evaluation in the run's state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec
from llmmarl.backends.base import Backend
from llmmarl.envs.base import TextEnv
from llmmarl.eval.policy import measure_agent
from llmmarl.records import AgentSummary, summarise
from llmmarl.runner import Match, Runner
from llmmarl.train.config import TrainConfig
from llmmarl.train.engine import TrainingEngine
from llmmarl.train.lineup import decoded, eval_lineups
from llmmarl.train.metrics import EvalWith, MetricsRow, append_metrics
from llmmarl.train.monitors import summary_metrics
from llmmarl.train.state import RunState

#: Reports one learner's metrics to the run's loggers (the algorithm's ``log``).
Log = Callable[[str, dict[str, float]], object]


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


class Evaluator:
    """The learners against the evaluation lineups, other agents in their seats, and the game's measures.

    Args:
        cfg: the run.
        env: the run's game (its seats).
        model: the learner model (set to eval mode before it plays).
        engine: what plays the games: its rollout engine (``eval_backend: rollout``) or its in-process one.
        state: the run's counters; the last evaluation is kept in ``state.eval_results``.
        log: reports a learner's evaluation metrics to the run's loggers.
        progress: show a bar per lineup.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        env: TextEnv,
        model: Any,
        engine: TrainingEngine,
        state: RunState,
        log: Log,
        progress: bool = True,
    ) -> None:
        self.cfg, self.env, self.model, self.engine, self.state = cfg, env, model, engine, state
        self.log, self.progress = log, progress
        self.learners = [lr.name for lr in cfg.learners]
        self.metrics_path = Path(cfg.output_dir) / "metrics.jsonl"

    def backend(self) -> Backend:
        """What plays evaluation games (``eval_backend``): the rollout engine, or the in-process model.

        On the rollout engine an evaluation sees the adapters the engine serves; those are published after every
        update (:meth:`~llmmarl.train.engine.TrainingEngine.sync`), so they are the ones the learner just trained.
        """
        return self.engine.player() if self.cfg.eval_backend == "rollout" else self.engine.backend

    def spec(self, name: str, adapter: str | None = None) -> LLMAgentSpec:
        """An LLM agent decoded as this run's evaluation decodes (temperature, grammar, re-ask, answer budget,
        template): the base model (``adapter=None``) or an adapter, as a like-for-like stand-in for
        :meth:`compare`."""
        return decoded(LLMAgentSpec(name=name, adapter=adapter), self.cfg, self.cfg.eval_temperature)

    def opponents(self) -> list[AgentSpec]:
        """The evaluation opponents (the training lineup's if none are set), decoded as evaluation decodes."""
        cfg = self.cfg
        specs = cfg.eval_opponent_specs() or cfg.opponent_specs()
        return [decoded(s, cfg, cfg.eval_temperature) for s in specs]

    def _play(
        self, lineups: dict[str, list[dict[str, AgentSpec]]], env_kwargs: dict[str, Any]
    ) -> dict[str, list[AgentSummary]]:
        self.model.eval()
        cfg = self.cfg
        return play_lineups(self.backend(), cfg.env, env_kwargs, lineups, cfg.seed, cfg.concurrency, self.progress)

    def evaluate(
        self, games: int | None = None, env_overrides: dict[str, Any] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Each learner against the evaluation lineups; returns ``{lineup: {learner: metrics}}``, logs them and
        appends them to ``metrics.jsonl``.

        ``env_overrides`` plays the same games (seeds, seats, opponents) under other game settings, e.g.
        ``{"talk": False}`` for ``signal_v0``: the trained team with its messages switched off, which measures
        what the messages carry. Such an evaluation is returned and logged under its own key, not kept as the
        run's evaluation.
        """
        cfg = self.cfg
        n = cfg.eval_games if games is None else games
        if n == 0:
            return {}
        learners = [self.spec(name, name) for name in self.learners]
        lineups = eval_lineups(cfg.model_copy(update={"eval_games": n}), self.env, learners, self.opponents())
        played = self._play(lineups, {**cfg.env_kwargs, **(env_overrides or {})})
        results = {
            lineup: {s.player: summary_metrics(s) for s in summaries if s.player in self.learners}
            for lineup, summaries in played.items()
        }
        step = self.state.step
        if env_overrides:
            # Not under "eval": readers of metrics.jsonl take that key as the run's own evaluation.
            row = MetricsRow(step=step, eval_with=EvalWith(env_overrides=env_overrides, eval=results))
            append_metrics(self.metrics_path, row)
            return results
        self.state.eval_results = results
        measured = self.measure() if cfg.eval_measures else {}
        for name in self.learners:
            logged = {f"eval/{lineup}/{k}": v for lineup, r in results.items() for k, v in r.get(name, {}).items()}
            for by_learner in measured.values():
                logged |= {f"eval/{k}": v for k, v in by_learner.get(name, {}).items()}
            self.log(name, logged)
        engine = cfg.rollout_backend if cfg.eval_backend == "rollout" else "transformers"
        append_metrics(self.metrics_path, MetricsRow(step=step, eval=results, measures=measured or None, engine=engine))
        return results

    def measure(self) -> dict[str, dict[str, dict[str, float]]]:
        """The game's measures (``eval_measures``) of each learner's policy, read as evaluation decodes it:
        ``{measure: {learner: metrics}}``."""
        cfg = self.cfg
        self.model.eval()
        out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in cfg.eval_measures}
        for name in self.learners:
            by_measure = measure_agent(
                cfg.env, cfg.eval_measures, self.spec(name, name), self.backend(), cfg.eval_measure_samples, cfg.seed
            )
            for m, metrics in by_measure.items():
                out[m][name] = metrics
        return out

    def compare(
        self, learner: str, stand_ins: Sequence[AgentSpec], games: int | None = None
    ) -> dict[str, dict[str, float]]:
        """Other agents in ``learner``'s evaluation games: same seeds, seats and opponents, one lineup each.

        For like-for-like comparisons with the evaluation of :meth:`evaluate`: the base model (``adapter=None``),
        or the trained adapter under another decoding (greedy without the grammar, say). Returns
        ``{stand_in name: metrics}``; every stand-in takes ``learner``'s seat, so the games are identical up to
        the stand-in's own moves.
        """
        cfg = self.cfg
        run = cfg.model_copy(update={"eval_games": cfg.eval_games if games is None else games})
        opponents = self.opponents()
        lineups: dict[str, list[dict[str, AgentSpec]]] = {}
        for spec in stand_ins:
            seatings = eval_lineups(run, self.env, [spec.model_copy(update={"name": learner})], opponents)
            for key, rows in seatings.items():  # "<learner> vs <opponent>"
                label = key.replace(learner, spec.name, 1) if key.startswith(learner) else f"{spec.name} ({key})"
                lineups[label] = [{seat: spec if a.name == learner else a for seat, a in row.items()} for row in rows]
        played = self._play(lineups, cfg.env_kwargs)
        names = {spec.name for spec in stand_ins}
        return {
            lineup: next(summary_metrics(s) for s in summaries if s.player in names)
            for lineup, summaries in played.items()
        }
