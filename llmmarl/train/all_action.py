"""The all-action policy gradient (Mean Actor-Critic, Allen et al. 2017) as a loss over a decision's labels.

A sampled-action policy gradient credits the label that was played; where the value of every legal label is known
(Q(s, a) from branching a cloned game, :func:`llmmarl.eval.q_values.q_values`), every label can get its credit at
once. For one decision with labels a and values Q(s, a) held fixed, the objective is
``J = sum_a pi(a|s) Q(s, a)``, and

    grad J = sum_a grad pi(a) Q(a) = sum_a pi(a) grad log pi(a) Q(a) = sum_a pi(a) grad log pi(a) A(a),

with ``A(s, a) = Q(s, a) - V(s)``, ``V(s) = sum_b pi(b|s) Q(s, b)``: subtracting V changes nothing because
``sum_a pi(a) grad log pi(a) = grad sum_a pi(a) = 0``, and it makes the per-label terms small where the labels
are worth the same. The loss whose gradient is ``-grad J`` is therefore

    L = - sum_a sg[pi(a|s)] * sg[A(s, a)] * log pi(a|s)

where ``sg`` stops the gradient: pi as a weight and V inside A are constants of the step. Differentiating through
either adds a term that is not in grad J (``tests/test_all_action.py`` shows both, and a flipped sign, failing).

The labels' log-probabilities must be those of a distribution over the labels (they sum to 1 in probability):
pass log-softmax-normalised values when the model's label probabilities leave mass elsewhere (invalid answers).

**The natural weighting** (``weighting="natural"``). The weight sg[pi(a)] is what makes the loss above the exact
gradient, and also what stalls it: a label the policy gives 0.1% moves 1000 times slower than one it gives
certainty, so once a policy has settled on one label whatever it sees (the collapse of a contextual bandit: one
cue's word wins the shared part of the network and every other cue's word sinks to ~0), the gradient that would
undo it is ~0 too. The natural policy gradient of a softmax policy over the labels (Kakade 2001; Agarwal et al.
2021, "On the theory of policy gradient methods") moves each label's logit by its own advantage, with no pi in
front: z(a) += eta * A(s, a). The loss

    L_nat = - sum_a sg[Q(s, a) - mean_b Q(s, b)] * log pi(a|s)

has exactly that gradient with respect to the labels' logits (the uniform baseline makes the weights sum to 0, so
the log-softmax's normaliser drops out; a baseline per state does not change pi). Across cues that share a
network it pushes a word down under every cue but its own, which the exact loss does not once that cue's word has
all but vanished; measured, this only delays the collapse onto one word (``docs/learning.md``). In a language
model the labels' logits are not free parameters, so this is the tabular natural direction pushed through the
network, not the gradient of the expected return: a different, biased update.

This module is the loss; the estimators (``A`` and ``V``; the natural weighting's ``Q - mean Q``) are
:func:`llmmarl.train.advantages.all_action_advantages` and :func:`~llmmarl.train.advantages.natural_advantages`.
"""

from __future__ import annotations

from typing import Literal

import torch

from llmmarl.train.advantages import all_action_advantages, label_mask, natural_advantages

__all__ = ["Weighting", "all_action_loss"]

Weighting = Literal["policy", "natural"]


def all_action_loss(
    logprobs: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None, weighting: Weighting = "policy"
) -> torch.Tensor:
    """``-sum_a sg[pi(a|s)] sg[A(s, a)] log pi(a|s)``, averaged over decisions (see the module docs).

    Its gradient is minus the mean over decisions of ``grad sum_a pi(a|s) Q(s, a)``: a descent step on it is an
    ascent step on every decision's expected value, each label credited with its own advantage.

    ``weighting="natural"``: ``-sum_a sg[Q(s, a) - mean_b Q(s, b)] log pi(a|s)`` instead, whose gradient on the
    labels' logits is the softmax's natural policy gradient (see the module docs): biased as a policy gradient,
    but it does not stall on labels the policy has all but ruled out.
    """
    legal = label_mask(logprobs, q, mask)
    # Padding's log-probability may be -inf; 0 there keeps its 0 * -inf out of the graph.
    logp = torch.where(legal, logprobs, torch.zeros_like(logprobs))
    if weighting == "natural":
        return -(natural_advantages(q, legal) * logp).sum(dim=1).mean()
    if weighting != "policy":
        raise ValueError(f"weighting must be policy or natural, got {weighting!r}")
    advantages, _ = all_action_advantages(logprobs, q, legal)
    weights = torch.where(legal, logprobs.detach().exp(), torch.zeros_like(logprobs))
    return -(weights * advantages * logp).sum(dim=1).mean()
