"""benchmarks/ scripts: write_split_files, protocol_deviation (moved from
test_paper_protocol.py, issue 16)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_ROOT, pairs

from experiment.validation import load_config
from experiment.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def _load_benchmark(name: str):
    """A script of benchmarks/ as a module (its ``import common`` needs the folder on the path)."""
    import importlib.util
    import sys
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


@pytest.mark.skipif(not (DATA_ROOT / "ml-100k" / "u.data").is_file(), reason="no ML-100K here")
def test_write_split_files_script_round_trips_ml100k(tmp_path, capsys):
    script = _load_benchmark("write_split_files")
    keys = [f"dataset.root={DATA_ROOT}", f"dataset.cache_dir={tmp_path / 'c'}",
            "split.test_item=any", "evaluation.select_on=test"]
    assert script.main(["--out", str(tmp_path / "s"), "dataset=ml-100k", *keys]) == 0
    assert "943 users, 1682 items, 99057 training and 943 test ratings" in capsys.readouterr().out
    ours = Workspace(load_config(None, ["dataset=ml-100k", *keys])).split("ml-100k", 0)
    back = load_config(None, ["dataset=ml-100k", *keys,
                              f"dataset.split_files.train={tmp_path / 's' / 'ml-100k.train.rating'}",
                              f"dataset.split_files.test={tmp_path / 's' / 'ml-100k.test.rating'}"])
    theirs = Workspace(back).split("ml-100k", 0)
    assert np.array_equal(theirs.test_items, ours.test_items)
    assert pairs(theirs.train) == pairs(ours.train) and len(theirs.val) == 0
    assert theirs.scale == ours.scale
    assert script.main(["--out", str(tmp_path / "s"), "dataset=ml-10k"]) == 2



def test_protocol_deviation_table_filters_options_and_averages_attacks_per_seed():
    import pandas as pd
    script = _load_benchmark("protocol_deviation")
    rows = []
    for repeat, shift in ((0, 0.0), (1, 0.02)):
        def add(attack, defense, params, hr, target):
            rows.append({"dataset": "ml-100k", "target_kind": "random", "attack": attack,
                         "defense": defense, "defense_params": params, "repeat": repeat,
                         "hr@50": hr + shift, "target_hr_all@50": target + shift})
        add("none", "none", "", 0.30, 0.00)
        for attack, target in (("aush", 0.20), ("tna", 0.40)):
            add(attack, "none", "", 0.29, target)
            add(attack, "at", "eps=0.03", 0.28, target - 0.10)
            add(attack, "at", "eps=0.05", 0.27, target - 0.15)
            add(attack, "tcd", "projection=clip", 0.33, target / 4)
            add(attack, "tcd", "projection=round", 0.35, target / 2)
    cells = pd.DataFrame(rows)
    clip = script.summarize(cells, {"eps": "0.03", "projection": "clip"}, 50)
    assert clip[("random", "origin test HR")][:1] == pytest.approx((0.31,))
    assert clip[("random", "attack")][0] == pytest.approx(0.31)      # (0.2 + 0.4) / 2 + 0.01
    assert clip[("random", "AT")][0] == pytest.approx(0.21)           # only the ε 0.03 cells
    assert clip[("random", "TCD")][0] == pytest.approx(0.085)         # 0.075 and 0.095
    assert clip[("random", "TCD")][1] == pytest.approx(0.02 / 2 ** 0.5)  # std over the seeds
    assert clip[("random", "TCD test HR")][0] == pytest.approx(0.34)
    assert ("unpopular", "TCD") not in clip and ("random", "RAT") not in clip
    round_ = script.summarize(cells, {"eps": "0.05", "projection": "round"}, 50)
    assert round_[("random", "AT")][0] == pytest.approx(0.16)
    assert round_[("random", "TCD")][0] == pytest.approx(0.16)
    text = script.render([("ours", clip), ("theirs", round_)], 50)
    assert "| theirs | 2 |" in text and "0.160 ± 0.014 (+0.075)" in text
    assert script.parse_row("Π round=res/x:eps=0.03,projection=round") == (
        "Π round", Path("res/x"), {"eps": "0.03", "projection": "round"})
    with pytest.raises(SystemExit, match="label=folder"):
        script.parse_row("res/x")
