"""AUSH, PGA and TNA on the synthetic dataset: they raise an undefended victim's target HR over
Origin, obey the size and filler constraints, and are reproducible from the seed; plus the
profile fingerprint statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import ATTACKS, AttackError
from experiment.fingerprint import fingerprint
from attacks.threat import ThreatContext
from data.ratings import Interactions, RatingScale
from tests.conftest import make_context, victim_target_hr  # `setting`: conftest's fixture

torch.set_num_threads(1)

# Small but real settings: fewer GAN epochs / gradient steps than the defaults, same algorithms.
K = 10
FAST = {"aush": {"epochs": 30}, "pga": {"iterations": 5, "k": K},
        "tna": {"steps": 15, "top_n": K}}


def generate(name: str, ctx: ThreatContext) -> Interactions:
    cls = ATTACKS[name]
    return cls(cls.parse_options(FAST[name])).generate(ctx)


@pytest.fixture(scope="module")
def default_profiles(setting):
    """The profiles of the default context (seed 1), generated once per attack."""
    memo = {}

    def get(name: str) -> tuple[ThreatContext, Interactions]:
        if name not in memo:
            ctx = make_context(setting)
            memo[name] = (ctx, generate(name, ctx))
        return memo[name]
    return get


@pytest.fixture(scope="module")
def origin_hr(setting):
    return victim_target_hr(setting, None)


@pytest.mark.parametrize("name", ["aush", "pga", "tna"])
def test_attack_raises_target_hr_over_origin(setting, origin_hr, default_profiles, name):
    _, fake = default_profiles(name)
    attacked = victim_target_hr(setting, fake)
    assert attacked >= origin_hr + 0.05, (name, origin_hr, attacked)


@pytest.mark.parametrize("name", ["aush", "pga", "tna"])
def test_profiles_obey_size_filler_and_grid(default_profiles, name):
    ctx, fake = default_profiles(name)
    assert set(np.unique(fake.users)) == set(range(ctx.n_fake))
    keys = fake.users * ctx.n_items + fake.items
    assert len(np.unique(keys)) == len(keys), "a fake user rates an item twice"
    assert fake.items.min() >= 0 and fake.items.max() < ctx.n_items
    steps = fake.ratings * ctx.scale.steps
    assert np.allclose(steps, np.round(steps), atol=1e-4), "ratings off the grid"
    assert fake.ratings.min() >= ctx.scale.lowest - 1e-6 and fake.ratings.max() <= 1 + 1e-6
    for user in range(ctx.n_fake):
        mine = fake.users == user
        on_target = np.isin(fake.items[mine], ctx.targets)
        assert on_target.sum() == len(ctx.targets)
        assert np.all(fake.ratings[mine][on_target] == 1.0)
        extra = ATTACKS[name].Options().n_selected if name == "aush" else 0
        assert (~on_target).sum() == ctx.filler_size + extra


@pytest.mark.parametrize("name", ["aush", "pga", "tna"])
def test_same_seed_same_profiles(setting, default_profiles, name):
    _, first = default_profiles(name)
    again = generate(name, make_context(setting, seed=1))
    other = generate(name, make_context(setting, seed=2))
    for field in ("users", "items", "ratings"):
        assert np.array_equal(getattr(first, field), getattr(again, field))
    assert not (np.array_equal(first.items, other.items)
                and np.array_equal(first.ratings, other.ratings))


@pytest.mark.parametrize("name", ["aush", "pga", "tna"])
def test_implicit_feedback_rates_everything_one(setting, name):
    ctx = make_context(setting, feedback="implicit", size=0.03)
    fake = generate(name, ctx)
    assert np.all(fake.ratings == 1.0)
    assert np.isin(ctx.targets, fake.items).all()


def test_tna_prefers_popular_fillers(setting, default_profiles):
    """TNA's fingerprint: fillers above the median item popularity (attacks.md §5)."""
    _, split, targets = setting
    _, fake = default_profiles("tna")
    stats = fingerprint(fake, split.observed(), split.n_items, targets, split.scale)
    assert stats["filler_popularity_median"] > stats["item_popularity_median"]


def test_bad_options_fail_clearly(setting):
    ctx = make_context(setting, size=0.03)
    with pytest.raises(AttackError, match="init"):
        ATTACKS["pga"](ATTACKS["pga"].parse_options({"init": "zeros"})).generate(ctx)
    with pytest.raises(AttackError, match="user_fraction"):
        ATTACKS["tna"](ATTACKS["tna"].parse_options({"user_fraction": 0})).generate(ctx)


def test_fingerprint_statistics_by_hand():
    scale = RatingScale(5.0, 5)
    # Real data: item 0 rated 3×, item 1 2×, item 2 1×, item 3 never; targets = [3].
    real = Interactions([0, 1, 2, 0, 1, 0], [0, 0, 0, 1, 1, 2], [1.0, 0.6, 0.8, 0.4, 0.6, 0.2])
    fake = Interactions([0, 0, 0, 1, 1], [3, 0, 1, 3, 2], [1.0, 0.8, 0.4, 1.0, 0.2])
    stats = fingerprint(fake, real, 4, np.array([3]), scale)
    assert stats["profiles"] == 2
    assert stats["ratings_per_profile_mean"] == 2.5
    assert stats["share_all_targets_top"] == 1.0
    assert stats["filler_popularity_median"] == 2.0        # fillers' popularity [3, 2, 1]
    assert stats["item_popularity_median"] == 1.5          # [3, 2, 1, 0]
    assert stats["mean_pairwise_jaccard"] == pytest.approx(1 / 4)  # {3,0,1} vs {3,2}
    item_mean = np.array([0.8, 0.5, 0.2])
    expected = np.corrcoef([0.8, 0.4, 0.2], item_mean)[0, 1]
    assert stats["filler_rating_item_mean_corr"] == pytest.approx(expected)
    assert stats["filler_rating_histogram"] == {1.0: 1, 2.0: 1, 3.0: 0, 4.0: 1, 5.0: 0}
