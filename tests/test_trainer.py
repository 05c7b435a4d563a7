"""MF victim and trainer: the fast path is the straightforward autograd loop, made faster."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data import load_dataset, split_ratings
from models.mf import MF
from models.trainer import NonFiniteLossError, Trainer


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
