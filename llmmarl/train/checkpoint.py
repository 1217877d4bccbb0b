"""Checkpoints that let a killed run resume where it stopped, and the exported adapters with their manifest.

Layout under ``<output_dir>``::

    checkpoints/step-000020/adapters/<learner>/   PEFT folder per learner (the weights to resume from)
    checkpoints/step-000020/optim/<learner>.pt    optimizer + scheduler state and TRL's step counter
    checkpoints/step-000020/rng.pt                python / numpy / torch RNG states
    checkpoints/step-000020/extra.pt              the algorithm's other tensors (e.g. PPO's value heads), if any
    checkpoints/step-000020/state.json            update counter, league pool, role baselines, config, eval
    <adapters_dir>/<learner>/                     final (and latest) adapters, vLLM-loadable PEFT folders
    <adapters_dir>/manifest.json                  what each adapter is: base model, game, seats, steps, config, eval

A checkpoint is written to a hidden temporary folder, fsynced and renamed into place (:mod:`llmmarl.durable`), so a
run killed mid-save, or a machine that loses power, leaves the previous checkpoint intact and never a half-written
one under a final name. Should a newest checkpoint still be unreadable (a disk that lied about its writes, a file
deleted by hand), :func:`read_checkpoint` says so with a :class:`CheckpointError` and a resume falls back to the
checkpoint before it.

Nothing here unpickles code: ``.pt`` files are read with ``torch.load(weights_only=True)`` (tensors and plain
Python data only), RNG states are stored as lists of ints, and a file that holds anything else is refused with an
:class:`UnsafeCheckpointError` before any of it runs. A checkpoint directory shared or downloaded is data, not code.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from llmmarl.durable import fsync_dir, replace_dir, write_text

_PREFIX = "step-"
# What a checkpoint written before RNG states were plain lists holds in rng.pt besides them: numpy's state array.
# These rebuild an array from its bytes and run nothing else (torch's own advice for numpy arrays).
# numpy 2 moved numpy.core to numpy._core.
_LEGACY_NUMPY: list[Any] = [np.ndarray, np.dtype, np.dtypes.UInt32DType]
_LEGACY_NUMPY.append((np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read: a file missing, empty or cut short. A resume falls back past it."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file that holds Python objects besides tensors and plain data: loading it could run code. It was
    not written by llmmarl, or was changed since; a resume stops rather than fall back past it."""


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
    folder.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(tmp), selected_adapters=[name])
    # PEFT writes a non-"default" adapter into a sub-folder named after it.
    src = tmp / name if (tmp / name / "adapter_config.json").exists() else tmp
    if base_model is not None:
        config_file = src / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = base_model
        config_file.write_text(json.dumps(config, indent=2))
    # The new folder replaces the old one in one swap: a kill at any point leaves one complete adapter at ``folder``.
    replace_dir(src, folder)
    shutil.rmtree(tmp, ignore_errors=True)


def load_adapter_weights(model: Any, name: str, folder: Path) -> None:
    """Overwrite the weights of existing adapter ``name`` with those saved in ``folder``."""
    set_adapter_weights(model, name, read_adapter_weights(folder))


def read_adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a PEFT folder's ``adapter_model.safetensors``; a :class:`CheckpointError` if unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(folder) / "adapter_model.safetensors"
    try:
        return load_file(str(file))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{file}: not a complete safetensors file ({e})") from None


def set_adapter_weights(model: Any, name: str, state: Mapping[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, dict(state), adapter_name=name)
    unmatched = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unmatched:
        raise RuntimeError(f"adapter {name}: {len(unmatched)} saved tensors match no model weight, e.g. {unmatched[0]}")


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as ints, floats, strings and tensors: what ``torch.load(weights_only=True)`` reads back."""
    py_version, py_keys, py_gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [py_version, list(py_keys), py_gauss],
        "numpy": [str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    # Lists here; tuples and a numpy array in checkpoints written before (both convert the same way).
    py_version, py_keys, py_gauss = state["python"]
    random.setstate((py_version, tuple(int(k) for k in py_keys), py_gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    # A checkpoint written on another machine may have other GPUs (or none): restore the CUDA RNGs only when they match.
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def load_tensors(file: Path, allow: Iterable[Any] = ()) -> Any:
    """``torch.load`` of a checkpoint file, on the CPU, that never runs code from it.

    Only tensors and plain Python data load (``weights_only=True``; ``allow``: further classes to accept). A file
    that holds anything else is an :class:`UnsafeCheckpointError`, one that is missing or cut short a
    :class:`CheckpointError`.
    """
    try:
        # On the CPU: load_state_dict moves each tensor to its parameter's device, so a checkpoint written on a GPU
        # resumes on a CPU and the other way round.
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(file, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # What torch says when the pickle names a callable or class outside tensors and plain data (rather than
        # when the bytes are simply cut short or garbled).
        found = re.search(r"unsupported GLOBAL (\S+)|reduce for unrecognized function (\S+)|Can only build", str(e))
        if found:
            what = found.group(1) or found.group(2) or "an object that is not plain data"
            raise UnsafeCheckpointError(
                f"{file} holds {what}, which only loads by running code: llmmarl checkpoints hold tensors and plain "
                "data only. Refusing to load it: this checkpoint was not written by llmmarl or was changed since. "
                "Delete it to resume from the one before, or start a new output_dir."
            ) from None
        raise CheckpointError(f"{file}: not a complete checkpoint file ({str(e).splitlines()[0]})") from None
    except (OSError, EOFError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{file}: not a complete checkpoint file ({type(e).__name__}: {e})") from None


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
    replace_dir(tmp, final)  # fsyncs every file first: after a power cut the new checkpoint is whole or absent
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(root)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoints with a ``state.json`` (the last file written), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [
        p
        for p in root.iterdir()
        if p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit() and (p / "state.json").exists()
    ]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX) :]))


@dataclass
class CheckpointData:
    """Everything one checkpoint holds, read into memory (so a bad file is found before anything is restored)."""

    path: Path
    state: dict[str, Any]  # state.json
    adapters: dict[str, dict[str, torch.Tensor]]  # learner -> its LoRA tensors
    optim: dict[str, dict[str, Any]]  # learner -> optimizer, scheduler, global_step
    rng: dict[str, Any]
    extra: dict[str, Any]


def read_checkpoint(path: Path, names: Iterable[str]) -> CheckpointData:
    """Read checkpoint ``path`` for learners ``names``; a :class:`CheckpointError` names the first bad file."""
    path = Path(path)
    file = path / "state.json"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: not a complete state file ({e})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{file}: not a checkpoint's state (no step)")
    adapters, optim = {}, {}
    for name in names:
        adapters[name] = read_adapter_weights(path / "adapters" / name)
        saved = load_tensors(path / "optim" / f"{name}.pt")
        if not isinstance(saved, dict) or not {"optimizer", "scheduler", "global_step"} <= set(saved):
            raise CheckpointError(f"{path / 'optim' / f'{name}.pt'}: not an optimizer state")
        optim[name] = saved
    rng = load_tensors(path / "rng.pt", allow=_LEGACY_NUMPY)
    extra_file = path / "extra.pt"
    extra = dict(load_tensors(extra_file)) if extra_file.exists() else {}
    return CheckpointData(path, state, adapters, optim, rng, extra)


def restore_checkpoint(data: CheckpointData, model: Any, trainers: Mapping[str, OptimizerHolder]) -> dict[str, Any]:
    """Restore adapters, optimizers, schedulers, step counters and RNGs from ``data``; return its ``state.json``."""
    for name, trainer in trainers.items():
        set_adapter_weights(model, name, data.adapters[name])
        saved = data.optim[name]
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.lr_scheduler.load_state_dict(saved["scheduler"])
        trainer.state.global_step = saved["global_step"]
    _set_rng_state(data.rng)
    return data.state


def load_checkpoint(path: Path, model: Any, trainers: Mapping[str, OptimizerHolder]) -> dict[str, Any]:
    """Restore adapters, optimizers, schedulers, step counters and RNGs; return the saved ``state.json``."""
    return restore_checkpoint(read_checkpoint(path, trainers), model, trainers)


def load_extra(path: Path) -> dict[str, Any]:
    """The ``extra`` a checkpoint was saved with ({} if none)."""
    file = Path(path) / "extra.pt"
    return dict(load_tensors(file)) if file.exists() else {}


def write_manifest(folder: Path, adapters: list[dict[str, Any]], run: Mapping[str, Any]) -> Path:
    """``manifest.json``: one entry per adapter folder beside it, plus the run they came from."""
    path = Path(folder) / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"adapters": adapters, "run": dict(run)}, indent=1))
    return path
