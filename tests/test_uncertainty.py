"""Uncertainty of every cell (utils/uncertainty.py, experiment/summary.py): metrics recomputed from
the stored per-user outcomes, bootstrap intervals against their normal approximation, the
per-user paired test and Holm's correction on hand-computed cases, and the tables' rule that
no ratio is shown where the attack's gain is noise."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO  # noqa: F401  (puts the repository on sys.path)
from experiment import reporting
from utils.atomic import atomic_save_npz
from utils.statistics import holm, paired_user_p_value, user_contributions
from experiment.summary import IntervalOptions, summarize
from experiment.tables import build_tables
from utils.uncertainty import BlockBootstrap, metric_value, seed_t_interval

NAN = np.nan
K = 50


def test_metrics_from_outcomes_by_hand():
    outcomes = {"test_hit": np.array([1, 0, NAN, 1], np.float32),
                "target_hit": np.array([[1, NAN], [0, 1], [0, 1], [NAN, 0]], np.float32)}
    assert metric_value(outcomes, "hr") == pytest.approx(2 / 3)
    # target 0: 1 hit of 3 eligible; target 1: 2 of 3 → mean 1/2
    assert metric_value(outcomes, "target_hr") == pytest.approx(0.5)
    # all (user, target) pairs: 3 hits of 8
    assert metric_value(outcomes, "target_hr_all") == pytest.approx(3 / 8)
    # weights: user 0 drawn twice, user 3 never; target 1 drawn twice
    users, targets = np.array([[2.0, 1, 1, 0]]), np.array([[0.0, 2]])
    assert metric_value(outcomes, "target_hr", users, targets)[0] == pytest.approx(2 / 2)
    assert metric_value(outcomes, "hr", users, targets)[0] == pytest.approx(2 / 3)


def _proportion(n_users: int, hits: int, seed: int = 0) -> dict:
    hit = np.zeros((n_users, 1), np.float32)
    hit[np.random.default_rng(seed).permutation(n_users)[:hits]] = 1
    return {"test_hit": hit[:, 0].copy(), "target_hit": hit}


def test_one_seed_interval_matches_the_binomial_normal_approximation():
    outcomes = _proportion(400, 100)       # p = 0.25 over 400 users, one target
    boot = BlockBootstrap([(400, 1)], 4000, np.random.default_rng(1))
    interval = boot.interval([[outcomes]], [1.0], "target_hr", 0.95)
    half = 1.96 * np.sqrt(0.25 * 0.75 / 400)   # 0.0424
    assert interval.estimate == pytest.approx(0.25)
    assert interval.low == pytest.approx(0.25 - half, abs=0.006)
    assert interval.high == pytest.approx(0.25 + half, abs=0.006)
    again = BlockBootstrap([(400, 1)], 4000, np.random.default_rng(1))
    assert again.interval([[outcomes]], [1.0], "target_hr", 0.95) == interval   # reproducible
    narrow = boot.interval([[outcomes]], [1.0], "target_hr", 0.5)
    assert interval.low < narrow.low < narrow.high < interval.high


def test_targets_and_seeds_widen_the_interval():
    # Two targets with very different hit rates: resampling targets must widen the interval
    # compared with resampling users alone (the target weights are the only difference).
    hit = np.zeros((400, 2), np.float32)
    hit[:200, 0] = 1                        # target 0: 0.5, target 1: 0.0
    outcomes = {"test_hit": hit[:, 0].copy(), "target_hit": hit}
    boot = BlockBootstrap([(400, 2)], 2000, np.random.default_rng(2))
    both = boot.interval([[outcomes]], [1.0], "target_hr", 0.95)
    users_only = np.percentile(metric_value(outcomes, "target_hr", boot.user_w[0],
                                            np.ones((2000, 2))), [2.5, 97.5])
    assert both.high - both.low > 5 * (users_only[1] - users_only[0])
    # Seeds that disagree (0.10 vs 0.40) give an interval wider than either seed's alone.
    seeds = [_proportion(400, 40, 3), _proportion(400, 160, 4)]
    pooled = BlockBootstrap([(400, 1)] * 2, 2000, np.random.default_rng(5)).interval(
        [[s] for s in seeds], [1.0], "target_hr", 0.95)
    alone = BlockBootstrap([(400, 1)], 2000, np.random.default_rng(5)).interval(
        [[seeds[0]]], [1.0], "target_hr", 0.95)
    assert pooled.estimate == pytest.approx(0.25)
    assert pooled.high - pooled.low > 3 * (alone.high - alone.low)


def test_paired_difference_of_identical_cells_is_exactly_zero():
    outcomes = _proportion(300, 90)
    boot = BlockBootstrap([(300, 1)], 500, np.random.default_rng(0))
    same = boot.interval([[outcomes, outcomes]], [1.0, -1.0], "target_hr", 0.95)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_seed_t_interval_by_hand():
    interval = seed_t_interval(np.array([0.90, 0.91, 0.92]), 0.95)
    half = 4.302652729911275 * 0.01 / np.sqrt(3)
    assert (interval.low, interval.high) == pytest.approx((0.91 - half, 0.91 + half))
    assert np.isnan(seed_t_interval(np.array([0.5]), 0.95).low)


def test_per_user_paired_test_by_hand():
    a = {"test_hit": np.array([1, 1, 1, 0, 1], float)}
    b = {"test_hit": np.array([0, 1, 0, 0, 0], float)}
    # contributions (a − b) / 5 = [.2, 0, .2, 0, .2]: t = √6 with 4 df → p = 0.0705
    assert user_contributions(a, b, "hr") == pytest.approx([0.2, 0, 0.2, 0, 0.2])
    assert paired_user_p_value(a, b, "hr") == pytest.approx(0.070484, abs=1e-6)
    assert paired_user_p_value(a, a, "hr") == 1.0
    ta = {"target_hit": np.array([[1, NAN], [0, 1], [0, 1], [NAN, 0]], float)}
    tb = {"target_hit": np.array([[0, NAN], [0, 0], [0, 1], [NAN, 0]], float)}
    # each target has 3 eligible users; a user's hit gained is worth 1 / (2 · 3)
    contributions = user_contributions(ta, tb, "target_hr")
    assert contributions == pytest.approx([1 / 6, 1 / 6, 0, 0])
    assert contributions.sum() == pytest.approx(metric_value(ta, "target_hr")
                                                - metric_value(tb, "target_hr"))


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, NAN])
    # sorted 0.01, 0.03, 0.04 → 3·0.01, 2·0.03, max(0.06, 1·0.04)
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
    assert list(holm([0.5, 0.9])) == [1.0, 1.0]   # 2·0.5 = 1, then max(1, 0.9)


# ----------------------------------------------------------------------------- tables

N_USERS = 200
# hits per seed of both targets (users 0..n−1 hit): Origin 0; "weak" attack one user on one
# target (gain 0.0025 < 0.01); "strong" attack ≈ 60 users, AT halves it.
HITS = {("none", "none"): [0, 0, 0], ("weak", "none"): [1, 1, 1], ("weak", "at"): [0, 0, 0],
        ("strong", "none"): [60, 62, 58], ("strong", "at"): [30, 33, 29]}


def _cells(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    rows = []
    for (attack, defense), per_seed in HITS.items():
        for repeat, hits in enumerate(per_seed):
            target_hit = np.zeros((N_USERS, 2), np.float32)
            target_hit[:hits, 0] = 1
            if attack == "strong":
                target_hit[:hits, 1] = 1
            test_hit = (np.arange(N_USERS) % 3 == repeat).astype(np.float32)
            key = f"{attack}-{defense}-{repeat}"
            atomic_save_npz(cells / f"{key}.npz", target_hit=target_hit, test_hit=test_hit)
            outcomes = {"target_hit": target_hit, "test_hit": test_hit}
            rows.append({
                "experiment": "e", "cell": key, "dataset": "ml-100k", "model": "mf",
                "feedback": "explicit", "target_kind": "unpopular", "targets": "1 2",
                "attack": attack, "attack_size": 0.0 if attack == "none" else 0.03,
                "knowledge_cost": 0.0 if attack == "none" else 0.4, "attack_params": "",
                "defense": defense, "defense_params": "", "repeat": repeat, "seed": repeat,
                "n_fake": 0, "filler_size": 0,
                f"target_hr@{K}": metric_value(outcomes, "target_hr"),
                f"hr@{K}": metric_value(outcomes, "hr"), "defense_info": "{}"})
    runs = reporting.add_relative_metrics(reporting.runs_frame(rows), K)
    return runs, cells


def test_ratios_only_where_the_attack_gain_is_established(tmp_path):
    runs, cells = _cells(tmp_path)
    summary = summarize(runs, K, None, IntervalOptions(cells_dir=cells, bootstrap=500))
    by = summary.set_index(["attack", "defense"])
    assert (by["interval"] == "bootstrap").all()
    weak, strong = by.loc[("weak", "at")], by.loc[("strong", "at")]
    assert weak["attack_effective"] is False and np.isnan(weak["ri_of_means"])
    assert strong["attack_effective"] is True
    assert strong["ri_of_means"] == pytest.approx(1 - (92 / 600) / (180 / 600))
    # AT's change from the undefended model: −(180 − 92) / 3 / 200 with an interval below 0
    assert strong[f"change_target_hr@{K}"] == pytest.approx(-88 / 600)
    assert strong[f"change_target_hr@{K}_high"] < 0
    assert by.loc[("strong", "none"), f"target_hr@{K}_low"] < 0.3 < by.loc[
        ("strong", "none"), f"target_hr@{K}_high"]
    assert strong["test_vs_undefended"] == "seeds"
    tables = {t.title: t for t in build_tables(summary, K)}
    reduction = next(t for title, t in tables.items() if "success reduction" in title)
    text = reporting.render_markdown("e", [reduction], None, 3)
    assert "n.e.ᵃ" in text                          # the weak attack's ratio is left out
    assert f"{100 * (1 - 92 / 180):.1f}%" in text   # the strong attack's is shown
    assert "(1 of 2)" in text                       # the mean row says what it kept
    assert "Δ -0.1467 [" in text                    # the absolute change beside the ratio


def test_one_seed_uses_the_per_user_test(tmp_path):
    runs, cells = _cells(tmp_path)
    runs = runs[runs.repeat == 0]
    summary = summarize(runs, K, None, IntervalOptions(cells_dir=cells, bootstrap=300))
    strong = summary.set_index(["attack", "defense"]).loc[("strong", "at")]
    assert strong["test_vs_undefended"] == "users"
    # 30 users lose both targets' hits: contributions 2 · 1/(2·200) each, the rest 0
    contributions = np.r_[np.full(30, 1 / 200), np.zeros(170)]
    from scipy import stats
    expected = stats.ttest_1samp(contributions, 0.0).pvalue
    assert strong[f"p_vs_undefended_target_hr@{K}"] == pytest.approx(expected)
    assert strong[f"p_holm_vs_undefended_target_hr@{K}"] >= expected


def test_cells_without_outcomes_fall_back_to_seed_intervals(tmp_path):
    runs, _ = _cells(tmp_path)
    summary = summarize(runs, K, None, IntervalOptions(cells_dir=None))
    strong = summary.set_index(["attack", "defense"]).loc[("strong", "none")]
    assert strong["interval"] == "seeds"
    values = runs[(runs.attack == "strong") & (runs.defense == "none")][f"target_hr@{K}"]
    expected = seed_t_interval(values.to_numpy(), 0.95)
    assert strong[f"target_hr@{K}_low"] == pytest.approx(expected.low)
