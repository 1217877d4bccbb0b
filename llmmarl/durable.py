"""Writes that survive a kill or a power cut: files and folders reach the disk before they replace what was there.

A rename is atomic, but without ``fsync`` the kernel may write the new name to disk before the data it points to,
so after a power cut the new checkpoint can hold empty files. The order that avoids it: write everything under a
temporary name, fsync each file and folder, rename into place, fsync the folder that holds the name.

Replacing a folder (an adapter, a checkpoint) cannot be one ``rename`` on POSIX: a folder is not renamed over a
non-empty one. On Linux :func:`replace_dir` swaps the two in one ``renameat2(RENAME_EXCHANGE)`` call, so the
destination is always a complete folder, old or new. Elsewhere (or on a file system without it) the old folder is
renamed aside first; a kill between the two renames leaves it under ``.<name>.old``, which
:func:`recover_dir` (called by the next :func:`replace_dir`) puts back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make the names in folder ``path`` durable (a rename into it is on disk after this)."""
    if sys.platform == "win32":  # folders cannot be opened there; NTFS journals renames itself
        return
    fsync_file(path)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under ``root``, then every folder (deepest first), ``root`` included."""
    root = Path(root)
    folders = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_file(Path(dirpath) / name)
        folders += [Path(dirpath) / d for d in dirnames]
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(folder)


def write_text(path: str | Path, text: str) -> None:
    """Replace file ``path`` with ``text``: a temporary file, fsynced, renamed over it; the folder fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _aside(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.old")


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` atomically (Linux ``renameat2``); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # a libc without the wrapper (glibc < 2.28, some musl builds)
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # this file system or kernel has no exchange
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def recover_dir(dst: str | Path) -> None:
    """Put back the folder a :func:`replace_dir` killed between its two renames left aside (if any); drop one it
    left beside a complete ``dst`` (killed after both renames)."""
    dst = Path(dst)
    old = _aside(dst)
    if not old.is_dir():
        return
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        return
    old.rename(dst)
    fsync_dir(dst.parent)


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Move the complete folder ``src`` to ``dst``, replacing what ``dst`` held, with ``dst`` never left empty.

    ``src`` is fsynced first, and ``dst``'s parent after, so the new folder is on disk when this returns.
    """
    src, dst = Path(src), Path(dst)
    recover_dir(dst)
    fsync_tree(src)
    if dst.exists() and _exchange(src, dst):
        fsync_dir(dst.parent)
        shutil.rmtree(src, ignore_errors=True)  # now the old folder
        return
    old = _aside(dst)
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    fsync_dir(dst.parent)
    shutil.rmtree(old, ignore_errors=True)
