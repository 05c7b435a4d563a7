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

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator,
                 **_: object) -> None:
        super().__init__()
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
