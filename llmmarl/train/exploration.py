"""Label-level epsilon-exploration of the training rollouts, kept unbiased by importance weights.

On-policy methods only reinforce what they sample: a label the model gives 2% gets no credit in most groups.
With ``exploration: {kind: epsilon, epsilon: e}``, at a learner's ACTION-only decision under the grammar (a finite
list A of legal labels), with probability ``e`` the answer played is a label drawn uniformly from A, spelled
canonically (the tokenizer's tokens of ``ACTION: <label>`` and the stop token), instead of the sampled answer.
The behaviour policy of an answer path is then

    mu(path) = (1 - e) * pi(path) + e / |A| * [path is the canonical spelling of its label]

where ``pi(path)`` is the probability that generation samples the path (grammar mask, temperature, top-p:
:func:`~llmmarl.backends.path_score.score_path`). Every answer of such a decision, explored or not, weights the
policy-gradient loss by ``pi(path) / mu(path)`` (:func:`behaviour_weight`), so the gradient's expectation under mu
is the on-policy one: ``E_mu[pi/mu * g] = E_pi[g]``. Concretely:

* an answer spelled otherwise than canonically (a tokenisation the grammar allows but the draw never plays) has
  ``mu = (1 - e) * pi``: its weight is exactly ``1 / (1 - e)``, whatever pi;
* a canonical spelling has weight ``pi / ((1 - e) * pi + e / |A|)``: close to ``1 / (1 - e)`` when pi is far
  above ``e / |A|``, close to ``pi * |A| / e`` (small) when the label is one the policy rarely says - which is
  how an explored label's gradient is scaled back to what the policy would have given it.

The weights are not truncated. Truncating ``pi / mu`` at a cap c trades variance for bias (the gradient of the
capped estimator is that of another objective); here the weights are bounded anyway: at most ``1 / (1 - e)``
since ``mu >= (1 - e) * pi``. They enter the loss where the vLLM engine's importance ratio does
(:mod:`llmmarl.train.importance`), multiplied with it when both apply.

In a game of several decisions the weight corrects each decision's own choice (per-decision importance sampling):
the return that follows it, and the baselines or critic fitted to returns, are still those of the exploring
behaviour.

Monitors per learner and update: ``explore/share`` (share of its explorable decisions that were explored),
``explore/weight_mean`` and ``explore/weight_max`` over their answers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmmarl.agents.llm import LLMDecision
from llmmarl.backends.base import Generation, GenerationRequest
from llmmarl.backends.choices import choice_path
from llmmarl.backends.path_score import score_path

if TYPE_CHECKING:
    from llmmarl.backends.transformers import TransformersBackend
    from llmmarl.train.samples import TurnSample


def behaviour_weight(path_logprob: float, canonical: bool, epsilon: float, labels: int) -> float:
    """``pi(path) / mu(path)`` of an answer path of a decision with ``labels`` legal labels (see the module docs).

    ``path_logprob``: log pi(path), the probability that generation samples it; read only for a canonical path.
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    if labels < 1:
        raise ValueError(f"a decision has at least one legal label, got {labels}")
    if not canonical:
        return 1.0 / (1.0 - epsilon)
    pi = math.exp(path_logprob) if path_logprob > -math.inf else 0.0
    return pi / ((1.0 - epsilon) * pi + epsilon / labels)


def canonical_path(tokenizer: Any, label: str) -> list[int]:
    """The canonical spelling of ``label``'s ACTION-only answer: the tokens of ``ACTION: <label>``, then the stop
    token (the turn grammar ends the answer there); the same path a ``canonical`` agent's choice is allowed."""
    return choice_path(tokenizer, f"ACTION: {label}", tokenizer.eos_token_id)


@dataclass
class Explored:
    """What exploration made of one answer: the answer played, its weight pi / mu, whether it was drawn."""

    generation: Generation
    weight: float | None  # None: the decision is not one exploration applies to (weight 1)
    explored: bool = False


class LabelExplorer:
    """Replaces a learner's answer by a uniformly drawn label's canonical spelling with probability ``epsilon``,
    and weighs every answer of the decisions it applies to (see the module docs).

    The draw of a request comes from ``seed``, ``step`` and the request's own sampling seed (the runner derives that
    from the game's seed, turn, seat and attempt), so a run explores the same decisions whatever the batching.
    """

    def __init__(
        self, backend: TransformersBackend, learners: Sequence[str], epsilon: float, seed: int, step: int
    ) -> None:
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
        self.backend = backend
        self.learners = set(learners)
        self.epsilon = epsilon
        self.key = f"{seed}/{step}/explore"
        self.fallback = random.Random(self.key)  # requests without a seed of their own

    def applies(self, decision: LLMDecision, request: GenerationRequest, gen: Generation) -> bool:
        """A learner's ACTION-only decision under the grammar (or as canonical answers), with a finite list of
        legal labels, answered."""
        context = decision.context
        return (
            request.adapter in self.learners
            and (request.grammar is not None or request.choices is not None)
            and not context.lines
            and not context.free_text
            and bool(context.legal)
            and gen.error is None
        )

    def __call__(
        self, decisions: Sequence[LLMDecision], requests: Sequence[GenerationRequest], gens: Sequence[Generation]
    ) -> list[Explored]:
        return [self.one(d, r, g) for d, r, g in zip(decisions, requests, gens, strict=True)]

    def one(self, decision: LLMDecision, request: GenerationRequest, gen: Generation) -> Explored:
        if not self.applies(decision, request, gen):
            return Explored(gen, None)
        legal = decision.context.legal
        tokenizer = self.backend.tokenizer
        rng = random.Random(f"{self.key}/{request.seed}") if request.seed is not None else self.fallback
        if rng.random() < self.epsilon:
            path = canonical_path(tokenizer, rng.choice(legal))
            score = score_path(self.backend, request, path)
            if score.sampling_logprob == -math.inf:
                raise RuntimeError(
                    f"the turn grammar refuses the canonical answer {tokenizer.decode(path)!r}: exploration cannot "
                    "play it (the turn format and canonical_path disagree)"
                )
            played = Generation(
                text=tokenizer.decode(path, skip_special_tokens=True),
                prompt_ids=gen.prompt_ids,
                completion_ids=path,
                logprobs=score.token_logprobs,
                finish_reason="stop",
                adapter_version=gen.adapter_version,
            )
            weight = behaviour_weight(score.sampling_logprob, True, self.epsilon, len(legal))
            return Explored(played, weight, explored=True)
        canonical = any(gen.completion_ids == canonical_path(tokenizer, label) for label in legal)
        logp = score_path(self.backend, request, gen.completion_ids).sampling_logprob if canonical else 0.0
        return Explored(gen, behaviour_weight(logp, canonical, self.epsilon, len(legal)))


def exploration_metrics(samples: Sequence[TurnSample]) -> dict[str, float]:
    """``explore/...`` monitors over a learner's samples of one update ({} when none was explorable)."""
    seen = [s for s in samples if s.explorable]
    if not seen:
        return {}
    weights = [s.weight for s in seen]
    return {
        "explore/share": sum(s.explored for s in seen) / len(seen),
        "explore/weight_mean": sum(weights) / len(weights),
        "explore/weight_max": max(weights),
    }
