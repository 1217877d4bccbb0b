"""Train an LLM to play Kuhn poker against a fixed opponent with GRPO.

Kuhn poker deals one card from J < Q < K to each player; single games are mostly luck. The games of a group
share their seed, hence the deal, so ``credit: group`` compares answers dealt the same cards. The opponent is a
scripted policy (``random`` by default, or any registered one: ``llmmarl agents`` lists them) or a frozen adapter
folder (``llm@PATH``). The learner also predicts its opponent's next move; ``--prediction-weight`` rewards
predictions that come true.

    python scripts/train_kuhn.py                              # against random
    python scripts/train_kuhn.py --opponent llm@runs/train/kuhn/adapters/kuhn   # against an earlier self
    python scripts/train_kuhn.py --warmup 4 --steps 10 --no-reask --max-new-tokens 40 --lr 2e-4   # adapters/kuhn-grpo
    python scripts/train_kuhn.py --smoke
"""

from __future__ import annotations

import argparse
import shutil

from llmmarl.train.config import TrainConfig
from llmmarl.train.grpo import MultiAgentGRPO
from llmmarl.train.loop import format_metrics

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--opponent", default="random", help="scripted policy name or llm@ADAPTER_FOLDER")
p.add_argument("--model", default="default")
p.add_argument("--steps", type=int, default=60)
p.add_argument("--games-per-update", type=int, default=32)
p.add_argument("--group-size", type=int, default=4, help="games dealt the same cards")
p.add_argument("--credit", choices=["group", "role", "agent"], default="group")
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--steps-per-update", type=int, default=1, help="optimizer steps per rollout (clipped ratio)")
p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the updates (stops early)")
p.add_argument("--prediction-weight", type=float, default=0.1)
p.add_argument("--warmup", type=int, default=0, help="format warm-up updates (constrained, imitated) before GRPO")
p.add_argument("--no-reask", action="store_true", help="no re-ask in training games (halves a failing turn's cost)")
p.add_argument("--skip-base", action="store_true", help="do not evaluate the base model at the end")
p.add_argument("--max-new-tokens", type=int, default=48)
p.add_argument("--max-samples", type=int, default=32)
p.add_argument("--eval-games", type=int, default=128)
p.add_argument(
    "--nash-conv", type=int, default=1, help="log NashConv at each evaluation (answers per state if sampled; 0 = off)"
)
p.add_argument("--threads", type=int, default=None)
p.add_argument("--output-dir", default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--resume", action="store_true")
p.add_argument("--smoke", action="store_true", help="tiny budget: 2 updates of 4 games")
args = p.parse_args()

if args.smoke:
    args.steps, args.games_per_update, args.group_size, args.max_samples, args.eval_games = 2, 4, 2, 8, 4
    args.max_new_tokens = 32
output_dir = args.output_dir or f"runs/train/kuhn{'-smoke' if args.smoke else ''}"
if args.smoke and not args.resume:
    shutil.rmtree(output_dir, ignore_errors=True)

# ---- the run: one learner against one fixed opponent, seats alternating by group --------------------------------
cfg = TrainConfig(
    env="kuhn_poker",
    model=args.model,
    setting="fixed_opponents",
    learners=[{"name": "kuhn"}],
    opponents=[args.opponent],
    games_per_update=args.games_per_update,
    group_size=args.group_size,
    max_samples_per_learner=args.max_samples,
    rewards={"game": 1.0, "format": 1.0, "prediction": args.prediction_weight},
    learning_rate=args.lr,
    time_budget_minutes=args.minutes,
    grpo={"credit": args.credit, "steps_per_update": args.steps_per_update, "warmup_updates": args.warmup},
    reask=not args.no_reask,
    steps=args.steps,
    max_new_tokens=args.max_new_tokens,
    micro_batch_size=8,
    output_dir=output_dir,
    save_every=5,
    eval_every=20,
    eval_games=args.eval_games,  # against the training opponent, greedy
    eval_nash_conv=args.nash_conv,  # the learner's exploitability, read at the 12 information states
    threads=args.threads,
    seed=args.seed,
)

# ---- training and the final evaluation ------------------------------------------------------------------------
trainer = MultiAgentGRPO(cfg)
if args.resume and trainer.resume():
    print(f"resumed at update {trainer.step}")
results = trainer.train()
rows = {lineup: by_agent["kuhn"] for lineup, by_agent in results.items()}

# ---- the base model in the same evaluation games (same deals, same seats), for comparison ------------------------
if not args.skip_base and rows:
    rows.update(trainer.compare("kuhn", [trainer.eval_spec("base")]))
for label, m in rows.items():
    print(format_metrics(label, m))
print(f"adapter and manifest.json: {cfg.adapters_path}")
