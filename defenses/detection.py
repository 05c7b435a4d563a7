"""Detection baselines as defenses (threat-model.md §3): score every user with an unsupervised
shilling detector, flag a fixed number of the most suspicious users, drop all their rows
(training and validation: a flagged user keeps no say in the model, not even in the choice of
its epoch) and train the victim plainly, as ``defenses/none.py`` does.

A detector is a :class:`DetectionDefense` subclass that implements :meth:`user_scores`
(higher = more suspicious). It sees only :class:`TrainingData` — never the targets nor which
users are fake; users 0..n_users−1 are all alike to it. It reads the training rows, plus the
validation rows when ``use_validation`` is on (off by default: under the papers' ``train``
protocol only real users have validation rows, so adding them would lengthen real profiles
alone; under ``platform`` both kinds have them).

The number flagged is fixed: round(``flag_fraction`` × n_users), at least 1 and at most
n_users − 1 — the assumed attack size, as in Mehta & Nejdl's PCASelectUsers (which flags "r"
users) and Chirita et al.'s evaluation. Ties in the score are broken by a draw from the
defense's seed, never by user id (fake users are appended after the real ones, so an id
order would leak). Users with no row at all are never flagged (dropping them changes
nothing). :meth:`distrusted` reports the flagged users and their training rows;
:meth:`flag` runs the detector alone, without training (for an attacker's
generate → detect → repair loop, or for measuring a detector's precision).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from data.ratings import Interactions
from utils.config import bounds
from utils.seeding import numpy_rng

from .base import Defense, Distrust, TrainingData


@dataclass
class DetectionOptions:
    # Share of all users (fake ones included) that is flagged: the assumed attack size.
    flag_fraction: float = field(default=0.03, metadata=bounds(0, 0.5, lo_open=True))
    # Also read the validation rows (see the module docstring).
    use_validation: bool = False


def flag_count(fraction: float, n_users: int) -> int:
    """round(fraction × n_users), at least 1 and at most n_users − 1 (Python rounding)."""
    return int(min(max(round(fraction * n_users), 1), max(n_users - 1, 0)))


def top_users(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the ``n`` highest scores; NaN scores are never chosen before a finite
    one; ties are broken by ``rng``."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = np.lexsort((rng.random(len(scores)), -scores))
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:n]] = True
    return mask


def user_zscores(obs: Interactions, n_users: int) -> np.ndarray:
    """Each rating z-scored over its user's observed ratings (population std); 0 for a user
    whose ratings are all equal."""
    r = obs.ratings.astype(np.float64)
    count = np.bincount(obs.users, minlength=n_users).astype(np.float64)
    mean = np.bincount(obs.users, weights=r, minlength=n_users) / np.maximum(count, 1)
    dev = r - mean[obs.users]
    var = np.bincount(obs.users, weights=dev ** 2, minlength=n_users) / np.maximum(count, 1)
    std = np.sqrt(var)[obs.users]
    return np.divide(dev, std, out=np.zeros_like(dev), where=std > 1e-12)


class DetectionDefense(Defense):
    """Drop the users :meth:`user_scores` finds most suspicious, then train plainly."""

    name = "detection"
    Options = DetectionOptions

    def user_scores(self, data: TrainingData, observed: Interactions) -> np.ndarray:
        """Suspicion per user (float array of length n_users; higher = more suspicious; NaN =
        no opinion, never flagged before a scored user)."""
        raise NotImplementedError

    def observed(self, data: TrainingData) -> Interactions:
        return (Interactions.concat(data.train, data.val)
                if self.options.use_validation and data.val_known else data.train)

    def flag(self, data: TrainingData) -> np.ndarray:
        """Boolean mask over users: the flagged ones."""
        observed = self.observed(data)
        scores = np.asarray(self.user_scores(data, observed), dtype=np.float64)
        if scores.shape != (data.n_users,):
            raise ValueError(f"{self.name}: user_scores returned shape {scores.shape}, "
                             f"expected ({data.n_users},)")
        active = np.bincount(observed.users, minlength=data.n_users) > 0
        scores = np.where(active, scores, np.nan)
        n = min(flag_count(self.options.flag_fraction, data.n_users), int(active.sum()))
        return top_users(scores, n, numpy_rng(self.seed, "detect", self.name))

    def fit(self, data: TrainingData):
        flagged = self.flag(data)
        drop_train = flagged[data.train.users]
        drop_val = flagged[data.val.users]
        kept = dataclasses.replace(data, train=data.train.subset(~drop_train),
                                   val=data.val.subset(~drop_val))
        self._distrust = Distrust(rows=drop_train, users=flagged)
        model = self.new_model(kept)
        trainer = self.new_trainer(model, kept)
        result = trainer.fit(kept.train, kept.val)
        info = {"best_epoch": result.best_epoch, "best_val": result.best_val,
                "flagged_users": int(flagged.sum()), "dropped_train_rows": int(drop_train.sum()),
                "dropped_val_rows": int(drop_val.sum())}
        return trainer.model, info

    def distrusted(self) -> Distrust | None:
        return getattr(self, "_distrust", None)
