"""Checkpoints that let a killed run resume where it stopped, and the exported adapters with their manifest.

Layout under ``<output_dir>``::

    checkpoints/step-000020/adapters/<learner>/   PEFT folder per learner (the weights to resume from)
    checkpoints/step-000020/optim/<learner>.pt    optimizer + scheduler state and TRL's step counter
    checkpoints/step-000020/rng.pt                python / numpy / torch RNG states
    checkpoints/step-000020/extra.pt              the algorithm's other tensors (e.g. PPO's value heads), if any
    checkpoints/step-000020/state.json            update counter, league pool, role baselines, config, eval
    <adapters_dir>/<learner>/                     final (and latest) adapters, vLLM-loadable PEFT folders
    <adapters_dir>/manifest.json                  what each adapter is: base model, game, seats, steps, config, eval

A checkpoint is written to a hidden temporary folder and renamed into place, so a run killed mid-save leaves the
previous checkpoint intact and never a half-written one.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

_PREFIX = "step-"


class OptimizerHolder(Protocol):  # what a checkpoint needs of a trainer (AgentGRPOTrainer has it)
    optimizer: Any
    lr_scheduler: Any
    state: Any


@dataclass
class StepCount:
    global_step: int = 0  # updates this optimizer took part in (a checkpoint restores it)


@dataclass
class AdamWHolder:
    """AdamW over one adapter's parameters with a constant learning rate: an :class:`OptimizerHolder` for the
    trainers that run their own optimizer steps (PPO, RLOO)."""

    params: list[torch.nn.Parameter]
    lr: float
    optimizer: torch.optim.Optimizer = field(init=False)
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    state: StepCount = field(default_factory=StepCount)

    def __post_init__(self) -> None:
        # weight_decay 0: as the HF Trainer's default (torch's AdamW would decay LoRA weights by 0.01).
        self.optimizer = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.0)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)  # constant

    def step(self, max_grad_norm: float) -> float:
        """Clip, step, zero the gradients; returns the gradient norm before clipping."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)


def save_adapter(model: Any, name: str, folder: Path, base_model: str | None = None) -> None:
    """Write adapter ``name`` of a PeftModel as a standalone PEFT folder (adapter_config.json + safetensors).

    ``base_model``: recorded as the adapter's ``base_model_name_or_path`` instead of the local path PEFT would
    write (see :func:`llmmarl.models.portable_name`).
    """
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), selected_adapters=[name])
    # PEFT writes a non-"default" adapter into a sub-folder named after it.
    src = tmp / name if (tmp / name / "adapter_config.json").exists() else tmp
    if base_model is not None:
        config_file = src / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = base_model
        config_file.write_text(json.dumps(config, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    src.rename(folder)
    shutil.rmtree(tmp, ignore_errors=True)


def load_adapter_weights(model: Any, name: str, folder: Path) -> None:
    """Overwrite the weights of existing adapter ``name`` with those saved in ``folder``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state, adapter_name=name)
    unmatched = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unmatched:
        raise RuntimeError(f"adapter {name}: {len(unmatched)} saved tensors match no model weight, e.g. {unmatched[0]}")


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    # A checkpoint written on another machine may have other GPUs (or none): restore the CUDA RNGs only when they match.
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    root: Path,
    step: int,
    model: Any,
    trainers: Mapping[str, OptimizerHolder],
    state: Mapping[str, Any],
    keep: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` under ``root`` and delete all but the newest ``keep``.

    ``trainers``: adapter name -> its optimizer holder; ``extra``: other tensors to keep (see :func:`load_extra`).
    """
    root = Path(root)
    final = root / f"{_PREFIX}{step:06d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "optim").mkdir(parents=True)
    for name, trainer in trainers.items():
        save_adapter(model, name, tmp / "adapters" / name)
        torch.save(
            {
                "optimizer": trainer.optimizer.state_dict(),
                "scheduler": trainer.lr_scheduler.state_dict(),
                "global_step": trainer.state.global_step,
            },
            tmp / "optim" / f"{name}.pt",
        )
    torch.save(_rng_state(), tmp / "rng.pt")
    if extra:
        torch.save(dict(extra), tmp / "extra.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "saved_at": time.time()}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / "state.json").exists()]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX) :]))


def load_checkpoint(path: Path, model: Any, trainers: Mapping[str, OptimizerHolder]) -> dict[str, Any]:
    """Restore adapters, optimizers, schedulers, step counters and RNGs; return the saved ``state.json``."""
    path = Path(path)
    for name, trainer in trainers.items():
        load_adapter_weights(model, name, path / "adapters" / name)
        # Our own file, written by save_checkpoint: it holds plain Python objects besides tensors.
        # Loaded on the CPU: load_state_dict moves the optimizer state to its parameters' device, so a checkpoint
        # written on a GPU resumes on a CPU and the other way round.
        saved = torch.load(path / "optim" / f"{name}.pt", weights_only=False, map_location="cpu")
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.lr_scheduler.load_state_dict(saved["scheduler"])
        trainer.state.global_step = saved["global_step"]
    _set_rng_state(torch.load(path / "rng.pt", weights_only=False, map_location="cpu"))
    return json.loads((path / "state.json").read_text())


def load_extra(path: Path) -> dict[str, Any]:
    """The ``extra`` a checkpoint was saved with ({} if none)."""
    file = Path(path) / "extra.pt"
    # Our own file, written by save_checkpoint.
    # On the CPU: the caller's load_state_dict copies each tensor to its module's device.
    return dict(torch.load(file, weights_only=False, map_location="cpu")) if file.exists() else {}


def write_manifest(folder: Path, adapters: list[dict[str, Any]], run: Mapping[str, Any]) -> Path:
    """``manifest.json``: one entry per adapter folder beside it, plus the run they came from."""
    path = Path(folder) / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"adapters": adapters, "run": dict(run)}, indent=1))
    tmp.replace(path)
    return path
