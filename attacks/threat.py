"""The threat model shared by every attack (attacks.md §1).

Target selection, the number of fake users, the filler size, and the attacker's knowledge-cost
view: a breadth-first walk over the user–item graph from the targets, as in the TCD authors'
``Dataset.get_idx`` — users who rated a target, then every user who rated an item those users
rated, and so on, until round(c × n_users) users are collected; users of completed hops are all
kept and the rest are drawn at random from the last hop.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from data.ratings import Interactions, RatingScale, Split
from utils.seeding import numpy_rng


class AttackError(ValueError):
    """A bad attack setting (targets, sizes, poison files); the message names the fix."""


def select_targets(split: Split, kind: str, count: int, rng: np.random.Generator,
                   items: list[int] | None = None, unpopular_below: int = 5) -> np.ndarray:
    """``random``: uniform over all items; ``unpopular``: uniform over items with fewer than
    ``unpopular_below`` ratings (counted over all of the real data); ``list``: given ids."""
    n_items = split.n_items
    if kind == "list":
        ids = np.asarray(items, dtype=np.int64)
        bad = ids[(ids < 0) | (ids >= n_items)]
        if len(bad):
            raise AttackError(f"targets.items: item id {int(bad[0])} is unknown; "
                              f"valid ids are 0..{n_items - 1}")
        return np.unique(ids)
    if kind == "random":
        pool = np.arange(n_items)
    else:
        counts = np.bincount(split.observed().items, minlength=n_items)
        counts[split.test_items[split.test_items >= 0]] += 1
        pool = np.flatnonzero(counts < unpopular_below)
    if len(pool) < count:
        raise AttackError(f"targets: only {len(pool)} {kind} items for {count} targets; "
                          "lower targets.count or use another kind")
    return np.sort(rng.choice(pool, size=count, replace=False))


def n_fake_users(n_real_users: int, size: float) -> int:
    if not 0 < size <= 0.5:
        raise AttackError(f"attack.size: {size} is out of range; use a value in (0, 0.5]")
    return max(1, int(n_real_users * size))


def knowledge_view(seen: Interactions, n_users: int, targets: np.ndarray, cost: float,
                   rng: np.random.Generator) -> np.ndarray:
    """The real users the attacker sees: BFS from the targets over the rating graph."""
    want = int(round(cost * n_users))
    if want >= n_users:
        return np.arange(n_users)
    n_items = int(max(seen.items.max(initial=-1), targets.max(initial=-1))) + 1
    chosen = np.zeros(n_users, dtype=bool)
    user_items = seen
    frontier_items = np.zeros(n_items, dtype=bool)
    frontier_items[targets] = True
    while chosen.sum() < want:
        rows = frontier_items[user_items.items]
        hop = np.zeros(n_users, dtype=bool)
        hop[user_items.users[rows]] = True
        hop &= ~chosen
        new = np.flatnonzero(hop)
        if len(new) == 0:  # the graph is exhausted (or targets unrated): fill at random
            new = np.flatnonzero(~chosen)
        room = want - chosen.sum()
        if len(new) > room:
            new = rng.choice(new, size=room, replace=False)
        chosen[new] = True
        frontier_items = np.zeros(n_items, dtype=bool)
        frontier_items[user_items.items[chosen[user_items.users]]] = True
    return np.flatnonzero(chosen)


def filler_size_of(view: Interactions, n_visible_users: int, n_targets: int) -> int:
    """int(ratings / users) of the attacker's data, minus the number of targets."""
    return max(1, int(len(view) / max(n_visible_users, 1)) - n_targets)


@dataclass
class ThreatContext:
    """Everything an attack may use. ``view`` holds the visible real users' ratings with
    global user and item ids; the defender's validation/test split is not part of it.
    ``attacks`` and ``defenses`` are the registries (name → class) of the components an attack
    runs by name (:meth:`Attack.components`: ``adaptive``'s base attack and the defense it
    probes, ``gcoattack``'s defense), handed in by the runner so that attacks never import
    ``defenses/``."""

    view: Interactions
    visible_users: np.ndarray
    n_users: int
    n_items: int
    scale: RatingScale
    targets: np.ndarray
    n_fake: int
    filler_size: int
    feedback: str = "explicit"
    model_cfg: object = None
    device: str = "cpu"
    seed: int = 0
    progress: bool = False
    extra: dict = field(default_factory=dict)
    attacks: Mapping[str, type] = field(default_factory=dict)
    defenses: Mapping[str, type] = field(default_factory=dict)

    def rng(self, *tags) -> np.random.Generator:
        return numpy_rng(self.seed, *tags)

    def component(self, kind: str, name: str, user: str) -> type:
        """The class of attack or defense ``name`` from the context's registries; an
        AttackError naming the missing registry when the context was built without it."""
        registry = self.attacks if kind == "attack" else self.defenses
        if name not in registry:
            raise AttackError(f"attack {user}: the threat context has no {kind} '{name}'; build "
                              f"it with {kind}s=<the {kind} registry> (the runner does)")
        return registry[name]


def sample_fillers(rng: np.random.Generator, n_fake: int, candidates: np.ndarray,
                   size: int) -> np.ndarray:
    """(n_fake, size) distinct items per row, uniform over ``candidates`` (vectorized)."""
    size = min(size, len(candidates))
    keys = rng.random((n_fake, len(candidates)))
    picks = np.argpartition(keys, size - 1, axis=1)[:, :size] if size < len(candidates) \
        else np.tile(np.arange(len(candidates)), (n_fake, 1))
    return candidates[picks]


def profiles_from(items: np.ndarray, ratings: np.ndarray) -> Interactions:
    """Fake profiles from (n_fake, width) item and rating matrices; fake ids are 0..n_fake-1."""
    n_fake, width = items.shape
    users = np.repeat(np.arange(n_fake), width)
    return Interactions(users, items.reshape(-1), ratings.reshape(-1))
