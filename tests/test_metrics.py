"""Evaluator metrics on hand-computed cases (protocol.md §4)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data.ratings import Interactions, RatingScale, Split
from utils.metrics import (LIST, METRICS, NONE, TARGET_PAIRS, USER_MEAN, Evaluator, ListMetric,
                           Metric, UserMeanMetric, combine_outcomes, interval_metrics,
                           prediction_shift, rank_shift)
from utils.metrics.base import INPUTS, ITEM_POPULARITY, TOP_ITEMS
from utils.uncertainty import metric_value


class FixedScores(torch.nn.Module):
    """A 'model' that returns a given score matrix (rows: users incl. fake ones)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def score_all(self, users):
        return self.scores[users]


def make_split(train_pairs, val_pairs, test_items, test_ratings, n_users, n_items):
    tr = np.array(train_pairs).reshape(-1, 2)
    va = np.array(val_pairs).reshape(-1, 2)
    return Split(Interactions(tr[:, 0], tr[:, 1], np.full(len(tr), 0.6)),
                 Interactions(va[:, 0], va[:, 1], np.full(len(va), 0.6)),
                 np.array(test_items), np.array(test_ratings, dtype=np.float32),
                 n_users, n_items, RatingScale(5.0, 5))


@pytest.fixture
def case():
    # 3 real users, 6 items; target items 4 and 5.
    # user 0: rated 0 (train), 1 (val); test item 2. Scores: item 0 highest but masked.
    # user 1: rated 4 (train) → not eligible for target 4; test item 3.
    # user 2: no positive → no test item; rated 0.
    split = make_split([(0, 0), (1, 4), (2, 0)], [(0, 1)], [2, 3, -1], [1.0, 0.8, 0.0], 3, 6)
    scores = np.array([
        [9.0, 8.0, 5.0, 6.0, 7.0, 1.0],    # u0: unmasked order 4(7),3(6),2(5),5(1)
        [0.0, 1.0, 2.0, 3.0, 9.0, -2.0],   # u1: item 4 masked; a negative score on item 5
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.5],    # u2
        [0.0, 0.0, 0.0, 0.0, 99.0, 99.0],  # a fake user: must never count
    ])
    return split, FixedScores(scores)


def test_hit_ratio_ndcg_and_mse_on_hand_computed_case(case):
    split, model = case
    ev = Evaluator(split, np.array([4, 5]), k=2)
    m = ev.evaluate(model).metrics
    # u0: test item 2 has rank 2 (0-based: items 4 and 3 above) → miss at K=2.
    # u1: test item 3 has rank 0 (item 4 masked) → hit; NDCG = 1/log2(2) = 1.
    assert m["hr@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(0.5)
    # MSE on the original scale (scores are normalized predictions, × 5): u0 predicts
    # 5.0 × 5 for a 5, u1 3.0 × 5 for a 4.
    assert m["test_mse"] == pytest.approx(((25 - 5) ** 2 + (15 - 4) ** 2) / 2)
    assert m["test_rmse"] == pytest.approx(math.sqrt(260.5))


def test_target_hit_ratio_uses_eligible_real_users_only(case):
    split, model = case
    m = Evaluator(split, np.array([4, 5]), k=2).evaluate(model).metrics
    # Target 4: eligible u0 (rank 0 → hit) and u2 (rank 3 → miss); u1 rated it → excluded.
    # Target 5: eligible u0 (rank 3), u1 (rank 4: −2 is the lowest unmasked score), u2 (rank 4).
    assert m["target_hr@2"] == pytest.approx((1 / 2 + 0 / 3) / 2)
    # TCD's variant: hits over all real users × targets.
    assert m["target_hr_all@2"] == pytest.approx(1 / 6)
    # Average rank (1-based) over the five eligible pairs: 1, 4 (target 4); 4, 5, 5 (target 5).
    assert m["avg_target_rank"] == pytest.approx((1 + 4 + 4 + 5 + 5) / 5)


def test_masked_items_never_count_even_with_top_scores(case):
    split, model = case
    res = Evaluator(split, np.array([4]), k=1).evaluate(model)
    # u1 scores item 4 highest (9.0) but rated it: masked, not eligible, not a hit.
    assert not res.eligible[1, 0]
    assert res.target_ranks[1, 0] == -1
    # u0's test item 2 would be rank 4 without masking items 0 and 1; with masking, rank 2.
    assert Evaluator(split, np.array([4]), k=3).evaluate(model).metrics["hr@3"] == 1.0


def test_user_who_rated_target_in_test_is_not_eligible():
    split = make_split([(0, 0), (1, 0)], [], [3, 1], [1.0, 1.0], 2, 4)
    model = FixedScores(np.array([[0, 1, 2, 3.0], [0, 3, 2, 1.0]]))
    res = Evaluator(split, np.array([3]), k=1).evaluate(model)
    assert res.eligible[:, 0].tolist() == [False, True]
    assert res.metrics["target_hr@1"] == 0.0  # u1 ranks item 3 last


def test_ties_are_pessimistic():
    split = make_split([(0, 0)], [], [1], [1.0], 1, 4)
    model = FixedScores(np.zeros((1, 4)))
    m = Evaluator(split, np.array([2]), k=1).evaluate(model).metrics
    assert m["hr@1"] == 0.0 and m["target_hr@1"] == 0.0


def test_prediction_and_rank_shift(case):
    split, model = case
    ev = Evaluator(split, np.array([5]), k=2)
    clean = ev.evaluate(model)
    boosted = model.scores.clone()
    boosted[:3, 5] += 10.0  # the target jumps to the top of every real user's list
    attacked = ev.evaluate(FixedScores(boosted))
    assert prediction_shift(attacked, clean, 5.0) == pytest.approx(50.0)
    # Ranks before: u0 3, u1 4, u2 4 → after: 0 for all.
    assert sorted(rank_shift(attacked, clean).tolist()) == [3, 4, 4]
    assert attacked.metrics["target_hr@2"] == 1.0


def test_batched_evaluation_matches_single_batch(case):
    split, model = case
    a = Evaluator(split, np.array([4, 5]), k=2, batch_users=1).evaluate(model).metrics
    b = Evaluator(split, np.array([4, 5]), k=2, batch_users=100).evaluate(model).metrics
    assert a == b


def test_stored_outcomes_reproduce_the_metrics(case):
    """The per-user outcomes a cell stores (what the intervals resample) give back its HR@K,
    target HR@K and target HR@K over all pairs exactly."""
    split, model = case
    res = Evaluator(split, np.array([4, 5]), k=2).evaluate(model)
    outcomes = res.outcomes()
    assert outcomes["target_hit"].shape == (split.n_users, 2)
    assert np.isnan(outcomes["target_hit"][~res.eligible]).all()
    for metric, name in (("hr", "hr@2"), ("target_hr", "target_hr@2"),
                         ("target_hr_all", "target_hr_all@2"), ("mrr", "mrr@2")):
        assert metric_value(outcomes, metric) == pytest.approx(res.metrics[name])
    # A leave-one-out split: the outcomes of every leave-one-out metric with an interval.
    assert sorted(outcomes) == sorted({key for m in interval_metrics("loo")
                                       for key in m.stored_keys()})


# ----------------------------------------------------------------------------- the registry

def test_mrr_on_the_hand_computed_case(case):
    """u0's test item 2 has rank 2 (0-based), u1's test item 3 rank 0, u2 has none."""
    split, model = case
    at2 = Evaluator(split, np.array([4, 5]), k=2).evaluate(model)
    assert at2.metrics["mrr@2"] == pytest.approx((0 + 1 / 1) / 2)   # rank 2 is outside K=2
    at3 = Evaluator(split, np.array([4, 5]), k=3).evaluate(model)
    assert at3.metrics["mrr@3"] == pytest.approx((1 / 3 + 1 / 1) / 2)
    per_user = at3.outcomes()["mrr"]
    assert per_user[:2].tolist() == pytest.approx([1 / 3, 1.0]) and np.isnan(per_user[2])
    # A leave-one-out split: every metric of that protocol, in registry order.
    assert list(at3.metrics) == [m.column(3) for m in METRICS.values() if "loo" in m.protocols]


def test_every_metric_declares_what_reporting_reads():
    kinds = {USER_MEAN, TARGET_PAIRS, LIST, NONE}
    for name, metric in METRICS.items():
        assert metric.name == name and metric.label and metric.interval in kinds
        assert set(metric.needs) <= set(INPUTS), name
        if metric.table:
            assert "{label}" in metric.table or "{k}" in metric.table
    assert METRICS["hr"].higher_is_better and not METRICS["target_hr"].higher_is_better
    assert METRICS["mrr"].column(20) == "mrr@20" and METRICS["test_mse"].column(20) == "test_mse"


class TopItemShare(ListMetric):
    """A list-level test metric: the share of all shown top-K slots that the most shown item
    takes (exercises the LIST kind and the optional top-K input)."""

    name = "top_item_share"
    label = "top item share@{k}"

    def statistic(self, lists, n_items, user_w):
        shown = lists >= 0
        users = np.broadcast_to(np.arange(len(lists))[:, None], lists.shape)[shown]
        per_item = np.zeros((len(user_w), n_items))
        np.add.at(per_item.T, lists[shown], user_w[:, users].T)
        return per_item.max(1) / per_item.sum(1)


class MeanListPopularity(UserMeanMetric):
    """A per-user test metric: the mean training popularity of a user's top-K items."""

    name = "list_popularity"
    label = "list popularity@{k}"
    needs = (TOP_ITEMS, ITEM_POPULARITY)

    def per_user(self, ev):
        shown = ev.top_items >= 0
        pop = np.where(shown, ev.item_popularity[np.maximum(ev.top_items, 0)], 0)
        return pop.sum(1) / np.maximum(shown.sum(1), 1)


def test_the_evaluator_hands_top_k_lists_and_popularity_to_metrics_that_need_them(case):
    split, model = case
    metrics = [TopItemShare(), MeanListPopularity()]
    res = Evaluator(split, np.array([4, 5]), k=2, batch_users=2, metrics=metrics
                    ).evaluate(model)
    # Unmasked scores: u0 items 2..5 → 4 (7.0), 3 (6.0); u1 (4 masked) → 3, 2;  (listed
    # in item order) u2 (0 masked) → 1 (4.0), 2 (3.0). Items 3 and 2 take 2 of 6 slots each.
    # Popularity among the real users' training rows ((0,0), (1,4), (2,0); the validation
    # row (0,1) does not count): item 0: 2, item 4: 1, others 0.
    stored = res.outcomes()
    assert stored["top_items"][:, 0].tolist() == [[3, 4], [2, 3], [1, 2]]   # item order
    assert stored["n_items"] == 6
    assert res.metrics["top_item_share@2"] == pytest.approx(2 / 6)
    assert res.metrics["list_popularity@2"] == pytest.approx((1 / 2 + 0 + 0) / 3)
    # Resampled users: u0 twice, u1 never → slots 4, 3, 4, 3, 1, 2 → 4 and 3 take 2 of 6.
    weights = np.array([[2.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert metric_value(stored, metrics[0], weights, np.ones((2, 1))) == pytest.approx(
        [2 / 6, 1 / 2])
    assert metric_value(stored, metrics[1], weights, np.ones((2, 1))) == pytest.approx(
        [(2 * 0.5 + 0) / 3, 0.0])
    # Retrainings: lists are kept side by side (the statistic is their mean), per-user values
    # averaged.
    other = Evaluator(split, np.array([4, 5]), k=2, metrics=metrics).evaluate(
        FixedScores(model.scores[:, [0, 1, 2, 3, 5, 4]]))   # items 4 and 5 swap scores
    both = combine_outcomes([res, other], metrics)
    assert both["top_items"].shape == (3, 2, 2) and both["n_items"] == 6
    assert both["top_items"][0].tolist() == [[3, 4], [3, 5]]
    assert metric_value(both, metrics[0]) == pytest.approx(
        (2 / 6 + other.metrics["top_item_share@2"]) / 2)
    # K above a user's unmasked items: the list ends in -1.
    long = Evaluator(split, np.array([4]), k=6, metrics=metrics).evaluate(model)
    assert long.outcomes()["top_items"][0, 0].tolist() == [2, 3, 4, 5, -1, -1]
    with pytest.raises(ValueError, match="metric input 'clicks' is unknown"):
        Evaluator(split, np.array([4]), metrics=[type("Bad", (Metric,), {"needs": ("clicks",)})()])


def test_a_registered_list_metric_reaches_runs_and_summary_with_an_interval(small_config,
                                                                             monkeypatch):
    """One registry line is all a new metric needs: its column in runs.csv after the other
    registered metrics, its stored lists and catalogue size with each cell, and a bootstrap
    interval recomputed on resampled users in summary.csv."""
    import pandas as pd

    from experiment.pipeline import run_experiment

    monkeypatch.setitem(METRICS, "top_item_share", TopItemShare())
    out = run_experiment(small_config(model={"dim": 8, "epochs": 2, "batch_size": 256},
                                      evaluation={"k": 10, "retrains": 2}))
    runs = pd.read_csv(out / "runs.csv")
    columns = list(runs.columns)
    assert columns.index("top_item_share@10") == columns.index("gini@10") + 1
    assert ((runs["top_item_share@10"] > 0) & (runs["top_item_share@10"] <= 1)).all()
    cell = np.load(out / "cells" / f"{runs.cell.iloc[0]}.npz")
    assert cell["top_items"].shape == (300, 2, 10) and int(cell["n_items"]) == 200
    summary = pd.read_csv(out / "summary.csv")
    low, mean, high = (summary[f"top_item_share@10_{s}"] for s in ("low", "mean", "high"))
    assert np.allclose(mean, runs.groupby(["attack", "defense"], sort=False)[
        "top_item_share@10"].mean())
    assert ((low < high) & (low < mean * 1.5) & (high > mean / 1.5)).all()

