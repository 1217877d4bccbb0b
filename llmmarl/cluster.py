"""Joining Ray, for the consumers that can run on a cluster (tournaments, training rollouts).

Ray is an optional extra (``pip install 'llmmarl[ray]'``): nothing imports this module unless a config asks for
Ray, so the single-process path never loads it.
"""

from __future__ import annotations

from typing import Any


def require_ray() -> Any:
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "this run asks for Ray (a `ray:` block, --ray, or rollout_workers), which is not installed: "
            "pip install 'llmmarl[ray]'"
        ) from None
    return ray


def connect(address: str) -> bool:
    """Join (or start) Ray unless this process already has; True when this call did, so it should shut it down.

    ``address``: ``local`` starts a Ray instance on this machine; ``auto`` joins the cluster this machine belongs
    to (``ray start`` ran here); anything else is a cluster address (``host:port`` or ``ray://host:10001``).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True
