"""The probability that generation produces one given answer, token path for token path.

:mod:`llmmarl.backends.answer_search` walks every answer of a request; training with label-level exploration
(:mod:`llmmarl.train.exploration`) needs the probability of one path only: the canonical spelling of a label,
played in place of a sampled answer. The path is scored as ``generate`` would have drawn it - the grammar mask,
then the temperature, then top-p - in one forward pass over the prompt and the path. The same pass also gives the
untempered, unmasked log-probabilities that a :class:`~llmmarl.backends.base.Generation` records, so an answer
played instead of a sampled one is recorded like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from llmmarl.backends.answer_search import _next_logprobs
from llmmarl.backends.base import GenerationRequest

if TYPE_CHECKING:
    from llmmarl.backends.transformers import TransformersBackend


@dataclass
class PathScore:
    """One answer path's log-probabilities."""

    sampling_logprob: float  # log of the probability that generate samples this path (-inf if it cannot)
    token_logprobs: list[float]  # per token, untempered and unmasked: what Generation.logprobs records


@torch.inference_mode()
def score_path(backend: TransformersBackend, request: GenerationRequest, path: Sequence[int]) -> PathScore:
    """How likely ``request`` is answered by exactly the tokens ``path`` (stop token included)."""
    if not path:
        raise ValueError("an answer path has at least one token")
    prompt = backend.prompt_ids(request)
    ids = torch.tensor([prompt + list(path)], device=backend.device)
    kwargs: dict[str, Any] = {"adapter_names": [request.adapter or "__base__"]} if backend.adapters else {}
    logits = backend.model(input_ids=ids, **kwargs).logits[0, len(prompt) - 1 : -1, :].float()  # (T, V)
    logits = logits[:, : backend.model.config.vocab_size]
    target = torch.tensor(list(path), device=logits.device)
    raw = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    masked = logits.cpu().clone()
    matcher = backend.matcher(request)  # the grammar's, or a canonical request's choices
    if matcher is not None:
        import xgrammar as xgr

        bitmask = xgr.allocate_token_bitmask(1, backend.model.config.vocab_size)
        for t, token in enumerate(path):
            if matcher.is_terminated():
                return PathScore(float("-inf"), raw.tolist())
            matcher.fill_next_token_bitmask(bitmask, 0)
            row = masked[t : t + 1]
            backend._bitmask_apply(row, bitmask, backend.model.config.vocab_size, [0])
            masked[t : t + 1] = row
            if not matcher.accept_token(int(token)):
                return PathScore(float("-inf"), raw.tolist())
    logp = _next_logprobs(masked, request.temperature, request.top_p)
    total = float(logp.gather(1, target.cpu()[:, None]).double().sum())
    return PathScore(total, [float(x) for x in raw.cpu()])
