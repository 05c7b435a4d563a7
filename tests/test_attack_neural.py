"""The neural poisoning attack (Huang et al., NDSS 2021): the hinge, the filler selection with
probability decay, the profiles in both modes, and that it beats Random on an NCF victim."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import ATTACKS
from attacks.neural import NeuralOptions, _NeuralRun, hit_ratio_hinge
from attacks.threat import ThreatContext, n_fake_users, select_targets
from data import load_dataset, split_ratings
from data.ratings import Interactions, RatingScale
from defenses import DEFENSES, TrainingData
from models.base import Recommender
from utils.config import ConfigError, ModelConfig
from utils.metrics import Evaluator
from utils.seeding import numpy_rng


def test_hinge_matches_hand_computed_case():
    log_scores = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -2.5],
                               [-4.0, -3.0, -2.0, -1.0, -0.2],
                               [-1.0, -1.0, -1.0, -1.0, -5.0]], requires_grad=True)
    rated = torch.tensor([[False, False, True, False, False],
                          [False] * 5,
                          [False] * 5])
    eligible = torch.tensor([[True], [True], [False]])
    g = hit_ratio_hinge(log_scores, rated, torch.tensor([4]), eligible, k=2, kappa=1.0)
    # user 0: unrated scores -1, -2, -3, -2.5 → 2nd highest -2; g = -2 − (−2.5) = 0.5
    # user 1: 2nd highest of all five is −1 (the target itself is first); g = −1 + 0.2 = −0.8
    # user 2: has rated the target (ineligible) → 0
    assert g.detach().squeeze(1).tolist() == pytest.approx([0.5, -0.8, 0.0])
    g.sum().backward()
    grad = log_scores.grad
    assert grad[0].tolist() == pytest.approx([0, 1, 0, 0, -1])   # K-th item up, target down
    assert grad[1].tolist() == pytest.approx([0, 0, 0, 1, -1])
    assert grad[2].abs().sum() == 0
    clamped = hit_ratio_hinge(log_scores, rated, torch.tensor([4]), eligible, k=2, kappa=0.5)
    assert clamped.detach().squeeze(1).tolist() == pytest.approx([0.5, -0.5, 0.0])


def test_unknown_surrogate_is_a_config_error():
    with pytest.raises(ConfigError, match="surrogate"):
        ATTACKS["neural"].parse_options({"surrogate": "svd"})
    with pytest.raises(ConfigError, match="decay"):
        ATTACKS["neural"].parse_options({"decay": 0.0})


def setup(small_config, feedback="implicit", kind="random", size=0.1, model="ncf", seed=0):
    cfg = small_config(dataset={"feedback": feedback},
                       model={"name": model, "dim": 8, "epochs": 20, "batch_size": 256,
                              "lr": 0.002, "reg": 0.0})
    split = split_ratings(load_dataset(cfg.dataset, 0), np.random.default_rng(0),
                          feedback=feedback)
    targets = select_targets(split, kind, 3, numpy_rng(seed, "targets"))
    ctx = ThreatContext(view=split.observed(), visible_users=np.arange(split.n_users),
                        n_users=split.n_users, n_items=split.n_items, scale=split.scale,
                        targets=targets, n_fake=n_fake_users(split.n_users, size),
                        filler_size=15, feedback=feedback, model_cfg=cfg.model, seed=seed)
    return cfg, split, ctx


FAST = {"epochs": 10, "rounds": 3, "users_per_model": 5}


def victim_target_hr(cfg, split, ctx, fake, victims=(11, 12), k=20):
    train = split.train
    n_users = split.n_users
    if fake is not None:
        train = Interactions.concat(train, Interactions(fake.users + n_users, fake.items,
                                                        fake.ratings))
        n_users += ctx.n_fake
    data = TrainingData(train, split.val, n_users, split.n_items, split.scale, split.feedback)
    evaluator = Evaluator(split, ctx.targets, k)
    hrs = [evaluator.evaluate(DEFENSES["none"](None, cfg.model, "cpu", s, False).fit(data)[0])
           .metrics[f"target_hr@{k}"] for s in victims]
    return float(np.mean(hrs))


def test_neural_attack_beats_random_on_ncf(small_config):
    # Unpopular targets, 45 fake users on 300 users × 200 items; victim NCF, target HR@20.
    cfg, split, ctx = setup(small_config, kind="unpopular", size=0.15, seed=1)
    neural = ATTACKS["neural"](NeuralOptions(**FAST)).generate(ctx)
    random = ATTACKS["random"]().generate(ctx)
    assert len(neural) == len(random)  # equal size: same fake users, same profile width
    hr_clean = victim_target_hr(cfg, split, ctx, None)
    hr_random = victim_target_hr(cfg, split, ctx, random)
    hr_neural = victim_target_hr(cfg, split, ctx, neural)
    assert hr_neural > hr_clean + 0.15
    assert hr_neural > hr_random + 0.15 and hr_neural > 2 * hr_random, (hr_random, hr_neural)


@pytest.mark.parametrize("feedback, model", [("implicit", "ncf"), ("explicit", "mf")])
def test_profiles_obey_the_threat_model_and_the_seed(small_config, feedback, model):
    cfg, split, ctx = setup(small_config, feedback, kind="unpopular", size=0.02, model=model)
    opts = NeuralOptions(epochs=3, rounds=1, users_per_model=2, n_fillers=12)
    fake = ATTACKS["neural"](opts).generate(ctx)
    assert set(np.unique(fake.users)) == set(range(ctx.n_fake))
    for u in range(ctx.n_fake):
        items, ratings = fake.items[fake.users == u], fake.ratings[fake.users == u]
        assert len(items) == len(set(items)) == len(ctx.targets) + 12
        assert np.all(ratings[np.isin(items, ctx.targets)] == 1.0)
    on_grid = np.isclose(fake.ratings * split.scale.steps,
                         np.round(fake.ratings * split.scale.steps))
    assert on_grid.all() and fake.ratings.min() >= split.scale.lowest - 1e-6
    if feedback == "implicit":
        assert np.all(fake.ratings == 1.0)
    again = ATTACKS["neural"](opts).generate(ctx)
    assert np.array_equal(fake.items, again.items) and np.array_equal(fake.ratings, again.ratings)


class SameScores(Recommender):
    """Every user scores the items identically (explicit-mode probabilities)."""

    def __init__(self, n_users, item_scores):
        super().__init__()
        self.n_users, self.n_items = n_users, len(item_scores)
        self.item_scores = torch.tensor(item_scores, dtype=torch.float32)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def score_all(self, users):
        return self.item_scores.expand(len(users), -1)


def test_selection_probability_decays_and_resets():
    ctx = ThreatContext(view=Interactions([0, 1], [1, 2], [1.0, 0.6]),
                        visible_users=np.array([0, 1]), n_users=2, n_items=6,
                        scale=RatingScale(5, 5), targets=np.array([0]), n_fake=4,
                        filler_size=2, feedback="explicit", model_cfg=ModelConfig())
    run = _NeuralRun(NeuralOptions(decay=0.5), ctx)
    model = SameScores(run.n_visible + ctx.n_fake, [0.0, 1.0, 0.85, 0.8, 0.7, 0.6])
    picks = [sorted(run.choose_fillers(model, np.array([j]))[0][0].tolist()) for j in range(3)]
    # 1st: {1, 2}; then p = ½ on 1, 2 → 0.5, 0.425 lose to 0.8, 0.7: {3, 4};
    # then 0.6 (item 5) and 0.5 (item 1) lead: {1, 5}, after which every p < 1 → reset.
    assert picks == [[1, 2], [3, 4], [1, 5]]
    assert run.prob.tolist() == [1.0] * 5
    fillers, ratings = run.choose_fillers(model, np.array([3]))
    assert fillers[0].tolist() == [1, 2]
    assert ratings[0].tolist() == pytest.approx([1.0, 0.8])  # Π(prediction) on the grid


class RowScores(Recommender):
    """Fixed score rows per user (explicit-mode probabilities)."""

    def __init__(self, rows):
        super().__init__()
        self.rows = torch.tensor(rows, dtype=torch.float32)
        self.n_users, self.n_items = self.rows.shape
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def score_all(self, users):
        return self.rows[users]


def tiny_context(n_fake=1):
    return ThreatContext(view=Interactions([0, 1], [1, 2], [1.0, 0.6]),
                         visible_users=np.array([0, 1]), n_users=2, n_items=6,
                         scale=RatingScale(5, 5), targets=np.array([0]), n_fake=n_fake,
                         filler_size=2, feedback="explicit", model_cfg=ModelConfig())


def test_lift_removes_what_every_user_shares():
    typical = [0.5, 0.9, 0.8, 0.1, 0.1, 0.1]
    fake = [0.9, 0.8, 0.7, 0.5, 0.2, 0.1]
    model = RowScores([typical, typical, fake])
    by_score = _NeuralRun(NeuralOptions(), tiny_context())
    assert sorted(by_score.choose_fillers(model, np.array([0]))[0][0].tolist()) == [1, 2]
    by_lift = _NeuralRun(NeuralOptions(filler_score="lift"), tiny_context())
    # ratios to the typical user: item 3 → 5, item 4 → 2, items 1, 2 → below 1
    assert sorted(by_lift.choose_fillers(model, np.array([0]))[0][0].tolist()) == [3, 4]
    with pytest.raises(ConfigError, match="filler_score"):
        ATTACKS["neural"].parse_options({"filler_score": "pop"})


def test_max_poison_models_groups_the_fake_users(monkeypatch):
    groups = []

    def fake_poison_model(self, fakes, new, group):
        groups.append(new.tolist())
        return RowScores([[0.1, 0.9, 0.8, 0.7, 0.6, 0.5]] * (self.n_visible + self.ctx.n_fake)), 0.0

    monkeypatch.setattr(_NeuralRun, "poison_model", fake_poison_model)
    fake = ATTACKS["neural"](NeuralOptions(max_poison_models=2)).generate(tiny_context(5))
    assert groups == [[0, 1, 2], [3, 4]]  # s = ceil(5 / 2) = 3
    assert len(np.unique(fake.users)) == 5
