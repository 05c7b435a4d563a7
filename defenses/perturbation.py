"""Row-wise helpers of the adversarial perturbations (APR-style defenses on pointwise and
pairwise steps)."""
from __future__ import annotations

import torch


def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / ‖x‖ per row; a zero row stays zero."""
    norm = x.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, x / norm.clamp_min(1e-12), torch.zeros_like(x))


def sum_over_shared_rows(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """For every batch row, the sum of ``values`` over the batch rows with the same table id
    (the gradient of the table row itself, which all its occurrences share)."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    total = values.new_zeros(len(uniq), values.shape[-1]).index_add_(0, inverse, values)
    return total[inverse]


def random_directions(embs, ids, shared_rows: bool, generator) -> list[torch.Tensor]:
    """RAT's random directions: a truncated normal draw per batch row, or with ``shared_rows``
    one per distinct table id shared by its occurrences; drawn from ``generator`` in the order
    of ``embs``."""
    dirs = []
    for e, row_ids in zip(embs, ids):
        if shared_rows:
            uniq, inverse = torch.unique(row_ids, return_inverse=True)
            noise = e.new_empty(len(uniq), e.shape[-1])
        else:
            noise = torch.empty_like(e)
        torch.nn.init.trunc_normal_(noise, std=0.01, a=-0.02, b=0.02, generator=generator)
        dirs.append(noise[inverse] if shared_rows else noise)
    return dirs
