"""In-process backend: one transformers base model, many named PEFT LoRA adapters, batched generation.

All pending decisions of all running games go into one :meth:`TransformersBackend.generate` call. Requests are
grouped by decoding settings (temperature, top-p, token budget) and, with the prefix cache on (the default), by
adapter.

Shared-prefix KV cache (``prefix_cache=True``). On CPU the prompt prefill dominates the cost of a decision, and
every prompt of a game starts with the same system prompt (the rules). So each batch ("chunk") computes the
longest common token prefix of its prompts once, at batch size 1, repeats its keys/values over the batch and
prefills only the rest. The input of ``generate`` is then ``[prefix | left pad | suffix]`` with attention mask
``[1..1 | 0..0 | 1..1]`` and ``past_key_values`` holding the prefix. transformers 5.x (``generation/utils.py``)
slices ``input_ids`` to the tokens the cache lacks (``next_sequence_length = width - past length``) and derives
``position_ids`` from the attention mask (``cumsum - 1``), so the first suffix token of every row sits at position
``len(prefix)`` whatever its padding; the causal mask indexes the physical slots (query offset = cache length)
and the padding mask hides the gap. Prefix keys/values are also kept across calls in a small LRU keyed by
(adapter, prefix tokens): the system prompt of a game is prefilled once per adapter per process. A cached entry
also serves any shorter prefix of it (keys/values of token ``i`` depend only on tokens ``<= i``), and a longer
prefix is computed by extending the best entry.

Trade-off: the KV of a prefix depends on the LoRA adapter, so with the prefix cache on a batch holds ONE adapter
(a mixed-adapter chunk is split per adapter). On CPU that wins by far (prefill is the cost; a decode step of half
the rows costs about half). On a GPU, where a decode step of 64 rows costs about as much as one of 8, one
mixed-adapter batch - PEFT's ``adapter_names=`` - may be faster: pass ``prefix_cache=False`` for the previous
behaviour (all adapters in one batch, nothing cached).

Cached prefixes go stale when weights change. :meth:`TransformersBackend.load_adapter` drops the entries of that
adapter; a trainer that updates adapter (or base) weights in place must call
:meth:`TransformersBackend.clear_prefix_cache` after each update. As a safety net each ``generate`` call drops
the whole cache when the weights changed since it was filled: LoRA and trainable (``requires_grad``) weights are
compared by value with a copy (fused optimizers such as ``AdamW(fused=True)``, the HF Trainer's default, update
in place without bumping autograd's version counter), the other weights by storage and version counter (which
``load_state_dict`` and in-place ops bump). Writes through ``param.data`` to a frozen base weight escape the net.

Logprobs are recorded by :class:`_LogprobRecorder`, a logits processor that runs before temperature, top-p and
the grammar mask, so they are the model's own (untempered, unconstrained) log-probabilities - what vLLM
returns by default and what a policy-gradient ratio needs.
"""

from __future__ import annotations

import inspect
import shutil
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

from llmmarl.backends.base import BackendError, Generation, GenerationRequest, check_adapters
from llmmarl.backends.device import resolve_device, resolve_dtype, triton_status
from llmmarl.backends.sampling import SeededSampler
from llmmarl.models import resolve_model

BASE = "__base__"  # PEFT's name for "no adapter" in mixed-adapter batches

_KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (batch, kv_heads, tokens, head_dim)


class _LogprobRecorder(LogitsProcessor):
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


class _GrammarProcessor(LogitsProcessor):
    """Masks each row's logits to what its xgrammar grammar allows; rows without a grammar are untouched.

    xgrammar's own ``contrib.hf.LogitsProcessor`` needs a grammar for every row; our batches mix constrained
    and free requests, hence this small variant. The matchers fill the bitmask on the CPU (xgrammar's
    ``fill_next_token_bitmask`` only writes CPU tensors); each step copies it to the logits' device, where
    ``apply`` masks the logits (see :class:`_BitmaskApply`).
    """

    def __init__(self, grammars: Sequence[Any | None], vocab_size: int, apply: _BitmaskApply) -> None:
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.rows = [i for i, m in enumerate(self.matchers) if m is not None]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)  # (B, ceil(V / 32)) int32, CPU
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


class _BitmaskApply:
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


class TransformersBackend:
    """A base model plus named LoRA adapters, generating batches on CPU or GPU.

    Args:
        model: ``"default"``, ``"tiny"``, a local folder or a hub id (see :mod:`llmmarl.models`).
        adapters: adapter name -> PEFT adapter folder, loaded at start.
        max_batch_size: rows per ``generate`` call; bigger batches amortise the forward pass.
        dtype: ``"float32"`` is the fast choice on CPU (bf16 is ~3x slower there); ``"auto"`` picks bf16 on GPU.
        seed: seeds sampling of requests without a ``seed`` of their own; each call forks torch's RNG so no global
            state leaks out. Requests that carry a ``seed`` (the runner's) are drawn from it alone, per row.
        prefix_cache: compute the common token prefix of a batch once and keep prefixes across calls (see the
            module docs). Batches then hold one adapter each; ``False`` mixes adapters in a batch and caches
            nothing (may be faster on a GPU). Can be switched at any time through the attribute.
        prefix_cache_size: prefixes kept across calls (LRU). Each costs ``2 * layers * kv_heads * head_dim``
            values per token (SmolLM2-135M in float32: 46 KB per token, ~20 MB for a 430-token prompt);
            0 keeps none (prefixes are still shared within a batch).
        colocate: as a trainer's :class:`~llmmarl.backends.base.RolloutEngine`, offer this model for training in
            place (the default: one copy of the weights). ``False`` makes the trainer keep its own copy and ship
            each update's adapters through folders, as a separate engine (a vLLM server) needs.

    ``device`` and ``dtype`` default to :mod:`llmmarl.backends.device`'s choice: CUDA in bfloat16 when a GPU is
    visible, else the CPU in float32.
    """

    def __init__(
        self,
        model: str = "default",
        adapters: Mapping[str, str | Path] | None = None,
        max_batch_size: int = 64,
        dtype: str = "auto",
        device: str | None = None,
        seed: int = 0,
        prefix_cache: bool = True,
        prefix_cache_size: int = 16,
        colocate: bool = True,
    ) -> None:
        self.model_name = model
        path = resolve_model(model)
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # decoder-only batching: pad on the left so new tokens line up
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model_: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        self.model: Any = model_.to(self.device)
        self.model.eval()
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.prefix_cache = prefix_cache
        self.prefix_cache_size = prefix_cache_size
        self.colocate = colocate
        self._sync_dir: Path | None = None  # where refresh_adapters writes adapter versions of a separate learner
        # (adapter, prefix tokens) -> per-layer keys/values of the prefix at batch size 1; most recently used last.
        self._prefixes: OrderedDict[tuple[str, tuple[int, ...]], _KV] = OrderedDict()
        # What the weights were when the cache was filled: (storage, version) of every parameter, and a copy of the
        # LoRA and trainable ones (see _check_weights).
        self._weights: tuple[tuple[int, int], ...] | None = None
        self._watched: list[torch.Tensor] = []
        text_config = self.model.config.get_text_config(decoder=True)
        layers = DynamicCache(config=text_config).layers
        # Sliding-window or linear-attention layers cannot be cut to a prefix, and a static cache cannot take ours:
        # such models run without the prefix cache.
        self._prefix_supported = (
            bool(layers)
            and all(type(layer) is DynamicLayer for layer in layers)
            and getattr(self.model.generation_config, "cache_implementation", None) is None
        )
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._calls = 0
        self._grammar_compiler: Any = None
        self._bitmask_apply = _BitmaskApply()
        self.stats: dict[str, int] = defaultdict(int)
        for name, adapter_path in (adapters or {}).items():
            self.load_adapter(name, adapter_path)

    # ---- adapters -------------------------------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        cfg = getattr(self.model, "peft_config", None)
        return sorted(cfg) if cfg else []

    def load_adapter(self, name: str, path: str | Path, version: int | None = None) -> None:
        """Load (or replace) a PEFT LoRA adapter folder under ``name``; drops the prefixes cached for ``name``.

        ``version`` is not needed here (the weights are read from ``path`` now and nothing caches by folder)."""
        from peft import PeftModel

        if not (Path(path) / "adapter_config.json").exists():
            raise BackendError(f"{path} is not a PEFT adapter folder (no adapter_config.json)")
        self.clear_prefix_cache(name)
        if isinstance(self.model, PeftModel):
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()

    def unload_adapter(self, name: str) -> None:
        """Delete adapter ``name`` from the model (a league snapshot that left the pool, say); unknown: ignored."""
        if name in self.adapters:
            self.clear_prefix_cache(name)
            self.model.delete_adapter(name)

    # ---- the rollout-engine side (see llmmarl.backends.base.RolloutEngine) ------------------------------------
    def learner_model(self) -> Any | None:
        """This backend's model, for a trainer to train in place; None with ``colocate=False``."""
        return self.model if self.colocate else None

    def use_model(self, model: Any) -> None:
        """Generate with ``model`` (the trainer's PEFT-wrapped version of :meth:`learner_model`) from now on."""
        self.model = model
        self.clear_prefix_cache()

    def refresh_adapters(self, model: Any, names: Sequence[str], version: int) -> None:
        """Serve ``model``'s current weights for ``names``.

        When ``model`` is this backend's own (colocated training), the weights already are the served ones: only
        the prefixes cached under the old weights go (all of them: the base may be trained too). Otherwise each
        adapter is saved to a folder of its own for this ``version`` and loaded, as a separate engine would do.
        """
        if model is self.model:
            self.clear_prefix_cache()
            return
        import tempfile

        if self._sync_dir is None:
            self._sync_dir = Path(tempfile.mkdtemp(prefix="llmmarl-adapters-"))
        for name in names:
            folder = self._sync_dir / f"{name}-v{version}"
            model.save_pretrained(str(folder), selected_adapters=[name])
            # PEFT writes an adapter not named "default" to a subfolder of its own name.
            self.load_adapter(name, folder / name if name != "default" else folder, version)
            for old in self._sync_dir.glob(f"{name}-v*"):
                if old != folder:
                    shutil.rmtree(old, ignore_errors=True)

    def state_dict(self) -> dict[str, Any]:
        """The generate-call counter that seeds each call's sampling: a resumed run continues the same sequence."""
        return {"calls": self._calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._calls = int(state["calls"])

    # ---- prefix cache ---------------------------------------------------------------------------------------
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
        """Safety net: drop the cache if any weight changed since it was filled (see the module docs).

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

    def _prefix_kv(self, adapter: str, prefix: tuple[int, ...]) -> _KV:
        """Keys/values of ``prefix`` under ``adapter`` at batch size 1: from the LRU, extended or computed."""
        best, have = None, 0
        for key in self._prefixes:
            if key[0] == adapter and (n := _common_prefix_len([key[1], prefix])) > have:
                best, have = key, n
        kv: _KV = []
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

    def _forward_prefix(self, adapter: str, past: _KV, tokens: Sequence[int]) -> _KV:
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

    # ---- tokens ------------------------------------------------------------------------------------------------
    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else str(self.tokenizer.decode(ids[:max_tokens]))

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        out = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if isinstance(out, Mapping) else out
        return [int(t) for t in ids]

    def _compile(self, grammar: str) -> Any:
        if self._grammar_compiler is None:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
            self._grammar_compiler = xgr.GrammarCompiler(info)  # caches compiled grammars by text
        return self._grammar_compiler.compile_grammar(grammar)

    # ---- generation ----------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        check_adapters(self, requests)
        prompts = [self.prompt_ids(r) for r in requests]
        share = self.prefix_cache and self._prefix_supported
        if share:
            self._check_weights()
        groups: dict[tuple[float, float, int, str], list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            # A prefix's keys/values depend on the adapter: with the prefix cache, one adapter per batch.
            groups[(r.temperature, r.top_p, r.max_new_tokens, (r.adapter or BASE) if share else "")].append(i)
        results: list[Generation | None] = [None] * len(requests)
        for idx in groups.values():
            # Sort by adapter then length: less padding, and PEFT's mixed batches run one sub-batch per adapter.
            idx.sort(key=lambda i: (requests[i].adapter or "", len(prompts[i])))
            for start in range(0, len(idx), self.max_batch_size):
                chunk = idx[start : start + self.max_batch_size]
                outs = self._generate_chunk([requests[i] for i in chunk], [prompts[i] for i in chunk])
                for i, g in zip(chunk, outs, strict=True):
                    results[i] = g
        return [g for g in results if g is not None]

    def _shared_prefix(self, reqs: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> tuple[int, ...]:
        """The tokens every prompt of the chunk starts with, leaving at least one token of each outside."""
        if not (self.prefix_cache and self._prefix_supported) or len({r.adapter or BASE for r in reqs}) != 1:
            return ()
        n = min(_common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
        return tuple(prompts[0][:n])

    @torch.inference_mode()
    def _generate_chunk(self, reqs: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> list[Generation]:
        pad = self.tokenizer.pad_token_id
        prefix = self._shared_prefix(reqs, prompts)
        n = len(prefix)
        # Rows are [shared prefix | left padding | own suffix]; the prefix's keys/values come from the cache, and
        # generate derives the positions from the mask, so every suffix starts at position n (see the module docs).
        width = n + max(len(p) - n for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        if n:
            input_ids[:, :n] = torch.tensor(prefix)
            attention[:, :n] = 1
        for row, p in enumerate(prompts):
            input_ids[row, width - (len(p) - n) :] = torch.tensor(p[n:])
            attention[row, width - (len(p) - n) :] = 1
        recorder = _LogprobRecorder()
        processors: list[LogitsProcessor] = [recorder]
        if any(r.grammar for r in reqs):
            grammars = [self._compile(r.grammar) if r.grammar else None for r in reqs]
            processors.append(_GrammarProcessor(grammars, self.model.config.vocab_size, self._bitmask_apply))
        first = reqs[0]
        kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_new_tokens,
            "do_sample": first.temperature > 0,
            "pad_token_id": pad,
            "eos_token_id": self.tokenizer.eos_token_id,
            "logits_processor": LogitsProcessorList(processors),
        }
        if first.temperature > 0 and all(r.seed is not None for r in reqs):
            # Each row draws from its own request's seed, whatever else shares the batch (see backends/sampling.py).
            seeds = [int(r.seed) for r in reqs if r.seed is not None]
            kwargs["logits_processor"].append(SeededSampler(seeds, first.temperature, first.top_p, self.device))
            kwargs["do_sample"] = False
        elif first.temperature > 0:
            kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
        if self.adapters:
            kwargs["adapter_names"] = [r.adapter or BASE for r in reqs]
        if n:
            kv = self._prefix_kv(first.adapter or BASE, prefix)
            rows = len(prompts)
            # expand() is a view; the cache's first update concatenates, so the stored tensors are never written.
            kwargs["past_key_values"] = DynamicCache(
                ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv],
                config=self.model.config.get_text_config(decoder=True),
            )
            self.stats["prefix_shared_tokens"] += n * rows
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        self._calls += 1
        with torch.random.fork_rng(devices=[self.device] if self.device != "cpu" else []):
            torch.manual_seed(self.seed * 1_000_003 + self._calls)
            seqs = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
            )
        new = seqs[:, width:]  # (B, T), on the model's device like the recorded log-probs
        logprobs = recorder.finish(new[:, -1]).cpu() if new.shape[1] else torch.zeros(len(reqs), 0)
        new = new.cpu()
        eos = self.tokenizer.eos_token_id
        out: list[Generation] = []
        for row, p in enumerate(prompts):
            tokens = new[row].tolist()
            stop = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            ids = tokens[:stop]
            self.stats["generated_tokens"] += len(ids)
            out.append(
                Generation(
                    text=self.tokenizer.decode(ids, skip_special_tokens=True),
                    prompt_ids=list(p),
                    completion_ids=ids,
                    logprobs=[float(x) for x in logprobs[row, :stop]],
                    finish_reason="stop" if eos in tokens else "length",
                )
            )
        self.stats["requests"] += len(reqs)
        self.stats["batches"] += 1
        return out


def _common_prefix_len(seqs: Sequence[Any]) -> int:
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
