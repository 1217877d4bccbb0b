"""What the benchmark scripts share: the timed workload and the machine the figures came from.

:func:`timed_games` is the one rollout workload every throughput figure is measured on, whatever the backend,
so ratios between scripts compare like with like. Figures without their machine mean little (a 2-core CPU and an
H100 differ by orders of magnitude), so every ``scripts/bench_*.py`` writes :func:`machine_info` into its JSON.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Literal

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import Backend
from llmmarl.envs import make
from llmmarl.runner import Match, Runner, seatings


def timed_games(
    backend: Backend,
    env: str,
    llm: LLMAgentSpec,
    games: int,
    concurrency: int,
    mode: Literal["auto", "rounds", "stream"] = "auto",
) -> dict[str, Any]:
    """``games`` games of ``llm`` against a random player, ``concurrency`` at a time, seats alternating, seeds 0..N-1.

    Returns wall seconds, LLM decisions, generated tokens and backend batches (each per second too), the number of
    games that broke, and the episodes under ``"episodes"``. Token and batch counts are differences of the
    backend's ``stats`` counters, which both backends keep, so earlier calls do not count. ``mode`` is the runner's
    schedule (lockstep rounds, or streamed games).
    """
    rnd = ScriptedAgentSpec(name="random", policy="random")
    matches = [Match(game_id=i, env=env, seats=s, seed=i) for i, s in enumerate(seatings(make(env), [llm, rnd], games))]
    stats: dict[str, int] = backend.stats  # type: ignore[attr-defined]
    tokens, batches = stats["generated_tokens"], stats["batches"]
    runner = Runner(backend, concurrency=concurrency, progress=False, mode=mode)
    start = time.perf_counter()
    episodes = runner.play(matches)
    seconds = time.perf_counter() - start
    decisions = sum(1 for e in episodes for t in e.turns if t.attempts)
    tokens = stats["generated_tokens"] - tokens
    return {
        "games": games,
        "seconds": seconds,
        "llm_decisions": decisions,
        "decisions_per_s": decisions / seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "batches": stats["batches"] - batches,
        "errors": sum(1 for e in episodes if e.error),
        "episodes": episodes,
    }


def machine_info(device: str | None = None) -> dict[str, Any]:
    """Platform, CPU, Python and torch versions, torch's thread count and, on CUDA, the GPU's name and memory."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info
