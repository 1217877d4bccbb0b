"""Canonical answers: a closed list of texts, each allowed in the tokenizer's own tokens only (backends/choices.py),
generated and read exactly by the in-process backend, and asked for by a ``canonical`` agent."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from llmmarl.agents.llm import LLMAgents, choices_for
from llmmarl.agents.policy_read import read_decisions
from llmmarl.agents.specs import LLMAgentSpec
from llmmarl.backends.base import AnswerQuery, ChatMessage, GenerationRequest
from llmmarl.backends.choices import ChoiceMatcher, choice_trie
from llmmarl.envs import make

CHOICES = ["ACTION: amber", "ACTION: slate", "ACTION: olive"]


class _Chars:
    """A tokenizer that spells every character as its code point: paths are easy to write by hand."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def test_the_trie_allows_each_choice_in_its_own_tokens_then_the_end_token() -> None:
    trie = choice_trie(_Chars(), ["ab", "ac"], eos=0)
    m = ChoiceMatcher(trie)
    assert m.allowed() == [ord("a")]
    assert m.accept_token(ord("a")) and sorted(m.allowed()) == [ord("b"), ord("c")]
    branch = m.fork()
    assert branch.accept_token(ord("c")) and branch.allowed() == [0]
    assert not m.accept_token(ord("a"))  # not a continuation of "a"
    assert m.accept_token(ord("b")) and m.accept_token(0) and m.is_terminated() and m.allowed() == []
    assert not branch.is_terminated()  # the fork went its own way
    assert trie.longest == 3


@pytest.mark.parametrize("bad", [[], ["ab", "ab"], ["ab", ""]])
def test_a_bad_list_of_choices_is_a_clear_error(bad: list[str]) -> None:
    with pytest.raises(ValueError, match="choice"):
        choice_trie(_Chars(), bad, eos=0)


def test_the_bitmask_row_sets_exactly_the_allowed_tokens_high_bits_included() -> None:
    tokens = [5, 31, 63, 64, 95]  # 31 and 63 are the sign bit of their int32 word
    trie = choice_trie(_Tokens(tokens), ["x"], eos=7)
    bitmask = torch.full((2, 4), -1, dtype=torch.int32)
    ChoiceMatcher(trie).fill_next_token_bitmask(bitmask, 1)
    words = bitmask[1].tolist()
    allowed = [t for t in range(128) if (words[t // 32] >> (t % 32)) & 1]
    assert allowed == [5]  # the trie's first token only
    assert bitmask[0].tolist() == [-1] * 4  # other rows untouched
    many = choice_trie(_Chars(), [chr(t) for t in tokens], eos=7)
    ChoiceMatcher(many).fill_next_token_bitmask(bitmask, 0)
    words = bitmask[0].tolist()
    assert [t for t in range(128) if (words[t // 32] >> (t % 32)) & 1] == tokens


class _Tokens:
    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.ids[:1]


# ---- the in-process backend, tiny model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backend():
    from llmmarl.backends.transformers import TransformersBackend

    return TransformersBackend("tiny", max_batch_size=512)


def _request(seed: int = 0, max_new_tokens: int = 16) -> GenerationRequest:
    return GenerationRequest(
        messages=[ChatMessage(role="user", content="Pick a word.")],
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        choices=CHOICES,
        seed=seed,
    )


def test_generated_answers_are_choices_each_in_one_token_path(backend) -> None:
    out = backend.generate([_request(s) for s in range(300)])
    eos = backend.tokenizer.eos_token_id
    paths = {o.text: set() for o in out}
    for o in out:
        paths[o.text].add(tuple(o.completion_ids))
    assert set(paths) <= set(CHOICES) and len(paths) == 3  # a random network samples all three
    for text, ids in paths.items():
        assert ids == {(*backend.tokenizer.encode(text, add_special_tokens=False), eos)}


def test_the_exact_reading_agrees_with_2000_samples(backend) -> None:
    (dist,) = backend.answer_distribution([AnswerQuery(request=_request())])
    assert dist.unexplored == 0.0 and set(dist.answers) == set(CHOICES)
    assert math.isclose(sum(dist.answers.values()), 1.0, rel_tol=1e-6)
    n = 2000
    counts = Counter(o.text for o in backend.generate([_request(s) for s in range(n)]))
    for text, p in dist.answers.items():
        half = 3.29 * math.sqrt(p * (1 - p) / n)  # 99.9% binomial interval
        assert abs(counts[text] / n - p) <= half, (text, p, counts[text] / n)


def test_a_budget_shorter_than_a_choice_is_a_clear_error(backend) -> None:
    with pytest.raises(ValueError, match="max_new_tokens=2 is shorter than the longest choice"):
        backend.generate([_request(max_new_tokens=2)])


# ---- the agent side ------------------------------------------------------------------------------------------------
def _context(env, seat: str, spec: LLMAgentSpec, backend):
    return LLMAgents(backend).start(spec, env, seat, env.observe(seat), [])


def test_a_canonical_agent_asks_for_its_closed_turns_complete_texts(backend) -> None:
    env = make("probe_bandit", arms=3, seed=0)
    env.reset(seed=0)
    spec = LLMAgentSpec(name="a", canonical=True, constrained=True, lines=frozenset(), temperature=1.0)
    decision = _context(env, "player_0", spec, backend)
    legal = env.observe("player_0").legal_actions
    assert decision.choices == [f"ACTION: {w}" for w in legal] and decision.grammar is None
    assert decision.ask().choices == decision.choices
    (reading,) = read_decisions(backend, [decision])  # the exact reader walks the same three paths
    assert set(reading.probs) == set(legal) and reading.unexplored == 0.0


def test_a_closed_message_line_is_enumerated_and_an_open_turn_refused(backend) -> None:
    env = make("probe_speaker_listener", goals=2, seed=0)
    env.reset(seed=0)
    spec = LLMAgentSpec(name="s", canonical=True, constrained=True, lines=frozenset({"MESSAGE"}))
    decision = _context(env, "speaker_0", spec, backend)
    assert decision.choices is not None
    legal = env.observe("speaker_0").legal_actions
    words = env.message_rules.vocabulary
    assert len(decision.choices) == len(legal) * (1 + len(words))
    assert f"MESSAGE: {words[0]}\nACTION: {legal[0]}" in decision.choices
    with pytest.raises(ValueError, match=r"canonical answers need a closed turn.*PLAN"):
        choices_for(env, "speaker_0", decision.context, spec.model_copy(update={"lines": frozenset({"PLAN"})}))
