"""Shared fixtures: a small synthetic experiment config and the raw-data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from utils.config import config_from_dict

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_ROOT = REPO.parent / "shared" / "datasets"
DATA_ROOT = Path(os.environ.get("ROBUSTREC_DATA", _DEFAULT_ROOT))


def small_tree(tmp_path: Path, **sections) -> dict:
    """A synthetic-data config that trains in about a second."""
    tree = {
        "experiment": "t", "seed": 3, "progress": False,
        "results_dir": str(tmp_path / "results"),
        "dataset": {"name": "synthetic", "cache_dir": str(tmp_path / "cache")},
        "targets": {"kind": "unpopular", "count": 3},
        "attack": {"name": ["random"], "size": 0.05},
        "model": {"dim": 32, "epochs": 30, "batch_size": 256},
        "evaluation": {"k": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return tree


@pytest.fixture
def small_config(tmp_path):
    def make(**sections):
        return config_from_dict(small_tree(tmp_path, **sections))
    return make


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests compare numbers across runs; a fixed thread count keeps reductions identical.
    torch.set_num_threads(1)


def require_real_data(*relative: str) -> Path:
    for rel in relative:
        path = DATA_ROOT / rel
        assert path.is_file(), (f"{path} missing: set ROBUSTREC_DATA to a folder with the raw "
                                "dataset files (CI uses ../shared/datasets)")
    return DATA_ROOT
