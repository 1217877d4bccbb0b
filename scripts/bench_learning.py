"""The probe suite: train each algorithm on each probe game it applies to, read the policy exactly, print the table.

A probe has a known answer (``llmmarl/studies/probes.py`` lists each one's measure and threshold), so every row says
whether the algorithm reached it, with the budget it took. See ``docs/learning.md`` for the results.

    python scripts/bench_learning.py --model tiny --updates 6                      # every probe x algorithm
    python scripts/bench_learning.py --model default --probes bandit --algorithms grpo --updates 30
    python scripts/bench_learning.py --probes contextual --seeds 0 1 2 --set learning_rate=1e-4
    python scripts/bench_learning.py --json results.jsonl                           # also one JSON line per run

``--set KEY=VALUE`` changes any TrainConfig key of every run (the runs' recipe is ``probe_config``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmmarl.studies.probes import ALGORITHMS, PROBES, applicable, run_probe, table

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--model", default="tiny", help="default (SmolLM2-135M-Instruct), tiny, a folder or hub id")
p.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
p.add_argument("--seeds", nargs="+", type=int, default=[0], help="probe seeds: which word pays (and run seeds)")
p.add_argument("--updates", type=int, default=20, help="the budget: updates at most per run")
p.add_argument("--read-every", type=int, default=2, help="read the policy every this many updates")
p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
p.add_argument("--json", type=Path, default=None, help="append one JSON line per run here")
args = p.parse_args()

try:
    pairs = applicable(args.probes, args.algorithms)
except ValueError as e:
    sys.exit(str(e))
results = []
for probe, algorithm in pairs:
    for seed in args.seeds:

        def show(reading: dict[str, Any], probe: str = probe, algorithm: str = algorithm, seed: int = seed) -> None:
            parts = "".join(f" {k} {v:.3f}" for k, v in reading.items() if k not in ("updates", "cpu_minutes", "value"))
            print(
                f"  {probe} {algorithm} seed {seed}: update {reading['updates']} "
                f"({reading['cpu_minutes']:.1f} CPU-min): measure {reading['value']:.3f}{parts}",
                flush=True,
            )

        r = run_probe(
            PROBES[probe], algorithm, args.model, seed, args.updates, args.read_every, args.overrides, on_read=show
        )
        results.append(r)
        print(table([r]).splitlines()[-1], flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            with args.json.open("a") as f:
                f.write(json.dumps({**r.row(), "overrides": args.overrides}) + "\n")
print()
print(table(results))
