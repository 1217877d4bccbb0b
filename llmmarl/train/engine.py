"""The engines of a training run, described by its config as :class:`~llmmarl.backends.factory.BackendSpec`\\ s.

Both are built by :func:`~llmmarl.backends.factory.build_rollout_engine`, from the one backend registry. The
trainer's own engine (:func:`engine_spec`) is in-process: it holds the model the trainer trains in place. The games
are played by ``rollout_backend`` (:func:`rollout_spec`): ``transformers`` is that same engine (nothing to sync:
only cached prefixes are dropped); any other kind is an engine of its own - ``vllm`` a
:class:`~llmmarl.backends.vllm_engine.VLLMEngine`, started at the first rollout (after a resume has loaded the
weights) - to which every learner's adapter is handed after each update (``refresh_adapters``).
"""

from __future__ import annotations

from pathlib import Path

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.factory import BackendSpec
from llmmarl.backends.vllm_engine import adapter_ranks
from llmmarl.train.config import TrainConfig


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
