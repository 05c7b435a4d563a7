"""Threat-model plumbing: targets, sizes, the knowledge-cost view, profile shape."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import ATTACKS
from attacks.threat import (AttackError, ThreatContext, filler_size_of, knowledge_view,
                            n_fake_users, select_targets)
from data import load_dataset, split_ratings
from data.ratings import Interactions


@pytest.fixture
def split(small_config):
    cfg = small_config()
    return split_ratings(load_dataset(cfg.dataset, 0), np.random.default_rng(0))


def test_attack_size_gives_the_papers_fake_user_counts():
    assert [n_fake_users(n, 0.03) for n in (796, 943, 6040)] == [23, 28, 181]
    for bad in (0, -0.1, 0.6):
        with pytest.raises(AttackError, match="attack.size"):
            n_fake_users(943, bad)


def test_unpopular_targets_have_fewer_than_five_ratings(split):
    rng = np.random.default_rng(0)
    targets = select_targets(split, "unpopular", 3, rng)
    counts = np.bincount(split.observed().items, minlength=split.n_items)
    counts[split.test_items[split.test_items >= 0]] += 1
    assert len(targets) == 3 and np.all(counts[targets] < 5)
    assert np.array_equal(targets, select_targets(split, "unpopular", 3,
                                                  np.random.default_rng(0)))


def test_explicit_target_list_rejects_unknown_items(split):
    assert select_targets(split, "list", 0, None, items=[3, 1]).tolist() == [1, 3]
    with pytest.raises(AttackError, match="unknown"):
        select_targets(split, "list", 0, None, items=[1, split.n_items])


def test_knowledge_view_is_a_bfs_from_the_targets():
    # Users 0,1 rated target 9; user 2 shares item 5 with user 0; user 3 is far away.
    seen = Interactions([0, 0, 1, 2, 2, 3, 4], [9, 5, 9, 5, 6, 7, 8], np.ones(7))
    rng = np.random.default_rng(0)
    assert knowledge_view(seen, 5, np.array([9]), 0.4, rng).tolist() == [0, 1]
    assert knowledge_view(seen, 5, np.array([9]), 0.6, rng).tolist() == [0, 1, 2]
    assert len(knowledge_view(seen, 5, np.array([9]), 1.0, rng)) == 5
    # A partial hop is drawn at random from the hop, never from farther away.
    view = knowledge_view(seen, 5, np.array([9]), 0.2, rng)
    assert len(view) == 1 and view[0] in (0, 1)


def test_filler_size_uses_the_attackers_view():
    view = Interactions(np.repeat([0, 1], 50), np.arange(100), np.ones(100))
    assert filler_size_of(view, 2, 5) == 45


@pytest.mark.parametrize("name", ["random", "average", "bandwagon", "segment"])
def test_heuristic_profiles_obey_the_threat_model(split, name):
    targets = np.array([1, 2])
    ctx = ThreatContext(view=split.observed(), visible_users=np.arange(split.n_users),
                        n_users=split.n_users, n_items=split.n_items, scale=split.scale,
                        targets=targets, n_fake=7, filler_size=11, seed=5)
    fake = ATTACKS[name]().generate(ctx)
    assert sorted(set(fake.users.tolist())) == list(range(7))
    n_selected = 3 if name in ("bandwagon", "segment") else 0
    for u in range(7):
        mine = fake.items[fake.users == u]
        assert len(mine) == len(set(mine.tolist())) == 2 + n_selected + 11
        assert set(targets.tolist()) <= set(mine.tolist())
    assert np.all(fake.ratings[np.isin(fake.items, targets)] == 1.0)
    on_grid = np.round(fake.ratings * 5) / 5
    assert np.allclose(fake.ratings, on_grid) and fake.ratings.min() >= 0.2
    again = ATTACKS[name]().generate(ctx)
    assert np.array_equal(fake.items, again.items) and np.array_equal(fake.ratings, again.ratings)
