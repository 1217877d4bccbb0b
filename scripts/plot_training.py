"""Plot a training run's curves from its metrics.jsonl: return, win rate and invalid-action rate per update, and,
for runs with groups of games, the share of dead groups (every reward of the group equal: no group-relative
gradient).

    python scripts/plot_training.py runs/train/ttt/metrics.jsonl --out reports/train_tictactoe.png

Format warm-up updates (``warmup_updates``; played under the turn grammar) are shaded, so the jump in the
invalid-action rate when GRPO takes over unconstrained is not mistaken for a regression. Evaluations in the file
are marked on the right of each panel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from llmmarl.train.metrics import read_metrics

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("metrics", type=Path, help="a run's metrics.jsonl")
p.add_argument("--out", type=Path, default=None, help="PNG to write (default: next to metrics.jsonl)")
p.add_argument("--title", default=None)
args = p.parse_args()

steps: dict[int, dict[str, dict[str, float]]] = {}
evaluation: dict[str, dict[str, dict[str, float]]] = {}
for row in read_metrics(args.metrics):
    if row.learners is not None:
        steps[row.step] = row.learners  # a resumed run may repeat a step: the last record wins
    elif row.eval is not None:
        evaluation = row.eval
if not steps:
    raise SystemExit(f"{args.metrics}: no training updates recorded yet")

xs = sorted(steps)
learners = sorted({name for s in steps.values() for name in s})
panels = [("game/return", "mean return"), ("game/win_rate", "win rate"), ("game/invalid_rate", "invalid-action rate")]
if any("groups/dead_share" in m for s in steps.values() for m in s.values()):  # logged with group_size >= 2
    panels.append(("groups/dead_share", "dead groups (zero reward spread)"))
fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
warm = [x for x in xs if any(m.get("warmup") for m in steps[x].values())]
for ax, (key, label) in zip(axes, panels, strict=True):
    if warm:  # update k's metrics describe its rollout, played before step k: shade (first - 1, last]
        ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.9", label="format warm-up")
    for name in learners:
        ax.plot(xs, [steps[x].get(name, {}).get(key, float("nan")) for x in xs], "o-", ms=3, label=name)
        for lineup, results in evaluation.items():
            value = results.get(name, {}).get(key.removeprefix("game/"))
            if value is not None:
                ax.plot([xs[-1] + 1], [value], "k*", ms=9, label=f"eval: {lineup}")
    ax.set(xlabel="update", title=label)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=7)
fig.suptitle(args.title or str(args.metrics.parent.name))
fig.tight_layout()
out = args.out or args.metrics.with_name("curves.png")
out.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(out, dpi=110)
print(out)
