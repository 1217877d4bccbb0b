"""In-process backend: one transformers base model, many named PEFT LoRA adapters, batched generation.

All pending decisions of all running games go into one :meth:`TransformersBackend.generate` call. Requests are
grouped only by decoding settings (temperature, top-p, token budget); requests for *different adapters share a
batch*, through PEFT's mixed-adapter inference (``adapter_names=`` in ``generate``), so a game between two
adapters costs no more forward passes than self-play.

Logprobs are recorded by :class:`_LogprobRecorder`, a logits processor that runs before temperature, top-p and
the grammar mask, so they are the model's own (untempered, unconstrained) log-probabilities - what vLLM
returns by default and what a policy-gradient ratio needs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from llmmarl.backends.base import BackendError, Generation, GenerationRequest, check_adapters
from llmmarl.models import resolve_model

BASE = "__base__"  # PEFT's name for "no adapter" in mixed-adapter batches


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
        if self._last is not None:
            self.steps.append(self._last.gather(1, last_tokens[:, None]).squeeze(1))
            self._last = None
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros(last_tokens.shape[0], 0)


class _GrammarProcessor(LogitsProcessor):
    """Masks each row's logits to what its xgrammar grammar allows; rows without a grammar are untouched.

    xgrammar's own ``contrib.hf.LogitsProcessor`` needs a grammar for every row; our batches mix constrained
    and free requests, hence this small variant.
    """

    def __init__(self, grammars: Sequence[Any | None], vocab_size: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.rows = [i for i, m in enumerate(self.matchers) if m is not None]
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.vocab_size = vocab_size
        self._started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._started:
            for i in self.rows:
                m = self.matchers[i]
                if m is not None and not m.is_terminated():
                    m.accept_token(int(input_ids[i, -1]))
        self._started = True
        live = [i for i in self.rows if not self.matchers[i].is_terminated()]  # type: ignore[union-attr]
        for i in live:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)  # type: ignore[union-attr]
        if live:
            self._xgr.apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=self.vocab_size, indices=live)
        return scores


class TransformersBackend:
    """A base model plus named LoRA adapters, generating batches on CPU or GPU.

    Args:
        model: ``"default"``, ``"tiny"``, a local folder or a hub id (see :mod:`llmmarl.models`).
        adapters: adapter name -> PEFT adapter folder, loaded at start.
        max_batch_size: rows per ``generate`` call; bigger batches amortise the forward pass.
        dtype: ``"float32"`` is the fast choice on CPU (bf16 is ~3x slower there); ``"auto"`` picks bf16 on GPU.
        seed: seeds sampling; each call forks torch's RNG so no global state leaks out.
    """

    def __init__(
        self,
        model: str = "default",
        adapters: Mapping[str, str | Path] | None = None,
        max_batch_size: int = 64,
        dtype: str = "auto",
        device: str | None = None,
        seed: int = 0,
    ) -> None:
        self.model_name = model
        path = resolve_model(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = _pick_dtype(dtype, self.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # decoder-only batching: pad on the left so new tokens line up
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model_: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        self.model: Any = model_.to(self.device)
        self.model.eval()
        self.max_batch_size = max_batch_size
        self.seed = seed
        self._calls = 0
        self._grammar_compiler: Any = None
        self.stats: dict[str, int] = defaultdict(int)
        for name, adapter_path in (adapters or {}).items():
            self.load_adapter(name, adapter_path)

    # ---- adapters -------------------------------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        cfg = getattr(self.model, "peft_config", None)
        return sorted(cfg) if cfg else []

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load (or replace) a PEFT LoRA adapter folder under ``name``."""
        from peft import PeftModel

        if not (Path(path) / "adapter_config.json").exists():
            raise BackendError(f"{path} is not a PEFT adapter folder (no adapter_config.json)")
        if isinstance(self.model, PeftModel):
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        self.model.eval()

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
        groups: dict[tuple[float, float, int], list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.temperature, r.top_p, r.max_new_tokens)].append(i)
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

    @torch.inference_mode()
    def _generate_chunk(self, reqs: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> list[Generation]:
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            input_ids[row, width - len(p) :] = torch.tensor(p)
            attention[row, width - len(p) :] = 1
        recorder = _LogprobRecorder()
        processors: list[LogitsProcessor] = [recorder]
        if any(r.grammar for r in reqs):
            grammars = [self._compile(r.grammar) if r.grammar else None for r in reqs]
            processors.append(_GrammarProcessor(grammars, self.model.config.vocab_size))
        first = reqs[0]
        kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_new_tokens,
            "do_sample": first.temperature > 0,
            "pad_token_id": pad,
            "eos_token_id": self.tokenizer.eos_token_id,
            "logits_processor": LogitsProcessorList(processors),
        }
        if first.temperature > 0:
            kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
        if self.adapters:
            kwargs["adapter_names"] = [r.adapter or BASE for r in reqs]
        self._calls += 1
        with torch.random.fork_rng(devices=[self.device] if self.device != "cpu" else []):
            torch.manual_seed(self.seed * 1_000_003 + self._calls)
            seqs = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **kwargs
            )
        new = seqs[:, width:].cpu()  # (B, T)
        logprobs = recorder.finish(new[:, -1]).cpu() if new.shape[1] else torch.zeros(len(reqs), 0)
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


def _pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise BackendError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
