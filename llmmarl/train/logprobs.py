"""Log-probabilities of the answer tokens of a micro-batch of samples under the active adapter.

The hand-written trainers (PPO's actor, RLOO, the FORECAST pre-training) lay answers out the same way: rows
``[left pad | prompt | answer]``, so every answer ends in the last column and only the last ``K + 1`` positions need
logits (``K`` the longest answer); positions count from each row's first real token, as in generation. The
policy-gradient trainers divide logits by the sampling temperature, as TRL's GRPO does.

Most of a micro-batch's tokens are a prompt prefix its samples share (the system prompt, the rules, the turn
format). With ``shared_prefix`` (:func:`last_logits`) that prefix runs once,
as a batch of one that keeps its key/value cache with the graph; the cache is repeated over the batch and every
row's remaining tokens attend to it, positions continuing from the prefix. The backward pass goes through the
prefix once too. It is exact: the same logits (and gradients) as the full rows, up to float rounding.
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


def shared_prefix_length(input_ids: torch.Tensor, attention: torch.Tensor, keep: int) -> int:
    """Tokens that every row of a left-padded batch ``(B, T)`` starts with, at most such that every row keeps its
    last ``keep`` positions (those that get logits) out of the prefix; 0 for a batch of one."""
    first = (attention.cumsum(-1) == 0).sum(-1)  # (B,): each row's left padding
    limit = int((input_ids.shape[1] - first).min()) - keep
    if input_ids.shape[0] < 2 or limit < 1:
        return 0
    columns = first[:, None] + torch.arange(limit, device=input_ids.device)  # (B, limit): each row's own tokens
    ids, real = input_ids.gather(1, columns), attention.gather(1, columns)
    same = (ids == ids[:1]).all(0) & (real == 1).all(0)  # (limit,)
    return int(same.long().cumprod(0).sum())


def suffix_position_ids(suffix_attention: torch.Tensor, prefix: int) -> torch.Tensor:
    """(B, S) positions of the tokens after a shared prefix of ``prefix`` tokens: they continue from it, counting
    each row's own tokens only (the masked columns get ``prefix``; they are never attended to)."""
    return (prefix + suffix_attention.cumsum(-1) - 1).clamp(min=prefix)


def last_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    keep: int,
    positions: torch.Tensor | None = None,
    shared_prefix: bool = False,
) -> torch.Tensor:
    """(B, keep, V) logits of the last ``keep`` positions of a left-padded batch, as
    ``model(input_ids, attention, positions, logits_to_keep=keep).logits``.

    ``shared_prefix``: run the prefix all rows share once (see the module's doc). Positions then count from each
    row's first real token (what ``positions`` holds for :class:`AnswerRows`). Without ``positions`` the model
    counts them from the first column, padding included; under rotary position embeddings (every model this
    package uses: the Llama family) attention depends only on position differences, so that is the same result.
    A row may end in right padding (TRL's completions): it is masked as in the full rows.
    """
    n = shared_prefix_length(input_ids, attention, keep) if shared_prefix else 0
    if n == 0 or getattr(model, "is_gradient_checkpointing", False):
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep)
        return out.logits
    batch, width = input_ids.shape
    first = (attention.cumsum(-1) == 0).sum(-1)  # (B,)
    row0 = int(first[0])
    prefix = input_ids[:1, row0 : row0 + n]  # (1, n)
    ones = torch.ones_like(prefix)
    # The prefix's own logits are never used: keep one position (0 would mean all of them).
    out = model(
        input_ids=prefix,
        attention_mask=ones,
        position_ids=torch.arange(n, device=prefix.device)[None],
        use_cache=True,
        logits_to_keep=1,
    )
    cache = out.past_key_values
    cache.batch_repeat_interleave(batch)  # (1, heads, n, d) -> (B, heads, n, d); differentiable, so grads add up
    # Suffix columns: the last `span` of each row; a row whose suffix is shorter masks its first columns (its left
    # padding and the copy of the prefix).
    span = width - int(first.min()) - n
    columns = torch.arange(width - span, width, device=input_ids.device)  # (span,)
    suffix_attention = attention[:, -span:] * (columns[None] >= (first + n)[:, None])  # (B, span)
    suffix_positions = suffix_position_ids(suffix_attention, n)
    out = model(
        input_ids=input_ids[:, -span:],
        attention_mask=torch.cat([ones.expand(batch, n), suffix_attention], dim=1),
        position_ids=suffix_positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep,
    )
    return out.logits


def answer_logits(model: Any, rows: AnswerRows, shared_prefix: bool = False) -> torch.Tensor:
    """(B, K, V) logits that score the ``K`` answer columns: position t predicts token t + 1, so the last K + 1
    positions' logits, minus the final one. ``shared_prefix``: see :func:`last_logits`."""
    logits = last_logits(model, rows.input_ids, rows.attention, rows.k + 1, rows.positions, shared_prefix)
    return logits[:, :-1, :]


def answer_logprobs(
    model: Any,
    samples: Sequence[TurnSample],
    pad_id: int,
    temperature: float,
    device: str,
    shared_prefix: bool = False,
) -> AnswerLogprobs:
    """The answer tokens of ``samples`` scored by ``model`` (its active adapter); grad flows if enabled.
    ``shared_prefix``: compute the prompt prefix the samples share once (:func:`last_logits`)."""
    rows = answer_rows([(s.prompt_ids, s.completion_ids) for s in samples], pad_id, device)
    log_softmax = torch.log_softmax(answer_logits(model, rows, shared_prefix).float() / temperature, dim=-1)
    token = log_softmax.gather(-1, rows.input_ids[:, -rows.k :, None]).squeeze(-1)
    return AnswerLogprobs(token, rows.mask, log_softmax)


def per_answer(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's answer tokens, (B, K) -> (B,)."""
    return (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
