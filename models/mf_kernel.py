"""One epoch of explicit MF + squared error + Adam as a compiled loop (issue 18).

The epoch ``Trainer.fast_epoch`` runs (plain MF, TCD's three models, the attacks' MF
surrogates) is ~80 k small steps per TCD cell on ML-100K. Written as PyTorch calls, a step is
about fifteen kernel launches on table-sized temporaries, plus a per-epoch sort of the whole
epoch into sparse layouts; the time went to launch overhead and extra passes over memory.
Here the whole epoch is one call of a Numba-compiled loop, per batch:

1. residuals e = p_u·q_i − r of the batch rows (the epoch's rows are gathered into batch order
   once, so they are read sequentially);
2. the gradient rows: (2/B)·e·q_i added to row u of a user buffer and (2/B)·e·p_u to row i of
   an item buffer, in batch order, then the L2 term (2 reg / (B d))·c_u·p_u on the touched
   rows only (c_u = occurrences in the batch: autograd's gradient of TCD's per-element L2 on
   the batch embeddings);
3. Adam over *every* row of both tables (rows absent from the batch still move with their
   momentum, as in ``torch.optim.Adam``), then the touched gradient rows are zeroed.

It computes the mathematics of ``Trainer.fast_epoch``'s PyTorch form (and of the
straightforward autograd loop), with Adam as torch's fused CPU kernel writes it (float32
coefficients, ``m·β1 + g·(1−β1)``, ``v·β2 + g·g·(1−β2)``,
``p − step_size·m / (√v / √bias_correction2 + eps)``). Sums are taken in another order — the
dot products in vector lanes, each gradient row in batch order — so results agree with the
PyTorch form to float32 round-off, not bit for bit (``tests/test_speed_equivalence.py``
compares both and the pre-issue-18 reference). Where a model's output feeds a discrete choice
(TCD's partner agreement, an attack's item choice), a round-off difference can flip one choice
and the runs then part ways, as a different seed would.

``apr_epoch`` is the same loop for AT and RAT's table-shared adversarial step
(``defenses/apr_kernel.py`` explains its mathematics).

The loop is single-threaded on purpose: Numba's parallel regions cost more per step than they
saved at this size (measured on ML-100K: a step with Adam's rows split over two threads took
0.54 ms, the sequential step 0.46 ms), and a grid runs one cell per core anyway. So the numbers do not
depend on ``threads``.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit

_JIT = dict(cache=True, nogil=True, error_model="numpy")  # numpy error model: no division
# checks, so the loops vectorize


@njit(fastmath={"reassoc"}, **_JIT)
def residuals(P, Q, users, items, ratings, start, stop, errors):
    """errors[k] = p_u·q_i − r for the batch rows ``start:stop``; returns Σ e² in float64.
    ``reassoc`` lets the compiler sum each dot product in vector lanes."""
    total = 0.0
    for row in range(start, stop):
        p, q = P[users[row]], Q[items[row]]
        dot = np.float32(0.0)
        for f in range(p.shape[0]):
            dot += p[f] * q[f]
        err = dot - ratings[row]
        errors[row - start] = err
        total += np.float64(err) * np.float64(err)
    return total


@njit(**_JIT)
def accumulate(grad, ids, other, other_ids, start, stop, errors, scale, counts, touched):
    """grad[ids[r]] += scale·e_r·other[other_ids[r]] over the batch rows in batch order;
    counts the occurrences of each row and lists the rows touched (returns how many)."""
    n_touched = 0
    for row in range(start, stop):
        own = ids[row]
        if counts[own] == 0:
            touched[n_touched] = own
            n_touched += 1
        counts[own] += 1
        err = errors[row - start] * scale
        g, o = grad[own], other[other_ids[row]]
        for f in range(g.shape[0]):
            g[f] += err * o[f]
    return n_touched


@njit(**_JIT)
def add_l2(grad, table, counts, touched, n_touched, l2):
    """The per-element L2 term l2·c·table[row] on the touched rows (c = occurrences)."""
    for a in range(n_touched):
        own = touched[a]
        w = l2 * np.float32(counts[own])
        g, x = grad[own], table[own]
        for f in range(g.shape[0]):
            g[f] = g[f] + w * x[f]


@njit(**_JIT)
def adam(X, M, V, G, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, bias2_sqrt,
         eps):
    """Adam on every row of one table (torch's fused CPU formula, float32)."""
    for r in range(X.shape[0]):
        x, m, v, g = X[r], M[r], V[r], G[r]
        for f in range(x.shape[0]):
            grad = g[f]
            m_new = m[f] * beta1 + grad * one_minus_beta1
            v_new = v[f] * beta2 + grad * grad * one_minus_beta2
            m[f] = m_new
            v[f] = v_new
            x[f] = x[f] - step_size * m_new / (np.sqrt(v_new) / bias2_sqrt + eps)


@njit(**_JIT)
def clear(grad, counts, touched, n_touched):
    """Zero the touched rows of ``grad`` and their counts."""
    for a in range(n_touched):
        row = touched[a]
        counts[row] = 0
        grad[row, :] = 0.0


@njit(**_JIT)
def _epoch(P, Q, avg_p, avg_sq_p, avg_q, avg_sq_q, grad_p, grad_q, count_u, count_i,
           touched_u, touched_i, users, items, ratings, batch_size, reg, step_sizes,
           bias2_sqrts, beta1, beta2, eps, squared):
    n, dim = users.shape[0], P.shape[1]
    b1, b2 = np.float32(beta1), np.float32(beta2)
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    eps32 = np.float32(eps)
    errors = np.empty(batch_size, np.float32)
    for b in range(squared.shape[0]):
        start = b * batch_size
        stop = min(n, start + batch_size)
        count = stop - start
        squared[b] = residuals(P, Q, users, items, ratings, start, stop, errors)
        scale = np.float32(2.0 / count)
        l2 = np.float32(2.0 * reg / (count * dim))
        n_u = accumulate(grad_p, users, Q, items, start, stop, errors, scale, count_u,
                         touched_u)
        n_i = accumulate(grad_q, items, P, users, start, stop, errors, scale, count_i,
                         touched_i)
        add_l2(grad_p, P, count_u, touched_u, n_u, l2)
        add_l2(grad_q, Q, count_i, touched_i, n_i, l2)
        adam(P, avg_p, avg_sq_p, grad_p, step_sizes[b], b1, c1, b2, c2, bias2_sqrts[b], eps32)
        adam(Q, avg_q, avg_sq_q, grad_q, step_sizes[b], b1, c1, b2, c2, bias2_sqrts[b], eps32)
        clear(grad_p, count_u, touched_u, n_u)
        clear(grad_q, count_i, touched_i, n_i)


# ---------------------------------------------------------------- AT / RAT (shared-row APR)
# The epoch of ``defenses/apr_kernel.py``. It lives in this file because Numba's on-disk cache
# is invalidated per source file: a kernel in another file that inlines these helpers would
# keep stale machine code after this file changed.


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
def apr_epoch(P, Q, avg_p, avg_sq_p, avg_q, avg_sq_q, grad_p, grad_q, delta_p, delta_q,
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


# ------------------------------------------- PamaCF, VAT, SHARE (per-occurrence perturbation)
# The epoch of ``defenses/mf_adversarial.py`` (``adversarial_mf_epoch``): each batch row is
# perturbed along its own gradient, δp = s·q/‖q‖, δq = s·p/‖p‖ with s = ε_row·sign(e).
EPS_CONSTANT, EPS_USER_NORM, EPS_USER_LOSS = 0, 1, 2


@njit(**_JIT)
def _sigmoid(x):
    return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


@njit(**_JIT)
def occurrence_epoch(P, Q, avg_p, avg_sq_p, avg_q, avg_sq_q, grad_p, grad_q, row_p, row_q,
                     count_u, count_i, touched_u, touched_i, user_loss, users, items, ratings,
                     item_weight, weighted, item_l2, has_item_l2, batch_size, reg, eps,
                     eps_mode, adv_weight, step_sizes, bias2_sqrts, beta1, beta2, adam_eps,
                     clean_out, adv_out):
    n, dim = users.shape[0], P.shape[1]
    b1, b2 = np.float32(beta1), np.float32(beta2)
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    adam_eps32, eps32 = np.float32(adam_eps), np.float32(eps)
    w32 = np.float32(adv_weight)
    errors = np.empty(batch_size, np.float32)
    steps = np.empty(batch_size, np.float32)
    sq_user = np.empty(batch_size, np.float32)
    inv_p = np.empty(batch_size, np.float32)
    inv_q = np.empty(batch_size, np.float32)
    for b in range(clean_out.shape[0]):
        start = b * batch_size
        stop = min(n, start + batch_size)
        count = stop - start
        clean_out[b] = residuals(P, Q, users, items, ratings, start, stop, errors)
        sq_mean = np.float32(0.0)
        for row in range(start, stop):
            k = row - start
            p, q = P[users[row]], Q[items[row]]
            sp = np.float32(0.0)
            sq = np.float32(0.0)
            for f in range(dim):
                sp += p[f] * p[f]
                sq += q[f] * q[f]
            sq_user[k] = sp
            sq_mean += sp
            norm_p, norm_q = np.sqrt(sp), np.sqrt(sq)
            inv_p[k] = np.float32(1.0) / norm_p if norm_p > 0 else np.float32(0.0)
            inv_q[k] = np.float32(1.0) / norm_q if norm_q > 0 else np.float32(0.0)
            steps[k] = norm_p + norm_q  # kept until the step sizes are known
        sq_mean = max(sq_mean / np.float32(count), np.float32(1e-12))
        n_users_b = 0
        if eps_mode == EPS_USER_LOSS:
            for row in range(start, stop):
                u = users[row]
                if count_u[u] == 0:
                    touched_u[n_users_b] = u
                    n_users_b += 1
                    user_loss[u] = 0.0
                count_u[u] += 1
                user_loss[u] += errors[row - start] * errors[row - start]
            loss_mean = np.float32(0.0)
            for a in range(n_users_b):
                loss_mean += user_loss[touched_u[a]]
            loss_mean = loss_mean / np.float32(n_users_b)
            for a in range(n_users_b):
                count_u[touched_u[a]] = 0
        adv = 0.0
        coef = np.float32(2.0 / count)
        for row in range(start, stop):
            k = row - start
            e = errors[k]
            if eps_mode == EPS_CONSTANT:
                row_eps = eps32
            elif eps_mode == EPS_USER_NORM:
                row_eps = eps32 * np.float32(2.0) * _sigmoid(sq_user[k] / sq_mean - np.float32(1.0))
            else:
                ratio = loss_mean / max(user_loss[users[row]], np.float32(1e-12))
                row_eps = eps32 * np.float32(2.0) * _sigmoid(ratio - np.float32(1.0))
            sign = np.float32(1.0) if e > 0 else (np.float32(-1.0) if e < 0 else np.float32(0.0))
            step = row_eps * sign
            pred = e + ratings[row]
            e_adv = e + step * steps[k] + step * step * pred * inv_p[k] * inv_q[k]
            adv += np.float64(e_adv) * np.float64(e_adv)
            resid = coef * (e + w32 * e_adv)
            scale = coef * w32 * e_adv * step
            errors[k] = resid
            steps[k] = scale
        adv_out[b] = adv
        n_u = 0
        n_i = 0
        for row in range(start, stop):
            k = row - start
            u, i = users[row], items[row]
            if count_u[u] == 0:
                touched_u[n_u] = u
                n_u += 1
            if count_i[i] == 0:
                touched_i[n_i] = i
                n_i += 1
            count_u[u] += 1
            count_i[i] += 1
            w = item_weight[row] if weighted else np.float32(1.0)
            row_p[u] += steps[k] * inv_p[k]
            row_q[i] += (steps[k] * w) * inv_q[k]
            resid, resid_q = errors[k], errors[k] * w
            gp, gq, p, q = grad_p[u], grad_q[i], P[u], Q[i]
            for f in range(dim):
                gp[f] += resid * q[f]
            for f in range(dim):
                gq[f] += resid_q * p[f]
        l2 = np.float32(2.0 * reg / (count * dim))
        for a in range(n_u):
            u = touched_u[a]
            r = row_p[u] + l2 * np.float32(count_u[u])
            gp, p = grad_p[u], P[u]
            for f in range(dim):
                gp[f] = gp[f] + r * p[f]
            row_p[u] = 0.0
        for a in range(n_i):
            i = touched_i[a]
            r = row_q[i] + l2 * np.float32(count_i[i])
            if has_item_l2:
                r = r + coef * item_l2[i] * np.float32(count_i[i])
            gq, q = grad_q[i], Q[i]
            for f in range(dim):
                gq[f] = gq[f] + r * q[f]
            row_q[i] = 0.0
        adam(P, avg_p, avg_sq_p, grad_p, step_sizes[b], b1, c1, b2, c2, bias2_sqrts[b],
             adam_eps32)
        adam(Q, avg_q, avg_sq_q, grad_q, step_sizes[b], b1, c1, b2, c2, bias2_sqrts[b],
             adam_eps32)
        clear(grad_p, count_u, touched_u, n_u)
        clear(grad_q, count_i, touched_i, n_i)


class MFAdamKernel:
    """The per-trainer buffers of the kernel (gradient rows, counts), kept across epochs."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        self.grad_p = np.zeros((n_users, dim), np.float32)
        self.grad_q = np.zeros((n_items, dim), np.float32)
        self.count_u = np.zeros(n_users, np.int64)
        self.count_i = np.zeros(n_items, np.int64)
        self.touched_u = np.empty(n_users, np.int64)
        self.touched_i = np.empty(n_items, np.int64)

    def fits(self, n_users: int, n_items: int, dim: int) -> bool:
        return self.grad_p.shape == (n_users, dim) and self.grad_q.shape == (n_items, dim)

    def epoch(self, trainer, users, items, ratings, perm: torch.Tensor) -> float:
        """Train the trainer's MF tables (in place, with its Adam state) on rows ``perm`` of
        (users, items, ratings) in batches of ``cfg.batch_size``. Returns the sum of squared
        residuals."""
        size = trainer.cfg.batch_size
        n_batches = max(1, -(-len(perm) // size))
        squared = np.empty(n_batches, np.float64)
        arrays, schedule = adam_schedule(trainer, n_batches)
        _epoch(*arrays, self.grad_p, self.grad_q, self.count_u, self.count_i, self.touched_u,
               self.touched_i, *epoch_rows(users, items, ratings, perm), size,
               float(trainer.cfg.reg), *schedule, squared)
        return float(squared.sum())


def adam_schedule(trainer, n_batches: int) -> tuple[tuple, tuple]:
    """For the next ``n_batches`` steps of the trainer's fused Adam on its MF tables: P, Q and
    their moments as numpy views (updated in place), and (step sizes, √(bias correction 2)
    per step, β1, β2, ε) as the kernels take them. Advances Adam's step counters."""
    P, Q = trainer.model.user_emb, trainer.model.item_emb
    states = [trainer._adam_state(p) for p in (P, Q)]
    group = trainer.optimizer.param_groups[0]
    step_sizes, bias2_sqrts = adam_constants(states, n_batches, group["lr"], group["betas"])
    arrays = (P.detach().numpy(), Q.detach().numpy(), states[0]["exp_avg"].numpy(),
              states[0]["exp_avg_sq"].numpy(), states[1]["exp_avg"].numpy(),
              states[1]["exp_avg_sq"].numpy())
    beta1, beta2 = group["betas"]
    return arrays, (step_sizes, bias2_sqrts, float(beta1), float(beta2), float(group["eps"]))


def adam_constants(states: list[dict], n_batches: int, lr: float,
                   betas: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Adam's step size and √(bias correction 2) for the next ``n_batches`` steps, as torch's
    fused kernel computes them (in double from the step number, used as float32); advances
    the states' step counters."""
    beta1, beta2 = betas
    steps = float(states[0]["step"]) + np.arange(1, n_batches + 1, dtype=np.float64)
    for state in states:
        state["step"] += float(n_batches)
    return ((lr / (1.0 - beta1 ** steps)).astype(np.float32),
            np.sqrt(1.0 - beta2 ** steps).astype(np.float32))


def epoch_rows(users, items, ratings, perm: torch.Tensor) -> tuple:
    """The epoch's rows in batch order, one gather per array, so the kernel reads them
    sequentially (TCD's epochs have ~1.5 M rows, far beyond the caches: reading them through
    ``perm`` was measured 2× slower per step)."""
    return tuple(np.ascontiguousarray(t.index_select(0, perm).numpy(), dtype=dtype)
                 for t, dtype in ((users, np.int64), (items, np.int64),
                                  (ratings, np.float32)))
