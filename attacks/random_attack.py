"""Random attack (Lam & Riedl, WWW 2004): filler ratings drawn from N(global mean, global std)
of the attacker's visible ratings; targets at the top rating."""
from __future__ import annotations

from .base import HeuristicAttack, global_stats


class RandomAttack(HeuristicAttack):
    name = "random"

    def filler_ratings(self, ctx, fillers, rng):
        mean, std = global_stats(ctx.view)
        return rng.normal(mean, std, size=fillers.shape)
