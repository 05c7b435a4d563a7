"""AT and RAT (defenses/adversarial.py, at.py, rat.py): the perturbation has norm ε on every
embedding row of the batch, AT's points along the gradient of the batch loss with respect to
each table row (shared by the row's occurrences) and increases the batch loss, RAT's is random;
the adversarial term starts after the warm-up; both train end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data import load_dataset, split_ratings
from defenses import DEFENSES, TrainingData
from defenses.adversarial import AdversarialOptions
from defenses.perturbation import row_normalize
from models.trainer import Trainer
from utils.config import DatasetConfig, ModelConfig


@pytest.fixture(scope="module")
def data():
    split = split_ratings(load_dataset(DatasetConfig(name="synthetic"), 0),
                          np.random.default_rng(0))
    return TrainingData(split.train, split.val, split.n_users, split.n_items, split.scale)


CFG = ModelConfig(dim=16, epochs=8, batch_size=256)


def warm_trainer(name, data, eps=0.03, epochs=3):
    """An AT/RAT trainer after a few plain epochs (predictions away from the init)."""
    defense = DEFENSES[name](AdversarialOptions(eps=eps), CFG, seed=0)
    model = defense.new_model(data)
    trainer = defense.configure(defense.new_trainer(model, data))
    Trainer(model, CFG, data.scale, torch.Generator().manual_seed(0)).fit(
        data.train, data.val, epochs=epochs)
    return trainer


def batch_with_repeats(data, size=512):
    """A batch in which users and items occur several times."""
    idx = torch.as_tensor(np.random.default_rng(1).choice(len(data.train), size, replace=False))
    return (torch.as_tensor(data.train.users)[idx], torch.as_tensor(data.train.items)[idx],
            torch.as_tensor(data.train.ratings)[idx])


def deltas_of(trainer, users, items, ratings):
    embs = trainer.model.embed(users, items)
    pred = trainer.model.head(embs, users, items)
    losses = (pred - ratings).pow(2)
    return embs, trainer.perturbations(embs, users, items, losses, losses.mean())


@torch.no_grad()
def batch_mse(model, embs, users, items, ratings):
    return float((model.head(embs, users, items) - ratings).pow(2).mean())


@pytest.mark.parametrize("name", ["at", "rat"])
def test_perturbation_has_norm_eps_on_every_row_and_is_shared_by_a_rows_occurrences(name, data):
    trainer = warm_trainer(name, data, eps=0.05)
    users, items, ratings = batch_with_repeats(data)
    assert len(torch.unique(users)) < len(users) and len(torch.unique(items)) < len(items)
    _, (d_user, d_item) = deltas_of(trainer, users, items, ratings)
    for delta, ids in ((d_user, users), (d_item, items)):
        assert torch.allclose(delta.norm(dim=1), torch.full((len(ids),), 0.05), atol=1e-6)
        first = {}
        for row, key in enumerate(ids.tolist()):
            first.setdefault(key, row)
        assert torch.equal(delta, delta[[first[k] for k in ids.tolist()]])


def test_at_points_along_the_table_row_gradient_and_increases_the_batch_loss(data):
    trainer = warm_trainer("at", data, eps=0.05)
    model = trainer.model
    users, items, ratings = batch_with_repeats(data)
    embs, (d_user, d_item) = deltas_of(trainer, users, items, ratings)
    # Reference: the gradient of the batch loss w.r.t. the whole tables, normalized per row.
    tables = [model.user_emb.detach().clone().requires_grad_(),
              model.item_emb.detach().clone().requires_grad_()]
    loss = ((tables[0][users] * tables[1][items]).sum(1) - ratings).pow(2).mean()
    g_user, g_item = torch.autograd.grad(loss, tables)
    assert torch.allclose(d_user, 0.05 * row_normalize(g_user)[users], atol=1e-6)
    assert torch.allclose(d_item, 0.05 * row_normalize(g_item)[items], atol=1e-6)
    clean = batch_mse(model, embs, users, items, ratings)
    worst = batch_mse(model, [embs[0] + d_user, embs[1] + d_item], users, items, ratings)
    assert worst > clean * 1.05
    # The gradient direction is (to first order) the worst: it beats random directions.
    rat = warm_trainer("rat", data, eps=0.05)
    rat.model.load_state_dict(model.state_dict())
    _, (r_user, r_item) = deltas_of(rat, users, items, ratings)
    random_loss = batch_mse(model, [embs[0] + r_user, embs[1] + r_item], users, items, ratings)
    assert worst > random_loss


def test_rat_direction_is_random_but_seeded(data):
    a = warm_trainer("rat", data, eps=0.05)
    users, items, ratings = batch_with_repeats(data)
    _, (d1, _) = deltas_of(a, users, items, ratings)
    _, (d2, _) = deltas_of(a, users, items, ratings)
    assert not torch.allclose(d1, d2)  # a fresh draw for every batch
    b = warm_trainer("rat", data, eps=0.05)
    _, (d3, _) = deltas_of(b, users, items, ratings)
    assert torch.equal(d1, d3)  # same seed, same draws
    at = warm_trainer("at", data, eps=0.05)
    _, (g, _) = deltas_of(at, users, items, ratings)
    cos = torch.nn.functional.cosine_similarity(d1, g, dim=1).abs().mean()
    assert cos < 0.5


def test_zero_rows_stay_zero():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.equal(row_normalize(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


@pytest.mark.parametrize("name", ["at", "rat"])
def test_adversarial_term_starts_after_the_warmup_and_training_runs(name, data):
    defense = DEFENSES[name](AdversarialOptions(eps=0.03, warmup=5), CFG, seed=0)
    trainer = defense.configure(defense.new_trainer(defense.new_model(data), data))
    trainer.epoch = 4
    assert not trainer.adversarial_active()
    trainer.epoch = 5
    assert trainer.adversarial_active()
    model, info = defense.fit(data)
    assert info["eps"] == 0.03 and 1 <= info["best_epoch"] <= CFG.epochs
    plain, _ = DEFENSES["none"](None, CFG, seed=0).fit(data)
    assert not torch.allclose(model.user_emb, plain.user_emb)
    assert np.isfinite(info["best_val"])
