"""Train a speaker and a listener (two adapters, one rollout) on the cooperative signal game ``signal_v0``.

The speaker sees a secret color and may send the listener a short message; the listener must pick the color.
Both get +1 for a right pick. Without messages the listener can only guess (1 / num_items), so the gap between
this run and its ``--no-messages`` ablation is what communication is worth.

    python scripts/train_signal.py                  # with messages
    python scripts/train_signal.py --no-messages    # ablation: talk off
    python scripts/train_signal.py --constrained --steps 6 --games-per-update 16 --max-new-tokens 64
                                                    # under the turn grammar (add --no-messages for the ablation)
    python scripts/train_signal.py --vocabulary colors   # one-word messages (a Lewis signalling channel)
    python scripts/train_signal.py --vocabulary colors --teach 4
                                                    # first teach the listener with a scripted truthful speaker
    python scripts/train_signal.py --vocabulary colors --teach 4 --freeze-listener
                                                    # ... then train only the speaker, to that listener
    python scripts/train_signal.py --smoke          # tiny budget
    python scripts/train_signal.py --set env_kwargs.num_items=3     # any key of configs/train_signal.yaml

Both agents start at chance, and each can only learn as fast as the other becomes reliable. ``--teach N`` breaks
that deadlock the way a child learns words from an adult: N updates train the listener alone, its teammate the
scripted ``signal_truthful`` speaker (it names the goal); the listener's adapter then starts the main run, where
both learn together (or, with ``--freeze-listener``, only the speaker). The team evaluated at the end is the two
adapters, no scripted agent in it.

With messages on, the trained team is evaluated twice on the same games: as trained, and with its messages
switched off (the listener then hears nothing), which measures what the messages carry.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from llmmarl.train.monitors import format_metrics
from llmmarl.train.script_args import Alias, ScriptParser

# The run: two learners on one team, pinned to their roles. Flags and --set change it; --no-messages is the run of
# configs/train_signal_no_messages.yaml.
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train_signal.yaml"
# The teaching stage plays the same games with the same optimisation; these keys are the main run's alone.
MAIN_ONLY = (
    "setting", "learners", "opponents", "rewards", "steps", "time_budget_minutes", "micro_batch_size", "output_dir",
    "save_every", "eval_every", "eval_games",
)  # fmt: skip
#: What --no-messages changes in the config (a test checks that it gives train_signal_no_messages.yaml).
SILENT = {"env_kwargs.talk": False, "rewards.message": 0.0, "output_dir": "runs/train/signal_no_messages"}

p = ScriptParser(
    __doc__,
    CONFIG,
    aliases=[
        Alias("--num-items", "env_kwargs.num_items", type=int, help="Colors to choose from."),
        Alias(
            "--vocabulary",
            "env_kwargs.vocabulary",
            choices=["free", "colors", "symbols"],
            help="Messages: free text, or one word of a closed vocabulary (color names, or letters with no prior "
            "meaning).",
        ),
        *["--model", "--steps", "--games-per-update", "--group-size", "--lr", "--steps-per-update", "--minutes"],
        *["--message-cost", "--max-new-tokens", "--constrained", "--prediction-weight", "--eval-games"],
        *["--threads", "--seed"],
    ],
    smoke={"eval_games": 4},
)
p.add_argument("--no-messages", action="store_true", help="ablation: the speaker cannot talk")
p.add_argument("--teach", type=int, default=0, help="updates of the listener with a scripted truthful speaker first")
p.add_argument(
    "--freeze-listener",
    action="store_true",
    help="with --teach: the taught listener stops learning; only the speaker learns to talk to it",
)
args = p.parse_args()

if args.teach and args.no_messages:
    p.error("--teach needs messages: the scripted speaker teaches by talking")
if args.freeze_listener and not args.teach:
    p.error("--freeze-listener freezes the listener taught by --teach N: add --teach")
tag = "signal_no_messages" if args.no_messages else "signal"
run = p.config(args, SILENT if args.no_messages else {})

# ---- optional first stage: the listener learns to read a scripted speaker that tells the truth --------------------
# Both stages play the same games with the same optimisation; they differ in who learns, rewards and budget.
speaker, listener = (next(lr for lr in run["learners"] if lr["name"] == name) for name in ("speaker", "listener"))
if args.teach:
    teach = p.validate(
        {
            **{k: v for k, v in run.items() if k not in MAIN_ONLY},
            "setting": "fixed_opponents",  # "opponent" in the config's sense: an agent that does not learn
            "learners": [listener],
            "opponents": ["signal_truthful"],  # takes the other seat: the speaker
            "rewards": {"game": 1.0, "format": 1.0},
            "steps": args.teach,
            "output_dir": f"{run['output_dir']}/teach",
            "eval_games": run["eval_games"] // 2,  # the listener with its teacher, greedy
        }
    )
    taught = teach.adapters_path / "listener"
    if not (taught / "adapter_config.json").exists():
        teacher = p.train(teach, resume=args.resume)
        for lineup, by_agent in teacher.state.eval_results.items():
            print(f"listener taught by signal_truthful [{lineup}]:")
            for agent, m in by_agent.items():
                print("  " + format_metrics(agent, m))
        if teach.eval_games:  # the untaught listener with the same teacher, in the same games: what teaching added
            with closing(teacher):  # the comparison starts the rollout engine again
                for lineup, m in teacher.evaluator.compare("listener", [teacher.evaluator.spec("base")]).items():
                    print(f"the base model as listener [{lineup}]:")
                    print("  " + format_metrics("base", m))
        del teacher  # its model copy, before the main stage loads another
    listener["init_adapter"] = str(taught)
    if args.freeze_listener:  # the speaker alone learns, the taught listener its fixed teammate
        run.update(setting="fixed_opponents", learners=[speaker], opponents=[f"llm@{taught}"])
cfg = p.validate(run)

# ---- training and the final evaluation: the library's run (refuses a used folder unless --resume) -----------------
trainer = p.train(cfg, resume=args.resume)
chance = 1 / cfg.env_kwargs["num_items"]
for lineup, by_agent in trainer.state.eval_results.items():
    print(f"{tag} [{lineup}] (chance {chance:.3f}):")
    for agent, m in by_agent.items():  # the speaker's prediction is of the listener's pick: chance is 1 / num_items
        print("  " + format_metrics(agent, m))
with closing(trainer):  # the evaluations below start the rollout engine again
    if not args.no_messages and cfg.eval_games:
        # The same trained team on the same games with its messages switched off: what the messages carry.
        silent = trainer.evaluator.evaluate(env_overrides={"talk": False})
        for lineup, by_agent in silent.items():
            print(f"{tag}, messages switched off [{lineup}]:")
            for agent, m in by_agent.items():
                print("  " + format_metrics(agent, m))
    if args.freeze_listener and cfg.eval_games:
        # The untrained speaker with the same listener, in the same games: what training the speaker added.
        for lineup, m in trainer.evaluator.compare("speaker", [trainer.evaluator.spec("base")]).items():
            print(f"{tag}, the base model as speaker [{lineup}]:")
            print("  " + format_metrics("base", m))
print(f"adapters in {cfg.adapters_path}" + (f", the listener's in {taught}" if args.freeze_listener else ""))
