"""The steps of ``scripts/gpu_check.sh``: environment report, random-weight models of real shapes, rollout benchmark.

    python scripts/gpu_check.py env                      # versions, GPU, Triton, missing packages (exit 1 if any)
    python scripts/gpu_check.py models [--model-files D] # SmolLM2-135M-shaped random model as the `default` model
    python scripts/gpu_check.py bench --out F.json       # runner at 1/8/32/256 games vs raw generate vs one at a time
    python scripts/gpu_check.py prepare DIR              # (on a machine with the real model) tokenizer files to carry

No step needs the network. ``models`` writes under ``$LLMMARL_CACHE/models/SmolLM2-135M-Instruct`` a model with
SmolLM2-135M-Instruct's exact config and random weights. Its tokenizer comes from ``--model-files`` (what
``prepare`` wrote, or the real model's folder; ``gpu_check.sh`` passes the local default model's when it finds one),
else it is a byte-level BPE trained here on the repository's own text and padded to the real 49,152 entries
(~10 s). Random weights make every answer invalid and never stop early: every request generates its full
``max_new_tokens``, a steady workload for throughput, and re-asks are off so that invalid answers cost no extra
turns.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Imported by llmmarl, its tests or this check, beyond torch / transformers / peft (import name -> pip name).
PACKAGES = {
    "accelerate": "accelerate",
    "pydantic": "pydantic",
    "numpy": "numpy",
    "jinja2": "jinja2",
    "yaml": "pyyaml",
    "typer": "typer",
    "rich": "rich",
    "tqdm": "tqdm",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "pettingzoo": "pettingzoo",
    "gymnasium": "gymnasium",
    "shimmy": "shimmy",
    "pyspiel": "open-spiel",
    "xgrammar": "xgrammar",
    "trl": "trl",
    "datasets": "datasets",
    "pytest": "pytest",
}

# SmolLM2-135M-Instruct's config.json (HuggingFaceTB/SmolLM2-135M-Instruct), the shape every figure refers to.
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 576,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "mlp_bias": False,
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "rms_norm_eps": 1e-05,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "use_cache": True,
    "vocab_size": 49152,
}
CHAT_TEMPLATE = (  # SmolLM2-Instruct's ChatML template
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


# ---- env ---------------------------------------------------------------------------------------------------------
def env(_: argparse.Namespace) -> int:
    import torch
    import transformers

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
    for name in ("peft", "trl", "xgrammar", "triton"):
        found = importlib.util.find_spec(name) is not None
        print(f"  {name}: {_version(name) if found else 'not installed'}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
        from llmmarl.backends.device import triton_status

        ok, why = triton_status()
        cc = shutil.which(os.environ.get("CC", "")) or shutil.which("cc") or shutil.which("gcc")
        print(f"Triton kernels: {'run' if ok else 'do NOT run (' + why + ')'}; C compiler: {cc or 'none found'}")
        if not ok:
            print("  -> grammar masks and GRPO's log-probs take their plain-torch paths (slower, same results)")
    else:
        print("GPU: none (torch.cuda.is_available() is False)")
    missing = [pip for mod, pip in PACKAGES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        print(f"MISSING packages: {' '.join(missing)}  (scripts/fetch_wheels.sh DIR fetches them as wheels)")
        return 1
    print(f"packages beyond torch/transformers/peft: all {len(PACKAGES)} present")
    return 0


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "installed"


# ---- models ------------------------------------------------------------------------------------------------------
def models(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmmarl.models import cache_dir

    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        print(f"{target} exists: kept")
        return 0
    start = time.perf_counter()
    tmp = target.with_name(target.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    source = _tokenizer_source(args.model_files)
    if source is None:
        _synthetic_tokenizer(tmp)
        print("tokenizer: byte-level BPE trained here on the repository's text, padded to 49,152 entries")
    else:
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        print(f"tokenizer: from {source}")
    tok = AutoTokenizer.from_pretrained(tmp)
    if not tok.chat_template:
        (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    # bf16 on disk: half the bytes; the backend loads it in its own dtype (bf16 on CUDA, float32 on CPU).
    model.to(torch.bfloat16).save_pretrained(tmp)
    tmp.rename(target)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"random-weight SmolLM2-135M shape ({params:.1f} M parameters) in {target}, {time.perf_counter() - start:.0f}s"
    )
    return 0


def _tokenizer_source(model_files: Path | None) -> str | None:
    if model_files is None:
        return None
    if not (model_files / "tokenizer.json").exists():
        raise SystemExit(f"--model-files {model_files}: no tokenizer.json there")
    return str(model_files)


def _synthetic_tokenizer(out: Path) -> None:
    """A byte-level BPE with SmolLM2's special tokens and vocabulary size, trained on this repository's text.

    Entries past what the corpus supports are plain vocabulary tokens (``<r123>``) that no merge produces: they
    decode like any other token, so random weights may sample them, and they cost nothing at load time (added
    tokens would: 38k of them take ~40 s to load).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    vocab_size = SMOLLM2_135M["vocab_size"]
    assert isinstance(vocab_size, int)
    files = [
        str(p)
        for p in sorted(ROOT.rglob("*"))
        if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".jinja", ".txt", ".toml"} and ".venv" not in str(p)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],  # ids 0, 1, 2 as in SmolLM2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(vocab_size - len(vocab)):
        vocab[f"<r{i}>"] = len(vocab)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def prepare(args: argparse.Namespace) -> int:
    """Copy the real default model's tokenizer files (a few MB, no weights) to ``args.dir`` to carry elsewhere."""
    from llmmarl.models import resolve_model

    src = Path(resolve_model("default"))
    args.dir.mkdir(parents=True, exist_ok=True)
    copied = [f for f in TOKENIZER_FILES if (src / f).exists()]
    for f in copied:
        shutil.copy(src / f, args.dir / f)
    print(f"copied {', '.join(copied)} from {src} to {args.dir}: pass it as gpu_check.sh --model-files {args.dir}")
    return 0


# ---- bench -------------------------------------------------------------------------------------------------------
def bench(args: argparse.Namespace) -> int:
    """One-at-a-time loop, then the runner at each concurrency with raw batched ``generate`` on the same prompts."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_rollout import play, raw_generate  # type: ignore[import-not-found]

    from llmmarl.backends.transformers import TransformersBackend
    from llmmarl.benchmarking import machine_info

    backend = TransformersBackend(args.model, max_batch_size=max(args.concurrency), seed=0)
    machine = machine_info(backend.device)
    print(f"model {args.model} on {machine.get('gpu', backend.device)}, {args.max_new_tokens} new tokens, re-asks off")
    play(backend, 2, 2, args)  # warm-up: first-call allocations and kernel selection
    seq = play(backend, args.sequential_games, 1, args)
    seq.pop("episodes")
    print(f"one-at-a-time: {seq['decisions_per_s']:.2f} decisions/s, {seq['tokens_per_s']:.1f} tok/s")
    report: dict[str, Any] = {"machine": machine, "model": args.model, "one_at_a_time": seq, "rows": []}
    for n in args.concurrency:
        res = play(backend, n, n, args)
        raw = raw_generate(backend, res.pop("episodes"), args)
        row = {
            "concurrent_games": n,
            "runner": res,
            "raw_generate": raw,
            "x_one_at_a_time": res["tokens_per_s"] / seq["tokens_per_s"],
            "of_raw_generate": res["tokens_per_s"] / raw["tokens_per_s"],
        }
        report["rows"].append(row)
        print(
            f"N={n:4d}: runner {res['tokens_per_s']:8.1f} tok/s ({res['decisions_per_s']:6.2f} decisions/s) | raw "
            f"generate {raw['tokens_per_s']:8.1f} tok/s | x{row['x_one_at_a_time']:.1f} one-at-a-time, "
            f"{row['of_raw_generate']:.2f} of raw",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))  # after every row: a timeout keeps what was measured
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"wrote {args.out}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    sub.add_parser("env")
    m = sub.add_parser("models")
    m.add_argument("--model-files", type=Path, default=None, help="folder with tokenizer.json (see `prepare`)")
    pr = sub.add_parser("prepare")
    pr.add_argument("dir", type=Path)
    b = sub.add_parser("bench")
    b.add_argument("--model", default="default")
    b.add_argument("--env", default="tictactoe_v3")
    b.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 256])
    b.add_argument("--sequential-games", type=int, default=4)
    b.add_argument("--max-new-tokens", type=int, default=32)
    b.add_argument("--out", type=Path, default=Path("gpu_check_rollout.json"))
    args = p.parse_args()
    return {"env": env, "models": models, "prepare": prepare, "bench": bench}[args.step](args)


if __name__ == "__main__":
    raise SystemExit(main())
