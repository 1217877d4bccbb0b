"""Play a tournament's games on Ray actors; the driver stays the only writer of the store.

What runs where::

    driver (llmmarl tournament)                       Ray actors (one per GPU / model replica / CPU slot)
    ---------------------------                       --------------------------------------------------
    schedule -> store.missing() -> chunks of Match  ->  TournamentWorker: build_routing_backend(config) once
    ray.wait(streams) <- one EpisodeRecord per game  <-   Runner(backend).play(chunk), yielding each game as it ends
    store.record(episode)  (single SQLite writer)

A chunk is a few games one runner plays together, so their LLM turns still share batched backend calls; each actor
has two chunks queued so it never waits for the driver. Sampling is seeded per request (see
:func:`llmmarl.runner.request_seed`), so which actor plays a game, and alongside which others, does not change
its moves.

The actors are a :class:`~llmmarl.pool.ActorPool`, the pool training rollouts use too, with its one failure path:
the games a dead actor had not returned are played again by the others (counted in :attr:`RayPool.retried`), a game
that did come back is never played again (and the store refuses a second result anyway), and a lost cluster ends
the run with :class:`~llmmarl.cluster.ClusterLostError`, one line saying how to resume.

Ray is optional (``pip install llmmarl[ray]``): this module is imported only when a tournament asks for Ray.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.cluster import ProgressWatch, connect, require_ray
from llmmarl.pool import ActorPool, stream
from llmmarl.records import EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.tournament.config import RayConfig, TournamentConfig
from llmmarl.tournament.routing import build_routing_backend, runner_specs

QUEUED_CHUNKS = 2  # chunks queued per actor: one playing, one ready to start at once


class TournamentWorker:
    """A Ray actor: one backend (built on first need, as in one process) and one runner playing chunks of games."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = TournamentConfig.model_validate(config)
        self.specs = runner_specs(self.config)
        self.runner: Runner | None = None

    def ready(self) -> int:
        """The actor's process id, once it is placed and constructed."""
        return os.getpid()

    def play(self, matches: Sequence[Match]) -> Iterator[EpisodeRecord]:
        """Play ``matches`` in one runner, yielding each game the moment it ends (a streaming Ray call)."""
        runner = self._runner(matches)

        def play(put: Callable[[EpisodeRecord], None]) -> None:
            runner.play(matches, on_episode=put, keep=False)

        yield from stream(play)

    def _runner(self, matches: Sequence[Match]) -> Runner:
        has_llm = any(isinstance(spec, LLMAgentSpec) for m in matches for spec in m.seats.values())
        if self.runner is None or (has_llm and self.runner.backend is None):
            # Every LLM participant at once, as in one process: later chunks never reload.
            backend = build_routing_backend(self.config, set(self.specs)) if has_llm else None
            self.runner = Runner(
                backend, concurrency=self.config.concurrency, max_steps=self.config.max_steps, progress=False
            )
        return self.runner


class RayPool:
    """Tournament actors that play games for the driver; see the module docs. Call :meth:`close` when done."""

    def __init__(self, config: TournamentConfig, settings: RayConfig) -> None:
        self.config, self.settings = config, settings
        ray = require_ray()
        cls = ray.remote(TournamentWorker).options(
            num_cpus=settings.num_cpus, num_gpus=settings.num_gpus, max_restarts=0
        )
        resume = f"the games finished so far are stored in {config.db}: run the same command again to play the rest"
        self._ray_conn = connect(settings.address, resume)
        watch = ProgressWatch(
            ray,
            {"CPU": settings.num_cpus, "GPU": settings.num_gpus},
            unit="game",
            resume=resume,
            stall_timeout=settings.stall_timeout,
            placement_timeout=settings.placement_timeout,
        )
        payload = config.model_dump(mode="json")
        self.pool: ActorPool[Match, EpisodeRecord] = ActorPool(
            ray,
            lambda: cls.remote(payload),
            settings.num_workers,
            watch,
            ready=lambda actor: actor.ready.remote(),
            play=lambda actor, games: actor.play.options(num_returns="streaming").remote(games),
            max_failures=settings.max_failures,
            queued=QUEUED_CHUNKS,
            get_timeout=settings.placement_timeout,
        )

    @property
    def retried(self) -> int:
        """Games played again after their actor died."""
        return self.pool.retried

    @property
    def failures(self) -> int:
        """Actors lost."""
        return self.pool.failures

    def play(self, matches: Sequence[Match], on_episode: Callable[[EpisodeRecord], None]) -> None:
        """Play every match once on the actors; ``on_episode`` runs in this process as each game comes back."""
        size = self.settings.chunk_size or max(
            1, min(self.config.concurrency, math.ceil(len(matches) / self.settings.num_workers))
        )
        self.pool.run([list(matches[i : i + size]) for i in range(0, len(matches), size)], on_episode)

    def close(self) -> None:
        self.pool.close()
        self._ray_conn.close()
