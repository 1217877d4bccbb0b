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
    python scripts/train_tictactoe_selfplay.py --set temperature=0.8      # any key of configs/train_tictactoe.yaml
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from llmmarl.agents.specs import ScriptedAgentSpec
from llmmarl.train import trainer_class
from llmmarl.train.monitors import format_metrics, separated
from llmmarl.train.script_args import ScriptParser

# The run: one learner, its own LoRA adapter, against a random player. Flags and --set change it.
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_tictactoe.yaml"
#: What --opponent self changes in the config.
SELF_PLAY = {
    "setting": "self_play",
    "learners": [{"name": "ttt_self"}],
    "opponents": [],
    "output_dir": "runs/train/ttt_self",
}

p = ScriptParser(
    __doc__,
    CONFIG,
    aliases="--model --steps --games-per-update --group-size --credit --lr --steps-per-update --minutes --warmup "
    "--no-reask --constrained --max-new-tokens --max-samples --eval-games --threads --seed",
    smoke={"max_samples_per_learner": 8, "eval_games": 8},
)
p.add_argument("--opponent", choices=["random", "self"], default="random", help="train against random, or self-play")
p.add_argument("--skip-base", action="store_true", help="do not evaluate the base model at the end")
p.add_argument(
    "--eval-only",
    action="store_true",
    help="no training: evaluate the newest checkpoint in --output-dir (and the base model) on --eval-games games",
)
args = p.parse_args()

name = "ttt_self" if args.opponent == "self" else "ttt"
cfg = p.validate(p.config(args, SELF_PLAY if args.opponent == "self" else {}))

# ---- training (the library's run, which ends with the evaluation of the adapter against random) ------------------
start = time.perf_counter()
if args.eval_only:
    trainer = trainer_class(cfg.algorithm)(cfg)
    if not trainer.checkpointer.resume():
        raise SystemExit(f"--eval-only: no checkpoint in {cfg.output_dir} to evaluate")
    print(f"resumed at update {trainer.state.step}")
    results = trainer.evaluator.evaluate()
else:
    trainer = p.train(cfg, resume=args.resume)  # refuses a used folder unless --resume
    results = trainer.state.eval_results
elapsed = time.perf_counter() - start
print(
    f"{trainer.state.step} updates ({trainer.state.train_seconds / 60:.1f} min of updates), "
    f"this run {elapsed / 60:.1f} min with evaluation; adapter: {cfg.adapters_path / name}"
)

with closing(trainer):  # the evaluations below run on the rollout engine: stop it after them
    # ---- random in the adapter's seat on the same games: the bar that "beats random" is measured against ----------
    trained = results[f"{name} vs random"][name]
    random_seat = ScriptedAgentSpec(name="random-seat", policy="random")
    chance = trainer.evaluator.compare(name, [random_seat])["random-seat vs random"]
    rows = {f"{name} vs random": trained, "random-seat vs random": chance}

    # ---- the base model on the same games (same seeds, same seats), for comparison --------------------------------
    # Under --constrained the adapter plays with the grammar, so the base model is measured with it too (a like-for-like
    # comparison of play), and both are also measured without it (has the adapter learned the format on its own?).
    free = {"constrained": False}
    # decoded as the adapter's evaluation: greedy, the run's grammar and re-ask
    stand_ins = [trainer.evaluator.spec("base")]
    if cfg.constrained:
        stand_ins += [
            trainer.evaluator.spec(f"{name}-free", name).model_copy(update=free),
            trainer.evaluator.spec("base-free").model_copy(update=free),
        ]
    if not args.skip_base:
        rows.update(trainer.evaluator.compare(name, stand_ins))
for label, m in rows.items():
    print(format_metrics(f"{label:>20}", m))
print(f"trained beats random with non-overlapping 95% CIs: {separated(trained, chance)}")
if args.skip_base:
    raise SystemExit(0)
base = rows["base vs random"]
free = rows.get(f"{name}-free vs random", trained)  # the adapter without the grammar
grammar = " (both with the grammar)" if cfg.constrained else ""
print(f"trained beats base with non-overlapping 95% CIs{grammar}: {separated(trained, base)}")
print(f"invalid < 5% without the grammar: {free['invalid_rate'] < 0.05}")
