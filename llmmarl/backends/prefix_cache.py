"""The transformers backend's shared-prefix KV cache: prefill a batch's common prompt prefix once, keep it across calls.

On CPU the prompt prefill dominates the cost of a decision, and every prompt of a game starts with the same system
prompt (the rules). So each batch ("chunk") computes the longest common token prefix of its prompts once, at batch
size 1, repeats its keys/values over the batch and prefills only the rest. The input of ``generate`` is then
``[prefix | left pad | suffix]`` with attention mask ``[1..1 | 0..0 | 1..1]`` and ``past_key_values`` holding the
prefix. transformers 5.x (``generation/utils.py``) slices ``input_ids`` to the tokens the cache lacks
(``next_sequence_length = width - past length``) and derives ``position_ids`` from the attention mask
(``cumsum - 1``), so the first suffix token of every row sits at position ``len(prefix)`` whatever its padding; the
causal mask indexes the physical slots (query offset = cache length) and the padding mask hides the gap. Prefix
keys/values are also kept across calls in a small LRU keyed by (adapter, prefix tokens): the system prompt of a
game is prefilled once per adapter per process. A cached entry also serves any shorter prefix of it (keys/values
of token ``i`` depend only on tokens ``<= i``), and a longer prefix is computed by extending the best entry.

Trade-off: the KV of a prefix depends on the LoRA adapter, so with the prefix cache on a batch holds ONE adapter
(a mixed-adapter chunk is split per adapter). On CPU that wins by far (prefill is the cost; a decode step of half
the rows costs about half). On a GPU, where a decode step of 64 rows costs about as much as one of 8, one
mixed-adapter batch - PEFT's ``adapter_names=`` - may be faster: pass ``prefix_cache=False`` for the previous
behaviour (all adapters in one batch, nothing cached).

Cached prefixes go stale when weights change. ``TransformersBackend.load_adapter`` drops the entries of that
adapter; a trainer that updates adapter (or base) weights in place must call
:meth:`PrefixCache.clear_prefix_cache` after each update. As a safety net each ``generate`` call drops the whole
cache when the weights changed since it was filled: LoRA and trainable (``requires_grad``) weights are compared by
value with a copy (fused optimizers such as ``AdamW(fused=True)``, the HF Trainer's default, update in place
without bumping autograd's version counter), the other weights by storage and version counter (which
``load_state_dict`` and in-place ops bump). Writes through ``param.data`` to a frozen base weight escape the net.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (batch, kv_heads, tokens, head_dim)


class PrefixCache:
    """The prefix-cache half of :class:`~llmmarl.backends.transformers.TransformersBackend` (a mixin).

    The backend sets these attributes in its ``__init__``; this class reads and updates them.
    """

    model: Any
    device: str
    stats: dict[str, int]
    prefix_cache_size: int
    # (adapter, prefix tokens) -> per-layer keys/values of the prefix at batch size 1; most recently used last.
    _prefixes: OrderedDict[tuple[str, tuple[int, ...]], KV]
    # What the weights were when the cache was filled: (storage, version) of every parameter, and a copy of the
    # LoRA and trainable ones (see _check_weights).
    _weights: tuple[tuple[int, int], ...] | None
    _watched: list[torch.Tensor]
    _logits_to_keep: bool  # the model's forward takes logits_to_keep

    @property
    def adapters(self) -> list[str]:
        """The names of the adapters loaded (the backend's own property)."""
        raise NotImplementedError

    def clear_prefix_cache(self, adapter: str | None = None) -> None:
        """Forget cached prefix keys/values: all of them, or only those of ``adapter`` (``"__base__"``: no adapter).

        Trainers must call this after changing weights in place, e.g. after each optimizer step: prefixes cached
        before the update were computed with the old weights. (No call is needed between games or requests.)
        """
        if adapter is None:
            self._prefixes.clear()
            self._weights, self._watched = None, []
        else:
            for key in [k for k in self._prefixes if k[0] == adapter]:
                del self._prefixes[key]

    @torch.no_grad()
    def _check_weights(self) -> None:
        """Safety net: drop the cache if any weight changed since it was filled (see the module docstring).

        Every parameter's storage and autograd version counter must be unchanged, and the LoRA and trainable ones
        equal to the copy taken then: fused optimizer steps do not bump the version counter. The copy holds the
        adapters only (a few MB), so the check costs about a millisecond.
        """
        named = list(self.model.named_parameters())
        layout = tuple((p.data_ptr(), _version(p)) for _, p in named)
        watched = [p for n, p in named if p.requires_grad or "lora_" in n]
        same = (
            layout == self._weights
            and len(watched) == len(self._watched)
            and all(p.shape == q.shape for p, q in zip(watched, self._watched, strict=True))
            and not _any_differ(watched, self._watched)
        )
        if not same:
            self._prefixes.clear()
            self._weights = layout
            self._watched = [p.detach().clone() for p in watched]

    def _prefix_kv(self, adapter: str, prefix: tuple[int, ...]) -> KV:
        """Keys/values of ``prefix`` under ``adapter`` at batch size 1: from the LRU, extended or computed."""
        best, have = None, 0
        for key in self._prefixes:
            if key[0] == adapter and (n := common_prefix_len([key[1], prefix])) > have:
                best, have = key, n
        kv: KV = []
        if best is not None:
            self._prefixes.move_to_end(best)
            kv = [(k[:, :, :have], v[:, :, :have]) for k, v in self._prefixes[best]]
            self.stats["prefix_cache_hit_tokens"] += have
        if have < len(prefix):
            kv = self._forward_prefix(adapter, kv, prefix[have:])
            self.stats["prefix_tokens_computed"] += len(prefix) - have
            if self.prefix_cache_size > 0:
                # A cached prefix of the new one is redundant: the new entry serves every lookup it served.
                for key in [k for k in self._prefixes if k[0] == adapter and prefix[: len(k[1])] == k[1]]:
                    del self._prefixes[key]
                self._prefixes[(adapter, prefix)] = kv
                while len(self._prefixes) > self.prefix_cache_size:
                    self._prefixes.popitem(last=False)
        return kv

    def _forward_prefix(self, adapter: str, past: KV, tokens: Sequence[int]) -> KV:
        """Run ``tokens`` (batch 1, no padding) after the cached ``past``; returns the keys/values of both."""
        config = self.model.config.get_text_config(decoder=True)
        cache = DynamicCache(ddp_cache_data=past, config=config) if past else DynamicCache(config=config)
        start = past[0][0].shape[2] if past else 0
        kwargs: dict[str, Any] = {"adapter_names": [adapter]} if self.adapters else {}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1  # skip the vocabulary projection of all but the last token
        out = self.model(
            input_ids=torch.tensor([list(tokens)], device=self.device),
            position_ids=torch.arange(start, start + len(tokens), device=self.device)[None],
            past_key_values=cache,
            use_cache=True,
            **kwargs,
        )
        return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def common_prefix_len(seqs: Sequence[Any]) -> int:
    """Longest common prefix of token lists (or tuples): that of the lexicographic min and max bounds all others."""
    lo, hi = min(seqs), max(seqs)
    for i, (a, b) in enumerate(zip(lo, hi, strict=False)):
        if a != b:
            return i
    return min(len(lo), len(hi))


def _any_differ(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> bool:
    """Whether any pair of same-shaped tensors differs; one host sync in all (torch.equal waits once per pair)."""
    if not xs:
        return False
    return bool(torch.stack([(x != y).any() for x, y in zip(xs, ys, strict=True)]).any())


def _version(p: torch.Tensor) -> int:
    """Autograd's in-place modification counter of a tensor (-1 for inference tensors, which have none)."""
    try:
        return int(p._version)
    except RuntimeError:
        return -1
