"""The adversarial step on BPR (``model.loss: bpr``): AT/APR, RAT, PamaCF and VAT on MF-BPR and
LightGCN.

APR was defined on BPR-MF (He et al., SIGIR 2018) and PamaCF and VAT train MF-BPR and LightGCN
(``Kaike-Zhang/PamaCF`` ``utls/trainer.py``). After the warm-up, each mini-batch of triples
(u, i, j) adds w · BPR(rows + δ) to the clean BPR loss (+ L2 on the clean L2 rows), where the
rows are the model's ``bpr_embeddings`` — for MF the embedding rows, for LightGCN the *final*
(propagated) rows, which is what the PamaCF/VAT code perturbs for its LightGCN — and δ is, per
row, ε_row · the normalised direction:

- the gradient of the clean BPR term with respect to the row (AT, PamaCF, VAT), or a truncated
  normal draw (RAT);
- with ``shared_rows`` (AT, RAT: APR's table perturbation) one direction per table row: the sum
  of its occurrences' gradients, the positive and negative occurrences of an item together;
  otherwise each occurrence along its own gradient (PamaCF, VAT, as in the authors' code);
- ε_row from the defense's ``row_eps`` on (user rows, positive-item rows) with the per-triple
  BPR losses; the negative item's rows take the positive item's ε (all three are the triple
  user's ε for PamaCF and VAT, as in the authors' code).

Used by ``AdversarialTrainer.pairwise_step``; ``models/bpr.py`` runs it for every batch of a BPR
epoch.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from models.base import bpr_objective

from .perturbation import random_directions, row_normalize, sum_over_shared_rows


def adversarial_bpr_step(trainer, users, pos, neg) -> float:
    """One optimizer step on BPR + w · adversarial BPR; returns the batch loss."""
    model = trainer.model
    trainer.optimizer.zero_grad(set_to_none=True)
    rows, l2_rows = model.bpr_embeddings(users, pos, neg)
    diff = model.bpr_diff(rows, users, pos, neg)
    losses = F.softplus(-diff)
    clean_err = losses.mean()
    clean = bpr_objective(diff, l2_rows, trainer.cfg.reg)
    eps_user, eps_item = trainer.row_eps(rows[:2], users, pos, losses.detach())
    eps = [eps_user, eps_item, eps_item]
    items = torch.cat([pos, neg])
    if trainer.direction == "random":
        dirs = random_directions([rows[0], torch.cat(rows[1:])], [users, items],
                                 trainer.shared_rows, trainer.generator)
        dirs = [dirs[0], *dirs[1].split(len(users))]
    else:
        dirs = [g.detach() for g in torch.autograd.grad(clean_err, rows, retain_graph=True)]
        if trainer.shared_rows:
            user_dir = sum_over_shared_rows(dirs[0], users)
            item_dir = sum_over_shared_rows(torch.cat(dirs[1:]), items)
            dirs = [user_dir, *item_dir.split(len(users))]
    perturbed = [r + row_normalize(d) * e for r, d, e in zip(rows, dirs, eps)]
    adv = F.softplus(-model.bpr_diff(perturbed, users, pos, neg)).mean()
    loss = clean + trainer.adv_weight * adv
    loss.backward()
    trainer.optimizer.step()
    trainer.last_gap = float(adv.detach() - clean_err.detach())
    return float(loss.detach())
