"""TCD (defenses/tcd.py): the pseudo-labels are exactly the agreeing, projected, unobserved cells;
they are recomputed for every (epoch, model) from the two partners; h0 recommends; and with a
planted attack on synthetic data TCD lowers the target hit ratio of the undefended model."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import defenses.tcd as tcd
from data import load_dataset, split_ratings
from data.ratings import Interactions, RatingScale
from defenses import DEFENSES, TrainingData
from defenses.tcd import ObservedCells, TCDOptions, TripleCooperativeDefense, pseudo_labels
from models.trainer import Trainer
from utils.config import ConfigError, ModelConfig
from utils.metrics import Evaluator

CPU = torch.device("cpu")


class FixedScores(nn.Module):
    """A stand-in partner model whose predictions are a given matrix."""

    def __init__(self, scores) -> None:
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def score_all(self, users):
        return self.scores[users]


# Rows 0–1 are real users, row 2 stands for an appended fake user; grid steps 5 (0.2 … 1.0).
A = [[0.21, 0.58, 1.40, -0.30],
     [0.95, 0.41, 0.79, 0.62],
     [0.05, 0.33, 0.88, 0.52]]
B = [[0.17, 0.63, 1.05, 0.02],
     [0.97, 0.37, 0.61, 0.66],
     [0.12, 0.45, 0.91, 0.52]]
OBSERVED = Interactions([0, 1, 2], [1, 0, 3], [0.8, 1.0, 0.6])
# Π(A) == Π(B) on every cell but (1, 2) (0.8 vs 0.6) and (2, 2) (0.8 vs 1.0); values below
# the grid clip up to 0.2 and above it down to 1.0; observed cells (0,1) (1,0) (2,3) are left out.
EXPECTED = {(0, 0, 0.2), (0, 2, 1.0), (0, 3, 0.2), (1, 1, 0.4), (1, 3, 0.6), (2, 0, 0.2),
            (2, 1, 0.4)}


def labels_of(chunk_cells, rate=1.0, seed=0):
    scale = RatingScale(5.0, 5)
    observed = ObservedCells(OBSERVED, 3, 4, CPU)
    return pseudo_labels(FixedScores(A), FixedScores(B), observed, 3, 4, scale, rate,
                         torch.Generator().manual_seed(seed), chunk_cells, CPU)


@pytest.mark.parametrize("chunk_cells", [4, 8, 1000])
def test_pseudo_labels_are_exactly_the_agreeing_projected_unobserved_cells(chunk_cells):
    users, items, labels, n_agree = labels_of(chunk_cells)
    got = {(int(u), int(i), round(float(r), 6)) for u, i, r in zip(users, items, labels)}
    assert got == EXPECTED
    assert len(users) == len(EXPECTED) and n_agree == len(EXPECTED)
    # The label is Π of the partner's prediction, bit for bit.
    projected = RatingScale(5.0, 5).project(torch.tensor(A))
    assert torch.equal(labels, projected[users, items])
    assert users.dtype == items.dtype == torch.int64 and labels.dtype == torch.float32


def test_unclipped_projection_keeps_labels_off_the_grid_ends():
    """projection="round" (the authors' code): no clipping, so cells that round outside the grid
    only agree on the same off-grid value, and near-0 predictions give the label 0."""
    observed = ObservedCells(OBSERVED, 3, 4, CPU)
    users, items, labels, n_agree = pseudo_labels(
        FixedScores(A), FixedScores(B), observed, 3, 4, RatingScale(5.0, 5), 1.0,
        torch.Generator().manual_seed(0), 1000, CPU, projection="round")
    got = {(int(u), int(i), round(float(r), 6)) for u, i, r in zip(users, items, labels)}
    # (0, 2) 1.4 vs 1.0, (0, 3) −0.4 vs 0.0 and (2, 0) 0.0 vs 0.2 no longer agree once unclipped.
    assert got == EXPECTED - {(0, 2, 1.0), (0, 3, 0.2), (2, 0, 0.2)} and n_agree == 4
    near_zero = FixedScores(torch.full((3, 4), 0.05))
    _, _, labels, _ = pseudo_labels(near_zero, near_zero, observed, 3, 4, RatingScale(5.0, 5),
                                    1.0, torch.Generator().manual_seed(0), 1000, CPU,
                                    projection="round")
    assert len(labels) == 9 and torch.all(labels == 0.0)


def test_pseudo_rate_keeps_a_seeded_random_subset_of_the_agreeing_cells():
    n_users, n_items = 120, 90
    zeros = torch.zeros(n_users, n_items)  # every cell projects to the lowest rating: all agree
    rng = np.random.default_rng(0)
    seen = rng.choice(n_users * n_items, size=500, replace=False)
    observed = Interactions(seen // n_items, seen % n_items, np.full(500, 0.6))
    cells = ObservedCells(observed, n_users, n_items, CPU)
    scale = RatingScale(5.0, 5)

    def run(rate, seed):
        u, i, r, n = pseudo_labels(FixedScores(zeros), FixedScores(zeros), cells, n_users,
                                   n_items, scale, rate, torch.Generator().manual_seed(seed),
                                   2000, CPU)
        return set((u * n_items + i).tolist()), r, n

    full, labels, n_agree = run(1.0, 0)
    assert n_agree == len(full) == n_users * n_items - 500
    assert not full & set(seen.tolist())
    assert torch.all(labels == scale.lowest)
    part, _, _ = run(0.3, 1)
    assert part < full
    assert abs(len(part) / len(full) - 0.3) < 0.02  # binomial sd ≈ 0.005
    assert run(0.3, 1)[0] == part and run(0.3, 2)[0] != part


def synthetic_training_data(n_users=200, n_items=150, seed=0):
    from utils.config import DatasetConfig, SyntheticConfig
    cfg = DatasetConfig(name="synthetic", synthetic=SyntheticConfig(n_users=n_users,
                                                                    n_items=n_items))
    split = split_ratings(load_dataset(cfg, seed), np.random.default_rng(seed))
    return split, TrainingData(split.train, split.val, split.n_users, split.n_items,
                               split.scale)


def test_pseudo_labels_are_recomputed_for_every_epoch_and_model_from_the_two_partners(
        monkeypatch):
    _, data = synthetic_training_data()
    cfg = ModelConfig(dim=16, epochs=6, batch_size=256)
    created, calls, epochs_data = [], [], []
    real_new_model = TripleCooperativeDefense.new_model
    real_labels = tcd.pseudo_labels
    real_epoch = Trainer.train_epoch

    def new_model(self, data, tag=0):
        created.append(real_new_model(self, data, tag))
        return created[-1]

    rated = set((np.concatenate([data.train.users, data.val.users]) * data.n_items
                 + np.concatenate([data.train.items, data.val.items])).tolist())

    def labels(a, b, *args, **kwargs):
        out = real_labels(a, b, *args, **kwargs)
        calls.append((a, b, len(out[0])))
        assert not rated & set((out[0] * data.n_items + out[1]).tolist())  # never a rated cell
        return out

    def train_epoch(self, batch):
        epochs_data.append((self.model, len(self._tensors(batch)[0])))
        return real_epoch(self, batch)

    monkeypatch.setattr(TripleCooperativeDefense, "new_model", new_model)
    monkeypatch.setattr(tcd, "pseudo_labels", labels)
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    model, info = TripleCooperativeDefense(TCDOptions(t_pre=2), cfg, seed=5).fit(data)
    h = created
    assert len(h) == 3 and len({id(m) for m in h}) == 3
    assert model is h[0]
    # 2 pre-training epochs on D_L alone, then every model every epoch with fresh labels.
    assert [m for m, _ in epochs_data] == [h[0], h[1], h[2]] * 6
    assert all(n == len(data.train) for _, n in epochs_data[:6])
    assert len(calls) == 3 * 4
    for k, (a, b, n_pseudo) in enumerate(calls):
        j = k % 3
        assert (a, b) == (h[(j + 1) % 3], h[(j + 2) % 3])
        assert epochs_data[6 + k] == (h[j], len(data.train) + n_pseudo)
        assert n_pseudo > 0
    assert 1 <= info["best_epoch"] <= 6 and info["t_pre"] == 2


def test_independent_initializations_and_seeded_results():
    _, data = synthetic_training_data()
    cfg = ModelConfig(dim=16, epochs=4, batch_size=256)
    defense = TripleCooperativeDefense(TCDOptions(t_pre=1, pseudo_rate=0.5), cfg, seed=1)
    inits = [defense.new_model(data, tag=j).user_emb for j in range(3)]
    assert not torch.equal(inits[0], inits[1]) and not torch.equal(inits[1], inits[2])
    m1, i1 = defense.fit(data)
    m2, i2 = TripleCooperativeDefense(TCDOptions(t_pre=1, pseudo_rate=0.5), cfg, seed=1).fit(data)
    assert torch.equal(m1.user_emb, m2.user_emb) and i1 == i2


def test_best_epoch_is_one_trained_with_pseudo_labels(monkeypatch):
    """Even when a pre-training epoch validates best, TCD returns an epoch after t_pre."""
    from models.trainer import Trainer
    _, data = synthetic_training_data(80, 60)
    calls = {"n": 0}

    def validate(self, val):  # h0's validation loss only rises: epoch 1 would win
        calls["n"] += 1
        return float(calls["n"])

    monkeypatch.setattr(Trainer, "validate", validate)
    cfg = ModelConfig(dim=8, epochs=5, batch_size=256)
    _, info = TripleCooperativeDefense(TCDOptions(t_pre=2), cfg, seed=0).fit(data)
    assert info["best_epoch"] == 3  # the first epoch with pseudo-labels


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="pseudo_rate"):
        TripleCooperativeDefense.parse_options({"pseudo_rate": 1.5}, "defense.options.tcd")
    with pytest.raises(ConfigError, match="t_pre"):
        TripleCooperativeDefense.parse_options({"t_pre": -1}, "defense.options.tcd")
    with pytest.raises(ConfigError, match="projection.*clip"):
        TripleCooperativeDefense.parse_options({"projection": "floor"}, "defense.options.tcd")
    _, data = synthetic_training_data(60, 40)
    with pytest.raises(ValueError, match="t_pre"):
        TripleCooperativeDefense(TCDOptions(t_pre=50), ModelConfig(epochs=10)).fit(data)
    assert DEFENSES["tcd"] is TripleCooperativeDefense


def plant_attack(split, targets, n_fake, n_filler, rng):
    """Average-attack-like fake users: every target at the top rating, fillers drawn by
    popularity with ratings near the item's mean."""
    train = split.train
    counts = np.bincount(train.items, minlength=split.n_items).astype(float)
    sums = np.bincount(train.items, weights=train.ratings, minlength=split.n_items)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.6)
    users, items, ratings = [], [], []
    pool = np.setdiff1d(np.arange(split.n_items), targets)
    p = counts[pool] / counts[pool].sum()
    for f in range(n_fake):
        filler = rng.choice(pool, size=n_filler, replace=False, p=p)
        users += [split.n_users + f] * (len(targets) + n_filler)
        items += list(targets) + list(filler)
        ratings += [1.0] * len(targets) + list(split.scale.project(means[filler]))
    fake = Interactions(users, items, ratings)
    return TrainingData(Interactions.concat(train, fake), split.val, split.n_users + n_fake,
                        split.n_items, split.scale)


def test_tcd_lowers_the_target_hit_ratio_of_a_planted_attack():
    split, clean = synthetic_training_data(300, 200, seed=2)
    rng = np.random.default_rng(2)
    counts = np.bincount(split.observed().items, minlength=split.n_items)
    targets = np.sort(rng.choice(np.flatnonzero(counts < 5), size=3, replace=False))
    poisoned = plant_attack(split, targets, n_fake=15, n_filler=20, rng=rng)
    cfg = ModelConfig(dim=32, epochs=30, batch_size=256)
    evaluator = Evaluator(split, targets, k=10)

    def target_hr(defense, data, options=None):
        model, _ = DEFENSES[defense](options, cfg, seed=7).fit(data)
        return evaluator.evaluate(model).metrics["target_hr@10"]

    origin = target_hr("none", clean)
    attacked = target_hr("none", poisoned)
    defended = target_hr("tcd", poisoned, TCDOptions(t_pre=4))
    assert attacked > origin + 0.1  # the planted attack works on the undefended model
    assert defended < attacked - 0.5 * (attacked - origin)


def test_test_rows_standing_in_for_validation_are_pseudo_labelled(monkeypatch):
    """With evaluation.select_on: test the validation rows are the test set: TCD must not treat
    them as known ratings (keeping them out of pseudo-labels leaked the test set into training:
    the test cells were the only unobserved cells never pushed towards a partner's guess)."""
    split, clean = synthetic_training_data(60, 40, seed=3)
    seen = []
    real = tcd.ObservedCells

    def recording(rated, *args):
        seen.append(set(zip(rated.users.tolist(), rated.items.tolist())))
        return real(rated, *args)

    monkeypatch.setattr(tcd, "ObservedCells", recording)
    cfg = ModelConfig(dim=8, epochs=2, batch_size=256)
    train_cells = set(zip(clean.train.users.tolist(), clean.train.items.tolist()))
    val_cells = set(zip(clean.val.users.tolist(), clean.val.items.tolist()))
    assert val_cells and not val_cells & train_cells
    infos = []
    for known in (True, False):
        data = dataclasses.replace(clean, val_known=known)
        infos.append(DEFENSES["tcd"](TCDOptions(t_pre=1), cfg, seed=1).fit(data)[1])
    assert seen == [train_cells | val_cells, train_cells]
    assert infos[1]["agreement"] != infos[0]["agreement"]   # more cells to label: a new share
