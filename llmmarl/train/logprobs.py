"""Log-probabilities of the answer tokens of a micro-batch of samples under the active adapter.

The hand-written trainers (PPO's actor, RLOO, the FORECAST pre-training) lay answers out the same way: rows
``[left pad | prompt | answer]``, so every answer ends in the last column and only the last ``K + 1`` positions need
logits (``K`` the longest answer); positions count from each row's first real token, as in generation. The
policy-gradient trainers divide logits by the sampling temperature, as TRL's GRPO does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from llmmarl.train.rollout import TurnSample


class AnswerLogprobs(NamedTuple):
    """One micro-batch's scores, answers right-aligned in ``K`` columns."""

    token: torch.Tensor  # (B, K): log-probability of each answer token; 0 in the padding before short answers
    mask: torch.Tensor  # (B, K): 1.0 on a row's answer tokens, 0.0 on its padding
    log_softmax: torch.Tensor  # (B, K, V): the tempered distribution at each answer position (for entropies)


class AnswerRows(NamedTuple):
    """Rows ``[left pad | prompt | answer]`` on a device, answers right-aligned in the last ``k`` columns."""

    input_ids: torch.Tensor  # (B, T)
    attention: torch.Tensor  # (B, T): 1 on real tokens
    positions: torch.Tensor  # (B, T): counted from each row's first real token, as in generation
    mask: torch.Tensor  # (B, K): 1.0 on a row's answer tokens, 0.0 on its padding
    k: int  # K, the longest answer


def answer_rows(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, device: str) -> AnswerRows:
    """(prompt ids, answer ids) pairs laid out as :class:`AnswerRows` on ``device``."""
    rows = [list(p) + list(a) for p, a in pairs]
    lengths = [len(a) for _, a in pairs]
    width, k = max(len(r) for r in rows), max(lengths)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), k))
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention[i, width - len(row) :] = 1
        mask[i, k - n :] = 1.0
    input_ids, attention, mask = input_ids.to(device), attention.to(device), mask.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return AnswerRows(input_ids, attention, positions, mask, k)


def answer_logits(model: Any, rows: AnswerRows) -> torch.Tensor:
    """(B, K, V) logits that score the ``K`` answer columns: position t predicts token t + 1, so the last K + 1
    positions' logits, minus the final one."""
    out = model(
        input_ids=rows.input_ids, attention_mask=rows.attention, position_ids=rows.positions, logits_to_keep=rows.k + 1
    )
    return out.logits[:, :-1, :]


def answer_logprobs(
    model: Any, samples: Sequence[TurnSample], pad_id: int, temperature: float, device: str
) -> AnswerLogprobs:
    """The answer tokens of ``samples`` scored by ``model`` (its active adapter); grad flows if enabled."""
    rows = answer_rows([(s.prompt_ids, s.completion_ids) for s in samples], pad_id, device)
    log_softmax = torch.log_softmax(answer_logits(model, rows).float() / temperature, dim=-1)
    token = log_softmax.gather(-1, rows.input_ids[:, -rows.k :, None]).squeeze(-1)
    return AnswerLogprobs(token, rows.mask, log_softmax)


def per_answer(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's answer tokens, (B, K) -> (B,)."""
    return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
