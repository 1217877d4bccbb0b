"""Training rollouts on Ray actors: the learners stay in the driver, the games of an update play on workers.

Each update::

    driver (trainer, learners' adapters)            RolloutWorker actors (each: base model + adapters)
    sync(): every learner's adapter files    --->   every actor loads them, then hashes what it loaded
    play(): the update's games, split        --->   Runner over its share; each generation stamped with the
    check_versions(): every learner answer   <---   hash of the adapter weights that produced it
    must carry the learner's current hash

The stamp is computed by the worker from the weights it actually holds, after loading, not copied from what the
driver sent: a worker that skipped or botched a refresh stamps the old hash, and :func:`check_versions` refuses
the rollout (:class:`StaleRolloutError`). Loading on one replica only - the common bug - is caught the same way.

The actors are a :class:`~llmmarl.pool.ActorPool`, the pool tournaments use too, with its one failure path: an
actor that dies mid-rollout is replaced (the replacement loads the last synced adapters before it plays) and the
games it had not returned are played again by the others. Every wait is bounded by a
:class:`~llmmarl.cluster.ProgressWatch`: when no alive node can hold an actor (the node is lost, so a replacement
can never be placed) or no game comes back within the stall timeout, the update fails with
:class:`~llmmarl.cluster.ClusterLostError`, one line; ``--resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmmarl.backends.base import Generation, GenerationRequest, special_tokens
from llmmarl.backends.factory import BackendSpec, build_backend
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.cluster import PLACEMENT_TIMEOUT_S, ProgressWatch, connect, require_ray
from llmmarl.pool import ActorPool, stream
from llmmarl.records import EpisodeRecord
from llmmarl.runner import Match, Runner
from llmmarl.train.checkpoint import save_adapter


class StaleRolloutError(RuntimeError):
    """A rollout carries generations from adapter weights other than the learners' current ones."""


def adapter_version(model: Any, name: str) -> str:
    """Hash of adapter ``name``'s LoRA weights (fp32 values, names without the adapter name): its version stamp."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=name)
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def folder_version(folder: Path) -> str:
    """:func:`adapter_version` of a saved PEFT folder, read back from its safetensors: what a replica that serves
    the folder (a vLLM engine) loaded. The same hash as the driver's for the same weights (saved in fp32)."""
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / "adapter_model.safetensors"))
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def adapter_files(model: Any, name: str) -> dict[str, bytes]:
    """Adapter ``name`` as the files of a PEFT folder (config + safetensors), to ship to workers on other nodes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / name
        save_adapter(model, name, folder)
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


class _StampingBackend:
    """Forwards to the worker's backend and stamps each generation with its adapter's version (None: base model)."""

    def __init__(self, backend: Any, versions: Mapping[str, str]) -> None:
        self.backend, self.versions = backend, versions

    @property
    def adapters(self) -> list[str]:
        return self.backend.adapters

    @property
    def special_tokens(self) -> list[str]:
        return special_tokens(self.backend)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self.backend.truncate(text, max_tokens)

    def load_adapter(self, name: str, path: str | Path) -> None:
        self.backend.load_adapter(name, path)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        gens = self.backend.generate(requests)
        return [
            g.model_copy(update={"adapter_version": self.versions.get(r.adapter)}) if r.adapter else g
            for r, g in zip(requests, gens, strict=True)
        ]


class RolloutWorker:
    """A Ray actor: the base model, the learners' adapters as last synced, and a runner for its share of games."""

    def __init__(self, model: str, max_batch_size: int, device: str | None, seed: int, concurrency: int) -> None:
        self.backend = TransformersBackend(model, max_batch_size=max_batch_size, device=device, seed=seed)
        self.concurrency = concurrency
        self.dir = Path(tempfile.mkdtemp(prefix="llmmarl-rollout-"))
        self.versions: dict[str, str] = {}
        self.loads = 0

    def sync(self, adapters: Mapping[str, Mapping[str, bytes]]) -> dict[str, str]:
        """Load each adapter's files (a new folder per version) and stamp it with the hash of what was loaded."""
        for name, files in adapters.items():
            self.loads += 1
            folder = self.dir / f"{name}-{self.loads}"
            folder.mkdir(parents=True)
            for file, data in files.items():
                (folder / file).write_bytes(data)
            self.backend.load_adapter(name, folder)
            self.versions[name] = adapter_version(self.backend.model, name)
        return dict(self.versions)

    def play(self, matches: Sequence[Match]) -> Iterator[EpisodeRecord]:
        """Play ``matches``, yielding each game the moment it ends (a streaming Ray call)."""
        runner = Runner(_StampingBackend(self.backend, self.versions), concurrency=self.concurrency, progress=False)

        def play(put: Callable[[EpisodeRecord], None]) -> None:
            runner.play(matches, on_episode=put, keep=False)

        yield from stream(play)


class VLLMRolloutWorker:
    """A Ray actor holding one vLLM engine replica (its own server, on the actor's GPU when it has one).

    Each sync writes every adapter to a new folder and publishes it as a new version on this replica's server; the
    stamp is the hash of the weights in that folder. The server's watchdog ends it when the actor's process dies.
    """

    def __init__(self, config: Mapping[str, Any], concurrency: int) -> None:
        from llmmarl.backends.vllm_engine import VLLMEngine
        from llmmarl.train.config import TrainConfig
        from llmmarl.train.engine import rollout_spec

        self.dir = Path(tempfile.mkdtemp(prefix="llmmarl-replica-"))
        cfg = TrainConfig.model_validate({**config, "output_dir": str(self.dir)})
        engine = build_backend(rollout_spec(cfg))
        assert isinstance(engine, VLLMEngine)
        self.engine = engine.start()
        self.concurrency = concurrency
        self.versions: dict[str, str] = {}
        self.loads = 0

    def sync(self, adapters: Mapping[str, Mapping[str, bytes]]) -> dict[str, str]:
        for name, files in adapters.items():
            self.loads += 1
            folder = self.dir / "incoming" / f"{name}-{self.loads}"
            folder.mkdir(parents=True)
            for file, data in files.items():
                (folder / file).write_bytes(data)
            self.engine.publish(name, folder, self.loads)
            self.versions[name] = folder_version(folder)
        return dict(self.versions)

    def play(self, matches: Sequence[Match]) -> Iterator[EpisodeRecord]:
        runner = Runner(_StampingBackend(self.engine, self.versions), concurrency=self.concurrency, progress=False)

        def play(put: Callable[[EpisodeRecord], None]) -> None:
            runner.play(matches, on_episode=put, keep=False)

        yield from stream(play)


class RolloutPool:
    """``workers`` rollout actors; :meth:`sync` before every :meth:`play`. Call :meth:`close` when done.

    Each :class:`RolloutWorker` runs the transformers engine ``engine`` describes (a model name: its defaults);
    ``worker_cls`` and ``worker_args`` put other actors in the pool (:class:`VLLMRolloutWorker`).

    An actor that dies is replaced and synced with the same adapters; the games it had not returned are played
    again (counted in :attr:`retried`). More than ``max_failures`` deaths in one sync or rollout end it with one
    error.
    """

    def __init__(
        self,
        workers: int,
        engine: BackendSpec | str,
        *,
        address: str = "local",
        concurrency: int = 64,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        worker_cls: type = RolloutWorker,
        worker_args: tuple[Any, ...] | None = None,
        max_failures: int = 3,
        placement_timeout: float = PLACEMENT_TIMEOUT_S,
        stall_timeout: float | None = None,
    ) -> None:
        ray = require_ray()
        resume = "the update was not applied: continue from the last checkpoint with --resume"
        self._ray_conn = connect(address, resume)
        watch = ProgressWatch(
            ray,
            {"CPU": num_cpus, "GPU": num_gpus},
            unit="rollout game",
            resume=resume,
            stall_timeout=stall_timeout,
            placement_timeout=placement_timeout,
        )
        cls = ray.remote(worker_cls).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)
        spec = engine if isinstance(engine, BackendSpec) else BackendSpec(model=engine)
        args = (
            worker_args
            if worker_args is not None
            else (spec.model, spec.max_batch_size, spec.device, spec.seed, concurrency)
        )
        self._ray = ray
        self._files: Any = {}  # the adapters of the last sync (an object ref once synced): what a new actor loads
        self.pool: ActorPool[Match, EpisodeRecord] = ActorPool(
            ray,
            lambda: cls.remote(*args),
            workers,
            watch,
            ready=lambda actor: actor.sync.remote(self._files),
            play=lambda actor, games: actor.play.options(num_returns="streaming").remote(games),
            max_failures=max_failures,
            queued=1,  # one share per actor, as the rollout is split
            get_timeout=max(5.0, placement_timeout),
        )

    @property
    def actors(self) -> list[Any]:
        """Every actor, placed or still starting (all of them synced after :meth:`sync`)."""
        return self.pool.every_actor

    @property
    def retried(self) -> int:
        """Games played again because their actor died."""
        return self.pool.retried

    def sync(self, model: Any, names: Iterable[str]) -> dict[str, str]:
        """Ship every named adapter to every actor; returns the driver's version of each (what stamps must match)."""
        names = list(names)
        self._files = self._ray.put({n: adapter_files(model, n) for n in names})
        self.pool.broadcast(lambda actor: actor.sync.remote(self._files))
        return {n: adapter_version(model, n) for n in names}

    def play(self, matches: Sequence[Match]) -> list[EpisodeRecord]:
        """Every match once, split over the actors (game ids kept); episodes in the matches' order."""
        n = max(1, len(self.pool.actors))
        episodes: list[EpisodeRecord] = []
        self.pool.run([list(matches[i::n]) for i in range(n)], episodes.append)
        order = {m.game_id: i for i, m in enumerate(matches)}
        return sorted(episodes, key=lambda ep: order[ep.game_id])

    def close(self) -> None:
        self.pool.close()
        self._ray_conn.close()


def check_versions(episodes: Iterable[EpisodeRecord], versions: Mapping[str, str]) -> int:
    """Refuse a rollout with a learner answer not stamped with that learner's current version; returns the number
    of stamped answers checked."""
    checked, stale = 0, []
    for ep in episodes:
        for turn in ep.turns:
            want = versions.get(turn.player)
            if want is None:
                continue
            for a in turn.attempts:
                checked += 1
                if a.adapter_version != want:
                    stale.append(f"game {ep.game_id} step {turn.step} {turn.player}: {a.adapter_version} != {want}")
    if stale:
        raise StaleRolloutError(
            f"{len(stale)} of {checked} learner answers came from other adapter weights than the learners' current "
            f"ones (a worker missed the refresh?): {stale[:3]}"
        )
    return checked
