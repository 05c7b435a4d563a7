"""AT: adversarial training with the gradient-direction (APR) perturbation of the batch
embeddings, ε = 0.03 by default (TCD's baseline; He et al., SIGIR 2018)."""
from __future__ import annotations

from .adversarial import AdversarialDefense


class AdversarialTraining(AdversarialDefense):
    name = "at"
    direction = "gradient"
    shared_rows = True
