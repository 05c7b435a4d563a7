"""SHARE part (a) over training: which training rows are distrusted, and when they are rescored.

``share_valuation.py`` values the rows and ``share_group.py`` counts the group signal; this
module applies them to a run (defenses.md §3a, the package's variant in ``share.py``):

- the schedule: a scoring after the warm-up and every ``rescore_every`` epochs after it, and,
  with the group signal on ``eliminate_amount: significant`` and ``screen_first``, a
  model-free screening before the first epoch;
- the rows to distrust at a scoring (``eliminate_amount``: only the group-flagged rows, or the
  lowest-valued fraction, per row or per user);
- what they stop doing: moving the item table (``eliminate_from: items``, an item weight of 0)
  or training at all (``all``), and the item reset that undoes what they gave an item;
- the log of every scoring (row indices encoded compactly for runs.csv's ``defense_info``).
"""
from __future__ import annotations

import base64
import zlib

import numpy as np
import torch

from .share_group import lockstep_counts
from .share_valuation import (Pattern, concentrated_rows, item_proximity, lowest_rows,
                              lowest_users_rows, value_samples)


def encode_rows(rows: np.ndarray) -> str:
    """Sorted row indices → zlib-compressed, base64 text of their gaps (varint-free: uint32)."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    gaps = np.diff(np.concatenate([[-1], rows])).astype(np.uint32)
    return base64.b64encode(zlib.compress(gaps.tobytes(), 9)).decode("ascii")


def decode_rows(text: str) -> np.ndarray:
    gaps = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint32)
    return np.cumsum(gaps.astype(np.int64)) - 1


def decode_eliminated(info: dict) -> list[tuple[int, np.ndarray]]:
    """(epoch, eliminated row indices) for every scoring logged in a SHARE ``info`` dict."""
    return [(s["epoch"], decode_rows(s["rows"])) for s in info.get("scorings", [])]


def group_signal_only(opt) -> bool:
    """True when the valuation is the group signal alone (no model-based term)."""
    model_terms = (opt.validation_weight + opt.exposure_weight + opt.reach_weight
                   + opt.push_weight + opt.unanimity_weight + opt.support_weight)
    return opt.group_weight > 0 and model_terms <= 0 and opt.alpha >= 1


@torch.no_grad()
def reset_distrusted_items(trainer, initial: dict, items: torch.Tensor, keep: torch.Tensor,
                           n_items: int, threshold: float,
                           previous_keep: torch.Tensor | None = None) -> int:
    """Reset the item rows whose share of distrusted training rows is ≥ ``threshold`` (to
    ``initial``'s embedding, with a fresh Adam state) — only items not already over it at the
    previous scoring (those learnt from trusted rows only since then)."""
    total = torch.bincount(items, minlength=n_items)

    def over(k: torch.Tensor) -> torch.Tensor:
        distrusted = torch.bincount(items[~k], minlength=n_items)
        return (total > 0) & (distrusted >= threshold * total)

    reset = over(keep)
    if previous_keep is not None and not bool(previous_keep.all()):
        reset &= ~over(previous_keep)
    table = trainer.model.item_emb
    table[reset] = initial["item_emb"].to(table.device)[reset]
    state = trainer.optimizer.state.get(table, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][reset] = 0
    return int(reset.sum())


class Elimination:
    """The distrusted rows of one SHARE run (``keep`` is False for them; none while part (a) is
    off), rescored on schedule, with the log of every scoring (``scorings``).

    ``train`` and ``val`` are (users, items, ratings) tensors; ``audience`` the users whose
    lists the model-based terms look at.
    """

    def __init__(self, opt, train: tuple, val: tuple, n_users: int, n_items: int,
                 audience: torch.Tensor) -> None:
        self.opt = opt
        self.train = train
        self.n_users, self.n_items = n_users, n_items
        self.audience = audience
        self.keep = torch.ones(len(train[0]), dtype=torch.bool, device=train[0].device)
        self.previous_keep = self.keep   # before the last scoring
        self.scorings: list[dict] = []
        self.previous_rows = np.zeros(0, dtype=np.int64)
        self.pattern = self.val_pattern = self.val_ratings = None
        if opt.eliminate:
            self.pattern = Pattern.of(train[0], train[1], n_users, n_items)
            self.val_pattern = Pattern.of(val[0], val[1], n_users, n_items)
            self.val_ratings = val[2][self.val_pattern.order]
        self.group = None
        if opt.eliminate and opt.group_weight > 0:
            # Counted on every observed rating (train ∪ val): the signal does not depend on
            # where a fake row was placed.
            observed = tuple(torch.cat([t, v]) for t, v in zip(train, val))
            self.group = lockstep_counts(train[0], train[1], train[2], observed, n_users,
                                         n_items, opt.group_prior, opt.group_lift)
        self.proximity = None   # the audience's lists, for the reach term
        self.model_free = group_signal_only(opt)
        # The group signal needs no model: its flagged rows can be distrusted from epoch 1.
        self.screens_first = (opt.eliminate and self.group is not None and opt.screen_first
                              and opt.eliminate_amount == "significant")

    # ------------------------------------------------------------------ schedule
    def scheduled(self, epoch: int) -> bool:
        """A scoring with the model is due before 0-based ``epoch``: after the warm-up, then
        every ``rescore_every`` epochs."""
        opt = self.opt
        return (opt.eliminate and epoch >= opt.warmup
                and (epoch - opt.warmup) % opt.rescore_every == 0)

    def screening(self, epoch: int) -> bool:
        """The model-free screening by the group signal is due before ``epoch``."""
        return self.screens_first and epoch == 0

    # ------------------------------------------------------------------ scoring
    def rescore(self, epoch: int, model, scheduled: bool) -> dict:
        """Value the rows (with ``model`` if ``scheduled``, else by the group signal alone),
        distrust the chosen ones from now on and log the scoring; returns the epoch's log
        entries."""
        opt = self.opt
        if scheduled and not self.model_free and (self.proximity is None
                                                   or opt.reach_lists == "current"):
            # "warmup": the lists of the undefended warm-up model, the attack's aim
            self.proximity = item_proximity(model.user_emb.detach(), model.item_emb.detach(),
                                            self.audience, opt.top_k)
        rows = self.rows_to_distrust(model, self.model_free or not scheduled)
        self.previous_keep = self.keep
        self.keep = torch.ones(len(self.keep), dtype=torch.bool, device=self.keep.device)
        self.keep[rows] = False
        rows_np = rows.cpu().numpy()
        self.scorings.append({"epoch": epoch + 1, "n": int(len(rows_np)),
                              "rows": encode_rows(rows_np)})
        changed = int(len(np.setxor1d(rows_np, self.previous_rows)))
        self.previous_rows = rows_np
        return {"rescored": True, "changed": changed}

    def rows_to_distrust(self, model, model_free: bool) -> torch.Tensor:
        """The rows to distrust: see ``eliminate_amount``. ``model_free``: value by the group
        signal alone (the first-epoch screening, or a group-only valuation)."""
        opt, train = self.opt, self.train
        budget = int(opt.eliminate_fraction * len(train[0]))
        if model_free:
            value = -self.group
        else:
            value = self.value(model).value
        if opt.eliminate_amount == "significant":
            flagged = torch.nonzero(self.group >= opt.group_min_partners).squeeze(1)
            if len(flagged) > budget:
                flagged = flagged[torch.argsort(value[flagged], stable=True)[:budget]]
            return torch.sort(flagged).values
        if opt.granularity == "user":
            return lowest_users_rows(value, train[0], self.n_users, opt.eliminate_fraction)
        rows = lowest_rows(value, opt.eliminate_fraction, train[0], opt.max_user_share)
        return concentrated_rows(rows, train[1], self.n_items, opt.min_item_share)

    def value(self, model):
        """Every training row's value under ``model`` (``share_valuation.value_samples``)."""
        opt = self.opt
        return value_samples(model.user_emb, model.item_emb, self.train, self.val_pattern,
                             self.n_users, self.n_items, self.audience, self.proximity,
                             alpha=opt.alpha, validation_weight=opt.validation_weight,
                             exposure_weight=opt.exposure_weight,
                             reach_weight=opt.reach_weight, push_weight=opt.push_weight,
                             unanimity_weight=opt.unanimity_weight,
                             unanimity_prior=opt.unanimity_prior,
                             support_weight=opt.support_weight,
                             support_prior=opt.support_prior, combine=opt.combine,
                             active_fraction=opt.active_fraction, k=opt.top_k,
                             tau=opt.exposure_tau, pattern=self.pattern,
                             val_ratings=self.val_ratings, group=self.group,
                             group_weight=opt.group_weight)

    def reset_items(self, trainer, initial: dict) -> int:
        """After a scoring: items whose rows are now mostly distrusted go back to their
        ``initial`` embedding (with ``screen_first``, only items newly over the threshold)."""
        return reset_distrusted_items(trainer, initial, self.train[1], self.keep, self.n_items,
                                      self.opt.reset_items_above,
                                      self.previous_keep if self.screens_first else None)

    # ------------------------------------------------------------------ training rows
    @property
    def n_distrusted(self) -> int:
        return int(len(self.keep) - int(self.keep.sum()))

    def epoch_rows(self) -> tuple[tuple, torch.Tensor | None]:
        """The next epoch's training rows and the per-row item weight (None: all 1):
        distrusted rows keep training their user but not the item table
        (``eliminate_from: items``), or are left out (``all``)."""
        if bool(self.keep.all()):
            return self.train, None
        if self.opt.eliminate_from == "items":
            return self.train, self.keep.to(torch.float32)
        return tuple(t[self.keep] for t in self.train), None

    def distrusted_at(self, epoch: int) -> np.ndarray:
        """Per training row, whether it was distrusted while (1-based) ``epoch`` was trained:
        the last scoring at or before that epoch."""
        rows = np.zeros(len(self.keep), dtype=bool)
        in_effect = [s for s in self.scorings if s["epoch"] <= epoch]
        if in_effect:
            rows[decode_rows(in_effect[-1]["rows"])] = True
        return rows
