"""Answers from a closed list, each spelled in the tokenizer's own tokens.

A grammar lets a model spell a word in any tokenisation: ``ACTION: bet`` can come out as ``ACTION|:| bet`` or
``A|CT|ION|:| b|e|t`` and hundreds of others. A trained model keeps to a few of them; a small or random one spreads
its mass over all of them, and a policy-gradient step on the paths it sampled then moves little of a label's mass
(``scripts/check_policy_read.py`` counts the paths). A request with ``choices`` allows exactly one path per
answer: the tokens ``tokenizer.encode(answer)`` gives, then the end token. The policy is then a distribution over
the answers themselves, read exactly in a pass per token of the longest answer.

:class:`ChoiceMatcher` follows the part of xgrammar's ``GrammarMatcher`` interface that generation
(:class:`~llmmarl.backends.logits.GrammarProcessor`) and the exact reader (:mod:`llmmarl.backends.answer_search`)
use, so both treat a closed list and a grammar alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

_Trie = dict[int, "_Trie"]


@dataclass(frozen=True)
class ChoiceTrie:
    """The allowed token paths, as a trie: each answer's canonical tokens, then ``eos``."""

    root: _Trie
    eos: int
    longest: int  # tokens of the longest answer, its end token included


def choice_path(tokenizer: Any, text: str, eos: int) -> list[int]:
    """The one token path a choice is allowed: the tokenizer's own tokens of ``text``, then ``eos``."""
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)] + [int(eos)]


def choice_trie(tokenizer: Any, choices: Sequence[str], eos: int) -> ChoiceTrie:
    """The trie of ``choices``; a ValueError when one is empty or listed twice. One choice may be a prefix of
    another: its path ends with the end token where the other's goes on."""
    if not choices:
        raise ValueError("choices must list at least one answer")
    root: _Trie = {}
    longest = 0
    for text in choices:
        *ids, end = choice_path(tokenizer, text, eos)
        if not ids:
            raise ValueError(f"choice {text!r} has no tokens")
        node = root
        for t in ids:
            node = node.setdefault(t, {})
        if end in node:
            raise ValueError(f"choice {text!r} is listed twice")
        node[end] = {}
        longest = max(longest, len(ids) + 1)
    return ChoiceTrie(root, eos, longest)


@dataclass
class ChoiceMatcher:
    """Where one answer stands in a :class:`ChoiceTrie` (xgrammar's ``GrammarMatcher`` calls, the ones we use)."""

    trie: ChoiceTrie
    node: _Trie | None = None  # None: at the start
    done: bool = False

    def __post_init__(self) -> None:
        if self.node is None:
            self.node = self.trie.root

    def accept_token(self, token: int) -> bool:
        nxt = self.node.get(int(token)) if self.node is not None else None
        if nxt is None or self.done:
            return False
        self.done = int(token) == self.trie.eos and not nxt
        self.node = nxt
        return True

    def is_terminated(self) -> bool:
        return self.done

    def allowed(self) -> list[int]:
        return [] if self.done or self.node is None else list(self.node)

    def fill_next_token_bitmask(self, bitmask: torch.Tensor, index: int = 0) -> None:
        """Write row ``index`` of an xgrammar bitmask ((rows, ceil(V / 32)) int32, bit set = token allowed)."""
        words: dict[int, int] = {}
        for t in self.allowed():
            words[t // 32] = words.get(t // 32, 0) | (1 << (t % 32))
        row = bitmask[index]
        row.zero_()
        for w, bits in words.items():
            row[w] = bits - (1 << 32) if bits >= 1 << 31 else bits  # the int32 two's complement of the bits

    def fork(self) -> ChoiceMatcher:
        return ChoiceMatcher(self.trie, self.node, self.done)


__all__ = ["ChoiceMatcher", "ChoiceTrie", "choice_path", "choice_trie"]
