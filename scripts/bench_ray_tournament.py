"""Tournament throughput in one process vs on Ray with 1 and 2 actors, on a local Ray instance.

Every run plays the same round robin (same schedule, seeds and seats) into a fresh store, and the script counts how
many games came out identical to the one-process run (per-request sampling seeds make that the expectation; batch
shapes may flip a rare draw).

    python scripts/bench_ray_tournament.py --model default --games-per-pairing 4 --out benchmarks/ray_tournament.json

Needs the ray extra (``pip install 'llmmarl[ray]'``). Ray starts locally with ``--cpus`` CPUs; each actor reserves
one, which also limits its torch threads to one; the one-process run uses ``--threads`` (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from llmmarl.benchmarking import machine_info
from llmmarl.records import EpisodeRecord
from llmmarl.tournament import TournamentConfig, run_tournament


def config(args: argparse.Namespace, db: Path, ray: dict[str, Any] | None) -> TournamentConfig:
    llm = {"kind": "llm", "name": "llm", "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "reask": False}
    return TournamentConfig.model_validate(
        {
            "name": "bench",
            "games": [args.env],
            "participants": [llm, "random"],
            "schedule": {"format": "round_robin", "games_per_pairing": args.games_per_pairing},
            "db": str(db),
            "base_model": args.model,
            "concurrency": args.concurrency,
            "bootstrap": 0,
            "ray": ray,
        }
    )


def games(db: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT g.key, r.episode FROM games g JOIN results r ON r.game_id = g.id").fetchall()
    out = {}
    for key, episode in rows:
        ep = EpisodeRecord.model_validate_json(episode)
        out[key] = [f"{t.seat}:{t.action}:{a.response}" for t in ep.turns for a in t.attempts] or [
            f"{t.seat}:{t.action}" for t in ep.turns
        ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--env", default="tictactoe_v3")
    p.add_argument("--games-per-pairing", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the one-process run (actors get 1 each)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    # Like for like: each Ray actor runs one torch thread (Ray sets OMP_NUM_THREADS to its CPUs), and on a busy
    # machine more threads than free cores spin-wait in OpenMP, which can make the one-process run several times slower.
    import torch

    torch.set_num_threads(args.threads)

    import ray

    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="r"))  # Ray's socket paths must stay under 107 bytes
    (tmp / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(tmp)
    runs: list[dict[str, Any]] = []
    baseline: dict[str, list[str]] = {}
    for workers in [0, *args.workers]:
        db = tmp / f"w{workers}.sqlite"
        ray_cfg = None if workers == 0 else {"num_workers": workers, "num_cpus": 1, "chunk_size": args.concurrency}
        if workers and not ray.is_initialized():
            ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=200 * 1024**2)
        start = time.perf_counter()
        summary = run_tournament(config(args, db, ray_cfg), progress=False)
        seconds = time.perf_counter() - start
        played = games(db)
        if workers == 0:
            baseline = played
        same = sum(played[k] == baseline.get(k) for k in played)
        runs.append(
            {
                "workers": workers or "one process",
                "games": summary.finished,
                "seconds": round(seconds, 1),
                "games_per_s": round(summary.finished / seconds, 3),
                "identical_to_one_process": f"{same}/{len(played)}",
            }
        )
        print(runs[-1], flush=True)
    ray.shutdown()
    result = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
