"""Log-probabilities of the answer tokens of a micro-batch of samples under the active adapter.

The hand-written trainers (PPO's actor, RLOO, the FORECAST pre-training) lay answers out the same way: rows
``[left pad | prompt | answer]``, so every answer ends in the last column and only the last ``K + 1`` positions need
logits (``K`` the longest answer); positions count from each row's first real token, as in generation. The
policy-gradient trainers divide logits by the sampling temperature, as TRL's GRPO does.

Most of a micro-batch's tokens are prompt tokens its samples share: a prefix common to all (the system prompt,
the rules), and whole prompts that recur (Kuhn poker has 12 information states). With ``shared_prefix``
(:func:`last_logits`) the common prefix runs once, as a batch of one that keeps its key/value cache with the graph;
each distinct rest of a prompt runs once on top of it; every answer attends to its prompt's cache, positions
continuing from it. The backward pass goes through each shared token once too. It is exact: the same logits (and
gradients) as the full rows, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from llmmarl.train.samples import TurnSample


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


def suffix_position_ids(attention: torch.Tensor, offset: int | torch.Tensor) -> torch.Tensor:
    """(B, S) positions of tokens that follow ``offset`` tokens already in the cache (an int, or (B, 1) per row):
    they continue from it, counting each row's own tokens only; masked columns get ``offset``, never attended to."""
    return (offset + attention.cumsum(-1) - 1).clamp(min=offset)


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

    ``shared_prefix``: compute shared tokens once, in three passes that each extend one key/value cache:

    1. the prefix every row starts with, as a batch of one (then repeated over the rows of pass 2);
    2. each *distinct* rest of the prompt once (rows with the same prompt share it), left-padded; its last
       position's logits are the ones that score the first answer token;
    3. every row's last ``keep - 1`` columns (its answer), attending to its prompt's cache (selected per row).

    Here "prompt" is all but a row's last ``keep - 1`` columns. Gradients flow through the caches, so each shared
    token's backward also runs once. Positions count from each row's first real token (what ``positions`` holds
    for :class:`AnswerRows`). Without ``positions`` the model counts them from the first column, padding included;
    under rotary position embeddings (every model this package uses: the Llama family) attention depends only
    on position differences, so that is the same result. Right padding (TRL's completions) is masked as in the
    full rows. Falls back to the full rows where nothing is shared or a row has no prompt token.
    """
    batch, width = input_ids.shape
    first = (attention.cumsum(-1) == 0).sum(-1)  # (B,): each row's left padding
    split = width - keep + 1  # column where the answer part begins, the same for every row
    plain = (
        not shared_prefix
        or batch < 2
        or keep < 2  # no answer column to run in pass 3
        or int(first.max()) >= split  # a row with no prompt token: nothing to score its first answer token with
        or getattr(model, "is_gradient_checkpointing", False)  # HF then turns the cache off
    )
    if plain:
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep)
        return out.logits
    device = input_ids.device
    n = shared_prefix_length(input_ids, attention, keep)  # leaves every row at least one token for pass 2
    cache = None
    if n > 0:  # 1. the shared prefix, batch of one; its logits are never used (keep one: 0 would mean all)
        row0 = int(first[0])
        out = model(
            input_ids=input_ids[:1, row0 : row0 + n],
            attention_mask=torch.ones((1, n), dtype=attention.dtype, device=device),
            position_ids=torch.arange(n, device=device)[None],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
    # 2. the rest of each distinct prompt: columns [first + n, split) of its rows.
    span = split - int(first.min()) - n
    columns = torch.arange(split - span, split, device=device)  # (span,)
    rest_attention = attention[:, split - span : split] * (columns[None] >= (first + n)[:, None])  # (B, span)
    rest_ids = input_ids[:, split - span : split] * rest_attention  # pads and the prefix copy zeroed: comparable
    distinct, group = torch.unique(torch.cat([rest_ids, rest_attention], dim=1), dim=0, return_inverse=True)
    index = torch.zeros(len(distinct), dtype=torch.long, device=device)
    index[group] = torch.arange(batch, device=device)  # a row of each distinct prompt
    mid_ids, mid_attention = input_ids[index, split - span : split], rest_attention[index]
    if cache is not None:
        cache.batch_repeat_interleave(len(index))  # (1, heads, n, d) -> (D, heads, n, d); grads add up
    prefix_mask = torch.ones((len(index), n), dtype=attention.dtype, device=device)
    out = model(
        input_ids=mid_ids,
        attention_mask=torch.cat([prefix_mask, mid_attention], dim=1),
        position_ids=suffix_position_ids(mid_attention, n),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    last_prompt = out.logits[group]  # (B, 1, V): the logits of each row's last prompt token
    cache = out.past_key_values
    cache.batch_select_indices(group)  # (D, ...) -> (B, ...): each row its prompt's keys/values
    # 3. every row's answer columns, attending to [prefix | its prompt's rest | its own answer so far].
    answer_attention = attention[:, split:]
    prompt_length = (n + mid_attention.sum(-1, keepdim=True))[group]  # (B, 1)
    out = model(
        input_ids=input_ids[:, split:],
        attention_mask=torch.cat([prefix_mask[group], mid_attention[group], answer_attention], dim=1),
        position_ids=suffix_position_ids(answer_attention, prompt_length),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep - 1,
    )
    return torch.cat([last_prompt, out.logits], dim=1)


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
