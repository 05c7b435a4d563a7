"""Defenses by name. A new defense is one module with a :class:`Defense` subclass plus one line
here; ``defense: <name>`` in a config then builds it."""
from __future__ import annotations

from .at import AdversarialTraining
from .base import Defense, TrainingData
from .degsim import DegSimDetect
from .none import NoDefense
from .pamacf import PamaCF
from .pca_detect import PCADetect
from .pore import Pore
from .rat import RandomAdversarialTraining
from .share import SHARE_DEFENSES
from .tcd import TripleCooperativeDefense
from .vat import VAT

DEFENSES: dict[str, type[Defense]] = {
    "none": NoDefense,
    "at": AdversarialTraining,
    "rat": RandomAdversarialTraining,
    "pamacf": PamaCF,
    "vat": VAT,
    "tcd": TripleCooperativeDefense,
    **SHARE_DEFENSES,  # share and its ablation variants (share_no_elim, ...)
    "pca_detect": PCADetect,  # detection baselines (threat-model.md §3)
    "degsim": DegSimDetect,
    "pore": Pore,  # certified: user subsampling + frequency vote (defenses/pore.py)
}

__all__ = ["DEFENSES", "Defense", "TrainingData"]
