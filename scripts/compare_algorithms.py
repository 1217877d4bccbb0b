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
    python scripts/compare_algorithms.py --set ppo.vf_coef=1.0   # any config key; an algorithm's block, its runs

Re-running with the same --out resumes unfinished runs and re-plots finished ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from llmmarl.config_overrides import set_key
from llmmarl.train import TrainConfig, algorithms, train
from llmmarl.train.metrics import read_metrics
from llmmarl.train.script_args import ScriptParser

# ---- the runs: what every algorithm shares, with each algorithm's own block (flags and --set change them) ---------
RECIPE: dict[str, Any] = {
    "env": "signal_v0",
    "env_kwargs": {"num_items": 4, "rounds": 1, "talk": True},
    "setting": "team",
    "learners": [{"name": "speaker", "seats": ["speaker_0"]}, {"name": "listener", "seats": ["listener_0"]}],
    "model": "default",
    "games_per_update": 16,
    "group_size": 4,  # GRPO's games per seed; PPO plays the same games
    "steps": 30,
    "learning_rate": 1e-4,
    "max_new_tokens": 48,
    "constrained": False,
    "rewards": {"game": 1.0, "format": 1.0},
    "eval_games": 32,
    "threads": None,
    "seed": 0,
    "output_dir": "runs/compare/signal_v0",  # one folder per algorithm in it
    # As many optimizer steps per update as PPO's default (2 epochs x 2 minibatches), so the algorithms differ in
    # their objective and baseline, not in how hard they train on each rollout. Each run keeps its own block.
    "grpo": {"credit": "role", "steps_per_update": 4},
    "ppo": {"critic_lr": 2e-4},
}
GAMES: dict[str, dict[str, Any]] = {  # --game: who learns, against whom
    "signal_v0": {},
    "tictactoe_v3": {
        "env": "tictactoe_v3",
        "env_kwargs": {},
        "setting": "fixed_opponents",
        "learners": [{"name": "ttt"}],
        "opponents": ["random"],
        "eval_opponents": ["random"],
        "output_dir": "runs/compare/tictactoe_v3",
    },
}
ALGORITHMS: dict[str, dict[str, Any]] = {
    "grpo": {"algorithm": "grpo"},
    "ppo": {"algorithm": "ppo", "ppo.critic": "decentralised"},
    "ppo_central": {"algorithm": "ppo", "ppo.critic": "centralised"},
}

p = ScriptParser(
    __doc__,
    RECIPE,
    aliases="--model --steps --budget --games-per-update --group-size --lr --grpo-steps --critic-lr --max-new-tokens "
    "--constrained --eval-games --threads --seed",
    smoke={"model": "tiny", "eval_games": 4, "constrained": True, "max_new_tokens": 96},
    output_flag="--out",
    resume_flag=False,  # always resumes: re-running with the same --out finishes unfinished runs
)
p.add_argument("--game", choices=list(GAMES), default="signal_v0", help="the game, its learners and opponents")
p.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated subset")
args = p.parse_args()

names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
unknown = sorted(set(names) - set(ALGORITHMS))
if unknown:
    p.error(f"unknown algorithms {unknown}; choose from {list(ALGORITHMS)}")
run = p.config(args, GAMES[args.game])
run.setdefault("save_every", max(1, run["steps"] // 4))
out = Path(run["output_dir"])


def algorithm_config(name: str) -> TrainConfig:
    """The shared run with ``name``'s algorithm and its settings block (the other algorithms' blocks dropped)."""
    algorithm = ALGORITHMS[name]["algorithm"]
    data = {k: v for k, v in run.items() if k not in algorithms() or k == algorithm}
    for key, value in {**ALGORITHMS[name], "output_dir": str(out / name)}.items():
        set_key(data, key, value)
    return p.validate(data)


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
    cfg = algorithm_config(name)
    print(f"== {name}: {cfg.algorithm}, {cfg.steps} updates x {cfg.games_per_update} games -> {run_dir}")
    train(cfg, resume=True)
    results[name] = curves(run_dir / "metrics.jsonl")

# ---- curves.json, curves.png, a table --------------------------------------------------------------------------------
out.mkdir(parents=True, exist_ok=True)
summary = {"game": args.game, **{k: run[k] for k in ("model", "steps", "games_per_update")}}
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
fig.suptitle(f"{run['model']}, {run['steps']} updates x {run['games_per_update']} games")
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
