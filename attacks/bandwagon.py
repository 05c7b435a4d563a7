"""Bandwagon attack (Mobasher et al., ACM TOIT 2007): the most popular visible items rated at
the top ("selected" items ride the bandwagon), fillers from N(global mean, global std).

Implicit feedback follows the NDSS authors' baseline (Huang et al., NDSS 2021,
``MiracleHH/RecommPoison`` ``attacks/bandwagon_attack.py``): there is no rating to give the
selected items, so popularity enters through the fillers instead — round(10%) of each fake user's
fillers are drawn uniformly from the 10% most popular items of the attacker's view, the rest
uniformly from the other items; every filler is a positive. With ``fillers: view`` (see
``attacks/base.py``) both draws keep to the items rated in the attacker's view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import HeuristicAttack, HeuristicOptions, filler_pool, global_stats, popular_items
from .threat import profiles_from, sample_fillers

POPULAR_SHARE = 0.1  # implicit: share of fillers, and of items counted as popular (NDSS code)


@dataclass
class BandwagonOptions(HeuristicOptions):
    n_selected: int = 3


class BandwagonAttack(HeuristicAttack):
    name = "bandwagon"
    Options = BandwagonOptions

    def selected_items(self, ctx):
        return popular_items(ctx.view, ctx.n_items, self.options.n_selected, ctx.targets)

    def filler_ratings(self, ctx, fillers, rng):
        mean, std = global_stats(ctx.view)
        return rng.normal(mean, std, size=fillers.shape)

    def generate(self, ctx):
        if ctx.feedback != "implicit":
            return super().generate(ctx)
        rng = ctx.rng("attack", self.name, "implicit")
        n_popular_items = int(round(ctx.n_items * POPULAR_SHARE))
        popular = popular_items(ctx.view, ctx.n_items, n_popular_items, ctx.targets)
        pool = filler_pool(ctx, self.options)
        popular = np.setdiff1d(popular[pool[popular]], ctx.targets)
        rest = np.setdiff1d(np.flatnonzero(pool), np.concatenate([popular, ctx.targets]))
        size = min(ctx.filler_size, len(popular) + len(rest))
        n_from_popular = min(int(round(size * POPULAR_SHARE)), len(popular))
        fillers = np.hstack([sample_fillers(rng, ctx.n_fake, popular, n_from_popular),
                             sample_fillers(rng, ctx.n_fake, rest, size - n_from_popular)])
        items = np.hstack([np.tile(ctx.targets, (ctx.n_fake, 1)), fillers])
        return profiles_from(items, np.ones(items.shape))
