"""In-process backend: one transformers base model, many named PEFT LoRA adapters, batched generation.

All pending decisions of all running games go into one :meth:`TransformersBackend.generate` call. Requests are
grouped by decoding settings (temperature, top-p, token budget) and, with the prefix cache on (the default), by
adapter.

With the prefix cache on, each batch prefills its prompts' common prefix (the game's system prompt) once and
keeps it across calls: :mod:`llmmarl.backends.prefix_cache` explains how, the trade-off (one adapter per
batch), and when cached prefixes go stale. Log-probabilities and grammar masks come from the logits processors of
:mod:`llmmarl.backends.logits`: the log-probabilities are the model's own (untempered, unconstrained).

The backend object itself: loading the model and adapters, the rollout-engine side a trainer uses, tokens, and
batched generation, and the exact answer distributions of :mod:`llmmarl.backends.answer_search`.
"""

from __future__ import annotations

import inspect
import shutil
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicLayer

from llmmarl.backends.base import (
    AnswerDistribution,
    AnswerQuery,
    BackendError,
    Generation,
    GenerationRequest,
    check_adapters,
)
from llmmarl.backends.choices import ChoiceMatcher, ChoiceTrie, choice_trie
from llmmarl.backends.device import resolve_device, resolve_dtype
from llmmarl.backends.logits import BitmaskApply, GrammarProcessor, LogprobRecorder
from llmmarl.backends.prefix_cache import PrefixCache, common_prefix_len
from llmmarl.backends.sampling import SeededSampler
from llmmarl.models import resolve_model

BASE = "__base__"  # PEFT's name for "no adapter" in mixed-adapter batches


class TransformersBackend(PrefixCache):
    """A base model plus named LoRA adapters, generating batches on CPU or GPU.

    Args:
        model: ``"default"``, ``"tiny"``, a local folder or a hub id (see :mod:`llmmarl.models`).
        adapters: adapter name -> PEFT adapter folder, loaded at start.
        max_batch_size: rows per ``generate`` call; bigger batches amortise the forward pass.
        dtype: ``"float32"`` is the fast choice on CPU (bf16 is ~3x slower there); ``"auto"`` picks bf16 on GPU.
        seed: seeds sampling of requests without a ``seed`` of their own; each call forks torch's RNG so no global
            state leaks out. Requests that carry a ``seed`` (the runner's) are drawn from it alone, per row.
        prefix_cache: compute the common token prefix of a batch once and keep prefixes across calls (see
            :mod:`llmmarl.backends.prefix_cache`). Batches then hold one adapter each; ``False`` mixes adapters in
            a batch and caches nothing (may be faster on a GPU). Can be switched at any time through the attribute.
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
        # The prefix cache's state (what each attribute holds: see PrefixCache).
        self._prefixes = OrderedDict()
        self._weights = None
        self._watched = []
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
        self._choice_tries: dict[tuple[str, ...], ChoiceTrie] = {}  # by the choices' texts
        self._bitmask_apply = BitmaskApply()
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

    # ---- tokens ------------------------------------------------------------------------------------------------
    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else str(self.tokenizer.decode(ids[:max_tokens]))

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        out = self.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if isinstance(out, Mapping) else out
        return [int(t) for t in ids]

    def matcher(self, request: GenerationRequest) -> Any | None:
        """What constrains ``request``'s answer, at its start: its closed list of choices, its grammar, or None."""
        if request.choices:
            key = tuple(request.choices)
            trie = self._choice_tries.get(key)
            if trie is None:
                trie = self._choice_tries[key] = choice_trie(
                    self.tokenizer, request.choices, self.tokenizer.eos_token_id
                )
            if trie.longest > request.max_new_tokens:
                raise ValueError(
                    f"max_new_tokens={request.max_new_tokens} is shorter than the longest choice ({trie.longest} "
                    "tokens with its end token)"
                )
            return ChoiceMatcher(trie)
        if request.grammar:
            import xgrammar as xgr

            return xgr.GrammarMatcher(self._compile(request.grammar))
        return None

    def _compile(self, grammar: str) -> Any:
        if self._grammar_compiler is None:
            import xgrammar as xgr

            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size)
            self._grammar_compiler = xgr.GrammarCompiler(info)  # caches compiled grammars by text
        return self._grammar_compiler.compile_grammar(grammar)

    # ---- reading answers exactly (the AnswerReader capability) ----------------------------------------------
    def answer_distribution(
        self, queries: Sequence[AnswerQuery], min_prob: float = 1e-6, max_nodes: int = 2048
    ) -> list[AnswerDistribution]:
        """Every answer each query can get with its probability, as :meth:`generate` would sample it.

        See :mod:`llmmarl.backends.answer_search`: paths below ``min_prob``, or beyond the ``max_nodes`` most
        probable of their depth, are counted in ``unexplored``.
        """
        from llmmarl.backends.answer_search import answer_distribution

        check_adapters(self, [q.request for q in queries])
        if self.prefix_cache and self._prefix_supported:
            self._check_weights()
        return answer_distribution(self, queries, min_prob=min_prob, max_nodes=max_nodes)

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
        n = min(common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
        return tuple(prompts[0][:n])

    @torch.inference_mode()
    def _generate_chunk(self, reqs: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> list[Generation]:
        pad = self.tokenizer.pad_token_id
        prefix = self._shared_prefix(reqs, prompts)
        n = len(prefix)
        # Rows are [shared prefix | left padding | own suffix]; the prefix's keys/values come from the cache, and
        # generate derives the positions from the mask, so every suffix starts at position n (see prefix_cache.py).
        width = n + max(len(p) - n for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        if n:
            input_ids[:, :n] = torch.tensor(prefix)
            attention[:, :n] = 1
        for row, p in enumerate(prompts):
            input_ids[row, width - (len(p) - n) :] = torch.tensor(p[n:])
            attention[row, width - (len(p) - n) :] = 1
        recorder = LogprobRecorder()
        processors: list[LogitsProcessor] = [recorder]
        if any(r.grammar or r.choices for r in reqs):
            matchers = [self.matcher(r) for r in reqs]
            processors.append(GrammarProcessor(matchers, self.model.config.vocab_size, self._bitmask_apply))
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
