"""Read the adapters an ``adapters/manifest.json`` lists, tolerantly.

The manifest is written by training; its exact shape may grow. What is read here is only *which adapter
folder each agent name serves*:

* ``{"adapters": [entry, ...]}`` (also under ``"agents"`` or ``"entries"``), or a bare list of entries, or a
  mapping ``{name: path}`` / ``{name: {"path": ...}}``;
* an entry is an object with a name (``name``, ``agent`` or ``id``) and a folder (``path``, ``adapter``,
  ``adapter_path``, ``dir`` or ``folder``); other keys are ignored;
* a name listed more than once (one entry per trained version) serves its highest ``version`` (or ``step``),
  else its last entry;
* relative folders are relative to the manifest's own folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_LISTS = ("adapters", "agents", "entries")
_NAMES = ("name", "agent", "id")
_PATHS = ("path", "adapter", "adapter_path", "dir", "folder")


class ManifestError(ValueError):
    """The manifest cannot be read; the message says what is wrong with it."""


def read_manifest(path: str | Path) -> dict[str, Path]:
    """Agent name -> adapter folder (absolute), from a manifest file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path} is not valid JSON: {e}") from None
    chosen: dict[str, tuple[float, int, Path]] = {}  # name -> (version, position, folder)
    for position, (name, folder, version) in enumerate(_entries(data, path)):
        folder = folder if folder.is_absolute() else (path.parent / folder)
        rank = (version if version is not None else float("-inf"), position)
        if name not in chosen or rank >= chosen[name][:2]:
            chosen[name] = (*rank, folder.resolve())
    if not chosen:
        raise ManifestError(f"{path} lists no adapters (expected entries with a 'name' and a 'path')")
    return {name: folder for name, (_, _, folder) in sorted(chosen.items())}


def _entries(data: Any, path: Path) -> list[tuple[str, Path, float | None]]:
    if isinstance(data, dict):
        for key in _LISTS:
            if key in data:
                return _entries(data[key], path)
        items: list[Any] = [{"name": k, **(v if isinstance(v, dict) else {"path": v})} for k, v in data.items()]
    elif isinstance(data, list):
        items = data
    else:
        raise ManifestError(f"{path}: expected a list of adapters or an object, got {type(data).__name__}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ManifestError(f"{path}: entry {i} is {item!r}, expected an object with 'name' and 'path'")
        name = next((item[k] for k in _NAMES if item.get(k)), None)
        folder = next((item[k] for k in _PATHS if isinstance(item.get(k), str) and item[k]), None)
        if name is None or folder is None:
            raise ManifestError(f"{path}: entry {i} needs a 'name' and a 'path' (it has {sorted(item)})")
        version = next((item[k] for k in ("version", "step") if isinstance(item.get(k), int | float)), None)
        out.append((str(name), Path(folder).expanduser(), version))
    return out
