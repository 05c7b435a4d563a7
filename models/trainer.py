"""Training loop shared by every defense: fit, train an epoch, validate, keep the best epoch.

Model selection uses the validation data only (never the test set), through
``models.selection.BestEpochSelector`` like TCD and SHARE. ``Trainer.train_step`` is the
autograd step any model supports and that defenses override to add adversarial terms;
``Trainer.fast_epoch`` is a hand-derived gradient path for plain explicit MF (the hot loop of
Origin, Attack, TCD and the attacks' surrogates): no autograd graph, the same mathematics as the
straightforward loop (see benchmarks/). With Adam it runs the whole epoch as one compiled loop
(``models.mf_kernel``); with other optimizers, as sparse products and one optimizer step per
batch.

Implicit feedback (protocol.md §2–3, the NDSS protocol): every training row is a positive; each
epoch draws ``negatives_per_positive`` (4) fresh negatives per positive, uniformly over the items
the user has no positive for (vectorized rejection sampling), and the loss is BCE on the model's
logit. Model selection is by validation HR@``val_k`` (10, the NDSS K): each held-out validation
positive is ranked among the items the user has neither trained on nor holds out, and the
selection value is −HR (lower is better, like the explicit validation MSE). A model whose loss is
``bpr`` (``model.loss``; LightGCN's) trains with one sampled negative per positive instead
(``models/bpr.py``), validated the same way.

The implicit top-K protocol (``split.mode: ratio``, which sets ``model.select_recall_k`` to
``evaluation.test_k``) selects instead on validation Recall@K: every item is ranked for each
user with validation rows, the user's training positives masked, and Recall = the share of
the user's validation items ranked < K (pessimistic ranks), averaged over those users
(``utils/topk_metrics.py``); the selection value is −Recall. Every defense that validates
through ``Trainer.validate`` (``Trainer.fit``, TCD) selects so.
"""
from __future__ import annotations

import warnings
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from data.ratings import Interactions, RatingScale
from utils.topk_metrics import capped_ranks, recall_ndcg_from_ranks

from .base import declares
from .bpr import bpr_epoch
from .mf import BatchLayout
from .mf_kernel import MFAdamKernel
from .optimizers import make_optimizer
from .selection import BestEpochSelector

# Sparse CSR support is marked beta; the products used here are stable and tested.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


DENSE_MASK_CELLS = 1 << 27  # implicit negatives: largest users × items boolean mask (bytes)

_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed blocks of up to 32 MB for reuse (once per process).

    The training epochs allocate and free the same large arrays again and again (TCD: ~20
    arrays of 1.5 M rows per model-epoch, each several MB). By default glibc serves blocks
    above a moving threshold with fresh ``mmap`` pages and returns freed heap tops to the
    system, so every new array pays one page fault per 4 KB page: measured at a third of
    TCD's wall time on ML-100K. Raising the mmap threshold to its maximum and never trimming
    keeps those pages in the process; what is computed does not change. Off with
    ``ROBUSTREC_MALLOPT=0``; a no-op where glibc is not the allocator.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    import os
    import sys
    if not sys.platform.startswith("linux") or os.environ.get("ROBUSTREC_MALLOPT") == "0":
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)   # M_MMAP_THRESHOLD: glibc's maximum, 32 MB
        libc.mallopt(-1, 2**31 - 1)          # M_TRIM_THRESHOLD: never give the heap back
    except (OSError, AttributeError):
        pass


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the cell stops with this error."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class FitResult:
    best_epoch: int
    best_val: float
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    """Trains one model on explicit (squared error) or implicit feedback.

    Parameters are the model, the ``ModelConfig``, the rating scale and a torch generator that
    drives shuffling and negative sampling (so the run is reproducible from the master seed).
    """

    negatives_per_positive: int = 4   # implicit feedback: NDSS / NCF's 4 negatives per positive
    val_k: int = 10                   # implicit feedback: K of the validation HR (NDSS HR@10)
    # Explicit MF fast path: True = CSR × dense products for E Q and Eᵀ P, False = gather and
    # index_add; None = by table size (see fast_epoch). Both give the same numbers.
    sparse_products: bool | None = None
    # Explicit MF fast path with Adam: True = the compiled epoch of ``models.mf_kernel`` (the
    # same mathematics, summed in another order: equal to float32 round-off); False = the
    # PyTorch form below it.
    compiled_kernel: bool = True

    def __init__(self, model: nn.Module, cfg, scale: RatingScale, generator: torch.Generator,
                 device: torch.device | str = "cpu", feedback: str = "explicit") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.cfg = cfg
        self.scale = scale
        self.generator = generator
        self.feedback = feedback
        if feedback not in ("explicit", "implicit"):
            raise ValueError(f"feedback '{feedback}' is unknown; use explicit or implicit")
        self.optimizer = make_optimizer(self.model.parameters(), cfg,
                                        lookup_tables=self.model.lookup_tables())
        keep_freed_memory()
        self.epoch = 0
        self._seen = None  # implicit: the last epoch's positives, masked in validation

    # ------------------------------------------------------------------ losses and steps
    def sample_losses(self, pred, ratings) -> torch.Tensor:
        """Per-row loss: squared error (explicit) or BCE on the logit ``pred`` (implicit)."""
        if self.feedback == "implicit":
            return F.binary_cross_entropy_with_logits(pred, ratings, reduction="none")
        return (pred - ratings).pow(2)

    def batch_loss(self, users, items, ratings, embs=None) -> torch.Tensor:
        """Squared error (explicit) or BCE (implicit) + TCD's per-element L2 on the batch
        embeddings."""
        if embs is None:
            embs = self.model.embed(users, items)
        pred = self.model.head(embs, users, items)
        return (self.sample_losses(pred, ratings).mean()
                + self.cfg.reg * self.model.reg_loss(embs))

    def train_step(self, users, items, ratings) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.batch_loss(users, items, ratings)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def uses_fast_path(self) -> bool:
        """Plain MF with squared error has a hand-derived gradient; subclasses that change the
        step (adversarial defenses) switch it off by overriding ``train_step``."""
        return (declares(self.model, "compiled_fast_path") and self.feedback == "explicit"
                and type(self).train_step is Trainer.train_step
                and type(self).batch_loss is Trainer.batch_loss)

    def uses_manual_step(self) -> bool:
        """Models with a hand-derived gradient (``loss_and_grads``, e.g. NCF) use it when the
        step and loss are the trainer's own."""
        return (hasattr(self.model, "loss_and_grads")
                and type(self).train_step is Trainer.train_step
                and type(self).batch_loss is Trainer.batch_loss
                and type(self).sample_losses is Trainer.sample_losses)

    @torch.no_grad()
    def manual_epoch(self, users, items, ratings) -> float:
        """One epoch with the model's hand-derived gradient and fused Adam updates: the batches
        of ``self.batches``, gathered once and sliced as views; gradient buffers and Adam's
        state lists set up once per epoch, not per step (the state stays Adam's own)."""
        params = list(self.model.parameters())
        if getattr(self, "_grad_buffers", None) is None:
            self._grad_buffers = [torch.zeros_like(p) for p in params]
        grads = self._grad_buffers
        perm = torch.randperm(len(users), generator=self.generator).to(self.device)
        users, items, ratings = (a.index_select(0, perm) for a in (users, items, ratings))
        opt = self.optimizer
        fused = isinstance(opt, torch.optim.Adam) and opt.defaults.get("fused")
        if fused:
            states = [self._adam_state(p) for p in params]
            steps = [s["step"] for s in states]
            avg, avg_sq = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            group = opt.param_groups[0]
            beta1, beta2 = group["betas"]
        n, size, reg = len(users), self.cfg.batch_size, self.cfg.reg
        if n == 0:
            return 0.0
        # Per-step work is all the model's kernels: batch views, Adam's step numbers (the
        # values the per-step increment gives) and the loss slots are set up once per epoch.
        batches = list(zip(users.split(size), items.split(size), ratings.split(size)))
        if fused:
            counts = torch.arange(1, len(batches) + 1, dtype=torch.float32, device=self.device)
            step_rows = list(zip(*[(s + counts).unbind(0) for s in steps]))
        losses = []
        for b, (bu, bi, br) in enumerate(batches):
            losses.append(self.model.loss_and_grads(bu, bi, br, reg, grads))
            if fused:
                torch._fused_adam_(params, grads, avg, avg_sq, [], list(step_rows[b]),
                                   lr=group["lr"], beta1=beta1, beta2=beta2,
                                   weight_decay=group["weight_decay"], eps=group["eps"],
                                   amsgrad=False, maximize=False)
            else:
                self._adam_step(params, grads)
        if fused:
            for step, last in zip(steps, step_rows[-1]):
                step.copy_(last)
        # loss × batch rows in float32, summed in order in float64: as a running total would.
        sizes = torch.tensor([len(bu) for bu, _, _ in batches], dtype=torch.float32)
        weighted = torch.stack(losses).float() * sizes.to(self.device)
        total = 0.0
        for value in weighted.double().tolist():
            total += value
        return total / n

    def _adam_state(self, p: torch.Tensor) -> dict:
        state = self.optimizer.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        return state

    def batches(self, n: int):
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        return perm.split(self.cfg.batch_size)

    def train_epoch(self, data: Interactions | tuple) -> float:
        users, items, ratings = self._tensors(data)
        if self.feedback == "implicit":
            positive = ratings > 0
            self._seen = (users[positive], items[positive])
            if getattr(self.model, "loss", None) == "bpr":   # the model's own pairwise loss
                check_pairwise_trainer(self)
                return self.finish_epoch(bpr_epoch(self, *self._seen),
                                         "lower model.lr or check the input ratings")
            users, items, ratings = self.with_negatives(users, items, ratings)
        if self.uses_fast_path():
            loss = self.fast_epoch(users, items, ratings)
        elif self.uses_manual_step():
            self.model.train()
            loss = self.manual_epoch(users, items, ratings)
        else:
            self.model.train()
            total, count = 0.0, 0
            for idx in self.batches(len(users)):
                total += self.train_step(users[idx], items[idx], ratings[idx]) * len(idx)
                count += len(idx)
            loss = total / max(count, 1)
        return self.finish_epoch(loss, "lower model.lr or check the input ratings")

    def finish_epoch(self, loss: float, fix: str) -> float:
        """Count the epoch; a non-finite loss stops training with ``fix`` as the advice."""
        self.epoch += 1
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"non-finite training loss at epoch {self.epoch}; {fix}")
        return loss

    @torch.no_grad()
    def with_negatives(self, users, items, ratings):
        """Implicit feedback: append ``negatives_per_positive`` negatives (rating 0) per
        positive row, each uniform over the items its user has no positive for; redrawn on
        every call (every epoch). Rows already labelled 0 are kept as given."""
        n_items = self.model.n_items
        positive = ratings > 0
        pos_users = users[positive]
        pos_keys = pos_users * n_items + items[positive]
        n_cells = self.model.n_users * n_items
        # A positive cell is found by one lookup in a users × items mask when that fits in
        # DENSE_MASK_CELLS bytes (ML-1M: 22 MB), else by binary search in the sorted keys;
        # both give the same clashes.
        dense = n_cells <= DENSE_MASK_CELLS
        if dense:
            mask = torch.zeros(n_cells, dtype=torch.bool, device=self.device)
            mask[pos_keys] = True
        else:
            taken = torch.unique(pos_keys)  # sorted
        neg_users = pos_users.repeat(self.negatives_per_positive)
        gen_device = self.generator.device
        neg_items = torch.randint(n_items, (len(neg_users),), generator=self.generator,
                                  device=gen_device).to(self.device)
        todo = torch.arange(len(neg_users), device=self.device)
        for _ in range(100):  # each round redraws only the clashes; a few rounds suffice
            keys = neg_users[todo] * n_items + neg_items[todo]
            if dense:
                clash = mask[keys]
            else:
                at = torch.searchsorted(taken, keys).clamp_(max=max(len(taken) - 1, 0))
                clash = (taken[at] == keys if len(taken)
                         else torch.zeros_like(keys, dtype=torch.bool))
            todo = todo[clash]
            if len(todo) == 0:
                break
            neg_items[todo] = torch.randint(n_items, (len(todo),), generator=self.generator,
                                            device=gen_device).to(self.device)
        keep = torch.ones(len(neg_users), dtype=torch.bool, device=self.device)
        keep[todo] = False  # users with (almost) every item positive: drop what still clashes
        return (torch.cat([users, neg_users[keep]]), torch.cat([items, neg_items[keep]]),
                torch.cat([ratings, ratings.new_zeros(int(keep.sum()))]))

    @torch.no_grad()
    def fast_epoch(self, users, items, ratings) -> float:
        """One epoch of MF + squared error with gradients written by hand, as sparse products.

        For a batch of size B and dimension d, let E be the users × items sparse matrix of the
        batch residuals e = p_u·q_i − r. Then ∂L/∂P = (2/B) E Q + (2 reg / (B d)) c_u p_u and
        ∂L/∂Q = (2/B) Eᵀ P + (2 reg / (B d)) c_i q_i, with c the number of times a row occurs in
        the batch: exactly the gradient autograd computes for embedding lookups, obtained with
        one sampled dense-dense product and two sparse-dense products instead of gathers and
        scatters of B × d rows.

        Why it is laid out this way (issue 18): TCD runs ~80 k of these steps per ML-100K cell
        on epochs of ~1.5 M rows, so the cost is per-step and per-epoch overhead, not
        arithmetic. Everything that does not depend on the parameters — the CSR layouts of
        every batch, the row counts, Adam's step numbers — is built once per epoch with
        whole-epoch tensor operations (``models.mf.BatchLayout``) and split into per-batch
        views by one call per array; a step is then about fifteen kernel calls, and the fused
        Adam kernel reads the precomputed step numbers instead of incrementing a counter.
        Every product is summed in the same order as before, so the numbers are bit-identical
        to the straightforward version of this loop (tests/test_speed_equivalence.py pins
        them); ``keep_freed_memory`` removes the page faults of the per-step temporaries.

        With Adam on float32 CPU tables (the default) the epoch runs instead as one compiled
        loop (``models.mf_kernel``, ~2× faster per step, no per-epoch layout): the same
        mathematics summed in another order, equal to this form to float32 round-off.
        ``compiled_kernel = False`` selects this form.
        """
        P, Q = self.model.user_emb, self.model.item_emb
        n_users, n_items, dim = P.shape[0], Q.shape[0], P.shape[1]
        n, size = len(users), self.cfg.batch_size
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        if n == 0:
            return 0.0
        opt = self.optimizer
        fused = isinstance(opt, torch.optim.Adam) and opt.defaults.get("fused")
        if self._compiled_kernel_applies():
            return self.compiled_buffers(MFAdamKernel).epoch(self, users, items, ratings,
                                                             perm) / n
        lay = BatchLayout(users, items, ratings, perm, size, n_users, n_items)
        grads = getattr(self, "_fast_grads", None)
        if grads is None or grads[0].shape != P.shape or grads[1].shape != Q.shape:
            grads = self._fast_grads = [torch.empty_like(P), torch.empty_like(Q)]
        grad_p, grad_q = grads
        if fused:
            states = [self._adam_state(p) for p in (P, Q)]
            avg, avg_sq = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            # Adam's step counter after each batch: the values the per-step increment gives.
            counts = torch.arange(1, lay.n_batches + 1, dtype=torch.float32, device=self.device)
            step_lists = [(s["step"] + counts).unbind(0) for s in states]
            group = opt.param_groups[0]
            beta1, beta2 = group["betas"]
            adam = dict(lr=group["lr"], beta1=beta1, beta2=beta2,
                        weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                        maximize=False)
        sq = torch.empty(lay.n_batches, dtype=P.dtype, device=self.device)
        sq_views = sq.unbind(0)
        reg, Qt = self.cfg.reg, Q.T
        # Gathered embedding rows of a batch: the terms of E Q and Eᵀ P before they are summed.
        q_rows = P.new_empty((min(size, n), dim))
        p_rows = P.new_empty((min(size, n), dim))
        # E Q and Eᵀ P two ways, bit for bit the same numbers (the products summed in the same
        # order): CSR × dense products (fewest calls, best on small tables such as ML-100K's)
        # or gather · scale · index_add into persistent buffers (the products allocate and
        # fill a table-sized result per call; measured ~12 % faster per epoch on ML-1M-sized
        # tables). ``sparse_products`` forces one.
        spmm = self.sparse_products
        if spmm is None:
            spmm = n_users + n_items <= 2 * size
        for b, (crow_u, rows_u, cols_u, neg_r, cnt_u, crow_i, rows_i, cols_i, i2u,
                cnt_i) in enumerate(zip(*lay.per_batch())):
            count = len(cols_u)
            pattern = torch.sparse_csr_tensor(crow_u, cols_u, neg_r, size=(n_users, n_items),
                                              check_invariants=False)
            e_user = torch.sparse.sampled_addmm(pattern, P, Qt)
            err = e_user.values()
            torch.dot(err, err, out=sq_views[b])
            err.mul_(2.0 / count)
            l2 = 2.0 * reg / (count * dim)
            err_item = err.index_select(0, i2u)
            if spmm:
                e_item = torch.sparse_csr_tensor(crow_i, cols_i, err_item,
                                                 size=(n_items, n_users), check_invariants=False)
                step_grads = [torch.addcmul(e_user @ Q, cnt_u, P, value=l2),
                              torch.addcmul(e_item @ P, cnt_i, Q, value=l2)]
            else:
                qb, pb = q_rows[:count], p_rows[:count]
                torch.index_select(Q, 0, cols_u, out=qb).mul_(err.unsqueeze(1))
                torch.index_select(P, 0, cols_i, out=pb).mul_(err_item.unsqueeze(1))
                grad_p.zero_().index_add_(0, rows_u, qb).addcmul_(cnt_u, P, value=l2)
                grad_q.zero_().index_add_(0, rows_i, pb).addcmul_(cnt_i, Q, value=l2)
                step_grads = grads
            if fused:
                torch._fused_adam_([P, Q], step_grads, avg, avg_sq, [],
                                   [step_lists[0][b], step_lists[1][b]], **adam)
            else:
                self._adam_step([P, Q], [g.clone() for g in step_grads])
        if fused:
            for state, steps in zip(states, step_lists):
                state["step"].copy_(steps[-1])
        total = 0.0
        for value in sq.double().tolist():  # in order, in float64: the per-step accumulation
            total += value
        return total / n

    def compiled_buffers(self, kind: type):
        """The buffers of compiled epoch ``kind`` (``MFAdamKernel`` or a subclass) for this
        model's tables, kept across epochs."""
        kernels = self.__dict__.setdefault("_compiled", {})
        P, Q = self.model.user_emb, self.model.item_emb
        kernel = kernels.get(kind)
        if kernel is None or not kernel.fits(P.shape[0], Q.shape[0], P.shape[1]):
            kernel = kernels[kind] = kind(P.shape[0], Q.shape[0], P.shape[1])
        return kernel

    def _compiled_kernel_applies(self) -> bool:
        """The compiled epoch (``models.mf_kernel``) covers MF with plain fused Adam on float32
        CPU tables."""
        opt = self.optimizer
        if not (isinstance(opt, torch.optim.Adam) and opt.defaults.get("fused")):
            return False
        group = opt.param_groups[0]
        P, Q = self.model.user_emb, self.model.item_emb
        return (self.compiled_kernel and self.device.type == "cpu"
                and P.dtype == Q.dtype == torch.float32
                and P.is_contiguous() and Q.is_contiguous()
                and group["weight_decay"] == 0 and not group["amsgrad"]
                and not group["maximize"] and len(self.optimizer.param_groups) == 1)

    def _adam_step(self, params: list, grads: list) -> None:
        """One Adam step with the fused kernel, called directly on the optimizer's own state.

        ``torch.optim.Adam.step`` spends more time in Python bookkeeping than in the kernel
        on tables this size; the state layout is Adam's own, so autograd steps can follow.
        """
        opt = self.optimizer
        if not isinstance(opt, torch.optim.Adam) or not opt.defaults.get("fused"):
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            for p in params:
                p.grad = None
            return
        group = opt.param_groups[0]
        states = []
        for p in params:
            state = opt.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            states.append(state)
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1.0)
        beta1, beta2 = group["betas"]
        torch._fused_adam_(params, grads, [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], [], steps, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                           eps=group["eps"], amsgrad=False, maximize=False)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, val: Interactions) -> float:
        """Validation loss used for model selection (lower is better): MSE on the normalized
        scale for explicit feedback, −HR@``val_k`` for implicit feedback."""
        self.model.eval()
        users, items, ratings = self._tensors(val)
        if len(users) == 0:
            return float("nan")
        if self.feedback == "implicit":
            k = self.select_recall_k
            if k:
                return -self.validation_recall(users, items, k)
            return -self.validation_hr(users, items)
        if self.uses_fast_path():
            return self._fast_val_mse(val, users, items, ratings)
        preds = torch.cat([self.model(u, i) for u, i in
                           zip(users.split(65536), items.split(65536))])
        return float((preds - ratings).pow(2).mean())

    @torch.no_grad()
    def validation_hr(self, users, items, seen=None, chunk_users: int = 256) -> float:
        """Share of held-out positives (users[j], items[j]) ranked in their user's top
        ``val_k`` among the items the user neither trained on (``seen``, default the last
        epoch's positives) nor holds out; ties count against the item (pessimistic rank)."""
        if seen is None:
            if self._seen is None:
                raise RuntimeError("validation HR needs the training positives: train an epoch "
                                   "first or pass seen=(users, items)")
            seen = self._seen
        val_order = torch.argsort(users, stable=True)
        vu, vi = users[val_order], items[val_order]
        mu, mi = torch.cat([seen[0], vu]), torch.cat([seen[1], vi])
        mask_order = torch.argsort(mu, stable=True)
        mu, mi = mu[mask_order], mi[mask_order]
        ranked_users = torch.unique(vu)
        hits = 0
        for part in ranked_users.split(chunk_users):
            lo, hi = part[0], part[-1] + 1
            v_lo, v_hi = torch.searchsorted(vu, torch.stack([lo, hi])).tolist()
            m_lo, m_hi = torch.searchsorted(mu, torch.stack([lo, hi])).tolist()
            row_of = torch.full((int(hi - lo),), -1, dtype=torch.long, device=self.device)
            row_of[part - lo] = torch.arange(len(part), device=self.device)
            scores = self.model.score_all(part).float()
            v_rows = row_of[vu[v_lo:v_hi] - lo]
            held = scores[v_rows, vi[v_lo:v_hi]]
            m_rows, m_items = row_of[mu[m_lo:m_hi] - lo], mi[m_lo:m_hi]
            ranked = m_rows >= 0  # users in the id range without validation rows are skipped
            scores[m_rows[ranked], m_items[ranked]] = float("-inf")
            # 0-based rank: unmasked items scoring at least as high as the held-out item.
            rank = (scores[v_rows] >= held.unsqueeze(1)).sum(1)
            hits += int((rank < self.val_k).sum())
        return hits / len(users)

    @property
    def select_recall_k(self) -> int | None:
        """K of the validation Recall that selects the epoch (``model.select_recall_k``; None:
        validation HR@``val_k``)."""
        return getattr(self.cfg, "select_recall_k", None)

    @torch.no_grad()
    def validation_recall(self, users, items, k: int, seen=None,
                          chunk_users: int = 256) -> float:
        """Mean over the users with validation rows of their Recall@``k``: the share of their
        held-out items (users[j], items[j]) ranked < k among all items, the user's training
        positives (``seen``, default the last epoch's) masked with −inf; pessimistic ranks (ties
        count against the item). Whole-tensor work per chunk of users."""
        if seen is None:
            if self._seen is None:
                raise RuntimeError("validation Recall needs the training positives: train an "
                                   "epoch first or pass seen=(users, items)")
            seen = self._seen
        ranked = torch.unique(users)                      # sorted
        n_ids = int(max(users.max(), seen[0].max() if len(seen[0]) else 0)) + 1
        row_of_user = torch.full((n_ids,), -1, dtype=torch.long, device=self.device)
        row_of_user[ranked] = torch.arange(len(ranked), device=self.device)
        v_rows, s_rows = row_of_user[users], row_of_user[seen[0]]
        v_order, s_order = torch.argsort(v_rows, stable=True), torch.argsort(s_rows, stable=True)
        v_rows, v_items = v_rows[v_order], items[v_order]
        s_rows, s_items = s_rows[s_order], seen[1][s_order]
        total = 0.0
        for lo in range(0, len(ranked), chunk_users):
            hi = min(lo + chunk_users, len(ranked))
            scores = self.model.score_all(ranked[lo:hi]).float().clone()
            bounds = torch.tensor([lo, hi], device=self.device)
            s_lo, s_hi = torch.searchsorted(s_rows, bounds).tolist()
            scores[s_rows[s_lo:s_hi] - lo, s_items[s_lo:s_hi]] = float("-inf")
            v_lo, v_hi = torch.searchsorted(v_rows, bounds).tolist()
            rows = v_rows[v_lo:v_hi] - lo
            ranks = capped_ranks(scores, rows, v_items[v_lo:v_hi], k)
            recall, _, _ = recall_ndcg_from_ranks(ranks, rows, hi - lo, k)
            total += float(recall.sum())
        return total / len(ranked)

    def _fast_val_mse(self, val, users, items, ratings) -> float:
        """Validation MSE of MF as one sampled dense-dense product over the validation pairs."""
        cached = getattr(self, "_val_pattern", None)
        if cached is None or cached[0] is not val:
            order = torch.argsort(users * self.model.n_items + items)
            crow = torch.nn.functional.pad(
                torch.bincount(users, minlength=self.model.n_users).cumsum(0), (1, 0))
            pattern = torch.sparse_csr_tensor(crow, items[order], -ratings[order],
                                              size=(self.model.n_users, self.model.n_items),
                                              check_invariants=False)
            self._val_pattern = cached = (val, pattern)
        err = torch.sparse.sampled_addmm(cached[1], self.model.user_emb,
                                         self.model.item_emb.T).values()
        return float(torch.dot(err, err)) / len(err)

    # ------------------------------------------------------------------ fit
    def fit(self, train, val: Interactions, epochs: int | None = None,
            progress=None, select_from: int = 1, epoch_hook=None) -> FitResult:
        """Train ``epochs`` epochs; restore the epoch with the best validation loss among
        epochs ``select_from`` (1-based) and later. ``epoch_hook(model, epoch)``, if given, is
        called after each training epoch (epoch counted across fits, from 1), before that
        epoch is validated: a co-training attacker's hook (``Defense.epoch_hook``)."""
        epochs = epochs or self.cfg.epochs
        start = time.perf_counter()
        history = []
        # Epochs are counted across fits, select_from too; the last epoch of this fit is
        # eligible even when select_from lies beyond it.
        selector = BestEpochSelector(self.model, first_eligible=select_from,
                                     last_epoch=self.epoch + epochs)
        for _ in range(epochs):
            loss = self.train_epoch(self.epoch_data(train))
            if epoch_hook is not None:
                epoch_hook(self.model, self.epoch)
            val_loss = self.validate(val)
            history.append({"epoch": self.epoch, "train_loss": loss, "val_loss": val_loss})
            if self.feedback == "implicit":
                name = (f"val_recall@{self.select_recall_k}" if self.select_recall_k
                        else f"val_hr@{self.val_k}")
                history[-1][name] = -val_loss
            selector.offer(self.epoch, val_loss)
            if progress is not None:
                progress.update(1)
        selector.restore()
        return FitResult(selector.best_epoch, selector.best_value, history,
                         time.perf_counter() - start)

    def epoch_data(self, train):
        """The data for the next epoch (defenses that add pseudo-labels override this)."""
        return train

    def _tensors(self, data):
        if isinstance(data, Interactions):
            return (torch.as_tensor(data.users, device=self.device),
                    torch.as_tensor(data.items, device=self.device),
                    torch.as_tensor(data.ratings, device=self.device))
        return data


def has_pairwise_step(trainer_class: type) -> bool:
    """Whether ``trainer_class`` can train with BPR: it keeps the plain step (which has a BPR
    form), or the class itself declares ``pairwise_ready`` — it defines ``pairwise_step``, or
    inherits one it has checked applies (a subclass that changes the step declares nothing and
    is refused, never trained with a step that ignores its change)."""
    return ((trainer_class.train_step is Trainer.train_step
             and trainer_class.batch_loss is Trainer.batch_loss)
            or bool(vars(trainer_class).get("pairwise_ready", False)))


def check_pairwise_trainer(trainer) -> None:
    """A trainer whose step is not the plain one (an adversarial defense) has no BPR form."""
    if not has_pairwise_step(type(trainer)):
        raise NotImplementedError(
            f"{type(trainer).__name__} changes the pointwise training step and has no "
            "pairwise (BPR) form yet; use model.loss: bce, or defense: none with loss bpr")
