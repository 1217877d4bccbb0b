"""The transformers backend: logprobs are the model's, mixed-adapter batches equal separate runs."""

from __future__ import annotations

import pytest
import torch

from llmmarl.backends.base import BackendError, GenerationRequest
from llmmarl.backends.transformers import TransformersBackend

CHAT = [{"role": "user", "content": "Pick a number from 1 to 9."}]


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
    backend = TransformersBackend("tiny", seed=0)
    for i, name in enumerate(("a", "b")):
        path = tmp_path_factory.mktemp(name)
        _lora(backend, path, seed=i)
        backend.load_adapter(name, path)
    return backend


def test_logprobs_match_a_forward_pass(backend_with_adapters):
    b = backend_with_adapters
    for adapter in (None, "a"):
        (g,) = b.generate([GenerationRequest(messages=CHAT, adapter=adapter, temperature=1.0, max_new_tokens=12)])
        ids = torch.tensor([g.prompt_ids + g.completion_ids])
        model = b.model
        with torch.no_grad():
            if adapter is None:
                with model.disable_adapter():
                    logits = model(ids).logits
            else:
                model.set_adapter(adapter)
                logits = model(ids).logits
        lp = torch.log_softmax(logits[0, len(g.prompt_ids) - 1 : -1].float(), -1)
        ref = lp.gather(1, torch.tensor(g.completion_ids)[:, None]).squeeze(1)
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
    b = TransformersBackend("tiny")
    with pytest.raises(BackendError, match="not a PEFT adapter"):
        b.load_adapter("x", tmp_path)


def test_same_seed_same_samples():
    r = [GenerationRequest(messages=CHAT, temperature=1.0, max_new_tokens=8)] * 3
    a = TransformersBackend("tiny", seed=7).generate(r)
    b = TransformersBackend("tiny", seed=7).generate(r)
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]


def test_truncate_counts_model_tokens():
    b = TransformersBackend("tiny")
    text = "one two three four five six seven"
    cut = b.truncate(text, 3)
    assert len(b.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 3
    assert text.startswith(cut)
