"""Command-line overrides of a config file: ``--set key.path=value``, applied before validation.

One parser for file and flags (TRL's ``TrlParser``, nanoGPT's ``--key=value``): a run is its YAML file plus a few
changed keys, and the same pydantic model checks both. Values are read as YAML scalars or flow collections, so
``--set seed=3``, ``--set ppo.critic=centralised``, ``--set opponents=[random,minimax]`` and
``--set eval_opponents=null`` mean what they would in the file. A dotted key walks into nested mappings
(``ppo.critic``), creating them as needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


class OverrideError(ValueError):
    """An override that cannot be applied; the message names it and says why."""


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], value)`` with ``value`` read as YAML."""
    key, sep, raw = item.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise OverrideError(f"--set {item!r}: use KEY=VALUE, e.g. --set seed=3 or --set ppo.critic=centralised")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise OverrideError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(e).split())})") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with every ``KEY=VALUE`` override applied in order (later ones win)."""
    out = yaml.safe_load(yaml.safe_dump(data, sort_keys=False)) if data else {}  # a deep copy, key order kept
    for item in overrides:
        path, value = parse_override(item)
        set_key(out, path, value, source=f"--set {item!r}")
    return out


def set_key(data: dict[str, Any], key: str | Sequence[str], value: Any, source: str = "") -> None:
    """Set the dotted ``key`` (``"ppo.critic"`` or ``["ppo", "critic"]``) of ``data`` in place to an already typed
    ``value``, creating nested mappings as needed. ``source`` names the setting in the error message."""
    path = key.split(".") if isinstance(key, str) else list(key)
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            raise OverrideError(f"{source or '.'.join(path)}: {where} is {child!r}, not a mapping of keys")
        node = child
    node[path[-1]] = value
