"""What every multi-agent trainer shares, whatever its algorithm: :class:`MultiAgentTrainer`, and :func:`run`.

A trainer holds one shared base model with one LoRA adapter per learner (plus whatever extra adapters its
algorithm needs, e.g. PPO's critics). Each update plays ONE rollout - every game of the update, all learners at
once, through :meth:`MultiAgentTrainer.rollout` - and steps every learner on its own turns of it. This module owns
the update's skeleton (:meth:`MultiAgentTrainer.update`: rollout, samples, each learner's step, engine sync,
metrics) and the run around it (:meth:`MultiAgentTrainer.train`: league snapshots, evaluations, checkpoints, the
time budget, the progress bar). The parts it calls have a module each: :mod:`~llmmarl.train.adapters` (the
learner model), :mod:`~llmmarl.train.playing` (the games of an update, the engines, the league's bookkeeping),
:mod:`~llmmarl.train.evaluation`, :mod:`~llmmarl.train.saving` (checkpoints, resume, exported adapters) and
:mod:`~llmmarl.train.monitors`. An algorithm supplies :meth:`~MultiAgentTrainer.learn` (one learner's step on its
samples), the optimizers to checkpoint and a logger, plus the hooks it needs (see :mod:`llmmarl.train.grpo`,
:mod:`llmmarl.train.ppo`, :mod:`llmmarl.train.rloo`).
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

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import Backend, RolloutEngine
from llmmarl.backends.device import model_device
from llmmarl.backends.factory import build_rollout_engine
from llmmarl.envs import make
from llmmarl.records import EpisodeRecord, summarise
from llmmarl.runner import Match
from llmmarl.train import evaluation, playing, saving
from llmmarl.train.adapters import attach_adapters, load_base_model
from llmmarl.train.checkpoint import OptimizerHolder, list_checkpoints
from llmmarl.train.config import TrainConfig
from llmmarl.train.engine import engine_spec
from llmmarl.train.exploration import exploration_metrics
from llmmarl.train.league import League, Snapshot
from llmmarl.train.metrics import MetricsRow, UpdateTimes, append_metrics
from llmmarl.train.monitors import eval_line, group_metrics, monitor_line, sample_metrics, summary_metrics
from llmmarl.train.playing import take_snapshot
from llmmarl.train.pretrain import pretrain
from llmmarl.train.registry import lookup
from llmmarl.train.samples import TurnSample, episodes_to_samples
from llmmarl.train.settings import LoraSettings

AgentSpecT = TypeVar("AgentSpecT", bound=LLMAgentSpec | ScriptedAgentSpec)


# ---- the loop --------------------------------------------------------------------------------------------------
class MultiAgentTrainer(ABC):
    """Trains every learner of a :class:`TrainConfig` from shared rollouts; checkpoints, resumes, exports.

    The trainer talks to its rollout engine only through :class:`~llmmarl.backends.base.RolloutEngine` (the
    sequence of calls is in that module's docs) and trains its own handle on the learner model, ``self.model``:
    the engine's model when the engine offers it (in-process), else its own copy of the base model.

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
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.env = make(cfg.env, **cfg.env_kwargs)
        cfg.check_env(self.env)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.backend: RolloutEngine = backend or build_rollout_engine(engine_spec(cfg))
        shared = self.backend.learner_model()
        base = shared if shared is not None else load_base_model(cfg.model, cfg.device)
        self.model = attach_adapters(base, cfg, self.extra_adapters())
        self.device = str(model_device(self.model))  # where the learner model trains (the engine may be elsewhere)
        self.tokenizer = self.backend.tokenizer
        self.learners = [lr.name for lr in cfg.learners]
        if shared is not None:
            self.backend.use_model(self.model)  # the engine serves the adapters just added
        else:
            self.backend.refresh_adapters(self.model, self.learners, version=0)
        self.learner_specs = [self._spec(lr.name, lr.name, cfg.temperature) for lr in cfg.learners]
        self.opponents = [self._decoding(s, cfg.temperature) for s in cfg.opponent_specs()]
        self.league = (
            League(pool_size=cfg.league.pool_size, sampling=cfg.league.sampling) if cfg.setting == "league" else None
        )
        self.step = 0
        self.pretrained = False  # the FORECAST pre-training (cfg.pretrain) ran; kept in checkpoints
        self.train_seconds = 0.0  # wall-clock of the updates so far, across resumes (the time budget's clock)
        self.longest_update_s = 0.0
        self.outage_replays = 0  # training games played again because the server failed them
        self.eval_results: dict[str, dict[str, dict[str, float]]] = {}
        self.progress = progress
        self.engine: RolloutEngine | None = None  # rollout_backend other than transformers; built by the first rollout
        self.engine_calls = 0  # the engine's generate calls so far (its sampling seeds), across resumes
        self.rollout_pool: Any = None  # train.distributed.RolloutPool once rollout_workers play (imports ray)

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
    def _spec(self, name: str, adapter: str | None, temperature: float) -> LLMAgentSpec:
        return self._decoding(LLMAgentSpec(name=name, adapter=adapter), temperature)

    def eval_spec(self, name: str, adapter: str | None = None) -> LLMAgentSpec:
        """An LLM agent decoded as this run's evaluation decodes (temperature, grammar, re-ask, answer budget,
        template): the base model (``adapter=None``) or an adapter, as a like-for-like stand-in for :meth:`compare`."""
        return self._spec(name, adapter, self.cfg.eval_temperature)

    def _decoding(self, spec: AgentSpecT, temperature: float) -> AgentSpecT:
        """The run's decoding for an LLM agent, learner or opponent alike: a frozen adapter trained under the
        grammar meets it again. Scripted agents are returned as they are."""
        if not isinstance(spec, LLMAgentSpec):
            return spec
        cfg = self.cfg
        return spec.model_copy(
            update={
                "temperature": temperature,
                "max_new_tokens": cfg.max_new_tokens,
                "template": cfg.template,
                "reask": cfg.reask,
                "constrained": cfg.constrained or cfg.canonical,
                "canonical": cfg.canonical,
                "lines": frozenset(cfg.lines),
                "plan_actions": cfg.plan_actions,
            }
        )

    def _snapshot_spec(self, snap: Snapshot) -> LLMAgentSpec:
        return self._spec(snap.name, snap.path, self.cfg.temperature)

    @property
    def corrects_engine_mismatch(self) -> bool:
        """Whether this update's samples get the importance correction: they come from the vLLM engine and were not
        grammar-constrained (vLLM's log-probs are then after the mask, ours before: not comparable)."""
        cfg = self.cfg
        return cfg.rollout_backend == "vllm" and not (cfg.constrained or cfg.canonical or self.constrained_rollout)

    # ---- one rollout -----------------------------------------------------------------------------------------
    def rollout(self) -> tuple[list[EpisodeRecord], float]:
        """The games of update ``self.step``, played by the current adapters; returns them and the seconds taken."""
        return playing.rollout(self)

    def rollout_backend(self) -> Backend:
        """What plays the training games: the trainer's own engine, or the ``rollout_backend`` engine (built on first
        use, with every learner's current adapter)."""
        return playing.rollout_backend(self)

    def _play_replaying_outages(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        return playing.play_replaying_outages(self, matches)

    def _remote_rollout(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        return playing.remote_rollout(self, matches)

    def sync(self) -> float:
        """After an update (``self.step`` already counts it): every engine serves the new adapters, as version
        ``self.step``. Returns the seconds taken."""
        return playing.sync(self)

    # ---- one update -------------------------------------------------------------------------------------------
    def update(self) -> dict[str, dict[str, Any]]:
        """Play one rollout, step every learner on its own samples of it (:meth:`learn`), sync the engines and
        append the metrics; returns each learner's logged metrics."""
        cfg = self.cfg
        episodes, t_rollout = self.rollout()
        samples = episodes_to_samples(
            episodes, self.learners, cfg.rewards.as_dict(), self.env.forfeit_reward, cfg.group_size, cfg.train_on
        )
        games = self.game_metrics(episodes)
        self.begin_update(episodes)
        logs: dict[str, dict[str, Any]] = {}
        for name in self.learners:
            t1 = time.perf_counter()
            metrics = {**sample_metrics(samples[name]), "time/rollout_s": t_rollout, **games.get(name, {})}
            if cfg.group_size > 1:
                metrics |= group_metrics(samples[name])
            if cfg.exploration is not None:
                metrics |= exploration_metrics(samples[name])
            metrics.update(self.learn(name, samples[name]))
            metrics["time/update_s"] = time.perf_counter() - t1
            logs[name] = self.log(name, metrics)
        self.finish_update(logs)
        return logs

    def finish_update(self, logs: dict[str, dict[str, Any]]) -> None:
        """After every learner stepped: count the update, sync the engines, append its metrics with the time taken
        by the rollout, the learners and the sync."""
        self.step += 1
        sync_s = self.sync()
        first = next(iter(logs.values()), {})
        times = {
            "rollout_s": first.get("time/rollout_s", 0.0),
            "learner_s": sum(m.get("time/update_s", 0.0) for m in logs.values()),
            "sync_s": sync_s,
        }
        retried = self.rollout_pool.retried if self.rollout_pool is not None else None  # replayed after an actor died
        self._append_metrics(
            MetricsRow(
                step=self.step,
                learners=logs,
                time=UpdateTimes(**times),
                engine=self.cfg.rollout_backend,
                rollout_games_retried=retried,
            )
        )

    def close(self) -> None:
        """Stop the rollout engine and the rollout actors, if any run (the next rollout starts them again)."""
        playing.close(self)

    def game_metrics(self, episodes: Sequence[EpisodeRecord]) -> dict[str, dict[str, float]]:
        """Each learner's ``game/...`` monitors over an update's games."""
        return {
            s.player: {f"game/{k}": v for k, v in summary_metrics(s).items()}
            for s in summarise(episodes)
            if s.player in self.learners
        }

    # ---- evaluation (llmmarl.train.evaluation) -----------------------------------------------------------------
    def _eval_opponents(self) -> list[AgentSpec]:
        """The evaluation opponents (the training lineup's if none are set), decoded as evaluation decodes."""
        return evaluation.eval_opponents(self)

    def evaluate(
        self, games: int | None = None, env_overrides: dict[str, Any] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Each learner against the evaluation lineups; returns ``{lineup: {learner: metrics}}``.

        ``env_overrides`` plays the same games (seeds, seats, opponents) under other game settings, e.g.
        ``{"talk": False}`` for ``signal_v0``: the trained team with its messages switched off, which measures
        what the messages carry. Such an evaluation is returned and logged under its own key, not kept as the
        run's evaluation.
        """
        return evaluation.evaluate(self, games, env_overrides)

    def measure(self) -> dict[str, dict[str, dict[str, float]]]:
        """The game's measures (``eval_measures``) of each learner's policy as evaluation decodes it:
        ``{measure: {learner: metrics}}``."""
        return evaluation.measure(self)

    def compare(
        self, learner: str, stand_ins: Sequence[AgentSpec], games: int | None = None
    ) -> dict[str, dict[str, float]]:
        """Other agents in ``learner``'s evaluation games: same seeds, seats and opponents, one lineup each.

        For like-for-like comparisons with the evaluation of :meth:`evaluate`: the base model (``adapter=None``),
        or the trained adapter under another decoding (greedy without the grammar, say). Returns
        ``{stand_in name: metrics}``; every stand-in takes ``learner``'s seat, so the games are identical up to
        the stand-in's own moves.
        """
        return evaluation.compare(self, learner, stand_ins, games)

    # ---- checkpoints and export (llmmarl.train.saving) ---------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return saving.run_state(self)

    def save(self) -> Path:
        """A resumable checkpoint of the current step, and the adapters exported beside their manifest."""
        return saving.save(self)

    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``output_dir``; False if there is none."""
        return saving.resume(self)

    def export(self) -> Path:
        """Write every learner's adapter to ``<adapters_dir>/<name>/`` and list them in ``manifest.json``."""
        return saving.export(self)

    def _append_metrics(self, row: MetricsRow) -> None:
        append_metrics(self.out / "metrics.jsonl", row)

    # ---- the whole run ---------------------------------------------------------------------------------------
    def out_of_time(self) -> bool:
        """Whether another update, as long as the longest so far, would end past ``cfg.time_budget_minutes``."""
        budget = self.cfg.time_budget_minutes
        return budget is not None and self.train_seconds + self.longest_update_s > budget * 60.0

    def train(self, max_updates: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """Run until ``cfg.steps`` updates (or ``max_updates`` more); returns the last evaluation."""
        cfg = self.cfg
        if cfg.pretrain is not None and cfg.pretrain.enabled and self.step == 0 and not self.pretrained:
            pretrain(self)  # once, before the first update of a fresh run
        if self.league is not None and not self.league.snapshots:
            take_snapshot(self)  # the pool starts with the untrained adapters
        stop = cfg.steps if max_updates is None else min(cfg.steps, self.step + max_updates)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="updates", unit="upd", disable=not self.progress)
        try:
            while self.step < stop and not self.out_of_time():
                t0 = time.perf_counter()
                logs = self.update()
                seconds = time.perf_counter() - t0
                self.train_seconds += seconds
                self.longest_update_s = max(self.longest_update_s, seconds)
                last = self.step == cfg.steps or self.out_of_time()
                if last and self.step < cfg.steps and self.progress:
                    bar.write(
                        f"time budget: {self.train_seconds / 60:.1f} of {cfg.time_budget_minutes:g} min used, "
                        f"stopping after update {self.step} of {cfg.steps}"
                    )
                bar.update(1)
                bar.set_postfix_str(monitor_line(logs), refresh=True)
                if self.league is not None and self.step % cfg.league.snapshot_every == 0:
                    take_snapshot(self)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and not last:
                    bar.write(f"step {self.step} eval: {eval_line(self.evaluate())}")
                if self.step % cfg.save_every == 0 or last:
                    if last:
                        results = self.evaluate()
                        if results:
                            bar.write(f"step {self.step} eval: {eval_line(results)}")
                    self.save()
        finally:
            bar.close()
        return self.eval_results


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
    if resume and trainer.resume() and progress:
        print(f"resumed {cfg.output_dir} at update {trainer.step}")
    try:
        trainer.train()
    finally:
        trainer.close()
    return trainer
