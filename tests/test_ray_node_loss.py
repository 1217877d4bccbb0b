"""A Ray cluster that loses its node: the run ends with one clear line instead of waiting forever, and running it
again on a fresh cluster (or a new node) finishes exactly the rest.

Each test runs the real command (`llmmarl tournament ... --ray local`, `llmmarl train` with `rollout_workers: 2`) in a
subprocess that starts its own local Ray instance, in its own temp dir (so it never joins or touches another Ray
on the machine), then SIGKILLs that instance's raylet: the one process named exactly ``raylet`` among the
descendants of the subprocess this test started. Without the guard on the local node, Ray would leave the run
waiting on actors that can never be placed again (or end it without a word at its next use of the lost object
store). One test instead loses the only worker node of a two-node cluster (the driver's head node lives on), the
case of a pre-empted cloud node.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXIT_WITHIN_S = 60  # after the kill (the local guard ends the run at once; 60 s leaves room for a loaded machine)


def ray_env() -> dict[str, str]:
    # Ray's socket paths must stay under 107 bytes: a short temp dir of this run's own.
    ray_tmp = tempfile.mkdtemp(dir="/tmp", prefix="rn")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "RAY_TMPDIR": ray_tmp,
        # Other work on a shared machine must not get our actors killed by Ray's memory monitor mid-test.
        "RAY_memory_monitor_refresh_ms": "0",
        "COLUMNS": "200",  # one error line stays one line
    }


def run_cli(
    args: list[str], cwd: Path, on_start: Callable[[subprocess.Popen[str]], None] | None = None
) -> tuple[int, str, float]:
    """Run ``llmmarl ARGS`` to its end (``on_start`` runs while it does); returns (exit code, output, seconds from
    ``on_start``'s return to the exit)."""
    import psutil

    env = ray_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmmarl.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tree: list[psutil.Process] = []
    t0 = time.monotonic()
    try:
        if on_start is not None:
            on_start(proc)
            t0 = time.monotonic()
            tree = psutil.Process(proc.pid).children(recursive=True)
        out, _ = proc.communicate(timeout=EXIT_WITHIN_S + (0 if on_start else 480))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for p in tree:  # whatever the killed Ray left behind (processes of this run only)
            with contextlib.suppress(psutil.Error):
                p.kill()
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    log = cwd / f"{args[0]}-{len(list(cwd.glob('*.log')))}.log"
    log.write_text(out)  # the whole output, for a failure's reader
    return proc.returncode, out, time.monotonic() - t0


def when(
    ready: Callable[[], bool], action: Callable[[subprocess.Popen[str]], None], timeout: float = 240
) -> Callable[[subprocess.Popen[str]], None]:
    """An ``on_start``: once ``ready()``, ``action(the subprocess)``."""

    def on_start(proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()[0][-3000:]}"
            assert time.monotonic() < deadline, "the run never got to the point of the kill"
            time.sleep(0.2)
        action(proc)

    return on_start


def kill_own_raylet(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the raylet of the Ray instance that this subprocess started (its one descendant named raylet)."""
    import psutil

    raylets = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "raylet"]
    assert len(raylets) == 1, raylets
    raylets[0].kill()


def last_line(out: str) -> str:
    return [line for line in out.splitlines() if line.strip()][-1].strip()


# ---- tournament ------------------------------------------------------------------------------------------------
GAMES = 40


def stored(db: Path) -> tuple[int, int, int]:
    """(scheduled games, result rows, distinct games with a result)."""
    if not db.exists():
        return 0, 0, 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            scheduled = conn.execute("SELECT COUNT(*) FROM games").fetchone()[0]
            results, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT game_id) FROM results").fetchone()
        except sqlite3.OperationalError:  # tables not created yet
            return 0, 0, 0
    return scheduled, results, distinct


def tournament_config(db: Path) -> dict[str, Any]:
    """Cheap scripted games (connect four, random vs MCTS), enough of them to outlast the kill."""
    return {
        "name": "nodeloss",
        "games": ["openspiel:connect_four"],
        "participants": ["random", "mcts"],
        "schedule": {"format": "round_robin", "games_per_pairing": GAMES // 2},
        "db": str(db),
        "concurrency": 2,
        "bootstrap": 0,
        "ray": {"num_workers": 2, "num_cpus": 1, "chunk_size": 2, "placement_timeout": 5},
    }


@pytest.mark.ray
def test_a_tournament_that_loses_its_node_stops_with_one_line_and_resumes_exactly(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    db = tmp_path / "t.sqlite"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tournament_config(db)))
    args = ["tournament", "t.yaml", "--ray", "local"]

    rc, out, seconds = run_cli(args, tmp_path, when(lambda: stored(db)[1] >= 1, kill_own_raylet))
    print(f"lost node: exit {rc} {seconds:.1f}s after the kill; last line: {last_line(out)}")
    assert rc == 1, out[-3000:]
    assert seconds < EXIT_WITHIN_S
    line = last_line(out)
    assert line.startswith("error: the Ray node this run started died") and "run the same command again" in line
    assert "Traceback" not in out and "games played now" not in out  # no stack dump, no summary of what never ran
    scheduled, before, distinct = stored(db)
    assert scheduled == GAMES and 1 <= before == distinct < GAMES

    rc, out, seconds = run_cli(args, tmp_path)  # a fresh local cluster: resumes from the store
    print(f"resumed: {seconds:.1f}s, {GAMES - before} games left")
    assert rc == 0, out[-3000:]
    assert f"{GAMES - before} games played now" in out
    assert stored(db) == (GAMES, GAMES, GAMES)  # every scheduled game exactly once


@contextlib.contextmanager
def head_and_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """A two-node cluster of this test's own: a head without CPUs (the drivers' node; no actor lands there) and
    one worker node with two. Yields (cluster, worker node)."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(dir="/tmp", prefix="rn"))  # this cluster's own files
    # Ray's health check declares a silent node dead after about 15 s by default; this cluster does so in about
    # 4 s, so that work is still left when it does.
    health = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000}
    health |= {"health_check_timeout_ms": 2000, "health_check_failure_threshold": 3}
    health |= {"memory_monitor_refresh_ms": 0}  # other work on a shared machine must not get our actors killed
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": health},
    )
    try:
        yield cluster, cluster.add_node(num_cpus=2)
    finally:
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


@pytest.mark.ray
def test_a_tournament_whose_cluster_loses_its_worker_node_stops_and_resumes_on_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real cluster's case: the driver's head node lives on, the only node with CPUs for the actors is lost
    (pre-empted, its raylet OOM-killed). Ray would wait forever to place the replacement actors; the run stops
    after placement_timeout with one line, and once a new node joins, the same command plays exactly the rest."""
    pytest.importorskip("ray")
    db = tmp_path / "t.sqlite"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tournament_config(db)))
    with head_and_worker(monkeypatch) as (cluster, worker):
        args = ["tournament", "t.yaml", "--ray", cluster.address]
        lose = when(lambda: stored(db)[1] >= 1, lambda _: cluster.remove_node(worker, allow_graceful=False))
        rc, out, seconds = run_cli(args, tmp_path, lose)
        print(f"lost worker node: exit {rc} {seconds:.1f}s after the loss; last line: {last_line(out)}")
        assert rc == 1, out[-3000:]
        assert seconds < EXIT_WITHIN_S
        line = last_line(out)
        # Which line depends on timing: replacements asked for while Ray still counts the node alive die too
        # (max_failures), or wait for a node until placement_timeout. Both say what happened and how to resume.
        assert line.startswith("tournament failed: ")
        assert "the Ray cluster lost its nodes: no alive node can hold an actor (1 CPU)" in line or (
            "Ray actors died (max_failures=3; the cluster lost its nodes: no alive node can hold an actor (1 CPU))"
            in line
        )
        assert "run the same command again" in line
        assert "Traceback" not in out and "games played now" not in out
        scheduled, before, distinct = stored(db)
        assert scheduled == GAMES and 1 <= before == distinct < GAMES

        cluster.add_node(num_cpus=2)  # a new node joins
        rc, out, seconds = run_cli(args, tmp_path)
        print(f"resumed on a new node: {seconds:.1f}s, {GAMES - before} games left")
        assert rc == 0, out[-3000:]
        assert f"{GAMES - before} games played now" in out
        assert stored(db) == (GAMES, GAMES, GAMES)


# ---- training ----------------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_training_that_loses_its_node_stops_with_one_line_and_resume_finishes(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    run = tmp_path / "run"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train_config(run, "local")))

    def checkpointed() -> bool:  # the first update's checkpoint is written: kill during the second rollout
        return any(run.glob("checkpoints/step-*/state.json"))

    rc, out, seconds = run_cli(["train", "train.yaml"], tmp_path, when(checkpointed, kill_own_raylet))
    print(f"lost node: exit {rc} {seconds:.1f}s after the kill; last line: {last_line(out)}")
    assert rc == 1, out[-3000:]
    assert seconds < EXIT_WITHIN_S
    line = last_line(out)
    assert line.startswith("error: the Ray node this run started died") and "--resume" in line, out[-3000:]
    assert "Traceback" not in out
    assert_resumes(run, tmp_path)


@pytest.mark.ray
def test_training_whose_cluster_loses_its_worker_node_fails_the_update_and_resumes_on_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollout actors' only node is lost while the driver's head node lives on: the update fails with one
    line (no node can hold a replacement), and --resume continues once a new node joins."""
    pytest.importorskip("ray")
    run = tmp_path / "run"
    with head_and_worker(monkeypatch) as (cluster, worker):
        (tmp_path / "train.yaml").write_text(yaml.safe_dump(train_config(run, cluster.address)))

        def checkpointed() -> bool:
            return any(run.glob("checkpoints/step-*/state.json"))

        lose = when(checkpointed, lambda _: cluster.remove_node(worker, allow_graceful=False))
        rc, out, seconds = run_cli(["train", "train.yaml"], tmp_path, lose)
        print(f"lost worker node: exit {rc} {seconds:.1f}s after the loss; last line: {last_line(out)}")
        assert rc == 1, out[-3000:]
        assert seconds < EXIT_WITHIN_S
        line = last_line(out)
        # Either the replacement waits placement_timeout, or replacements die too (max_failures): same diagnosis.
        assert line.startswith("error: ") and "lost its nodes: no alive node can hold an actor (1 CPU)" in line
        assert "--resume" in line, out[-3000:]
        assert "Traceback" not in out
        cluster.add_node(num_cpus=2)  # a new node joins
        assert_resumes(run, tmp_path)


STEPS = 2  # the loss comes in the second update; the resumed run plays it again


def train_config(run: Path, address: str) -> dict[str, Any]:
    """Two rollout actors, the tiny model, four games an update, a checkpoint after every update."""
    return {
        "env": "tictactoe_v3",
        "model": "tiny",
        "eval_games": 0,
        "learners": [{"name": "alice", "lora": {"r": 4}}],
        "setting": "fixed_opponents",
        "opponents": ["random"],
        "games_per_update": 4,
        "group_size": 2,
        "steps": STEPS,
        "constrained": True,
        "max_new_tokens": 40,
        "micro_batch_size": 2,
        "save_every": 1,
        "threads": 1,
        "output_dir": str(run),
        "rollout_workers": 2,
        "ray_address": address,
        "ray_placement_timeout": 5,
    }


def assert_resumes(run: Path, cwd: Path) -> None:
    """The stopped run has fewer updates than asked; `--resume` (the same address) does the rest."""
    done_before = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert 1 <= len(done_before) < STEPS

    rc, out, seconds = run_cli(["train", "train.yaml", "--resume"], cwd)
    print(f"resumed: {seconds:.1f}s")
    assert rc == 0, out[-3000:]
    steps_logged = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged[-1] == STEPS and (run / "adapters" / "manifest.json").exists()
