"""Where models run and in which precision: one place decides, for backends and trainers alike.

* :func:`resolve_device`: ``None`` means CUDA when a GPU is visible, else the CPU.
* :func:`resolve_dtype`: ``"auto"`` means bfloat16 on CUDA (half the memory, tensor cores) and float32 on the CPU,
  where bfloat16 matmuls are about 3x slower than float32 (measured on a 2-core x86 machine with torch 2.13).
* :func:`triton_status`: whether Triton kernels compile and run here. Triton builds a small launcher with the
  system C compiler the first time a kernel runs, so a GPU machine without ``gcc``/``cc`` fails at the first
  kernel call, not at import. Code with a Triton fast path (xgrammar's CUDA bitmask, TRL's fused log-prob) asks
  this first and takes a plain-torch path, with the reason, when the answer is no.
"""

from __future__ import annotations

import functools

import torch

from llmmarl.backends.base import BackendError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | None = None) -> str:
    """The torch device string to use: ``device`` itself, or ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use device cpu (or none)")
    return device


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA, float32 elsewhere; otherwise the named dtype (float32, bfloat16, float16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (all of ours live on one device)."""
    return next(model.parameters()).device


@functools.cache
def triton_status() -> tuple[bool, str]:
    """``(True, "")`` when a Triton kernel compiles and runs on the current CUDA device, else ``(False, reason)``.

    Probed once per process with a one-line kernel (the first call takes a second or two: Triton compiles).
    """
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    try:
        from llmmarl.backends import _triton_probe

        _triton_probe.run()
    except Exception as e:  # ImportError (no triton), RuntimeError "Failed to find C compiler", driver errors...
        return False, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return True, ""
