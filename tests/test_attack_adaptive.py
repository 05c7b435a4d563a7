"""The generate → detect → repair attack (attacks/adaptive.py, threat-model.md §2)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attacks import ATTACKS
from attacks.adaptive import AdaptiveAttack, _canonical, _Surrogate
from attacks.threat import ThreatContext, knowledge_view, select_targets
from data import load_dataset, split_ratings
from defenses import DEFENSES, TrainingData
from defenses.base import Distrust
from defenses.none import NoDefense
from utils.config import ConfigError, ModelConfig


@pytest.fixture
def ctx(small_config):
    cfg = small_config()
    split = split_ratings(load_dataset(cfg.dataset, 0), np.random.default_rng(0))
    targets = select_targets(split, "unpopular", 3, np.random.default_rng(1))
    seen = split.observed()
    visible = knowledge_view(seen, split.n_users, targets, 0.5, np.random.default_rng(2))
    keep = np.zeros(split.n_users, dtype=bool)
    keep[visible] = True
    return ThreatContext(view=seen.subset(keep[seen.users]), visible_users=visible,
                         n_users=split.n_users, n_items=split.n_items, scale=split.scale,
                         targets=targets, n_fake=15, filler_size=10, seed=4,
                         model_cfg=ModelConfig(dim=16, epochs=8, batch_size=256),
                         attacks=ATTACKS, defenses=DEFENSES)


def _check_profiles(fake, ctx):
    assert sorted(set(fake.users.tolist())) == list(range(ctx.n_fake))
    keys = fake.users * ctx.n_items + fake.items
    assert len(np.unique(keys)) == len(keys)
    assert np.allclose(fake.ratings * 5, np.round(fake.ratings * 5))
    assert fake.ratings.min() >= 0.2 and fake.ratings.max() <= 1.0
    on_target = np.isin(fake.items, ctx.targets)
    assert np.all(fake.ratings[on_target] == 1.0)
    # Every fake user still carries at least one target.
    assert set(fake.users[on_target].tolist()) == set(range(ctx.n_fake))


def _attack(**options):
    return AdaptiveAttack(AdaptiveAttack.parse_options(options))


def test_adaptive_against_share_is_valid_deterministic_and_no_worse_than_its_base(ctx):
    attack = _attack(against="share", rounds=2)
    fake = attack.generate(ctx)
    _check_profiles(fake, ctx)
    again = _attack(against="share", rounds=2).generate(ctx)
    for a, b in ((fake.users, again.users), (fake.items, again.items),
                 (fake.ratings, again.ratings)):
        assert np.array_equal(a, b)
    # Round 0 is the base attack's profiles, and what is returned is the best round's.
    base = _canonical(ATTACKS["clone"]().generate(ctx), ctx)
    first = attack.trace[0].fake
    assert np.array_equal(first.items, base.items) and np.array_equal(first.users, base.users)
    chosen = attack.trace[attack.selected]
    assert np.array_equal(chosen.fake.items, fake.items)
    assert chosen.score == max(t.score for t in attack.trace) >= attack.trace[0].score
    # The scores are reproducible: a fresh copy of the attacker's defended surrogate gives the
    # same numbers, so the selected profiles are at least as strong as the base's on it.
    surrogate = _Surrogate(ctx, attack.options, "adaptive")
    assert surrogate.detect(base, 0)[0] == attack.trace[0].score
    assert surrogate.detect(fake, attack.selected)[0] == chosen.score >= attack.trace[0].score


class LockstepStub(NoDefense):
    """A tiny lockstep detector for the tests: a top-rated training row is distrusted when its
    user top-rated ≥ 2 of the item's partners (item pairs top-rated together by ≥ 6 users and
    ≥ 5× what independence predicts); the distrusted rows are dropped before training.
    ``users = True`` flags whole users instead (all their rows)."""

    name = "lockstep_stub"
    users = False

    def fit(self, data: TrainingData):
        seen = data.train
        both = (np.concatenate([data.train.users, data.val.users]),
                np.concatenate([data.train.items, data.val.items]),
                np.concatenate([data.train.ratings, data.val.ratings]))
        top = both[2] >= 1.0 - 1e-6
        X = np.zeros((data.n_users, data.n_items))
        X[both[0][top], both[1][top]] = 1.0
        co = X.T @ X
        n = np.diag(co).copy()
        np.fill_diagonal(co, 0)
        partners = (co >= 6) & (co >= 5 * np.outer(n, n) / max(data.n_users, 1))
        count = X @ partners
        flag = (seen.ratings >= 1.0 - 1e-6) & (count[seen.users, seen.items] >= 2)
        flagged_users = None
        if self.users:
            flagged_users = np.zeros(data.n_users, dtype=bool)
            flagged_users[seen.users[flag]] = True
            flag = flagged_users[seen.users]
        self._verdict = Distrust(flag, flagged_users)
        kept = TrainingData(seen.subset(~flag), data.val, data.n_users, data.n_items, data.scale)
        return super().fit(kept)

    def distrusted(self):
        return self._verdict


class UserLockstepStub(LockstepStub):
    name = "user_lockstep_stub"
    users = True


def test_distrusted_targets_are_spread_over_more_groups(ctx, monkeypatch):
    monkeypatch.setitem(DEFENSES, "lockstep_stub", LockstepStub)
    attack = _attack(against="lockstep_stub", rounds=3)
    fake = attack.generate(ctx)
    _check_profiles(fake, ctx)
    first, second = attack.trace[0], attack.trace[1]
    # Every fake user top-rates all three targets: the whole payload is seen.
    assert first.targets_per_fake == 3 and first.target_share == 1.0
    # The repair: two targets per fake user, balanced (each target 10 carriers of 15 × 2), so
    # no pair of targets is top-rated together by 6 accounts any more.
    assert second.targets_per_fake == 2 and second.target_share == 0.0
    on_target = np.isin(second.fake.items, ctx.targets)
    assert np.all(np.bincount(second.fake.users[on_target], minlength=ctx.n_fake) == 2)
    assert sorted(np.unique(second.fake.items[on_target], return_counts=True)[1]) == [10] * 3
    _check_profiles(second.fake, ctx)
    # Dropping the payload costs the base attack; the spread payload survives and is chosen.
    assert attack.selected >= 1 and second.score > first.score


def test_users_flagged_as_a_whole_get_fresh_fillers(ctx, monkeypatch):
    monkeypatch.setitem(DEFENSES, "user_lockstep_stub", UserLockstepStub)
    attack = _attack(against="user_lockstep_stub", rounds=1)
    attack.generate(ctx)
    before, after = attack.trace[0].fake, attack.trace[1].fake
    assert attack.trace[0].target_share == 1.0
    fillers_before = before.subset(~np.isin(before.items, ctx.targets))
    fillers_after = after.subset(~np.isin(after.items, ctx.targets))
    changed = [not np.array_equal(fillers_before.items[fillers_before.users == u],
                                  fillers_after.items[fillers_after.users == u])
               for u in range(ctx.n_fake)]
    assert np.mean(changed) >= 0.8
    _check_profiles(after, ctx)


def _adaptive_config(small_config, **options):
    return small_config(attack={"name": ["adaptive"], "options": {"adaptive": options}})


@pytest.mark.parametrize("against", ["none", "tcd", "nope"])
def test_a_defense_that_judges_no_data_is_rejected_with_the_valid_ones(small_config, against):
    with pytest.raises(ConfigError) as err:
        _adaptive_config(small_config, against=against)
    message = str(err.value)
    assert "attack.options.adaptive.against" in message and f"'{against}'" in message
    valid = sorted(n for n, d in DEFENSES.items() if d.judges_data())
    assert "share" in valid and message.endswith(", ".join(valid))


@pytest.mark.parametrize("base", ["none", "file", "adaptive", "nope"])
def test_a_base_that_cannot_generate_is_rejected(small_config, base):
    with pytest.raises(ConfigError, match="attack.options.adaptive.base: .*use one of .*clone"):
        _adaptive_config(small_config, base=base)


def test_the_components_of_the_base_attack_are_checked_too(small_config):
    """``base: gcoattack`` runs gcoattack with its default options (against tcd): on implicit
    feedback TCD cannot train, which the config check says before any work."""
    assert _adaptive_config(small_config, base="gcoattack").attack.name == ["adaptive"]
    with pytest.raises(ConfigError, match="attack.options.gcoattack.against: defense 'tcd' "
                                          "trains on explicit feedback only"):
        small_config(attack={"name": ["adaptive"], "options": {"adaptive": {"base": "gcoattack"}}},
                     dataset={"name": "synthetic", "feedback": "implicit"})


def test_a_context_without_the_registries_is_an_attack_error(ctx):
    from attacks import AttackError
    bare = dataclasses.replace(ctx, defenses={})
    with pytest.raises(AttackError, match="no defense 'share'.*defenses="):
        _attack(against="share", rounds=0).generate(bare)


def test_the_config_checks_the_adaptive_options(small_config):
    with pytest.raises(ConfigError, match="against"):
        small_config(attack={"name": ["adaptive"],
                             "options": {"adaptive": {"against": "tcd"}}})
    assert small_config(attack={"name": ["adaptive"]}).attack.name == ["adaptive"]
