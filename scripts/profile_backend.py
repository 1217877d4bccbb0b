"""Prefill + generation time of a realistic batch with the shared-prefix KV cache off vs on, in one process.

The batch is what the runner really sends: the prompts of LLM-vs-random games (both seats, various boards),
collected by playing the games with a canned backend, then answered by the real model, greedily (so both settings
decode the same tokens) with ``--max-new-tokens`` each. Three settings, interleaved per repeat so that load from
other processes hits them alike:

* ``off``: ``prefix_cache=False`` - every row prefills its whole prompt (the previous behaviour);
* ``on, cold``: prefix cache on but emptied before the call - the batch's common prefix is computed once;
* ``on, warm``: the cache kept from the previous call - the system prompt is not computed at all.

    python scripts/profile_backend.py                      # 32 tictactoe prompts, SmolLM2-135M, 1 thread
    python scripts/profile_backend.py --play 8             # also: Runner.play of 8 games per setting
    python scripts/profile_backend.py --max-new-tokens 1   # prefill only

Prints the seconds of each setting and the ratios off / on.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Sequence

import torch

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import Generation, GenerationRequest, word_truncate
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.envs import make
from llmmarl.runner import Match, Runner, seatings


class _Recorder:
    """A stand-in backend that answers the lowest legal action and keeps every request the runner makes."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            legal = re.search(r"Legal actions: (.*)", r.messages[-1]["content"])
            action = legal.group(1).split(", ")[0] if legal else "1"
            out.append(
                Generation(
                    text=f"PLAN: ok\nACTION: {action}",
                    prompt_ids=[],
                    completion_ids=[],
                    logprobs=[],
                    finish_reason="stop",
                )
            )
        return out

    def truncate(self, text: str, max_tokens: int) -> str:
        return word_truncate(text, max_tokens)

    @property
    def adapters(self) -> list[str]:
        return []


def _matches(env_name: str, games: int, max_new_tokens: int) -> list[Match]:
    llm = LLMAgentSpec(name="llm", max_new_tokens=max_new_tokens, temperature=0.0, reask=False)
    rnd = ScriptedAgentSpec(name="random", policy="random")
    env = make(env_name)
    return [Match(game_id=i, env=env_name, seats=s, seed=i) for i, s in enumerate(seatings(env, [llm, rnd], games))]


def runner_prompts(env_name: str, n: int, max_new_tokens: int) -> list[GenerationRequest]:
    """``n`` requests exactly as the runner builds them (templates, observations, both seats, several turns)."""
    rec = _Recorder()
    Runner(rec, concurrency=n, progress=False).play(_matches(env_name, n, 64))  # the budget is set below
    reqs = rec.requests
    step = max(1, len(reqs) // n)
    return [r.model_copy(update={"max_new_tokens": max_new_tokens, "temperature": 0.0}) for r in reqs[::step][:n]]


def timed(backend: TransformersBackend, reqs: list[GenerationRequest], cache: bool, cold: bool):
    backend.prefix_cache = cache
    if cold:
        backend.clear_prefix_cache()
    backend.stats.clear()
    start, cpu = time.perf_counter(), time.process_time()
    gens = backend.generate(reqs)
    return time.perf_counter() - start, time.process_time() - cpu, gens, dict(backend.stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--env", default="tictactoe_v3")
    ap.add_argument("--batch", type=int, default=32, help="prompts in the batch")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats of the three settings (min is kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared CPU)")
    ap.add_argument("--play", type=int, default=0, help="also time Runner.play of this many games per setting")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    backend = TransformersBackend(args.model, max_batch_size=max(args.batch, 1), dtype="float32", seed=0)
    reqs = runner_prompts(args.env, args.batch, args.max_new_tokens)
    lengths = [len(backend.prompt_ids(r)) for r in reqs]
    system = len(backend.tokenizer.apply_chat_template(reqs[0].messages[:1], tokenize=True)["input_ids"])
    print(
        f"{args.model} on {args.env}: {len(reqs)} prompts of {min(lengths)}-{max(lengths)} tokens "
        f"(mean {statistics.mean(lengths):.0f}; system message {system}), {args.max_new_tokens} new tokens each, "
        f"{args.threads} thread(s)"
    )
    backend.generate(reqs[:2])  # warm-up: first-call allocations, lazy imports

    settings = {"off": (False, True), "on, cold": (True, True), "on, warm": (True, False)}
    times: dict[str, list[float]] = {k: [] for k in settings}
    cpu_times: dict[str, list[float]] = {k: [] for k in settings}
    answers: dict[str, list[list[int]]] = {}
    for _ in range(args.repeats):
        for name, (cache, cold) in settings.items():
            seconds, cpu, gens, stats = timed(backend, reqs, cache, cold)
            times[name].append(seconds)
            cpu_times[name].append(cpu)
            answers[name] = [g.completion_ids for g in gens]
            computed = stats.get("prefix_tokens_computed", 0)
            suffix = stats["prompt_tokens"] - stats.get("prefix_shared_tokens", 0)
            print(
                f"  {name:9s} {seconds:6.1f} s wall, {cpu:6.1f} s CPU, prompt tokens prefilled: {suffix + computed:5d} "
                f"(of {stats['prompt_tokens']}), generated {stats['generated_tokens']}"
            )
    same = sum(a == b for a, b in zip(answers["off"], answers["on, cold"], strict=True))
    print(f"identical greedy answers off vs on: {same}/{len(reqs)}")
    for label, t in (("wall", times), ("CPU", cpu_times)):  # CPU time is steadier when other jobs share the cores
        best = {k: min(v) for k, v in t.items()}
        print(
            f"ratio off / on, {label} time (best of {args.repeats}): {best['off'] / best['on, cold']:.2f}x cold cache, "
            f"{best['off'] / best['on, warm']:.2f}x warm cache"
        )

    if args.play:
        elapsed, cpu_elapsed, moves = {}, {}, {}
        for cache in (False, True):
            backend.prefix_cache = cache
            backend.clear_prefix_cache()
            start, cpu = time.perf_counter(), time.process_time()
            episodes = Runner(backend, concurrency=args.play, progress=False).play(
                _matches(args.env, args.play, args.max_new_tokens)
            )
            elapsed[cache], cpu_elapsed[cache] = time.perf_counter() - start, time.process_time() - cpu
            moves[cache] = sorted((e.game_id, t.step, t.seat, t.action) for e in episodes for t in e.turns)
            print(
                f"  Runner.play, {args.play} games llm vs random, prefix cache {'on ' if cache else 'off'}: "
                f"{elapsed[cache]:.1f} s wall, {cpu_elapsed[cache]:.1f} s CPU"
            )
        print(f"same games (greedy) off vs on: {moves[False] == moves[True]}")
        print(
            f"ratio off / on (Runner.play): {elapsed[False] / elapsed[True]:.2f}x wall, "
            f"{cpu_elapsed[False] / cpu_elapsed[True]:.2f}x CPU"
        )


if __name__ == "__main__":
    main()
