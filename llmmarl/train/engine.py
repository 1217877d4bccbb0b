"""The engine part of a trainer: :class:`TrainingEngine`, everything that plays a run's games, built by
:func:`build_training_engine` from the config.

It holds the trainer's own in-process engine (``backend``: the model the trainer trains in place, or a separate
copy of it), the ``rollout_backend`` engine when that is another kind (``rollout_engine``; ``vllm`` a
:class:`~llmmarl.backends.vllm_engine.VLLMEngine`, started at the first rollout, after a resume has loaded the
weights), the Ray rollout actors when ``rollout_workers`` play (``pool``), and the engine's call counter (its
sampling seeds, across resumes). Every engine is built by :func:`~llmmarl.backends.factory.build_rollout_engine`
from the one backend registry, described by :func:`engine_spec` and :func:`rollout_spec`. After each update every
engine is handed every learner's adapter (:meth:`TrainingEngine.sync`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.base import Backend, BackendError, RolloutEngine
from llmmarl.backends.factory import BackendSpec, build_rollout_engine
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.backends.vllm_engine import adapter_ranks
from llmmarl.records import EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.train.adapters import attach_adapters, load_base_model
from llmmarl.train.config import TrainConfig
from llmmarl.train.exploration import LabelExplorer
from llmmarl.train.settings import LoraSettings
from llmmarl.train.state import RunState

OUTAGE_REPLAYS = 2  # times a training game stopped by a server outage is played again before the run stops


def engine_spec(cfg: TrainConfig) -> BackendSpec:
    """The in-process engine of a run: the trainer's own, and each rollout actor's (``rollout_workers``)."""
    return BackendSpec(model=cfg.model, max_batch_size=cfg.max_batch_size, device=cfg.device, seed=cfg.seed)


def rollout_spec(cfg: TrainConfig) -> BackendSpec:
    """The engine that plays a run's games when ``rollout_backend`` is not ``transformers``: a separate one (its
    model is not the trainer's). For ``vllm``: the adapter slots of :func:`engine_sizes`, adapter versions under
    ``<output_dir>/engine``, the server settings of ``cfg.vllm`` as they are."""
    spec = engine_spec(cfg).model_dump(exclude_unset=True)
    if cfg.rollout_backend != "vllm":
        return BackendSpec(**spec, kind=cfg.rollout_backend, colocate=False)
    loras, cpu_loras, rank = engine_sizes(cfg)
    return BackendSpec(
        **spec,
        kind="vllm",
        folder=Path(cfg.output_dir) / "engine",
        max_loras=loras,
        max_cpu_loras=cpu_loras,
        max_lora_rank=rank,
        **cfg.vllm.server_settings(),
    )


def engine_sizes(cfg: TrainConfig) -> tuple[int, int, int]:
    """``(max_loras, max_cpu_loras, max_lora_rank)`` for a run: learners + frozen LLM opponents + league pool + 1.

    The extra slot is the swap: a learner's new version is loaded before its old one is unloaded.
    """
    frozen = [s.adapter for s in cfg.opponent_specs() if isinstance(s, LLMAgentSpec) and s.adapter]
    pool = cfg.league.pool_size if cfg.setting == "league" else 0
    loras = cfg.vllm.max_loras or len(cfg.learners) + len(frozen) + pool + 1
    cpu_loras = cfg.vllm.max_cpu_loras or 2 * loras
    rank = max([lr.lora.r for lr in cfg.learners] + adapter_ranks([f for f in frozen if Path(f).is_dir()]))
    return loras, cpu_loras, rank


def build_training_engine(
    cfg: TrainConfig,
    state: RunState,
    extra_adapters: Sequence[tuple[str, LoraSettings]] = (),
    backend: RolloutEngine | None = None,
) -> TrainingEngine:
    """The engine part of a run, with the learner model it serves: the in-process engine's own model when it offers
    one, else a copy of the base model; one LoRA adapter per learner, plus ``extra_adapters`` (e.g. PPO's critics).

    ``backend``: the in-process engine; default: :func:`~llmmarl.backends.factory.build_rollout_engine` for
    :func:`engine_spec`.
    """
    backend = backend or build_rollout_engine(engine_spec(cfg))
    shared = backend.learner_model()
    base = shared if shared is not None else load_base_model(cfg.model, cfg.device)
    model = attach_adapters(base, cfg, list(extra_adapters))
    learners = [lr.name for lr in cfg.learners]
    if shared is not None:
        backend.use_model(model)  # the engine serves the adapters just added
    else:
        backend.refresh_adapters(model, learners, version=0)
    return TrainingEngine(cfg, backend, model, learners, state)


class TrainingEngine:
    """What plays a run's games (see the module docs). It reads the learner model, never trains it.

    Args:
        cfg: the run.
        backend: the trainer's own in-process engine, already serving ``model``'s adapters.
        model: the learner model (a PEFT model with one adapter per learner).
        learners: the learners' adapter names.
        state: the run's counters; an engine serves the adapters of update ``state.step`` as that version.
    """

    def __init__(
        self, cfg: TrainConfig, backend: RolloutEngine, model: Any, learners: Sequence[str], state: RunState
    ) -> None:
        self.cfg, self.backend, self.model, self.learners, self.state = cfg, backend, model, list(learners), state
        self.rollout_engine: RolloutEngine | None = None  # rollout_backend other than transformers; built on first use
        self.pool: Any = None  # train.distributed.RolloutPool once rollout_workers play (imports ray)
        self.calls = 0  # the rollout engine's generate calls so far (its sampling seeds), across resumes
        self.outage_replays = 0  # training games played again because the server failed them

    def player(self) -> Backend:
        """What plays the training games: the in-process engine, or the ``rollout_backend`` engine (built on first
        use, its sampling seeds continued, every learner's current adapter handed to it; a vLLM server starts
        then)."""
        if self.cfg.rollout_backend == "transformers":
            return self.backend
        if self.rollout_engine is None:
            engine = build_rollout_engine(rollout_spec(self.cfg))
            engine.load_state_dict({"calls": self.calls})
            self.rollout_engine = engine
            engine.refresh_adapters(self.model, self.learners, self.state.step)
        return self.rollout_engine

    def rollout(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        """Play the games of an update with the learners' current adapters: on the rollout actors
        (``rollout_workers``), or here with games an outage broke played again."""
        if self.cfg.rollout_workers:
            return self._remote_rollout(matches)
        return self._play_replaying_outages(matches)

    def _play_replaying_outages(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        """Play ``matches``; games an outage stopped are played again (same seed), up to ``OUTAGE_REPLAYS`` times.

        A game the server broke is no sample of the policy: training on what was left of it, or on a smaller group
        than the baseline expects, would bias the update. If the outage persists the run stops with one clear error
        (the last checkpoint resumes it).
        """
        runner = Runner(self.player(), concurrency=self.cfg.concurrency, progress=False, explore=self._explorer())
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

    def _explorer(self) -> LabelExplorer | None:
        """The label-level exploration of this update's rollout (``exploration:``), or None."""
        settings = self.cfg.exploration
        if settings is None:
            return None
        backend = self.player()
        if not isinstance(backend, TransformersBackend):
            raise BackendError(f"exploration scores answers with the in-process model; {type(backend).__name__} cannot")
        return LabelExplorer(backend, self.learners, settings.epsilon, self.cfg.seed, self.state.step)

    def _remote_rollout(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        """Play on the rollout actors with the learners' current adapters; refuse answers from stale weights."""
        from llmmarl.train.distributed import (  # imports ray: only when asked for
            RolloutPool,
            RolloutWorker,
            VLLMRolloutWorker,
            check_versions,
        )

        cfg = self.cfg
        if self.pool is None:
            # vLLM: each actor runs its own engine replica; transformers: its own copy of the model.
            vllm = cfg.rollout_backend == "vllm"
            self.pool = RolloutPool(
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
        versions = self.pool.sync(self.model, self.learners)  # every actor, before every rollout
        episodes: list[EpisodeRecord] = self.pool.play(matches)
        check_versions(episodes, versions)
        return episodes

    @property
    def retried(self) -> int | None:
        """Rollout games the actors played again after one of them died; None without actors."""
        return self.pool.retried if self.pool is not None else None

    def sync(self) -> float:
        """After an update (``state.step`` already counts it): every engine serves the new adapters, as version
        ``state.step``. Returns the seconds taken."""
        t0 = time.perf_counter()
        step = self.state.step
        self.backend.refresh_adapters(self.model, self.learners, version=step)
        if self.rollout_engine is not None:
            self.rollout_engine.refresh_adapters(self.model, self.learners, step)
        return time.perf_counter() - t0

    def restart(self) -> None:
        """The engines play with adapters trained outside an update (the FORECAST pre-training): the in-process one
        drops the prefixes cached under the old weights (or reloads them); a running rollout engine or rollout
        actors are stopped, and the next rollout starts them with the current adapters."""
        self.backend.refresh_adapters(self.model, self.learners, version=self.state.step)
        if self.rollout_engine is not None or self.pool is not None:
            self.close()

    def unload(self, name: str) -> None:
        """Unload adapter ``name`` (a dropped league snapshot) from every engine that may have loaded it."""
        self.backend.unload_adapter(name)  # loaded by the runner when the snapshot played
        if self.rollout_engine is not None:
            self.rollout_engine.unload_adapter(name)

    def close(self) -> None:
        """Stop the rollout engine and the rollout actors, if any run (the next rollout starts them again)."""
        if self.rollout_engine is not None:
            self.calls = int(self.rollout_engine.state_dict().get("calls", 0))
            close = getattr(self.rollout_engine, "close", None)  # an engine that runs a server stops it
            if close is not None:
                close()
            self.rollout_engine = None
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the engines: their sampling-seed counters."""
        engine = self.rollout_engine
        return {
            "engine": self.backend.state_dict(),  # e.g. the counter each generate call's seed derives from
            "engine_calls": int(engine.state_dict().get("calls", 0)) if engine else self.calls,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (from a checkpoint's state)."""
        # Checkpoints from before the engine interface kept the transformers backend's call counter on its own.
        self.backend.load_state_dict(state.get("engine") or {"calls": state["backend_calls"]})
        self.calls = state.get("engine_calls", 0)
