"""Config validation: every bad input is one clear line, exit code 2, nothing written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from utils.config import ConfigError
from experiment.validation import config_from_dict, load_config


def error_of(tree: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(tree)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_the_tcd_protocol():
    cfg = config_from_dict({})
    assert (cfg.model.dim, cfg.model.batch_size, cfg.model.epochs) == (128, 2048, 40)
    assert (cfg.model.lr, cfg.model.reg, cfg.evaluation.k) == (1e-3, 0.005, 50)
    assert (cfg.attack.size, cfg.attack.knowledge_cost, cfg.targets.count) == (0.03, 0.4, 5)


def test_unknown_key_suggests_the_closest():
    assert "did you mean 'epochs'" in error_of({"model": {"epoch": 3}})
    assert "did you mean 'repeats'" in error_of({"repeat": 3})


def test_wrong_type():
    msg = error_of({"model": {"dim": "big"}})
    assert "model.dim" in msg and "expected int" in msg
    assert "expected bool" in error_of({"progress": "yes"})


def test_an_exponent_without_a_dot_is_a_float():
    # PyYAML (YAML 1.1) reads 1e-4 as a string; model.reg=1e-4 must still mean 0.0001.
    cfg = load_config(None, ["model.reg=1e-4", "model.lr=5E-3", "attack.size=3e-2"])
    assert (cfg.model.reg, cfg.model.lr, cfg.attack.size) == (1e-4, 5e-3, 0.03)
    assert config_from_dict({"model": {"reg": "2e-5"}}).model.reg == 2e-5
    from defenses import DEFENSES
    from utils.config import options_from
    assert options_from(DEFENSES["at"].Options, {"eps": "1e-2"}, "defense.options.at").eps == 0.01
    assert "expected float" in error_of({"model": {"reg": "1e-4x"}})


def test_unknown_names_list_the_valid_ones():
    msg = error_of({"attack": {"name": ["random", "aushh"]}})
    assert "attack.name" in msg and "valid:" in msg and "random" in msg
    assert "valid:" in error_of({"dataset": "movielens"})
    assert "valid:" in error_of({"defense": {"name": "tcdd"}})
    assert "valid:" in error_of({"model": {"name": "svd"}})
    msg = error_of({"attack": {"export": ["csv", "parquet"]}})
    assert "attack.export" in msg and "npy" in msg


@pytest.mark.parametrize("size", [0, -0.1, 0.51, [0.03, 0.6]])
def test_attack_size_out_of_range(size):
    assert "attack.size" in error_of({"attack": {"size": size}})


def test_other_ranges_and_option_checks():
    assert "knowledge_cost" in error_of({"attack": {"knowledge_cost": 1.5}})
    assert "repeats" in error_of({"repeats": 0})
    assert "evaluation.k" in error_of({"evaluation": {"k": 0}})
    assert "targets.items" in error_of({"targets": {"kind": "list"}})
    assert "did you mean 'n_selected'" in error_of(
        {"attack": {"options": {"bandwagon": {"n_selectd": 4}}}})


def test_section_as_bare_name_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("attack: average\nmodel:\n  dim: 16\n")
    cfg = load_config(path, ["dataset=filmtrust", "model.epochs=3", "defense=[none,at]"])
    assert cfg.attack.name == "average" and cfg.dataset.name == "filmtrust"
    assert (cfg.model.dim, cfg.model.epochs) == (16, 3)
    assert cfg.defense.name == ["none", "at"]
    # A bare name given after a section's keys names it and keeps them, in either order.
    for overrides in (["dataset.root=/data", "dataset=filmtrust"],
                      ["dataset=filmtrust", "dataset.root=/data"]):
        cfg = load_config(path, overrides + ["attack.options={aush: {epochs: 3}}", "attack=aush"])
        assert (cfg.dataset.name, cfg.dataset.root) == ("filmtrust", "/data")
        assert cfg.attack.name == "aush" and cfg.attack.options == {"aush": {"epochs": 3}}


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  dim: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config(path)


def run_main(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["model.epoch=3"], ["model.dim=abc"], ["attack=nonexistent"], ["attack.size=0"],
    ["attack.size=0.7"], ["dataset=nope"], ["notakey"],
    ["defense=tcd", "dataset.feedback=implicit"],       # TCD cannot train on implicit feedback
    ["attack=gcoattack", "dataset.feedback=implicit"],  # nor can the TCD gcoattack co-trains with
])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, args):
    results = tmp_path / "results"
    (results / "previous").mkdir(parents=True)
    (results / "previous" / "runs.csv").write_text("kept\n")
    proc = run_main(f"results_dir={results}", "dataset.name=synthetic", *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error:")
    assert sorted(p.name for p in results.iterdir()) == ["previous"]
    assert (results / "previous" / "runs.csv").read_text() == "kept\n"


def test_cli_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [\n")
    proc = run_main("--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr


def test_by_dataset_layers_apply_to_their_datasets_cells_only():
    from utils.config import for_dataset
    from experiment.planning import cell_key, plan_cells
    tree = {"dataset": {"name": ["ml-100k", "filmtrust"]}, "attack": {"name": ["random"]},
            "defense": {"name": ["tcd"]},
            "by_dataset": {"filmtrust": {"defense": {"options": {"tcd": {"t_pre": 1}}}}}}
    cfg = config_from_dict(tree)
    assert for_dataset(cfg, "filmtrust").defense.options["tcd"]["t_pre"] == 1
    assert for_dataset(cfg, "ml-100k").defense.options == {}
    plain = config_from_dict({k: v for k, v in tree.items() if k != "by_dataset"})
    keys = {c: cell_key(cfg, c) for c in plan_cells(cfg)}
    plain_keys = {c: cell_key(plain, c) for c in plan_cells(plain)}
    assert keys.keys() == plain_keys.keys()
    for cell, key in keys.items():
        changed = cell.dataset == "filmtrust" and cell.defense == "tcd"
        assert (key != plain_keys[cell]) == changed
    assert "by_dataset.filmtrust.seed" in error_of({**tree, "by_dataset": {"filmtrust": {"seed": 1}}})
    assert "t_pre" in error_of({**tree, "by_dataset": {
        "filmtrust": {"defense": {"options": {"tcd": {"t_pre": -1}}}}}})
    assert "valid:" in error_of({**tree, "by_dataset": {"filmtrst": {}}})
    assert config_from_dict({**tree, "by_dataset": {"filmtrust": {}}}).by_dataset == {
        "filmtrust": {}}   # an empty layer layers nothing


def test_a_defense_is_checked_against_the_feedback_of_every_dataset_it_runs_on():
    """TCD declares explicit feedback only (``Defense.feedbacks``): a dataset layered to
    implicit feedback is named in the one-line error, a dataset outside the grid is not."""
    tree = {"dataset": {"name": ["ml-100k", "filmtrust"]}, "defense": {"name": ["none", "tcd"]},
            "by_dataset": {"filmtrust": {"dataset": {"feedback": "implicit"}}}}
    message = error_of(tree)
    assert message == ("defense.name: defense 'tcd' trains on explicit feedback only, but "
                       "dataset filmtrust has dataset.feedback=implicit; remove it or set "
                       "dataset.feedback=explicit")
    assert config_from_dict({**tree, "dataset": {"name": ["ml-100k"]}}).defense.name == [
        "none", "tcd"]


@pytest.mark.parametrize("keys, message", [
    ({"dataset": {"name": "file", "split_files": {"train": "a"}}},
     r"dataset.split_files.test: split_files.train is set; a fixed split needs both files"),
    ({"dataset": {"name": "file", "path": "x", "split_files": {"train": "a", "test": "b"}}},
     r"dataset.path: dataset.split_files replaces it"),
    ({"dataset": {"name": "ml-100k", "min_user_ratings": 2,
                  "split_files": {"train": "a", "test": "b"}}},
     r"dataset.min_user_ratings: a filter would change the fixed split"),
    ({"dataset": {"name": "synthetic", "split_files": {"train": "a", "test": "b"}}},
     r"dataset.split_files: the synthetic dataset is generated"),
    ({"dataset": {"name": "file", "split_files": {"train": "a", "test": "b", "ids": "one"}}},
     r"dataset.split_files.ids: unknown name 'one'.*valid: index, raw"),
    ({"dataset": {"name": "ml-100k", "split_files": {"train": "a", "test": "b", "sep": ","}}},
     r"dataset.split_files.sep: unknown key"),
    ({"split": {"test_item": "positve"}}, r"split.test_item: unknown name 'positve' \(did you "
                                          r"mean 'positive'\?\); valid: positive, any"),
    ({"evaluation": {"select_on": "train"}}, r"evaluation.select_on: unknown name 'train'"),
    ({"evaluation": {"select_on": "test"}, "split": {"fake_rows": "platform"}},
     r"split.fake_rows: 'platform' puts fake rows in validation"),
])
def test_config_errors(keys, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(keys)
