"""What every benchmark records beside its figures: the machine they came from.

Figures without their machine mean little (a 2-core CPU and an H100 differ by orders of magnitude), so every
``scripts/bench_*.py`` writes :func:`machine_info` into its JSON.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def machine_info(device: str | None = None) -> dict[str, Any]:
    """Platform, CPU, Python and torch versions, torch's thread count and, on CUDA, the GPU's name and memory."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": device,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info
