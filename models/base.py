"""The interface every victim model implements, so defenses and the evaluator stay model-agnostic.

A model maps a batch of (user, item) pairs to scores in two steps, ``embed`` (the embedding rows
of the batch: what adversarial defenses perturb) and ``head`` (scores from those rows), and can
score every item for a batch of users (``score_all``, used by the evaluator and TCD).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def glorot_uniform(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    limit = math.sqrt(6.0 / (rows + cols))
    return (torch.rand(rows, cols, generator=generator) * 2 - 1) * limit


class Recommender(nn.Module):
    n_users: int
    n_items: int

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def head(self, embs: list[torch.Tensor], users: torch.Tensor,
             items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(users, items), users, items)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for ``users``: shape (len(users), n_items)."""
        raise NotImplementedError

    def lookup_tables(self) -> list[nn.Parameter]:
        """The embedding tables the loss reads only by row lookup (user and item tables):
        ``model.optimizer: adadelta_sparse`` updates only their rows in the batch."""
        return [t for t in (getattr(self, "user_emb", None), getattr(self, "item_emb", None))
                if isinstance(t, nn.Parameter)]

    def user_table(self) -> torch.Tensor:
        """The user embedding table whose row norms personalized defenses read."""
        raise NotImplementedError

    def reg_loss(self, embs: list[torch.Tensor]) -> torch.Tensor:
        """TCD's per-element L2 penalty: the mean of the squared batch embeddings, per table."""
        return sum(e.pow(2).mean() for e in embs)
