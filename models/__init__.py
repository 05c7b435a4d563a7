"""Victim models by name, and the trainer that fits them."""
from __future__ import annotations

from .base import Recommender
from .mf import MF
from .ncf import NCF

MODELS: dict[str, type[Recommender]] = {
    "mf": MF,
    "ncf": NCF,
}


def build_model(cfg, n_users: int, n_items: int, generator, feedback: str = "explicit"):
    """Build model ``cfg.name`` (a ``ModelConfig``) for the given table sizes."""
    return MODELS[cfg.name](n_users, n_items, dim=cfg.dim, generator=generator,
                            feedback=feedback, cfg=cfg)


__all__ = ["MODELS", "MF", "NCF", "Recommender", "build_model"]
