"""Attacks by name. A new attack is one module with an :class:`Attack` subclass plus one line
here; ``attack: <name>`` in a config then builds it."""
from __future__ import annotations

from .average import AverageAttack
from .bandwagon import BandwagonAttack
from .base import Attack
from .random_attack import RandomAttack
from .segment import SegmentAttack
from .threat import AttackError, ThreatContext

# "none" is the clean data (the Origin column); it is handled by the pipeline.
ATTACKS: dict[str, type[Attack]] = {
    "none": Attack,
    "random": RandomAttack,
    "average": AverageAttack,
    "bandwagon": BandwagonAttack,
    "segment": SegmentAttack,
}

__all__ = ["ATTACKS", "Attack", "AttackError", "ThreatContext"]
