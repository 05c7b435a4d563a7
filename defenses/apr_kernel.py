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
(``tests/test_speed_equivalence.py``).
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit

from models.mf_kernel import (MFAdamKernel, accumulate, adam, adam_arrays, adam_constants,
                              add_l2, clear, epoch_rows, residuals)

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def _directions(grad, noise, noise_start, delta, touched, n_touched, eps, order, random):
    """δ rows of the touched rows: ε · x / ‖x‖ with x the clean gradient row (AT) or the
    batch's noise row of that id, ids in ascending order (RAT)."""
    if random:
        order[:n_touched] = np.sort(touched[:n_touched])
    for a in range(n_touched):
        if random:
            own = order[a]
            x = noise[noise_start + a]
        else:
            own = touched[a]
            x = grad[own]
        norm_sq = np.float32(0.0)
        for f in range(x.shape[0]):
            norm_sq += x[f] * x[f]
        norm = np.sqrt(norm_sq)
        d = delta[own]
        if norm > 0:
            for f in range(x.shape[0]):
                d[f] = x[f] / norm * eps
        else:
            d[:] = 0.0


@njit(fastmath={"reassoc"}, **_JIT)
def _perturbed_residuals(P, Q, delta_p, delta_q, users, items, ratings, start, stop, errors):
    """e'[k] = (p_u + δ_u)·(q_i + δ_i) − r; returns Σ e'² in float64."""
    total = 0.0
    for row in range(start, stop):
        u, i = users[row], items[row]
        p, q, dp, dq = P[u], Q[i], delta_p[u], delta_q[i]
        dot = np.float32(0.0)
        for f in range(p.shape[0]):
            dot += (p[f] + dp[f]) * (q[f] + dq[f])
        err = dot - ratings[row]
        errors[row - start] = err
        total += np.float64(err) * np.float64(err)
    return total


@njit(**_JIT)
def _accumulate_perturbed(grad, ids, other, delta_other, other_ids, start, stop, errors,
                          scale):
    """grad[ids[r]] += scale·e'_r·(other + δ)[other_ids[r]] in batch order."""
    for row in range(start, stop):
        err = errors[row - start] * scale
        g = grad[ids[row]]
        o, d = other[other_ids[row]], delta_other[other_ids[row]]
        for f in range(g.shape[0]):
            g[f] += err * (o[f] + d[f])


@njit(**_JIT)
def _squared_rows(table, counts, touched, n_touched):
    """Σ over the batch rows of ‖row‖² (each touched row times its count), float64."""
    total = 0.0
    for a in range(n_touched):
        x = table[touched[a]]
        sq = 0.0
        for f in range(x.shape[0]):
            sq += np.float64(x[f]) * np.float64(x[f])
        total += counts[touched[a]] * sq
    return total


@njit(**_JIT)
def _epoch(P, Q, avg_p, avg_sq_p, avg_q, avg_sq_q, grad_p, grad_q, delta_p, delta_q,
           count_u, count_i, touched_u, touched_i, order_u, order_i, users, items, ratings,
           batch_size, reg, eps, adv_weight, random, noise_u, noise_i, noise_u_start,
           noise_i_start, step_sizes, bias2_sqrts, beta1, beta2, adam_eps, losses, gaps):
    n, dim = users.shape[0], P.shape[1]
    b1, b2 = np.float32(beta1), np.float32(beta2)
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    eps32, adam_eps32 = np.float32(eps), np.float32(adam_eps)
    errors = np.empty(batch_size, np.float32)
    for b in range(losses.shape[0]):
        start = b * batch_size
        stop = min(n, start + batch_size)
        count = stop - start
        clean = residuals(P, Q, users, items, ratings, start, stop, errors)
        scale = np.float32(2.0 / count)
        n_u = accumulate(grad_p, users, Q, items, start, stop, errors, scale, count_u,
                         touched_u)
        n_i = accumulate(grad_q, items, P, users, start, stop, errors, scale, count_i,
                         touched_i)
        _directions(grad_p, noise_u, noise_u_start[b], delta_p, touched_u, n_u, eps32,
                    order_u, random)
        _directions(grad_q, noise_i, noise_i_start[b], delta_q, touched_i, n_i, eps32,
                    order_i, random)
        adv = _perturbed_residuals(P, Q, delta_p, delta_q, users, items, ratings, start,
                                   stop, errors)
        adv_scale = np.float32(adv_weight) * scale
        _accumulate_perturbed(grad_p, users, Q, delta_q, items, start, stop, errors,
                              adv_scale)
        _accumulate_perturbed(grad_q, items, P, delta_p, users, start, stop, errors,
                              adv_scale)
        l2 = np.float32(2.0 * reg / (count * dim))
        penalty = (_squared_rows(P, count_u, touched_u, n_u)
                   + _squared_rows(Q, count_i, touched_i, n_i)) / (count * dim)
        add_l2(grad_p, P, count_u, touched_u, n_u, l2)
        add_l2(grad_q, Q, count_i, touched_i, n_i, l2)
        losses[b] = clean / count + reg * penalty + adv_weight * adv / count
        gaps[b] = (adv - clean) / count
        adam(P, avg_p, avg_sq_p, grad_p, step_sizes[b], b1, c1, b2, c2, bias2_sqrts[b],
             adam_eps32)
        adam(Q, avg_q, avg_sq_q, grad_q, step_sizes[b], b1, c1, b2, c2, bias2_sqrts[b],
             adam_eps32)
        for a in range(n_u):
            delta_p[touched_u[a], :] = 0.0
        for a in range(n_i):
            delta_q[touched_i[a], :] = 0.0
        clear(grad_p, count_u, touched_u, n_u)
        clear(grad_q, count_i, touched_i, n_i)


class SharedRowAPRKernel(MFAdamKernel):
    """Buffers of the AT / RAT epoch: the MF kernel's, plus the δ rows."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.delta_p = np.zeros((n_users, dim), np.float32)
        self.delta_q = np.zeros((n_items, dim), np.float32)
        self.order_u = np.empty(n_users, np.int64)
        self.order_i = np.empty(n_items, np.int64)

    def adversarial_epoch(self, P: torch.Tensor, Q: torch.Tensor, states: list[dict], users,
                          items, ratings, perm: torch.Tensor, batch_size: int, reg: float,
                          lr: float, betas: tuple[float, float], adam_eps: float, eps: float,
                          adv_weight: float, random: bool,
                          generator: torch.Generator) -> tuple[float, float]:
        """One epoch of the shared-row APR step on rows ``perm``; returns the sum over batches
        of (batch loss × batch size) and the last batch's adversarial gap."""
        rows = epoch_rows(users, items, ratings, perm)
        n_batches = max(1, -(-len(perm) // batch_size))
        noise = _random_directions(rows, n_batches, batch_size, P.shape[1], generator) \
            if random else _NO_NOISE
        step_sizes, bias2_sqrts = adam_constants(states, n_batches, lr, betas)
        losses = np.empty(n_batches, np.float64)
        gaps = np.empty(n_batches, np.float64)
        _epoch(*adam_arrays(P, Q, states), self.grad_p, self.grad_q, self.delta_p,
               self.delta_q, self.count_u, self.count_i, self.touched_u, self.touched_i,
               self.order_u, self.order_i, *rows, batch_size, float(reg), float(eps),
               float(adv_weight), bool(random), *noise, step_sizes, bias2_sqrts,
               float(betas[0]), float(betas[1]), float(adam_eps), losses, gaps)
        sizes = np.minimum(batch_size, len(perm) - batch_size * np.arange(n_batches))
        return float((losses * sizes).sum()), float(gaps[-1])


_NO_NOISE = (np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32),
             np.zeros(1, np.int64), np.zeros(1, np.int64))


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
