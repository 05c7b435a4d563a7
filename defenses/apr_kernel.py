"""AT and RAT on explicit MF as a compiled epoch (issue 18): the shared-row APR step of
``defenses/adversarial.py`` without autograd.

AT and RAT perturb the embedding *tables* (``shared_rows``): every occurrence of a user (item)
in a batch carries the same δ. For a batch of B rows with residuals e = p_u·q_i − r:

- AT: δ_u = ε · G_u / ‖G_u‖ with G_u = Σ_{rows of u} (2/B) e q_i, the clean-loss gradient of
  the table row (no L2), and symmetrically δ_i; a zero row gets δ = 0;
- RAT: δ_u = ε · z_u / ‖z_u‖ with z_u a truncated normal (std 0.01, cut at ±0.02) drawn per
  distinct user of the batch in ascending id order, then per distinct item — the draws the
  autograd step takes from the trainer's generator, taken here for the whole epoch up front
  in the same order;

then, with δ held constant, e' = (p_u + δ_u)·(q_i + δ_i) − r and the batch loss is
mean e² + reg·(mean p² + mean q²) + w·mean e'², whose gradient for the row of u is
Σ (2/B) [e q_i + w e' (q_i + δ_i)] + (2 reg / (B d)) c_u p_u. Adam then updates every row of
both tables (``models.mf_kernel.adam``). The autograd step computes the same mathematics;
sums are taken in another order, so the two agree to float32 round-off
(``tests/test_speed_equivalence.py``). The compiled loop is ``models.mf_kernel.apr_epoch``,
kept in the file of the MF helpers it inlines (Numba's disk cache is per source file); this
module holds its buffers and RAT's draws.
"""
from __future__ import annotations

import numpy as np
import torch

from models.mf_kernel import MFAdamKernel, adam_schedule, apr_epoch, epoch_rows


class SharedRowAPRKernel(MFAdamKernel):
    """Buffers of the AT / RAT epoch: the MF kernel's, plus the δ rows."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.delta_p = np.zeros((n_users, dim), np.float32)
        self.delta_q = np.zeros((n_items, dim), np.float32)
        self.order_u = np.empty(n_users, np.int64)
        self.order_i = np.empty(n_items, np.int64)

    def adversarial_epoch(self, trainer, users, items, ratings, perm: torch.Tensor,
                          eps: float, adv_weight: float, random: bool) -> tuple[float, float]:
        """One epoch of the shared-row APR step on rows ``perm`` (the trainer's MF tables,
        Adam state and generator); returns the sum over batches of (batch loss × batch size)
        and the last batch's adversarial gap."""
        size, dim = trainer.cfg.batch_size, self.grad_p.shape[1]
        rows = epoch_rows(users, items, ratings, perm)
        n_batches = max(1, -(-len(perm) // size))
        if random:
            noise = _random_directions(rows, n_batches, size, dim, trainer.generator)
        else:  # AT: no draws; the loop still reads each batch's (unused) start
            empty = np.zeros((0, dim), np.float32)
            noise = (empty, empty, np.zeros(n_batches, np.int64), np.zeros(n_batches, np.int64))
        arrays, schedule = adam_schedule(trainer, n_batches)
        losses = np.empty(n_batches, np.float64)
        gaps = np.empty(n_batches, np.float64)
        apr_epoch(*arrays, self.grad_p, self.grad_q, self.delta_p, self.delta_q, self.count_u,
                  self.count_i, self.touched_u, self.touched_i, self.order_u, self.order_i,
                  *rows, size, float(trainer.cfg.reg), float(eps), float(adv_weight),
                  bool(random), *noise, *schedule, losses, gaps)
        sizes = np.minimum(size, len(perm) - size * np.arange(n_batches))
        return float((losses * sizes).sum()), float(gaps[-1])


def _random_directions(rows, n_batches: int, batch_size: int, dim: int,
                       generator: torch.Generator) -> tuple:
    """RAT's noise for every batch of the epoch, drawn as the autograd step draws it: per
    batch, one truncated-normal row per distinct user (ascending ids), then per distinct
    item; returns the stacked rows and each batch's first row."""
    users, items = rows[0], rows[1]
    noise_u, noise_i, start_u, start_i = [], [], [0], [0]
    for b in range(n_batches):
        lo, hi = b * batch_size, min(len(users), (b + 1) * batch_size)
        for ids, out, starts in ((users, noise_u, start_u), (items, noise_i, start_i)):
            draw = torch.empty(len(np.unique(ids[lo:hi])), dim)
            torch.nn.init.trunc_normal_(draw, std=0.01, a=-0.02, b=0.02, generator=generator)
            out.append(draw.numpy())
            starts.append(starts[-1] + len(draw))
    return (np.concatenate(noise_u), np.concatenate(noise_i),
            np.asarray(start_u[:-1], np.int64), np.asarray(start_i[:-1], np.int64))
