"""End to end on synthetic data: result files, reproducibility, attacks that work, errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO, small_tree
from experiment.validation import config_from_dict
from experiment.pipeline import run_experiment


def without_timings(path) -> str:
    runs = pd.read_csv(path)
    return runs[[c for c in runs.columns if not c.startswith("seconds_")]].to_csv(index=False)


def test_result_files_and_table_layout(small_config):
    cfg = small_config(attack={"name": ["random", "bandwagon"]}, targets={"kind": ["unpopular",
                                                                                  "random"]})
    out = run_experiment(cfg)
    for name in ("runs.csv", "summary.csv", "tables.md", "config.yaml", "meta.json"):
        assert (out / name).is_file(), name
    runs = pd.read_csv(out / "runs.csv")
    # Origin + 2 attacks, for 2 target kinds, one seed.
    assert len(runs) == 6 and set(runs.attack) == {"none", "random", "bandwagon"}
    assert {"hr@10", "target_hr@10", "prediction_shift", "seconds_train", "ri"} <= set(runs)
    # The fake users never reach the metrics: origin and attacks share the real-user count.
    assert (runs[runs.attack != "none"].n_fake == int(300 * 0.05)).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["master_seed"] == 3 and "torch" in meta and meta["cells"] == 6
    tables = (out / "tables.md").read_text()
    assert "| random |" in tables and "unpopular: Origin" in tables and "Target HR@10" in tables
    # A registered metric reaches every file: mrr@K (utils/metrics/mrr.py) after ndcg@K in
    # runs.csv, with a bootstrap interval in summary.csv and its own table in tables.md.
    columns = list(runs.columns)
    assert columns.index("mrr@10") == columns.index("ndcg@10") + 1
    assert ((runs["mrr@10"] >= 0) & (runs["mrr@10"] <= runs["hr@10"])).all()
    summary = pd.read_csv(out / "summary.csv")
    assert (summary["mrr@10_low"] <= summary["mrr@10_mean"]).all()
    assert (summary["mrr@10_mean"] <= summary["mrr@10_high"]).all()
    origin = runs[(runs.attack == "none") & (runs.target_kind == "random")]["mrr@10"].iloc[0]
    assert "## Test MRR@10" in tables and f"{origin:.4f} [" in tables.split("## Test MRR@10")[1]


def test_same_config_and_seed_give_identical_runs(tmp_path):
    outs = []
    for name in ("a", "b"):
        tree = small_tree(tmp_path / name, attack={"name": ["average", "segment"]})
        outs.append(run_experiment(config_from_dict(tree)))
    assert without_timings(outs[0] / "runs.csv") == without_timings(outs[1] / "runs.csv")
    other = small_tree(tmp_path / "c", seed=4, attack={"name": ["average", "segment"]})
    assert without_timings(run_experiment(config_from_dict(other)) / "runs.csv") != \
        without_timings(outs[0] / "runs.csv")


def test_heuristic_attacks_raise_target_hit_ratio(small_config):
    cfg = small_config(attack={"name": ["random", "average", "bandwagon", "segment"],
                               "size": 0.15}, repeats=2)
    runs = pd.read_csv(run_experiment(cfg) / "runs.csv")
    mean = runs.groupby("attack")["target_hr@10"].mean()
    for attack in ("random", "average", "bandwagon", "segment"):
        assert mean[attack] > mean["none"] + 0.01, (attack, mean.to_dict())


def test_fake_profiles_are_cached_and_reused(small_config):
    cfg = small_config()
    out = run_experiment(cfg)
    first = pd.read_csv(out / "runs.csv")
    cached = list((cfg.dataset.cache_dir and __import__("pathlib").Path(cfg.dataset.cache_dir)
                   / "profiles").glob("random-*.npz"))
    assert len(cached) == 1
    for cell in (out / "cells").glob("*.json"):
        cell.unlink()  # force recomputation of the cells; profiles come from the cache
    second = pd.read_csv(run_experiment(cfg) / "runs.csv")
    assert first["target_hr@10"].tolist() == second["target_hr@10"].tolist()


def test_missing_dataset_is_one_line_and_keeps_earlier_results(tmp_path):
    results = tmp_path / "results"
    (results / "old").mkdir(parents=True)
    (results / "old" / "tables.md").write_text("earlier\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), f"results_dir={results}", "dataset=ml-1m",
         f"dataset.root={tmp_path}", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ratings.dat" in lines[0] and "ml-1m.zip" in lines[0]
    assert (results / "old" / "tables.md").read_text() == "earlier\n"
    assert sorted(p.name for p in results.iterdir()) == ["old"]


def test_target_list_with_unknown_item_is_an_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "main.py"), f"results_dir={tmp_path / 'r'}",
         "dataset=synthetic", f"dataset.cache_dir={tmp_path / 'c'}", "targets.kind=list",
         "targets.items=[1,99999]", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2   # found before any work: a config error
    assert "item 99999 is not an item id of synthetic" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "r").exists()


def test_retrains_average_the_metrics_of_independent_victims(tmp_path):
    """``evaluation.retrains``: the row holds the mean over retrainings whose first is the
    single-training cell itself, and one training keeps the earlier cell keys."""
    single = small_tree(tmp_path / "one", attack={"name": ["bandwagon"]})
    out_one = run_experiment(config_from_dict(single))
    keys_one = {p.stem for p in (out_one / "cells").glob("*.json")}
    again = small_tree(tmp_path / "one", attack={"name": ["bandwagon"]},
                       evaluation={"k": 10, "retrains": 1})
    assert {p.stem for p in (run_experiment(config_from_dict(again)) / "cells").glob("*.json")} \
        == keys_one
    triple = small_tree(tmp_path / "three", attack={"name": ["bandwagon"]},
                        evaluation={"k": 10, "retrains": 3})
    runs1 = pd.read_csv(out_one / "runs.csv").set_index("attack")
    runs3 = pd.read_csv(run_experiment(config_from_dict(triple)) / "runs.csv").set_index("attack")
    for attack in ("none", "bandwagon"):
        per = [float(x) for x in runs3.loc[attack, "target_hr@10_per_retrain"].split()]
        assert len(per) == 3 and runs3.loc[attack, "retrains"] == 3
        assert per[0] == pytest.approx(runs1.loc[attack, "target_hr@10"], abs=1e-6)
        assert runs3.loc[attack, "target_hr@10"] == pytest.approx(sum(per) / 3, abs=1e-6)
        # New inits: the victims differ (test HR moves even where no target enters a list).
        assert runs3.loc[attack, "hr@10"] != runs1.loc[attack, "hr@10"]
    assert len(set(runs3.loc["bandwagon", "target_hr@10_per_retrain"].split())) > 1
