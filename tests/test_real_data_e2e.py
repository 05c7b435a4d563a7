"""End-to-end checks on the real ML-100K files (slow: about a minute on 2 cores)."""
from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import require_real_data, small_tree
from experiment.validation import config_from_dict
from experiment.pipeline import run_experiment


@pytest.mark.slow
def test_heuristic_attacks_raise_target_hr_on_ml100k(tmp_path):
    root = require_real_data("ml-100k/u.data")
    tree = small_tree(tmp_path, seed=0, dataset={"name": "ml-100k", "root": str(root)},
                      targets={"kind": "unpopular", "count": 5},
                      attack={"name": ["random", "average", "bandwagon"], "size": 0.03},
                      model={"dim": 128, "epochs": 40, "batch_size": 2048},
                      evaluation={"k": 50})
    runs = pd.read_csv(run_experiment(config_from_dict(tree)) / "runs.csv")
    hr = runs.set_index("attack")["target_hr@50"]
    assert hr["none"] < 0.01  # unpopular targets are almost never recommended
    for attack in ("random", "average", "bandwagon"):
        assert hr[attack] >= hr["none"] + 0.05, hr.to_dict()
    clean = runs[runs.attack == "none"].iloc[0]
    assert 0.15 < clean["hr@50"] < 0.5  # TCD paper: ≈ 0.20 with any held-out rating as test
