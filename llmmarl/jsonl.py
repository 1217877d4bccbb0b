"""JSON Lines files that survive a torn last line.

A run killed mid-write (or a full disk) leaves its file ending in part of a line. Appended to as it is, the next row
would be glued onto that fragment, and the glued line would read as one broken row. So every append first checks
the file's last byte and ends a torn fragment with a newline (:func:`end_torn_line`): the fragment stays a line of
its own and the new rows stay whole. Readers (:func:`iter_jsonl`) skip lines that are not complete JSON, count them
and warn with their line numbers; a line glued in a file written before this fix gives its complete row back.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class TornLineWarning(RuntimeWarning):
    """Lines of a JSONL file that are not complete JSON (cut by a kill or a full disk) were skipped."""


def end_torn_line(path: str | Path) -> bool:
    """If file ``path`` ends without a newline (a torn last line), end it with one. True if it did."""
    path = Path(path)
    try:
        with path.open("rb+") as f:
            if f.seek(0, 2) == 0:
                return False
            f.seek(-1, 2)
            if f.read(1) == b"\n":
                return False
            f.write(b"\n")
            return True
    except FileNotFoundError:
        return False


def append_jsonl(path: str | Path, line: str) -> None:
    """Append one JSON ``line`` to ``path`` (created with its folder), after ending a torn last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    end_torn_line(path)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


class JsonlWriter:
    """Append-only JSONL file, flushed per line; a torn last line left by an earlier run is ended first."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        end_torn_line(self.path)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, record: BaseModel) -> None:
        self._f.write(record.model_dump_json() + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _glued(line: str, parse: Callable[[Any], T]) -> T | None:
    """The complete row at the end of a line a torn fragment was glued to (files written before the fix), if any."""
    start = line.find("{", 1)
    while start != -1:
        try:
            return parse(json.loads(line[start:]))
        except ValueError:  # JSONDecodeError and pydantic's ValidationError both are
            start = line.find("{", start + 1)
    return None


def iter_jsonl(
    path: str | Path, parse: Callable[[Any], T], torn: list[int] | None = None, invalid: list[int] | None = None
) -> Iterator[T]:
    """``parse(obj)`` of each line's JSON, in order.

    Lines that are not complete JSON are skipped, their numbers appended to ``torn`` and reported in one
    :class:`TornLineWarning` at the end. A complete line that ``parse`` rejects with a ``ValueError`` is not a torn
    one: its number goes to ``invalid`` and it is skipped, or, without ``invalid``, the error is raised again with
    the file and line in front.
    """
    path = Path(path)
    skipped: list[int] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                skipped.append(n)
                glued = _glued(line, parse)
                if glued is not None:
                    yield glued
                continue
            try:
                row = parse(obj)
            except ValueError as e:
                if invalid is None:
                    raise ValueError(f"{path}:{n}: {e}") from None
                invalid.append(n)
                continue
            yield row
    if skipped:
        if torn is not None:
            torn.extend(skipped)
        warnings.warn(
            f"{path}: skipped {len(skipped)} torn line(s) (line {', '.join(map(str, skipped[:5]))}"
            f"{', ...' if len(skipped) > 5 else ''}), cut short by a killed run or a full disk",
            TornLineWarning,
            stacklevel=2,
        )
