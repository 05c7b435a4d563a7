"""Evaluation by batched full ranking (protocol.md §4), over real users only.

Every item is scored for every real user; the user's training and validation items are set to
−inf (never multiplied), so they can neither be recommended nor displace anything. Ranks are
pessimistic: an item's 0-based rank is the number of *other* unmasked items scoring at least as
high, so a model that scores everything equally hits nothing. Fake users (ids ≥ n_real_users)
are never scored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class EvalResult:
    metrics: dict[str, float]
    target_scores: np.ndarray  # (n_real_users, n_targets) raw predicted scores
    target_ranks: np.ndarray   # (n_real_users, n_targets) 0-based ranks (masked: -1)
    eligible: np.ndarray       # (n_real_users, n_targets) bool
    test_hit: np.ndarray | None = None  # (n_real_users,) float: 1 hit, 0 miss, NaN no test item

    def outcomes(self, k: int) -> dict[str, np.ndarray]:
        """Per-user outcomes behind HR@K and target HR@K (what the uncertainty intervals
        resample, ``utils/uncertainty.py``): ``test_hit`` (U,) and ``target_hit`` (U, T),
        1.0 hit, 0.0 miss, NaN where the user has no test item / the pair is not eligible."""
        hit = ((self.target_ranks < k) & (self.target_ranks >= 0)).astype(np.float32)
        return {"test_hit": np.asarray(self.test_hit, dtype=np.float32),
                "target_hit": np.where(self.eligible, hit, np.nan).astype(np.float32)}


class Evaluator:
    """Scores a trained model on one split and one target set."""

    def __init__(self, split, targets: np.ndarray, k: int = 50, batch_users: int = 1024,
                 device: torch.device | str = "cpu") -> None:
        self.split = split
        self.k = k
        self.batch_users = batch_users
        self.device = torch.device(device)
        self.n_users, self.n_items = split.n_users, split.n_items
        self.targets = np.asarray(targets, dtype=np.int64)
        seen = split.observed()
        order = np.lexsort((seen.items, seen.users))
        self.mask_users = torch.as_tensor(seen.users[order], device=self.device)
        self.mask_items = torch.as_tensor(seen.items[order], device=self.device)
        self.mask_ptr = np.concatenate([[0], np.cumsum(np.bincount(seen.users,
                                                                   minlength=self.n_users))])
        # Eligible (user, target) pairs: the real user has not rated the target at all.
        rated = np.zeros((self.n_users, len(self.targets)), dtype=bool)
        col = {int(t): j for j, t in enumerate(self.targets)}
        hit = np.isin(seen.items, self.targets)
        if hit.any():
            cols = np.array([col[int(t)] for t in seen.items[hit]])
            rated[seen.users[hit], cols] = True
        test = split.test_items
        has_test = np.isin(test, self.targets) & (test >= 0)
        if has_test.any():
            rated[np.flatnonzero(has_test), [col[int(t)] for t in test[has_test]]] = True
        self.eligible = ~rated

    @torch.no_grad()
    def evaluate(self, model) -> EvalResult:
        model.eval()
        n_t = len(self.targets)
        targets = torch.as_tensor(self.targets, device=self.device)
        test_items = torch.as_tensor(self.split.test_items, device=self.device)
        test_rank = torch.full((self.n_users,), -1, dtype=torch.long)
        test_pred = torch.zeros(self.n_users)
        t_scores = torch.zeros(self.n_users, n_t)
        t_ranks = torch.full((self.n_users, n_t), -1, dtype=torch.long)
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
        return self._summarize(test_rank.numpy(), test_pred.numpy(), t_scores.numpy(),
                               t_ranks.numpy())

    def _summarize(self, test_rank, test_pred, t_scores, t_ranks) -> EvalResult:
        k = self.k
        has_test = self.split.test_items >= 0
        r = test_rank[has_test]
        hit = r < k
        ndcg = np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
        scale = self.split.scale.max_rating
        err = (test_pred[has_test] - self.split.test_ratings[has_test]) * scale
        elig = self.eligible
        t_hit = (t_ranks < k) & (t_ranks >= 0) & elig
        n_elig = elig.sum(0)
        per_target = np.where(n_elig > 0, t_hit.sum(0) / np.maximum(n_elig, 1), 0.0)
        metrics = {
            f"hr@{k}": float(hit.mean()) if len(r) else float("nan"),
            f"ndcg@{k}": float(ndcg.mean()) if len(r) else float("nan"),
            "test_mse": float(np.mean(err ** 2)) if len(r) else float("nan"),
            "test_rmse": float(np.sqrt(np.mean(err ** 2))) if len(r) else float("nan"),
            f"target_hr@{k}": float(per_target.mean()),
            f"target_hr_all@{k}": float(t_hit.sum() / (self.n_users * len(self.targets))),
            "avg_target_rank": float((t_ranks[elig] + 1).mean()) if elig.any() else float("nan"),
            "target_score": float(t_scores[elig].mean()) * scale if elig.any() else float("nan"),
        }
        test_hit = np.where(has_test, test_rank < k, np.nan).astype(np.float32)
        return EvalResult(metrics, t_scores, t_ranks, elig, test_hit)


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


def detection_metrics(distrusted_rows: np.ndarray, distrusted_users: np.ndarray | None,
                      train_users: np.ndarray, n_real_users: int,
                      train_items: np.ndarray | None = None,
                      targets: np.ndarray | None = None) -> dict[str, float]:
    """How well a defense's distrust matches the fake users (threat-model.md §3): computed by
    the evaluation side, which knows that users ≥ ``n_real_users`` are fake.

    Rows (over the training rows the defense was given): precision = fake share of the
    distrusted rows; recall = distrusted share of the fake rows; fpr = distrusted share of the
    real users' rows; payload_recall = distrusted share of the fake rows on the targets (the
    rows that promote them). Users (defenses that judge whole users): the same over users, fpr
    over real users. Undefined ratios (nothing distrusted, no fake rows) are NaN, never 0.
    """
    fake = np.asarray(train_users) >= n_real_users
    rows = np.asarray(distrusted_rows, dtype=bool)
    out = {"detect_rows": float(rows.sum())}
    out.update(_precision_recall_fpr(rows, fake, "detect"))
    if targets is not None and train_items is not None:
        payload = fake & np.isin(train_items, targets)
        out["detect_payload_recall"] = (float((rows & payload).sum() / payload.sum())
                                        if payload.any() else float("nan"))
    if distrusted_users is not None:
        flagged = np.asarray(distrusted_users, dtype=bool)
        is_fake = np.arange(len(flagged)) >= n_real_users
        out["detect_users"] = float(flagged.sum())
        out.update(_precision_recall_fpr(flagged, is_fake, "detect_user"))
    return out


def _precision_recall_fpr(flagged: np.ndarray, fake: np.ndarray, prefix: str) -> dict:
    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    hits = int((flagged & fake).sum())
    return {f"{prefix}_precision": ratio(hits, int(flagged.sum())),
            f"{prefix}_recall": ratio(hits, int(fake.sum())),
            f"{prefix}_fpr": ratio(int((flagged & ~fake).sum()), int((~fake).sum()))}
