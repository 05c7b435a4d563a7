"""TCD — Triple Cooperative Defense (Wang, Lian, Wu, Chen, "Towards Robust Recommender Systems
via Triple Cooperative Defense", WISE 2022, arXiv:2210.13762; authors' code
``greensun0830/TCD``, ``models/co_SVD.py``), as specified in defenses.md §2.

Three victims h0, h1, h2 of the configured architecture, with independent initializations, are
all trained on the whole labelled data D_L (fake users included — the defense cannot tell them
apart). After ``t_pre`` pre-training epochs, in every remaining epoch each model j in turn is
trained one epoch on D_L ∪ pseudo_j, where pseudo_j holds the unobserved cells (u, i) of the
training matrix on which its two partners' projected predictions agree,
Π(h_{j+1}(u, i)) == Π(h_{j+2}(u, i)), labelled with that value, of which a random ``pseudo_rate``
fraction is kept. Pseudo-labels are recomputed for every (epoch, model) from the partners as they
are at that moment (h_j sees the partners already updated earlier in the same epoch, as in the
authors' loop). The epoch of h0 with the lowest validation loss is kept, and h0 recommends.

"Unobserved" means rated neither in the training nor in the validation data: validation
ratings are known to the system and only held out for model selection, so they get no
pseudo-label (the spec's "unobserved cells of the training matrix", with the validation cells
counted as observed; the authors had no validation split). With ``evaluation.select_on: test``
the validation rows are the test set and stay unobserved: excluding them made the test cells
the only unobserved cells never pushed towards a partner's guess, which raised TCD's test HR
by ≈ 0.02 on ML-100K under the authors' protocol (a leak of the test set into training).

Π = clip(round(x · steps) / steps, lowest, 1) (``RatingScale.project``). The authors' last code
rounds without clipping, so cells both partners predict near 0 got a pseudo-label of ≈ 0; here
they get the lowest grid rating, as the spec fixes. ``projection: round`` reproduces the authors'
unclipped rounding, for comparison: on sparse FilmTrust almost every unobserved cell agrees on
the lowest rating (99 % of them), and a constant non-zero label over millions of cells makes the
MF spend a direction that every user shares on it; the fake users' top ratings then raise their
targets along that shared direction, for everyone (measured in the README's TCD notes).

Scale: the unobserved cells (≈ 21 M on ML-1M) are scored in chunks of users of at most
``chunk_cells`` cells; only the kept pseudo-labels (index and value triples) leave a chunk, so
no users × items matrix is ever held. Each epoch runs through ``Trainer.train_epoch`` with the
concatenated tensors, i.e. the hand-derived fast path for plain explicit MF.

Deviations from the authors' code: the best epoch is chosen on validation loss, not on the test
set (protocol.md §2), among the epochs trained with pseudo-labels; Π clips (defenses.md §2);
validation cells get no pseudo-label (above). The number of pre-training epochs is an option
(default 4, the paper's ML-100K value) because a defense does not know the dataset's name; the
presets set the paper's 1 (FilmTrust), 4 (ML-100K), 2 (ML-1M). ``t_pre`` counts plain epochs;
the authors' code pseudo-labels once ``cur_epochs > FLAGS.pre``, so if the paper's T_pre is
that flag, their runs trained T_pre + 1 plain epochs (``t_pre`` 5 on ML-100K; README).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from data.ratings import Interactions, RatingScale
from models.selection import BestEpochSelector
from utils.config import bounds
from utils.seeding import torch_generator

from .base import Defense, TrainingData


@dataclass
class TCDOptions:
    # Pre-training epochs on D_L alone (paper: 1 FilmTrust, 4 ML-100K, 2 ML-1M).
    t_pre: int = field(default=4, metadata=bounds(0))
    # Fraction of the agreeing cells kept as pseudo-labels (paper: 1.0; 0.2 on ML-1M).
    pseudo_rate: float = field(default=1.0, metadata=bounds(0, 1))
    # Π: "clip" = clip(round(x · steps) / steps, lowest, 1) (the spec's); "round" = the
    # authors' last code, round(x · steps) / steps without clipping (cells both partners predict
    # near 0 get the label 0, below the lowest rating). See the module docstring.
    projection: str = "clip"
    # Upper bound on the cells scored at once while pseudo-labelling (memory bound).
    chunk_cells: int = field(default=2_000_000, metadata=bounds(1))


class ObservedCells:
    """The observed cells of a training matrix, grouped by user, for masking chunks of rows."""

    def __init__(self, train: Interactions, n_users: int, n_items: int,
                 device: torch.device) -> None:
        order = np.lexsort((train.items, train.users))
        self.n_items = n_items
        self.users = torch.as_tensor(train.users[order], device=device)
        self.items = torch.as_tensor(train.items[order], device=device)
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(train.users, minlength=n_users))])

    def flat_in_chunk(self, start: int, stop: int) -> torch.Tensor:
        """Flat indices (row − start) · n_items + item of the observed cells of rows
        start..stop−1."""
        lo, hi = self.ptr[start], self.ptr[stop]
        return (self.users[lo:hi] - start) * self.n_items + self.items[lo:hi]


@torch.no_grad()
def pseudo_labels(partner_a, partner_b, observed: ObservedCells, n_users: int, n_items: int,
                  scale: RatingScale, rate: float, generator: torch.Generator,
                  chunk_cells: int, device: torch.device,
                  projection: str = "clip") -> tuple[torch.Tensor, ...]:
    """Cells (u, i) unobserved in the training matrix where Π(a(u, i)) == Π(b(u, i)), labelled
    with that value, each kept with probability ``rate``; returns (users, items, labels,
    n_agreeing) with users/items int64 and labels float32. ``projection="round"`` drops Π's
    clipping (the authors' code)."""
    if projection == "clip":
        project = scale.project
    else:
        def project(x):
            return (x * scale.steps).round() / scale.steps
    partner_a.eval()
    partner_b.eval()
    rows = max(1, chunk_cells // max(n_items, 1))
    users_out, items_out, labels_out = [], [], []
    n_agree = 0
    for start in range(0, n_users, rows):
        stop = min(start + rows, n_users)
        batch = torch.arange(start, stop, device=device)
        label = project(partner_a.score_all(batch).float())
        agree = label == project(partner_b.score_all(batch).float())
        agree.view(-1)[observed.flat_in_chunk(start, stop)] = False
        n_agree += int(agree.sum())
        if rate < 1.0:
            # Drawn on the CPU generator for every cell, so results do not depend on device.
            keep = torch.rand(agree.shape, generator=generator).to(device) < rate
            agree &= keep
        # Row-major coordinates and values of the kept cells, with no integer division.
        cells = agree.nonzero()
        users_out.append(cells[:, 0] + start)
        items_out.append(cells[:, 1].contiguous())
        labels_out.append(label[agree])
    return (torch.cat(users_out), torch.cat(items_out), torch.cat(labels_out), n_agree)


class TripleCooperativeDefense(Defense):
    name = "tcd"
    Options = TCDOptions
    accepts_epoch_hook = True  # called for h0, h1, h2 after each one's epoch (gcoattack)
    feedbacks = ("explicit",)
    # Implicit feedback has no rating to project: every observed cell is 1, so Π of two
    # partners' scores is no label of the data's kind; a top-K-agreement variant (pseudo-
    # positives both partners rank in their top K) would be a new defense, not the paper's.
    feedback_reason = ("its pseudo-labels are ratings projected onto the rating grid, which "
                       "implicit feedback does not have")

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        opts = super().parse_options(data, where)
        if opts.projection not in ("clip", "round"):
            from utils.config import ConfigError
            raise ConfigError(f"{where}.projection: '{opts.projection}' is unknown; use clip "
                              "(the spec's Π) or round (the authors' code, no clipping)")
        return opts

    def fit(self, data: TrainingData):
        if data.feedback != "explicit":
            raise ValueError("defense tcd: pseudo-labels are projected ratings, so it needs "
                             "dataset.feedback=explicit")
        opts = self.options
        epochs = self.model_cfg.epochs
        if opts.t_pre > epochs:
            raise ValueError(f"defense.options.tcd.t_pre: {opts.t_pre} exceeds model.epochs "
                             f"({epochs}); use a value in [0, {epochs}]")
        models = [self.new_model(data, tag=j) for j in range(3)]
        trainers = [self.new_trainer(m, data, tag=j) for j, m in enumerate(models)]
        device = trainers[0].device
        labelled = tuple(torch.as_tensor(a, device=device) for a in
                         (data.train.users, data.train.items, data.train.ratings))
        # Validation cells are rated too (held out for model selection only): never pseudo-label
        # them, or the selection would score the partners' guesses instead of real ratings.
        # Test cells standing in for validation (select_on: test) are not known ratings: they
        # are pseudo-labelled like any unobserved cell, as in the authors' code.
        rated = Interactions.concat(data.train, data.val) if data.val_known else data.train
        observed = ObservedCells(rated, data.n_users, data.n_items, device)
        generator = torch_generator(self.seed, "pseudo-labels")

        # Only epochs trained with pseudo-labels are eligible (the last one always is): a
        # pre-training epoch is plain training of h0 and would be TCD only by name.
        selector = BestEpochSelector(models[0], first_eligible=opts.t_pre + 1,
                                     last_epoch=epochs)
        n_pseudo, n_agree, counted = 0, 0, 0
        bar = tqdm(range(epochs), desc="tcd", unit="epoch", leave=False,
                   disable=not self.progress)
        for epoch in bar:
            for j in range(3):
                batch = labelled
                if epoch >= opts.t_pre:
                    pu, pi, pr, agreeing = pseudo_labels(
                        models[(j + 1) % 3], models[(j + 2) % 3], observed, data.n_users,
                        data.n_items, data.scale, opts.pseudo_rate, generator,
                        opts.chunk_cells, device, opts.projection)
                    batch = tuple(torch.cat([a, b]) for a, b in zip(labelled, (pu, pi, pr)))
                    n_pseudo += len(pu)
                    n_agree += agreeing
                    counted += 1
                trainers[j].train_epoch(batch)
                del batch
                self._after_epoch(models[j], epoch + 1)
            selector.offer(epoch + 1, trainers[0].validate(data.val))
        selector.restore()
        n_unobserved = data.n_users * data.n_items - len(rated)
        return models[0], {
            "best_epoch": selector.best_epoch, "best_val": selector.best_value,
            "t_pre": opts.t_pre,
            "pseudo_rate": opts.pseudo_rate, "projection": opts.projection,
            "pseudo_per_model_epoch": n_pseudo / max(counted, 1),
            "agreement": n_agree / max(counted * n_unobserved, 1),
        }
