"""Atomic writes give the final file the mode a plain open() would (0666 minus the umask)."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from utils.atomic import atomic_save_npz, atomic_write_text, load_npz


@pytest.fixture
def set_umask():
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_text_file_follows_umask(tmp_path, set_umask, mask, mode):
    set_umask(mask)
    path = atomic_write_text(tmp_path / "a.txt", "héllo\nworld\n")
    assert mode_of(path) == mode
    assert path.read_text(encoding="utf-8") == "héllo\nworld\n"


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_npz_file_follows_umask(tmp_path, set_umask, mask, mode):
    set_umask(mask)
    path = atomic_save_npz(tmp_path / "a.npz", x=np.arange(6).reshape(2, 3), y=np.ones(2))
    assert mode_of(path) == mode
    data = load_npz(path)
    assert sorted(data) == ["x", "y"]
    np.testing.assert_array_equal(data["x"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(data["y"], np.ones(2))
