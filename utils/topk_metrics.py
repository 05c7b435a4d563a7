"""The implicit top-K protocol's metrics (LightGCN, VAT, PamaCF): Recall@K and NDCG@K on a test
set with several items per user, target HR@K and target NDCG@K, by full ranking.

Every item is scored for every real user; the user's known items (training and validation,
``seen``) are set to −inf, so they can neither be recommended nor push a test item down. Ranks
are pessimistic, as in ``utils/metrics.py``: an item's 0-based rank is the number of *other*
unmasked items scoring at least as high (a model scoring everything equally hits nothing).
Users are processed in chunks (``batch_users``), each chunk with whole-tensor operations —
no Python loop over users or over test items; a rank is computed exactly only below K (from
each row's K + 1 largest scores, ``capped_ranks``), which is all Recall, NDCG and HR need.

- **Recall@K** of a user = |test items ranked < K| / |test items|; **NDCG@K** = DCG / IDCG with
  DCG = Σ_{test items ranked r < K} 1 / log2(r + 2) and IDCG the DCG of min(|test|, K) hits in
  the first places. Both averaged over the real users with at least one test item (the
  definition of the LightGCN authors' code and RecBole's full-ranking evaluation; with
  pessimistic ranks instead of an arbitrary order among tied scores).
- **Target HR@K** (``T-HR@K`` in VAT/PamaCF): for each target t, over the real users who have
  not interacted with t (in ``seen`` or in the test set), the share with t ranked < K; target
  **NDCG@K**: the mean of 1 / log2(rank + 2) over the same users, 0 beyond K (one relevant
  item: IDCG = 1). Both averaged over the targets.

These are pure functions of a model's scores and the interactions; the metric registry wires
them into the pipeline (``*_from_scores`` take precomputed score rows, for tests and other
callers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

PAIR_CELLS = 1 << 24   # largest (pairs × items) comparison block


@dataclass
class UserIndex:
    """Interactions grouped by user: rows ``ptr[u]:ptr[u+1]`` of ``items`` are user u's."""

    items: torch.Tensor
    users: torch.Tensor
    ptr: np.ndarray

    @classmethod
    def of(cls, inter, n_users: int, device="cpu") -> "UserIndex":
        keep = inter.users < n_users
        users, items = inter.users[keep], inter.items[keep]
        order = np.lexsort((items, users))
        ptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
        return cls(torch.as_tensor(items[order], device=device),
                   torch.as_tensor(users[order], device=device), ptr)

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(row within the chunk, item) of users start … stop − 1."""
        lo, hi = self.ptr[start], self.ptr[stop]
        return self.users[lo:hi] - start, self.items[lo:hi]


def pessimistic_ranks(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor
                      ) -> torch.Tensor:
    """0-based rank of ``items[j]`` in row ``rows[j]`` of ``scores``: the number of other
    entries of that row scoring at least as high (−inf entries never count unless the item
    itself is −inf). Computed in blocks of at most ``PAIR_CELLS`` comparisons."""
    out = torch.empty(len(rows), dtype=torch.long, device=scores.device)
    step = max(1, PAIR_CELLS // max(1, scores.shape[1]))
    for lo in range(0, len(rows), step):
        r, i = rows[lo:lo + step], items[lo:lo + step]
        value = scores[r, i]
        out[lo:lo + step] = (scores[r] >= value.unsqueeze(1)).sum(1) - 1
    return out


def capped_ranks(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor, k: int
                 ) -> torch.Tensor:
    """``pessimistic_ranks`` where they are below ``k``, else ``k`` — all the metrics need,
    from the k + 1 largest scores per row instead of a comparison with every item.

    With v_1 ≥ v_2 ≥ … a row's sorted scores, an item scoring s has pessimistic rank
    #{j : v_j ≥ s} − 1, which is below k exactly when s > v_{k+1}; then every score ≥ s is
    among v_1 … v_k, so the count needs only those."""
    n_items = scores.shape[1]
    kk = min(k + 1, n_items)
    top = scores.topk(kk, dim=1).values                     # (rows, kk), descending
    value = scores[rows, items]
    if kk == k + 1:
        inside = value > top[rows, k]
    else:                                                   # fewer than k + 1 items in all
        inside = value > float("-inf")
    count = (top[rows, :min(k, n_items)] >= value.unsqueeze(1)).sum(1)
    return torch.where(inside, count - 1, torch.full_like(count, k))


def mask_seen(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Set the known (row, item) entries to −inf, in place; returns ``scores``."""
    scores[rows, items] = float("-inf")
    return scores


def recall_ndcg_from_ranks(ranks: torch.Tensor, rows: torch.Tensor, n_rows: int, k: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row (user) of a chunk: Recall@K, NDCG@K and the number of test items, from the
    0-based ranks of its test items (``rows[j]`` the row of test item j). Rows without a test
    item get NaN."""
    count = torch.bincount(rows, minlength=n_rows).to(torch.float64)
    hit = ranks < k
    hits = torch.bincount(rows[hit], minlength=n_rows).to(torch.float64)
    gain = torch.zeros(n_rows, dtype=torch.float64, device=ranks.device)
    gain.index_add_(0, rows[hit], 1.0 / torch.log2(ranks[hit].to(torch.float64) + 2.0))
    ideal_steps = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64, device=ranks.device) + 2)
    ideal = torch.cat([ideal_steps.new_zeros(1), ideal_steps.cumsum(0)])
    idcg = ideal[count.clamp(max=k).long()]
    nan = torch.full_like(count, float("nan"))
    has = count > 0
    recall = torch.where(has, hits / count.clamp(min=1), nan)
    ndcg = torch.where(has, gain / idcg.clamp(min=1e-12), nan)
    return recall, ndcg, count


def target_hits_from_scores(scores: torch.Tensor, targets: torch.Tensor,
                            eligible: torch.Tensor, k: int
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (row, target): 1.0 / 0.0 whether the target ranks < K, and its NDCG gain
    1 / log2(rank + 2) (0 beyond K); NaN where the pair is not eligible. ``scores`` must
    already be masked."""
    n_rows, n_t = scores.shape[0], len(targets)
    rows = torch.arange(n_rows, device=scores.device).repeat_interleave(n_t)
    items = targets.repeat(n_rows)
    ranks = capped_ranks(scores, rows, items, k).view(n_rows, n_t).to(torch.float64)
    hit = (ranks < k).to(torch.float64)
    gain = torch.where(ranks < k, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
    nan = torch.full_like(hit, float("nan"))
    return torch.where(eligible, hit, nan), torch.where(eligible, gain, nan)


@dataclass
class TopKResult:
    metrics: dict[str, float]
    recall: np.ndarray        # (n_real_users,) NaN: no test item
    ndcg: np.ndarray          # (n_real_users,)
    target_hit: np.ndarray    # (n_real_users, n_targets) NaN: not eligible
    target_gain: np.ndarray   # (n_real_users, n_targets)


def eligible_pairs(interactions, targets: np.ndarray, n_real_users: int) -> np.ndarray:
    """(n_real_users, n_targets) bool: the user has not interacted with the target in any of
    ``interactions`` (objects with ``users`` and ``items``; an item of -1 stands for none)."""
    targets = np.asarray(targets, dtype=np.int64)
    rated = np.zeros((n_real_users, len(targets)), dtype=bool)
    users = np.concatenate([np.asarray(i.users) for i in interactions])
    items = np.concatenate([np.asarray(i.items) for i in interactions])
    col = np.full(int(max(items.max(initial=0), targets.max(initial=0))) + 1, -1)
    col[targets] = np.arange(len(targets))
    j = np.where(items >= 0, col[np.maximum(items, 0)], -1)
    keep = (j >= 0) & (users < n_real_users)
    rated[users[keep], j[keep]] = True
    return ~rated


@torch.no_grad()
def topk_metrics(model, seen, test, n_real_users: int,
                 targets: np.ndarray | None = None, k: int = 20, target_k: int = 50,
                 batch_users: int = 1024, device: torch.device | str = "cpu") -> TopKResult:
    """Recall@``k``, NDCG@``k`` on ``test`` and target HR/NDCG@``target_k`` of ``targets``,
    by full ranking of every item for the real users (ids < ``n_real_users``) with ``seen``
    masked. Keys: ``recall@k``, ``ndcg@k``, ``target_hr@target_k``, ``target_ndcg@target_k``
    (the target keys only when targets are given; NaN when no user is eligible)."""
    model.eval()
    device = torch.device(device)
    targets = np.zeros(0, dtype=np.int64) if targets is None else np.asarray(targets, np.int64)
    seen_idx = UserIndex.of(seen, n_real_users, device)
    test_idx = UserIndex.of(test, n_real_users, device)
    eligible = torch.as_tensor(eligible_pairs((seen, test), targets, n_real_users),
                               device=device)
    t = torch.as_tensor(targets, device=device)
    recall, ndcg = [], []
    t_hit, t_gain = [], []
    for start in range(0, n_real_users, batch_users):
        stop = min(start + batch_users, n_real_users)
        scores = model.score_all(torch.arange(start, stop, device=device)).float().clone()
        mask_seen(scores, *seen_idx.rows(start, stop))
        rows, items = test_idx.rows(start, stop)
        r, n, _ = recall_ndcg_from_ranks(capped_ranks(scores, rows, items, k), rows,
                                         stop - start, k)
        recall.append(r)
        ndcg.append(n)
        if len(targets):
            h, g = target_hits_from_scores(scores, t, eligible[start:stop], target_k)
            t_hit.append(h)
            t_gain.append(g)
    recall_u = torch.cat(recall).cpu().numpy() if recall else np.zeros(0)
    ndcg_u = torch.cat(ndcg).cpu().numpy() if ndcg else np.zeros(0)
    metrics = {f"recall@{k}": _nanmean(recall_u), f"ndcg@{k}": _nanmean(ndcg_u)}
    hit = gain = np.zeros((n_real_users, 0))
    if len(targets):
        hit, gain = torch.cat(t_hit).cpu().numpy(), torch.cat(t_gain).cpu().numpy()
        # Per target over its eligible users, then the mean over targets.
        metrics[f"target_hr@{target_k}"] = _nanmean(_nanmean_columns(hit))
        metrics[f"target_ndcg@{target_k}"] = _nanmean(_nanmean_columns(gain))
    return TopKResult(metrics, recall_u, ndcg_u, hit, gain)


def _nanmean_columns(a: np.ndarray) -> np.ndarray:
    count = (~np.isnan(a)).sum(0)
    total = np.nansum(a, axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    ok = ~np.isnan(a)
    return float(a[ok].mean()) if ok.any() else float("nan")
