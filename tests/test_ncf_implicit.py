"""NCF (NeuMF) victim and implicit-feedback training: negatives, BCE, validation HR, the
hand-derived step, full-row scoring, adversarial defenses on NCF, implicit Bandwagon."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import ATTACKS
from attacks.threat import ThreatContext
from data import load_dataset, split_ratings
from defenses import DEFENSES, TrainingData
from models import build_model, ncf
from models.base import Recommender
from models.mf import MF
from models.trainer import Trainer


class AutogradTrainer(Trainer):
    def train_step(self, users, items, ratings):  # overriding switches the hand-derived step off
        return super().train_step(users, items, ratings)


def ncf_cfg(small_config, feedback="implicit", **model):
    settings = {"name": "ncf", "dim": 8, "epochs": 12, "batch_size": 256, "lr": 0.005,
                "reg": 0.0, **model}
    return small_config(dataset={"feedback": feedback}, model=settings)


def make_split(cfg):
    return split_ratings(load_dataset(cfg.dataset, 0), np.random.default_rng(0),
                         feedback=cfg.dataset.feedback)


def new_model(cfg, split, seed=0):
    return build_model(cfg.model, split.n_users, split.n_items,
                       torch.Generator().manual_seed(seed), cfg.dataset.feedback)


def random_ranking_hr(split, k):
    """Expected validation HR@k of a uniformly random ranking (same candidate sets)."""
    seen = np.zeros((split.n_users, split.n_items), dtype=bool)
    seen[split.train.users, split.train.items] = True
    seen[split.val.users, split.val.items] = True
    candidates = split.n_items - seen.sum(1)[split.val.users] + 1
    return float(np.mean(np.minimum(k, candidates) / candidates))


def test_ncf_learns_implicit_feedback(small_config):
    cfg = ncf_cfg(small_config)
    split = make_split(cfg)
    assert set(np.unique(split.train.ratings)) == {1.0}
    trainer = Trainer(new_model(cfg, split), cfg.model, split.scale,
                      torch.Generator().manual_seed(1), feedback="implicit")
    result = trainer.fit(split.train, split.val)
    hrs = [h[f"val_hr@{trainer.val_k}"] for h in result.history]
    assert result.best_val == -max(hrs)  # selection value is −HR, lower is better
    assert trainer.validate(split.val) == pytest.approx(result.best_val)  # best epoch restored
    chance = random_ranking_hr(split, trainer.val_k)
    assert max(hrs) > 3 * chance and max(hrs) > chance + 0.15, (max(hrs), chance)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_hand_derived_epoch_matches_autograd(small_config, feedback):
    cfg = ncf_cfg(small_config, feedback, reg=0.01)
    split = make_split(cfg)
    fast = Trainer(new_model(cfg, split), cfg.model, split.scale,
                   torch.Generator().manual_seed(1), feedback=feedback)
    slow = AutogradTrainer(new_model(cfg, split), cfg.model, split.scale,
                           torch.Generator().manual_seed(1), feedback=feedback)
    assert fast.uses_manual_step() and not slow.uses_manual_step()
    for _ in range(2):
        assert fast.train_epoch(split.train) == pytest.approx(slow.train_epoch(split.train),
                                                              rel=1e-4)
    for a, b in zip(fast.model.parameters(), slow.model.parameters()):
        assert torch.allclose(a, b, atol=2e-5)
    assert fast.validate(split.val) == pytest.approx(slow.validate(split.val), abs=1e-6)


def test_explicit_mf_keeps_its_fast_path(small_config):
    cfg = small_config()
    split = make_split(cfg)
    model = MF(split.n_users, split.n_items, 8, torch.Generator().manual_seed(0))
    assert Trainer(model, cfg.model, split.scale, torch.Generator()).uses_fast_path()
    implicit = Trainer(model, cfg.model, split.scale, torch.Generator(), feedback="implicit")
    assert not implicit.uses_fast_path() and not implicit.uses_manual_step()


def test_negatives_are_four_fresh_non_positives_per_positive(small_config):
    cfg = ncf_cfg(small_config)
    split = make_split(cfg)
    trainer = Trainer(new_model(cfg, split), cfg.model, split.scale,
                      torch.Generator().manual_seed(1), feedback="implicit")
    users, items, ratings = trainer._tensors(split.train)
    given_negative = torch.tensor([[0], [int(items[0])], [0.0]])  # a row already labelled 0
    users = torch.cat([users, given_negative[0].long()])
    items = torch.cat([items, given_negative[1].long()])
    ratings = torch.cat([ratings, given_negative[2]])
    u1, i1, r1 = trainer.with_negatives(users, items, ratings)
    u2, i2, r2 = trainer.with_negatives(users, items, ratings)
    n_pos = len(split.train)
    assert len(u1) == len(users) + 4 * n_pos and int((r1 == 0).sum()) == 4 * n_pos + 1
    assert torch.equal(u1[:len(users)], users)  # the given rows come first, unchanged
    positives = set(zip(split.train.users.tolist(), split.train.items.tolist()))
    sampled = list(zip(u1[len(users):].tolist(), i1[len(users):].tolist()))
    assert not positives.intersection(sampled)
    assert np.bincount(u1[len(users):].numpy(), minlength=split.n_users).tolist() == \
        (4 * np.bincount(split.train.users, minlength=split.n_users)).tolist()
    assert not torch.equal(i1[len(users):], i2[len(users):])  # redrawn every epoch


class FixedScores(Recommender):
    def __init__(self, scores):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)
        self.n_users, self.n_items = self.scores.shape
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def score_all(self, users):
        return self.scores[users]


@pytest.mark.parametrize("k, expected", [(2, 2 / 3), (1, 1 / 3)])
def test_validation_hr_hand_computed(small_config, k, expected):
    model = FixedScores([[5, 4, 3, 2, 1, 0],
                         [0, 1, 2, 3, 3, 5],
                         [9, 9, 9, 9, 9, 9]])  # user 2 has no validation rows
    trainer = Trainer(model, small_config().model, None, torch.Generator(), feedback="implicit")
    trainer.val_k = k
    seen = (torch.tensor([0, 1, 2]), torch.tensor([0, 5, 1]))
    val_users, val_items = torch.tensor([1, 0, 0]), torch.tensor([3, 4, 1])
    # user 0: item 1 ranks 0 among {1, 2, 3, 5}; item 4 ranks 2 among {2, 3, 4, 5};
    # user 1: item 3 ranks 1 among {0, 1, 2, 3, 4} (item 4 ties it; ties count against).
    assert trainer.validation_hr(val_users, val_items, seen=seen) == pytest.approx(expected)


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_score_all_matches_pairwise_scores(small_config, monkeypatch, feedback):
    monkeypatch.setattr(ncf, "SCORE_CHUNK_FLOATS", 1000)  # several chunks
    cfg = ncf_cfg(small_config, feedback)
    split = make_split(cfg)
    model = new_model(cfg, split)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.3)
        users = torch.tensor([0, 3, 7, 11, 2])
        full = model.score_all(users)
        u = users.repeat_interleave(split.n_items)
        i = torch.arange(split.n_items).repeat(len(users))
        pairs = model(u, i).view(len(users), -1)
    assert full.shape == (5, split.n_items)
    assert torch.allclose(full, pairs, atol=1e-5)
    if feedback == "explicit":
        assert float(full.min()) > 0 and float(full.max()) < 1  # sigmoid output


@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
@pytest.mark.parametrize("defense", ["at", "pamacf"])
def test_adversarial_defenses_train_ncf(small_config, feedback, defense):
    cfg = ncf_cfg(small_config, feedback, epochs=3)
    split = make_split(cfg)
    data = TrainingData(split.train, split.val, split.n_users, split.n_items, split.scale,
                        feedback)
    cls = DEFENSES[defense]
    impl = cls(cls.parse_options({"warmup": 1}), cfg.model, "cpu", 0, False)
    model = impl.new_model(data)
    trainer = impl.configure(impl.new_trainer(model, data))
    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.fit(data.train, data.val)
    assert np.isfinite(result.best_val)
    assert trainer.last_gap > 0  # the perturbation of the two embedding tables raised the loss
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def bandwagon_context(split, n_fake=40, filler=20):
    seen = split.observed()
    targets = np.array([3, 5])
    return ThreatContext(view=seen, visible_users=np.arange(split.n_users), n_users=split.n_users,
                         n_items=split.n_items, scale=split.scale, targets=targets, n_fake=n_fake,
                         filler_size=filler, feedback="implicit", seed=4)


def test_implicit_bandwagon_takes_a_tenth_of_fillers_from_the_top_tenth(small_config):
    split = make_split(ncf_cfg(small_config))
    ctx = bandwagon_context(split)
    fake = ATTACKS["bandwagon"]().generate(ctx)
    counts = np.bincount(ctx.view.items, minlength=split.n_items).astype(float)
    counts[ctx.targets] = -1
    top = set(np.lexsort((np.arange(split.n_items), -counts))[:round(0.1 * split.n_items)])
    assert np.all(fake.ratings == 1.0)
    for u in range(ctx.n_fake):
        items = fake.items[fake.users == u]
        fillers = [i for i in items if i not in ctx.targets]
        assert set(ctx.targets) <= set(items) and len(set(items)) == len(items) == 2 + 20
        assert sum(i in top for i in fillers) == 2  # 10% of 20 from the popular tenth only
    others = fake.items[~np.isin(fake.items, list(top) + list(ctx.targets))]
    assert len(np.unique(others)) > 0.5 * (split.n_items - len(top) - 2)  # the rest: uniform
