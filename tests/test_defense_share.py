"""SHARE (defenses/share.py, share_valuation.py, share_reward.py): the per-user ε follows the
formula and averages ε; the closed-form influences are the autograd ones; the eliminated
samples are the lowest-valued; on synthetic data with a planted attack the eliminated rows are
enriched in fake-user rows; the reward moves the strength the expected way; the ablation
variants switch their part off; the info dict records what was done."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from defenses import DEFENSES, TrainingData
from defenses import share_elimination
from defenses.share import SHARE, SHARETrainer, decode_eliminated, decode_rows, encode_rows
from defenses.share_reward import RewardComponents, RewardTracker, UCBBandit
from defenses.share_valuation import (item_proximity, lowest_rows, lowest_users_rows,
                                      value_samples)
from models.mf import MF
from utils.config import ConfigError, ModelConfig
from experiment.planning import Cell
from experiment.workspace import Workspace

CFG = ModelConfig(dim=16, epochs=14, batch_size=256, lr=0.01)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Synthetic data with a 10% random attack on 3 unpopular targets: (TrainingData,
    number of real users)."""
    from tests.conftest import small_tree
    from experiment.validation import config_from_dict
    tree = small_tree(tmp_path_factory.mktemp("share"), attack={"name": ["random"], "size": 0.1})
    ws = Workspace(config_from_dict(tree))
    split = ws.split("synthetic", 0)
    fake, _ = ws.fake_profiles(Cell("synthetic", 0, "unpopular", "random", 0.1, 0.4, "share"))
    return ws.training_data(split, fake), split.n_users


def tensors(inter):
    return (torch.as_tensor(inter.users), torch.as_tensor(inter.items),
            torch.as_tensor(inter.ratings))


# ----------------------------------------------------------------------------- part (b)
def test_per_user_eps_follows_the_formula_and_averages_eps():
    trainer = SHARETrainer.__new__(SHARETrainer)
    trainer.eps, trainer.personalized = 0.4, True
    share = SHARE(None, CFG)
    users = torch.arange(5)
    sq = torch.tensor([0.2, 1.0, 1.8, 0.6, 1.4])  # symmetric around its mean 1.0
    eps_u = share.mf_row_eps(trainer, users, sq, torch.zeros(5))
    assert torch.allclose(eps_u, 0.4 * 2 * torch.sigmoid(sq / sq.mean() - 1))
    assert torch.isclose(eps_u[1], torch.tensor(0.4))          # the average user gets ε
    assert torch.isclose(eps_u.mean(), torch.tensor(0.4), atol=1e-6)
    assert (eps_u.diff()[[0, 1]] > 0).all() and eps_u.max() < 0.8
    trainer.personalized = False
    assert torch.equal(share.mf_row_eps(trainer, users, sq, torch.zeros(5)),
                       torch.full((5,), 0.4))


# ----------------------------------------------------------------------------- part (a)
def test_closed_form_influences_equal_autograd(planted):
    data, _ = planted
    gen = torch.Generator().manual_seed(0)
    P = torch.randn(data.n_users, 8, generator=gen) * 0.3
    Q = torch.randn(data.n_items, 8, generator=gen) * 0.3
    train, val = tensors(data.train), tensors(data.val)
    audience = torch.unique(val[0])[:50]
    prox = item_proximity(P, Q, audience, 10)
    values = value_samples(P, Q, train, val, data.n_users, data.n_items, audience, prox, k=10,
                           validation_weight=1.0)
    Pd, Qd = P.double().requires_grad_(), Q.double().requires_grad_()
    vu, vi, vr = val
    val_loss = ((Pd[vu] * Qd[vi]).sum(1) - vr.double()).pow(2).mean()
    g_val = torch.autograd.grad(val_loss, (Pd, Qd))
    for row in [0, 17, len(train[0]) - 1]:
        u, i, r = (t[row] for t in train)
        loss = ((Pd[u] * Qd[i]).sum() - float(r)).pow(2)
        g = torch.autograd.grad(loss, (Pd, Qd))
        expected = -sum(float((a * b).sum()) for a, b in zip(g, g_val))
        assert values.validation[row].item() == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_eliminated_rows_are_the_lowest_valued():
    value = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.05, 0.7, 0.2, 0.8, 0.6, 0.4])
    assert set(lowest_rows(value, 0.3).tolist()) == {4, 1, 6}
    users = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # user means .3 .6 .375 .5 .5
    rows = lowest_users_rows(value, users, 5, 0.45)
    assert set(rows.tolist()) == {0, 1, 4, 5}            # users 0 and 2, 4 rows ≤ 4.5
    # At most half of each user's rows: user 2 gives row 4 (0.05), user 0 row 1 (0.1), user 3
    # row 6 (0.2); user 1's 0.9 and 0.3 → row 3 is next (0.3).
    assert set(lowest_rows(value, 0.4, users, 0.5).tolist()) == {4, 1, 6, 3}


def test_share_eliminates_exactly_the_lowest_valued_rows(planted, monkeypatch):
    data, _ = planted
    seen = []

    def recording(*args, **kwargs):
        values = value_samples(*args, **kwargs)
        seen.append(values.value.clone())
        return values

    monkeypatch.setattr(share_elimination, "value_samples", recording)
    # The first default (a fixed budget of the lowest-valued rows), share_v1.
    v1 = DEFENSES["share_v1"]
    options = v1.parse_options({"warmup": 3, "rescore_every": 4, "reward": False})
    _, info = v1(options, CFG, seed=0).fit(data)
    scorings = decode_eliminated(info)
    assert [e for e, _ in scorings] == [4, 8, 12] and len(seen) == 3
    users = data.train.users
    counts = np.bincount(users)
    for (_, rows), value in zip(scorings, seen):
        value = value.numpy()
        assert len(rows) == int(0.03 * len(value))
        taken = np.bincount(users[rows], minlength=len(counts))
        assert (taken <= np.ceil(0.25 * counts)).all()          # the per-user guard
        kept = np.ones(len(value), bool)
        kept[rows] = False
        # Any kept row valued below the cut belongs to a user whose quota is used up.
        below = kept & (value < value[rows].max())
        assert (taken[users[below]] == np.ceil(0.25 * counts[users[below]])).all()
    counts = [e["eliminated"] for e in info["epochs"]]
    assert counts[:3] == [0, 0, 0] and set(counts[3:]) == {len(scorings[0][1])}


def test_eliminated_rows_are_enriched_in_the_planted_fake_rows(planted):
    data, n_real = planted
    fake = data.train.users >= n_real
    v1 = DEFENSES["share_v1"]   # the first default valuation (the `train` protocol)
    for granularity in ("sample", "user"):
        options = v1.parse_options({"warmup": 5, "granularity": granularity})
        # lr 0.003: at the end of the warm-up the lists are still those of a young model,
        # as on ML-100K with the default lr after 5 epochs.
        cfg = ModelConfig(dim=16, epochs=12, batch_size=256, lr=0.003)
        _, info = v1(options, cfg, seed=0).fit(data)
        for _, rows in decode_eliminated(info):
            assert len(rows) > 0
            assert fake[rows].mean() >= 4 * fake.mean(), (granularity, fake[rows].mean(),
                                                           fake.mean())


# ----------------------------------------------------------------------------- part (c)
def simulate(bandit_arms, effect, steps=60, seed=0):
    """Drive the tracker and bandit with components whose per-step change depends on the
    chosen multiplier through ``effect(m) -> (dQ, dB, dF)``; returns the chosen arms."""
    rng = np.random.default_rng(seed)
    tracker, bandit = RewardTracker(), UCBBandit(bandit_arms, c=1.0)
    state = np.zeros(3)
    tracker.reward(RewardComponents(*state))
    chosen = []
    for _ in range(steps):
        arm = bandit.select()
        state = state + np.asarray(effect(bandit_arms[arm])) + rng.normal(0, 0.02, 3)
        reward, _ = tracker.reward(RewardComponents(*state))
        bandit.update(arm, reward)
        chosen.append(bandit_arms[arm])
    return np.array(chosen)


def test_reward_raises_the_strength_when_strength_buys_robustness():
    chosen = simulate([0.5, 1.0, 2.0], lambda m: (0.0, 0.1 * m, 0.0))
    assert np.mean(chosen[-30:] == 2.0) > 0.6 and chosen[-30:].mean() > 1.4


def test_reward_lowers_the_strength_when_strength_costs_quality_and_fairness():
    chosen = simulate([0.5, 1.0, 2.0], lambda m: (-0.1 * m, 0.0, -0.05 * m))
    assert np.mean(chosen[-30:] == 0.5) > 0.6 and chosen[-30:].mean() < 0.9


def test_share_sets_each_epochs_strength_from_the_reward(planted, monkeypatch):
    data, _ = planted

    def components(self, trainer, val, active, n_users, val_loss):
        # A constructed case: the stronger the last epoch, the more robust the model.
        components.robust += trainer.eps
        return RewardComponents(quality=0.0, robustness=components.robust, fairness=0.0)

    components.robust = 0.0
    monkeypatch.setattr(SHARE, "_components", components)
    options = SHARE.parse_options({"eps": 0.05, "warmup": 2, "eliminate": False})
    cfg = ModelConfig(dim=16, epochs=30, batch_size=256, lr=0.01)
    _, info = SHARE(options, cfg, seed=0).fit(data)
    arms = [e["arm"] for e in info["epochs"] if "arm" in e]
    assert len(arms) == 28 and set(arms) <= {0.5, 1.0, 2.0}
    assert np.mean(np.array(arms[-10:]) == 2.0) >= 0.7
    eps = [e["eps"] for e in info["epochs"] if "arm" in e]
    assert eps == pytest.approx([0.05 * a for a in arms])
    assert info["arm_counts"]["2.0"] > info["arm_counts"]["0.5"]


# ----------------------------------------------------------------------------- the whole
def test_variants_switch_their_part_off_and_info_is_json(planted):
    data, _ = planted
    cfg = ModelConfig(dim=16, epochs=8, batch_size=256, lr=0.01)
    infos = {}
    for name in ("share", "share_no_elim", "share_no_adv", "share_no_reward", "share_uniform"):
        options = DEFENSES[name].parse_options({"warmup": 3})
        model, info = DEFENSES[name](options, cfg, seed=0).fit(data)
        infos[name] = json.loads(json.dumps(info))
        assert isinstance(model, MF)
    assert infos["share"]["scorings"] and not infos["share_no_elim"]["scorings"]
    assert all("arm" in e for e in infos["share"]["epochs"][3:])
    assert infos["share"]["epochs"][3]["items_reset"] >= 0
    assert "items_reset" not in infos["share_no_elim"]["epochs"][3]
    assert not any("arm" in e for e in infos["share_no_reward"]["epochs"])
    assert not any("eps" in e for e in infos["share_no_adv"]["epochs"])
    assert infos["share_uniform"]["parts"]["personalized"] is False
    assert all(e["eps"] == 0.03 for e in infos["share_no_reward"]["epochs"])
    # The valuation variants: the default is the group signal without support; share_v1 is
    # the first default (support on), share_no_support that without support.
    names = ("share", "share_v1", "share_no_support", "share_no_group", "share_group_budget",
             "share_spec_value")
    opts = {name: DEFENSES[name].parse_options({}) for name in names}
    assert {n: o.support_weight for n, o in opts.items()} == {
        "share": 0.0, "share_v1": 1.0, "share_no_support": 0.0, "share_no_group": 0.0,
        "share_group_budget": 0.0, "share_spec_value": 0.0}
    assert {n: o.group_weight > 0 for n, o in opts.items()} == {
        "share": True, "share_v1": False, "share_no_support": False, "share_no_group": False,
        "share_group_budget": True, "share_spec_value": False}
    assert opts["share"].eliminate_amount == "significant"
    assert opts["share_v1"].eliminate_amount == opts["share_group_budget"].eliminate_amount \
        == "fraction"
    assert (opts["share_v1"].reach_weight, opts["share_v1"].push_weight,
            opts["share_v1"].unanimity_weight) == (0.5, 1.0, 1.0)
    # Part (d), the item prior: off by default (it holds every thinly rated item out of the
    # lists), on only in share_prior.
    prior = {n: DEFENSES[n].parse_options({}).item_prior
             for n in (*names, "share_prior", "share_group_v1", "share_no_elim")}
    assert prior == {"share": 0.0, "share_v1": 0.0, "share_no_support": 0.0,
                     "share_no_group": 0.0, "share_group_budget": 0.0, "share_spec_value": 0.0,
                     "share_prior": 200000.0, "share_group_v1": 0.0, "share_no_elim": 0.0}


def test_training_restarts_from_the_initial_state_at_the_first_scoring(planted):
    """The warm-up model is a probe: at the first scoring the parameters go back to their
    initial values (the loss climbs back up) and the best epoch is chosen after the restart."""
    data, _ = planted
    cfg = ModelConfig(dim=16, epochs=10, batch_size=256, lr=0.01)
    logs = {}
    for restart in (True, False):
        options = SHARE.parse_options({"warmup": 4, "restart": restart, "adversarial": False})
        _, info = SHARE(options, cfg, seed=0).fit(data)
        logs[restart] = info
    losses = [e["train_loss"] for e in logs[True]["epochs"]]
    assert logs[True]["restarted_at"] == 5 and logs[True]["epochs"][4].get("restart")
    assert losses[4] > losses[3] + 0.05                 # back to an untrained model
    assert losses[4] == pytest.approx(losses[0], rel=0.2)
    assert logs[True]["best_epoch"] >= 5
    plain = [e["train_loss"] for e in logs[False]["epochs"]]
    assert plain[4] < plain[3] + 0.01 and logs[False]["restarted_at"] is None


def test_items_mostly_distrusted_go_back_to_their_initial_embedding(planted):
    data, _ = planted
    defense = SHARE(None, CFG)
    trainer = defense.new_trainer(defense.new_model(data), data)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(data.train, data.val, epochs=2)
    items = torch.as_tensor(data.train.items)
    keep = torch.ones(len(items), dtype=torch.bool)
    keep[items == 0] = False                                  # item 0: all rows distrusted
    rows_1 = torch.nonzero(items == 1).squeeze(1)
    keep[rows_1[: len(rows_1) // 3]] = False                  # item 1: a third
    before = trainer.model.item_emb.detach().clone()
    n = share_elimination.reset_distrusted_items(trainer, initial, items, keep, data.n_items,
                                                 0.5)
    after = trainer.model.item_emb.detach()
    assert n == 1 and torch.equal(after[0], initial["item_emb"][0])
    assert torch.equal(after[1:], before[1:])
    state = trainer.optimizer.state[trainer.model.item_emb]
    assert (state["exp_avg"][0] == 0).all() and (state["exp_avg"][1] != 0).any()


def test_bad_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="granularity"):
        SHARE.parse_options({"granularity": "items"})
    with pytest.raises(ConfigError, match="arms"):
        SHARE.parse_options({"arms": []})
    with pytest.raises(ConfigError, match="eliminate_fraction"):
        SHARE.parse_options({"eliminate_fraction": 1.0})
    with pytest.raises(ConfigError, match="eliminate_amount"):
        SHARE.parse_options({"eliminate_amount": "all"})
    with pytest.raises(ConfigError, match="group_weight"):
        SHARE.parse_options({"group_weight": 0.0})


def test_row_encoding_round_trips():
    rows = np.array([0, 3, 4, 1000, 65536, 70000])
    assert np.array_equal(decode_rows(encode_rows(rows[::-1])), rows)
    assert len(decode_rows(encode_rows(np.zeros(0, np.int64)))) == 0


@pytest.mark.parametrize("quality", ["loss", "hr"])
def test_share_returns_the_best_quality_epoch_after_the_warm_up(planted, quality):
    """The returned epoch maximizes the logged quality among the epochs after the warm-up (never
    a plain warm-up epoch, even when one validates better); "hr" is a validation hit ratio."""
    data, _ = planted
    cfg = ModelConfig(dim=16, epochs=8, batch_size=256, lr=0.01)
    options = SHARE.parse_options({"warmup": 3, "quality": quality, "top_k": 20})
    _, info = SHARE(options, cfg, seed=0).fit(data)
    qualities = [e["val_quality"] for e in info["epochs"]]
    assert info["best_epoch"] == 4 + int(np.argmax(qualities[3:]))
    assert info["best_val"] == pytest.approx(-max(qualities[3:]))
    if quality == "hr":
        assert all(0.0 <= q <= 1.0 for q in qualities) and max(qualities) > 0
    else:
        assert qualities == pytest.approx([-e["val_loss"] for e in info["epochs"]])
    with pytest.raises(ConfigError, match="quality"):
        SHARE.parse_options({"quality": "ndcg"})


def test_item_support_is_the_shrunk_validation_to_training_ratio_and_flags_injected_items():
    from defenses.share_valuation import item_support
    # Item 0: 9 training, 1 validation rating; item 1: 9 + 20 injected training, 1 validation;
    # item 2: 1 training, 0 validation.
    train = torch.tensor([0] * 9 + [1] * 29 + [2])
    val = torch.tensor([0, 1])
    support = item_support(train, val, 3, prior=0.0)
    assert support.tolist() == pytest.approx([1 / 9, 1 / 29, 0.0])
    ratio = 2 / 39
    shrunk = item_support(train, val, 3, prior=10.0)
    assert shrunk[2].item() == pytest.approx((0 + 10 * ratio) / (1 + 10))
    assert shrunk[1] < shrunk[0]  # the injected ratings lower the item's support


def test_concentrated_rows_keeps_only_rows_on_items_they_dominate():
    from defenses.share_valuation import concentrated_rows
    # Item 0 has 10 rows, 1 chosen (10 %); item 1 has 4 rows, 2 chosen (50 %); item 2: 2 rows,
    # none chosen.
    items = torch.tensor([0] * 10 + [1] * 4 + [2] * 2)
    rows = torch.tensor([3, 10, 12])
    assert concentrated_rows(rows, items, 3, 0.0).tolist() == [3, 10, 12]
    assert concentrated_rows(rows, items, 3, 0.1).tolist() == [3, 10, 12]
    assert concentrated_rows(rows, items, 3, 0.2).tolist() == [10, 12]
    assert concentrated_rows(rows, items, 3, 0.6).tolist() == []


# ----------------------------------------------------------------------------- group signal
def test_lockstep_counts_flag_a_crowd_that_top_rates_the_same_items():
    """Items 0–3 are top-rated together by 30 of 200 users; the other users top-rate two random
    items each. Rows of the crowd on items 0–3 have 3 partners each, no other row has ≥ 2; rows
    below the top rating count 0; moving some crowd rows to 'validation' changes nothing."""
    from defenses.share_group import lockstep_counts
    rng = np.random.default_rng(0)
    n_users, n_items = 200, 50
    crowd = np.repeat(np.arange(30), 4), np.tile(np.arange(4), 30)
    rest_u = np.repeat(np.arange(30, n_users), 2)
    rest_i = rng.integers(4, n_items, len(rest_u))
    users = torch.as_tensor(np.concatenate([crowd[0], rest_u]))
    items = torch.as_tensor(np.concatenate([crowd[1], rest_i]))
    ratings = torch.ones(len(users))
    ratings[-5:] = 0.6                                       # below the top: never flagged
    counts = lockstep_counts(users, items, ratings, (users, items, ratings), n_users, n_items)
    assert counts[:120].tolist() == [3.0] * 120
    assert (counts[120:] < 2).all() and (counts[-5:] == 0).all()
    train = torch.arange(len(users)) % 10 != 0               # a tenth "in validation"
    part = lockstep_counts(users[train], items[train], ratings[train],
                           (users, items, ratings), n_users, n_items)
    assert torch.equal(part, counts[train])


@pytest.fixture(scope="module")
def cloned(tmp_path_factory):
    """Synthetic data, platform split, a 10 % clone attack on 3 unpopular targets."""
    from tests.conftest import small_tree
    from experiment.validation import config_from_dict
    tree = small_tree(tmp_path_factory.mktemp("share_clone"), attack={"name": ["clone"],
                      "size": 0.1}, split={"fake_rows": "platform"})
    ws = Workspace(config_from_dict(tree))
    cell = Cell("synthetic", 0, "unpopular", "clone", 0.1, 0.4, "share")
    split = ws.split("synthetic", 0)
    fake, _ = ws.fake_profiles(cell)
    return ws, ws.training_data(split, fake, cell), split.n_users, ws.targets("synthetic", 0,
                                                                              "unpopular")


def test_group_signal_distrusts_cloned_fakes_payload_and_lowers_target_hr(cloned):
    """Under the platform split (some fake rows sit in validation) fake users that clone real
    profiles and add the targets at the top rating: SHARE's default distrusts their target rows
    (and almost nothing else), from the first epoch, and the targets' hit ratio falls well
    below the undefended model's."""
    ws, data, n_real, targets = cloned
    fake = data.train.users >= n_real
    assert (data.val.users >= n_real).any()                 # the platform split
    payload = fake & np.isin(data.train.items, targets)
    cfg = ModelConfig(dim=16, epochs=20, batch_size=256, lr=0.01)
    share = SHARE(SHARE.parse_options({"warmup": 3}), cfg, seed=0)
    model, info = share.fit(data)
    distrusted = share.distrusted().rows
    assert info["scorings"][0]["epoch"] == 1                # screened before any training
    assert distrusted[payload].mean() >= 0.9
    assert payload[distrusted].mean() >= 0.8                # precision: the payload itself
    evaluator = ws.evaluator("synthetic", 0, "unpopular")
    k = evaluator.k
    defended = evaluator.evaluate(model).metrics[f"target_hr@{k}"]
    none = DEFENSES["none"]
    plain, _ = none(none.parse_options({}), cfg, seed=0).fit(data)
    undefended = evaluator.evaluate(plain).metrics[f"target_hr@{k}"]
    assert undefended > 0.05 and defended <= 0.5 * undefended, (defended, undefended)


def test_group_signal_leaves_clean_data_almost_whole(planted):
    """On the clean synthetic data the default eliminates (almost) nothing."""
    data, n_real = planted
    clean = data.train.users < n_real
    real = TrainingData(data.train.subset(clean), data.val, n_real, data.n_items, data.scale,
                        data.feedback)
    share = SHARE(SHARE.parse_options({"warmup": 2}), ModelConfig(dim=8, epochs=4), seed=0)
    share.fit(real)
    assert share.distrusted().rows.mean() <= 0.002


# ----------------------------------------------------------------------------- part (d)
def test_item_prior_adds_the_count_aware_penalty_to_the_item_gradient():
    """item_l2 adds exactly (2/B) · c_i · λ_i · q_i to the item gradient (c_i: occurrences in
    the batch) and nothing to the user side; SHARE's λ_i = λ / n_i^power over trusted rows."""
    from types import SimpleNamespace

    from defenses.mf_adversarial import adversarial_mf_epoch, no_perturbation
    users = torch.tensor([0, 1, 2, 0, 1, 3])
    items = torch.tensor([0, 0, 0, 1, 2, 2])
    ratings = torch.tensor([1.0, 0.8, 0.6, 0.4, 1.0, 0.2])
    keep = torch.tensor([True, True, False, True, True, True])
    lam = SHARE._item_l2(items, keep, 4, 8.0, 2.0)
    assert torch.allclose(lam, torch.tensor([8.0 / 4, 8.0, 8.0 / 4, 8.0]))  # 2, 1, 2, 0 rows

    def grads(item_l2):
        model = MF(4, 4, 3, torch.Generator().manual_seed(0))
        seen = []
        trainer = SimpleNamespace(model=model, cfg=ModelConfig(dim=3, batch_size=64, reg=0.01),
                                  generator=torch.Generator().manual_seed(1), device="cpu",
                                  _adam_step=lambda params, g: seen.append(g))
        adversarial_mf_epoch(trainer, users, items, ratings, no_perturbation, 0.0,
                             item_l2=item_l2)
        return seen[0], model.item_emb.detach()

    (gp0, gq0), Q = grads(None)
    (gp1, gq1), _ = grads(lam)
    count = torch.bincount(items, minlength=4).float()
    assert torch.equal(gp0, gp1)
    assert torch.allclose(gq1 - gq0, (2.0 / len(users)) * (count * lam).unsqueeze(1) * Q,
                          atol=1e-6)


@pytest.fixture(scope="module")
def thin(planted):
    """The clean synthetic data plus a target-spreading attack: 3 items rated once each, every
    one top-rated by 4 fake users that clone a random real profile and carry only that target
    (no two targets share an account: invisible to the group signal). (data, targets, real
    users' training rows)."""
    from data.ratings import Interactions
    data, n_real = planted
    real = data.train.users < n_real
    tr = data.train.subset(real)
    counts = np.bincount(tr.items, minlength=data.n_items)
    targets = np.flatnonzero(counts == 1)[:3]
    rng = np.random.default_rng(0)
    parts, fid = [tr], n_real
    for t in targets:
        for source in rng.choice(n_real, 4, replace=False):
            mine = tr.subset((tr.users == source) & (tr.items != t))
            parts.append(Interactions(np.full(len(mine) + 1, fid), np.r_[mine.items, t],
                                      np.r_[mine.ratings, 1.0]))
            fid += 1
    train = Interactions.concat(*parts)
    return (TrainingData(train, data.val, fid, data.n_items, data.scale, data.feedback),
            targets, tr)


def test_item_prior_keeps_a_thinly_pushed_item_out_of_the_lists(thin):
    """Spread targets escape the group signal (the default SHARE promotes them as much as plain
    MF); the item prior (share_prior) holds their embeddings: they leave the lists."""
    data, targets, tr = thin
    cfg = ModelConfig(dim=16, epochs=20, batch_size=256, lr=0.01)
    n_real = int(tr.users.max()) + 1

    def target_hr(name: str) -> float:
        defense = DEFENSES[name]
        model, _ = defense(defense.parse_options({"warmup": 3}), cfg, seed=0).fit(data)
        with torch.no_grad():
            scores = model.score_all(torch.arange(n_real)).numpy()
        scores[tr.users, tr.items] = -np.inf
        kth = np.sort(scores, 1)[:, -10:-9]
        return float((scores[:, targets] >= kth).mean())

    without, prior = target_hr("share"), target_hr("share_prior")
    assert without > 0.1, without
    assert prior <= 0.25 * without, (prior, without)
