"""One pool of Ray actors that play games for the driver, with one failure path; tournaments and training rollouts
both play on it (:mod:`llmmarl.tournament.distributed`, :mod:`llmmarl.train.distributed`).

What runs where::

    driver                                            Ray actors (one per GPU / model replica / CPU slot)
    ------                                            --------------------------------------------------
    chunks of games            --- play(chunk) --->   the actor's runner, yielding each game as it ends
    on_result(episode)         <-- one by one ----    (a streaming call: :func:`stream`)

An actor joins the pool once Ray has placed it and its ``ready`` call returned (for training: the adapters of the
last sync loaded, so a replacement never plays with stale weights). Each placed actor has ``queued`` chunks at most,
so its runner never waits for the driver.

The failure path: the driver knows which games of each chunk have come back. When an actor dies (process killed,
node gone, out of memory), the games it had not returned are queued again for the other actors and counted in
:attr:`ActorPool.retried`; a game that came back is never played again. A replacement is started and joins once
placed. More than ``max_failures`` deaths in one call end it with :class:`~llmmarl.cluster.ClusterLostError`, one
line saying why and how to resume. Ray's own actor restarts and task retries do not fit here (a retried streaming
call would play its whole chunk again, games already returned included), so the actors have none. Errors raised by
the games' own code (a bad adapter, a server down) are not the actor's fault: they stop the call with their own
message. Every wait is bounded by a :class:`~llmmarl.cluster.ProgressWatch`.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from llmmarl.cluster import ClusterLostError, ProgressWatch, actor_lost

T = TypeVar("T")


class Game(Protocol):
    """A game to play or its record: anything with the game's id."""

    @property
    def game_id(self) -> Hashable: ...


G = TypeVar("G", bound=Game)
R = TypeVar("R", bound=Game)


def stream(play: Callable[[Callable[[T], None]], object]) -> Iterator[T]:
    """Run ``play(put)`` in a thread and yield each item it puts, as it puts it: what an actor's streaming method
    returns, so that each game leaves the moment it ends. An error in ``play`` is raised here, with its message."""
    done: queue.Queue[tuple[T] | BaseException | None] = queue.Queue()

    def run() -> None:
        try:
            play(lambda item: done.put((item,)))
            done.put(None)
        except BaseException as e:  # handed to the caller below
            done.put(e)

    threading.Thread(target=run, daemon=True).start()
    while (item := done.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item[0]


@dataclass
class _Chunk(Generic[G]):
    actor: Any
    left: dict[Hashable, G]  # game id -> game, for the games not yet returned


class ActorPool(Generic[G, R]):
    """``workers`` actors made by ``new_actor()``; see the module docs. Call :meth:`close` when done.

    ``ready(actor)`` is the actor's first call (its ref returns once it is placed and prepared); ``play(actor,
    games)`` starts a streaming call that yields one record per game; ``get_timeout`` bounds the fetch of a record
    that is ready (it may live on a node that just died).
    """

    def __init__(
        self,
        ray: Any,
        new_actor: Callable[[], Any],
        workers: int,
        watch: ProgressWatch,
        *,
        ready: Callable[[Any], Any],
        play: Callable[[Any, list[G]], Any],
        max_failures: int = 3,
        queued: int = 2,
        get_timeout: float = 120.0,
    ) -> None:
        self._ray, self._new_actor, self._watch = ray, new_actor, watch
        self._ready, self._play = ready, play
        self.max_failures, self.queued, self.get_timeout = max_failures, queued, get_timeout
        self.retried = 0  # games played again after their actor died
        self.failures = 0  # actors lost, over the pool's life
        self._deaths = 0  # actors lost in the current call (what max_failures bounds)
        self.actors: list[Any] = []  # placed and ready
        self._starting: dict[Any, Any] = {}  # ready() ref -> actor not yet placed
        self._fresh: set[int] = set()  # actors started during the current broadcast: their ready call stands for it
        for _ in range(workers):
            self._start_actor()

    @property
    def every_actor(self) -> list[Any]:
        """Every actor of the pool: placed, or still starting."""
        return [*self.actors, *self._starting.values()]

    @property
    def resume(self) -> str:
        return self._watch.resume

    def _start_actor(self) -> None:
        actor = self._new_actor()
        self._fresh.add(id(actor))
        self._starting[self._ready(actor)] = actor

    # ---- every actor -------------------------------------------------------------------------------------------
    def broadcast(self, call: Callable[[Any], Any]) -> None:
        """``call(actor)`` on every actor, the starting ones once placed; a lost actor is replaced, and the
        replacement's ``ready`` call stands for ``call`` (so ``ready`` must do what ``call`` did: the caller updates
        what ``ready`` sends before broadcasting)."""
        self._deaths = 0
        self._fresh = set()
        self._watch.start()
        pending = {call(actor): actor for actor in self.actors}
        while pending or self._starting:
            ref = self._watch.wait([*pending, *self._starting])
            if ref in self._starting:
                actor = self._starting[ref]
                if self._placed(ref) and id(actor) not in self._fresh:  # started before this broadcast
                    pending[call(actor)] = actor
                continue
            actor = pending.pop(ref)
            try:
                self._watch.get([ref])
            except actor_lost(self._ray):
                self.actors.remove(actor)
                self._lost()

    # ---- playing -----------------------------------------------------------------------------------------------
    def run(self, chunks: Sequence[list[G]], on_result: Callable[[R], None]) -> None:
        """Play every game of ``chunks`` once on the actors; ``on_result`` runs in this process as each game's record
        comes back (a replayed game's first record only)."""
        self._deaths = 0
        todo = deque(list(c) for c in chunks if c)
        running: dict[Any, _Chunk[G]] = {}  # stream -> chunk
        seen: set[Hashable] = set()
        self._watch.start()
        while todo or running:
            self._dispatch(todo, running)
            waiting = [*running, *self._starting]
            if not waiting:
                raise ClusterLostError(f"no Ray actor is alive or starting; {self.resume}")
            ready = self._watch.wait(waiting)  # bounded: ends the run if the cluster cannot make progress
            if ready in self._starting:
                self._placed(ready)
                continue
            chunk = running[ready]
            try:
                record: R = self._next(ready)
            except StopIteration:
                del running[ready]
                self._requeue(chunk, todo)  # the call ended without every game: play the rest again
                continue
            except actor_lost(self._ray):
                self._drop(chunk.actor, running, todo)
                continue
            chunk.left.pop(record.game_id, None)
            if record.game_id not in seen:
                seen.add(record.game_id)
                on_result(record)

    def _next(self, stream: Any) -> Any:
        ray = self._ray
        ref = next(stream)
        try:
            # Ready, but it may live on a node that just died: a bounded fetch, a timeout counts as a lost actor.
            return ray.get(ref, timeout=self.get_timeout)
        except ray.exceptions.RayTaskError as e:
            # The games' own code failed (bad adapter, server down): not the actor's fault, stop with its message.
            cause = e.cause if isinstance(e.cause, Exception) else RuntimeError(str(e))
            raise cause from None

    def _dispatch(self, todo: deque[list[G]], running: dict[Any, _Chunk[G]]) -> None:
        load = {id(a): 0 for a in self.actors}
        for chunk in running.values():
            load[id(chunk.actor)] += 1
        for actor in self.actors:
            while todo and load[id(actor)] < self.queued:
                games = todo.popleft()
                running[self._play(actor, games)] = _Chunk(actor, {g.game_id: g for g in games})
                load[id(actor)] += 1

    # ---- the failure path --------------------------------------------------------------------------------------
    def _placed(self, ref: Any) -> bool:
        """A starting actor's ready call returned: it joins, or, if it died instead, is replaced."""
        actor = self._starting.pop(ref)
        try:
            self._ray.get(ref, timeout=self.get_timeout)
        except actor_lost(self._ray):
            self._lost()
            return False
        self.actors.append(actor)
        return True

    def _drop(self, actor: Any, running: dict[Any, _Chunk[G]], todo: deque[list[G]]) -> None:
        """An actor died: queue again every game it had not returned, and replace it."""
        for stream_ref, chunk in list(running.items()):
            if chunk.actor is actor:
                del running[stream_ref]
                self._requeue(chunk, todo)
        if actor in self.actors:
            self.actors.remove(actor)
            self._lost()

    def _requeue(self, chunk: _Chunk[G], todo: deque[list[G]]) -> None:
        if chunk.left:
            self.retried += len(chunk.left)
            todo.appendleft(list(chunk.left.values()))
            chunk.left = {}

    def _lost(self) -> None:
        """Count a lost actor (one that died, or a replacement that never came up) and start its replacement; too
        many deaths in one call end it with one line."""
        self.failures += 1
        self._deaths += 1
        if self._deaths > self.max_failures:
            why = (
                "out of memory? see the actors' logs"
                if self._watch.placeable()
                else f"the cluster lost its nodes: no alive node can hold an actor ({self._watch.need_text})"
            )
            raise ClusterLostError(
                f"{self._deaths} Ray actors died (max_failures={self.max_failures}; {why}); {self.resume}"
            )
        self._start_actor()

    # ---- teardown ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        for actor in self.every_actor:
            self._ray.kill(actor)
        self.actors, self._starting = [], {}
