"""Memory of N agents: N LoRA adapters on one base model vs N separate model copies.

Each configuration is measured in a fresh subprocess (resident set size after loading and one forward pass),
so allocator state from one measurement cannot leak into the next.

    python scripts/bench_memory.py --agents 2 4 8 --out benchmarks/memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from llmmarl.benchmarking import machine_info

CHILD = r"""
import json, sys, resource, torch
from transformers import AutoModelForCausalLM
from llmmarl.models import resolve_model
mode, n, adapters_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
path = resolve_model(sys.argv[4])
ids = torch.tensor([[1, 2, 3, 4]])
if mode == "copies":
    models = [AutoModelForCausalLM.from_pretrained(path) for _ in range(n)]
    with torch.no_grad():
        for m in models:
            m(ids)
else:
    from peft import PeftModel
    model = AutoModelForCausalLM.from_pretrained(path)
    if n:
        model = PeftModel.from_pretrained(model, f"{adapters_dir}/a0", adapter_name="a0")
        for i in range(1, n):
            model.load_adapter(f"{adapters_dir}/a{i}", adapter_name=f"a{i}")
    with torch.no_grad():
        model(ids)
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"mode": mode, "agents": n, "peak_rss_mb": rss_mb}))
"""


def make_adapters(model: str, n: int, folder: Path, rank: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model(model))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    for i in range(n):
        peft.save_pretrained(folder / f"a{i}")
    for i in range(n):
        sub = folder / f"a{i}"
        if not (sub / "adapter_config.json").exists():
            raise RuntimeError(f"adapter not written to {sub}")


def measure(mode: str, n: int, folder: Path, model: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(n), str(folder), model], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--rank", type=int, default=16, help="LoRA rank of each agent's adapter (all linear layers)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/memory.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_adapters(args.model, max(args.agents), folder, args.rank)
        one = measure("adapters", 0, folder, args.model)
        print(f"one model: {one:.0f} MB peak RSS")
        rows = []
        for n in args.agents:
            lora = measure("adapters", n, folder, args.model)
            copies = measure("copies", n, folder, args.model)
            rows.append(
                {
                    "agents": n,
                    "lora_mb": lora,
                    "copies_mb": copies,
                    "lora_vs_one_model": lora / one,
                    "copies_vs_one_model": copies / one,
                    "copies_vs_lora": copies / lora,
                }
            )
            print(
                f"N={n}: {n} adapters on one base {lora:.0f} MB ({lora / one:.2f}x one model) | "
                f"{n} copies {copies:.0f} MB ({copies / one:.2f}x) | copies/adapters {copies / lora:.1f}x"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": machine_info(), "model": args.model, "rank": args.rank, "one_model_mb": one, "rows": rows},
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
