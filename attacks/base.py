"""The attack interface: an attack turns a :class:`ThreatContext` into fake profiles.

``generate`` returns an :class:`Interactions` whose user ids are 0..n_fake−1 (the pipeline
appends them after the real users) with normalized ratings on the rating grid. Each attack
declares an ``Options`` dataclass; ``attack.options.<name>`` in the config is validated
against it before any work starts (unknown keys, wrong types, and for string options listed in
the attack's ``choices`` an unknown value are config errors).

The heuristic attacks (Random, Average, Bandwagon, Segment) share the option ``fillers``, the
pool the fillers are drawn from:

* ``all`` (default): uniform over every item but the targets and the selected items. The
  knowledge view limits the attacker's *ratings* (users), not its item catalogue — item ids
  stay global, as in the TCD authors' ``Dataset.get_subdata`` (which keeps every item column),
  the AUSH authors' baseline generator (``XMUDM/ShillingAttack``
  ``AUSH/model/attack_model/baseline.py``: uniform over all items but the target), and the
  uniform fillers of the TCD authors' Random/Average poison files.
* ``view``: uniform over the items rated by at least one user of the attacker's view, the
  reading "an attacker only knows the items it has seen ratings of". On ML-100K it drops
  4–12 % of the items at c = 0.2 and none at c = 1.0. Average then never falls back to the
  global mean for a filler.

What moves target HR across knowledge costs on ML-100K (``benchmarks/knowledge_cost.py``):
see the docstring of ``attacks/average.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from data.ratings import Interactions
from utils.config import options_from

from .threat import ThreatContext, profiles_from, sample_fillers


@dataclass
class NoOptions:
    pass


FILLER_POOLS = ("all", "view")


@dataclass(frozen=True)
class Component:
    """Another registered attack or defense that an attack runs by name, named by one of its
    options. The runner hands the registries to the attack in its :class:`ThreatContext`; the
    config check (``experiment/validation.py``) rejects, before any work, a name that is not
    registered or that ``accepts`` refuses, with ``problem`` saying why."""

    kind: str                 # "attack" | "defense"
    name: str
    option: str               # the option that names it (error messages)
    accepts: Callable[[str, type], bool] = lambda name, cls: True   # (name, class) → usable?
    problem: str = "cannot serve here"


@dataclass
class HeuristicOptions:
    fillers: str = "all"     # filler pool: all (every non-target item) | view (rated in the view)


class Attack:
    name = "attack"
    Options: type = NoOptions
    choices: dict[str, tuple[str, ...]] = {}   # option → its valid values (checked on parse)

    def __init__(self, options=None) -> None:
        self.options = options if options is not None else self.Options()

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        return options_from(cls.Options, data, where, cls.choices)

    @classmethod
    def components(cls, options) -> list[Component]:
        """The other registered components this attack runs, named by its options. A lookup by
        name is invisible to the import graph, so their sources join this attack's cache keys
        through this list, and the config check validates their names through it."""
        return []

    def generate(self, ctx: ThreatContext) -> Interactions:
        raise NotImplementedError


class HeuristicAttack(Attack):
    """Targets at the top rating, optional selected items, uniform fillers (attacks.md §2)
    from the pool named by the ``fillers`` option."""

    Options: type = HeuristicOptions
    choices = {"fillers": FILLER_POOLS}

    def selected_items(self, ctx: ThreatContext) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def selected_rating(self, ctx: ThreatContext) -> float:
        return 1.0

    def filler_ratings(self, ctx: ThreatContext, fillers: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def generate(self, ctx: ThreatContext) -> Interactions:
        rng = ctx.rng("attack", self.name)
        selected = self.selected_items(ctx)
        excluded = np.zeros(ctx.n_items, dtype=bool)
        excluded[ctx.targets] = True
        excluded[selected] = True
        fillers = sample_fillers(rng, ctx.n_fake, np.flatnonzero(filler_pool(ctx, self.options)
                                                                & ~excluded), ctx.filler_size)
        if ctx.feedback == "implicit":
            filler_r = np.ones(fillers.shape)
        else:
            filler_r = ctx.scale.project(self.filler_ratings(ctx, fillers, rng))
        fixed = np.concatenate([ctx.targets, selected])
        fixed_r = np.concatenate([np.ones(len(ctx.targets)),
                                  np.full(len(selected), self.selected_rating(ctx))])
        items = np.hstack([np.tile(fixed, (ctx.n_fake, 1)), fillers])
        ratings = np.hstack([np.tile(fixed_r, (ctx.n_fake, 1)), filler_r])
        return profiles_from(items, ratings)


def filler_pool(ctx: ThreatContext, options) -> np.ndarray:
    """(n_items,) bool: the items fillers may be drawn from (``fillers`` option): every item, or
    only the items some user of the attacker's view has rated."""
    if getattr(options, "fillers", "all") == "all":
        return np.ones(ctx.n_items, dtype=bool)
    return np.bincount(ctx.view.items, minlength=ctx.n_items) > 0


def global_stats(view: Interactions) -> tuple[float, float]:
    return float(view.ratings.mean()), float(view.ratings.std())


def item_stats(view: Interactions, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-item mean and std of the visible ratings; unseen (or single-rating) items get the
    global values."""
    g_mean, g_std = global_stats(view)
    count = np.bincount(view.items, minlength=n_items)
    total = np.bincount(view.items, weights=view.ratings, minlength=n_items)
    sq = np.bincount(view.items, weights=view.ratings.astype(np.float64) ** 2, minlength=n_items)
    mean = np.where(count > 0, total / np.maximum(count, 1), g_mean)
    var = np.where(count > 1, sq / np.maximum(count, 1) - mean ** 2, g_std ** 2)
    return mean, np.sqrt(np.maximum(var, 0.0))


def popular_items(view: Interactions, n_items: int, n: int, exclude: np.ndarray,
                  liked_only: bool = False) -> np.ndarray:
    """The ``n`` items with most (liked, if asked: normalized rating ≥ 0.8) visible ratings."""
    rows = view.ratings >= 0.8 - 1e-6 if liked_only else slice(None)
    count = np.bincount(view.items[rows], minlength=n_items).astype(float)
    count[exclude] = -1
    order = np.lexsort((np.arange(n_items), -count))
    return np.sort(order[:n])
