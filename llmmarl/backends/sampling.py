"""Per-request seeded sampling for in-process generation.

``model.generate`` samples every row of a batch from one global RNG, so a row's tokens depend on which other rows
share its batch. :class:`SeededSampler` gives each row its own ``torch.Generator`` seeded from the request's
``seed``: it applies temperature and top-p itself, draws the row's token from the row's generator and returns
logits that allow only that token, so ``generate`` runs greedy (``do_sample=False``) and simply takes it. The draw
then depends only on the request's seed and its own logits - not on batch size, batch order or how many
processes or machines share the work. (Logits themselves may differ in the last bits between batch shapes, which
can still flip a rare draw.)

It must run after every processor that masks logits (grammar): pass it last in ``logits_processor``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


class SeededSampler(LogitsProcessor):
    """Samples row ``i`` from ``generators[i]`` after temperature and top-p; returns one-hot (0 / -inf) logits."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: str | torch.device) -> None:
        if temperature <= 0:
            raise ValueError("SeededSampler samples; temperature 0 is greedy and needs no seed")
        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)  # (B, V)
        if self.top_p < 1.0:
            # Keep the smallest set of most likely tokens whose mass reaches top_p (always at least the first).
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop_sorted = sorted_p.cumsum(dim=-1) - sorted_p >= self.top_p
            probs = probs.masked_fill(drop_sorted.scatter(1, order, drop_sorted), 0.0)
        chosen = torch.empty(scores.shape[0], 1, dtype=torch.long, device=scores.device)
        for row, gen in enumerate(self.generators):
            p = probs[row]
            total = p.sum()
            if not torch.isfinite(total) or total <= 0:  # every token masked: nothing to draw, keep the argmax
                chosen[row, 0] = scores[row].argmax()
            else:
                chosen[row, 0] = torch.multinomial(p, 1, generator=gen)[0]
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen, 0.0)  # type: ignore[return-value]
