"""Bandwagon attack (Mobasher et al., ACM TOIT 2007): the most popular visible items rated at
the top ("selected" items ride the bandwagon), fillers from N(global mean, global std)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import HeuristicAttack, global_stats, popular_items


@dataclass
class BandwagonOptions:
    n_selected: int = 3


class BandwagonAttack(HeuristicAttack):
    name = "bandwagon"
    Options = BandwagonOptions

    def selected_items(self, ctx):
        return popular_items(ctx.view, ctx.n_items, self.options.n_selected, ctx.targets)

    def filler_ratings(self, ctx, fillers, rng):
        mean, std = global_stats(ctx.view)
        return rng.normal(mean, std, size=fillers.shape)
