"""Optimizers of the victim models, built by name from ``model.optimizer``.

``adadelta_sparse`` is Adadelta as TensorFlow 1 applies it to embedding lookups, which is how
the TCD authors' code trains (greensun0830/TCD, ``models/pure_SVD.py`` and ``co_SVD.py``:
``tf.train.AdadeltaOptimizer(20.)`` on a loss that reads the tables only through
``tf.nn.embedding_lookup``). Such a gradient is an ``IndexedSlices``, and TensorFlow applies it
with ``sparse_apply_adadelta``: only the rows in the batch have their two accumulators and
values updated; every other row is left exactly as it was. ``torch.optim.Adadelta`` (our
``adadelta``) is the dense update: a row absent from the batch has a zero gradient, which does
not move it but decays both of its accumulators by ρ every step. With ρ 0.95 and ≈ 45 batches
per ML-100K epoch, a row touched once an epoch arrives at its next step with accumulators
shrunk ~10×, so the dense form trains rarely rated items and users differently from the
authors' code. The arithmetic of a touched row is the same in both (TF1's kernel:
a ← ρa + (1−ρ)g², Δ = √(u + ε)/√(a + ε) · g, w ← w − lr·Δ, u ← ρu + (1−ρ)Δ²).
"""
from __future__ import annotations

import torch


class SparseRowAdadelta(torch.optim.Optimizer):
    """Adadelta whose ``row_sparse`` parameter groups update only the rows with a gradient.

    A row of a row-sparse (2-D) parameter counts as in the batch when any entry of its
    gradient is non-zero: a row looked up in the batch gets the residual terms and the L2 term
    of its own embedding, which are zero together only on a set of measure zero; a row not
    looked up gets exactly zero. Groups without ``row_sparse`` are plain dense Adadelta (what
    TensorFlow does for dense variables such as an MLP's weights).
    """

    def __init__(self, params, lr: float = 1.0, rho: float = 0.95, eps: float = 1e-8,
                 row_sparse: bool = True) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, row_sparse=row_sparse))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                    state["acc_delta"] = torch.zeros_like(p)
                square_avg, acc_delta = state["square_avg"], state["acc_delta"]
                # Rows outside the batch keep both accumulators: their decay factor is 1 and
                # their gradient 0, so a ← 1·a + 0 and Δ = 0 (TF1's sparse_apply_adadelta).
                decay = rho
                if group["row_sparse"] and p.dim() == 2:
                    decay = torch.where(g.ne(0).any(dim=1, keepdim=True), rho, 1.0)
                square_avg.mul_(decay).addcmul_(g, g, value=1 - rho)
                delta = acc_delta.add(eps).sqrt_().div_(square_avg.add(eps).sqrt_()).mul_(g)
                p.add_(delta, alpha=-lr)
                acc_delta.mul_(decay).addcmul_(delta, delta, value=1 - rho)
        return loss


def make_optimizer(params, cfg, lookup_tables=()) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, over ``params``; ``lookup_tables`` are the
    embedding tables read by lookup (updated row-sparsely by ``adadelta_sparse``)."""
    params = list(params)
    if cfg.optimizer == "adam":
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.Adam(params, lr=cfg.lr, fused=fused)
    # TensorFlow 1's AdadeltaOptimizer defaults (rho 0.95, epsilon 1e-8), which the TCD authors'
    # code runs with lr 20 (model.profile: tcd_authors); torch's own defaults (0.9, 1e-6) take
    # ~10× larger first steps.
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, rho=0.95, eps=1e-8)
    if cfg.optimizer == "adadelta_sparse":
        tables = {id(p) for p in lookup_tables}
        groups = [{"params": [p for p in params if id(p) in tables], "row_sparse": True},
                  {"params": [p for p in params if id(p) not in tables], "row_sparse": False}]
        return SparseRowAdadelta([g for g in groups if g["params"]], lr=cfg.lr, rho=0.95,
                                 eps=1e-8)
    return torch.optim.SGD(params, lr=cfg.lr)
