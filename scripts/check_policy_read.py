"""Check the exact policy reader against sampled answers: one Kuhn poker state, an ACTION-only agent under the
grammar, its label probabilities read exactly (``answer_distribution``) and counted over ``--samples`` answers.

    python scripts/check_policy_read.py --model tiny
    python scripts/check_policy_read.py --model default --samples 2000 --temperature 1.0

Prints, per label, the read probability, the sampled frequency and the 99.9% binomial interval around the read
probability; exits 1 when a frequency falls outside it. Then how the answers were spelled: how many distinct token
paths the samples took, and each label's most common path with its share. A grammar lets a model spell a word (and
the fixed ``ACTION: `` tag) in many tokenisations; a trained model keeps to one, a random network spreads over
hundreds, and a policy-gradient step on one path then moves little of the label's mass.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter

from llmmarl.agents.llm import LLMAgents
from llmmarl.agents.policy_read import read_decisions
from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.transformers import TransformersBackend
from llmmarl.envs.games.kuhn_poker.exploitability import KuhnDecisionEnv, info_states

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--model", default="default")
p.add_argument("--state", default="1", help="the Kuhn information state, e.g. 1 (Q, opening) or 0pb")
p.add_argument("--samples", type=int, default=2000)
p.add_argument("--temperature", type=float, default=1.0)
p.add_argument("--device", default=None)
args = p.parse_args()

states = {key: (player, card, history) for key, player, card, history in info_states()}
if args.state not in states:
    sys.exit(f"--state must be one of {sorted(states)}")
backend = TransformersBackend(args.model, device=args.device, max_batch_size=256)
env = KuhnDecisionEnv(*states[args.state])
env.reset(seed=0)
spec = LLMAgentSpec(name="reader", temperature=args.temperature, constrained=True, lines=frozenset(), max_new_tokens=16)
decision = LLMAgents(backend).start(spec, env, env.seat, env.observe(env.seat), [])
start = time.perf_counter()
(reading,) = read_decisions(backend, [decision])
read_s = time.perf_counter() - start
start = time.perf_counter()
answers = backend.generate([decision.ask(seed=s) for s in range(args.samples)])
sample_s = time.perf_counter() - start
counts = Counter(a.text for a in answers)
ok = True
n = args.samples
print(
    f"model {args.model}, state {args.state}, T={args.temperature}, {n} sampled answers ({sample_s:.0f}s); read in "
    f"{read_s:.1f}s, unexplored {reading.unexplored:.2e}, invalid {reading.invalid:.2e}"
)
print("label      read      sampled   99.9% interval of the frequency")
for label, prob in reading.probs.items():
    freq = counts.pop(f"ACTION: {label}", 0) / n
    half = 3.29 * math.sqrt(prob * (1 - prob) / n)
    inside = abs(freq - prob) <= half
    ok = ok and inside
    interval = f"{max(0, prob - half):.4f}..{min(1, prob + half):.4f}"
    print(f"{label:<9}  {prob:.4f}    {freq:.4f}    {interval}  {'ok' if inside else 'OUTSIDE'}")
if counts:
    ok = False
    print(f"answers that are no label: {dict(counts)}")
paths = Counter(tuple(a.completion_ids) for a in answers)
print(f"spellings: {len(paths)} distinct token paths in {n} answers")
for label in reading.probs:
    mine = [
        (c, ids)
        for ids, c in paths.items()
        if backend.tokenizer.decode(ids, skip_special_tokens=True).strip() == f"ACTION: {label}"
    ]
    if mine:
        c, ids = max(mine)
        total = sum(c for c, _ in mine)
        pieces = "|".join(backend.tokenizer.decode([t]) for t in ids)
        print(f"  {label:<9} {len(mine)} paths; the most common, {pieces!r}, {c}/{total} of its answers")
sys.exit(0 if ok else 1)
