"""A hand-derived adversarial-training epoch for explicit MF (the APR step of
``defenses/adversarial.py``, without autograd).

For a batch row b with user row p, item row q, rating r and residual e = p·q − r, the
gradient-direction perturbation of ``AdversarialTrainer`` is δp = s · q/‖q‖, δq = s · p/‖p‖ with
s = ε_b · sign(e) (the clean-loss gradient (2/B) e q, normalized per row). Every quantity of
the perturbed loss is then a per-row scalar:

    e' = (p + δp)·(q + δq) − r = e + s (‖p‖ + ‖q‖) + s² (p·q) / (‖p‖ ‖q‖)
    ∂/∂p [e² + w e'²] (δ held fixed) = 2 (e + w e') q + 2 w e' s p/‖p‖     (and symmetrically q)

so the table gradients are one sparse residual matrix times the other table, plus a per-row
rescaling of the table itself — the same sparse products as ``Trainer.fast_epoch``, no
(B × d) gathers and no graph. The L2 penalty applies to the clean rows only, as in the autograd
step; δ is treated as a constant (detached), as there.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.nn.functional import pad

from models.base import declares
from models.mf_kernel import (EPS_CONSTANT, MFAdamKernel, adam_schedule, epoch_rows,
                              occurrence_epoch)

from .adversarial import AdversarialTrainer

# Per-row ε from (the batch rows' users, their squared user-row norms, the clean residuals).
RowEps = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class EpochLayout:
    """The CSR layouts of every mini-batch of one shuffled epoch, built once.

    Batches are ``randperm(n).split(batch_size)``, the order ``Trainer.batches`` draws, so the
    autograd step and this one see identical batches from the same generator state.
    """

    def __init__(self, users, items, ratings, n_users: int, n_items: int, batch_size: int,
                 generator: torch.Generator, device: torch.device,
                 item_weight: torch.Tensor | None = None) -> None:
        n = len(users)
        perm = torch.randperm(n, generator=generator).to(device)
        u, i, r = users[perm], items[perm], ratings[perm]
        w = item_weight[perm] if item_weight is not None else None
        self.n, self.size = n, batch_size
        self.n_users, self.n_items = n_users, n_items
        self.n_batches = (n + batch_size - 1) // batch_size
        batch = torch.arange(n, device=device) // batch_size
        by_user = torch.argsort(batch * n_users + u, stable=True)
        by_item = torch.argsort(batch * n_items + i, stable=True)
        rank_in_user = torch.empty_like(by_user)
        rank_in_user[by_user] = torch.arange(n, device=device)
        self.item_to_user = rank_in_user[by_item]
        cnt_u = torch.bincount(batch * n_users + u, minlength=self.n_batches * n_users)
        cnt_i = torch.bincount(batch * n_items + i, minlength=self.n_batches * n_items)
        cnt_u = cnt_u.view(self.n_batches, n_users)
        cnt_i = cnt_i.view(self.n_batches, n_items)
        self.crow_u = pad(cnt_u.cumsum(1), (1, 0))
        self.crow_i = pad(cnt_i.cumsum(1), (1, 0))
        # The L2 term counts every row, distrusted ones included: an item whose support is
        # distrusted decays instead of keeping what those rows gave it before.
        self.cnt_u, self.cnt_i = cnt_u, cnt_i
        # Entries in the by-user order of each batch: their user, item and rating.
        self.users, self.items, self.ratings = u[by_user], i[by_user], r[by_user]
        self.item_users = u[by_item]
        self.item_weight = w[by_user] if w is not None else None

    def bounds(self, b: int) -> tuple[int, int]:
        return b * self.size, min((b + 1) * self.size, self.n)


@torch.no_grad()
def adversarial_mf_epoch(trainer, users, items, ratings, row_eps: RowEps,
                         adv_weight: float,
                         item_weight: torch.Tensor | None = None,
                         item_l2: torch.Tensor | None = None) -> tuple[float, float]:
    """One epoch of MF + squared error + w · (perturbed squared error); returns the epoch's
    clean and perturbed mean squared errors. ``trainer`` supplies the model, config,
    generator and the fused Adam update (``Trainer._adam_step``).

    ``item_weight`` (per row, optional) scales each row's contribution to the *item* table's
    loss gradient (the L2 term still counts it) while the user side is untouched: SHARE's
    elimination gives the rows it distrusts weight 0 there, so they still personalize their own
    user but no longer move the items every user shares. ``item_l2`` (per item, optional) adds
    λ_i ‖q_i‖² per occurrence of item i to the batch loss, beside the per-element L2: SHARE's
    count-aware item prior. ``row_eps`` returning zeros with ``adv_weight`` 0 and no
    ``item_l2`` gives plain training (the same mathematics as ``Trainer.fast_epoch``)."""
    model = trainer.model
    P, Q = model.user_emb, model.item_emb
    dim = P.shape[1]
    lay = EpochLayout(users, items, ratings, P.shape[0], Q.shape[0], trainer.cfg.batch_size,
                      trainer.generator, trainer.device, item_weight)
    reg = trainer.cfg.reg
    clean_total = torch.zeros((), dtype=torch.float64, device=trainer.device)
    adv_total = torch.zeros_like(clean_total)
    for b in range(lay.n_batches):
        lo, hi = lay.bounds(b)
        count = hi - lo
        bu, bi, br = lay.users[lo:hi], lay.items[lo:hi], lay.ratings[lo:hi]
        pattern = torch.sparse_csr_tensor(lay.crow_u[b], bi, -br, size=(lay.n_users, lay.n_items),
                                          check_invariants=False)
        err = torch.sparse.sampled_addmm(pattern, P, Q.T).values()
        pred = err + br
        sq_p = P.pow(2).sum(1)
        sq_q = Q.pow(2).sum(1)
        norm_p, norm_q = sq_p.sqrt()[bu], sq_q.sqrt()[bi]
        inv_p = torch.where(norm_p > 0, 1.0 / norm_p.clamp_min(1e-12), torch.zeros_like(norm_p))
        inv_q = torch.where(norm_q > 0, 1.0 / norm_q.clamp_min(1e-12), torch.zeros_like(norm_q))
        step = row_eps(bu, sq_p[bu], err) * torch.sign(err)
        err_adv = err + step * (norm_p + norm_q) + step * step * pred * inv_p * inv_q
        clean_total += torch.dot(err, err).double()
        adv_total += torch.dot(err_adv, err_adv).double()
        coef = 2.0 / count
        resid = coef * (err + adv_weight * err_adv)
        scale_rows = coef * adv_weight * err_adv * step
        l2 = 2.0 * reg / (count * dim)
        row_p = torch.zeros(lay.n_users, dtype=P.dtype, device=P.device)
        row_p.index_add_(0, bu, scale_rows * inv_p)
        row_q = torch.zeros(lay.n_items, dtype=Q.dtype, device=Q.device)
        resid_q = resid
        if lay.item_weight is not None:
            w = lay.item_weight[lo:hi]
            scale_rows_q, resid_q = scale_rows * w, resid * w
        else:
            scale_rows_q = scale_rows
        row_q.index_add_(0, bi, scale_rows_q * inv_q)
        row_p += l2 * lay.cnt_u[b].to(P.dtype)
        row_q += l2 * lay.cnt_i[b].to(Q.dtype)
        if item_l2 is not None:
            row_q += (2.0 / count) * item_l2 * lay.cnt_i[b].to(Q.dtype)
        e_user = torch.sparse_csr_tensor(lay.crow_u[b], bi, resid,
                                         size=(lay.n_users, lay.n_items), check_invariants=False)
        e_item = torch.sparse_csr_tensor(lay.crow_i[b], lay.item_users[lo:hi],
                                         resid_q[lay.item_to_user[lo:hi] - lo],
                                         size=(lay.n_items, lay.n_users), check_invariants=False)
        grad_p = torch.addcmul(e_user @ Q, row_p.unsqueeze(1), P)
        grad_q = torch.addcmul(e_item @ P, row_q.unsqueeze(1), Q)
        trainer._adam_step([P, Q], [grad_p, grad_q])
    n = max(lay.n, 1)
    return float(clean_total) / n, float(adv_total) / n


class OccurrenceAPRKernel(MFAdamKernel):
    """:func:`adversarial_mf_epoch` as one compiled loop (``models.mf_kernel.occurrence_epoch``,
    issue 18): the same mathematics for the three ε rules of the defenses that use it —
    constant (SHARE without ``personalized``), the user-row norm rule (PamaCF, SHARE) and the
    user-loss rule (VAT) — with SHARE's item weights and item prior; equal to the PyTorch form
    to float32 round-off (``tests/test_speed_equivalence.py``)."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__(n_users, n_items, dim)
        self.row_p = np.zeros(n_users, np.float32)
        self.row_q = np.zeros(n_items, np.float32)
        self.user_loss = np.zeros(n_users, np.float32)

    def adversarial_epoch(self, trainer, users, items, ratings, perm: torch.Tensor,
                          eps: float, eps_mode: int, adv_weight: float,
                          item_weight: torch.Tensor | None,
                          item_l2: torch.Tensor | None) -> float:
        """One epoch on rows ``perm`` of (users, items, ratings) (the trainer's MF tables and
        Adam state); returns the epoch's clean mean squared error."""
        size = trainer.cfg.batch_size
        n_batches = max(1, -(-len(perm) // size))
        weights = (np.ascontiguousarray(item_weight.index_select(0, perm).numpy(),
                                        dtype=np.float32)
                   if item_weight is not None else np.zeros(0, np.float32))
        prior = (np.ascontiguousarray(item_l2.numpy(), dtype=np.float32)
                 if item_l2 is not None else np.zeros(0, np.float32))
        arrays, schedule = adam_schedule(trainer, n_batches)
        clean = np.empty(n_batches, np.float64)
        adv = np.empty(n_batches, np.float64)
        occurrence_epoch(*arrays, self.grad_p, self.grad_q, self.row_p, self.row_q,
                         self.count_u, self.count_i, self.touched_u, self.touched_i,
                         self.user_loss, *epoch_rows(users, items, ratings, perm), weights,
                         item_weight is not None, prior, item_l2 is not None, size,
                         float(trainer.cfg.reg), float(eps), int(eps_mode), float(adv_weight),
                         *schedule, clean, adv)
        return float(clean.sum()) / max(len(perm), 1)


def norm_scaled_row_eps(eps: float) -> RowEps:
    """PamaCF's ε_u = ε · 2 · sigmoid(‖p_u‖² / mean_batch ‖p‖² − 1) for every row of a batch."""
    def row_eps(users: torch.Tensor, user_sq_norms: torch.Tensor,
                err: torch.Tensor) -> torch.Tensor:
        mean = user_sq_norms.mean().clamp_min(1e-12)
        return eps * 2.0 * torch.sigmoid(user_sq_norms / mean - 1.0)
    return row_eps


def no_perturbation(users, user_sq_norms, err):
    return torch.zeros_like(user_sq_norms)


class HandDerivedAdversarialTrainer(AdversarialTrainer):
    """The adversarial trainer with :func:`adversarial_mf_epoch` as its epoch wherever that is
    the same mathematics: explicit MF, gradient direction, one δ per occurrence (PamaCF, VAT,
    SHARE). The defense supplies ``mf_row_eps(trainer, users, user_sq_norms, err)``; anything
    else takes the parent's epoch (AT/RAT's shared rows on MF: the compiled epoch of
    ``defenses/apr_kernel.py``; other models and implicit feedback: the autograd step).

    ``item_weight`` (per row of the data passed to ``train_epoch``, or None) is forwarded to
    the epoch (SHARE's elimination from the item side).
    """

    item_weight: torch.Tensor | None = None
    item_l2: torch.Tensor | None = None   # per item, extra L2 per occurrence (SHARE's prior)
    pairwise_ready = True   # BPR: the parent's pairwise_step (train_epoch defers to it)

    def hand_derived(self) -> bool:
        return (declares(self.model, "compiled_fast_path") and self.feedback == "explicit"
                and self.direction == "gradient" and not self.shared_rows
                and hasattr(self.defense, "mf_row_eps"))

    def compiled_occurrence_applies(self) -> bool:
        """The compiled form of :func:`adversarial_mf_epoch`: fused Adam on CPU, and a defense
        that names its ε rule (``mf_eps_mode``) in the class that defines its ``mf_row_eps``
        (a subclass that redefines the rule alone keeps the PyTorch form)."""
        defense = type(self.defense)
        if not (self._compiled_kernel_applies() and hasattr(defense, "mf_eps_mode")):
            return False

        def owner(name):
            return next(k for k in defense.__mro__ if name in vars(k))
        return owner("mf_eps_mode") is owner("mf_row_eps")

    def train_epoch(self, data) -> float:
        if not self.hand_derived():
            return super().train_epoch(data)
        users, items, ratings = self._tensors(data)
        if self.compiled_occurrence_applies() and (self.adversarial_active()
                                                   or self.item_weight is not None
                                                   or self.item_l2 is not None):
            active = self.adversarial_active()
            perm = torch.randperm(len(users), generator=self.generator).to(self.device)
            loss = self.compiled_buffers(OccurrenceAPRKernel).adversarial_epoch(
                self, users, items, ratings, perm, self.eps if active else 0.0,
                self.defense.mf_eps_mode(self) if active else EPS_CONSTANT,
                self.adv_weight if active else 0.0, self.item_weight, self.item_l2)
        elif self.adversarial_active():
            def row_eps(batch_users, sq, err):
                return self.defense.mf_row_eps(self, batch_users, sq, err)
            loss, _ = adversarial_mf_epoch(self, users, items, ratings, row_eps,
                                           self.adv_weight, self.item_weight, self.item_l2)
        elif self.item_weight is not None or self.item_l2 is not None:
            loss, _ = adversarial_mf_epoch(self, users, items, ratings, no_perturbation, 0.0,
                                           self.item_weight, self.item_l2)
        else:
            loss = self.fast_epoch(users, items, ratings)
        return self.finish_epoch(loss, "lower model.lr or the defense's eps")

    @torch.no_grad()
    def validate(self, val) -> float:
        if self.hand_derived():
            users, items, ratings = self._tensors(val)
            if len(users) == 0:
                return float("nan")
            return self._fast_val_mse(val, users, items, ratings)
        return super().validate(val)
