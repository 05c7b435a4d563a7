"""The long-tail utility metrics (utils/metrics/tail.py) on hand-computed cases, the top-K tie
rule they read, and their reporting: the utility table, the worst-case columns, the ‡ mark on
a defense that stops recommending the tail, summary.csv's flag and the table fixes of issue 29.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from defenses import DEFENSES
from defenses.none import NoDefense
from utils.metrics import METRICS, Evaluator, pessimistic_top_k, split_head
from utils.metrics.base import Evaluation
from utils.uncertainty import metric_value
from tests.test_metrics import FixedScores, make_split


# ----------------------------------------------------------------------------- head / tail

def test_the_head_is_at_most_head_share_and_boundary_ties_go_to_the_tail():
    pop = np.array([9, 7, 3, 3, 3, 1, 0, 0, 0, 0])
    # 20 % of 10 items = 2: the 3rd most rated has 3 ratings → head = rated more than 3 times.
    head = split_head(pop, 0.2)
    assert (head.threshold, head.n_head, head.share) == (3, 2, 0.2)
    assert head.long_tail.tolist() == [False, False] + [True] * 8
    # 30 % = 3 slots, but items 2, 3, 4 tie at the boundary (3 ratings): all three go to the
    # tail, the head stays {0, 1} (actual share 0.2 ≤ 0.3).
    head = split_head(pop, 0.3)
    assert (head.threshold, head.n_head, head.share) == (3, 2, 0.2)
    # 50 % = 5 slots: the 6th has 1 rating → head = {0..4}.
    assert split_head(pop, 0.5).long_tail.tolist() == [False] * 5 + [True] * 5
    # No head at all: every item is long tail; equally rated items: nothing can be head.
    assert split_head(pop, 0.0).long_tail.all() and split_head(pop, 0.0).n_head == 0
    assert split_head(np.full(10, 4), 0.2).long_tail.all()
    assert split_head(pop, 0.2).record() == {"threshold": 3, "head_items": 2,
                                             "head_share": 0.2, "tail_items": 8}


# ----------------------------------------------------------------------------- metrics

def evaluation(long_tail, k=3):
    """4 real users, 7 items, K=3. Lists: u0 two head items (a tie group cut at rank K left
    the third slot empty), u1 two tail items and one head item, u2 three tail items, u3 nothing
    (a model scoring everything equally). Test items: u0 → 2 at rank 1 (hit), u1 → 0 (rank 0,
    hit), u2 → 5 (rank 5, miss), u3 → 6 (rank 0, hit)."""
    top = np.array([[0, 1, -1], [2, 0, 3], [4, 5, 2], [-1, -1, -1]])
    return Evaluation(k=k, n_items=7, max_rating=5.0, test_items=np.array([2, 0, 5, 6]),
                      test_ratings=np.ones(4, dtype=np.float32),
                      test_ranks=np.array([1, 0, 5, 0]), test_predictions=np.zeros(4),
                      target_ranks=np.zeros((4, 1), int), target_scores=np.zeros((4, 1)),
                      eligible=np.ones((4, 1), bool), top_items=top,
                      item_popularity=np.zeros(7, int), long_tail=np.asarray(long_tail))


HEAD_01 = [False, False, True, True, True, True, True]


def test_tail_share_counts_tail_slots_over_k_per_user():
    m = METRICS["tail_share"]
    ev = evaluation(HEAD_01)
    # u0: no tail item → 0; u1: 2 of 3; u2: 3 of 3; u3: empty list → 0 (an empty slot is no
    # tail slot).
    assert m.per_user(ev).tolist() == pytest.approx([0, 2 / 3, 1, 0])
    assert m.compute(ev) == pytest.approx(5 / 12)
    # Empty tail: nothing is a tail slot; everything tail: every listed slot is.
    assert m.compute(evaluation([False] * 7)) == 0.0
    assert m.compute(evaluation([True] * 7)) == pytest.approx((2 / 3 + 1 + 1 + 0) / 4)


def test_tail_hr_is_hr_over_the_users_whose_test_item_is_long_tail():
    m = METRICS["tail_hr"]
    ev = evaluation(HEAD_01)
    # u1's test item 0 is head → not counted; u0 hit, u2 miss (rank 5 ≥ 3), u3 hit.
    values = m.per_user(ev)
    assert np.isnan(values[1]) and values[[0, 2, 3]].tolist() == [1, 0, 1]
    assert m.compute(ev) == pytest.approx(2 / 3)
    assert np.isnan(m.compute(evaluation([False] * 7)))        # empty tail: nobody counts
    assert m.compute(evaluation([True] * 7)) == pytest.approx(3 / 4)   # = HR@3
    # The stored outcome reproduces it under bootstrap weights: u2 twice, u3 never → 1/3.
    stored = {m.outcome: m.outcome_values(ev)}
    assert metric_value(stored, m) == pytest.approx(2 / 3)
    assert metric_value(stored, m, np.array([[1.0, 1.0, 2.0, 0.0]]), np.ones((1, 1))
                        ) == pytest.approx([1 / 3])


def test_coverage_and_gini_of_all_lists_recomputed_on_resampled_users():
    cov, gini = METRICS["coverage"], METRICS["gini"]
    ev = evaluation(HEAD_01)
    # Shown: 0, 1, 2, 3, 4, 5; item 6 never → 6 of 7.
    assert cov.compute(ev) == pytest.approx(6 / 7)
    # Exposure (slots): item 0: 2, 1: 1, 2: 2, 3: 1, 4: 1, 5: 1, 6: 0 → sorted
    # [0, 1, 1, 1, 1, 2, 2]; Σ (2i − 8) x_i = −4 − 2 + 0 + 2 + 8 + 12 = 16 over 7 · 8 slots.
    assert gini.compute(ev) == pytest.approx(16 / 56)
    stored = cov.outcomes(ev)
    assert stored["top_items"].shape == (4, 1, 3)
    # u0 alone (twice): items 0 and 1 → 2/7; Gini of exposure [4, 2, 0, 0, 0, 0, 0].
    w = np.array([[2.0, 0, 0, 0], [0, 1.0, 1.0, 0]])
    assert metric_value(stored, cov, w, np.ones((2, 1))) == pytest.approx([2 / 7, 5 / 7])
    # u0 twice: exposure [2, 2, 0, 0, 0, 0, 0] → sorted, Σ (2i − 8) x_i = 4·2 + 6·2 = 20 over
    # 7 · 4 slots. u1 + u2: exposure 0:1, 2:2, 3:1, 4:1, 5:1 → sorted [0,0,1,1,1,1,2]:
    # (−2 + 0 + 2 + 4 + 12) / (7 · 6).
    g = metric_value(stored, gini, w, np.ones((2, 1)))
    assert g.tolist() == pytest.approx([20 / 28, 16 / 42])
    # Equal exposure → 0; no list at all → NaN.
    flat = evaluation(HEAD_01)
    flat.n_items = 6
    flat.top_items = np.array([[0, 1, 2], [3, 4, 5], [0, 1, 2], [3, 4, 5]])
    assert gini.compute(flat) == pytest.approx(0.0) and cov.compute(flat) == 1.0
    flat.top_items = np.full((4, 3), -1)
    assert np.isnan(gini.compute(flat)) and cov.compute(flat) == 0.0


# ----------------------------------------------------------------------------- top-K ties

def reference_lists(scores: np.ndarray, masked: np.ndarray, k: int) -> list[set]:
    """The pessimistic rule by brute force: item i is listed iff fewer than K other unmasked
    items score at least as high."""
    out = []
    for s, m in zip(scores, masked):
        free = np.flatnonzero(~m)
        out.append({int(i) for i in free if (s[free] >= s[i]).sum() - 1 < k})
    return out


def test_top_k_lists_follow_the_pessimistic_rank_rule_at_ties():
    # u0: three items tie at the top → each has 2 others at least as high: rank 2, not in the
    # top 2 → empty list. u1: item 0 alone above a tie straddling rank 2 → [0]. u2: scores
    # everything equally → nothing. u3: item 5 is masked (trained), the rest are distinct.
    scores = np.array([[5, 5, 5, 4, 3, 1], [9, 5, 5, 4, 3, 1], [1, 1, 1, 1, 1, 1],
                       [1, 2, 3, 4, 5, 6]], dtype=float)
    split = make_split([(3, 5)], [], [-1, -1, -1, -1], [0, 0, 0, 0], 4, 6)
    assert lists_of(split, scores, 2) == [[-1, -1], [0, -1], [-1, -1], [3, 4]]
    # With K=3 the tie of u1 fits (items 1 and 2 have rank 2 < 3).
    assert sorted(lists_of(split, scores, 3)[1]) == [0, 1, 2]
    # The test item's rank agrees: u1's item 1 is at rank 2 (a miss at K=2, a hit at K=3).
    split = make_split([(3, 5)], [], [-1, 1, -1, -1], [0, 1, 0, 0], 4, 6)
    hr = METRICS["hr"]
    for k, hit in ((2, 0.0), (3, 1.0)):
        assert Evaluator(split, np.array([0]), k=k, metrics=[hr]).evaluate(
            FixedScores(scores)).metrics[f"hr@{k}"] == hit


def lists_of(split, scores: np.ndarray, k: int) -> list[list[int]]:
    ev = Evaluator(split, np.array([0]), k=k, metrics=[METRICS["coverage"]])
    return ev.evaluate(FixedScores(scores)).outcomes()["top_items"][:, 0].tolist()


def test_top_k_lists_match_the_brute_force_rule_on_random_ties():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 40, 30, 5
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(float)   # many ties
    pairs = [(u, i) for u in range(n_users) for i in rng.choice(n_items, 4, replace=False)]
    split = make_split(pairs, [], [-1] * n_users, [0] * n_users, n_users, n_items)
    masked = np.zeros((n_users, n_items), bool)
    for u, i in pairs:
        masked[u, i] = True
    ev = Evaluator(split, np.array([0]), k=k, batch_users=7, metrics=[METRICS["coverage"]])
    lists = ev.evaluate(FixedScores(scores)).outcomes()["top_items"][:, 0]
    expected = reference_lists(scores, masked, k)
    assert [set(row[row >= 0].tolist()) for row in lists] == expected
    # Listed items come first, in item order; -1 only after them.
    for row in lists:
        shown = row[row >= 0]
        assert (row[len(shown):] == -1).all() and (np.diff(shown) > 0).all()
    assert any(len(e) < k for e in expected)   # the case does exercise boundary ties


@pytest.mark.parametrize("n_items,k", [(3, 5), (6, 5), (30, 1), (200, 5), (900, 50)])
def test_top_k_lists_match_the_brute_force_rule_at_every_size(n_items, k):
    # Heavy ties, masked (−inf) items, a row with fewer unmasked items than K, and a row with
    # K + 1 equal scores (nothing listed), in float32 and float64.
    rng = np.random.default_rng(n_items + k)
    for dtype in (np.float32, np.float64):
        scores = rng.integers(0, 8, size=(25, n_items)).astype(dtype)
        scores[:12] += rng.standard_normal((12, n_items)).astype(dtype)
        masked = rng.random(scores.shape) < 0.2
        masked[3, : max(n_items - k + 1, 0)] = True
        scores[4] = 1.0
        masked[4] = False
        scores[masked] = -np.inf
        lists = pessimistic_top_k(scores, k)
        assert lists.shape == (25, k)
        assert [set(row[row >= 0].tolist()) for row in lists] == reference_lists(
            scores, masked, k)


def test_the_evaluator_derives_the_tail_from_real_users_training_ratings():
    # Training: item 0 rated by users 0, 1, 2; item 1 by users 0, 1; item 2 by user 2.
    # Validation rows never count. 10 items, head_share 0.2 → 2 slots → head {0, 1}.
    split = make_split([(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 2)], [(2, 3), (1, 3)],
                       [4, 2, 9], [1.0, 1.0, 1.0], 3, 10)
    scores = np.tile(np.arange(10, 0, -1, dtype=float), (3, 1))  # item 0 best … item 9 worst
    metrics = [METRICS["tail_share"], METRICS["tail_hr"]]
    ev = Evaluator(split, np.array([9]), k=3, metrics=metrics, head_share=0.2)
    assert ev.head.long_tail.tolist() == [False, False] + [True] * 8
    res = ev.evaluate(FixedScores(scores)).metrics
    # u0 (0, 1 masked): 2, 3, 4 → 3/3 tail; u1 (0, 1, 3 masked): 2, 4, 5 → 3/3; u2 (0, 2, 3
    # masked): 1, 4, 5 → 2/3.
    assert res["tail_share@3"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    # Test items 4 (u0: rank 2, hit), 2 (u1: rank 0, hit), 9 (u2: rank 6, miss), all tail.
    assert res["tail_hr@3"] == pytest.approx(2 / 3)
    # head_share 0: every item is tail, including item 0.
    ev0 = Evaluator(split, np.array([9]), k=3, metrics=metrics, head_share=0.0)
    assert ev0.head.long_tail.all()
    assert ev0.evaluate(FixedScores(scores)).metrics["tail_share@3"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- end to end

class TailBlind(NoDefense):
    """Test-only defense: plain training, then every long-tail item (by the training data's
    popularity, the evaluator's rule) is scored below every head item: it never recommends the
    tail while ranking the head as the plain model does."""

    name = "tail_blind"

    def fit(self, data):
        model, info = super().fit(data)
        pop = np.bincount(data.train.items, minlength=data.n_items)
        return _Penalized(model, split_head(pop, 0.2).long_tail), info


class _Penalized(torch.nn.Module):
    def __init__(self, model, tail):
        super().__init__()
        self.model = model
        self.penalty = torch.as_tensor(tail, dtype=torch.float32) * 1e6

    def score_all(self, users):
        return self.model.score_all(users) - self.penalty

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


@pytest.fixture
def tail_run(small_config, monkeypatch):
    from experiment.pipeline import run_experiment

    monkeypatch.setitem(DEFENSES, "tail_blind", TailBlind)
    out = run_experiment(small_config(
        attack={"name": ["none", "bandwagon", "random"], "size": 0.1},
        defense={"name": ["none", "at", "tail_blind"]},
        model={"dim": 16, "epochs": 6, "batch_size": 256}))
    return out


def test_a_defense_that_never_recommends_the_tail_is_marked_and_flagged(tail_run):
    out = tail_run
    summary = pd.read_csv(out / "summary.csv")
    clean = summary[summary.attack == "none"].set_index("defense")
    assert clean.loc["tail_blind", "tail_share@10_mean"] == 0.0
    assert clean.loc["none", "tail_share@10_mean"] > 0.3
    flags = summary.groupby("defense")["tail_suppressed"].agg(set)
    assert flags["tail_blind"] == {True} and flags["at"] == {False} and \
        flags["none"] == {False}
    assert (summary[summary.defense == "tail_blind"].clean_tail_share_ratio == 0).all()
    # Coverage: the tail-blind model shows only head items (at most 20 % of the catalogue).
    assert clean.loc["tail_blind", "coverage@10_mean"] <= 0.2
    assert clean.loc["tail_blind", "coverage@10_low"] <= clean.loc["tail_blind",
                                                                    "coverage@10_mean"]
    assert (summary["change_tail_share@10"].dropna() <= 0.05).any()
    tables = (out / "tables.md").read_text()
    sections = {part.split("\n", 1)[0]: part for part in tables.split("\n## ")[1:]}
    ri = next(v for k, v in sections.items() if k.startswith("Table 3 · RI"))
    header = [c.strip() for c in ri.splitlines()[2].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in ri.splitlines()[4:]
            if line.startswith("|")]
    blind, at = header.index("unpopular: tail_blind"), header.index("unpopular: AT")
    assert rows and all(r[blind].count("‡") == 1 for r in rows if r[blind])
    assert not any("‡" in r[at] for r in rows)
    worst = next(v for k, v in sections.items() if k.startswith("Worst case"))
    lines = {line.split("|")[2].strip(): line for line in worst.splitlines()
             if line.startswith("| ")}
    assert "‡" in lines["tail_blind"] and "‡" not in lines["AT"]
    assert "‡" not in lines["none (undefended)"]
    assert "| 0.0% |" in lines["tail_blind"]      # its clean tail share / undefended
    assert "‡: the defense's clean-data tail share@K or coverage@K is below 50 %" in tables
    utility = next(v for k, v in sections.items() if k.startswith("Utility"))
    assert "| (no attack) | Origin |" in utility and "| bandwagon | Attack |" in utility
    assert "Δ" in utility
    tex = (out / "tables.tex").read_text()
    assert "$^{\\ddagger}$" in tex and "none (undefended)" in tex
    meta = json.loads((out / "meta.json").read_text())
    tail = meta["tail"]["synthetic"]
    assert tail["head_share_asked"] == 0.2 and tail["per_seed"][0]["head_share"] <= 0.2
    assert tail["per_seed"][0]["tail_items"] + tail["per_seed"][0]["head_items"] == 200
    assert (out / "figures" / "robustness_utility_synthetic.png").is_file()
    # The flag follows report.tail_floor on a rebuild: floor 0 marks nothing.
    from experiment.reporting import rebuild
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("tail_floor: 0.5", "tail_floor: 0.0"))
    rebuild(out)
    assert "‡" not in (out / "tables.md").read_text()
    assert not pd.read_csv(out / "summary.csv")["tail_suppressed"].any()


# ----------------------------------------------------------------------------- table text

def test_tables_name_the_setting_and_explain_only_the_symbols_they_use(tail_run):
    tables = (tail_run / "tables.md").read_text()
    head = tables.split("\n## ")[0]
    assert "targets unpopular: 3 items (" in head
    assert "attack size 10 % of the real users (30 fake users)" in head
    assert "knowledge cost c = 0.4" in head
    # No stars in this run (AT vs the best of AT/RAT is itself): the legend does not explain
    # them; the worst-case table's rows are defenses, the undefended one named as such.
    if "*" not in tables.split("\n## ", 1)[1].replace("**", ""):
        assert "Stars:" not in head
    worst = tables.split("## Worst case")[1]
    assert "| Dataset | Defense | unpopular: mean over attacks | unpopular: worst attack: target " \
        "HR |" in worst
    assert "| Attack |" not in worst.split("\n## ")[0]


def test_a_mean_row_without_an_effective_attack_is_readable():
    from experiment.reporting import render_markdown
    from experiment.tables import build_tables

    base = {"dataset": "d", "model": "mf", "feedback": "explicit", "target_kind": "random",
            "attack_size": 0.03, "knowledge_cost": 0.4, "attack_params": "",
            "defense_params": "", "n_runs": 2, "target_hr@10_mean": 0.1,
            "target_hr@10_std": 0.0, "target_hr@10_n": 2}
    rows = [dict(base, attack="none", defense="none", attack_size=0.0, knowledge_cost=0.0)]
    for attack in ("random", "average"):
        for defense in ("none", "at"):
            rows.append(dict(base, attack=attack, defense=defense, attack_effective=False,
                             ri_of_means=np.nan, success_reduction_of_means=np.nan))
    tables = build_tables(pd.DataFrame(rows), 10, dataset_labels={"d": "ratings.csv"})
    text = render_markdown("t", tables, None, 2)
    assert "nan" not in text and "n.e.ᵃ (no effective attack of 2)" in text
    assert "| ratings.csv | random |" in text and "| d |" not in text
    assert "ᵃ n.e.: the attack was not effective" in text
    assert "‡" not in text and "†" not in text and "Stars:" not in text


def test_a_file_dataset_is_labelled_by_its_file_name(tmp_path):
    from experiment.reporting import _saved_labels

    (tmp_path / "config.yaml").write_text(
        "dataset:\n  name: file\n  path: /data/my_ratings.csv\nevaluation:\n  tail:\n"
        "    head_share: 0.1\n")
    assert _saved_labels(tmp_path) == ({"file": "my_ratings.csv"}, 0.1)


def test_a_defense_that_shows_everyone_the_same_few_tail_items_is_marked():
    """Tail share alone misses it (FilmTrust, share_prior: tail share 232 %, coverage 36 % of
    the undefended model's): the rule also marks a clean coverage@K below the floor."""
    from experiment.summary import _add_tail_suppression
    from experiment.tables import BASE, ORIGIN, UNDEFENDED

    base = {c: "x" for c in BASE}
    rows = [dict(base, attack=ORIGIN, defense=d, defense_params="",
                 **{"tail_share@50_mean": share, "coverage@50_mean": cover})
            for d, share, cover in ((UNDEFENDED, 0.10, 0.25), ("same_few", 0.23, 0.09),
                                    ("fine", 0.12, 0.24), ("no_tail", 0.02, 0.24))]
    rows.append(dict(base, attack="bandwagon", defense="same_few", defense_params="",
                     **{"tail_share@50_mean": 0.3, "coverage@50_mean": 0.5}))
    summary = pd.DataFrame(rows)
    _add_tail_suppression(summary, 50, 0.5)
    assert summary.tail_suppressed.tolist() == [False, True, False, True, True]
    assert summary.clean_coverage_ratio[1] == pytest.approx(0.36)
    assert summary.clean_tail_share_ratio[1] == pytest.approx(2.3)
    # A missing clean coverage leaves the flag blank, not False.
    summary = pd.DataFrame(rows).drop(columns="coverage@50_mean")
    _add_tail_suppression(summary, 50, 0.5)
    assert summary.tail_suppressed.isna().all()
