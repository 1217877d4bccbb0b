"""Play a tournament's games on Ray actors; the driver stays the only writer of the store.

What runs where::

    driver (llmmarl tournament)                       Ray actors (one per GPU / model replica / CPU slot)
    ---------------------------                       --------------------------------------------------
    schedule -> store.missing() -> chunks of Match  ->  TournamentWorker: build_routing_backend(config) once
    ray.wait(streams) <- one EpisodeRecord per game  <-   Runner(backend).play(chunk), yielding each game as it ends
    store.record(episode)  (single SQLite writer)

A chunk is a few games one runner plays together, so their LLM turns still share batched backend calls. Each
chunk is a streaming actor call: episodes come back one by one while the rest of the chunk plays, and each actor
has two chunks queued so it never waits for the driver. Sampling is seeded per request (see
:func:`llmmarl.runner.request_seed`), so which actor plays a game, and alongside which others, does not change
its moves.

Faults: the driver knows which games of each chunk have come back. When an actor dies (process killed, node
gone), the games it had not returned are queued again for the other actors, and counted in :attr:`RayPool.retried`;
a game that did come back is never played again (and the store refuses a second result anyway). A replacement
actor is started and joins once Ray has placed it. Ray's own actor restarts and task retries do not fit here: a
retried streaming call would play its whole chunk again, games already stored included, so the driver requeues
exactly the missing games itself. Errors raised by the games' code (a bad adapter, a server down) are not faults
of the actor: they stop the run with their own message.

Every wait is bounded by a :class:`~llmmarl.cluster.ProgressWatch`: when no alive node can hold an actor for
``placement_timeout`` (the only node died, so replacements can never be placed) or no game came back within the
stall timeout, the run ends with :class:`~llmmarl.cluster.ClusterLostError`, one line saying how to resume.

Ray is optional (``pip install llmmarl[ray]``): this module is imported only when a tournament asks for Ray.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.cluster import ClusterLostError, ProgressWatch, actor_lost, connect, require_ray
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
        done: queue.Queue[EpisodeRecord | BaseException | None] = queue.Queue()

        def play() -> None:
            try:
                runner.play(matches, on_episode=done.put, keep=False)  # each record leaves through the queue
                done.put(None)
            except BaseException as e:  # handed to the caller below, with its own message
                done.put(e)

        threading.Thread(target=play, daemon=True).start()
        while (item := done.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _runner(self, matches: Sequence[Match]) -> Runner:
        has_llm = any(isinstance(spec, LLMAgentSpec) for m in matches for spec in m.seats.values())
        if self.runner is None or (has_llm and self.runner.backend is None):
            # Every LLM participant at once, as in one process: later chunks never reload.
            backend = build_routing_backend(self.config, set(self.specs)) if has_llm else None
            self.runner = Runner(
                backend, concurrency=self.config.concurrency, max_steps=self.config.max_steps, progress=False
            )
        return self.runner


@dataclass
class _Chunk:
    actor: Any
    left: dict[int | str, Match]  # game id -> match, for the games not yet returned
    stream: Any = None


@dataclass
class RayPool:
    """Actors that play games for the driver; see the module docs. Call :meth:`close` when done."""

    config: TournamentConfig
    settings: RayConfig
    retried: int = 0  # games played again after their actor died
    failures: int = 0  # actors lost
    _actors: list[Any] = field(default_factory=list)
    _starting: dict[Any, Any] = field(default_factory=dict)  # ready() ref -> actor not yet placed

    def __post_init__(self) -> None:
        self._ray = require_ray()
        self._cls = self._ray.remote(TournamentWorker).options(
            num_cpus=self.settings.num_cpus, num_gpus=self.settings.num_gpus, max_restarts=0
        )
        resume = (
            f"the games finished so far are stored in {self.config.db}: run the same command again to play the rest"
        )
        self._ray_conn = connect(self.settings.address, resume)
        self._watch = ProgressWatch(
            self._ray,
            {"CPU": self.settings.num_cpus, "GPU": self.settings.num_gpus},
            unit="game",
            resume=resume,
            stall_timeout=self.settings.stall_timeout,
            placement_timeout=self.settings.placement_timeout,
        )
        payload = self.config.model_dump(mode="json")
        self._new_actor = lambda: self._cls.remote(payload)
        for _ in range(self.settings.num_workers):
            self._start_actor()

    def _start_actor(self) -> None:
        actor = self._new_actor()
        self._starting[actor.ready.remote()] = actor

    # ---- playing ----------------------------------------------------------------------------------------------
    def play(self, matches: Sequence[Match], on_episode: Callable[[EpisodeRecord], None]) -> None:
        """Play every match once on the actors; ``on_episode`` runs in this process as each game comes back."""
        size = self.settings.chunk_size or max(
            1, min(self.config.concurrency, math.ceil(len(matches) / self.settings.num_workers))
        )
        todo = deque(list(matches[i : i + size]) for i in range(0, len(matches), size))
        running: dict[Any, _Chunk] = {}  # stream -> chunk
        seen: set[int | str] = set()
        self._watch.start()
        while todo or running:
            self._dispatch(todo, running)
            waiting = [*running, *self._starting]
            if not waiting:
                raise ClusterLostError(f"no Ray actor is alive or starting; {self._watch.resume}")
            ready = self._watch.wait(waiting)  # bounded: ends the run if the cluster cannot make progress
            if ready in self._starting:
                self._placed(ready)
                continue
            chunk = running[ready]
            try:
                episode = self._next(ready)
            except StopIteration:
                del running[ready]
                if chunk.left:  # the call ended without every game: play the rest again
                    self._requeue(chunk, todo)
                continue
            except actor_lost(self._ray):
                self._lost(chunk.actor, running, todo)
                continue
            chunk.left.pop(episode.game_id, None)
            if episode.game_id not in seen:
                seen.add(episode.game_id)
                on_episode(episode)

    def _next(self, stream: Any) -> EpisodeRecord:
        ray = self._ray
        ref = next(stream)
        try:
            # Ready, but it may live on a node that just died: a bounded fetch, a timeout counts as a lost actor.
            return ray.get(ref, timeout=self.settings.placement_timeout)  # type: ignore[no-any-return]
        except ray.exceptions.RayTaskError as e:
            # The games' own code failed (bad adapter, server down): not the actor's fault, stop with its message.
            cause = e.cause if isinstance(e.cause, Exception) else RuntimeError(str(e))
            raise cause from None

    def _dispatch(self, todo: deque[list[Match]], running: dict[Any, _Chunk]) -> None:
        load = {id(a): 0 for a in self._actors}
        for chunk in running.values():
            load[id(chunk.actor)] += 1
        for actor in self._actors:
            while todo and load[id(actor)] < QUEUED_CHUNKS:
                games = todo.popleft()
                stream = actor.play.options(num_returns="streaming").remote(games)
                running[stream] = _Chunk(actor, {m.game_id: m for m in games}, stream)
                load[id(actor)] += 1

    def _placed(self, ref: Any) -> None:
        actor = self._starting.pop(ref)
        try:
            self._ray.get(ref)
        except actor_lost(self._ray):
            self._failed()
            self._start_actor()
            return
        self._actors.append(actor)

    def _lost(self, actor: Any, running: dict[Any, _Chunk], todo: deque[list[Match]]) -> None:
        """An actor died: queue again every game it had not returned, and start a replacement."""
        for stream, chunk in list(running.items()):
            if chunk.actor is actor:
                del running[stream]
                self._requeue(chunk, todo)
        if actor in self._actors:
            self._actors.remove(actor)
            self._failed()
            self._start_actor()

    def _requeue(self, chunk: _Chunk, todo: deque[list[Match]]) -> None:
        if chunk.left:
            self.retried += len(chunk.left)
            todo.appendleft(list(chunk.left.values()))
            chunk.left = {}

    def _failed(self) -> None:
        self.failures += 1
        if self.failures > self.settings.max_failures:
            why = (
                "out of memory? see the actors' logs"
                if self._watch.placeable()
                else f"the cluster lost its nodes: no alive node can hold an actor ({self._watch.need_text})"
            )
            raise ClusterLostError(
                f"{self.failures} Ray actors died (max_failures={self.settings.max_failures}; {why}); "
                f"{self._watch.resume}"
            )

    # ---- teardown ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        for actor in [*self._actors, *self._starting.values()]:
            self._ray.kill(actor)
        self._actors, self._starting = [], {}
        self._ray_conn.close()
