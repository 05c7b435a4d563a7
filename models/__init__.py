"""Victim models by name, and the trainer that fits them.

A model is one module and one line in ``MODELS``: a :class:`Recommender` subclass whose class
attributes declare what it supports (``models/base.py``: feedback kinds, losses, whether it
needs the training graph, whether the compiled MF epochs apply).
"""
from __future__ import annotations

from .base import Recommender
from .lightgcn import LightGCN
from .mf import MF
from .ncf import NCF

MODELS: dict[str, type[Recommender]] = {
    "mf": MF,
    "ncf": NCF,
    "lightgcn": LightGCN,
}


def build_model(cfg, n_users: int, n_items: int, generator, feedback: str = "explicit",
                interactions=None):
    """Build model ``cfg.name`` (a ``ModelConfig``) for the given table sizes.

    ``interactions`` are the training rows the model will be fitted on (fake users' rows
    included); a model with ``needs_graph`` builds its graph from them, the others ignore them.
    """
    return MODELS[cfg.name](n_users, n_items, dim=cfg.dim, generator=generator,
                            feedback=feedback, cfg=cfg, interactions=interactions)


__all__ = ["MODELS", "LightGCN", "MF", "NCF", "Recommender", "build_model"]
