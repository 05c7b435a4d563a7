"""Matrix factorization victim: r̂ = p_u · q_i, no biases, Glorot-uniform init.

The TCD paper's victim (Wang et al., WISE 2022, §5.1) and the SHARE paper's; defaults in
protocol.md §3 (d 128, batch 2048, Adam 1e-3, L2 0.005 per element).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Recommender, glorot_uniform


class MF(Recommender):
    emb_roles = ["user", "item"]
    compiled_fast_path = True   # the hand-derived epochs of models/trainer.py (squared error)

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator,
                 feedback: str = "explicit", cfg=None, **_: object) -> None:
        super().__init__()
        self.loss = self.resolve_loss(getattr(cfg, "loss", "auto"), feedback)
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user_emb = nn.Parameter(glorot_uniform(n_users, dim, generator))
        self.item_emb = nn.Parameter(glorot_uniform(n_items, dim, generator))

    def embed(self, users, items):
        return [self.user_emb[users], self.item_emb[items]]

    def head(self, embs, users, items):
        p, q = embs
        return (p * q).sum(-1)

    def score_all(self, users):
        return self.user_emb[users] @ self.item_emb.T

    def user_table(self):
        return self.user_emb


class BatchLayout:
    """The sparse layouts of every batch of one epoch of (user, item, rating) rows, built at once
    for ``Trainer.fast_epoch``.

    Batch b holds the shuffled rows b·B … (b+1)·B − 1. Each batch needs its rows in user-major
    order (the CSR of the residual matrix E), in item-major order (the CSR of Eᵀ), the map
    between the two orders, and per-row counts (the L2 term). All batches are ordered by two
    stable sorts of (batch, row id) keys over the whole epoch — int32 keys when they fit, which
    halves the radix sort's passes — and cut into per-batch views by one ``split`` per array.
    (One sort of a (batches × B) view along its rows gives the same order but was measured 2×
    slower: torch sorts a flat integer array with a radix sort, rows with a comparison sort.)
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                 perm: torch.Tensor, batch_size: int, n_users: int, n_items: int) -> None:
        """Rows ``perm[0], perm[1], …`` of (users, items, ratings) in batches of
        ``batch_size``."""
        n = len(perm)
        self.batch_size = batch_size
        self.n_batches = nb = max(1, -(-n // batch_size))
        # index_select, not ``a[idx]``: the same gather, ~8× faster on 1-D tensors of this size
        # (advanced indexing takes a general TensorIterator path).
        u, i = users.index_select(0, perm), items.index_select(0, perm)
        key_dtype = torch.int32 if nb * max(n_users, n_items) < 2**31 else torch.int64
        batch = torch.arange(n, dtype=key_dtype, device=u.device).div_(batch_size,
                                                                       rounding_mode="floor")
        offset_u, offset_i = batch * n_users, batch * n_items
        key_u, by_user = torch.sort(offset_u + u.to(key_dtype), stable=True)
        key_i, by_item = torch.sort(offset_i + i.to(key_dtype), stable=True)
        # A stable sort keeps every row inside its batch, so the batch of sorted position j is
        # still j // B: the sorted ids are the sorted keys minus the batch offsets (no gather).
        self.rows_u = key_u - offset_u    # users, user-major
        self.rows_i = key_i - offset_i    # items, item-major
        # Rows of (users, items, ratings), user-major.
        rows = perm.index_select(0, by_user)
        self.cols_u = items.index_select(0, rows)         # items, user-major
        self.neg_r = -ratings.index_select(0, rows)       # −ratings, user-major
        self.cols_i = u.index_select(0, by_item)          # users, item-major
        # Position, within its batch, of each item-major entry in the user-major order.
        rank = torch.empty_like(by_user)
        rank[by_user] = torch.arange(n, device=u.device) % batch_size
        self.item_to_user = rank.index_select(0, by_item)
        self.crow_u, self.cnt_u = self._crow(key_u, n_users)
        self.crow_i, self.cnt_i = self._crow(key_i, n_items)

    def _crow(self, keys: torch.Tensor, n_rows: int):
        """Per batch: CSR row pointers (batches × n_rows + 1) and row counts as floats
        (batches × n_rows × 1)."""
        nb = self.n_batches
        cnt = torch.bincount(keys, minlength=nb * n_rows).view(nb, n_rows)
        crow = torch.nn.functional.pad(cnt.cumsum(1), (1, 0))
        return crow, cnt.to(torch.float32).unsqueeze(2)

    def per_batch(self) -> list[tuple[torch.Tensor, ...]]:
        """Per-batch views: crow_u, rows_u, cols_u, −r, cnt_u (user-major), crow_i, rows_i,
        cols_i, item_to_user, cnt_i (item-major)."""
        size = self.batch_size
        return [self.crow_u.unbind(0), self.rows_u.split(size), self.cols_u.split(size),
                self.neg_r.split(size), self.cnt_u.unbind(0), self.crow_i.unbind(0),
                self.rows_i.split(size), self.cols_i.split(size), self.item_to_user.split(size),
                self.cnt_i.unbind(0)]
