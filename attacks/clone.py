"""Profile cloning (camouflage): each fake user copies a whole real profile from the attacker's
knowledge view and adds the targets at the top rating (threat-model.md §2; the camouflage
attacks that detection papers guard against, e.g. Hooi et al., "FRAUDAR: Bounding Graph Fraud
in the Face of Camouflage", KDD 2016, and the obfuscated shilling profiles of Williams, Mobasher
& Burke, 2007).

A cloned profile's activity, fillers and rating distribution are a real user's, so per-user
statistics (reach, rating deviation, similarity to neighbours) look normal; only the targets
are the payload. Options:

* ``subsample`` — the fraction of each source profile's ratings kept (at least one), drawn at
  random; 1 copies the whole profile.
* ``noise`` — standard deviation, in normalized rating units, of Gaussian noise added to each
  copied rating before it is projected back onto the rating grid (0: exact copies).
* ``max_items`` — an upper bound on the copied ratings per fake user (0: no bound); the
  configured filler size does not apply, a clone is as long as the profile it copies.
* ``target_rating`` — the normalized rating the targets get (1: the top of the scale; a lower
  one, projected onto the grid, probes defenses that only read top ratings).

Source users are drawn without replacement from the visible users (with replacement only when
there are more fake users than visible ones). Targets that a source user rated are replaced by
the top rating, never duplicated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data.ratings import Interactions
from utils.config import bounds

from .base import Attack
from .threat import ThreatContext


@dataclass
class CloneOptions:
    subsample: float = field(default=1.0, metadata=bounds(0, 1, lo_open=True))
    noise: float = field(default=0.0, metadata=bounds(0))
    max_items: int = field(default=0, metadata=bounds(0))
    target_rating: float = field(default=1.0, metadata=bounds(0, 1, lo_open=True))


class CloneAttack(Attack):
    name = "clone"
    Options = CloneOptions

    def generate(self, ctx: ThreatContext) -> Interactions:
        opt = self.options
        rng = ctx.rng("attack", self.name)
        visible = np.asarray(ctx.visible_users)
        if len(visible) == 0:
            raise ValueError("attack clone: the knowledge view holds no user to copy; raise "
                             "attack.knowledge_cost")
        replace = ctx.n_fake > len(visible)
        sources = rng.choice(visible, size=ctx.n_fake, replace=replace)
        view = ctx.view
        # Rows of the view per fake user: a source user's rows, gathered by sorting once.
        order = np.argsort(view.users, kind="stable")
        sorted_users = view.users[order]
        starts = np.searchsorted(sorted_users, sources, side="left")
        stops = np.searchsorted(sorted_users, sources, side="right")
        lengths = stops - starts
        fake_of_row = np.repeat(np.arange(ctx.n_fake), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows = order[np.repeat(starts, lengths) + offsets]
        items, ratings = view.items[rows], view.ratings[rows].astype(np.float64)
        keep = ~np.isin(items, ctx.targets)
        # Subsampling and the length bound: a random rank per kept row within its fake user.
        keys = rng.random(len(rows))
        mine = np.bincount(fake_of_row, weights=keep, minlength=ctx.n_fake)
        limit = np.maximum(np.ceil(opt.subsample * mine), 1)
        if opt.max_items:
            limit = np.minimum(limit, opt.max_items)
        rank = _rank_within(fake_of_row[keep], keys[keep])
        chosen = np.zeros(len(rows), dtype=bool)
        chosen[np.flatnonzero(keep)[rank < limit[fake_of_row[keep]]]] = True
        items, ratings, users = items[chosen], ratings[chosen], fake_of_row[chosen]
        if ctx.feedback == "implicit":
            ratings = np.ones(len(items))
        elif opt.noise > 0:
            ratings = ctx.scale.project(ratings + rng.normal(0.0, opt.noise, len(ratings)))
        target_users = np.repeat(np.arange(ctx.n_fake), len(ctx.targets))
        target_items = np.tile(ctx.targets, ctx.n_fake)
        users = np.concatenate([users, target_users])
        items = np.concatenate([items, target_items])
        payload = 1.0 if ctx.feedback == "implicit" else float(
            ctx.scale.project(np.array(opt.target_rating)))
        ratings = np.concatenate([ratings, np.full(len(target_items), payload)])
        order = np.lexsort((items, users))
        return Interactions(users[order], items[order], ratings[order])


def _rank_within(groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Rank of each element within its group by ascending key (0 = smallest)."""
    order = np.lexsort((keys, groups))
    counts = np.bincount(groups[order])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - np.repeat(starts, counts)
    return rank
