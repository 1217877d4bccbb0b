"""Checkpoints and exported adapters on disk: nothing in them runs code, and a kill or a torn write loses at most
the newest one (see docs/reliability.md). Real checkpoints of the tiny model, real files, real trainers."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llmmarl.train.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    list_checkpoints,
    load_adapter_weights,
    load_tensors,
    save_adapter,
)
from llmmarl.train.config import TrainConfig


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:  # threads=1 in the configs is process-wide
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cfg(out: Path) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "env": "tictactoe_v3",
            "model": "tiny",
            "eval_games": 0,
            "setting": "fixed_opponents",
            "opponents": ["random"],
            "learners": [{"name": "ann", "lora": {"r": 4}}],
            "keep_checkpoints": 3,
            "output_dir": str(out),
            "threads": 1,
        }
    )


def _lora(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if ".ann." in k and "lora_" in k}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict[str, torch.Tensor]]]:
    """A run folder with checkpoints step-000001 and step-000002, whose LoRA weights differ; their weights."""
    from llmmarl.train.grpo import MultiAgentGRPO

    out = tmp_path_factory.mktemp("run") / "run"
    trainer = MultiAgentGRPO(_cfg(out), progress=False)
    weights = {}
    for step in (1, 2):
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if ".ann." in name and "lora_B" in name:
                    p.fill_(0.01 * step)  # each checkpoint's weights told apart
        trainer.state.step = step
        trainer.checkpointer.save()
        weights[step] = _lora(trainer.model)
    trainer.close()
    return out, weights


@pytest.fixture
def run_copy(saved_run: tuple[Path, Any], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    return out


def _resume(out: Path) -> Any:
    from llmmarl.train.grpo import MultiAgentGRPO

    trainer = MultiAgentGRPO(_cfg(out), progress=False)
    trainer.checkpointer.resume()
    return trainer


# ---- nothing loads pickles ----------------------------------------------------------------------------------------
def test_every_checkpoint_file_loads_as_plain_data(saved_run: tuple[Path, Any]) -> None:
    newest = list_checkpoints(saved_run[0] / "checkpoints")[-1]
    for file in newest.rglob("*.pt"):
        torch.load(file, weights_only=True)  # raises on anything but tensors and plain data (numpy arrays too)


def test_rng_states_come_back(saved_run: tuple[Path, Any], run_copy: Path) -> None:
    trainer = _resume(run_copy)  # restores the RNGs as they were when step 2 was saved
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    trainer.close()
    trainer = _resume(run_copy)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws
    trainer.close()


class _WritesMarker:
    """What an attacker puts in a checkpoint: unpickling it runs a command (here: one that creates a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.parametrize("file", ["rng.pt", "optim/ann.pt", "extra.pt"])
def test_a_checkpoint_file_that_would_run_code_is_refused(run_copy: Path, tmp_path: Path, file: str) -> None:
    marker = tmp_path / "pwned"
    newest = list_checkpoints(run_copy / "checkpoints")[-1]
    torch.save({"optimizer": _WritesMarker(marker), "scheduler": {}, "global_step": 0}, newest / file)
    with pytest.raises(UnsafeCheckpointError, match=r"holds posix\.system.*Refusing to load it"):
        _resume(run_copy)
    assert not marker.exists()  # nothing ran; and the resume stopped instead of quietly using the checkpoint before


def test_a_legacy_rng_file_with_numpy_arrays_still_loads(tmp_path: Path) -> None:
    """Checkpoints written before RNG states were plain lists kept numpy's state array: they still resume."""
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(legacy, tmp_path / "rng.pt")
    from llmmarl.train.checkpoint import _LEGACY_NUMPY, _set_rng_state

    expected = np.random.rand()
    np.random.rand(), random.random()  # move on, then restore
    _set_rng_state(load_tensors(tmp_path / "rng.pt", allow=_LEGACY_NUMPY))
    assert np.random.rand() == expected


# ---- checkpoints are durable and fall back ------------------------------------------------------------------------
def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "empty adapter weights": ("adapters/ann/adapter_model.safetensors", _empty),
    "truncated adapter weights": ("adapters/ann/adapter_model.safetensors", _cut),
    "missing optimizer state": ("optim/ann.pt", Path.unlink),
    "empty rng state": ("rng.pt", _empty),
    "truncated optimizer state": ("optim/ann.pt", _cut),
    "empty state.json": ("state.json", _empty),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_falls_back_past_a_torn_newest_checkpoint(
    saved_run: tuple[Path, Any], run_copy: Path, damage: str
) -> None:
    file, spoil = DAMAGE[damage]
    newest = list_checkpoints(run_copy / "checkpoints")[-1]
    assert newest.name == "step-000002"
    spoil(newest / file)
    with pytest.warns(UserWarning, match=r"resuming from step-000001: the newer step-000002 is incomplete"):
        trainer = _resume(run_copy)
    assert trainer.state.step == 1
    assert all(torch.equal(v, saved_run[1][1][k]) for k, v in _lora(trainer.model).items())
    trainer.close()


def test_resume_says_what_to_do_when_no_checkpoint_reads(run_copy: Path) -> None:
    for ckpt in list_checkpoints(run_copy / "checkpoints"):
        _empty(ckpt / "rng.pt")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be read"):
        _resume(run_copy)


def test_the_train_command_reports_an_unreadable_run_in_one_line(run_copy: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmmarl.cli import app

    for ckpt in list_checkpoints(run_copy / "checkpoints"):
        _empty(ckpt / "adapters" / "ann" / "adapter_model.safetensors")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(_cfg(run_copy).model_dump(mode="json")))
    result = CliRunner().invoke(app, ["train", str(config), "--resume"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no checkpoint in" in result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the fsynced paths from /proc/self/fd")
def test_checkpoint_writes_are_fsynced(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file of a new checkpoint, and the folders that name them, reach the disk before it counts."""
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    from llmmarl.train.grpo import MultiAgentGRPO

    trainer = MultiAgentGRPO(_cfg(run_copy), progress=False)
    trainer.state.step = 3
    final = trainer.checkpointer.save()
    trainer.close()
    names = {Path(p).name for p in synced}
    assert {"adapter_model.safetensors", "ann.pt", "rng.pt", "state.json", ".manifest.json.tmp"} <= names
    assert str(final.parent) in synced and str(run_copy / "adapters") in synced  # the renames themselves


# ---- save_adapter never leaves no adapter ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peft_model() -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llmmarl.models import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), adapter_name="ann")


def _set(model: Any, value: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(value)


def _saved_value(model: Any, folder: Path) -> float:
    load_adapter_weights(model, "ann", folder)  # a complete, loadable adapter, or this raises
    return float(next(p for n, p in model.named_parameters() if "lora_B" in n).flatten()[0])


class _Killed(Exception):
    pass


@pytest.mark.parametrize(
    ("exchange", "kill_at"),
    [
        (True, "before the swap"),
        (True, "after the swap"),
        (False, "before the swap"),
        (False, "between the renames"),
        (False, "after the swap"),
    ],
)
def test_a_kill_during_save_adapter_leaves_one_complete_adapter(
    peft_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_at: str, exchange: bool
) -> None:
    """``exchange``: Linux's atomic folder swap; without it (other systems) the old folder is renamed aside first."""
    import llmmarl.durable as durable

    folder = tmp_path / "adapters" / "ann"
    _set(peft_model, 0.5)
    save_adapter(peft_model, "ann", folder)
    _set(peft_model, 0.25)
    if not exchange:
        monkeypatch.setattr(durable, "_exchange", lambda a, b: False)
    real_fsync_dir, real_rename = durable.fsync_dir, Path.rename

    def killed(*args: Any) -> None:
        raise _Killed

    def fsync_dir(path: Any) -> None:  # called on the parent right after the swap, before the old folder goes
        if Path(path) == folder.parent:
            raise _Killed
        real_fsync_dir(path)

    def rename(self: Path, target: Any) -> Any:
        if Path(target) == folder:
            raise _Killed
        return real_rename(self, target)

    if kill_at == "before the swap":
        monkeypatch.setattr(durable, "fsync_tree", killed)  # the last step before it
    elif kill_at == "after the swap":
        monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    else:
        monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(_Killed):
        save_adapter(peft_model, "ann", folder)
    monkeypatch.undo()
    if kill_at == "between the renames":
        # The old adapter waits complete under .ann.old: the next save (or recover_dir) puts it back first.
        assert not folder.exists() and _saved_value(peft_model, folder.parent / ".ann.old") == 0.5
        durable.recover_dir(folder)
    assert _saved_value(peft_model, folder) == (0.25 if kill_at == "after the swap" else 0.5)
    _set(peft_model, 0.125)
    save_adapter(peft_model, "ann", folder)  # and the next save cleans up after the killed one
    assert _saved_value(peft_model, folder) == 0.125
    assert sorted(p.name for p in folder.parent.iterdir()) == ["ann"]


def test_a_garbage_file_is_a_checkpoint_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"\x80\x02garbage that is no pickle")
    with pytest.raises(CheckpointError):
        load_tensors(tmp_path / "x.pt")
    (tmp_path / "y.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))  # not a torch file: no code runs either
    with pytest.raises(CheckpointError):
        load_tensors(tmp_path / "y.pt")
