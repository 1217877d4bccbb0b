"""NashConv of an agent in Kuhn poker, from its policy as played at the game's 12 information states.

Each state is asked through the runner exactly as in a real game (prompt, grammar, re-ask, fallback). Greedy
decoding (``--temperature 0``, the default) reads the policy exactly with one answer per state; sampling reads
``--samples`` answers per state and reports a bootstrap 95% interval. Exploitability is NashConv / 2.

    python scripts/kuhn_nashconv.py --agent random                    # 0.9167 (11/12)
    python scripts/kuhn_nashconv.py --agent kuhn_nash                 # 0
    python scripts/kuhn_nashconv.py --agent llm                       # the base model, greedy
    python scripts/kuhn_nashconv.py --agent llm --samples 8 --temperature 0.7
    python scripts/kuhn_nashconv.py --agent llm@runs/train/kuhn/adapters/kuhn --json out.json
    python scripts/kuhn_nashconv.py --agent llm --endpoint http://localhost:8000/v1   # a served model (vLLM)

Scripted agents that know their move probabilities (``random``, ``kuhn_nash``) are read exactly at the 12 states
(``read_exact``); add ``--played`` to read them through the runner instead, as an LLM agent is. An
ACTION-only LLM agent under the grammar (``--constrained --action-only``) that samples is read exactly too, from
the model's answer distribution: no sampling error, no bootstrap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from llmmarl.agents.specs import LLMAgentSpec, parse_agent
from llmmarl.backends.base import Backend
from llmmarl.envs.games.kuhn_poker.exploitability import BET, decision_points, evaluate_reading, format_result
from llmmarl.eval.policy import read_exact, read_policy

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--agent", default="llm", help="llm, llm@ADAPTER, or a scripted policy (random, kuhn_nash, ...)")
p.add_argument("--model", default="default", help="base model of LLM agents (transformers backend)")
p.add_argument("--endpoint", default=None, help="an OpenAI-compatible server (e.g. vLLM) instead of --model")
p.add_argument(
    "--api-key", default=os.environ.get("LLMMARL_API_KEY"), help="the --endpoint's key (default: $LLMMARL_API_KEY)"
)
p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
p.add_argument("--samples", type=int, default=8, help="answers per state when sampling (greedy reads one)")
p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy: the policy is read exactly")
p.add_argument("--max-new-tokens", type=int, default=64)
p.add_argument("--constrained", action="store_true", help="grammar-constrained answers")
p.add_argument("--no-reask", action="store_true")
p.add_argument("--action-only", action="store_true", help="ask for the ACTION line alone (read exactly when sampling)")
p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the sampled policy")
p.add_argument("--played", action="store_true", help="read scripted agents through the runner too")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--json", type=Path, default=None, help="also write the result (with the policy table) here")
args = p.parse_args()

try:
    agent = parse_agent(args.agent)
except ValueError as e:
    sys.exit(str(e))
start = time.perf_counter()
backend: Backend | None = None
if isinstance(agent, LLMAgentSpec):
    agent = agent.model_copy(
        update={
            "temperature": args.temperature,
            "max_new_tokens": args.max_new_tokens,
            "constrained": args.constrained,
            "reask": not args.no_reask,
            **({"lines": frozenset()} if args.action_only else {}),
        }
    )
    if args.endpoint:
        from llmmarl.backends.openai import OpenAIBackend

        backend = OpenAIBackend(args.endpoint, api_key=args.api_key, seed=args.seed)
    else:
        from llmmarl.backends.transformers import TransformersBackend

        backend = TransformersBackend(args.model, device=args.device, seed=args.seed)
    reading = read_policy(agent, backend, decision_points(), samples=args.samples, seed=args.seed, progress=True)
elif args.played:
    reading = read_policy(agent, None, decision_points(), samples=args.samples, seed=args.seed)
else:
    try:
        reading = read_exact(agent, None, decision_points())
    except ValueError as e:
        sys.exit(f"{e} (add --played)")

result = evaluate_reading(reading, bootstrap=args.bootstrap, seed=args.seed)
print("state   P(check/fold) P(bet/call)  95% CI of P(bet/call)   fallbacks/answers")
for key, s in reading.states.items():
    lo, hi = s.ci95(BET)
    p = s.mean(BET)
    print(f"{key:<6}  {1 - p:>12.3f}  {p:>10.3f}  {lo:.3f}..{hi:.3f}  {s.fallbacks:>10}/{len(s.draws)}")
print(format_result(result))
print(f"({time.perf_counter() - start:.0f}s)")
if args.json:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, **result.as_dict()}, indent=2))
