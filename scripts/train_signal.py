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

Both agents start at chance, and each can only learn as fast as the other becomes reliable. ``--teach N`` breaks
that deadlock the way a child learns words from an adult: N updates train the listener alone, its teammate the
scripted ``signal_truthful`` speaker (it names the goal); the listener's adapter then starts the main run, where
both learn together (or, with ``--freeze-listener``, only the speaker). The team evaluated at the end is the two
adapters, no scripted agent in it.

With messages on, the trained team is evaluated twice on the same games: as trained, and with its messages
switched off (the listener then hears nothing), which measures what the messages carry.
"""

from __future__ import annotations

import argparse
import shutil

from llmmarl.train.config import TrainConfig
from llmmarl.train.grpo import MultiAgentGRPO
from llmmarl.train.loop import format_metrics

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--no-messages", action="store_true", help="ablation: the speaker cannot talk")
p.add_argument("--num-items", type=int, default=4, help="colors to choose from")
p.add_argument(
    "--vocabulary",
    choices=["free", "colors", "symbols"],
    default="free",
    help="messages: free text, or one word of a closed vocabulary (color names, or letters with no prior meaning)",
)
p.add_argument("--model", default="default")
p.add_argument("--steps", type=int, default=60)
p.add_argument("--games-per-update", type=int, default=32)
p.add_argument("--group-size", type=int, default=4)
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--steps-per-update", type=int, default=1, help="optimizer steps per rollout (clipped ratio)")
p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the updates (stops early)")
p.add_argument("--message-cost", type=float, default=0.0, help="weight of the -1-per-message reward term")
p.add_argument("--max-new-tokens", type=int, default=48)
p.add_argument("--constrained", action="store_true", help="grammar-constrained answers in training and evaluation")
p.add_argument("--prediction-weight", type=float, default=0.0, help="reward for predicting the partner's action")
p.add_argument("--eval-games", type=int, default=64)
p.add_argument("--teach", type=int, default=0, help="updates of the listener with a scripted truthful speaker first")
p.add_argument(
    "--freeze-listener",
    action="store_true",
    help="with --teach: the taught listener stops learning; only the speaker learns to talk to it",
)
p.add_argument("--threads", type=int, default=None)
p.add_argument("--output-dir", default=None)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--resume", action="store_true")
p.add_argument("--smoke", action="store_true", help="tiny budget: 2 updates of 4 games")
args = p.parse_args()

if args.teach and args.no_messages:
    p.error("--teach needs messages: the scripted speaker teaches by talking")
if args.freeze_listener and not args.teach:
    p.error("--freeze-listener freezes the listener taught by --teach N: add --teach")
if args.smoke:
    args.steps, args.games_per_update, args.group_size, args.eval_games, args.max_new_tokens = 2, 4, 2, 4, 32
tag = "signal_no_messages" if args.no_messages else "signal"
output_dir = args.output_dir or f"runs/train/{tag}{'-smoke' if args.smoke else ''}"
if args.smoke and not args.resume:
    shutil.rmtree(output_dir, ignore_errors=True)


# ---- optional first stage: the listener learns to read a scripted speaker that tells the truth --------------------
# Both stages play the same games with the same optimisation; they differ in who learns, rewards and budget.
shared = dict(
    env="signal_v0",
    env_kwargs={"num_items": args.num_items, "rounds": 1, "talk": not args.no_messages, "vocabulary": args.vocabulary},
    model=args.model,
    games_per_update=args.games_per_update,
    group_size=args.group_size,
    constrained=args.constrained,
    learning_rate=args.lr,
    grpo={"credit": "role", "steps_per_update": args.steps_per_update},
    max_new_tokens=args.max_new_tokens,
    threads=args.threads,
    seed=args.seed,
)
listener: dict = {"name": "listener", "seats": ["listener_0"]}
if args.teach:
    teach = TrainConfig(
        **shared,
        setting="fixed_opponents",  # "opponent" in the config's sense: an agent that does not learn
        learners=[listener],
        opponents=["signal_truthful"],  # takes the other seat: the speaker
        rewards={"game": 1.0, "format": 1.0},
        steps=args.teach,
        output_dir=f"{output_dir}/teach",
        eval_games=args.eval_games // 2,  # the listener with its teacher, greedy
    )
    taught = teach.adapters_path / "listener"
    if not (taught / "adapter_config.json").exists():
        teacher = MultiAgentGRPO(teach)
        if args.resume and teacher.resume():
            print(f"teaching resumed at update {teacher.step}")
        for lineup, by_agent in teacher.train().items():
            print(f"listener taught by signal_truthful [{lineup}]:")
            for agent, m in by_agent.items():
                print("  " + format_metrics(agent, m))
        if teach.eval_games:  # the untaught listener with the same teacher, in the same games: what teaching added
            for lineup, m in teacher.compare("listener", [teacher.eval_spec("base")]).items():
                print(f"the base model as listener [{lineup}]:")
                print("  " + format_metrics("base", m))
        del teacher  # its model copy, before the main stage loads another
    listener = {**listener, "init_adapter": str(taught)}

# ---- the run: two learners on one team, pinned to their roles (or the speaker alone, with the taught listener) ----
speaker = {"name": "speaker", "seats": ["speaker_0"]}
cfg = TrainConfig(
    **shared,
    setting="fixed_opponents" if args.freeze_listener else "team",
    learners=[speaker] if args.freeze_listener else [speaker, listener],
    opponents=[f"llm@{listener['init_adapter']}"] if args.freeze_listener else [],
    rewards={
        "game": 1.0,
        "format": 1.0,
        "message": 0.0 if args.no_messages else args.message_cost,
        "prediction": args.prediction_weight,
    },
    time_budget_minutes=args.minutes,
    steps=args.steps,
    micro_batch_size=8,
    output_dir=output_dir,
    save_every=5,
    eval_every=20,
    eval_games=args.eval_games,  # the team itself, greedy
)

# ---- training and the final evaluation ------------------------------------------------------------------------
trainer = MultiAgentGRPO(cfg)
if args.resume and trainer.resume():
    print(f"resumed at update {trainer.step}")
results = trainer.train()
chance = 1 / args.num_items
for lineup, by_agent in results.items():
    print(f"{tag} [{lineup}] (chance {chance:.3f}):")
    for agent, m in by_agent.items():  # the speaker's prediction is of the listener's pick: chance is 1 / num_items
        print("  " + format_metrics(agent, m))
if not args.no_messages and args.eval_games:
    # The same trained team on the same games with its messages switched off: what the messages carry.
    silent = trainer.evaluate(env_overrides={"talk": False})
    for lineup, by_agent in silent.items():
        print(f"{tag}, messages switched off [{lineup}]:")
        for agent, m in by_agent.items():
            print("  " + format_metrics(agent, m))
if args.freeze_listener and args.eval_games:
    # The untrained speaker with the same listener, in the same games: what training the speaker added.
    for lineup, m in trainer.compare("speaker", [trainer.eval_spec("base")]).items():
        print(f"{tag}, the base model as speaker [{lineup}]:")
        print("  " + format_metrics("base", m))
print(f"adapters in {cfg.adapters_path}" + (f", the listener's in {taught}" if args.freeze_listener else ""))
