"""The implicit top-K protocol (``split.mode: ratio``): Recall@K, NDCG@K and target NDCG@K in the
registry, target eligibility that counts the held-out set, selection on validation Recall, and
the pipeline's cells per protocol (leave-one-out cells keep their keys and are reused)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from data.ratings import Interactions, RatingScale
from data.split import RatioSplit
from experiment.pipeline import run_experiment
from experiment.planning import cell_key, plan_cells
from experiment.validation import config_from_dict
from models.trainer import Trainer
from utils.config import ConfigError, ModelConfig
from utils.metrics import METRICS, Evaluator, metrics_for
from utils.topk_metrics import topk_metrics
from tests.conftest import small_tree


class FixedScores(torch.nn.Module):
    """A 'model' returning a given score matrix; the scores are a buffer, so a selector's kept
    state restores them."""

    def __init__(self, scores):
        super().__init__()
        self.register_buffer("scores", torch.as_tensor(scores, dtype=torch.float32))
        self.unused = torch.nn.Parameter(torch.zeros(1))   # something for the optimizer

    def score_all(self, users):
        return self.scores[users]

    def lookup_tables(self):
        return []


def inter(pairs) -> Interactions:
    a = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return Interactions(a[:, 0], a[:, 1], np.ones(len(a)))


def ratio_split(train, val, test, n_users, n_items) -> RatioSplit:
    return RatioSplit(inter(train), inter(val), np.full(n_users, -1), np.zeros(n_users,
                      dtype=np.float32), n_users, n_items, RatingScale(1.0, 1), "implicit",
                      test=inter(test))


@pytest.fixture
def case():
    # 4 real users, 8 items; target item 7; K = 2 for every metric.
    # u0: trains 0, 1 (its two best scores: masked); held out 2, 3 → ranks 0 and 1 once masked.
    # u1: trains 0; validates 1; held out 2, 5, 6; and the target 7 is in its held-out set →
    #     not eligible although the target tops its list.
    # u2: trains 7 (the target) → not eligible; held out 4.
    # u3: trains 0; no held-out item; the target ranks 0 → hit.
    # u4: a fake user (id ≥ n_users), never scored.
    split = ratio_split(train=[(0, 0), (0, 1), (1, 0), (2, 7), (3, 0)], val=[(1, 1)],
                        test=[(0, 2), (0, 3), (1, 2), (1, 5), (1, 6), (1, 7), (2, 4)],
                        n_users=4, n_items=8)
    scores = np.array([
        [9, 8, 7, 6, 5, 4, 3, 1],        # u0: unmasked 2(7) 3(6) 4 5 6 7 → ranks 0, 1
        [9, 8, 1, 2, 6, 5, 3, 7],        # u1: unmasked 7(7) 4(6) 5(5) 6(3) 3(2) 2(1)
        [0, 0, 5, 6, 1, 2, 3, 9],        # u2: unmasked 3(6) 2(5) 6(3) 5(2) 4(1) 1 → 4 rank 4
        [9, 1, 1, 1, 1, 1, 1, 5],        # u3: target 7 at rank 0
        [0, 0, 0, 0, 0, 0, 0, 99],       # fake
    ], dtype=np.float32)
    return split, FixedScores(scores)


def test_ratio_metrics_on_a_hand_computed_case(case):
    split, model = case
    ev = Evaluator(split, np.array([7]), k=2, test_k=2)
    assert ev.protocol == "ratio"
    res = ev.evaluate(model)
    m = res.metrics
    # Recall@2: u0 2/2 (its trained items 0, 1 would outrank 2, 3 unmasked); u1: 5 at rank 2,
    # 6 at 3, 2 at 5, 7 at 0 → 1 of 4; u2: 4 at rank 4 → 0; u3 has no held-out item.
    assert m["recall@2"] == pytest.approx((1 + 1 / 4 + 0) / 3)
    # NDCG@2: u0 (1 + 1/log2 3) / (1 + 1/log2 3) = 1; u1 1 / (1 + 1/log2 3); u2 0.
    idcg2 = 1 + 1 / math.log2(3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / idcg2 + 0) / 3)
    # Target 7: u1 holds it out, u2 trained on it → eligible u0 (rank 5: miss) and u3 (rank 0).
    assert res.eligible[:, 0].tolist() == [True, False, False, True]
    assert m["target_hr@2"] == pytest.approx(1 / 2)
    assert m["target_ndcg@2"] == pytest.approx((0 + 1) / 2)
    # No leave-one-out metric under the ratio protocol, and no ratio metric under loo.
    assert "hr@2" not in m and "mrr@2" not in m and "test_mse" not in m
    assert set(m) == {mm.column(2, 2) for mm in metrics_for("ratio")}
    # The per-user outcomes the intervals resample.
    out = res.outcomes()
    assert out["recall"][:3].tolist() == pytest.approx([1, 0.25, 0]) and np.isnan(out["recall"][3])
    assert np.isnan(out["target_gain"][[1, 2], 0]).all()


def test_registry_values_equal_the_pure_functions(case):
    split, model = case
    res = Evaluator(split, np.array([7]), k=2, test_k=2).evaluate(model)
    pure = topk_metrics(model, split.observed(), split.test, split.n_users, np.array([7]), k=2,
                        target_k=2)
    for name in ("recall@2", "ndcg@2", "target_hr@2", "target_ndcg@2"):
        assert res.metrics[name] == pytest.approx(pure.metrics[name]), name
    np.testing.assert_allclose(res.outcomes()["recall"], pure.recall, equal_nan=True)
    np.testing.assert_allclose(res.outcomes()["ndcg"], pure.ndcg, equal_nan=True)
    np.testing.assert_allclose(res.outcomes()["target_gain"], pure.target_gain, equal_nan=True)


def test_training_items_are_masked_from_the_ranking(case):
    """Unmasked, u0's trained items 0 and 1 would take both top-2 places."""
    split, model = case
    res = Evaluator(split, np.array([7]), k=2, test_k=2, batch_users=1).evaluate(model)
    assert res.outcomes()["recall"][0] == 1.0
    assert (res.target_ranks[0, 0], res.target_ranks[2, 0]) == (5, -1)   # u2 trained on it


def test_metric_protocols():
    loo = {m.name for m in metrics_for("loo")}
    ratio = {m.name for m in metrics_for("ratio")}
    assert {"hr", "ndcg", "mrr", "test_mse", "test_rmse", "tail_hr"} <= loo - ratio
    assert {"recall", "ndcg_set", "target_ndcg"} <= ratio - loo
    assert {"target_hr", "target_hr_all", "tail_share", "coverage", "gini"} <= loo & ratio
    assert METRICS["recall"].column(50, 20) == "recall@20"
    assert METRICS["ndcg_set"].column(50, 20) == "ndcg@20"
    assert METRICS["target_ndcg"].column(50, 20) == "target_ndcg@50"


# ----------------------------------------------------------------------------- selection

class SequenceTrainer(Trainer):
    """No training: each epoch the model's scores become the next of a hand-made sequence."""

    sequence: list = []

    def train_epoch(self, data) -> float:
        self._seen = (torch.as_tensor(data.users), torch.as_tensor(data.items))
        self.model.scores.copy_(torch.as_tensor(self.sequence[self.epoch]))
        self.epoch += 1
        return 0.0


def test_selection_keeps_the_epoch_of_highest_validation_recall():
    # 2 users, 6 items; u0 trains 0 (masked), validates 1, 2; u1 trains 5, validates 3.
    train, val = inter([(0, 0), (1, 5)]), inter([(0, 1), (0, 2), (1, 3)])
    low = [0, 0, 0, 0, 0, 0]

    def epoch(u0, u1):
        return [u0, u1]

    # Recall@1 per epoch (u0's share of {1, 2} at rank 0, u1's of {3}; mean over the users):
    # epoch 1: u0 item 4 tops → 0, u1 3 tops → 1: 0.5; epoch 2: u0 1 tops (0.5), u1 3 tops (1):
    # 0.75; epoch 3: u0 0 (masked, 9) then 2 → 0.5, u1 item 4 tops → 0: 0.25.
    SequenceTrainer.sequence = [
        epoch([0, 1, 2, 0, 5, 0], [0, 0, 0, 5, 1, 9]),
        epoch([0, 5, 2, 0, 1, 0], [0, 0, 0, 5, 1, 9]),
        epoch([9, 1, 5, 0, 0, 0], [0, 0, 0, 1, 5, 9]),
    ]
    model = FixedScores(np.array([low, low], dtype=np.float32))
    cfg = ModelConfig(epochs=3, select_recall_k=1)
    trainer = SequenceTrainer(model, cfg, RatingScale(1.0, 1), torch.Generator(),
                              feedback="implicit")
    result = trainer.fit(train, val)
    assert [h["val_recall@1"] for h in result.history] == pytest.approx([0.5, 0.75, 0.25])
    assert result.best_epoch == 2 and result.best_val == pytest.approx(-0.75)
    # The kept state is epoch 2's.
    assert model.scores.tolist() == SequenceTrainer.sequence[1]
    # Without select_recall_k the leave-one-out rule (HR@10 of each validation row) selects.
    plain = SequenceTrainer(FixedScores(np.array([low, low], dtype=np.float32)),
                            ModelConfig(epochs=3), RatingScale(1.0, 1), torch.Generator(),
                            feedback="implicit")
    assert "val_hr@10" in plain.fit(train, val).history[0]


# ----------------------------------------------------------------------------- config, keys

def test_ratio_split_config_rules(tmp_path):
    with pytest.raises(ConfigError, match="dataset.feedback=implicit"):
        config_from_dict(small_tree(tmp_path, split={"mode": "ratio"}))
    with pytest.raises(ConfigError, match="split.mode"):
        config_from_dict(small_tree(tmp_path, split={"mode": "kfold"}))
    with pytest.raises(ConfigError, match="select_on"):
        config_from_dict(small_tree(tmp_path, split={"mode": "ratio"},
                                    dataset={"name": "synthetic", "feedback": "implicit"},
                                    evaluation={"k": 10, "select_on": "test"}))


def test_leave_one_out_cells_keep_their_keys(tmp_path):
    """The new keys are keyed only under the ratio split: loo cells keep theirs, whatever
    test_k and test_fraction say (leave-one-out never reads them)."""
    base = config_from_dict(small_tree(tmp_path))
    same = config_from_dict(small_tree(tmp_path, split={"mode": "loo", "test_fraction": 0.3},
                                       evaluation={"k": 10, "test_k": 5}))
    ratio = config_from_dict(small_tree(tmp_path, split={"mode": "ratio"}, dataset={
        "name": "synthetic", "feedback": "implicit"}))
    loo_implicit = config_from_dict(small_tree(tmp_path, dataset={"name": "synthetic",
                                                                  "feedback": "implicit"}))
    cells = plan_cells(base)
    assert [cell_key(base, c) for c in cells] == [cell_key(same, c) for c in cells]
    assert all(cell_key(ratio, c) != cell_key(loo_implicit, c) for c in cells)


# ----------------------------------------------------------------------------- pipeline

def ratio_tree(tmp_path, **sections):
    return small_tree(tmp_path, split={"mode": "ratio"},
                      dataset={"name": "synthetic", "feedback": "implicit",
                               "cache_dir": str(tmp_path / "cache")},
                      model={"name": "lightgcn", "dim": 16, "epochs": 3, "batch_size": 512},
                      **sections)


def test_ratio_run_writes_its_metrics_intervals_and_tables(tmp_path):
    out = run_experiment(config_from_dict(ratio_tree(tmp_path)))
    runs = pd.read_csv(out / "runs.csv")
    assert {"recall@20", "ndcg@20", "target_hr@10", "target_ndcg@10"} <= set(runs)
    assert not {"hr@10", "mrr@10", "test_mse", "tail_hr@10"} & set(runs)
    assert ((runs["recall@20"] > 0) & (runs["recall@20"] <= 1)).all()
    summary = pd.read_csv(out / "summary.csv")
    for col in ("recall@20", "ndcg@20", "target_hr@10", "target_ndcg@10"):
        assert (summary[f"{col}_low"] <= summary[f"{col}_mean"] + 1e-12).all(), col
        assert (summary[f"{col}_mean"] <= summary[f"{col}_high"] + 1e-12).all(), col
    assert (summary["interval"] == "bootstrap").all()
    tables = (out / "tables.md").read_text()
    for title in ("## Table 3 · Target HR@10", "## Test Recall@20", "## Test NDCG@20",
                  "## Target NDCG@10"):
        assert title in tables
    assert "Test HR@10" not in tables and "MRR" not in tables
    # Selected on validation Recall@20.
    info = json.loads(runs["defense_info"].iloc[0])
    assert -1 <= info["best_val"] <= 0
    # Rerun: every cell reused.
    again = run_experiment(config_from_dict(ratio_tree(tmp_path)))
    assert json.loads((again / "meta.json").read_text())["execution"]["cells_computed"] == 0


def test_leave_one_out_cells_are_reused(tmp_path):
    tree = small_tree(tmp_path, model={"dim": 8, "epochs": 2, "batch_size": 512})
    out = run_experiment(config_from_dict(tree))
    first = json.loads((out / "meta.json").read_text())["execution"]
    assert first["cells_computed"] == 2
    runs = pd.read_csv(out / "runs.csv")
    assert not {"recall@20", "ndcg@20", "target_ndcg@10"} & set(runs)
    again = run_experiment(config_from_dict(tree))
    second = json.loads((again / "meta.json").read_text())["execution"]
    assert again == out and second["cells_computed"] == 0 and second["cells_reused"] == 2
