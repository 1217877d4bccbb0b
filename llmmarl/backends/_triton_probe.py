"""A one-line Triton kernel, run once by :func:`llmmarl.backends.device.triton_status` to see whether Triton works.

In a module of its own because importing it imports triton, and ``triton.jit`` reads the kernel's source file.
"""

from __future__ import annotations

import torch
import triton  # type: ignore[import-not-found,unused-ignore]
import triton.language as tl  # type: ignore[import-not-found,unused-ignore]


@triton.jit  # type: ignore[misc,unused-ignore]
def _add_one(x_ptr, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    offsets = tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + 1, mask=mask)


def run() -> None:
    """Compile and launch the kernel on 16 values; raises whatever Triton raises when it cannot."""
    x = torch.zeros(16, device="cuda")
    _add_one[(1,)](x, 16, BLOCK=16)
    torch.cuda.synchronize()
    if not bool((x == 1).all()):
        raise RuntimeError("the Triton probe kernel ran but computed a wrong result")
