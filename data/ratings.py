"""Rating containers shared by every stage: the whole dataset, interaction triples and a split."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Interactions:
    """(user, item, rating) triples; ratings are normalized to (0, 1]."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        self.ratings = np.asarray(self.ratings, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask_or_index: np.ndarray) -> "Interactions":
        return Interactions(self.users[mask_or_index], self.items[mask_or_index],
                            self.ratings[mask_or_index])

    @staticmethod
    def concat(*parts: "Interactions") -> "Interactions":
        return Interactions(np.concatenate([p.users for p in parts]),
                            np.concatenate([p.items for p in parts]),
                            np.concatenate([p.ratings for p in parts]))


@dataclass
class RatingScale:
    """Normalized ratings lie on the grid {1/steps, ..., 1}; ``max_rating`` restores the scale."""

    max_rating: float
    steps: int

    @property
    def lowest(self) -> float:
        return 1.0 / self.steps

    def project(self, x):
        """Π(x) = clip(round(x · steps) / steps, lowest, 1); works on numpy arrays and tensors."""
        r = (x * self.steps).round() / self.steps
        return r.clip(self.lowest, 1.0)


@dataclass
class RatingData:
    """A preprocessed dataset: dense 0-based ids in ascending order of the raw ids."""

    name: str
    interactions: Interactions
    n_users: int
    n_items: int
    scale: RatingScale
    raw_item_ids: np.ndarray = field(repr=False)

    @property
    def n_ratings(self) -> int:
        return len(self.interactions)


@dataclass
class Split:
    """Train / validation / test of the real users; fixed by the seed for every defense.

    ``test_items[u]`` is user u's held-out positive item, or -1 when u has no positive rating.
    """

    train: Interactions
    val: Interactions
    test_items: np.ndarray
    test_ratings: np.ndarray
    n_users: int
    n_items: int
    scale: RatingScale
    feedback: str = "explicit"

    def observed(self) -> Interactions:
        """Everything but the test ratings (what the system, and so the attacker, can see)."""
        return Interactions.concat(self.train, self.val)


@dataclass
class TrainingData:
    """The data a defense trains on: training and validation ratings with the fake users
    appended after the real ones (unlabelled), the table sizes and the rating scale. Here, not
    in ``defenses/``, because attacks that run a defense on their own copy of the data build it
    too, and attacks never import ``defenses/``."""

    train: Interactions
    val: Interactions
    n_users: int
    n_items: int
    scale: RatingScale
    feedback: str = "explicit"
    # False when ``val`` is the test set standing in for model selection
    # (``evaluation.select_on: test``): a defense may score those rows to pick an epoch, but
    # they are not ratings the system holds — treating them as known (e.g. keeping them out of
    # pseudo-labels) would let test information into training.
    val_known: bool = True
