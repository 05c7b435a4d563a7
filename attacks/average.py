"""Average attack (Lam & Riedl, WWW 2004): each filler rating drawn from N(item mean, item std)
of the attacker's visible ratings; targets at the top rating.

Options (besides the heuristic attacks' ``fillers``, see ``attacks/base.py``):

* ``unseen`` — the statistics of a filler item that no user of the attacker's view has rated:
  ``global`` (default): the view's global mean and std, as the AUSH authors' baseline generator
  does for items without ratings (``XMUDM/ShillingAttack``
  ``AUSH/utils/load_data/load_data.py``, ``get_all_mean_std``); ``top``: the top rating with no
  noise — the per-item statistics the TCD authors' data class computes on the knowledge view
  (``greensun0830/TCD`` ``Dataset.py``: ``get_subdata`` recomputes ``item_distribution`` on the
  view's rows, and an item without ratings gets mean 1.0 of the normalized scale, std 0). The
  TCD repository holds no attack generator (only the c = 0.4 poison files), so whether the
  authors' Average read those statistics cannot be established; ``top`` is that reading.

Knowledge cost (issue 19; ``python benchmarks/knowledge_cost.py``, ML-100K, undefended MF,
3 % attacks, 3 seeds). Under the default the attack does not get weaker with more knowledge:
the decline seen in the Table 2 preset (unpopular targets, target_hr_all@50 0.557 ± 0.171 at
c = 0.2 to 0.381 ± 0.244 at c = 1.0) appears as well when every column sees the full data and only
the per-cell random draws (filler items and ratings, victim initialization; they are seeded per
knowledge cost) differ (0.495 ± 0.075 to 0.381 ± 0.244); one cell's draw noise alone is ±0.17.
With the draws shared across c, the curve is flat (0.370 ± 0.188, 0.386, 0.349, 0.357,
0.401 ± 0.083), and so it stays with the view's item statistics replaced by the full data's, or
with the filler size fixed. What does move it: ``unseen: top`` (0.195 ± 0.195 at c = 0.2 rising to
0.401 at c = 1.0, every seed lower at 0.2; random targets 0.057 to 0.079) — at c = 0.2 the view
misses 4–12 % of the items, and fillers rated at the top on items no real user in the view has
rated pull the targets toward the obscure items. That is the direction of the TCD paper's
Table 2; ``fillers: view`` goes the other way (0.504 at c = 0.2 to 0.401 at c = 1.0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import HeuristicAttack, HeuristicOptions, FILLER_POOLS, item_stats

UNSEEN = ("global", "top")


@dataclass
class AverageOptions(HeuristicOptions):
    unseen: str = "global"   # items unrated in the view: global (mean, std) | top (std 0)


class AverageAttack(HeuristicAttack):
    name = "average"
    Options = AverageOptions
    choices = {"fillers": FILLER_POOLS, "unseen": UNSEEN}

    def filler_ratings(self, ctx, fillers, rng):
        mean, std = item_stats(ctx.view, ctx.n_items)
        if self.options.unseen == "top":
            unseen = np.bincount(ctx.view.items, minlength=ctx.n_items) == 0
            mean, std = np.where(unseen, 1.0, mean), np.where(unseen, 0.0, std)
        return rng.normal(mean[fillers], std[fillers])
