"""Detection baselines (defenses/detection.py, pca_detect.py, degsim.py): RDMA by hand, DegSim
and the PCA contributions against brute-force references, the flag count and tie rule, the
dropped rows, the options; on synthetic data with a planted average attack each detector
flags mostly fake users and the victim trained without them is less promoted."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data.ratings import Interactions
from defenses import DEFENSES
from defenses.degsim import DegSimDetect, degsim, rank01, rdma
from defenses.detection import flag_count, top_users, user_zscores
from defenses.pca_detect import PCADetect, pca_contributions
from models.trainer import Trainer
from utils.config import ConfigError, ModelConfig
from experiment.validation import config_from_dict
from experiment.planning import Cell
from experiment.workspace import Workspace

CFG = ModelConfig(dim=32, epochs=30, batch_size=256)
DETECTORS = ["pca_detect", "degsim"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Synthetic 400 users × 500 items (~50 ratings each) plus a 5 % average attack (20 fake
    users, ids ≥ 400) on 3 unpopular targets, fake rows split like real ones (``platform``):
    (workspace, TrainingData, clean TrainingData, number of real users)."""
    from tests.conftest import small_tree
    tree = small_tree(tmp_path_factory.mktemp("detect"), seed=3,
                      attack={"name": ["average"], "size": 0.05},
                      split={"fake_rows": "platform"},
                      dataset={"name": "synthetic",
                               "synthetic": {"n_users": 400, "n_items": 500, "density": 0.1}})
    ws = Workspace(config_from_dict(tree))
    split = ws.split("synthetic", 0)
    cell = Cell("synthetic", 0, "unpopular", "average", 0.05, 0.4, "none")
    fake, _ = ws.fake_profiles(cell)
    return ws, ws.training_data(split, fake, cell), ws.training_data(split, None), split.n_users


def fake_fraction(data, n_real):
    return (data.n_users - n_real) / data.n_users


def random_ratings(n_users, n_items, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[:, :2] = True                                     # everyone rates at least 2 items
    users, items = np.nonzero(mask)
    return Interactions(users, items, rng.integers(1, 6, len(users)) / 5.0)


# ----------------------------------------------------------------------------- the metrics
def test_rdma_by_hand():
    # Item 0: 1.0, 0.6, 0.2 (mean 0.6, 3 ratings); item 1: 0.4 (1 rating); item 2: 0.8, 0.4
    # (mean 0.6, 2 ratings). User 3 rated nothing.
    obs = Interactions([0, 0, 1, 1, 2, 2], [0, 1, 0, 2, 0, 2], [1.0, 0.4, 0.6, 0.8, 0.2, 0.4])
    got = rdma(obs, 4, 3)
    assert got[0] == pytest.approx((0.4 / 3 + 0.0 / 1) / 2)
    assert got[1] == pytest.approx((0.0 / 3 + 0.2 / 2) / 2)
    assert got[2] == pytest.approx((0.4 / 3 + 0.2 / 2) / 2)
    assert np.isnan(got[3])


def brute_degsim(obs, n_users, n_items, k, min_overlap, significance):
    R = np.full((n_users, n_items), np.nan)
    R[obs.users, obs.items] = obs.ratings
    sim = np.full((n_users, n_users), -np.inf)
    for u in range(n_users):
        for v in range(n_users):
            if u == v:
                continue
            both = ~np.isnan(R[u]) & ~np.isnan(R[v])
            a, b = R[u, both], R[v, both]
            s = 0.0
            if both.sum() >= min_overlap and a.std() > 1e-9 and b.std() > 1e-9:
                s = float(np.corrcoef(a, b)[0, 1])
                if significance:
                    s *= min(both.sum(), significance) / significance
            sim[u, v] = s
    return np.sort(sim, axis=1)[:, ::-1][:, :k].mean(axis=1)


@pytest.mark.parametrize("min_overlap,significance", [(2, 0), (3, 0), (2, 4)])
def test_degsim_is_the_mean_pearson_of_the_k_nearest(min_overlap, significance):
    obs = random_ratings(13, 15, 0.35, seed=1)
    expected = brute_degsim(obs, 13, 15, 4, min_overlap, significance)
    got = degsim(obs, 13, 15, 4, min_overlap, significance, block=5)   # blocks of 5, 5, 3
    assert np.allclose(got, expected, atol=1e-9)
    # k = 1: the single most similar other user (never oneself, whose similarity is 1).
    assert np.allclose(degsim(obs, 13, 15, 1, min_overlap, significance, block=4),
                       brute_degsim(obs, 13, 15, 1, min_overlap, significance), atol=1e-9)


@pytest.mark.parametrize("n_users,n_items", [(25, 40), (40, 25)])
@pytest.mark.parametrize("zscore", ["all", "rated"])
def test_pca_contributions_are_the_squared_top_singular_vector_rows(n_users, n_items, zscore):
    obs = random_ratings(n_users, n_items, 0.3, seed=2)
    if zscore == "all":
        X = np.zeros((n_users, n_items))
        X[obs.users, obs.items] = obs.ratings
        X = (X - X.mean(1, keepdims=True)) / X.std(1, keepdims=True)
    else:
        X = np.zeros((n_users, n_items))
        X[obs.users, obs.items] = user_zscores(obs, n_users)
        rated = np.bincount(obs.users, minlength=n_users)   # a rating at the mean is 0
        assert np.allclose(X.sum(1), 0)
        assert np.allclose((X ** 2).sum(1) / rated, 1.0)
    U = np.linalg.svd(X, full_matrices=False)[0]
    got = pca_contributions(obs, n_users, n_items, 3, zscore)
    assert np.allclose(got, (U[:, :3] ** 2).sum(1), atol=1e-7)


def test_rank01_shares_ties_and_keeps_nan():
    got = rank01(np.array([3.0, 1.0, np.nan, 3.0, 2.0]))
    assert np.allclose(got[[0, 1, 3, 4]], [2.5 / 3, 0.0, 2.5 / 3, 1 / 3])
    assert np.isnan(got[2])


# ----------------------------------------------------------------------------- flagging
def test_flag_count_is_the_rounded_fraction_within_bounds():
    assert flag_count(0.03, 971) == 29
    assert flag_count(0.001, 10) == 1          # at least one
    assert flag_count(0.5, 2) == 1             # never every user
    assert flag_count(0.05, 420) == 21


def test_top_users_breaks_ties_at_random_and_never_prefers_nan():
    rng = np.random.default_rng(0)
    tied = top_users(np.zeros(200), 10, rng)
    assert tied.sum() == 10 and not tied[:10].all()    # not the lowest ids
    assert np.flatnonzero(tied).max() >= 20
    got = top_users(np.array([np.nan, 0.0, np.nan, 1.0, -5.0]), 3, rng)
    assert np.flatnonzero(got).tolist() == [1, 3, 4]


@pytest.mark.parametrize("name", DETECTORS)
def test_flagged_users_lose_every_row_and_are_reported(planted, name, monkeypatch):
    _, data, _, n_real = planted
    seen = []
    original = Trainer.fit

    def recording(self, train, val, *args, **kwargs):
        seen.append((train, val))
        return original(self, train, val, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", recording)
    defense = DEFENSES[name](DEFENSES[name].parse_options({"flag_fraction": 0.05}),
                             ModelConfig(dim=8, epochs=2, batch_size=1024), seed=0)
    assert defense.distrusted() is None and DEFENSES[name].judges_data()
    _, info = defense.fit(data)
    distrust = defense.distrusted()
    flagged = distrust.users
    assert flagged.shape == (data.n_users,) and flagged.sum() == round(0.05 * data.n_users)
    assert np.array_equal(distrust.rows, flagged[data.train.users])
    (train, val), = seen
    assert not flagged[train.users].any() and not flagged[val.users].any()
    assert len(train) == len(data.train) - distrust.rows.sum()
    assert len(val) == len(data.val) - flagged[data.val.users].sum()
    # Under ``platform`` the flagged fake users had validation rows: they are gone too.
    assert info["dropped_val_rows"] > 0 and info["flagged_users"] == flagged.sum()
    # The same seed flags the same users.
    again = DEFENSES[name](defense.options, defense.model_cfg, seed=0).flag(data)
    assert np.array_equal(again, flagged)
    # use_validation reads the validation rows as profile data only when they are known
    # ratings, never when they are the test set standing in for selection (select_on: test).
    reader = DEFENSES[name](DEFENSES[name].parse_options({"use_validation": True}),
                            defense.model_cfg, seed=0)
    assert len(reader.observed(data)) == len(data.train) + len(data.val)
    assert len(reader.observed(dataclasses.replace(data, val_known=False))) == len(data.train)


# ----------------------------------------------------------------------------- planted attack
@pytest.fixture(scope="module")
def undefended_hr(planted):
    ws, data, clean, _ = planted
    evaluator = ws.evaluator("synthetic", 0, "unpopular")
    hr = {}
    for tag, d in (("origin", clean), ("attacked", data)):
        model, _ = DEFENSES["none"](None, CFG, seed=0).fit(d)
        hr[tag] = evaluator.evaluate(model).metrics["target_hr@10"]
    return hr


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_flags_the_planted_fakes_and_the_victim_is_less_promoted(planted, undefended_hr,
                                                                         name):
    ws, data, _, n_real = planted
    fraction = fake_fraction(data, n_real)                 # 20 / 420: the true attack size
    defense = DEFENSES[name](DEFENSES[name].parse_options({"flag_fraction": fraction}), CFG,
                             seed=0)
    model, _ = defense.fit(data)
    flagged = defense.distrusted().users
    is_fake = np.arange(data.n_users) >= n_real
    precision = is_fake[flagged].mean()
    assert precision >= 0.6, (name, precision, fraction)   # chance: 0.048
    hr = ws.evaluator("synthetic", 0, "unpopular").evaluate(model).metrics["target_hr@10"]
    assert undefended_hr["attacked"] > undefended_hr["origin"] + 0.02   # the attack works
    assert hr < undefended_hr["attacked"] - 0.5 * (undefended_hr["attacked"]
                                                   - undefended_hr["origin"]), (name, hr)


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("name,options,field", [
    ("pca_detect", {"flag_fraction": 0.0}, "flag_fraction"),
    ("pca_detect", {"flag_fraction": 0.6}, "flag_fraction"),
    ("pca_detect", {"components": 0}, "components"),
    ("pca_detect", {"zscore": "columns"}, "zscore"),
    ("degsim", {"k": 0}, "k"),
    ("degsim", {"min_overlap": 1}, "min_overlap"),
    ("degsim", {"rdma_weight": 1.5}, "rdma_weight"),
    ("degsim", {"combine": "max"}, "combine"),
    ("degsim", {"neighbours": 5}, "neighbours"),
])
def test_bad_options_are_one_line_errors(name, options, field):
    with pytest.raises(ConfigError, match=field) as err:
        DEFENSES[name].parse_options(options, f"defense.options.{name}")
    assert "\n" not in str(err.value)


def test_options_are_checked_when_the_config_is_read(tmp_path):
    from tests.conftest import small_tree
    tree = small_tree(tmp_path, defense={"name": ["degsim"],
                                         "options": {"degsim": {"combine": "sum"}}})
    with pytest.raises(ConfigError, match="defense.options.degsim.combine"):
        config_from_dict(tree)
    defaults = (PCADetect.parse_options({}), DegSimDetect.parse_options({}))
    assert defaults[0].flag_fraction == 0.03 and defaults[0].components == 3
    assert defaults[1].k == 25 and defaults[1].combine == "rank"
