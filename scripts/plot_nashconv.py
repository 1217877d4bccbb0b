"""Plot Kuhn poker NashConv over training from runs' metrics.jsonl (``eval_measures: [nash_conv]``), one curve per run.

    python scripts/plot_nashconv.py runs/train/kuhn-nc-random/metrics.jsonl runs/train/kuhn-nc-self/metrics.jsonl \\
        --labels "vs random" "self-play" --start 2.3333 --out reports/kuhn_nashconv_curves.png

``--start`` is the base model's NashConv read the same way (update 0); random (0.9167) and the equilibrium (0) are
drawn as reference lines. Exploitability is NashConv / 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from llmmarl.train.metrics import read_metrics

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("metrics", nargs="+", type=Path, help="runs' metrics.jsonl")
p.add_argument("--labels", nargs="+", default=None, help="one label per run (default: the folder names)")
p.add_argument("--start", type=float, default=None, help="NashConv at update 0 (the base model, read alike)")
p.add_argument("--title", default="Kuhn poker: NashConv of the learner's policy over training")
p.add_argument("--out", type=Path, default=Path("reports/kuhn_nashconv_curves.png"))
args = p.parse_args()
labels = args.labels or [m.parent.name for m in args.metrics]
if len(labels) != len(args.metrics):
    p.error("give one label per metrics file")

fig, ax = plt.subplots(figsize=(7, 4))
for path, label in zip(args.metrics, labels, strict=True):
    points = [(row.step, nc) for row in read_metrics(path) for nc in (row.measures or {}).get("nash_conv", {}).values()]
    if not points:
        p.error(f"{path} has no NashConv rows (train with eval_measures: [nash_conv] and eval_every)")
    if args.start is not None:  # the base model's reading, an exact point at update 0
        points.insert(0, (0, {"nash_conv": args.start}))
    steps = [s for s, _ in points]
    values = [v["nash_conv"] for _, v in points]
    lo = [v.get("nash_conv_lo", v["nash_conv"]) for _, v in points]
    hi = [v.get("nash_conv_hi", v["nash_conv"]) for _, v in points]
    ax.plot(steps, values, marker="o", label=label)
    ax.fill_between(steps, lo, hi, alpha=0.2)
ax.axhline(11 / 12, color="grey", linestyle="--", label="uniform random (0.9167)")
ax.axhline(0.0, color="black", linestyle=":", label="Nash equilibrium (0)")
ax.set_xlabel("update")
ax.set_ylabel("NashConv (exploitability x 2)")
ax.set_title(args.title, fontsize=10)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
args.out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(args.out, dpi=120)
print(f"wrote {args.out}")
