"""Rollout throughput: the batched runner vs a one-decision-at-a-time loop vs raw batched `generate`.

All three use the same model, prompts and decoding settings in one process, so the printed ratios compare like
with like:

* **runner**: ``Runner(concurrency=N)`` - every pending decision of N games in one backend call per round;
* **one-at-a-time**: the same runner with one game in flight, i.e. one ``generate`` call per decision, the way
  TextArena-style loops play;
* **raw ceiling**: plain ``model.generate`` on the runner's own prompts, batched exactly like the runner's
  calls, with no games, parsing or records around it.

    python scripts/bench_rollout.py --concurrency 1 8 32 128 --out benchmarks/rollout.json

Writes a JSON of the figures and, with --plot, a PNG of throughput vs concurrent games.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.benchmarking import machine_info, timed_games


def play(backend: TransformersBackend, games: int, concurrency: int, args: argparse.Namespace) -> dict:
    llm = LLMAgentSpec(name="llm", max_new_tokens=args.max_new_tokens, temperature=1.0, reask=False)
    return timed_games(backend, args.env, llm, games, concurrency)


@torch.inference_mode()
def raw_generate(backend: TransformersBackend, episodes: list, args: argparse.Namespace) -> dict:
    """Re-generate the runner's prompts with plain batched `generate`, grouped into the runner's rounds."""
    rounds: dict[int, list[list[int]]] = {}
    for e in episodes:
        for t in e.turns:
            if t.attempts:
                rounds.setdefault(t.step, []).append(t.attempts[0].prompt_ids)
    tok = backend.tokenizer
    tokens = 0
    start = time.perf_counter()
    for prompts in rounds.values():
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        out = backend.model.generate(
            input_ids=ids.to(backend.device),
            attention_mask=mask.to(backend.device),
            max_new_tokens=args.max_new_tokens,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            pad_token_id=tok.pad_token_id,
        )
        new = out[:, width:]
        for row in new.tolist():
            tokens += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "tokens": tokens, "tokens_per_s": tokens / elapsed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--env", default="tictactoe_v3")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--sequential-games", type=int, default=4, help="games for the one-at-a-time loop")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("benchmarks/rollout.json"))
    p.add_argument("--plot", type=Path, default=Path("benchmarks/rollout.png"))
    args = p.parse_args()

    backend = TransformersBackend(args.model, max_batch_size=max(args.concurrency), seed=0)
    play(backend, 2, 2, args)  # warm-up: first-call allocations and kernel selection
    seq = play(backend, args.sequential_games, 1, args)
    print(f"one-at-a-time: {seq['decisions_per_s']:.2f} decisions/s, {seq['tokens_per_s']:.1f} tok/s")
    rows = []
    for n in args.concurrency:
        res = play(backend, n, n, args)
        raw = raw_generate(backend, res.pop("episodes"), args)
        row = {
            "concurrent_games": n,
            "runner": res,
            "raw_generate": raw,
            "speedup_vs_one_at_a_time": res["decisions_per_s"] / seq["decisions_per_s"],
            "fraction_of_raw_ceiling": res["tokens_per_s"] / raw["tokens_per_s"],
        }
        rows.append(row)
        print(
            f"N={n:4d}: runner {res['decisions_per_s']:7.2f} decisions/s {res['tokens_per_s']:7.1f} tok/s | "
            f"raw generate {raw['tokens_per_s']:7.1f} tok/s | x{row['speedup_vs_one_at_a_time']:.1f} vs one-at-a-time,"
            f" {row['fraction_of_raw_ceiling']:.2f} of raw ceiling"
        )
    seq.pop("episodes")
    report = {
        "machine": machine_info(backend.device),
        "model": args.model,
        "env": args.env,
        "max_new_tokens": args.max_new_tokens,
        "one_at_a_time": seq,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xs = [r["concurrent_games"] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(xs, [r["runner"]["tokens_per_s"] for r in rows], "o-", label="llmmarl runner")
        ax.plot(xs, [r["raw_generate"]["tokens_per_s"] for r in rows], "s--", label="raw batched generate")
        ax.axhline(seq["tokens_per_s"], color="gray", ls=":", label="one decision at a time")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent games")
        ax.set_ylabel("generated tokens / s")
        ax.set_title(f"{args.model} on {backend.device}, {args.env}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
