"""Metrics by name, and the evaluation by batched full ranking that feeds them (protocol.md §4).

A metric is a small class (``utils/metrics/base.py``: its name, what it needs, its direction,
its interval kind, its table label) in the registry :data:`METRICS` below; the runs.csv
columns, the summary's intervals and tests and the tables read that metadata. A new metric is
one module plus one line in the registry (README "Extending"; ``mrr.py`` is the example).

Evaluation is over real users only. Every item is scored for every real user; the user's
training and validation items are set to −inf (never multiplied), so they can neither be
recommended nor displace anything. Ranks are pessimistic: an item's 0-based rank is the number
of *other* unmasked items scoring at least as high, so a model that scores everything equally
hits nothing; the top-K lists follow the same rule (an item is listed only if its pessimistic
rank is below K: a tie group straddling rank K is left out whole). Fake users (ids ≥
n_real_users) are never scored.

Each metric names the split protocols it applies to (``Metric.protocols``, ``split.mode``):
under ``loo`` the leave-one-out metrics (HR@K, NDCG@K, MRR, test MSE/RMSE, tail HR), under
``ratio`` (a held-out set per user) Recall@test_k, NDCG@test_k and target NDCG@K; the target
metrics and the list metrics under both. Under ``ratio`` a target is eligible for the users who
have interacted with it nowhere — training, validation or the held-out set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from ..topk_metrics import UserIndex, capped_ranks, eligible_pairs
from .base import (INPUTS, ITEM_POPULARITY, LIST, LONG_TAIL, LOO, NONE, PROTOCOLS, RATIO,
                   TARGET_PAIRS, TEST_SET_RANKS, TOP_ITEMS, USER_MEAN, Evaluation, ListMetric,
                   Metric, Resample, TargetPairMetric, UserMeanMetric)
from .detection import detection_metrics
from .hit_ratio import HitRatio
from .mrr import MRR
from .ndcg import NDCG
from .rating_error import TestMSE, TestRMSE
from .recall import Recall, SetNDCG
from .top_items import pessimistic_top_k
from .tail import Coverage, Gini, Head, TailHitRatio, TailShare, split_head
from .target_hit_ratio import TargetHitRatio, TargetHitRatioAll
from .target_ndcg import TargetNDCG
from .target_position import AvgTargetRank, TargetScore


def _registry(*metrics: Metric) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


# Name → metric, in the order of the runs.csv columns and the tables.
METRICS: dict[str, Metric] = _registry(
    HitRatio(),
    Recall(),
    NDCG(),
    SetNDCG(),
    MRR(),
    TestMSE(),
    TestRMSE(),
    TargetHitRatio(),
    TargetHitRatioAll(),
    TargetNDCG(),
    AvgTargetRank(),
    TargetScore(),
    TailShare(),
    TailHitRatio(),
    Coverage(),
    Gini(),
)


def metrics_for(protocol: str) -> list[Metric]:
    """The registered metrics computed under split protocol ``protocol`` (``split.mode``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"split protocol {protocol!r} is unknown; use one of {PROTOCOLS}")
    return [m for m in METRICS.values() if m.applies_to(protocol)]


def metric_columns(protocol: str, k: int, test_k: int) -> dict[str, Metric]:
    """runs.csv column → metric, for the metrics of ``protocol``."""
    return {m.column(k, test_k): m for m in metrics_for(protocol)}


def interval_metrics(protocol: str | None = None) -> list[Metric]:
    """The registered metrics that have an interval (and a stored per-user outcome); with
    ``protocol``, only those computed under it."""
    return [m for m in METRICS.values() if m.interval != NONE
            and (protocol is None or m.applies_to(protocol))]


@dataclass
class EvalResult:
    metrics: dict[str, float]  # runs.csv column → value
    target_scores: np.ndarray  # (n_real_users, n_targets) raw predicted scores
    target_ranks: np.ndarray   # (n_real_users, n_targets) 0-based ranks (masked: -1)
    eligible: np.ndarray       # (n_real_users, n_targets) bool
    # The per-user outcomes of the metrics with an interval, by outcome key (``test_hit``
    # (U,): 1 hit, 0 miss, NaN no test item; ``target_hit`` (U, T), NaN where not eligible;
    # ``mrr`` (U,) …): what the uncertainty intervals resample (``utils/uncertainty.py``).
    stored: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def test_hit(self) -> np.ndarray | None:
        return self.stored.get("test_hit")

    def outcomes(self) -> dict[str, np.ndarray]:
        return dict(self.stored)


def combine_outcomes(results: list[EvalResult], metrics: list[Metric] | None = None
                     ) -> dict[str, np.ndarray]:
    """One set of stored outcomes from a cell's retrainings, each array combined as the metric
    that stores it says (the mean by default)."""
    owner = {key: m for m in (METRICS.values() if metrics is None else metrics)
             if m.interval != NONE for key in m.stored_keys()}
    default = Metric()
    return {key: owner.get(key, default).combine_retrains(key, [r.stored[key] for r in results])
            for key in results[0].stored}


class Evaluator:
    """Scores a trained model on one split and one target set and computes ``metrics`` (the
    registered ones by default). ``split`` is a ``data.ratings.Split`` (read by attribute:
    ``observed()``, ``train``, ``test_items``, ``test_ratings``, ``scale``, sizes; a ratio
    split's held-out set ``test``). ``protocol`` (``split.mode``; None: ``ratio`` when the split
    has a held-out set ``test``, else ``loo``) chooses the registered metrics by default;
    ``test_k`` is the K of the ratio metrics."""

    def __init__(self, split, targets: np.ndarray, k: int = 50, batch_users: int = 1024,
                 device: torch.device | str = "cpu", metrics: list[Metric] | None = None,
                 head_share: float = 0.2, protocol: str | None = None,
                 test_k: int = 20) -> None:
        self.split = split
        self.k = k
        self.test_k = test_k
        self.batch_users = batch_users
        self.device = torch.device(device)
        test_set = getattr(split, "test", None)
        if protocol is None:
            protocol = RATIO if test_set is not None else LOO
        self.protocol = protocol
        self.metrics = metrics_for(protocol) if metrics is None else list(metrics)
        needs = {need for m in self.metrics for need in m.needs}
        unknown = sorted(needs - set(INPUTS))
        if unknown:
            raise ValueError(f"metric input {unknown[0]!r} is unknown; metrics may need "
                             f"{', '.join(INPUTS)}")
        self.needs = needs
        self.n_users, self.n_items = split.n_users, split.n_items
        self.targets = np.asarray(targets, dtype=np.int64)
        seen = split.observed()
        order = np.lexsort((seen.items, seen.users))
        self.mask_users = torch.as_tensor(seen.users[order], device=self.device)
        self.mask_items = torch.as_tensor(seen.items[order], device=self.device)
        self.mask_ptr = np.concatenate([[0], np.cumsum(np.bincount(seen.users,
                                                                   minlength=self.n_users))])
        # Eligible (user, target) pairs: the real user has not interacted with the target at
        # all (known, held out as the test item, or in a ratio split's held-out set).
        loo_test = SimpleNamespace(users=np.arange(len(split.test_items)),
                                   items=np.asarray(split.test_items))
        held = [seen, loo_test] + ([test_set] if test_set is not None else [])
        self.eligible = eligible_pairs(held, self.targets, self.n_users)
        # The held-out set by user, ranked when a metric needs it (ratio split).
        self.test_set = None
        if TEST_SET_RANKS in needs:
            if test_set is None:
                raise ValueError("the ratio metrics (Recall, NDCG on a held-out set) need a "
                                 "split with a held-out set (split.mode: ratio)")
            self.test_set = UserIndex.of(test_set, self.n_users, self.device)
        # The real users' training ratings per item (the split holds real users only).
        self.item_popularity = (np.bincount(split.train.items, minlength=self.n_items)
                                if needs & {ITEM_POPULARITY, LONG_TAIL} else None)
        # The head / long tail by that popularity (utils/metrics/tail.py).
        self.head: Head | None = (split_head(self.item_popularity, head_share)
                                  if LONG_TAIL in needs else None)

    @torch.no_grad()
    def evaluate(self, model) -> EvalResult:
        model.eval()
        n_t = len(self.targets)
        top_k = TOP_ITEMS in self.needs
        targets = torch.as_tensor(self.targets, device=self.device)
        test_items = torch.as_tensor(self.split.test_items, device=self.device)
        test_rank = torch.full((self.n_users,), -1, dtype=torch.long)
        test_pred = torch.zeros(self.n_users)
        t_scores = torch.zeros(self.n_users, n_t)
        t_ranks = torch.full((self.n_users, n_t), -1, dtype=torch.long)
        top_items = (torch.full((self.n_users, min(self.k, self.n_items)), -1, dtype=torch.long)
                     if top_k else None)
        set_ranks = []
        for start in range(0, self.n_users, self.batch_users):
            stop = min(start + self.batch_users, self.n_users)
            users = torch.arange(start, stop, device=self.device)
            scores = model.score_all(users).float()
            lo, hi = self.mask_ptr[start], self.mask_ptr[stop]
            flat = (self.mask_users[lo:hi] - start) * self.n_items + self.mask_items[lo:hi]
            raw_targets = scores[:, targets].clone()
            t_scores[start:stop] = raw_targets.cpu()
            scores.view(-1)[flat] = float("-inf")
            # Test item: pessimistic 0-based rank among unmasked items.
            ti = test_items[start:stop]
            has = ti >= 0
            s_test = scores.gather(1, ti.clamp(min=0).unsqueeze(1))
            test_pred[start:stop] = s_test.squeeze(1).cpu()
            rank = (scores >= s_test).sum(1) - 1
            test_rank[start:stop] = torch.where(has, rank, torch.full_like(rank, -1)).cpu()
            # Targets: rank of each target among the user's unmasked items.
            s_t = scores[:, targets]
            ranks = (scores.unsqueeze(1) >= s_t.unsqueeze(2)).sum(2) - 1
            ranks[torch.isinf(s_t)] = -1
            t_ranks[start:stop] = ranks.cpu()
            if top_k:
                # Each user's top K unmasked items, in item order: the items whose pessimistic
                # rank is below K, i.e. that score strictly above the (K+1)-th best score, so
                # a tie group straddling rank K is left out whole (a model scoring everything
                # equally lists nothing); -1 after them.
                top_items[start:stop] = torch.from_numpy(
                    pessimistic_top_k(scores.cpu().numpy(), top_items.shape[1]))
            if self.test_set is not None:
                # The held-out set's ranks among the unmasked items, exact below test_k.
                rows, items = self.test_set.rows(start, stop)
                set_ranks.append(capped_ranks(scores, rows, items, self.test_k).cpu())
        split = self.split
        ev = Evaluation(k=self.k, n_items=self.n_items, max_rating=split.scale.max_rating,
                        test_items=split.test_items, test_ratings=split.test_ratings,
                        test_ranks=test_rank.numpy(), test_predictions=test_pred.numpy(),
                        target_ranks=t_ranks.numpy(), target_scores=t_scores.numpy(),
                        eligible=self.eligible, top_items=top_items.numpy() if top_k else None,
                        item_popularity=self.item_popularity,
                        long_tail=None if self.head is None else self.head.long_tail,
                        test_k=self.test_k)
        if self.test_set is not None:
            ev.test_set_users = self.test_set.users.cpu().numpy()
            ev.test_set_ranks = (torch.cat(set_ranks).numpy() if set_ranks
                                 else np.zeros(0, dtype=np.int64))
        values = {m.column(self.k, self.test_k): m.compute(ev) for m in self.metrics}
        stored = {}
        for m in self.metrics:
            if m.interval != NONE and not set(m.stored_keys()) <= set(stored):
                stored.update(m.outcomes(ev))
        return EvalResult(values, ev.target_scores, ev.target_ranks, ev.eligible, stored)


def prediction_shift(attacked: EvalResult, clean: EvalResult, max_rating: float) -> float:
    """Mean change of the targets' predicted rating over eligible users, attacked − clean,
    on the original rating scale."""
    elig = attacked.eligible & clean.eligible
    if not elig.any():
        return float("nan")
    return float((attacked.target_scores[elig] - clean.target_scores[elig]).mean() * max_rating)


def rank_shift(attacked: EvalResult, clean: EvalResult) -> np.ndarray:
    """Per eligible (user, target) pair: rank before − rank after (positive = pushed up)."""
    elig = attacked.eligible & clean.eligible
    return (clean.target_ranks[elig] - attacked.target_ranks[elig]).astype(np.int64)


__all__ = ["METRICS", "LOO", "PROTOCOLS", "RATIO", "metric_columns", "metrics_for", "Head", "split_head", "EvalResult", "Evaluation", "Evaluator", "ListMetric", "Metric",
           "Resample", "TargetPairMetric", "UserMeanMetric", "USER_MEAN", "TARGET_PAIRS", "LIST",
           "NONE", "combine_outcomes", "detection_metrics", "interval_metrics", "prediction_shift",
           "rank_shift"]
