"""GRPO vs PPO vs PPO with a centralised critic (MAPPO-style) on one game, same model and same budget.

Each algorithm trains the same learners from the same base model for the same number of updates, each update
playing the same number of games (the games of update k have the same seeds in every run). The learning curves
come from each run's metrics.jsonl (the learners' training-game return and win rate per update, averaged over
learners); a final greedy evaluation is added when --eval-games > 0. Output under --out:

    <algorithm>/                 each run (checkpoints, metrics.jsonl, adapters/)
    curves.json                  every run's curves and evaluation
    curves.png                   return and success (win) rate vs update, one line per algorithm

    python scripts/compare_algorithms.py --game signal_v0 --steps 30
    python scripts/compare_algorithms.py --game tictactoe_v3 --steps 30 --games-per-update 16
    python scripts/compare_algorithms.py --smoke           # tiny model, 2 updates of 4 games (a plumbing check)

Re-running with the same --out resumes unfinished runs and re-plots finished ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from llmmarl.train import TrainConfig, train
from llmmarl.train.metrics import read_metrics

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--game", choices=["signal_v0", "tictactoe_v3"], default="signal_v0")
p.add_argument("--model", default="default", help="base model: default, tiny, a folder or hub id")
p.add_argument("--steps", "--budget", type=int, default=30, help="updates per algorithm")
p.add_argument("--games-per-update", type=int, default=16)
p.add_argument("--group-size", type=int, default=4, help="GRPO's games per seed; PPO plays the same games")
p.add_argument("--algorithms", default="grpo,ppo,ppo_central", help="comma-separated subset")
p.add_argument("--lr", type=float, default=1e-4, help="learning rate of the policies' adapters")
p.add_argument("--grpo-steps", type=int, default=4, help="GRPO's optimizer steps per update (PPO: 2x2)")
p.add_argument("--critic-lr", type=float, default=2e-4, help="PPO critics' learning rate")
p.add_argument("--max-new-tokens", type=int, default=48)
p.add_argument("--constrained", action="store_true", help="grammar-constrained answers (all legal)")
p.add_argument("--eval-games", type=int, default=32, help="final greedy evaluation games per learner; 0 = none")
p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine)")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default=None, help="output folder (default runs/compare/<game>)")
p.add_argument("--smoke", action="store_true", help="tiny model, 2 updates of 4 games, constrained")
args = p.parse_args()

if args.smoke:
    args.model, args.steps, args.games_per_update, args.group_size = "tiny", 2, 4, 2
    args.eval_games, args.constrained, args.max_new_tokens = 4, True, 96
out = Path(args.out or f"runs/compare/{args.game}{'-smoke' if args.smoke else ''}")

# ---- the game: who learns, against whom ------------------------------------------------------------------------
if args.game == "signal_v0":
    game: dict[str, Any] = {
        "env": "signal_v0",
        "env_kwargs": {"num_items": 4, "rounds": 1, "talk": True},
        "setting": "team",
        "learners": [{"name": "speaker", "seats": ["speaker_0"]}, {"name": "listener", "seats": ["listener_0"]}],
    }
else:
    game = {
        "env": "tictactoe_v3",
        "setting": "fixed_opponents",
        "learners": [{"name": "ttt"}],
        "opponents": ["random"],
        "eval_opponents": ["random"],
    }

# ---- one config per algorithm: everything shared except the algorithm's own settings -----------------------------
shared: dict[str, Any] = {
    **game,
    "model": args.model,
    "games_per_update": args.games_per_update,
    "group_size": args.group_size,
    "steps": args.steps,
    "learning_rate": args.lr,
    "max_new_tokens": args.max_new_tokens,
    "constrained": args.constrained,
    "rewards": {"game": 1.0, "format": 1.0},
    "eval_games": args.eval_games,
    "save_every": max(1, args.steps // 4),
    "threads": args.threads,
    "seed": args.seed,
}
ALGORITHMS: dict[str, dict[str, Any]] = {
    # As many optimizer steps per update as PPO's default (2 epochs x 2 minibatches), so the algorithms differ in
    # their objective and baseline, not in how hard they train on each rollout.
    "grpo": {"algorithm": "grpo", "grpo": {"credit": "role", "steps_per_update": args.grpo_steps}},
    "ppo": {"algorithm": "ppo", "ppo": {"critic": "decentralised", "critic_lr": args.critic_lr}},
    "ppo_central": {"algorithm": "ppo", "ppo": {"critic": "centralised", "critic_lr": args.critic_lr}},
}
names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
unknown = sorted(set(names) - set(ALGORITHMS))
if unknown:
    p.error(f"unknown algorithms {unknown}; choose from {list(ALGORITHMS)}")


def curves(metrics: Path) -> dict[str, Any]:
    """Per update: the learners' mean training return and win rate; the last evaluation, if any."""
    per_step: dict[int, dict[str, float]] = {}
    evaluation: dict[str, Any] = {}
    for row in read_metrics(metrics):
        if row.learners is not None:  # a resumed run may repeat a step: the last record wins
            learners = row.learners.values()
            per_step[row.step] = {
                k: sum(m.get(f"game/{k}", 0.0) for m in learners) / max(1, len(learners))
                for k in ("return", "win_rate", "invalid_rate")
            }
            # Seconds of the update: its rollout (shared) plus every learner's optimisation.
            rollout = max(m.get("time/rollout_s", 0.0) for m in learners)
            per_step[row.step]["seconds"] = rollout + sum(m.get("time/update_s", 0.0) for m in learners)
        elif row.eval is not None:
            evaluation = row.eval
    steps = sorted(per_step)
    keys = ("return", "win_rate", "invalid_rate", "seconds")
    return {"step": steps, **{k: [per_step[s][k] for s in steps] for k in keys}, "eval": evaluation}


# ---- train ----------------------------------------------------------------------------------------------------------
results: dict[str, dict[str, Any]] = {}
for name in names:
    run_dir = out / name
    cfg = TrainConfig.model_validate({**shared, **ALGORITHMS[name], "output_dir": str(run_dir)})
    print(f"== {name}: {cfg.algorithm}, {cfg.steps} updates x {cfg.games_per_update} games -> {run_dir}")
    train(cfg, resume=True)
    results[name] = curves(run_dir / "metrics.jsonl")

# ---- curves.json, curves.png, a table --------------------------------------------------------------------------------
out.mkdir(parents=True, exist_ok=True)
summary = {"game": args.game, "model": args.model, "steps": args.steps, "games_per_update": args.games_per_update}
(out / "curves.json").write_text(json.dumps({**summary, "runs": results}, indent=1))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for (name, r), style in zip(results.items(), ["-", "--", ":"], strict=False):  # styles: overlapping lines show
    axes[0].plot(r["step"], r["return"], style, label=name)
    axes[1].plot(r["step"], r["win_rate"], style, label=name)
axes[0].set(xlabel="update", ylabel="mean return (training games)", title=f"{args.game}: return")
axes[1].set(xlabel="update", ylabel="win / success rate", title=f"{args.game}: success rate", ylim=(-0.02, 1.02))
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
fig.suptitle(f"{args.model}, {args.steps} updates x {args.games_per_update} games")
fig.tight_layout()
fig.savefig(out / "curves.png", dpi=120)


def tail_mean(xs: list[float]) -> float:
    """Mean of the last quarter of the updates: less noisy than the last one."""
    tail = xs[-max(1, len(xs) // 4) :]
    return sum(tail) / len(tail) if tail else float("nan")


def eval_mean(r: dict[str, Any], key: str) -> float:
    values = [m[key] for lineup in r["eval"].values() for m in lineup.values()]
    return sum(values) / len(values) if values else float("nan")


print(f"\n{'algorithm':<12} {'return':>8} {'win':>6} {'invalid':>8} {'eval R':>8} {'eval win':>9} {'s/update':>9}")
for name, r in results.items():
    print(
        f"{name:<12} {tail_mean(r['return']):>+8.3f} {tail_mean(r['win_rate']):>6.0%} "
        f"{tail_mean(r['invalid_rate']):>8.0%} {eval_mean(r, 'return'):>+8.3f} {eval_mean(r, 'win_rate'):>9.0%} "
        f"{sum(r['seconds']) / max(1, len(r['seconds'])):>9.1f}"
    )
print(
    f"\n(return, win, invalid: mean over the last quarter of the updates)\n{out / 'curves.json'}\n{out / 'curves.png'}"
)
