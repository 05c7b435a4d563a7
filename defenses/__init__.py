"""Defenses by name. A new defense is one module with a :class:`Defense` subclass plus one line
here; ``defense: <name>`` in a config then builds it."""
from __future__ import annotations

from .base import Defense, TrainingData
from .none import NoDefense

DEFENSES: dict[str, type[Defense]] = {
    "none": NoDefense,
}

__all__ = ["DEFENSES", "Defense", "TrainingData"]
