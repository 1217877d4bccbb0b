"""Importance correction for answers sampled by another engine than the one that trains (vLLM rollouts).

The engine (vLLM) and the learner (transformers + PEFT) compute the same policy with different kernels, batching
and precision, so the probability the engine sampled a token with is not the learner's. The policy-gradient step
assumes the learner sampled; each answer token is reweighted by

    w_t = pi_learner(y_t | ...) / pi_engine(y_t | ...) = exp(logp_learner_t - logp_engine_t)

with both log-probabilities at the sampling temperature (vLLM's ``processed_logprobs``; TRL and our PPO score tokens
on ``logits / temperature``). ``logp_learner`` is the learner before the update (PPO's old log-probs; for GRPO a
no-grad pass, as TRL does for its own vLLM correction).

Mode ``token_truncate`` (the default): the loss of token t is multiplied by ``min(w_t, cap)``, cap 2 by default -
truncated importance sampling per token (TRL's ``vllm_importance_sampling_mode="token_truncate"``; Yao et al., "Your
efficient RL framework secretly brings you off-policy RL training", 2025). ``token_mask`` drops tokens with
``w_t > cap`` instead. Token level rather than sequence level: a sequence ratio is a product over ~50 tokens and
would be truncated almost always. The weight is a constant (no gradient flows through it).

Grammar-constrained turns (``constrained: true``, the format warm-up) are left out: vLLM takes its log-probabilities
after the grammar mask, the learner before it, so the two do not estimate the same quantity. Their weight is 1 and
they are not part of the monitors.

Monitors per update and learner: ``is/logprob_abs_diff`` (mean |logp_learner - logp_engine| over trained tokens),
``is/weight_mean``, ``is/weight_min``, ``is/weight_max`` (before truncation), ``is/clipped_frac`` (tokens whose weight
was capped or masked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Mode = Literal["token_truncate", "token_mask", "none"]


def importance_weights(
    learner_logps: torch.Tensor, engine_logps: torch.Tensor, mask: torch.Tensor, mode: Mode, cap: float
) -> torch.Tensor:
    """Per-token weights (B, T) for the loss; 1 where ``mask`` is 0 or ``mode`` is none.

    ``learner_logps``, ``engine_logps``, ``mask``: (B, T), aligned token for token; ``mask`` is 1 on the answer
    tokens that are trained. Rows whose engine log-probs are NaN (not reported) get weight 1.
    """
    if mode == "none":
        return torch.ones_like(learner_logps)
    diff = torch.nan_to_num((learner_logps - engine_logps) * mask, nan=0.0)
    w = torch.exp(diff.clamp(max=20.0))  # (B, T); exp(20) is far past any cap
    w = w.clamp(max=cap) if mode == "token_truncate" else torch.where(w > cap, torch.zeros_like(w), w)
    return torch.where(mask.bool(), w, torch.ones_like(w)).detach()


@dataclass
class MismatchMonitor:
    """Sums over an update's micro-batches, for the ``is/...`` monitors of one learner."""

    cap: float
    tokens: float = 0.0
    abs_diff: float = 0.0
    weight_sum: float = 0.0
    clipped: float = 0.0
    weight_min: float = float("inf")
    weight_max: float = 0.0

    def add(self, learner_logps: torch.Tensor, engine_logps: torch.Tensor, mask: torch.Tensor) -> None:
        """Count one micro-batch, (B, T) each."""
        m = mask.bool() & ~torch.isnan(engine_logps)
        if not m.any():
            return
        diff = (learner_logps - engine_logps)[m].double()
        w = diff.exp()
        self.tokens += float(m.sum())
        self.abs_diff += float(diff.abs().sum())
        self.weight_sum += float(w.sum())
        self.clipped += float((w > self.cap).sum())
        self.weight_min = min(self.weight_min, float(w.min()))
        self.weight_max = max(self.weight_max, float(w.max()))

    def metrics(self) -> dict[str, float]:
        if not self.tokens:
            return {}
        return {
            "is/logprob_abs_diff": self.abs_diff / self.tokens,
            "is/weight_mean": self.weight_sum / self.tokens,
            "is/weight_min": self.weight_min,
            "is/weight_max": self.weight_max,
            "is/clipped_frac": self.clipped / self.tokens,
            "is/tokens": self.tokens,
        }


def right_aligned(values: Sequence[Sequence[float]], like: torch.Tensor) -> torch.Tensor:
    """Per-row lists right-aligned into a (B, T) tensor shaped as ``like`` (NaN where a row has no value)."""
    out = torch.full_like(like, float("nan"), dtype=torch.float32)
    for i, v in enumerate(values):
        if v:
            out[i, like.shape[1] - len(v) :] = torch.tensor(list(v), dtype=torch.float32, device=like.device)
    return out
