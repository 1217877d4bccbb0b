"""Where an update's time goes, per rollout engine: rollout, learners, adapter sync (seconds), side by side.

Runs the same small GRPO training twice, once with ``rollout_backend: transformers`` (the trainer's own model plays)
and once with ``rollout_backend: vllm`` (a vLLM server plays; every learner's adapter is published to it after each
update), then reads the ``time`` record each update writes to ``metrics.jsonl``:

* **rollout**: playing the update's games (the engine's generation, parsing, the games themselves);
* **learner**: every learner's optimizer step(s) on its samples (with vLLM: plus the no-grad pass that the
  importance correction needs);
* **sync**: after the update, what the engine needs to play with the new weights: transformers drops its cached
  prefixes; vLLM gets each adapter written to a new folder and hot-loaded under a new name, the old one unloaded.

The vLLM server's start-up (about a minute on CPU) is paid once per run and is not part of any update.

    python scripts/bench_update_breakdown.py --updates 2 --games 4 --out benchmarks/update_breakdown.json

Target: sync at most 10% of an update.
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
from pathlib import Path
from typing import Any

from llmmarl.benchmarking import machine_info
from llmmarl.train.config import TrainConfig
from llmmarl.train.grpo import MultiAgentGRPO
from llmmarl.train.metrics import read_metrics

PARTS = ("rollout_s", "learner_s", "sync_s")


def config(engine: str, args: argparse.Namespace, out: Path) -> TrainConfig:
    return TrainConfig(
        env="tictactoe_v3",
        model=args.model,
        learners=[{"name": "alice"}],
        setting="fixed_opponents",
        opponents=["random"],
        games_per_update=args.games,
        group_size=args.games,
        grpo={"credit": "role"},
        steps=args.updates,
        save_every=10_000,
        max_new_tokens=args.max_new_tokens,
        reask=False,
        eval_games=0,
        seed=args.seed,
        threads=args.threads,
        output_dir=str(out / engine),
        rollout_backend=engine,
        vllm={"kv_cache_gib": 0.5, "max_model_len": 2048},
    )


def measure(engine: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cfg = config(engine, args, out)
    t0 = time.perf_counter()
    trainer = MultiAgentGRPO(cfg, progress=False)
    try:
        trainer.train()
    finally:
        trainer.close()
    wall = time.perf_counter() - t0
    updates = [r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if r.time and r.learners]
    parts = {k: statistics.mean(getattr(r.time, k) for r in updates) for k in PARTS}
    total = sum(parts.values())
    alice = [r.learners["alice"] for r in updates if r.learners]
    return {
        "engine": engine,
        "updates": len(updates),
        "per_update_s": {**parts, "total_s": total},
        "sync_share": parts["sync_s"] / total,
        "samples_per_update": statistics.mean(m.get("samples/count", 0.0) for m in alice),
        "tokens_per_sample": statistics.mean(m.get("samples/completion_tokens", 0.0) for m in alice),
        "logprob_abs_diff": [m.get("is/logprob_abs_diff") for m in alice],
        "is_weight_min": [m.get("is/weight_min") for m in alice],
        "run_wall_s": wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--games", type=int, default=4, help="games per update (one group)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the trainer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", nargs="+", default=["transformers", "vllm"], choices=["transformers", "vllm"])
    p.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(engine, args, Path(tmp)) for engine in args.engines]
    base = rows[0]["per_update_s"]
    print(f"seconds per update (mean of {args.updates}), {args.games} games of tictactoe_v3 vs random, {args.model}")
    print(f"{'engine':<13}" + "".join(f"{k:>12}" for k in (*PARTS, "total_s")) + f"{'sync share':>12}")
    for r in rows:
        s = r["per_update_s"]
        print(
            f"{r['engine']:<13}" + "".join(f"{s[k]:>12.2f}" for k in (*PARTS, "total_s")) + f"{r['sync_share']:>12.1%}"
        )
    for r in rows[1:]:
        s = r["per_update_s"]
        ratios = "".join(f"{s[k] / base[k] if base[k] else float('nan'):>11.2f}x" for k in (*PARTS, "total_s"))
        print(f"{r['engine'] + '/' + rows[0]['engine'][:5]:<13}{ratios}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"machine": machine_info(), "args": vars(args) | {"out": str(args.out)}, "rows": rows},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
