"""The BPR epoch (``model.loss: bpr``): pairwise training on implicit feedback.

Every epoch visits each training positive (u, i) once, in a fresh random order, and pairs it
with one negative j drawn uniformly from the items u has no training positive for — the
sampling of the LightGCN authors' TensorFlow code and of RecBole (the PyTorch port draws users
uniformly instead, which gives heavy users fewer visits; we keep "every positive once"). The
negatives are drawn for the whole epoch at once by vectorised rejection sampling from the
trainer's generator (one master seed: the same run draws the same negatives). A positive whose
user holds every item cannot get a negative and is skipped for the epoch.

The loss is the model's own (``Recommender.bpr_loss``: BPR + L2 on the batch rows; LightGCN
propagates once per step), minimised with the trainer's optimizer; a trainer with a
``pairwise_step`` (the adversarial defenses: ``defenses/pairwise_adversarial.py``) takes each
batch instead. A trainer that changes the pointwise step without declaring a pairwise one is an
error (``models.trainer.has_pairwise_step``), never a silent plain-BPR run.
"""
from __future__ import annotations

import torch

DENSE_MASK_CELLS = 1 << 27   # largest users × items boolean mask (bytes) before binary search


@torch.no_grad()
def sample_negatives(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int,
                     generator: torch.Generator, rounds: int = 100
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative per (users[j], items[j]) positive, uniform over the items users[j] has
    no positive for. Returns ``(negatives, ok)``; ``ok`` is False where no negative was found
    in ``rounds`` redraws (a user holding (almost) every item)."""
    device = users.device
    keys = users * n_items + items
    dense = n_users * n_items <= DENSE_MASK_CELLS
    if dense:
        mask = torch.zeros(n_users * n_items, dtype=torch.bool, device=device)
        mask[keys] = True
    else:
        taken = torch.unique(keys)
    gen_device = generator.device
    neg = torch.randint(n_items, (len(users),), generator=generator,
                        device=gen_device).to(device)
    todo = torch.arange(len(users), device=device)
    for _ in range(rounds):
        k = users[todo] * n_items + neg[todo]
        if dense:
            clash = mask[k]
        else:
            at = torch.searchsorted(taken, k).clamp_(max=max(len(taken) - 1, 0))
            clash = taken[at] == k if len(taken) else torch.zeros_like(k, dtype=torch.bool)
        todo = todo[clash]
        if len(todo) == 0:
            break
        neg[todo] = torch.randint(n_items, (len(todo),), generator=generator,
                                  device=gen_device).to(device)
    ok = torch.ones(len(users), dtype=torch.bool, device=device)
    ok[todo] = False
    return neg, ok


def bpr_epoch(trainer, users: torch.Tensor, items: torch.Tensor) -> float:
    """One BPR epoch over the positives (users, items); returns the mean batch loss weighted by
    batch size."""
    model = trainer.model
    model.train()
    neg, ok = sample_negatives(users, items, model.n_users, model.n_items, trainer.generator)
    users, items, neg = users[ok], items[ok], neg[ok]
    total, count = 0.0, 0
    step = getattr(trainer, "pairwise_step", None) or (
        lambda u, i, j: bpr_step(trainer, u, i, j))
    for idx in trainer.batches(len(users)):
        total += step(users[idx], items[idx], neg[idx]) * len(idx)
        count += len(idx)
    return total / max(count, 1)


def bpr_step(trainer, users, pos, neg) -> float:
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = trainer.model.bpr_loss(users, pos, neg, trainer.cfg.reg)
    loss.backward()
    trainer.optimizer.step()
    return float(loss.detach())
