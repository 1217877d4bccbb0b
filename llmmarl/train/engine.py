"""The rollout engines of a training run, described by its config, and the adapter sync after each update.

``rollout_backend: transformers`` plays the games with the trainer's own model (nothing to sync: the backend and
the trainers share the weights; only cached prefixes are dropped). ``rollout_backend: vllm`` plays them on a
:class:`~llmmarl.backends.vllm_engine.VLLMEngine`, started at the first rollout (after a resume has loaded the
weights), to which every learner's adapter is published after each update.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.factory import BackendSpec
from llmmarl.backends.vllm_engine import VLLMEngine, adapter_ranks
from llmmarl.train.checkpoint import save_adapter
from llmmarl.train.config import TrainConfig


def engine_spec(cfg: TrainConfig) -> BackendSpec:
    """The in-process engine of a run: the trainer's own, and each rollout actor's (``rollout_workers``)."""
    return BackendSpec(model=cfg.model, max_batch_size=cfg.max_batch_size, device=cfg.device, seed=cfg.seed)


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


def build_engine(cfg: TrainConfig, tokenizer: Any) -> VLLMEngine:
    """The run's vLLM engine (not started): its adapter slots sized by :func:`engine_sizes`, the server settings
    of ``cfg.vllm`` passed as they are (:meth:`~llmmarl.train.settings.VLLMSettings.server_settings`)."""
    loras, cpu_loras, rank = engine_sizes(cfg)
    return VLLMEngine(
        cfg.model,
        Path(cfg.output_dir) / "engine",
        tokenizer,
        max_loras=loras,
        max_cpu_loras=cpu_loras,
        max_lora_rank=rank,
        seed=cfg.seed,
        **cfg.vllm.server_settings(),
    )


def publish_learners(engine: VLLMEngine, model: Any, learners: list[str], version: int) -> float:
    """Write each learner's adapter to a new folder and serve it as ``<name>@v<version>``; returns the seconds."""
    t0 = time.perf_counter()
    for name in learners:
        folder = engine.version_folder(name, version)
        shutil.rmtree(folder, ignore_errors=True)  # left by a killed run: this server has never seen it
        save_adapter(model, name, folder)
        engine.publish(name, folder, version)
    return time.perf_counter() - t0
