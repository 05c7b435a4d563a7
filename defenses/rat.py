"""RAT: random adversarial training — the batch embeddings are perturbed in a random direction
(truncated normal, std 0.01) scaled to ε (TCD's second baseline, ``models/random_SVD.py``)."""
from __future__ import annotations

from .adversarial import AdversarialDefense


class RandomAdversarialTraining(AdversarialDefense):
    name = "rat"
    direction = "random"
    shared_rows = True
