"""Average attack (Lam & Riedl, WWW 2004): each filler rating drawn from N(item mean, item std)
of the attacker's visible ratings (global values for items the attacker has not seen)."""
from __future__ import annotations

from .base import HeuristicAttack, item_stats


class AverageAttack(HeuristicAttack):
    name = "average"

    def filler_ratings(self, ctx, fillers, rng):
        mean, std = item_stats(ctx.view, ctx.n_items)
        return rng.normal(mean[fillers], std[fillers])
