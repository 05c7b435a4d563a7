"""VAT (Zhang et al., RecSys 2024; ``Kaike-Zhang/VAT``): a per-user magnitude from each user's
batch loss, ε_u = ε · 2 · sigmoid(mean_u ℓ_u / ℓ_u − 1) — well-fit users (small loss) are the
most vulnerable and get the larger perturbation; item rows take their sample's user's ε.
ℓ_u is the *sum* of the user's row losses in the batch, as in the authors' ``utls/trainer.py``
(``_get_user_eps`` sums per user), so users with more rows in the batch get a smaller ε.
Explicit MF trains with the hand-derived epoch of ``mf_adversarial.py`` (same mathematics)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.mf_kernel import EPS_USER_LOSS

from .adversarial import AdversarialDefense, AdversarialOptions
from .mf_adversarial import HandDerivedAdversarialTrainer


@dataclass
class VATOptions(AdversarialOptions):
    eps: float | None = None  # as PamaCF: 0.5 implicit (the paper's), 0.03 explicit


def loss_scaled_eps(eps: float, users: torch.Tensor, sample_losses: torch.Tensor) -> torch.Tensor:
    """ε per batch row from the summed loss of the row's user within the batch."""
    uniq, inverse = torch.unique(users, return_inverse=True)
    per_user = torch.zeros(len(uniq), dtype=sample_losses.dtype, device=users.device)
    per_user.index_add_(0, inverse, sample_losses)
    ratio = per_user.mean() / per_user.clamp_min(1e-12)
    return (eps * 2.0 * torch.sigmoid(ratio - 1.0))[inverse].unsqueeze(1)


class VAT(AdversarialDefense):
    name = "vat"
    Options = VATOptions
    trainer_class = HandDerivedAdversarialTrainer
    implicit_eps = 0.5

    def mf_row_eps(self, trainer, users, user_sq_norms, err):
        return loss_scaled_eps(trainer.eps, users, err.pow(2)).squeeze(1)

    def mf_eps_mode(self, trainer) -> int:
        """The compiled epoch's name for ``mf_row_eps`` (``models.mf_kernel``)."""
        return EPS_USER_LOSS

    def row_eps(self, trainer, embs, users, items, sample_losses):
        eps_u = loss_scaled_eps(trainer.eps, users, sample_losses)
        return [eps_u for _ in embs]
