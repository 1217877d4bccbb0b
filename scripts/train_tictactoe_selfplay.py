"""Train an LLM to play tic-tac-toe with GRPO, then compare it with the untrained base model.

Reads top to bottom: arguments -> config -> training (one LoRA adapter, TRL underneath) -> evaluation of the
trained adapter and of the base model against a random player, with 95% confidence intervals.

    python scripts/train_tictactoe_selfplay.py --opponent random          # against a random player
    python scripts/train_tictactoe_selfplay.py --steps 19 --warmup 6 --no-reask --max-new-tokens 40 --lr 2e-4
                                                                          # the recipe in adapters/manifest.json
    python scripts/train_tictactoe_selfplay.py --opponent self            # self-play
    python scripts/train_tictactoe_selfplay.py --smoke                    # tiny budget: does it run end to end?
    python scripts/train_tictactoe_selfplay.py --resume                   # continue a killed run
    python scripts/train_tictactoe_selfplay.py --eval-only --eval-games 400   # evaluate a finished run again
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from llmmarl.train.config import TrainConfig
from llmmarl.train.grpo import MultiAgentGRPO
from llmmarl.train.loop import format_metrics, separated

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--opponent", choices=["random", "self"], default="random", help="train against random, or self-play")
p.add_argument("--model", default="default", help="base model: default (SmolLM2-135M-Instruct), tiny, a folder")
p.add_argument("--steps", type=int, default=60, help="updates (one rollout + one optimizer step each)")
p.add_argument("--games-per-update", type=int, default=16)
p.add_argument("--group-size", type=int, default=4, help="games per group (same seed, same seating)")
p.add_argument("--credit", choices=["role", "group", "agent"], default="role")
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--steps-per-update", type=int, default=1, help="optimizer steps per rollout (clipped ratio)")
p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the updates (stops early)")
p.add_argument("--warmup", type=int, default=0, help="format warm-up updates (constrained, imitated) before GRPO")
p.add_argument("--no-reask", action="store_true", help="no re-ask in training games (halves a failing turn's cost)")
p.add_argument(
    "--constrained",
    action="store_true",
    help="grammar-constrained answers in training and evaluation (only play is learned)",
)
p.add_argument("--skip-base", action="store_true", help="do not evaluate the base model at the end")
p.add_argument("--max-new-tokens", type=int, default=48)
p.add_argument("--max-samples", type=int, default=32, help="cap on answers trained per update (bounds its cost)")
p.add_argument("--eval-games", type=int, default=200, help="games per agent in the final comparison")
p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine)")
p.add_argument("--output-dir", default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
p.add_argument(
    "--eval-only",
    action="store_true",
    help="no training: evaluate the newest checkpoint in --output-dir (and the base model) on --eval-games games",
)
p.add_argument("--smoke", action="store_true", help="tiny budget: 2 updates of 4 games, 8 evaluation games")
if "--smoke" in sys.argv:  # smoke sizes are defaults: flags given explicitly still win
    p.set_defaults(steps=2, games_per_update=4, group_size=2, max_samples=8, eval_games=8, max_new_tokens=32)
args = p.parse_args()

name = "ttt_self" if args.opponent == "self" else "ttt"
output_dir = args.output_dir or f"runs/train/{name}{'-smoke' if args.smoke else ''}"
if args.smoke and not (args.resume or args.eval_only):
    shutil.rmtree(output_dir, ignore_errors=True)  # a smoke run always starts afresh

# ---- the run: one learner, its own LoRA adapter ----------------------------------------------------------------
cfg = TrainConfig(
    env="tictactoe_v3",
    model=args.model,
    setting="self_play" if args.opponent == "self" else "fixed_opponents",
    learners=[{"name": name}],
    opponents=[] if args.opponent == "self" else ["random"],
    games_per_update=args.games_per_update,
    group_size=args.group_size,
    max_samples_per_learner=args.max_samples,
    rewards={"game": 1.0, "format": 1.0},  # the format term is what teaches a 135M model to answer legally
    learning_rate=args.lr,
    time_budget_minutes=args.minutes,
    grpo={"credit": args.credit, "steps_per_update": args.steps_per_update, "warmup_updates": args.warmup},
    constrained=args.constrained,
    reask=not args.no_reask,
    steps=args.steps,
    max_new_tokens=args.max_new_tokens,
    micro_batch_size=8,
    output_dir=output_dir,
    save_every=5,
    eval_every=0,
    eval_games=args.eval_games,  # at the end: greedy, against random, seats alternating
    eval_opponents=["random"],
    threads=args.threads,
    seed=args.seed,
)

# ---- training (ends with the evaluation of the adapter against random) ----------------------------------------
trainer = MultiAgentGRPO(cfg)
if (args.resume or args.eval_only) and trainer.resume():
    print(f"resumed at update {trainer.step}")
elif args.eval_only:
    raise SystemExit(f"--eval-only: no checkpoint in {output_dir} to evaluate")
start = time.perf_counter()
results = trainer.evaluate() if args.eval_only else trainer.train()
elapsed = time.perf_counter() - start
print(
    f"{trainer.step} updates ({trainer.train_seconds / 60:.1f} min of updates), this run {elapsed / 60:.1f} min "
    f"with evaluation; adapter: {cfg.adapters_path / name}"
)

if args.skip_base:
    print(format_metrics(f"{name} vs random", results[f"{name} vs random"][name]))
    raise SystemExit(0)

# ---- the base model on the same games (same seeds, same seats), for comparison -----------------------------------
# Under --constrained the adapter plays with the grammar, so the base model is measured with it too (a like-for-like
# comparison of play), and both are also measured without it (has the adapter learned the format on its own?).
free = {"constrained": False}
stand_ins = [trainer.eval_spec("base")]  # decoded as the adapter's evaluation: greedy, the run's grammar and re-ask
if cfg.constrained:
    stand_ins += [
        trainer.eval_spec(f"{name}-free", name).model_copy(update=free),
        trainer.eval_spec("base-free").model_copy(update=free),
    ]
rows = {f"{name} vs random": results[f"{name} vs random"][name], **trainer.compare(name, stand_ins)}
for label, m in rows.items():
    print(format_metrics(f"{label:>20}", m))
trained, base = rows[f"{name} vs random"], rows["base vs random"]
free = rows.get(f"{name}-free vs random", trained)  # the adapter without the grammar
grammar = " (both with the grammar)" if cfg.constrained else ""
print(f"trained beats base with non-overlapping 95% CIs{grammar}: {separated(trained, base)}")
print(f"invalid < 5% without the grammar: {free['invalid_rate'] < 0.05}")
