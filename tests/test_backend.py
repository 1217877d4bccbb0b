"""The transformers backend: logprobs are the model's, mixed-adapter batches equal separate runs.

These tests run on whatever device torch finds (CUDA when present) and check exact properties: a mixed-adapter batch
answers as separate calls do, the prefix cache changes no sample. Those are properties of the algorithm, so every
backend here runs in float32 (``EXACT``), where a different batch layout changes logits by ~1e-7 and logprobs match
a forward pass to 1e-4. In bfloat16, the GPU default, the same layouts round logits differently by ~0.4% of their
size, which flips near-tied samples (common with random weights): ``tests/test_gpu.py`` checks bf16 with a stated
tolerance instead.
"""

from __future__ import annotations

import pytest
import torch

from llmmarl.backends.base import BackendError, GenerationRequest
from llmmarl.backends.transformers import TransformersBackend

CHAT = [{"role": "user", "content": "Pick a number from 1 to 9."}]
EXACT = "float32"  # see the module docs


def _backend(**kw) -> TransformersBackend:
    return TransformersBackend("tiny", dtype=EXACT, **kw)


def _lora(backend: TransformersBackend, path, seed: int) -> None:
    """Save a random (non-zero) LoRA adapter for the tiny model, so it answers differently from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    cfg = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(path)


@pytest.fixture(scope="module")
def backend_with_adapters(tmp_path_factory):
    backend = _backend(seed=0)
    for i, name in enumerate(("a", "b")):
        path = tmp_path_factory.mktemp(name)
        _lora(backend, path, seed=i)
        backend.load_adapter(name, path)
    return backend


def test_logprobs_match_a_forward_pass(backend_with_adapters):
    b = backend_with_adapters
    for adapter in (None, "a"):
        (g,) = b.generate([GenerationRequest(messages=CHAT, adapter=adapter, temperature=1.0, max_new_tokens=12)])
        ids = torch.tensor([g.prompt_ids + g.completion_ids], device=b.device)
        model = b.model
        with torch.no_grad():
            if adapter is None:
                with model.disable_adapter():
                    logits = model(ids).logits
            else:
                model.set_adapter(adapter)
                logits = model(ids).logits
        lp = torch.log_softmax(logits[0, len(g.prompt_ids) - 1 : -1].float(), -1)
        ref = lp.gather(1, torch.tensor(g.completion_ids, device=b.device)[:, None]).squeeze(1).cpu()
        assert len(g.logprobs) == len(g.completion_ids) == 12
        assert torch.allclose(ref, torch.tensor(g.logprobs), atol=1e-4)


def test_mixed_adapter_batch_equals_separate_calls(backend_with_adapters):
    b = backend_with_adapters
    reqs = [GenerationRequest(messages=CHAT, adapter=a, temperature=0.0, max_new_tokens=10) for a in ("a", None, "b")]
    mixed = b.generate(reqs)
    alone = [b.generate([r])[0] for r in reqs]
    assert [g.completion_ids for g in mixed] == [g.completion_ids for g in alone]
    # ...and the adapters really change the answer.
    assert len({tuple(g.completion_ids) for g in mixed}) == 3


def test_unknown_adapter_is_a_clear_error(backend_with_adapters):
    with pytest.raises(BackendError, match="unknown adapter"):
        backend_with_adapters.generate([GenerationRequest(messages=CHAT, adapter="nope")])


def test_load_adapter_rejects_a_folder_that_is_not_an_adapter(tmp_path):
    b = _backend()
    with pytest.raises(BackendError, match="not a PEFT adapter"):
        b.load_adapter("x", tmp_path)


def test_same_seed_same_samples():
    r = [GenerationRequest(messages=CHAT, temperature=1.0, max_new_tokens=8)] * 3
    a = _backend(seed=7).generate(r)
    b = _backend(seed=7).generate(r)
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]


def test_truncate_counts_model_tokens():
    b = _backend()
    text = "one two three four five six seven"
    cut = b.truncate(text, 3)
    assert len(b.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 3
    assert text.startswith(cut)


# ---- shared-prefix KV cache ------------------------------------------------------------------------------------
RULES = "Tic-tac-toe on a 3x3 grid. Players take turns placing their mark; three in a row wins. " * 5
USERS = [
    "You are player_1.\nBoard: empty.\nLegal actions: 1, 2, 3, 4, 5, 6, 7, 8, 9",
    "You are player_2.\nBoard: X in the centre and an O in the corner.\nLegal actions: 1, 2, 3",
    "Go.",
    "Go.",  # identical prompts: at least one token of each must stay outside the shared prefix
]


def _chat(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"You play tictactoe_v3.\nRules: {RULES}"}, {"role": "user", "content": user}]


def _requests(adapters=(None,), **kw) -> list[GenerationRequest]:
    kw = {"temperature": 0.0, "max_new_tokens": 10, **kw}
    reqs = [GenerationRequest(messages=_chat(u), adapter=a, **kw) for a in adapters for u in USERS]
    # A re-ask: the first prompt is a prefix of this one.
    more = [*_chat(USERS[0]), {"role": "assistant", "content": "hmm"}, {"role": "user", "content": "Answer again."}]
    return [*reqs, GenerationRequest(messages=more, adapter=adapters[0], **kw)]


def _run(b: TransformersBackend, reqs, prefix_cache: bool):
    old = b.prefix_cache
    b.prefix_cache = prefix_cache
    try:
        return b.generate(reqs)
    finally:
        b.prefix_cache = old


def _assert_same(off, on) -> None:
    assert [g.completion_ids for g in on] == [g.completion_ids for g in off]
    for x, y in zip(off, on, strict=True):
        assert x.prompt_ids == y.prompt_ids and x.finish_reason == y.finish_reason
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4)


@pytest.mark.parametrize("adapter", [None, "a"])
def test_prefix_cache_gives_the_same_generations(backend_with_adapters, adapter):
    b = backend_with_adapters
    b.clear_prefix_cache()
    reqs = _requests((adapter,))
    lengths = {len(b.prompt_ids(r)) for r in reqs}
    assert len(lengths) >= 3  # the suffixes differ in length: rows are padded between prefix and suffix
    off = _run(b, reqs, prefix_cache=False)
    shared = b.stats["prefix_shared_tokens"]
    on = _run(b, reqs, prefix_cache=True)
    _assert_same(off, on)
    system = len(b.tokenizer.apply_chat_template(_chat("x")[:1], tokenize=True)["input_ids"])
    assert b.stats["prefix_shared_tokens"] - shared >= len(reqs) * system  # the system prompt really was shared


def test_prefix_cache_gives_the_same_samples():
    """Same seed, same batches: sampled answers are identical with and without the prefix cache."""
    reqs = _requests((None,), temperature=1.0, max_new_tokens=12)
    off = _backend(seed=3, prefix_cache=False).generate(reqs)
    on = _backend(seed=3).generate(reqs)
    _assert_same(off, on)
    assert len({tuple(g.completion_ids) for g in on}) > 1


def test_prefix_cache_gives_the_same_samples_logprobs(backend_with_adapters):
    """Sampling: the recorded logprobs of the sampled tokens equal a plain forward pass over prompt + answer."""
    b = backend_with_adapters
    gens = _run(b, _requests(("b",), temperature=1.0, max_new_tokens=8), prefix_cache=True)
    model = b.model
    model.set_adapter("b")
    for g in gens:
        ids = torch.tensor([g.prompt_ids + g.completion_ids], device=b.device)
        with torch.no_grad():
            logits = model(ids).logits
        lp = torch.log_softmax(logits[0, len(g.prompt_ids) - 1 : -1].float(), -1)
        ref = lp.gather(1, torch.tensor(g.completion_ids, device=b.device)[:, None]).squeeze(1).cpu()
        assert torch.allclose(ref, torch.tensor(g.logprobs), atol=1e-4)


def test_prefix_cache_with_mixed_adapters(backend_with_adapters):
    b = backend_with_adapters
    reqs = _requests(("a", None, "b"))
    reqs = reqs[::2] + reqs[1::2]  # interleave the adapters
    before = b.stats["batches"]
    off = _run(b, reqs, prefix_cache=False)  # one mixed-adapter batch
    assert b.stats["batches"] - before == 1
    on = _run(b, reqs, prefix_cache=True)  # one batch per adapter, each with its own prefix
    assert b.stats["batches"] - before == 1 + 3
    _assert_same(off, on)
    same_prompt = [g.completion_ids for r, g in zip(reqs, on, strict=True) if r.messages == reqs[0].messages]
    assert len(same_prompt) == 3 and len({tuple(c) for c in same_prompt}) == 3  # the adapters answer differently


def test_prefix_cache_with_a_grammar(backend_with_adapters):
    pytest.importorskip("xgrammar")
    b = backend_with_adapters
    grammar = 'root ::= "ACTION: " ("1" | "2" | "3" | "10")'
    reqs = [r.model_copy(update={"grammar": grammar if i % 2 else None}) for i, r in enumerate(_requests(("a",)))]
    off = _run(b, reqs, prefix_cache=False)
    on = _run(b, reqs, prefix_cache=True)
    _assert_same(off, on)
    for r, g in zip(reqs, on, strict=True):
        if r.grammar:
            assert g.text in {"ACTION: 1", "ACTION: 2", "ACTION: 3", "ACTION: 10"}


def test_prefix_cache_across_calls_and_invalidation(tmp_path):
    b = _backend(seed=0)
    _lora(b, tmp_path / "p0", seed=0)
    _lora(b, tmp_path / "p1", seed=5)
    b.load_adapter("pol", tmp_path / "p0")
    reqs = _requests(("pol",))
    first = b.generate(reqs)
    computed = b.stats["prefix_tokens_computed"]
    assert computed > 0 and b.stats["prefix_cache_hit_tokens"] == 0
    again = b.generate(reqs)  # the prefix comes from the cache: nothing recomputed, same answers
    assert b.stats["prefix_tokens_computed"] == computed and b.stats["prefix_cache_hit_tokens"] > 0
    _assert_same(first, again)
    one = b.generate(reqs[1:2])  # a longer prefix extends the cached one
    _assert_same(first[1:2], one)
    assert b.stats["prefix_tokens_computed"] - computed < len(one[0].prompt_ids) - 1

    b.load_adapter("pol", tmp_path / "p1")  # new weights under the same name: the cached prefixes are dropped
    hits = b.stats["prefix_cache_hit_tokens"]
    replaced = b.generate(reqs)
    assert b.stats["prefix_cache_hit_tokens"] == hits
    _assert_same(_run(b, reqs, prefix_cache=False), replaced)
    assert [g.completion_ids for g in replaced] != [g.completion_ids for g in first]


def _fused_adamw_step(params: list[torch.nn.Parameter]) -> None:
    for p in params:
        p.grad = torch.ones_like(p)
    torch.optim.AdamW(params, lr=0.5, fused=True).step()  # in place, without bumping autograd's version counter


def _data_write(params: list[torch.nn.Parameter]) -> None:
    for p in params:
        p.data.mul_(-3.0)  # bypasses the version counter too


def _in_place(params: list[torch.nn.Parameter]) -> None:
    with torch.no_grad():
        for p in params:
            p.mul_(-3.0)


@pytest.mark.parametrize("update", [_in_place, _fused_adamw_step, _data_write])
def test_prefix_cache_follows_in_place_weight_updates(tmp_path, update):
    """A trainer's optimizer step changes adapter weights in place: the cached prefixes must not outlive it."""
    b = _backend(seed=0)
    _lora(b, tmp_path / "p", seed=0)
    b.load_adapter("pol", tmp_path / "p")
    reqs = _requests(("pol",))
    before = b.generate(reqs)
    update([p for name, p in b.model.named_parameters() if "lora_B.pol." in name])
    after = b.generate(reqs)
    _assert_same(_run(b, reqs, prefix_cache=False), after)
    assert [g.completion_ids for g in after] != [g.completion_ids for g in before]
    b.clear_prefix_cache()
    _assert_same(after, b.generate(reqs))


def test_prefix_cache_is_bounded():
    b = _backend(prefix_cache_size=2)
    for i in range(5):
        msgs = [{"role": "system", "content": f"Game {i}: " + "rules " * 30}, {"role": "user", "content": "Go."}]
        b.generate([GenerationRequest(messages=msgs, temperature=0.0, max_new_tokens=2)] * 2)
    assert len(b._prefixes) == 2
    b.clear_prefix_cache()
    assert not b._prefixes


def test_the_factory_passes_every_setting_of_the_spec() -> None:
    from llmmarl.backends.factory import BackendSpec, build_backend

    spec = BackendSpec(model="tiny", dtype=EXACT, device="cpu", max_batch_size=3, seed=7, prefix_cache=False)
    b = build_backend(spec.model_copy(update={"colocate": False}))
    assert isinstance(b, TransformersBackend)
    assert (b.max_batch_size, b.seed, b.prefix_cache, b.colocate, b.device) == (3, 7, False, False, "cpu")
    assert b.model.dtype == torch.float32 and b.learner_model() is None
