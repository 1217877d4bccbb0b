"""Tournaments on a real local Ray cluster: the same games as in one process, and no game lost or doubled when an
actor's process is killed or its node removed mid-run. One cluster for the module: a head without CPUs (so no
actor lands there) and two one-CPU nodes, one actor each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmmarl.records import EpisodeRecord
from llmmarl.tournament import TournamentConfig, run_tournament
from llmmarl.tournament.store import TournamentStore

ROOT = Path(__file__).resolve().parent.parent
STORE_MB = 200 * 1024**2


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    # Ray's socket paths must stay under 107 bytes: a short temp dir, which also keeps this cluster's address file
    # away from any other Ray instance on the machine.
    tmp = tempfile.mkdtemp(dir="/tmp", prefix="r")
    os.makedirs(os.path.join(tmp, "ray"))
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": STORE_MB, "include_dashboard": False},
    )
    for _ in range(2):
        c.add_node(num_cpus=1, object_store_memory=STORE_MB)
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old


def config(tmp_path: Path, name: str, participants: list[Any], per_pairing: int, ray: dict | None) -> TournamentConfig:
    return TournamentConfig.model_validate(
        {
            "name": "t",
            "games": ["tictactoe_v3"],
            "participants": participants,
            "schedule": {"format": "round_robin", "games_per_pairing": per_pairing},
            "db": str(tmp_path / f"{name}.sqlite"),
            "base_model": "tiny",
            "concurrency": 4,
            "seed": 5,
            "bootstrap": 0,
            "ray": ray,
        }
    )


SCRIPTED = ["random", "minimax", {"kind": "scripted", "name": "random2", "policy": "random"}]
# A random-weight model never writes a legal answer: its moves are fallbacks, its texts come from seeded sampling.
TINY = [{"kind": "llm", "name": "tiny", "max_new_tokens": 8, "temperature": 1.0, "reask": False}, "random"]


def games(db: Path) -> dict[str, dict[str, Any]]:
    """Key -> what decides and records a game: seed, seats, every move and every model answer, the returns."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT g.key, g.seed, g.seats, r.episode FROM games g JOIN results r ON r.game_id = g.id"
        ).fetchall()
    out = {}
    for key, seed, seats, episode in rows:
        ep = EpisodeRecord.model_validate_json(episode)
        out[key] = {
            "seed": seed,
            "seats": json.loads(seats),
            "moves": [(t.seat, t.action) for t in ep.turns],
            "answers": [a.response for t in ep.turns for a in t.attempts],
            "returns": ep.returns,
        }
    return out


def stored_once(db: Path) -> tuple[int, int]:
    """(scheduled games, result rows): equal when every game is stored exactly once (results' key is the game)."""
    with sqlite3.connect(db) as conn:
        scheduled = conn.execute("SELECT COUNT(*) FROM games").fetchone()[0]
        results = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    return scheduled, results


def worker_pids() -> list[int]:
    """Our tournament actors' processes: descendants of this test process (the cluster's raylets are its children)."""
    import psutil

    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "TournamentWorker" in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


def on_ray(cluster: Any, **kw: Any) -> dict[str, Any]:
    return {"address": cluster.address, "num_workers": 2, "num_cpus": 1, **kw}


@pytest.mark.ray
def test_scripted_tournament_on_ray_equals_one_process(cluster: Any, tmp_path: Path) -> None:
    local = run_tournament(config(tmp_path, "local", SCRIPTED, 2, None), progress=False)
    remote = run_tournament(config(tmp_path, "ray", SCRIPTED, 2, on_ray(cluster, chunk_size=2)), progress=False)
    assert local.scheduled == remote.scheduled == remote.finished == 12 and remote.retried == 0
    a, b = games(tmp_path / "local.sqlite"), games(tmp_path / "ray.sqlite")
    assert a.keys() == b.keys() and a == b


@pytest.mark.ray
def test_tiny_llm_tournament_on_ray_matches_one_process(cluster: Any, tmp_path: Path) -> None:
    run_tournament(config(tmp_path, "local", TINY, 2, None), progress=False)
    run_tournament(config(tmp_path, "ray", TINY, 2, on_ray(cluster, chunk_size=1)), progress=False)
    a, b = games(tmp_path / "local.sqlite"), games(tmp_path / "ray.sqlite")
    assert a.keys() == b.keys() and len(a) == 4
    same = sum(a[k] == b[k] for k in a)
    print(f"identical LLM games, Ray (batches of 1 game) vs one process (4 games together): {same}/{len(a)}")
    # Seeds and seats come from the schedule; each answer from its own request seed, whatever shares its batch.
    assert all(a[k]["seed"] == b[k]["seed"] and a[k]["seats"] == b[k]["seats"] for k in a)
    assert same >= len(a) - 1


def _interrupt_once(action: Any) -> Any:
    fired: list[bool] = []

    def on_game(_: EpisodeRecord) -> None:
        if not fired:
            fired.append(True)
            action()

    return on_game


@pytest.mark.ray
def test_killed_actor_loses_no_game(cluster: Any, tmp_path: Path) -> None:
    cfg = config(tmp_path, "kill", TINY, 3, on_ray(cluster, chunk_size=1))

    def kill_one() -> None:
        pids = worker_pids()
        assert len(pids) == 2, pids
        os.kill(pids[0], signal.SIGKILL)

    summary = run_tournament(cfg, progress=False, on_game=_interrupt_once(kill_one))
    assert summary.scheduled == summary.finished == 6 and summary.errors == 0
    assert summary.retried >= 1  # the killed actor had at least one queued game it had not returned
    assert stored_once(cfg.db) == (6, 6)


@pytest.mark.ray
def test_removed_node_loses_no_game(cluster: Any, tmp_path: Path) -> None:
    # Enough games that some are still to be dealt when the node goes: the actor on it may already have returned
    # the two games it held (the driver reads results later than actors write them), but the driver then deals it
    # more, and those die with it. With only a few games left, the live actor could take them all and nothing
    # would be replayed, so the fault path would go untested.
    cfg = config(tmp_path, "node", TINY, 8, on_ray(cluster, chunk_size=1))
    workers = [n for n in cluster.list_all_nodes() if n is not cluster.head_node]

    summary = run_tournament(
        cfg, progress=False, on_game=_interrupt_once(lambda: cluster.remove_node(workers[0], allow_graceful=False))
    )
    cluster.add_node(num_cpus=1, object_store_memory=STORE_MB)  # back to two nodes for the other tests
    assert summary.scheduled == summary.finished == 16 and summary.errors == 0
    assert summary.retried >= 1
    assert stored_once(cfg.db) == (16, 16)


@pytest.mark.ray
def test_a_stopped_driver_resumes_from_the_store(cluster: Any, tmp_path: Path) -> None:
    cfg = config(tmp_path, "resume", SCRIPTED, 2, on_ray(cluster, chunk_size=2))

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tournament(cfg, progress=False, on_game=_interrupt_once(stop))
    with TournamentStore(cfg.db) as store:
        assert 1 <= store.counts("t")[1] < 12
    summary = run_tournament(cfg, progress=False)
    assert summary.finished == 12 and stored_once(cfg.db) == (12, 12)
    assert games(cfg.db) == games(run_and_get(tmp_path))


def run_and_get(tmp_path: Path) -> Path:
    cfg = config(tmp_path, "plain", SCRIPTED, 2, None)
    run_tournament(cfg, progress=False)
    return cfg.db


def test_the_single_process_path_never_imports_ray(tmp_path: Path) -> None:
    code = f"""
import sys
import llmmarl.cli, llmmarl.runner, llmmarl.tournament.run
from llmmarl.tournament import TournamentConfig, run_tournament
cfg = TournamentConfig(games=["tictactoe_v3"], participants=["random", "minimax"], db={str(tmp_path / "t.sqlite")!r})
assert run_tournament(cfg, progress=False).finished == 4
assert "ray" not in sys.modules, "ray was imported"
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=300)


# ---- training rollouts on Ray ------------------------------------------------------------------------------------
@pytest.mark.ray
def test_grpo_with_two_rollout_workers_updates_each_learner(cluster: Any, tmp_path: Path, monkeypatch) -> None:
    from test_train import _cfg, _changed, _lora, _nonzero_advantages

    from llmmarl.train.grpo import MultiAgentGRPO

    _nonzero_advantages(monkeypatch)  # a few tiny-model games may all end alike: keep every gradient non-zero
    cfg = _cfg(
        learners=[{"name": "alice", "lora": {"r": 4}}, {"name": "bob", "lora": {"r": 4}}],
        setting="fixed_opponents",
        opponents=["random"],
        games_per_update=4,
        group_size=2,
        steps=2,
        constrained=True,
        max_new_tokens=40,
        learning_rate=1e-2,
        micro_batch_size=2,
        output_dir=str(tmp_path / "run"),
        save_every=10,
        threads=1,
        rollout_workers=2,
        ray_address=cluster.address,
    )
    trainer = MultiAgentGRPO(cfg, progress=False)
    before = {n: _lora(trainer.model, n) for n in ("alice", "bob")}
    seen: list[dict[str, str]] = []
    real_remote = trainer.engine._remote_rollout

    def spy(matches: Any) -> Any:
        episodes = real_remote(matches)
        seen.append({t.player: a.adapter_version for e in episodes for t in e.turns for a in t.attempts})
        return episodes

    monkeypatch.setattr(trainer.engine, "_remote_rollout", spy)
    try:
        trainer.train()
    finally:
        trainer.close()  # stops the actors
    after = {n: _lora(trainer.model, n) for n in ("alice", "bob")}
    assert trainer.state.step == 2 and trainer.engine.pool is None
    assert _changed(before["alice"], after["alice"]) > 0 and _changed(before["bob"], after["bob"]) > 0
    # Both rollouts were played remotely, every learner answer stamped, and the second with the updated weights.
    assert len(seen) == 2 and all(seen[0].get(n) and seen[1].get(n) for n in ("alice", "bob"))
    assert all(seen[0][n] != seen[1][n] for n in ("alice", "bob"))


@pytest.mark.ray
def test_a_replica_that_misses_the_refresh_is_caught_by_its_stamps(cluster: Any) -> None:
    import ray
    import torch
    from peft import LoraConfig, get_peft_model

    from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
    from llmmarl.backends.transformers import TransformersBackend
    from llmmarl.envs import make
    from llmmarl.runner import Match, seatings
    from llmmarl.train.distributed import (
        RolloutPool,
        StaleRolloutError,
        adapter_files,
        adapter_version,
        check_versions,
    )

    backend = TransformersBackend("tiny")
    model = get_peft_model(backend.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), adapter_name="alice")
    alice = LLMAgentSpec(name="alice", adapter="alice", max_new_tokens=8, temperature=1.0, reask=False)
    rnd = ScriptedAgentSpec(name="random", policy="random")
    lineups = seatings(make("tictactoe_v3"), [alice, rnd], 2)  # one game per replica
    matches = [Match(game_id=i, env="tictactoe_v3", seats=seats, seed=i) for i, seats in enumerate(lineups)]
    pool = RolloutPool(2, "tiny", address=cluster.address, concurrency=4)
    try:
        versions = pool.sync(model, ["alice"])
        assert check_versions(pool.play(matches), versions) > 0  # both replicas fresh: accepted
        with torch.no_grad():  # an update
            for name, p in model.named_parameters():
                if "lora_B.alice" in name:
                    p.add_(0.1)
        new = {"alice": adapter_files(model, "alice")}
        ray.get(pool.actors[0].sync.remote(new))  # the bug: the new weights reach one replica only
        current = {"alice": adapter_version(model, "alice")}
        assert current != versions
        with pytest.raises(StaleRolloutError, match="other adapter weights"):
            check_versions(pool.play(matches), current)
        assert pool.sync(model, ["alice"]) == current  # every replica: accepted again
        assert check_versions(pool.play(matches), current) > 0
    finally:
        pool.close()


@pytest.mark.ray
def test_a_rollout_actor_that_dies_loses_no_game(cluster: Any, tmp_path: Path) -> None:
    """The first actor to play exits (a real process death): its share is replayed by a fresh, synced actor."""
    from peft import LoraConfig, get_peft_model

    from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
    from llmmarl.backends.transformers import TransformersBackend
    from llmmarl.envs import make
    from llmmarl.runner import Match, seatings
    from llmmarl.train.distributed import RolloutPool, RolloutWorker, check_versions

    marker = str(tmp_path / "died")

    class DyingWorker(RolloutWorker):  # pickled by value: defined here, it reaches the actors with `marker`
        def play(self, matches: Any) -> Any:  # a streaming call: a generator, as the worker's own
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # exactly one actor wins this
            except FileExistsError:
                yield from super().play(matches)
                return
            os._exit(1)

    backend = TransformersBackend("tiny")
    model = get_peft_model(backend.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), adapter_name="alice")
    alice = LLMAgentSpec(name="alice", adapter="alice", max_new_tokens=8, temperature=1.0, reask=False)
    rnd = ScriptedAgentSpec(name="random", policy="random")
    lineups = seatings(make("tictactoe_v3"), [alice, rnd], 4)
    matches = [Match(game_id=i, env="tictactoe_v3", seats=seats, seed=i) for i, seats in enumerate(lineups)]
    pool = RolloutPool(2, "tiny", address=cluster.address, concurrency=4, worker_cls=DyingWorker)
    try:
        versions = pool.sync(model, ["alice"])
        episodes = pool.play(matches)
        assert [ep.game_id for ep in episodes] == [0, 1, 2, 3] and not any(ep.error for ep in episodes)
        assert pool.retried == 2 and os.path.exists(marker)  # the dead actor's two games, played again
        assert check_versions(episodes, versions) > 0  # the replacement got the same adapter before playing
    finally:
        pool.close()


@pytest.mark.ray
@pytest.mark.vllm
def test_vllm_engine_replicas_on_ray_serve_the_synced_versions(cluster: Any, tmp_path: Path) -> None:
    """rollout_backend: vllm on Ray: an actor runs its own vLLM server; every sync publishes a new version there and
    its generations carry the hash of the weights it serves, which must be the learner's current ones."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
    from llmmarl.backends.transformers import TransformersBackend
    from llmmarl.envs import make
    from llmmarl.runner import Match, seatings
    from llmmarl.serve import ServeError, find_vllm_python
    from llmmarl.train.config import TrainConfig
    from llmmarl.train.distributed import RolloutPool, VLLMRolloutWorker, adapter_version, check_versions

    try:
        find_vllm_python()
    except ServeError as e:
        pytest.skip(f"no Python with vLLM: {e}")
    learner = TransformersBackend("default")
    model = get_peft_model(learner.model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]), adapter_name="alice")
    cfg = TrainConfig.model_validate(
        {"env": "tictactoe_v3", "model": "default", "learners": [{"name": "alice"}], "rollout_backend": "vllm",
         "vllm": {"kv_cache_gib": 0.25, "max_model_len": 2048}, "eval_games": 0, "output_dir": str(tmp_path)}
    )  # fmt: skip
    alice = LLMAgentSpec(name="alice", adapter="alice", max_new_tokens=16, temperature=1.0, reask=False)
    rnd = ScriptedAgentSpec(name="random", policy="random")
    lineups = seatings(make("tictactoe_v3"), [alice, rnd], 2)
    matches = [Match(game_id=i, env="tictactoe_v3", seats=seats, seed=i) for i, seats in enumerate(lineups)]
    pool = RolloutPool(
        1, "default", address=cluster.address, worker_cls=VLLMRolloutWorker,
        worker_args=(cfg.model_dump(mode="json"), 4),
    )  # fmt: skip
    try:
        first = pool.sync(model, ["alice"])
        assert first == {"alice": adapter_version(model, "alice")}
        episodes = pool.play(matches)
        assert len(episodes) == 2 and check_versions(episodes, first) > 0
        turns = [t for ep in episodes for t in ep.turns if t.player == "alice"]
        assert all(a.logprobs and len(a.logprobs) == len(a.completion_ids) for t in turns for a in t.attempts)
        with torch.no_grad():  # an update
            for name, p in model.named_parameters():
                if "lora_B.alice" in name:
                    p.add_(0.05)
        second = pool.sync(model, ["alice"])
        assert second != first and second == {"alice": adapter_version(model, "alice")}
        assert check_versions(pool.play(matches), second) > 0  # the replica serves the new version
    finally:
        pool.close()
    # The actor is gone, and with it its vLLM server: no engine core or worker may be left orphaned (Ray kills an
    # actor's child processes, the server's watchdog among them).
    deadline = time.monotonic() + 60
    while _vllm_processes_of_this_cluster() and time.monotonic() < deadline:
        time.sleep(1)
    assert not _vllm_processes_of_this_cluster()


def _vllm_processes_of_this_cluster() -> list[int]:
    """vLLM's API server, engine core and worker processes started under this module's cluster (its RAY_TMPDIR)."""
    import psutil

    mine = os.environ.get("RAY_TMPDIR")
    out = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            looks = "VLLM" in (proc.info["name"] or "") or "vllm.entrypoints" in " ".join(proc.info["cmdline"] or [])
            if looks and proc.environ().get("RAY_TMPDIR") == mine:
                out.append(proc.pid)
        except psutil.Error:
            continue
    return out


# ---- a cluster that cannot make progress ---------------------------------------------------------------------
@pytest.mark.ray
def test_actors_no_node_can_hold_end_the_tournament_with_one_line(cluster: Any, tmp_path: Path) -> None:
    """Actors asking for a GPU on a cluster without one: Ray would wait forever; the run stops after
    placement_timeout, and the same schedule then plays whole where the actors fit."""
    import time

    from llmmarl.cluster import ClusterLostError

    cfg = config(tmp_path, "nogpu", SCRIPTED, 1, on_ray(cluster, num_gpus=1, placement_timeout=2))
    t0 = time.monotonic()
    with pytest.raises(ClusterLostError, match=r"no alive node can hold an actor \(1 CPU, 1 GPU\)") as e:
        run_tournament(cfg, progress=False)
    print(f"stopped after {time.monotonic() - t0:.1f}s: {e.value}")
    assert time.monotonic() - t0 < 60 and "\n" not in str(e.value) and "run the same command again" in str(e.value)
    assert stored_once(cfg.db) == (6, 0)
    assert cfg.ray is not None
    summary = run_tournament(cfg.model_copy(update={"ray": cfg.ray.model_copy(update={"num_gpus": 0})}), progress=False)
    assert summary.played_now == summary.finished == 6 and stored_once(cfg.db) == (6, 6)


def _alice() -> tuple[Any, list[Any]]:
    """A tiny model with one LoRA learner, and two tictactoe games of it against random."""
    from peft import LoraConfig, get_peft_model

    from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
    from llmmarl.backends.transformers import TransformersBackend
    from llmmarl.envs import make
    from llmmarl.runner import Match, seatings

    backend = TransformersBackend("tiny")
    model = get_peft_model(backend.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), adapter_name="alice")
    alice = LLMAgentSpec(name="alice", adapter="alice", max_new_tokens=8, temperature=1.0, reask=False)
    rnd = ScriptedAgentSpec(name="random", policy="random")
    lineups = seatings(make("tictactoe_v3"), [alice, rnd], 2)
    return model, [Match(game_id=i, env="tictactoe_v3", seats=seats, seed=i) for i, seats in enumerate(lineups)]


@pytest.mark.ray
def test_rollout_actors_no_node_can_hold_fail_the_update_clearly(cluster: Any) -> None:
    import time

    from llmmarl.cluster import ClusterLostError
    from llmmarl.train.distributed import RolloutPool

    model, _ = _alice()
    pool = RolloutPool(2, "tiny", address=cluster.address, num_gpus=1, placement_timeout=2)
    t0 = time.monotonic()
    try:
        with pytest.raises(ClusterLostError, match=r"no alive node can hold an actor.*--resume"):
            pool.sync(model, ["alice"])
    finally:
        pool.close()
    assert time.monotonic() - t0 < 60


@pytest.mark.ray
def test_a_rollout_actor_that_hangs_ends_the_update_after_the_stall_timeout(cluster: Any) -> None:
    """A placed actor that never returns (a deadlock, a call that never times out): nothing comes back, and the
    update stops after stall_timeout instead of waiting forever."""
    import time

    import ray

    from llmmarl.cluster import ClusterLostError
    from llmmarl.train.distributed import RolloutPool, RolloutWorker

    class HangingWorker(RolloutWorker):  # pickled by value: defined here, it reaches the actors as it is
        def play(self, matches: Any) -> Any:  # a streaming call: a generator, as the worker's own
            time.sleep(3600)
            yield from ()

    model, matches = _alice()
    pool = RolloutPool(2, "tiny", address=cluster.address, worker_cls=HangingWorker, stall_timeout=8)
    try:
        # Placing and loading an actor counts as progress only once done; on a loaded machine that alone can take
        # longer than this short stall timeout, so wait for both actors first.
        ray.get([a.sync.remote({}) for a in pool.actors])
        pool.sync(model, ["alice"])  # both actors placed and synced: the cluster is fine
        t0 = time.monotonic()
        with pytest.raises(ClusterLostError, match=r"no rollout game came back for \d+s \(stall_timeout 8s\)"):
            pool.play(matches)
        assert 8 <= time.monotonic() - t0 < 40
    finally:
        pool.close()
