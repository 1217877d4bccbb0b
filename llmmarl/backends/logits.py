"""Logits processors for transformers' ``generate``: the model's own log-probabilities, and grammar masks.

:class:`LogprobRecorder` runs before temperature, top-p and the grammar mask, so what it records is the model's own
(untempered, unconstrained) log-probabilities - what vLLM returns by default and what a policy-gradient ratio
needs. :class:`GrammarProcessor` masks each row's logits to what its xgrammar grammar allows, with the kernel
:class:`BitmaskApply` picks for the device.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from llmmarl.backends.device import triton_status


class LogprobRecorder(LogitsProcessor):
    """Collects log p(chosen token) per step from the raw logits (B, V) it sees before any warper.

    A logits processor sees step t's logits before the token is sampled; the token shows up as
    ``input_ids[:, -1]`` at step t+1. So each call scores the previous step's choice, and :meth:`finish` scores
    the last one from the final sequences.
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []  # each (B,)
        self._last: torch.Tensor | None = None  # (B, V) log-softmax of the previous step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._last is not None:
            self.steps.append(self._last.gather(1, input_ids[:, -1:]).squeeze(1))
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """All steps' log-probs, (B, T), on the logits' device; ``last_tokens`` (B,) must be on that device too."""
        if self._last is not None:
            self.steps.append(self._last.gather(1, last_tokens[:, None]).squeeze(1))
            self._last = None
        return torch.stack(self.steps, dim=1) if self.steps else last_tokens.new_zeros(last_tokens.shape[0], 0).float()


class GrammarProcessor(LogitsProcessor):
    """Masks each row's logits to what its xgrammar grammar allows; rows without a grammar are untouched.

    xgrammar's own ``contrib.hf.LogitsProcessor`` needs a grammar for every row; our batches mix constrained
    and free requests, hence this small variant. The matchers fill the bitmask on the CPU (xgrammar's
    ``fill_next_token_bitmask`` only writes CPU tensors); each step copies it to the logits' device, where
    ``apply`` masks the logits (see :class:`BitmaskApply`).
    """

    def __init__(self, matchers: Sequence[Any | None], vocab_size: int, apply: BitmaskApply) -> None:
        """``matchers``: per row, an xgrammar ``GrammarMatcher`` (or a
        :class:`~llmmarl.backends.choices.ChoiceMatcher`) at the answer's start, or None for a free row."""
        import xgrammar as xgr

        self.matchers = list(matchers)
        self.rows = [i for i, m in enumerate(self.matchers) if m is not None]
        self.bitmask = xgr.allocate_token_bitmask(len(self.matchers), vocab_size)  # (B, ceil(V / 32)) int32, CPU
        self.vocab_size = vocab_size
        self.apply = apply
        self._started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._started:
            last = input_ids[:, -1].tolist()  # one device-to-host copy per step, not one per row
            for i in self.rows:
                m = self.matchers[i]
                if m is not None and not m.is_terminated():
                    m.accept_token(int(last[i]))
        self._started = True
        live = [i for i in self.rows if not self.matchers[i].is_terminated()]  # type: ignore[union-attr]
        for i in live:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)  # type: ignore[union-attr]
        if live:
            self.apply(scores, self.bitmask, self.vocab_size, live)
        return scores


class BitmaskApply:
    """Applies an xgrammar bitmask to logits on their device; picks xgrammar's kernel once per backend.

    On the CPU: xgrammar's C++ kernel. On CUDA: its Triton kernel when Triton works here
    (:func:`~llmmarl.backends.device.triton_status`; it needs a C compiler at run time), else xgrammar's plain-torch
    version on the GPU, which is slower per step but needs nothing else. A fallback warns once with the reason
    and is kept in :attr:`note`.
    """

    def __init__(self) -> None:
        self.kernel: str | None = None  # "cpu", "triton" or "torch_native" once chosen
        self.note = ""

    def __call__(self, scores: torch.Tensor, bitmask: torch.Tensor, vocab_size: int, rows: list[int]) -> None:
        import xgrammar as xgr

        if scores.device.type == "cpu":
            xgr.apply_token_bitmask_inplace(scores, bitmask, vocab_size=vocab_size, indices=rows, backend="cpu")
            self.kernel = self.kernel or "cpu"
            return
        mask = bitmask.to(scores.device, non_blocking=True)
        if self.kernel is None:
            ok, reason = triton_status()
            self.kernel = "triton" if ok else "torch_native"
            if not ok:
                self._fall_back(reason)
        if self.kernel == "triton":
            try:
                xgr.apply_token_bitmask_inplace(scores, mask, vocab_size=vocab_size, indices=rows, backend="triton")
                return
            except Exception as e:  # a Triton failure the probe did not catch: the torch kernel still works
                self.kernel = "torch_native"
                self._fall_back(f"{type(e).__name__}: {e}")
        xgr.apply_token_bitmask_inplace(scores, mask, vocab_size=vocab_size, indices=rows, backend="torch_native")

    def _fall_back(self, reason: str) -> None:
        self.note = f"grammar masks use xgrammar's plain-torch kernel: its Triton kernel does not run here ({reason})"
        warnings.warn(self.note, RuntimeWarning, stacklevel=3)
