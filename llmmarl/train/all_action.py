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

This module is the loss; the estimator, ``A`` and ``V``, is :func:`llmmarl.train.advantages.all_action_advantages`.
"""

from __future__ import annotations

import torch

from llmmarl.train.advantages import all_action_advantages, label_mask

__all__ = ["all_action_loss"]


def all_action_loss(logprobs: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``-sum_a sg[pi(a|s)] sg[A(s, a)] log pi(a|s)``, averaged over decisions (see the module docs).

    Its gradient is minus the mean over decisions of ``grad sum_a pi(a|s) Q(s, a)``: a descent step on it is an
    ascent step on every decision's expected value, each label credited with its own advantage.
    """
    legal = label_mask(logprobs, q, mask)
    advantages, _ = all_action_advantages(logprobs, q, legal)
    # Padding's log-probability may be -inf; 0 there keeps its 0 * -inf out of the graph.
    logp = torch.where(legal, logprobs, torch.zeros_like(logprobs))
    weights = torch.where(legal, logprobs.detach().exp(), torch.zeros_like(logprobs))
    return -(weights * advantages * logp).sum(dim=1).mean()
