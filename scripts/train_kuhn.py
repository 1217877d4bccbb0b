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
    python scripts/train_kuhn.py --set grpo.credit=role               # any key of configs/train_kuhn.yaml
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from llmmarl.train.monitors import format_metrics
from llmmarl.train.script_args import ScriptParser

# The run: one learner against one fixed opponent, seats alternating by group. Flags and --set change it.
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_kuhn.yaml"

p = ScriptParser(
    __doc__,
    CONFIG,
    aliases="--model --steps --games-per-update --group-size --credit --lr --steps-per-update --minutes "
    "--prediction-weight --warmup --no-reask --max-new-tokens --max-samples --eval-games --threads --seed",
    smoke={"max_samples_per_learner": 8, "eval_games": 4},
)
p.add_argument("--opponent", help="scripted policy name or llm@ADAPTER_FOLDER (default: the config's opponents)")
p.add_argument(
    "--nash-conv",
    type=int,
    metavar="N",
    help="NashConv at each evaluation from N answers per state when sampled (greedy reads one); 0 = off",
)
p.add_argument("--skip-base", action="store_true", help="do not evaluate the base model at the end")
args = p.parse_args()
changes: dict[str, object] = {"opponents": [args.opponent]} if args.opponent else {}
if args.nash_conv is not None:
    if args.nash_conv < 0:
        p.error("--nash-conv must be >= 0")
    changes |= {
        "eval_measures": ["nash_conv"] if args.nash_conv else [],
        "eval_measure_samples": max(1, args.nash_conv),
    }
cfg = p.validate(p.config(args, changes))

# ---- training and the final evaluation: the library's run (refuses a used folder unless --resume) -----------------
trainer = p.train(cfg, resume=args.resume)
rows = {lineup: by_agent["kuhn"] for lineup, by_agent in trainer.state.eval_results.items()}

# ---- the base model in the same evaluation games (same deals, same seats), for comparison ------------------------
if not args.skip_base and rows:
    with closing(trainer):  # the comparison starts the rollout engine again
        rows.update(trainer.evaluator.compare("kuhn", [trainer.evaluator.spec("base")]))
for label, m in rows.items():
    print(format_metrics(label, m))
print(f"adapter and manifest.json: {cfg.adapters_path}")
