"""Ids the user knows and poison files without arithmetic (issue: rough edges a new user hits):
``targets.items`` in the dataset's own ids, ``attack.n_fake``, a poison file's own count, file
attacks named by their file and without a knowledge-cost coordinate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from attacks.poison_file import export_poison
from main import main
from tests.conftest import DATA_ROOT, small_tree
from experiment.validation import config_from_dict
from experiment.pipeline import run_experiment
from experiment.planning import plan_cells
from experiment.workspace import Workspace, list_target_indices


def test_raw_target_ids_map_to_indices_and_unknown_ones_are_named():
    raw = np.array([10, 20, 30, 40])
    assert list_target_indices([30, 10], raw, "d") == [2, 0]
    assert list_target_indices(["40"], raw, "d") == [3]
    with pytest.raises(ValueError, match="item 25 is not an item id of d .*10…40.*id_space"):
        list_target_indices([10, 25], raw, "d")


@pytest.mark.skipif(not (DATA_ROOT / "ml-100k" / "u.data").is_file(), reason="needs ML-100K")
def test_movielens_item_ids_are_the_files_ids(tmp_path):
    """MovieLens item 50 (Star Wars) is index 49; id_space: index keeps 0-based indices."""
    tree = small_tree(tmp_path, dataset={"name": "ml-100k", "root": str(DATA_ROOT),
                                         "cache_dir": str(tmp_path / "cache")},
                      targets={"kind": "list", "items": [50, 181]})
    assert Workspace(config_from_dict(tree)).targets("ml-100k", 0, "list").tolist() == [49, 180]
    tree["targets"]["id_space"] = "index"
    assert Workspace(config_from_dict(tree)).targets("ml-100k", 0, "list").tolist() == [50, 181]


def test_runs_csv_shows_raw_target_ids(tmp_path):
    tree = small_tree(tmp_path, targets={"kind": "list", "items": [7, 3]},
                      attack={"name": ["random"], "size": 0.05})
    cfg = config_from_dict(tree)
    out = run_experiment(cfg)
    ws = Workspace(cfg)
    raw = ws.data("synthetic").raw_item_ids
    runs = pd.read_csv(out / "runs.csv", dtype={"targets": str})
    assert set(runs.targets) == {" ".join(str(raw[i]) for i in ws.targets("synthetic", 0, "list"))}


def test_unknown_raw_target_id_is_a_config_error_before_any_work(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_tree(tmp_path, targets={"kind": "list",
                                                                 "items": [1, 5000]})))
    assert main(["--config", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "item 5000 is not an item id of synthetic" in err[0]
    assert not (tmp_path / "results").exists()


def test_n_fake_replaces_the_size(tmp_path):
    out = run_experiment(config_from_dict(small_tree(tmp_path, attack={
        "name": ["random"], "n_fake": [7, 12]})))
    runs = pd.read_csv(out / "runs.csv")
    attacked = runs[runs.attack == "random"].sort_values("n_fake")
    assert attacked.n_fake.tolist() == [7, 12]
    assert attacked.attack_size.tolist() == pytest.approx([7 / 300, 12 / 300], abs=1e-6)


def poison_file(tmp_path, name: str, n_fake: int, targets, raw) -> str:
    """A CSV of ``n_fake`` profiles rating the targets at the top and 10 fillers."""
    from data.ratings import Interactions, RatingScale

    rng = np.random.default_rng(len(name))
    users, items, ratings = [], [], []
    for u in range(n_fake):
        fillers = rng.choice(np.setdiff1d(np.arange(len(raw)), targets), 10, replace=False)
        for i in np.concatenate([targets, fillers]):
            users.append(u)
            items.append(i)
            ratings.append(1.0 if i in targets else 0.6)
    fake = Interactions(np.array(users), np.array(items), np.array(ratings))
    (path,) = export_poison(fake, tmp_path, name, raw, RatingScale(5.0, 5), len(raw), ["csv"])
    return str(path)


def test_poison_files_bring_their_count_and_name_their_rows(tmp_path):
    """15 fake users on 300 real ones: no attack.size arithmetic. Two files in one grid are named
    by their stems, and a knowledge-cost list does not multiply a file's cells."""
    base = small_tree(tmp_path)
    ws = Workspace(config_from_dict(base))
    targets = ws.targets("synthetic", 0, "unpopular")
    raw = ws.data("synthetic").raw_item_ids
    first = poison_file(tmp_path, "crowd_a", 15, targets, raw)
    second = poison_file(tmp_path, "crowd_b", 9, targets, raw)
    tree = small_tree(tmp_path, attack={"name": ["file", "random"], "size": 0.05,
                                        "knowledge_cost": [0.2, 0.4],
                                        "options": {"file": {"path": [first, second]}}})
    cfg = config_from_dict(tree)
    cells = [c for c in plan_cells(cfg) if c.attack == "file"]
    assert len(cells) == 2 and {c.knowledge_cost for c in cells} == {0.0}
    out = run_experiment(cfg)
    runs = pd.read_csv(out / "runs.csv")
    files = runs[runs.attack == "file"].sort_values("n_fake")
    assert files.n_fake.tolist() == [9, 15]
    assert files.attack_size.tolist() == pytest.approx([9 / 300, 15 / 300], abs=1e-6)
    assert len(runs[runs.attack == "random"]) == 2          # one per knowledge cost
    tables = (out / "tables.md").read_text()
    assert "| crowd_a |" in tables and "| crowd_b |" in tables and "path=" not in tables

    # attack.n_fake is checked against the file, before the results folder is made.
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_tree(tmp_path, experiment="mismatch", attack={
        "name": ["file"], "n_fake": 10, "options": {"file": {"path": first}}})))
    assert main(["--config", str(path), "--quiet"]) == 2
    assert not (out.parent / "mismatch").exists()
