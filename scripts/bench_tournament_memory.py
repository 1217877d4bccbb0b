"""Resident memory of a long scripted round robin: records streamed to the store vs kept for the whole run.

A round robin is one ``Runner.play`` call. Each mode runs in a fresh subprocess: ``stream`` is the tournament as it
is (each finished game goes to the SQLite store and is dropped), ``keep`` makes the runner keep every record for the
whole call, as it did before records were streamed. Resident memory (VmRSS) is read after the first ``--probe``
games, every ``--probe`` games after, and at the end; flat means no reading is more than about 50 MiB above the
first.

    python scripts/bench_tournament_memory.py --games 20000 --out benchmarks/tournament_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from llmmarl.benchmarking import machine_info

CHILD = r"""
import json, sys, time
from llmmarl.runner import Runner
from llmmarl.tournament import TournamentConfig, run_tournament

mode, games, probe, db = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "keep":  # the runner as it was: every record held until play() returns
    play = Runner.play
    Runner.play = lambda self, matches, on_episode=None, desc="games", keep=True: play(self, matches, on_episode, desc)

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

config = TournamentConfig.model_validate({
    "name": "memory", "games": ["tictactoe_v3"], "participants": ["random", {"kind": "scripted", "name": "random2",
    "policy": "random"}], "schedule": {"format": "round_robin", "games_per_pairing": games // 2}, "db": db,
    "concurrency": 32, "bootstrap": 0,
})
seen = {"n": 0}
start_rss = rss_mib()
readings = {}

def on_game(ep):
    seen["n"] += 1
    if seen["n"] == probe:
        readings["probe_mib"] = readings["max_after_probe_mib"] = rss_mib()
    elif seen["n"] > probe and seen["n"] % probe == 0:  # the highest reading after the probe, every probe games
        readings["max_after_probe_mib"] = max(readings["max_after_probe_mib"], rss_mib())

t0 = time.perf_counter()
summary = run_tournament(config, progress=False, on_game=on_game)
out = {"mode": mode, "games": summary.played_now, "start_mib": start_rss, **readings, "end_mib": rss_mib(),
       "seconds": time.perf_counter() - t0}
out["growth_mib"] = max(out["end_mib"], out["max_after_probe_mib"]) - out["probe_mib"]
print(json.dumps(out))
"""


def measure(mode: str, games: int, probe: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "t.sqlite")
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, mode, str(games), str(probe), db], capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=20_000, help="Games in the round robin (two seat orders).")
    parser.add_argument("--probe", type=int, default=1_000, help="Read memory after this many games, and at the end.")
    parser.add_argument("--modes", nargs="+", default=["stream", "keep"], choices=["stream", "keep"])
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here too.")
    args = parser.parse_args()
    rows = [measure(mode, args.games, args.probe) for mode in args.modes]
    head = f"{'mode':8} {'games':>7} {'RSS after ' + str(args.probe):>16} {'highest after':>14} {'RSS at end':>11}"
    print(f"{head} {'growth':>9} {'time':>7}")
    for r in rows:
        print(
            f"{r['mode']:8} {r['games']:>7} {r['probe_mib']:>12.0f} MiB {r['max_after_probe_mib']:>10.0f} MiB "
            f"{r['end_mib']:>7.0f} MiB {r['growth_mib']:>+5.0f} MiB {r['seconds']:>6.0f}s"
        )
    print("growth: the highest reading after the probe (or at the end) minus the reading at the probe")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine_info(), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
