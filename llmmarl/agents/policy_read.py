"""An LLM agent's policy read exactly: the probability of each legal label, as the agent samples it.

A decision's request (prompt, adapter, grammar, temperature, top-p: :class:`~llmmarl.agents.llm.LLMDecision`) goes
to a backend with the :class:`~llmmarl.backends.base.AnswerReader` capability, which returns every answer with its
probability; each answer is parsed as the runner parses it (:func:`~llmmarl.agents.turn.parse_turn`), and the
probabilities of the answers that name a label are summed per label.

* **ACTION-only turns** (an agent asked for no other line): the answer is ``ACTION: <label>``, and the reading
  is exact from the first token (``prefixes = 0``): no sampling error.
* **Full turns** (PLAN, MESSAGE... before the ACTION line): the free text before the action cannot be enumerated.
  ``prefix_samples`` answers are sampled, each is cut where its ACTION line starts, the label's distribution after
  each cut is read exactly, and the K distributions are averaged: an unbiased estimate of the label's probability
  with less variance than counting K sampled labels.

What is not a label is reported, not guessed: ``invalid`` is the probability of answers that name no legal label
(the runner would re-ask, then fall back), ``unexplored`` that of answers the reader did not finish (below its
probability floor).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from llmmarl.agents.llm import LLMDecision, keep_asked
from llmmarl.agents.turn import parse_turn
from llmmarl.backends.base import AnswerDistribution, AnswerQuery, AnswerReader, Backend, BackendError

#: Where a turn's action starts; a full turn is cut just after it (the label follows).
ACTION_TAG = "ACTION:"


@dataclass
class LabelReading:
    """One decision's policy: the probability of each legal label."""

    probs: dict[str, float]  # every legal label, in the observation's order
    invalid: float  # answers that name no legal label (re-asked or a fallback when played)
    unexplored: float  # answers the reader did not finish: bounds the error of each probability
    prefixes: int  # 0: exact from the first token; K: averaged over K sampled prefixes

    @property
    def exact(self) -> bool:
        return self.prefixes == 0

    def normalised(self) -> dict[str, float]:
        """The label probabilities renormalised over the labels (invalid and unexplored mass shared out)."""
        total = sum(self.probs.values())
        if total <= 0:
            return {label: 1.0 / len(self.probs) for label in self.probs}
        return {label: p / total for label, p in self.probs.items()}


def action_only(decision: LLMDecision) -> bool:
    """Whether the decision's answer is the ACTION line alone (the reading is then exact)."""
    return not decision.context.lines


def reader_of(backend: Backend | None) -> AnswerReader:
    if backend is None or not isinstance(backend, AnswerReader):
        name = type(backend).__name__ if backend is not None else "no backend"
        raise BackendError(f"{name} cannot read answer distributions; use the in-process transformers backend")
    return backend


def read_decisions(
    backend: Backend | None,
    decisions: Sequence[LLMDecision],
    prefix_samples: int = 8,
    seed: int = 0,
    from_start: bool = False,
) -> list[LabelReading]:
    """The label probabilities of each decision: exact for ACTION-only ones, over ``prefix_samples`` sampled
    prefixes for the others (one batched read for all of them).

    ``from_start`` reads every decision exactly from its first token, full turns too: right where the lines before
    the action are short and closed (a MESSAGE of one vocabulary word), wasteful where they are free text (the
    reader's node cap then leaves mass ``unexplored``)."""
    reader = reader_of(backend)
    if prefix_samples < 1:
        raise ValueError(f"prefix_samples must be >= 1, got {prefix_samples}")
    queries: list[AnswerQuery] = []
    owners: list[int] = []  # the decision each query reads
    invalid = [0.0] * len(decisions)
    prefixes = [0] * len(decisions)
    full = [i for i, d in enumerate(decisions) if not (from_start or action_only(d))]
    for i, d in enumerate(decisions):
        if i not in full:
            queries.append(AnswerQuery(request=d.ask()))
            owners.append(i)
    if full:
        for i, cut in _sampled_prefixes(reader, [decisions[i] for i in full], prefix_samples, seed):
            owner = full[i]
            prefixes[owner] = prefix_samples
            if cut is None:  # a sampled answer without an ACTION line: that sample names no label
                invalid[owner] += 1.0 / prefix_samples
            else:
                queries.append(AnswerQuery(request=decisions[owner].ask(), prefix_ids=cut))
                owners.append(owner)
    dists = reader.answer_distribution(queries) if queries else []
    probs = [dict.fromkeys(d.context.legal, 0.0) for d in decisions]
    unexplored = [0.0] * len(decisions)
    for owner, dist in zip(owners, dists, strict=True):
        weight = 1.0 / prefix_samples if prefixes[owner] else 1.0
        got, bad = _labels(decisions[owner], dist)
        for label, p in got.items():
            probs[owner][label] += weight * p
        invalid[owner] += weight * bad
        unexplored[owner] += weight * dist.unexplored
    return [LabelReading(probs[i], invalid[i], unexplored[i], prefixes[i]) for i in range(len(decisions))]


def _labels(decision: LLMDecision, dist: AnswerDistribution) -> tuple[dict[str, float], float]:
    """Sum the answers' probabilities per label they parse to; the rest is invalid."""
    got: dict[str, float] = defaultdict(float)
    bad = 0.0
    for text, p in dist.answers.items():
        parsed = keep_asked(parse_turn(text, decision.context.legal, decision.context.others), decision.spec)
        if parsed.turn is None:
            bad += p
        else:
            got[parsed.turn.action] += p
    return got, bad


def _sampled_prefixes(
    backend: AnswerReader, decisions: Sequence[LLMDecision], k: int, seed: int
) -> list[tuple[int, list[int] | None]]:
    """K sampled answers per decision, each cut after its last ``ACTION:``: (decision index, prefix ids or None)."""
    seeds = [(seed * 1_000_003 + 7919 * i + j) % 2**31 for i in range(len(decisions)) for j in range(k)]
    requests = [decisions[n // k].ask(seed=s) for n, s in enumerate(seeds)]
    generations = backend.generate(requests)
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        raise BackendError("reading full turns needs the backend's tokenizer (to cut answers at their ACTION line)")
    out: list[tuple[int, list[int] | None]] = []
    for n, gen in enumerate(generations):
        out.append((n // k, cut_at_action(tokenizer, gen.completion_ids)))
    return out


def cut_at_action(tokenizer: object, ids: Sequence[int]) -> list[int] | None:
    """The longest token prefix of ``ids`` that ends at or before the end of the last ``ACTION:`` tag."""
    decode = tokenizer.decode  # type: ignore[attr-defined]
    text = decode(list(ids), skip_special_tokens=True)
    at = text.rfind(ACTION_TAG)
    if at < 0:
        return None
    end = at + len(ACTION_TAG)
    best = 0
    for k in range(1, len(ids) + 1):
        part = decode(list(ids[:k]), skip_special_tokens=True)
        if part.endswith("\ufffd"):  # a character split over tokens: not a place to cut
            continue
        if len(part) > end or not text.startswith(part):
            break
        best = k
    return list(ids[:best])
