"""VAT (Zhang et al., RecSys 2024; ``Kaike-Zhang/VAT``): a per-user magnitude from each user's
batch loss, ε_u = ε · 2 · sigmoid(mean_u ℓ_u / ℓ_u − 1) — well-fit users (small loss) are the
most vulnerable and get the larger perturbation; item rows take their sample's user's ε."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .adversarial import AdversarialDefense, AdversarialOptions


@dataclass
class VATOptions(AdversarialOptions):
    eps: float = 0.5


def loss_scaled_eps(eps: float, users: torch.Tensor, sample_losses: torch.Tensor) -> torch.Tensor:
    """ε per batch row from the mean loss of the row's user within the batch."""
    uniq, inverse = torch.unique(users, return_inverse=True)
    total = torch.zeros(len(uniq), dtype=sample_losses.dtype, device=users.device)
    count = torch.zeros_like(total)
    total.index_add_(0, inverse, sample_losses)
    count.index_add_(0, inverse, torch.ones_like(sample_losses))
    per_user = total / count
    ratio = per_user.mean() / per_user.clamp_min(1e-12)
    return (eps * 2.0 * torch.sigmoid(ratio - 1.0))[inverse].unsqueeze(1)


class VAT(AdversarialDefense):
    name = "vat"
    Options = VATOptions

    def row_eps(self, trainer, embs, users, items, sample_losses):
        eps_u = loss_scaled_eps(trainer.eps, users, sample_losses)
        return [eps_u for _ in embs]
