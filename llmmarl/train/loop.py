"""What every multi-agent trainer shares, whatever its algorithm: :class:`MultiAgentTrainer`, and :func:`run`.

A trainer holds one shared base model with one LoRA adapter per learner (plus whatever extra adapters its
algorithm needs, e.g. PPO's critics) and three parts, each built with what it needs and none calling back:

* ``engine`` (:class:`~llmmarl.train.engine.TrainingEngine`): whatever plays the games - the in-process engine,
  the ``rollout_backend`` engine (e.g. vLLM), the Ray rollout actors - and their adapter sync;
* ``evaluator`` (:class:`~llmmarl.train.evaluation.Evaluator`): evaluation lineups, stand-ins, the game's measures;
* ``checkpointer`` (:class:`~llmmarl.train.saving.Checkpointer`): checkpoints, resume, exported adapters.

They share the run's counters (:class:`~llmmarl.train.state.RunState`, ``trainer.state``). This module owns the
update (:meth:`MultiAgentTrainer.update`: rollout, samples, each learner's step, engine sync, metrics) and the run
around it (:meth:`MultiAgentTrainer.train`: league snapshots, evaluations, checkpoints, the time budget, the
progress bar), each read top to bottom here. An algorithm supplies :meth:`~MultiAgentTrainer.learn` (one learner's
step on its samples), the optimizers to checkpoint and a logger, plus the hooks it needs (see
:mod:`llmmarl.train.grpo`, :mod:`llmmarl.train.ppo`, :mod:`llmmarl.train.rloo`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.base import RolloutEngine
from llmmarl.backends.device import model_device
from llmmarl.envs import make
from llmmarl.records import EpisodeRecord, summarise
from llmmarl.train.checkpoint import OptimizerHolder, list_checkpoints
from llmmarl.train.config import TrainConfig
from llmmarl.train.engine import build_training_engine
from llmmarl.train.evaluation import Evaluator
from llmmarl.train.exploration import exploration_metrics
from llmmarl.train.league import League, Snapshot
from llmmarl.train.lineup import decoded, group_matches, training_groups
from llmmarl.train.metrics import MetricsRow, UpdateTimes, append_metrics
from llmmarl.train.monitors import eval_line, group_metrics, monitor_line, sample_metrics, summary_metrics
from llmmarl.train.pretrain import pretrain
from llmmarl.train.registry import lookup
from llmmarl.train.samples import TurnSample, episodes_to_samples
from llmmarl.train.saving import AlgorithmState, Checkpointer
from llmmarl.train.settings import LoraSettings
from llmmarl.train.snapshots import record_league, take_snapshot
from llmmarl.train.state import RunState


# ---- the loop --------------------------------------------------------------------------------------------------
class MultiAgentTrainer(ABC):
    """Trains every learner of a :class:`TrainConfig` from shared rollouts, with its engine, evaluator and
    checkpointer (see the module docs).

    The engine part talks to its engines only through :class:`~llmmarl.backends.base.RolloutEngine` (the sequence
    of calls is in that module's docs); the trainer trains its own handle on the learner model, ``self.model``: the
    in-process engine's model when it offers it, else its own copy of the base model.

    Args:
        cfg: the run.
        backend: the in-process engine; default: :func:`~llmmarl.backends.factory.build_rollout_engine` for
            ``cfg.model``.
        progress: show a progress bar with per-agent monitors.
    """

    algorithm: ClassVar[str]
    #: The model of the config's settings block named ``algorithm`` (see :mod:`llmmarl.train.registry`); None: none.
    settings_model: ClassVar[type[BaseModel] | None] = None

    def __init__(self, cfg: TrainConfig, backend: RolloutEngine | None = None, progress: bool = True) -> None:
        if lookup(cfg.algorithm).name != self.algorithm:
            raise ValueError(f"{type(self).__name__} runs algorithm: {self.algorithm}, the config has {cfg.algorithm}")
        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.output_dir)
        self.env = make(cfg.env, **cfg.env_kwargs)
        cfg.check_env(self.env)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.state = RunState()
        if cfg.setting == "league":
            self.state.league = League(pool_size=cfg.league.pool_size, sampling=cfg.league.sampling)
        self.engine = build_training_engine(cfg, self.state, self.extra_adapters(), backend)
        self.model = self.engine.model
        self.device = str(model_device(self.model))  # where the learner model trains (the engine may be elsewhere)
        self.tokenizer = self.engine.backend.tokenizer
        self.learners = [lr.name for lr in cfg.learners]
        self.learner_specs = [decoded(LLMAgentSpec(name=n, adapter=n), cfg, cfg.temperature) for n in self.learners]
        self.opponents = [decoded(s, cfg, cfg.temperature) for s in cfg.opponent_specs()]
        self.evaluator = Evaluator(cfg, self.env, self.model, self.engine, self.state, self.log, progress)
        hooks = AlgorithmState(
            self.optimizers, self.extra_state, self.load_extra_state, self.json_state, self.load_json_state
        )
        self.checkpointer = Checkpointer(cfg, self.env, self.model, self.engine, self.state, hooks)

    # ---- what an algorithm supplies ----------------------------------------------------------------------------
    @abstractmethod
    def learn(self, learner: str, samples: list[TurnSample]) -> dict[str, float]:
        """Step ``learner`` on its samples of this update (possibly none: every game broke, or it never reached an
        LLM turn; its step counters still count the update). Returns its metrics; :meth:`update` adds the samples'
        and games' monitors and the time taken."""

    @abstractmethod
    def optimizers(self) -> Mapping[str, OptimizerHolder]:
        """Adapter name -> its optimizer, scheduler and step counter: what a checkpoint saves besides weights."""

    @abstractmethod
    def log(self, learner: str, metrics: dict[str, float]) -> dict[str, Any]:
        """Report one learner's metrics to the configured loggers; returns what was logged."""

    def extra_adapters(self) -> list[tuple[str, LoraSettings]]:
        """Adapters besides the learners' own, created fresh with the learners' (name, shape)."""
        return []

    def begin_update(self, episodes: Sequence[EpisodeRecord]) -> None:  # noqa: B027 - optional hook
        """Called with the update's games before the first :meth:`learn` (e.g. to index turns, seed an RNG)."""

    @property
    def constrained_rollout(self) -> bool:
        """Whether this update's learners play grammar-constrained whatever ``cfg.constrained`` says (e.g. GRPO's
        format warm-up)."""
        return False

    def extra_state(self) -> dict[str, Any]:
        """Tensors (or plain objects) a checkpoint keeps besides adapters and optimizers."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`extra_state` returned."""

    def json_state(self) -> dict[str, Any]:
        """Algorithm state a checkpoint keeps in state.json."""
        return {}

    def load_json_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`json_state` returned."""

    # ---- agents ----------------------------------------------------------------------------------------------
    def _snapshot_spec(self, snap: Snapshot) -> LLMAgentSpec:
        return decoded(LLMAgentSpec(name=snap.name, adapter=snap.path), self.cfg, self.cfg.temperature)

    @property
    def corrects_engine_mismatch(self) -> bool:
        """Whether this update's samples get the importance correction: they come from the vLLM engine and were not
        grammar-constrained (vLLM's log-probs are then after the mask, ours before: not comparable)."""
        cfg = self.cfg
        return cfg.rollout_backend == "vllm" and not (cfg.constrained or cfg.canonical or self.constrained_rollout)

    # ---- one update -------------------------------------------------------------------------------------------
    def rollout(self) -> tuple[list[EpisodeRecord], float]:
        """The games of this update - every learner at once, in the lineups of ``state.step`` - played by the
        current adapters; returns them and the seconds taken."""
        cfg, state = self.cfg, self.state
        t0 = time.perf_counter()
        specs = self.learner_specs
        if self.constrained_rollout:  # e.g. GRPO's format warm-up
            specs = [s.model_copy(update={"constrained": True}) for s in specs]
        groups, seeds = training_groups(
            cfg, self.env, state.step, specs, self.opponents, state.league, self._snapshot_spec
        )
        self.model.eval()  # PEFT's mixed-adapter generation refuses training mode
        episodes = self.engine.rollout(group_matches(cfg, groups, seeds))
        if state.league is not None:
            record_league(state.league, groups, episodes, self.learners, cfg.group_size)
        return episodes, time.perf_counter() - t0

    def update(self) -> dict[str, dict[str, Any]]:
        """One update: play one rollout, step every learner on its own samples of it (:meth:`learn`), sync the
        engines and append the metrics; returns each learner's logged metrics."""
        cfg = self.cfg
        # 1. rollout: every game of the update, all learners at once, on the current adapters
        episodes, rollout_s = self.rollout()
        # 2. samples: each learner's own turns, rewarded
        samples = episodes_to_samples(
            episodes, self.learners, cfg.rewards.as_dict(), self.env.forfeit_reward, cfg.group_size, cfg.train_on
        )
        games = self.game_metrics(episodes)
        self.begin_update(episodes)
        # 3. each learner's step on its samples
        logs: dict[str, dict[str, Any]] = {}
        for name in self.learners:
            t0 = time.perf_counter()
            metrics = {**sample_metrics(samples[name]), "time/rollout_s": rollout_s, **games.get(name, {})}
            if cfg.group_size > 1:
                metrics |= group_metrics(samples[name])
            if cfg.exploration is not None:
                metrics |= exploration_metrics(samples[name])
            metrics.update(self.learn(name, samples[name]))
            metrics["time/update_s"] = time.perf_counter() - t0
            logs[name] = self.log(name, metrics)
        # 4. engine sync: every engine serves the new adapters, as version state.step
        self.state.step += 1
        sync_s = self.engine.sync()
        # 5. metrics
        learner_s = sum(m.get("time/update_s", 0.0) for m in logs.values())
        row = MetricsRow(
            step=self.state.step,
            learners=logs,
            time=UpdateTimes(rollout_s=rollout_s, learner_s=learner_s, sync_s=sync_s),
            engine=cfg.rollout_backend,
            rollout_games_retried=self.engine.retried,  # replayed after an actor died
        )
        append_metrics(self.out / "metrics.jsonl", row)
        return logs

    def game_metrics(self, episodes: Sequence[EpisodeRecord]) -> dict[str, dict[str, float]]:
        """Each learner's ``game/...`` monitors over an update's games."""
        return {
            s.player: {f"game/{k}": v for k, v in summary_metrics(s).items()}
            for s in summarise(episodes)
            if s.player in self.learners
        }

    def close(self) -> None:
        """Stop the rollout engine and the rollout actors, if any run (the next rollout starts them again)."""
        self.engine.close()

    # ---- the whole run ---------------------------------------------------------------------------------------
    def out_of_time(self) -> bool:
        """Whether another update, as long as the longest so far, would end past ``cfg.time_budget_minutes``."""
        budget, state = self.cfg.time_budget_minutes, self.state
        return budget is not None and state.train_seconds + state.longest_update_s > budget * 60.0

    def train(self, max_updates: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """Run until ``cfg.steps`` updates (or ``max_updates`` more); returns the last evaluation."""
        cfg, state = self.cfg, self.state
        if cfg.pretrain is not None and cfg.pretrain.enabled and state.step == 0 and not state.pretrained:
            # once, before the first update of a fresh run; then the engines serve the pre-trained adapters
            specs, progress = self.learner_specs, self.progress
            forecasts = pretrain(cfg, self.env, self.model, self.tokenizer, specs, self.device, progress)
            state.pretrained = True
            self.engine.restart()
            append_metrics(self.out / "metrics.jsonl", MetricsRow(step=state.step, pretrain=forecasts))
        if state.league is not None and not state.league.snapshots:
            take_snapshot(state.league, self.model, self.engine, state.step, self.out)  # the untrained adapters
        stop = cfg.steps if max_updates is None else min(cfg.steps, state.step + max_updates)
        bar = tqdm(total=cfg.steps, initial=state.step, desc="updates", unit="upd", disable=not self.progress)
        try:
            while state.step < stop and not self.out_of_time():
                t0 = time.perf_counter()
                logs = self.update()
                seconds = time.perf_counter() - t0
                state.train_seconds += seconds
                state.longest_update_s = max(state.longest_update_s, seconds)
                last = state.step == cfg.steps or self.out_of_time()
                if last and state.step < cfg.steps and self.progress:
                    bar.write(
                        f"time budget: {state.train_seconds / 60:.1f} of {cfg.time_budget_minutes:g} min used, "
                        f"stopping after update {state.step} of {cfg.steps}"
                    )
                bar.update(1)
                bar.set_postfix_str(monitor_line(logs), refresh=True)
                if state.league is not None and state.step % cfg.league.snapshot_every == 0:
                    take_snapshot(state.league, self.model, self.engine, state.step, self.out)
                if cfg.eval_every and state.step % cfg.eval_every == 0 and not last:
                    bar.write(f"step {state.step} eval: {eval_line(self.evaluator.evaluate())}")
                if state.step % cfg.save_every == 0 or last:
                    if last:
                        results = self.evaluator.evaluate()
                        if results:
                            bar.write(f"step {state.step} eval: {eval_line(results)}")
                    self.checkpointer.save()
        finally:
            bar.close()
        return state.eval_results


Trainer = TypeVar("Trainer", bound=MultiAgentTrainer)


def run(trainer_class: type[Trainer], cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Trainer:
    """Train ``cfg`` to the end with ``trainer_class`` (resuming from ``output_dir`` if asked)."""
    found = list_checkpoints(Path(cfg.output_dir) / "checkpoints")
    if found and not resume:
        raise FileExistsError(
            f"{cfg.output_dir} already has checkpoints (newest: {found[-1].name}): pass --resume to continue that "
            "run, or choose another output_dir"
        )
    trainer = trainer_class(cfg, progress=progress)
    if resume and trainer.checkpointer.resume() and progress:
        print(f"resumed {cfg.output_dir} at update {trainer.state.step}")
    try:
        trainer.train()
    finally:
        trainer.close()
    return trainer
