"""The exact policy reader: answer distributions of the transformers backend, labels read from them, and Kuhn's
NashConv through them. Checked against what is known (scripted tables) and against sampled answers."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from llmmarl.agents.llm import LLMAgents
from llmmarl.agents.policy_read import cut_at_action, read_decisions
from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.backends.base import AnswerQuery, AnswerReader
from llmmarl.envs.games.kuhn_poker.bots import nash_bet_probability
from llmmarl.envs.games.kuhn_poker.exploitability import (
    BET,
    KuhnDecisionEnv,
    decision_points,
    evaluate_reading,
    info_states,
)
from llmmarl.eval.policy import read_exact, read_policy

Z = 3.29  # two-sided 99.9% normal quantile: a few labels per test, each must fall inside its interval


def _decision(backend, spec: LLMAgentSpec, player: int = 0, card: int = 1, history: str = ""):
    env = KuhnDecisionEnv(player, card, history)
    env.reset(seed=0)
    obs = env.observe(env.seat)
    return LLMAgents(backend).start(spec, env, env.seat, obs, [])


def test_scripted_policies_are_read_back_exactly_through_the_env():
    nash = read_exact(ScriptedAgentSpec(name="n", policy="kuhn_nash"), None, decision_points())
    assert nash.exact
    for key, _, card, history in info_states():
        assert nash.states[key].mean(BET) == pytest.approx(nash_bet_probability(card, history), abs=1e-15)
    assert evaluate_reading(nash).nash_conv == pytest.approx(0.0, abs=1e-12)
    uniform = evaluate_reading(read_exact(ScriptedAgentSpec(name="r", policy="random"), None, decision_points()))
    assert uniform.nash_conv == pytest.approx(11 / 12, abs=1e-12)  # 0.9167
    assert uniform.ci95 == (uniform.nash_conv, uniform.nash_conv)  # exact: no bootstrap


def test_a_scripted_policy_without_probabilities_is_refused():
    with pytest.raises(ValueError, match="does not tell its move probabilities"):
        read_exact(ScriptedAgentSpec(name="m", policy="mcts"), None, decision_points())


def test_the_tiny_model_reads_as_it_samples_within_binomial_intervals(tiny_backend):
    """2,000 sampled answers of an ACTION-only turn under the grammar agree with the exact reading."""
    assert isinstance(tiny_backend, AnswerReader)
    spec = LLMAgentSpec(name="x", temperature=1.0, constrained=True, lines=frozenset(), max_new_tokens=16)
    decision = _decision(tiny_backend, spec)
    (reading,) = read_decisions(tiny_backend, [decision])
    assert reading.exact and reading.invalid == 0.0
    assert reading.unexplored < 1e-6  # the whole answer tree was walked
    assert sum(reading.probs.values()) == pytest.approx(1.0, abs=1e-6)
    n = 2000
    tiny_backend.max_batch_size = 500  # wide batches: the tiny model's steps cost little, the calls do
    try:
        answers = tiny_backend.generate([decision.ask(seed=s) for s in range(n)])
    finally:
        tiny_backend.max_batch_size = 16
    counts = Counter(a.text for a in answers)
    assert sum(counts.values()) == n and set(counts) <= {f"ACTION: {label}" for label in reading.probs}
    for label, p in reading.probs.items():
        freq = counts[f"ACTION: {label}"] / n
        assert abs(freq - p) <= Z * math.sqrt(p * (1 - p) / n), (label, p, freq)
    # Every label is sampled often enough for the comparison to mean something (the random tiny model spreads
    # its mass over many spellings of each label; the reading sums them).
    assert min(reading.probs.values()) > 0.1


def test_a_lower_temperature_sharpens_the_reading(tiny_backend):
    spec = LLMAgentSpec(name="x", temperature=1.0, constrained=True, lines=frozenset(), max_new_tokens=16)
    hot = read_decisions(tiny_backend, [_decision(tiny_backend, spec)])[0].probs
    assert all(p > 0.1 for p in hot.values())
    cold_spec = spec.model_copy(update={"temperature": 0.0})
    cold = read_decisions(tiny_backend, [_decision(tiny_backend, cold_spec)])[0].probs
    assert sorted(cold.values()) == [0.0, 1.0]  # greedy: one answer
    greedy = tiny_backend.generate([_decision(tiny_backend, cold_spec).ask()])[0].text
    assert cold[greedy.removeprefix("ACTION: ")] == 1.0


def test_a_walk_cut_short_counts_what_it_did_not_finish(tiny_backend):
    spec = LLMAgentSpec(name="x", temperature=1.0, constrained=True, lines=frozenset(), max_new_tokens=16)
    request = _decision(tiny_backend, spec).ask()
    (dist,) = tiny_backend.answer_distribution([AnswerQuery(request=request)], max_nodes=4)
    assert dist.unexplored > 0.1
    assert sum(dist.answers.values()) + dist.unexplored == pytest.approx(1.0, abs=1e-6)  # float32 logits


def test_full_turns_are_read_after_sampled_prefixes(tiny_backend):
    spec = LLMAgentSpec(name="x", temperature=1.0, constrained=True, lines=frozenset({"PLAN"}), max_new_tokens=24)
    decision = _decision(tiny_backend, spec)
    (reading,) = read_decisions(tiny_backend, [decision], prefix_samples=4, seed=1)
    assert reading.prefixes == 4 and not reading.exact
    total = sum(reading.probs.values()) + reading.invalid + reading.unexplored
    assert total == pytest.approx(1.0, abs=1e-6)
    assert reading.unexplored < 1e-3 and reading.invalid == 0.0  # under the grammar the label always follows


def test_the_cut_keeps_the_answer_up_to_its_action_tag(tiny_backend):
    tok = tiny_backend.tokenizer
    ids = tok("PLAN: wait\nACTION: check", add_special_tokens=False)["input_ids"]
    cut = cut_at_action(tok, ids)
    assert cut is not None
    text = tok.decode(cut)
    assert text.startswith("PLAN: wait\n") and "check" not in text
    # A character spread over several tokens is never cut through.
    ids = tok("PLAN: μg戟\nACTION: bet", add_special_tokens=False)["input_ids"]
    assert tok.decode(cut_at_action(tok, ids)) == "PLAN: μg戟\nACTION:"
    assert cut_at_action(tok, tok("no tag here", add_special_tokens=False)["input_ids"]) is None


def test_kuhn_reads_an_action_only_agent_exactly(tiny_backend):
    # T = 0.5: the random tiny model spreads T = 1 over every spelling of a label; colder, the walk stays small.
    spec = LLMAgentSpec(name="x", temperature=0.5, constrained=True, lines=frozenset(), max_new_tokens=16)
    reading = read_policy(spec, tiny_backend, decision_points())
    assert reading.exact and len(reading.states) == 12
    result = evaluate_reading(reading)
    assert result.ci95 == (result.nash_conv, result.nash_conv)
    assert all(0.0 < s.mean(BET) < 1.0 for s in reading.states.values())  # a sampling agent mixes
