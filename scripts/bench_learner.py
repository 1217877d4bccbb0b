"""Learner throughput: samples/s and tokens/s of one GRPO and one PPO update, full rows vs the shared prompt prefix.

The learner's cost is its tokens (see the learner notes in docs/training.md): a Kuhn poker full turn is a ~300-token
prompt and a ~30-token answer, and most of the prompt is the same for every sample (system prompt, rules, turn
format). ``shared_prefix: true`` computes what a micro-batch's samples share once (see
:mod:`llmmarl.train.logprobs`); ``false`` runs every row in full, as before. This script times both on the same
samples, in one process, on the same model and adapter:

* **samples**: real turns, played by the learner (grammar-constrained, so answers are well-formed and of realistic
  length) against a random player, turned into samples exactly as a training update does. Per game, two prompt
  styles: the full turn (the default lines: PLAN/PREDICT/...) and ACTION only (``lines: []``).
* **grpo**: ``AgentGRPOTrainer.update(samples, micro_batch)``: TRL's training step per micro-batch (its loss, our
  log-probs), one optimizer step.
* **ppo**: ``MultiAgentPPO.learn(learner, samples)`` with ``--ppo-epochs`` x ``--ppo-minibatches`` steps: the
  critic's values, GAE, the no-grad scoring pass, actor and critic steps. The critic reads its own input (not the
  prompt) and is not changed by the setting, so PPO's ratio is lower than GRPO's.

Each update is run once untimed per path (warm-up), then ``--rounds`` times per path, the order alternating per
round so that a machine whose load drifts favours neither; medians are reported. tokens/s counts the samples' real
tokens (prompt + answer) per second; ``model_positions`` counts the token positions each path fed the model in one
update (padding included; PPO's include the critic's passes).

    OMP_NUM_THREADS=1 python scripts/bench_learner.py --out benchmarks/learner.json
    python scripts/bench_learner.py --model tiny --samples 4 --micro-batch 4 --rounds 1   # smoke

Target: at least 3x GRPO learner samples/s on Kuhn prompts on a 2-core CPU with one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from llmmarl.benchmarking import machine_info
from llmmarl.records import EpisodeRecord
from llmmarl.train.advantages import group_relative
from llmmarl.train.config import TrainConfig
from llmmarl.train.grpo import MultiAgentGRPO
from llmmarl.train.ppo import MultiAgentPPO
from llmmarl.train.samples import TurnSample, episodes_to_samples

LEARNER = "learner"
TURNS = {"full": None, "action": []}  # the config's lines: default (full turn) or ACTION only


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="default (SmolLM2-135M-Instruct), tiny, or a folder")
    p.add_argument("--envs", default="kuhn_poker,tictactoe_v3")
    p.add_argument("--turns", default="full,action", help="prompt styles: full (default lines), action (ACTION only)")
    p.add_argument("--algorithms", default="grpo,ppo")
    p.add_argument("--samples", type=int, default=16, help="samples per update")
    p.add_argument("--games", type=int, default=None, help="games of the rollout (default: --samples)")
    p.add_argument("--micro-batch", type=int, default=8, help="micro_batch_size (the config's default is 8)")
    p.add_argument("--rounds", type=int, default=1, help="timed updates per path (after one warm-up each)")
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--ppo-minibatches", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace, env: str, turn: str, algorithm: str, out: Path) -> TrainConfig:
    lines = TURNS[turn]
    return TrainConfig.model_validate(
        {
            "env": env,
            "model": args.model,
            "algorithm": algorithm,
            "setting": "fixed_opponents",
            "learners": [{"name": LEARNER}],
            "opponents": ["random"],
            "games_per_update": args.games or args.samples,
            "group_size": 1,
            **({"grpo": {"credit": "role"}} if algorithm == "grpo" else {}),
            **(
                {"ppo": {"ppo_epochs": args.ppo_epochs, "minibatches": args.ppo_minibatches}}
                if algorithm == "ppo"
                else {}
            ),
            **({"lines": lines} if lines is not None else {}),
            "constrained": True,  # well-formed answers of realistic length, whatever the adapter
            "max_new_tokens": args.max_new_tokens,
            "micro_batch_size": args.micro_batch,
            "learning_rate": 1e-5,
            "eval_games": 0,
            "threads": args.threads,
            "seed": args.seed,
            "output_dir": str(out / f"{env}-{turn}-{algorithm}"),
        }
    )


def play(grpo: MultiAgentGRPO, n: int) -> tuple[list[EpisodeRecord], list[TurnSample]]:
    """One rollout of the learner; its first ``n`` samples and the games (PPO's critic reads the games)."""
    cfg = grpo.cfg
    episodes, _ = grpo.rollout()
    samples = episodes_to_samples(
        episodes, grpo.learners, cfg.rewards.as_dict(), grpo.env.forfeit_reward, cfg.group_size, cfg.train_on
    )[LEARNER]
    if len(samples) < n:
        raise RuntimeError(f"{len(episodes)} games gave {len(samples)} samples, fewer than {n}: raise --games")
    samples = samples[:n]
    group_relative(samples, "role", True)
    return episodes, samples


class PositionCounter:
    """Token positions fed to the model (every forward pass: prefix, prompts, answers, the critic's), read at the
    input embedding."""

    def __init__(self, model: Any) -> None:
        self.count = 0
        model.get_input_embeddings().register_forward_hook(self._add)

    def _add(self, module: Any, args: tuple[torch.Tensor, ...], output: Any) -> None:
        self.count += args[0].numel()


def timed(run: Callable[[], Any]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def side_by_side(
    update: Callable[[bool], Any], rounds: int, counter: PositionCounter
) -> tuple[dict[bool, list[float]], dict[str, int]]:
    """Seconds per update of each path: one warm-up each (which counts the positions fed to the model), then
    ``rounds`` each, alternating which goes first."""
    positions = {}
    for shared, name in ((False, "full"), (True, "shared_prefix")):
        counter.count = 0
        update(shared)
        positions[name] = counter.count
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for shared in (False, True) if r % 2 == 0 else (True, False):
            seconds[shared].append(timed(lambda s=shared: update(s)))
    return seconds, positions


def grpo_update(grpo: MultiAgentGRPO, samples: list[TurnSample], micro_batch: int) -> Callable[[bool], Any]:
    trainer = grpo.trainers[LEARNER]

    def update(shared: bool) -> Any:
        trainer.shared_prefix = shared
        return trainer.update(samples, micro_batch)

    return update


def ppo_update(ppo: MultiAgentPPO, episodes: list[EpisodeRecord], samples: list[TurnSample]) -> Callable[[bool], Any]:
    def update(shared: bool) -> Any:
        ppo.cfg.shared_prefix = shared
        ppo.begin_update(episodes)
        return ppo.learn(LEARNER, list(samples))

    return update


def row(seconds: dict[bool, list[float]], positions: dict[str, int], samples: Sequence[TurnSample]) -> dict[str, Any]:
    tokens = sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    out: dict[str, Any] = {"model_positions": positions}
    for shared, name in ((False, "full"), (True, "shared_prefix")):
        med = statistics.median(seconds[shared])
        out[name] = {
            "seconds": [round(x, 3) for x in seconds[shared]],
            "samples_per_s": round(len(samples) / med, 4),
            "tokens_per_s": round(tokens / med, 1),
        }
    out["ratio"] = round(out["shared_prefix"]["samples_per_s"] / out["full"]["samples_per_s"], 3)
    return out


def save(results: dict[str, Any], out: Path | None) -> None:
    """Print the newest row; rewrite ``out`` after every row, so a run stopped early keeps what it measured."""
    print(json.dumps(results["rows"][-1]), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": {}, "rows": []}
    algorithms = args.algorithms.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for env in args.envs.split(","):
            for turn in args.turns.split(","):
                grpo = MultiAgentGRPO(make_config(args, env, turn, "grpo", Path(tmp)), progress=False)
                results["machine"] = machine_info(grpo.device)
                try:
                    episodes, samples = play(grpo, args.samples)
                    base = {
                        "env": env,
                        "turn": turn,
                        "samples": len(samples),
                        "prompt_tokens_mean": round(statistics.mean(len(s.prompt_ids) for s in samples), 1),
                        "answer_tokens_mean": round(statistics.mean(len(s.completion_ids) for s in samples), 1),
                    }
                    if "grpo" in algorithms:
                        update = grpo_update(grpo, samples, args.micro_batch)
                        seconds, positions = side_by_side(update, args.rounds, PositionCounter(grpo.model))
                        results["rows"].append({**base, "algorithm": "grpo", **row(seconds, positions, samples)})
                        save(results, args.out)
                finally:
                    grpo.close()
                if "ppo" in algorithms:
                    ppo = MultiAgentPPO(make_config(args, env, turn, "ppo", Path(tmp)), progress=False)
                    try:
                        update = ppo_update(ppo, episodes, samples)
                        seconds, positions = side_by_side(update, args.rounds, PositionCounter(ppo.model))
                        results["rows"].append({**base, "algorithm": "ppo", **row(seconds, positions, samples)})
                        save(results, args.out)
                    finally:
                        ppo.close()
    print()
    print(f"{'env':<14}{'turn':<8}{'alg':<6}{'prompt':>7}{'answer':>7}{'full s/s':>10}{'shared s/s':>11}{'ratio':>7}")
    for r in results["rows"]:
        print(
            f"{r['env']:<14}{r['turn']:<8}{r['algorithm']:<6}{r['prompt_tokens_mean']:>7}{r['answer_tokens_mean']:>7}"
            f"{r['full']['samples_per_s']:>10.3f}{r['shared_prefix']['samples_per_s']:>11.3f}{r['ratio']:>7.2f}"
        )
    return results


if __name__ == "__main__":
    main()
