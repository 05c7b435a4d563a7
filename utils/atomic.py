"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
half-written file. The file gets the mode a plain ``open()`` would give it (0666 minus the umask),
not the 0600 of the temporary file.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

import numpy as np

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask. Linux reports it in /proc; elsewhere the only way is ``os.umask``, which
    sets it process-wide, so it is set and restored under a lock (a file another thread creates
    in between gets the stricter 0o077)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return atomic_write(path, write)


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    return atomic_write(path, write)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """Load a cache entry; a missing or unreadable file returns None (recompute, never trust it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception:
        return None
