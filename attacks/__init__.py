"""Attacks by name. A new attack is one module with an :class:`Attack` subclass plus one line
here; ``attack: <name>`` in a config then builds it."""
from __future__ import annotations

from .adaptive import AdaptiveAttack
from .aush import AUSHAttack
from .average import AverageAttack
from .bandwagon import BandwagonAttack
from .clone import CloneAttack
from .coattack import CoAttack, GCoAttack
from .base import Attack
from .neural import NeuralAttack
from .pga import PGAAttack
from .poison_file import FileAttack
from .random_attack import RandomAttack
from .segment import SegmentAttack
from .threat import AttackError, ThreatContext
from .tna import TNAAttack

# "none" is the clean data (the Origin column); it is handled by the pipeline.
ATTACKS: dict[str, type[Attack]] = {
    "none": Attack,
    "random": RandomAttack,
    "average": AverageAttack,
    "bandwagon": BandwagonAttack,
    "segment": SegmentAttack,
    "neural": NeuralAttack,
    "aush": AUSHAttack,
    "pga": PGAAttack,
    "tna": TNAAttack,
    "file": FileAttack,
    # defense-aware attacks (threat-model.md §2)
    "clone": CloneAttack,
    "adaptive": AdaptiveAttack,
    "coattack": CoAttack,
    "gcoattack": GCoAttack,
}

__all__ = ["ATTACKS", "Attack", "AttackError", "ThreatContext"]
