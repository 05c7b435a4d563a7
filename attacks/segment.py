"""Segment attack (Mobasher et al., ACM TOIT 2007): promote the targets to a segment of users
with shared taste — the selected items are the items that segment likes most, rated at the
top, and the fillers get the lowest rating so that fake users resemble the segment only through
the selected items.

The segment: the attacker's knowledge-cost view is a breadth-first neighbourhood of the targets,
so its users are the target's natural audience; the selected items are the items those users
most often like (normalized rating ≥ 0.8). Mobasher et al. pick a genre by hand; this keeps
the choice automatic and inside the attacker's knowledge.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import HeuristicAttack, HeuristicOptions, popular_items


@dataclass
class SegmentOptions(HeuristicOptions):
    n_selected: int = 3


class SegmentAttack(HeuristicAttack):
    name = "segment"
    Options = SegmentOptions

    def selected_items(self, ctx):
        return popular_items(ctx.view, ctx.n_items, self.options.n_selected, ctx.targets,
                             liked_only=True)

    def filler_ratings(self, ctx, fillers, rng):
        return np.full(fillers.shape, ctx.scale.lowest)
