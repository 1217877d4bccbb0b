"""Publish a trained adapter from a run into ``adapters/``: float16 weights and an entry in ``adapters/manifest.json``.

A run exports its adapters in float32 under ``<output_dir>/adapters/<learner>/`` with a manifest of its own. This
copies one of them to ``adapters/<name>/`` with the weights cast to float16 (half the size; vLLM and PEFT load
either) and merges its manifest entry - base model, game, seats, steps, config, evaluation - into the shared
manifest under the new name, with the command that produced it and its training time.

    python scripts/publish_adapter.py runs/train/ttt-constrained/adapters ttt ttt-grpo-grammar \\
        --command "python scripts/train_tictactoe_selfplay.py --constrained ..." --minutes 29.2
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run_adapters", type=Path, help="a run's adapters folder (holds manifest.json)")
p.add_argument("learner", help="the learner's adapter in that folder")
p.add_argument("name", help="name under adapters/ and in the shared manifest")
p.add_argument("--command", required=True, help="the command that trained it, recorded in the manifest")
p.add_argument("--minutes", type=float, required=True, help="training time in minutes (without evaluation)")
p.add_argument("--extra", default="{}", help="JSON object of further fields for the entry (e.g. other evaluations)")
p.add_argument("--dest", type=Path, default=Path("adapters"))
args = p.parse_args()

run_manifest = json.loads((args.run_adapters / "manifest.json").read_text())
entry = next((e for e in run_manifest["adapters"] if e["name"] == args.learner), None)
if entry is None:
    raise SystemExit(f"{args.run_adapters / 'manifest.json'} has no adapter {args.learner!r}")

# ---- the weights, in float16 -------------------------------------------------------------------------------------
src, out = args.run_adapters / entry["path"], args.dest / args.name
out.mkdir(parents=True, exist_ok=True)
shutil.copy2(src / "adapter_config.json", out / "adapter_config.json")
weights = load_file(src / "adapter_model.safetensors")
save_file({k: v.to(torch.float16) for k, v in weights.items()}, out / "adapter_model.safetensors")

# ---- the manifest entry: replaced if the name is already there ---------------------------------------------------
shared_path = args.dest / "manifest.json"
shared = json.loads(shared_path.read_text()) if shared_path.exists() else {"adapters": []}
entry = {
    **entry,
    "name": args.name,
    "path": args.name,
    "dtype": "float16",
    "command": args.command,
    "training_minutes": args.minutes,
    **json.loads(args.extra),
}
shared["adapters"] = [e for e in shared["adapters"] if e["name"] != args.name] + [entry]
shared_path.write_text(json.dumps(shared, indent=1) + "\n")
size = (out / "adapter_model.safetensors").stat().st_size / 2**20
print(f"{out}: {size:.1f} MB in float16; manifest entry {args.name!r} in {shared_path}")
