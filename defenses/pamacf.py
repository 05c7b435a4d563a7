"""PamaCF (Zhang et al., NeurIPS 2024; ``Kaike-Zhang/PamaCF``): APR with a per-user magnitude
from the user embedding norm, ε_u = ε · 2 · sigmoid(‖p_u‖² / mean_batch ‖p‖² − 1); an average
user gets ε, users with larger embeddings up to 2ε; item rows take their sample's user's ε.
Every occurrence of a row is perturbed along its own gradient, as in the authors' code. Explicit
MF trains with the hand-derived epoch of ``mf_adversarial.py`` (same mathematics, no graph)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.mf_kernel import EPS_USER_NORM

from .adversarial import AdversarialDefense, AdversarialOptions, user_rows
from .mf_adversarial import HandDerivedAdversarialTrainer


@dataclass
class PamaCFOptions(AdversarialOptions):
    # None: 0.5 on implicit feedback (the authors' BPR-MF defaults are 0.5–0.9 by dataset),
    # AT's 0.03 on explicit MF, where 0.5 wrecks the model (test HR@50 0.006 on FilmTrust).
    eps: float | None = None


def norm_scaled_eps(eps: float, user_embs: torch.Tensor) -> torch.Tensor:
    return eps_from_sq_norms(eps, user_embs.detach().pow(2).sum(-1, keepdim=True))


def eps_from_sq_norms(eps: float, sq: torch.Tensor) -> torch.Tensor:
    return eps * 2.0 * torch.sigmoid(sq / sq.mean().clamp_min(1e-12) - 1.0)


class PamaCF(AdversarialDefense):
    name = "pamacf"
    Options = PamaCFOptions
    trainer_class = HandDerivedAdversarialTrainer
    implicit_eps = 0.5

    def mf_row_eps(self, trainer, users, user_sq_norms, err):
        return eps_from_sq_norms(trainer.eps, user_sq_norms)

    def mf_eps_mode(self, trainer) -> int:
        """The compiled epoch's name for ``mf_row_eps`` (``models.mf_kernel``)."""
        return EPS_USER_NORM

    def row_eps(self, trainer, embs, users, items, sample_losses):
        is_user = user_rows(trainer.model, embs)
        eps_u = norm_scaled_eps(trainer.eps, embs[is_user.index(True)])
        return [eps_u for _ in embs]
