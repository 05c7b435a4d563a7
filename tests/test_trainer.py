"""MF victim and trainer: the fast path is the straightforward autograd loop, made faster."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from conftest import pairs, small_tree, tiny_data, tiny_rows

import main
from data import load_dataset, split_ratings
from data.split import held_out_interactions, write_split_files
from experiment.planning import cell_key, plan_cells
from experiment.validation import config_from_dict
from experiment.workspace import Workspace, run_cell
from models import build_model
from models.mf import MF
from models.trainer import NonFiniteLossError, Trainer
from utils.config import ConfigError
from utils.seeding import torch_generator


class AutogradTrainer(Trainer):
    def train_step(self, users, items, ratings):  # overriding switches the fast path off
        return super().train_step(users, items, ratings)


@pytest.fixture
def split(small_config):
    cfg = small_config()
    return cfg, split_ratings(load_dataset(cfg.dataset, 0), np.random.default_rng(0))


def fit(cls, cfg, split, epochs=5):
    model = MF(split.n_users, split.n_items, cfg.model.dim, torch.Generator().manual_seed(0))
    trainer = cls(model, cfg.model, split.scale, torch.Generator().manual_seed(1))
    assert trainer.uses_fast_path() == (cls is Trainer)
    return trainer, trainer.fit(split.train, split.val, epochs=epochs)


def test_fast_path_matches_autograd_step_for_step(split):
    cfg, s = split
    fast, r1 = fit(Trainer, cfg, s)
    slow, r2 = fit(AutogradTrainer, cfg, s)
    for a, b in zip(r1.history, r2.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert torch.allclose(fast.model.user_emb, slow.model.user_emb, atol=1e-5)


def test_training_learns_and_selects_the_best_validation_epoch(small_config):
    # Denser data than the default synthetic set, where bias-free MF clearly beats the mean.
    cfg = small_config(dataset={"name": "synthetic", "synthetic": {"density": 0.3, "noise": 0.1}},
                       model={"dim": 32, "batch_size": 256, "lr": 3e-3, "reg": 0.05})
    s = split_ratings(load_dataset(cfg.dataset, 0), np.random.default_rng(0))
    trainer, result = fit(Trainer, cfg, s, epochs=40)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_val == min(losses) and losses[result.best_epoch - 1] == min(losses)
    assert trainer.validate(s.val) == pytest.approx(result.best_val, rel=1e-5)  # restored
    mean_predictor = float(np.mean((s.val.ratings - s.train.ratings.mean()) ** 2))
    assert result.best_val < 0.5 * mean_predictor


def test_non_finite_loss_is_an_error(split):
    cfg, s = split
    model = MF(s.n_users, s.n_items, 8, torch.Generator().manual_seed(0))
    trainer = Trainer(model, cfg.model, s.scale, torch.Generator().manual_seed(1))
    bad = s.train.subset(np.arange(len(s.train)))
    bad.ratings[0] = np.nan
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        trainer.fit(bad, s.val, epochs=1)


# ----------------------------------------------------------------------------- select_on
# (moved from test_paper_protocol.py, issue 16)

def test_select_on_test_picks_the_epoch_of_smallest_test_mse(tmp_path, caplog):
    cfg = config_from_dict(small_tree(tmp_path, evaluation={"k": 10, "select_on": "test"},
                                      split={"test_item": "any"},
                                      model={"dim": 8, "epochs": 12, "batch_size": 256,
                                             "lr": 0.02}))
    with caplog.at_level(logging.WARNING):
        ws = Workspace(cfg)
    assert "select_on: test" in caplog.text and "reproduction only" in caplog.text
    split = ws.split("synthetic", 0)
    assert len(split.val) == 0                       # no validation split at all
    test = held_out_interactions(split)
    assert len(test) == int((split.test_items >= 0).sum()) > 0
    data = ws.training_data(split, None)
    assert pairs(data.val) == pairs(test) and len(data.train) == len(split.train)
    assert data.val_known is False    # test rows: scored for selection, never known ratings
    model = build_model(cfg.model, data.n_users, data.n_items, torch_generator(1, "init"))
    trainer = Trainer(model, cfg.model, data.scale, torch_generator(1, "shuffle"))
    result = trainer.fit(data.train, data.val)
    # the history holds each epoch's test MSE; the kept epoch is the smallest one
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert len(set(np.round(losses, 8))) > 3        # the choice is not trivial
    with torch.no_grad():
        pred = model(torch.as_tensor(test.users), torch.as_tensor(test.items))
    mse = float((pred - torch.as_tensor(test.ratings)).pow(2).mean())
    assert mse == pytest.approx(min(losses), rel=1e-4)  # the restored model is that epoch's


def test_select_on_test_through_a_cell(tmp_path):
    tree = small_tree(tmp_path, evaluation={"k": 10, "select_on": "test"},
                      model={"dim": 8, "epochs": 6, "batch_size": 256})
    cfg = config_from_dict(tree)
    plain = config_from_dict(small_tree(tmp_path, model={"dim": 8, "epochs": 6,
                                                         "batch_size": 256}))
    cell = [c for c in plan_cells(cfg) if c.attacked][0]
    assert cell_key(cfg, cell) != cell_key(plain, cell)
    ws = Workspace(cfg)
    row, _ = run_cell(ws, cell)
    assert json.loads(row["defense_info"])["selected_on"] == "test"
    split = ws.split(cell.dataset, cell.repeat)
    model, info, _ = ws.train("none", (), "mf", ws.training_data(split, None), 5)
    test = held_out_interactions(split)
    with torch.no_grad():
        pred = model(torch.as_tensor(test.users), torch.as_tensor(test.items))
    assert info["best_val"] == pytest.approx(
        float((pred - torch.as_tensor(test.ratings)).pow(2).mean()), rel=1e-4)
    row, _ = run_cell(Workspace(plain), cell)
    assert "selected_on" not in json.loads(row["defense_info"])


def test_select_on_last_keeps_every_model_at_its_last_epoch(tmp_path):
    tree = small_tree(tmp_path, evaluation={"k": 10, "select_on": "last"},
                      split={"test_item": "any"},
                      model={"dim": 8, "epochs": 5, "batch_size": 256, "lr": 0.02})
    cfg = config_from_dict(tree)
    ws = Workspace(cfg)
    split = ws.split("synthetic", 0)
    assert len(split.val) == 0                       # no validation rows: all non-test train
    data = ws.training_data(split, None)
    assert len(data.val) == 0
    model = build_model(cfg.model, data.n_users, data.n_items, torch_generator(1, "init"))
    trainer = Trainer(model, cfg.model, data.scale, torch_generator(1, "shuffle"))
    result = trainer.fit(data.train, data.val)
    assert result.best_epoch == 5
    # the kept model is the last epoch's: the same as five epochs without any selection
    again = build_model(cfg.model, data.n_users, data.n_items, torch_generator(1, "init"))
    plain = Trainer(again, cfg.model, data.scale, torch_generator(1, "shuffle"))
    for _ in range(5):
        plain.train_epoch(data.train)
    assert torch.equal(model.user_emb, again.user_emb)
    # through cells: undefended, TCD (its own epoch loop) and AT all keep their last epoch
    for defense in ("none", "tcd", "at"):
        cell = [c for c in plan_cells(config_from_dict({**tree, "defense": {"name": defense}}))
                if c.attacked][0]
        row, _ = run_cell(ws, cell)
        assert row["best_epoch"] == 5, defense
        info = json.loads(row["defense_info"])
        assert info["selected_on"] == "last" and info["best_val"] is None
    with pytest.raises(ConfigError, match="select_on: last has no validation"):
        config_from_dict(small_tree(tmp_path, evaluation={"select_on": "last"},
                                    split={"fake_rows": "platform"}))


def test_new_keys_at_their_defaults_keep_cell_keys(tmp_path):
    base = small_tree(tmp_path)
    cfg = config_from_dict(base)
    cell = plan_cells(cfg)[1]
    same = config_from_dict({**base, "split": {"test_item": "positive"},
                             "evaluation": {"k": 10, "select_on": "validation"}})
    assert cell_key(same, cell) == cell_key(cfg, cell)
    assert cell_key(config_from_dict({**base, "split": {"test_item": "any"}}), cell) \
        != cell_key(cfg, cell)


# ----------------------------------------------------------------------------- profile


def test_split_files_end_to_end_with_select_on_test(tmp_path):
    data = tiny_data(tiny_rows(seed=1, n_users=60, n_items=40))
    split = split_ratings(data, np.random.default_rng(2), test_item="any")
    train, test = tmp_path / "x.train.rating", tmp_path / "x.test.rating"
    write_split_files(split, train, test)
    results = tmp_path / "results"
    rc = main.main(["dataset=file", f"dataset.split_files.train={train}",
                    f"dataset.split_files.test={test}", "split.test_item=any",
                    "evaluation.select_on=test", "model.profile=tcd_authors",
                    f"results_dir={results}", f"dataset.cache_dir={tmp_path / 'cache'}",
                    "evaluation.k=10", "model.epochs=3", "model.dim=8", "attack=random",
                    "targets.kind=random", "--quiet"])
    assert rc == 0
    import pandas as pd
    runs = pd.read_csv(next(results.glob("*/runs.csv")))
    assert len(runs) == 2
    assert all(json.loads(info)["selected_on"] == "test" for info in runs["defense_info"])
