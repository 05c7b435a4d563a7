"""A small grid on a local Ray instance (experiments.md §4): the same cell function and the same
result files as a run in this process, with identical numbers."""
from __future__ import annotations

import json

import pandas as pd

from tests.conftest import small_tree
from experiment.validation import config_from_dict
from experiment.pipeline import run_experiment

GRID = {"targets": {"kind": ["random", "unpopular"]},
        "attack": {"name": ["random", "bandwagon"], "size": 0.05},
        "defense": {"name": ["none", "at"]}, "model": {"dim": 16, "epochs": 15,
                                                        "batch_size": 256}}


def numbers(path) -> str:
    runs = pd.read_csv(path)
    return runs[[c for c in runs.columns if not c.startswith("seconds_")]].to_csv(index=False)


def test_grid_on_local_ray_matches_a_local_run(tmp_path):
    import ray

    local = run_experiment(config_from_dict(small_tree(tmp_path / "local", **GRID)))
    out = run_experiment(config_from_dict(small_tree(tmp_path / "ray", executor="ray",
                                                     workers=2, **GRID)))
    assert not ray.is_initialized()  # the instance started for the run is shut down
    assert numbers(out / "runs.csv") == numbers(local / "runs.csv")
    assert len(pd.read_csv(out / "runs.csv")) == 2 * (1 + 2 * 2)
    for name in ("summary.csv", "tables.md", "tables.tex"):
        assert (out / name).read_text() == (local / name).read_text(), name
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        p.name for p in (local / "figures").iterdir())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["execution"]["executor"] == "ray" and meta["execution"]["cells_computed"] == 10
