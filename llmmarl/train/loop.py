"""What every multi-agent trainer shares, whatever its algorithm: :class:`MultiAgentTrainer`.

A trainer holds one shared base model with one LoRA adapter per learner (plus whatever extra adapters its
algorithm needs, e.g. PPO's critics). Each update plays ONE rollout - every game of the update, all learners at
once, through :meth:`MultiAgentTrainer.rollout` - and steps every learner on its own turns of it. This module owns
the update's skeleton (:meth:`MultiAgentTrainer.update`: rollout, samples, each learner's step, engine sync,
metrics) and the rest of the run: the lineups, the league, evaluation, checkpoints and resuming, the exported
adapters and their manifest, ``metrics.jsonl`` and the progress bar. An algorithm supplies
:meth:`~MultiAgentTrainer.learn` (one learner's step on its samples), the optimizers to checkpoint and a logger,
plus the hooks it needs (see :mod:`llmmarl.train.grpo`, :mod:`llmmarl.train.ppo`, :mod:`llmmarl.train.rloo`).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from tqdm.auto import tqdm

from llmmarl.agents.specs import AgentSpec, LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import Backend, BackendError, RolloutEngine
from llmmarl.backends.device import model_device, resolve_device, resolve_dtype
from llmmarl.backends.factory import build_engine
from llmmarl.backends.vllm_engine import VLLMEngine
from llmmarl.envs import make
from llmmarl.models import portable_name
from llmmarl.records import OUTCOME_POINTS, AgentSummary, EpisodeRecord, summarise
from llmmarl.runner import Match, Runner
from llmmarl.train.checkpoint import (
    OptimizerHolder,
    list_checkpoints,
    load_checkpoint,
    load_extra,
    save_adapter,
    save_checkpoint,
    write_manifest,
)
from llmmarl.train.config import LoraSettings, TrainConfig
from llmmarl.train.engine import build_engine as build_vllm_engine
from llmmarl.train.engine import engine_spec, publish_learners
from llmmarl.train.league import League, Snapshot
from llmmarl.train.lineup import Group, eval_lineups, group_matches, training_groups
from llmmarl.train.metrics import EvalWith, MetricsRow, UpdateTimes, append_metrics
from llmmarl.train.rollout import TERMS, TurnSample, episodes_to_samples

OUTAGE_REPLAYS = 2  # times a training game stopped by a server outage is played again before the run stops
# Settings a checkpoint must share with the config that resumes it: the games, the model and what is trained.
_RESUME_KEYS = ("env", "env_kwargs", "model", "setting", "algorithm")
# Checkpoints written before ``algorithm:`` existed have no such key: GRPO was then the only algorithm.
_LEGACY_ALGORITHM = "grpo"

AgentSpecT = TypeVar("AgentSpecT", bound=LLMAgentSpec | ScriptedAgentSpec)


# ---- the model: one base, one adapter per learner --------------------------------------------------------------
def lora_config(settings: LoraSettings) -> Any:
    """PEFT's LoraConfig for one adapter."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        layers_to_transform=settings.layers,
        task_type="CAUSAL_LM",
    )


def attach_adapters(model: Any, cfg: TrainConfig, extra: Sequence[tuple[str, LoraSettings]] = ()) -> Any:
    """Give ``model`` one LoRA adapter per learner (fresh, or loaded from ``init_adapter``), then the fresh
    ``extra`` adapters (name, shape); returns the PEFT model."""
    from peft import PeftModel, get_peft_model

    def add(model: Any, name: str, settings: LoraSettings) -> Any:
        if isinstance(model, PeftModel):
            model.add_adapter(name, lora_config(settings))
            return model
        return get_peft_model(model, lora_config(settings), adapter_name=name)

    with torch.random.fork_rng():  # seeded adapter init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        for lr in cfg.learners:
            if not lr.init_adapter:
                model = add(model, lr.name, lr.lora)
            elif isinstance(model, PeftModel):
                model.load_adapter(lr.init_adapter, adapter_name=lr.name, is_trainable=True)
            else:
                model = PeftModel.from_pretrained(model, lr.init_adapter, adapter_name=lr.name, is_trainable=True)
        for name, settings in extra:
            model = add(model, name, settings)
    return model


def load_base_model(name: str, device: str | None) -> Any:
    """The trainer's own copy of base model ``name`` (for an engine that does not share its model), placed and
    typed as a backend would place it (:mod:`llmmarl.backends.device`)."""
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    where = resolve_device(device)
    model: Any = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=resolve_dtype("auto", where))
    return model.to(where)


def adapter_parameters(model: Any, name: str) -> list[torch.nn.Parameter]:
    """The LoRA weights of adapter ``name`` (PEFT names them ``...lora_A.<name>.weight``)."""
    return [p for n, p in model.named_parameters() if f".{name}." in n and "lora_" in n]


# ---- playing games for evaluation ---------------------------------------------------------------------------
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


# ---- monitors ----------------------------------------------------------------------------------------------------
def summary_metrics(s: AgentSummary) -> dict[str, float]:
    m = {
        "return": s.mean_return,
        "ci95": s.ci95,
        "win_rate": s.wins / s.games if s.games else 0.0,
        "draw_rate": s.draws / s.games if s.games else 0.0,
        "invalid_rate": s.invalid_rate,
        "fallback_rate": s.fallback_rate,
        "games": float(s.games),
        "messages_per_game": s.messages_sent / s.games if s.games else 0.0,
    }
    if s.decisions:
        m["tokens_per_turn"] = s.tokens_generated / s.decisions  # decoding cost: every attempt's answer tokens
    for key in ("prediction_accuracy", "forecast_skill", "plan_following", "message_following"):
        if (value := getattr(s, key)) is not None:
            m[key] = value
    return m


def format_metrics(label: str, m: Mapping[str, float]) -> str:
    """One evaluation line - return with its 95% interval, win, draw and invalid rates - as the scripts print it."""
    lo, hi = m["return"] - m["ci95"], m["return"] + m["ci95"]
    line = (
        f"{label}: return {m['return']:+.3f} (95% CI {lo:+.3f}..{hi:+.3f}), win {m['win_rate']:.0%}, "
        f"draw {m['draw_rate']:.0%}, invalid {m['invalid_rate']:.1%} over {int(m['games'])} games"
    )
    if "prediction_accuracy" in m:
        line += f", prediction accuracy {m['prediction_accuracy']:.0%}"
    return line


def separated(better: Mapping[str, float], worse: Mapping[str, float]) -> bool:
    """Whether ``better``'s mean return beats ``worse``'s with non-overlapping 95% intervals."""
    return better["return"] - better["ci95"] > worse["return"] + worse["ci95"]


def sample_metrics(samples: Sequence[TurnSample]) -> dict[str, float]:
    """Reward, usability and answer length of one learner's samples of an update."""
    if not samples:
        return {"samples/count": 0.0}
    n = len(samples)
    mean = sum(s.reward for s in samples) / n
    m = {
        "samples/count": float(n),
        "samples/reward_mean": mean,
        "samples/reward_var": sum((s.reward - mean) ** 2 for s in samples) / n,
        "samples/usable_rate": sum(s.usable for s in samples) / n,
        "samples/completion_tokens": sum(len(s.completion_ids) for s in samples) / n,
    }
    for t in TERMS:
        m[f"terms/{t}"] = sum(s.terms[t] for s in samples) / n
    return m


def monitor_line(logs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, m in logs.items():
        ret, win, inv = m.get("game/return", math.nan), m.get("game/win_rate", math.nan), m.get("game/invalid_rate")
        line = f"{name}: R {ret:+.2f} win {win:.0%}"
        if inv is not None:
            line += f" inv {inv:.0%}"
        if "entropy" in m:
            line += f" H {m['entropy']:.2f}"
        if "ppo/explained_variance" in m:
            line += f" EV {m['ppo/explained_variance']:+.2f}"
        parts.append(line)
    return " | ".join(parts)


def eval_line(results: dict[str, dict[str, dict[str, float]]]) -> str:
    return "; ".join(
        f"{lineup} [{name}] R {m['return']:+.2f}±{m['ci95']:.2f} win {m['win_rate']:.0%} inv {m['invalid_rate']:.0%}"
        for lineup, r in results.items()
        for name, m in r.items()
    )


def training_summary(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that shaped an adapter, for its manifest entry."""
    keys = ("algorithm", "setting", "learning_rate", "games_per_update", "group_size", "temperature")
    out = {k: getattr(cfg, k) for k in keys}
    settings = cfg.algorithm_settings()
    if settings is not None:
        out[cfg.algorithm] = settings.model_dump(mode="json")
    return out | {
        "rewards": cfg.rewards.as_dict(),
        "max_new_tokens": cfg.max_new_tokens,
        "steps": cfg.steps,
        "reask": cfg.reask,
        "constrained": cfg.constrained,
        "lines": cfg.lines,  # an adapter trained to answer ACTION only expects that prompt again
        "plan_actions": cfg.plan_actions,
    }


# ---- the loop --------------------------------------------------------------------------------------------------
class MultiAgentTrainer(ABC):
    """Trains every learner of a :class:`TrainConfig` from shared rollouts; checkpoints, resumes, exports.

    The trainer talks to its rollout engine only through :class:`~llmmarl.backends.base.RolloutEngine` (the
    sequence of calls is in that module's docs) and trains its own handle on the learner model, ``self.model``:
    the engine's model when the engine offers it (in-process), else a copy of the base model loaded here.

    Args:
        cfg: the run.
        backend: the rollout engine; default: :func:`~llmmarl.backends.factory.build_engine` for ``cfg.model``.
        progress: show a progress bar with per-agent monitors.
    """

    algorithm: ClassVar[str]

    def __init__(self, cfg: TrainConfig, backend: RolloutEngine | None = None, progress: bool = True) -> None:
        if cfg.algorithm != self.algorithm:
            raise ValueError(f"{type(self).__name__} runs algorithm: {self.algorithm}, the config has {cfg.algorithm}")
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.env = make(cfg.env, **cfg.env_kwargs)
        cfg.check_env(self.env)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.backend: RolloutEngine = backend or build_engine(engine_spec(cfg))
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
        self.train_seconds = 0.0  # wall-clock of the updates so far, across resumes (the time budget's clock)
        self.longest_update_s = 0.0
        self.outage_replays = 0  # training games played again because the server failed them
        self.eval_results: dict[str, dict[str, dict[str, float]]] = {}
        self.progress = progress
        self.engine: VLLMEngine | None = None  # rollout_backend: vllm; started by the first rollout
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
                "constrained": cfg.constrained,
                "lines": frozenset(cfg.lines),
                "plan_actions": cfg.plan_actions,
            }
        )

    def _snapshot_spec(self, snap: Snapshot) -> LLMAgentSpec:
        return self._spec(snap.name, snap.path, self.cfg.temperature)

    @property
    def corrects(self) -> bool:
        """Whether this update's samples get the importance correction: they come from the vLLM engine and were not
        grammar-constrained (vLLM's log-probs are then after the mask, ours before: not comparable)."""
        return self.cfg.rollout_backend == "vllm" and not (self.cfg.constrained or self.constrained_rollout)

    # ---- one rollout -----------------------------------------------------------------------------------------
    def rollout(self) -> tuple[list[EpisodeRecord], float]:
        """The games of update ``self.step``, played by the current adapters; returns them and the seconds taken."""
        cfg = self.cfg
        t0 = time.perf_counter()
        specs = self.learner_specs
        if self.constrained_rollout:  # e.g. GRPO's format warm-up
            specs = [s.model_copy(update={"constrained": True}) for s in specs]
        groups, seeds = training_groups(
            cfg, self.env, self.step, specs, self.opponents, self.league, self._snapshot_spec
        )
        self.model.eval()  # PEFT's mixed-adapter generation refuses training mode
        matches = group_matches(cfg, groups, seeds)
        play = self._remote_rollout if cfg.rollout_workers else self._play_replaying_outages
        episodes = play(matches)
        self._record_league(groups, episodes)
        return episodes, time.perf_counter() - t0

    def rollout_backend(self) -> Backend:
        """What plays the training games: the trainer's own engine, or the vLLM engine (started on first use, with
        every learner's current adapter published)."""
        if self.cfg.rollout_backend == "transformers":
            return self.backend
        if self.engine is None:
            engine = build_vllm_engine(self.cfg, self.tokenizer)
            engine.calls = self.engine_calls
            self.engine = engine.start()
            publish_learners(self.engine, self.model, self.learners, self.step)
        return self.engine

    def _play_replaying_outages(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        """Play ``matches``; games an outage stopped are played again (same seed), up to ``OUTAGE_REPLAYS`` times.

        A game the server broke is no sample of the policy: training on what was left of it, or on a smaller group
        than the baseline expects, would bias the update. If the outage persists the run stops with one clear error
        (the last checkpoint resumes it).
        """
        runner = Runner(self.rollout_backend(), concurrency=self.cfg.concurrency, progress=False)
        done = {ep.game_id: ep for ep in runner.play(matches)}
        for _ in range(OUTAGE_REPLAYS):
            broken = [m for m in matches if done[m.game_id].outage]
            if not broken:
                break
            self.outage_replays += len(broken)
            done.update({ep.game_id: ep for ep in runner.play(broken)})
        still = [ep for ep in done.values() if ep.outage]
        if still:
            raise BackendError(
                f"{len(still)} training games were still stopped by server outages after {OUTAGE_REPLAYS} replays "
                f"(first: {still[0].error}); fix the server, then resume from the last checkpoint with --resume"
            )
        return [done[m.game_id] for m in matches]

    def sync(self) -> float:
        """After an update (``self.step`` already counts it): every engine serves the new adapters, as version
        ``self.step``. Returns the seconds taken."""
        t0 = time.perf_counter()
        self.backend.refresh_adapters(self.model, self.learners, version=self.step)
        if self.engine is not None:
            publish_learners(self.engine, self.model, self.learners, self.step)
        return time.perf_counter() - t0

    def _remote_rollout(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        """Play on the rollout actors with the learners' current adapters; refuse answers from stale weights."""
        from llmmarl.train.distributed import (  # imports ray: only when asked for
            RolloutPool,
            RolloutWorker,
            VLLMRolloutWorker,
            check_versions,
        )

        cfg = self.cfg
        if self.rollout_pool is None:
            # vLLM: each actor runs its own engine replica; transformers: its own copy of the model.
            vllm = cfg.rollout_backend == "vllm"
            self.rollout_pool = RolloutPool(
                cfg.rollout_workers,
                engine_spec(cfg),
                address=cfg.ray_address,
                concurrency=cfg.concurrency,
                num_gpus=cfg.rollout_worker_gpus,
                worker_cls=VLLMRolloutWorker if vllm else RolloutWorker,
                worker_args=(cfg.model_dump(mode="json"), cfg.concurrency) if vllm else None,
            )
        versions = self.rollout_pool.sync(self.model, self.learners)  # every actor, before every rollout
        episodes: list[EpisodeRecord] = self.rollout_pool.play(matches)
        check_versions(episodes, versions)
        return episodes

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
        if self.engine is not None:
            self.engine.close()
            self.engine_calls = self.engine.calls
            self.engine = None
        if self.rollout_pool is not None:
            self.rollout_pool.close()
            self.rollout_pool = None

    def game_metrics(self, episodes: Sequence[EpisodeRecord]) -> dict[str, dict[str, float]]:
        """Each learner's ``game/...`` monitors over an update's games."""
        return {
            s.player: {f"game/{k}": v for k, v in summary_metrics(s).items()}
            for s in summarise(episodes)
            if s.player in self.learners
        }

    def _record_league(self, groups: Sequence[Group], episodes: Sequence[EpisodeRecord]) -> None:
        if self.league is None:
            return
        snapshot_of = {g: group.snapshot for g, group in enumerate(groups) if group.snapshot}
        learners = set(self.learners)
        for ep in episodes:
            snap = snapshot_of.get(int(ep.game_id) // self.cfg.group_size)
            if snap is None or ep.error:
                continue
            for seat, player in ep.seats.items():
                if player in learners:
                    self.league.record(snap, OUTCOME_POINTS[ep.outcomes[seat]])

    def _snapshot(self) -> None:
        assert self.league is not None
        for name in self.learners:
            snap = Snapshot(
                name=f"{name}-s{self.step}",
                learner=name,
                step=self.step,
                path=str(self.out / "league" / f"{name}-s{self.step}"),
            )
            save_adapter(self.model, name, Path(snap.path))
            for old in self.league.add(snap):
                self.backend.unload_adapter(old.name)  # loaded by the runner when the snapshot played
                if self.engine is not None:
                    self.engine.unload_adapter(old.name)
                shutil.rmtree(old.path, ignore_errors=True)

    # ---- evaluation --------------------------------------------------------------------------------------------
    def _eval_opponents(self) -> list[AgentSpec]:
        """The evaluation opponents (the training lineup's if none are set), decoded as evaluation decodes."""
        specs = self.cfg.eval_opponent_specs() or self.cfg.opponent_specs()
        return [self._decoding(s, self.cfg.eval_temperature) for s in specs]

    def evaluate(
        self, games: int | None = None, env_overrides: dict[str, Any] | None = None
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Each learner against the evaluation lineups; returns ``{lineup: {learner: metrics}}``.

        ``env_overrides`` plays the same games (seeds, seats, opponents) under other game settings, e.g.
        ``{"talk": False}`` for ``signal_v0``: the trained team with its messages switched off, which measures
        what the messages carry. Such an evaluation is returned and logged under its own key, not kept as the
        run's evaluation.
        """
        cfg = self.cfg
        n = cfg.eval_games if games is None else games
        if n == 0:
            return {}
        learners = [self.eval_spec(lr.name, lr.name) for lr in cfg.learners]
        opponents = self._eval_opponents()
        lineups = eval_lineups(cfg.model_copy(update={"eval_games": n}), self.env, learners, opponents)
        self.model.eval()
        env_kwargs = {**cfg.env_kwargs, **(env_overrides or {})}
        played = play_lineups(self.backend, cfg.env, env_kwargs, lineups, cfg.seed, cfg.concurrency, self.progress)
        results = {
            lineup: {s.player: summary_metrics(s) for s in summaries if s.player in self.learners}
            for lineup, summaries in played.items()
        }
        if env_overrides:
            # Not under "eval": readers of metrics.jsonl take that key as the run's own evaluation.
            self._append_metrics(
                MetricsRow(step=self.step, eval_with=EvalWith(env_overrides=env_overrides, eval=results))
            )
            return results
        self.eval_results = results
        nash = self.nash_conv() if cfg.eval_nash_conv else {}
        for name in self.learners:
            logged = {f"eval/{lineup}/{k}": v for lineup, r in results.items() for k, v in r.get(name, {}).items()}
            self.log(name, logged | {f"eval/{k}": v for k, v in nash.get(name, {}).items()})
        self._append_metrics(MetricsRow(step=self.step, eval=results, nash_conv=nash or None))
        return results

    def nash_conv(self) -> dict[str, dict[str, float]]:
        """Each learner's Kuhn poker NashConv, its policy read as evaluation decodes it (see ``eval_nash_conv``)."""
        from llmmarl.eval.exploitability import agent_nash_conv

        self.model.eval()
        out = {}
        for name in self.learners:
            r = agent_nash_conv(self.eval_spec(name, name), self.backend, self.cfg.eval_nash_conv, self.cfg.seed)
            out[name] = {"nash_conv": r.nash_conv, "nash_conv_lo": r.ci95[0], "nash_conv_hi": r.ci95[1]}
        return out

    def compare(
        self, learner: str, stand_ins: Sequence[LLMAgentSpec], games: int | None = None
    ) -> dict[str, dict[str, float]]:
        """Other agents in ``learner``'s evaluation games: same seeds, seats and opponents, one lineup each.

        For like-for-like comparisons with the evaluation of :meth:`evaluate`: the base model (``adapter=None``),
        or the trained adapter under another decoding (greedy without the grammar, say). Returns
        ``{stand_in name: metrics}``; every stand-in takes ``learner``'s seat, so the games are identical up to
        the stand-in's own moves.
        """
        cfg = self.cfg
        run = cfg.model_copy(update={"eval_games": cfg.eval_games if games is None else games})
        opponents = self._eval_opponents()
        lineups: dict[str, list[dict[str, AgentSpec]]] = {}
        for spec in stand_ins:
            seatings = eval_lineups(run, self.env, [spec.model_copy(update={"name": learner})], opponents)
            for key, rows in seatings.items():  # "<learner> vs <opponent>"
                label = key.replace(learner, spec.name, 1) if key.startswith(learner) else f"{spec.name} ({key})"
                lineups[label] = [{seat: spec if a.name == learner else a for seat, a in row.items()} for row in rows]
        self.model.eval()
        played = play_lineups(self.backend, cfg.env, cfg.env_kwargs, lineups, cfg.seed, cfg.concurrency, self.progress)
        names = {spec.name for spec in stand_ins}
        return {
            lineup: next(summary_metrics(s) for s in summaries if s.player in names)
            for lineup, summaries in played.items()
        }

    # ---- checkpoints and export ----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.model_dump(mode="json"),
            "league": self.league.model_dump() if self.league else None,
            "engine": self.backend.state_dict(),  # e.g. the counter each generate call's seed derives from
            "engine_calls": self.engine.client._calls if self.engine and self.engine.client else self.engine_calls,
            "eval": self.eval_results,
            "train_seconds": self.train_seconds,
            "longest_update_s": self.longest_update_s,
            **self.json_state(),
        }

    def save(self) -> Path:
        """A resumable checkpoint of the current step, and the adapters exported beside their manifest."""
        path = save_checkpoint(
            self.out / "checkpoints",
            self.step,
            self.model,
            self.optimizers(),
            self._state(),
            self.cfg.keep_checkpoints,
            extra=self.extra_state(),
        )
        self.export()
        return path

    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``output_dir``; False if there is none."""
        found = list_checkpoints(self.out / "checkpoints")
        if not found:
            return False
        state = json.loads((found[-1] / "state.json").read_text())
        saved, ours = state["config"], self.cfg.model_dump(mode="json")
        for key in _RESUME_KEYS:
            theirs = saved.get(key, _LEGACY_ALGORITHM if key == "algorithm" else None)
            if theirs != ours[key]:
                raise ValueError(
                    f"{found[-1]} was written with {key}={theirs!r}, this config has {ours[key]!r}: "
                    "resume with the same config, or use another output_dir"
                )
        if sorted(lr["name"] for lr in saved["learners"]) != sorted(self.learners):
            raise ValueError(f"{found[-1]} has learners {[lr['name'] for lr in saved['learners']]}: not this config's")
        state = load_checkpoint(found[-1], self.model, self.optimizers())
        self.load_extra_state(load_extra(found[-1]))
        self.step = state["step"]
        # Checkpoints from before the engine interface kept the transformers backend's call counter on its own.
        self.backend.load_state_dict(state.get("engine") or {"calls": state["backend_calls"]})
        self.engine_calls = state.get("engine_calls", 0)
        self.eval_results = state.get("eval") or {}
        self.train_seconds = state.get("train_seconds", 0.0)
        self.longest_update_s = state.get("longest_update_s", 0.0)
        if state.get("league") is not None:
            self.league = League.model_validate(state["league"])
        self.load_json_state(state)
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
                    "steps": self.step,
                    "config": {"learner": lr.model_dump(mode="json"), **training_summary(cfg)},
                    "eval": {lineup: r[lr.name] for lineup, r in self.eval_results.items() if lr.name in r},
                }
            )
        return write_manifest(folder, entries, {"output_dir": cfg.output_dir, "config": cfg.model_dump(mode="json")})

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
        if self.league is not None and not self.league.snapshots:
            self._snapshot()  # the pool starts with the untrained adapters
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
                    self._snapshot()
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
