"""The learner model: one shared base model with one LoRA adapter per learner (and any an algorithm adds).

A trainer trains its own handle on this model: the engine's model when the engine runs in-process and offers it,
else a copy of the base model loaded here (:func:`load_base_model`), placed and typed as a backend would place it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llmmarl.backends.device import resolve_device, resolve_dtype
from llmmarl.train.config import TrainConfig
from llmmarl.train.settings import LoraSettings


def lora_config(settings: LoraSettings) -> Any:
    """PEFT's LoraConfig for one adapter."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        layers_to_transform=settings.layers,
        task_type="CAUSAL_LM",
    )


def attach_adapters(model: Any, cfg: TrainConfig, extra: Sequence[tuple[str, LoraSettings]] = ()) -> Any:
    """Give ``model`` one LoRA adapter per learner (fresh, or loaded from ``init_adapter``), then the fresh
    ``extra`` adapters (name, shape); returns the PEFT model."""
    from peft import PeftModel, get_peft_model

    def add(model: Any, name: str, settings: LoraSettings) -> Any:
        if isinstance(model, PeftModel):
            model.add_adapter(name, lora_config(settings))
            return model
        return get_peft_model(model, lora_config(settings), adapter_name=name)

    with torch.random.fork_rng():  # seeded adapter init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        for lr in cfg.learners:
            if not lr.init_adapter:
                model = add(model, lr.name, lr.lora)
            elif isinstance(model, PeftModel):
                model.load_adapter(lr.init_adapter, adapter_name=lr.name, is_trainable=True)
            else:
                model = PeftModel.from_pretrained(model, lr.init_adapter, adapter_name=lr.name, is_trainable=True)
        for name, settings in extra:
            model = add(model, name, settings)
    return model


def load_base_model(name: str, device: str | None) -> Any:
    """The trainer's own copy of base model ``name`` (for an engine that does not share its model), placed and
    typed as a backend would place it (:mod:`llmmarl.backends.device`)."""
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    where = resolve_device(device)
    model: Any = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=resolve_dtype("auto", where))
    return model.to(where)


def adapter_parameters(model: Any, name: str) -> list[torch.nn.Parameter]:
    """The LoRA weights of adapter ``name`` (PEFT names them ``...lora_A.<name>.weight``)."""
    return [p for n, p in model.named_parameters() if f".{name}." in n and "lora_" in n]
