"""Joining Ray, and the one way a pool of Ray actors decides that its cluster can no longer make progress.

Ray is an optional extra (``pip install 'llmmarl[ray]'``): nothing imports this module unless a config asks for
Ray, so the single-process path never loads it.

Ray waits forever for resources no node has: when the only node dies (its raylet is OOM-killed, a spot instance is
pre-empted), the actors that should replace the lost ones stay pending and every wait on them hangs.
:class:`ProgressWatch` bounds those waits for every actor pool (tournament games, training rollouts): it waits with
``ray.wait(timeout=...)`` and, whenever nothing came back in time, asks the cluster whether any alive node can
still hold one actor (``ray.nodes()``) and how long ago the pool last made progress. Either answer can end the run
with :class:`ClusterLostError`, whose message says what happened and how to resume.
"""

from __future__ import annotations

import atexit
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

STALL_FLOOR_S = 600.0  # automatic stall timeout before the pace is known (covers loading a model on a fresh actor)
STALL_FACTOR = 10.0  # automatic stall timeout: this many times the longest wait for progress seen so far
PLACEMENT_TIMEOUT_S = 120.0  # how long actors may wait for a node that can hold them (one coming back, or added)
POLL_S = 5.0  # longest single ray.wait between two looks at the cluster


class ClusterLostError(RuntimeError):
    """The Ray cluster cannot make progress: no alive node can hold an actor, or nothing finished for too long.
    The message is one line: what happened, and how to resume."""


def require_ray() -> Any:
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "this run asks for Ray (a `ray:` block, --ray, or rollout_workers), which is not installed: "
            "pip install 'llmmarl[ray]'"
        ) from None
    return ray


class Connection:
    """This process's hold on Ray: :func:`connect` opens it, :meth:`close` leaves Ray if :func:`connect` joined it.

    A local instance (``address: local``) is this process's own node: its raylet is a child of this process. When
    that raylet dies (killed, out of memory), Ray declares the node dead and then ends this process itself, without
    a word, at its next use of the node's object store, and a wait on the lost actors would otherwise hang. So a
    guard thread waits on the raylet (a Linux pidfd: woken the moment it exits, no polling) and ends the run first,
    with one line on stderr saying what happened and how to resume, and exit code 1. Whatever was finished before
    is safe: the tournament store commits each game, and checkpoints are written whole or not at all.
    """

    def __init__(self, ray: Any, *, joined: bool, local: bool, resume: str) -> None:
        self.ray, self.joined, self.resume = ray, joined, resume  # joined: this call ran ray.init
        self._disarm: tuple[int, int] | None = None
        raylet = _own_raylet() if local and hasattr(os, "pidfd_open") else None
        try:
            pidfd = os.pidfd_open(raylet) if raylet is not None else None
        except OSError:  # already gone: the first wait on the cluster will say so
            pidfd = None
        if raylet is not None and pidfd is not None:
            self._disarm = os.pipe()
            threading.Thread(target=self._guard, args=(raylet, pidfd), daemon=True).start()
            atexit.register(self._stop_guard)  # runs before Ray's own exit-time shutdown (registered earlier)

    def _guard(self, raylet: int, pidfd: int) -> None:
        assert self._disarm is not None
        stop = self._disarm[0]
        ready, _, _ = select.select([pidfd, stop], [], [])
        if pidfd in ready and self._disarm is not None:
            sys.stderr.write(  # on a line of its own, even after a progress bar
                f"\nerror: the Ray node this run started died (its raylet, pid {raylet}, exited; killed or out of "
                f"memory?); {self.resume}\n"
            )
            sys.stderr.flush()
            os._exit(1)
        for fd in (pidfd, stop):
            os.close(fd)

    def _stop_guard(self) -> None:
        if self._disarm is not None:
            w = self._disarm[1]
            self._disarm = None
            os.write(w, b"x")
            os.close(w)

    def close(self) -> None:
        """Stop guarding (shutting Ray down stops a local raylet), then leave Ray if :func:`connect` joined it: a
        local instance stops, a cluster keeps running."""
        self._stop_guard()
        if self.joined:
            self.ray.shutdown()


def connect(address: str, resume: str = "run the same command again") -> Connection:
    """Join (or start) Ray unless this process already has. ``resume``: how to resume, for the line that ends the
    run if a local instance's node dies (see :class:`Connection`).

    ``address``: ``local`` starts a Ray instance on this machine; ``auto`` joins the cluster this machine belongs
    to (``ray start`` ran here); anything else is a cluster address (``host:port`` or ``ray://host:10001``).
    """
    ray = require_ray()
    if ray.is_initialized():
        return Connection(ray, joined=False, local=False, resume=resume)
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return Connection(ray, joined=True, local=address == "local", resume=resume)


def _own_raylet() -> int | None:
    """The pid of the raylet this process started (a direct child named ``raylet``), read from /proc (Linux)."""
    me = os.getpid()
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "raylet" and ppid == me:
            return pid
    return None


def actor_lost(ray: Any) -> tuple[type[BaseException], ...]:
    """The errors that mean an actor is gone (its process or node died, Ray's memory monitor killed it, a result
    lost with its node), as opposed to an error raised by the code it ran: each pool replaces the actor."""
    ex = ray.exceptions
    return (ex.RayActorError, ex.OutOfMemoryError, ex.WorkerCrashedError, ex.ObjectLostError, ex.GetTimeoutError)


def fits(nodes: Sequence[Mapping[str, Any]], need: Mapping[str, float]) -> bool:
    """Whether any alive node of ``ray.nodes()`` has, in total, the resources one actor asks for."""
    return any(
        node.get("Alive") and all(node.get("Resources", {}).get(k, 0.0) >= v for k, v in need.items() if v > 0)
        for node in nodes
    )


class ProgressWatch:
    """Bounded waits for one actor pool, and the decision that its cluster is lost.

    ``need``: one actor's resources (``{"CPU": 1, "GPU": 0}``); ``unit``: what counts as progress, for the message
    ("game", "rollout game"); ``resume``: how to resume, for the message. The pool calls :meth:`wait` instead of
    ``ray.wait`` and :meth:`get` instead of ``ray.get``; every ref that comes back counts as progress.

    The run ends (:class:`ClusterLostError`) when

    * no alive node can hold one actor for ``placement_timeout`` seconds (Ray would wait for one forever; this is
      the bounded time a lost node gets to come back, or an autoscaler to add one), or
    * nothing came back for ``stall_timeout`` seconds; ``None`` scales it with the work: ``STALL_FACTOR`` times the
      longest wait for progress seen so far in this run, and at least ``STALL_FLOOR_S``.
    """

    def __init__(
        self,
        ray: Any,
        need: Mapping[str, float],
        *,
        unit: str,
        resume: str,
        stall_timeout: float | None = None,
        placement_timeout: float = PLACEMENT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ray, self.need, self.unit, self.resume = ray, dict(need), unit, resume
        self.stall_timeout, self.placement_timeout, self.clock = stall_timeout, placement_timeout, clock
        self.last = clock()  # when the pool last made progress
        self.longest = 0.0  # the longest wait for progress so far
        self.unplaceable_since: float | None = None  # since when no alive node can hold an actor
        # Look at the cluster several times per timeout, and at most every POLL_S (ray.nodes() asks the GCS).
        self.poll = max(0.2, min(POLL_S, placement_timeout / 4, (stall_timeout or float("inf")) / 4))

    @property
    def stall_limit(self) -> float:
        if self.stall_timeout is not None:
            return self.stall_timeout
        return max(STALL_FLOOR_S, STALL_FACTOR * self.longest)

    def start(self) -> None:
        """The pool starts waiting for work it just sent: time spent before (the driver's own work) is no stall."""
        self.last = self.clock()

    def progressed(self) -> None:
        now = self.clock()
        self.longest = max(self.longest, now - self.last)
        self.last = now

    def wait(self, refs: Sequence[Any]) -> Any:
        """The first of ``refs`` (object refs, streams) that is ready; checks the cluster while none is."""
        while True:
            ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=self.poll)
            if ready:
                self.progressed()
                return ready[0]
            self.check()

    def get(self, refs: Sequence[Any]) -> list[Any]:
        """``ray.get`` of every ref, waiting as :meth:`wait` does (each ref that comes back is progress)."""
        left = list(refs)
        while left:
            done = self.wait(left)
            left = [r for r in left if r != done]
        try:  # every ref is ready; fetching one from a node that just died must not hang either
            return list(self.ray.get(list(refs), timeout=max(POLL_S, self.placement_timeout)))
        except self.ray.exceptions.GetTimeoutError:
            raise ClusterLostError(
                f"the Ray cluster lost results: finished {self.unit}s could not be fetched from their node; "
                f"{self.resume}"
            ) from None

    @property
    def need_text(self) -> str:
        return ", ".join(f"{v:g} {k}" for k, v in self.need.items() if v > 0) or "no resources"

    def placeable(self) -> bool:
        """Whether an alive node can hold one actor now."""
        try:
            return fits(self.ray.nodes(), self.need)
        except Exception:  # the cluster's control store is unreachable: nothing can be placed either
            return False

    def check(self) -> None:
        """Raise :class:`ClusterLostError` if no node can hold an actor for too long, or progress stalled."""
        now = self.clock()
        if self.placeable():
            self.unplaceable_since = None
        else:
            self.unplaceable_since = self.unplaceable_since if self.unplaceable_since is not None else now
            if now - self.unplaceable_since >= self.placement_timeout:
                raise ClusterLostError(
                    f"the Ray cluster lost its nodes: no alive node can hold an actor ({self.need_text}) after "
                    f"waiting {self.placement_timeout:.0f}s (placement_timeout); {self.resume}"
                )
        if now - self.last >= self.stall_limit:
            raise ClusterLostError(
                f"the Ray cluster made no progress: no {self.unit} came back for {now - self.last:.0f}s "
                f"(stall_timeout {self.stall_limit:.0f}s); {self.resume}"
            )
