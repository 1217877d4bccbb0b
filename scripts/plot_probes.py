"""Plot probe runs over CPU-minutes: the measure and each of its parts (the contextual probes: each cue's P(its
word)), one colour per method, one line style per seed, from the JSON lines of ``scripts/bench_learning.py``.

    python scripts/bench_learning.py --probes contextual_hard --algorithms grpo all_action --seeds 0 1 2 \\
        --updates 24 --read-every 4 --json runs/probes/hard.jsonl
    python scripts/plot_probes.py runs/probes/hard.jsonl --out reports/contextual_hard.png

A method is the algorithm plus the run's ``--set`` overrides (``--name KEY=LABEL`` renames one: the key is the
method as printed). The probe's threshold is drawn as a dashed line.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

SKIP = ("updates", "cpu_minutes", "value")  # a reading's bookkeeping; every other key is a part of the measure


def method(row: dict[str, Any]) -> str:
    """The algorithm and the overrides that made the run, the seed left out (it is the line style)."""
    overrides = row.get("overrides", [])
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("algorithm=")]  # --set algorithm=... wins
    return " ".join([*(named[-1:] or [row["algorithm"]]), *(o for o in overrides if not o.startswith("algorithm="))])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="JSON lines written by bench_learning.py --json")
    p.add_argument("--name", action="append", default=[], metavar="METHOD=LABEL", help="a method's label")
    p.add_argument("--out", type=Path, default=Path("reports/probes.png"))
    args = p.parse_args()
    names = dict(n.rsplit("=", 1) for n in args.name)  # a method holds "=" (its overrides), a label does not
    rows = [json.loads(line) for path in args.runs for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("readings")]
    if not rows:
        p.error("no run with readings (write them with a bench_learning.py that records them)")
    parts = ["value", *dict.fromkeys(k for r in rows for k in r["readings"][0] if k not in SKIP)]
    methods = list(dict.fromkeys(method(r) for r in rows))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 3.8), sharey=True, squeeze=False)
    seeds: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        m = method(r)
        seeds[m].append(r["seed"])
        style = styles[(len(seeds[m]) - 1) % len(styles)]
        for ax, part in zip(axes[0], parts, strict=True):
            xs = [x["cpu_minutes"] for x in r["readings"]]
            ys = [x[part] for x in r["readings"]]
            label = f"{names.get(m, m)}, seed {r['seed']}" if part == "value" else None
            ax.plot(xs, ys, style, color=colours[m], label=label, marker=".")
    for ax, part in zip(axes[0], parts, strict=True):
        ax.axhline(rows[0]["threshold"], color="grey", linestyle="--", linewidth=0.8)
        ax.set_title("measure (min over parts)" if part == "value" else f"P(word) at {part}")
        ax.set_xlabel("CPU-minutes")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("probability, read exactly")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{rows[0]['probe']} probe, {rows[0]['model']} model")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} ({len(rows)} runs, {len(methods)} methods)")


if __name__ == "__main__":
    main()
