"""Adversarial training of the batch embeddings, the core shared by AT, RAT, PamaCF, VAT and
SHARE (APR: He et al., SIGIR 2018; as used by TCD's baselines, Wang et al., WISE 2022).

Model selection (validation loss) considers only the epochs after the warm-up, so the model
returned has been adversarially trained (a deviation from selecting over every epoch: with a
strong ε, PamaCF and VAT would otherwise return the plain warm-up model).

After ``warmup`` epochs of plain training, each mini-batch adds w · L(θ + δ) to the clean loss,
where δ perturbs every embedding row of the batch with a per-row magnitude ε_row:
AT takes the direction of the clean-loss gradient (the worst case to first order), RAT a random
direction. Personalized variants only change ``row_eps``. The L2 penalty applies to the clean
embeddings only.

``shared_rows`` (AT and RAT): δ perturbs the embedding *tables*, as in APR (``AMF.py``) and
TCD's ``adv_SVD.py`` / ``random_SVD.py``: a table row's direction is the gradient of the batch
loss with respect to that row — the sum over the row's occurrences in the batch — or one random
draw per row, so every occurrence of a user or item in a batch carries the same δ. Without it
(PamaCF, VAT, as in ``Kaike-Zhang/PamaCF``) each occurrence is perturbed along its own gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.base import declares
from models.trainer import Trainer

from .apr_kernel import SharedRowAPRKernel
from .base import Defense, TrainingData
from .perturbation import random_directions, row_normalize, sum_over_shared_rows


@dataclass
class AdversarialOptions:
    eps: float = 0.03          # TCD paper: "0.03 is selected as a compromise"; the authors'
                               # code runs 0.05 (configs/tcd_paper_protocol.yaml)
    adv_weight: float = 1.0
    warmup: int = 5            # T_pre_adv: plain epochs before the adversarial term starts


class AdversarialTrainer(Trainer):
    """A trainer whose step adds an adversarial term; configured by its defense."""

    eps: float = 0.03
    adv_weight: float = 1.0
    warmup: int = 5
    direction: str = "gradient"   # or "random"
    shared_rows: bool = False     # one δ per table row (AT, RAT) instead of per occurrence
    defense: "AdversarialDefense | None" = None

    def row_eps(self, embs, users, items, sample_losses) -> list[torch.Tensor]:
        """ε for every row of every embedding tensor of the batch, shape (B, 1) each."""
        if self.defense is not None:
            return self.defense.row_eps(self, embs, users, items, sample_losses)
        return [torch.full_like(e[:, :1], self.eps) for e in embs]

    def perturbations(self, embs, users, items, losses, clean_err) -> list[torch.Tensor]:
        eps = self.row_eps(embs, users, items, losses.detach())
        ids = [users if is_user else items for is_user in user_rows(self.model, embs)]
        if self.direction == "random":
            dirs = random_directions(embs, ids, self.shared_rows, self.generator)
        else:
            dirs = [g.detach() for g in torch.autograd.grad(clean_err, embs, retain_graph=True)]
            if self.shared_rows:
                dirs = [sum_over_shared_rows(g, row_ids) for g, row_ids in zip(dirs, ids)]
        return [row_normalize(d) * e for d, e in zip(dirs, eps)]

    pairwise_ready = True   # BPR models: pairwise_step below (models/bpr.py)

    def pairwise_step(self, users, pos, neg) -> float:
        """One BPR step; after the warm-up with the adversarial term
        (``defenses/pairwise_adversarial.py``)."""
        from models.bpr import bpr_step
        if not self.adversarial_active():
            return bpr_step(self, users, pos, neg)
        from .pairwise_adversarial import adversarial_bpr_step
        return adversarial_bpr_step(self, users, pos, neg)

    def adversarial_active(self) -> bool:
        return self.epoch >= self.warmup and self.eps > 0 and self.adv_weight > 0

    def compiled_epoch_applies(self) -> bool:
        """AT and RAT on explicit MF with Adam: the compiled shared-row epoch
        (``defenses/apr_kernel.py``, the same mathematics as ``train_step``) and, during the
        warm-up, the compiled plain epoch."""
        return (declares(self.model, "compiled_fast_path") and self.feedback == "explicit"
                and self.shared_rows
                and self._compiled_kernel_applies()
                and type(self).train_step is AdversarialTrainer.train_step
                and type(self).perturbations is AdversarialTrainer.perturbations
                and type(self).row_eps is AdversarialTrainer.row_eps
                and (self.defense is None
                     or type(self.defense).row_eps is AdversarialDefense.row_eps))

    def train_epoch(self, data) -> float:
        if not self.compiled_epoch_applies():
            return super().train_epoch(data)
        users, items, ratings = self._tensors(data)
        if not self.adversarial_active():
            loss = self.fast_epoch(users, items, ratings)
        else:
            n = len(users)
            perm = torch.randperm(n, generator=self.generator).to(self.device)
            total, self.last_gap = self.compiled_buffers(SharedRowAPRKernel).adversarial_epoch(
                self, users, items, ratings, perm, self.eps, self.adv_weight,
                self.direction == "random")
            loss = total / max(n, 1)
        return self.finish_epoch(loss, "lower model.lr or the defense's eps")

    def train_step(self, users, items, ratings) -> float:
        if not self.adversarial_active():
            return super().train_step(users, items, ratings)
        self.optimizer.zero_grad(set_to_none=True)
        embs = self.model.embed(users, items)
        pred = self.model.head(embs, users, items)
        losses = self.sample_losses(pred, ratings)
        clean_err = losses.mean()
        clean = clean_err + self.cfg.reg * self.model.reg_loss(embs)
        deltas = self.perturbations(embs, users, items, losses, clean_err)
        adv_pred = self.model.head([e + d for e, d in zip(embs, deltas)], users, items)
        adv = self.sample_losses(adv_pred, ratings).mean()
        loss = clean + self.adv_weight * adv
        loss.backward()
        self.optimizer.step()
        self.last_gap = float(adv.detach() - clean_err.detach())
        return float(loss.detach())


class AdversarialDefense(Defense):
    """Shared fit for the adversarial-training family; subclasses set the direction and
    ``row_eps``."""

    Options = AdversarialOptions
    trainer_class = AdversarialTrainer
    direction = "gradient"
    shared_rows = False
    # ε when the options leave it unset (None), by feedback mode (PamaCF and VAT: their papers'
    # value was set for BPR, i.e. implicit feedback; on explicit MF it wrecks the model).
    implicit_eps = 0.03
    explicit_eps = 0.03

    def base_eps(self, feedback: str) -> float:
        """ε of this run: ``options.eps``, or the feedback mode's default when it is None."""
        if self.options.eps is not None:
            return self.options.eps
        return self.implicit_eps if feedback == "implicit" else self.explicit_eps

    def row_eps(self, trainer, embs, users, items, sample_losses) -> list[torch.Tensor]:
        return [torch.full_like(e[:, :1], trainer.eps) for e in embs]

    def configure(self, trainer: AdversarialTrainer) -> AdversarialTrainer:
        trainer.eps = self.base_eps(trainer.feedback)
        trainer.adv_weight = self.options.adv_weight
        trainer.warmup = self.options.warmup
        trainer.direction = self.direction
        trainer.shared_rows = self.shared_rows
        trainer.defense = self
        return trainer

    def fit(self, data: TrainingData):
        model = self.new_model(data)
        trainer = self.configure(self.new_trainer(model, data))
        # Only adversarially trained epochs are eligible: when a strong ε makes every
        # adversarial epoch's validation loss worse than the warm-up's, selecting on all epochs
        # returns the plain warm-up model — plain, early-stopped training under this name.
        adversarial = trainer.eps > 0 and self.options.adv_weight > 0
        result = trainer.fit(data.train, data.val,
                             select_from=self.options.warmup + 1 if adversarial else 1)
        return trainer.model, {"best_epoch": result.best_epoch, "best_val": result.best_val,
                               "eps": trainer.eps}


def user_rows(model, embs) -> list[bool]:
    """Which batch embedding tensors are user rows (models declare ``emb_roles``)."""
    roles = getattr(model, "emb_roles", ["user", "item"])
    return [r == "user" for r in roles]
