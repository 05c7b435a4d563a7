"""PGA: projected gradient ascent on fake ratings against an MF surrogate (Li, Wang, Singh,
Vorobeychik, "Data Poisoning Attacks on Factorization-Based Collaborative Filtering",
NeurIPS 2016; attacks.md §4).

Each fake user rates the targets at the top rating plus a fixed set of uniformly drawn fillers
(the TCD authors' PGA files show uniform fillers). The filler ratings M̃ are optimized:

1. train the MF surrogate on the attacker's view + the current fake rows;
2. record its target HR@k over the visible users and keep the best iterate;
3. compute the gradient of a hinge promotion loss — for every visible user u and target t the
   user has not rated, max(s_u[k] − p_u·q_t, −κ), s_u[k] the user's k-th best competing score —
   with respect to M̃, through the closed-form ridge solutions of the fake users' factors and
   the targets' factors (``attacks.surrogate``); competing scores stay fixed;
4. step M̃ ← clip(M̃ − α g / rms(g), lowest, top) and repeat.

The best iterate is rounded to the rating grid at the end.

Deviations, and why: Li et al. differentiate the alternating-minimization fixed point through
every factor; the gradient here goes through the fake users' and the targets' ridge solutions
only (the channel through which fake profiles move the targets' scores), which is vectorized
and accurate around the trained surrogate (at λ = 1, cosine ≈ 0.96 between the closed-form and trained
fake-user factors on ML-100K). The surrogate is retrained from the same seeded initialization
for the same number of epochs (chosen once on held-out view ratings, see
``attacks.surrogate``) at every iteration, so the iterates' surrogate HRs compare like for like.
The surrogate is always an MF because the closed form needs a factorization: against a
LightGCN victim the MF surrogate's profiles transfer (``surrogate`` accepts only ``mf``). The initial ratings follow the Average attack (``init: random`` draws
from the global distribution instead). Implicit feedback: fake ratings have no value to
optimize, so the fillers are the uniform set rated 1 (an unoptimized profile).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .base import Attack, global_stats, item_stats
from .surrogate import (MFSurrogate, closed_form_surrogate, ridge_target_factors,
                        ridge_user_factors)
from .threat import AttackError, profiles_from, sample_fillers


@dataclass
class PGAOptions:
    iterations: int = 10         # gradient steps (the surrogate is retrained before each)
    step: float = 0.25           # RMS change of a normalized fake rating per step
    lam: float = 1.0             # ridge λ of the closed-form factor solutions
    k: int = 50                  # top-k of the hinge threshold and of the surrogate HR
    kappa: float = 0.1           # hinge floor: a target already kappa above s_u[k] stops pulling
    surrogate_epochs: int = 0    # surrogate epochs; 0 = best epoch on held-out view ratings
    init: str = "average"        # initial filler ratings: average | random
    surrogate: str = "mf"        # only mf: the closed form needs MF (surrogate.closed_form_surrogate)


class PGAAttack(Attack):
    name = "pga"
    Options = PGAOptions

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        return closed_form_surrogate("pga", super().parse_options(data, where), where)

    def generate(self, ctx):
        opt = self.options
        if opt.init not in ("average", "random"):
            raise AttackError(f"attack.options.pga.init: unknown value '{opt.init}'; "
                              "use average or random")
        if opt.iterations < 0 or opt.step <= 0 or opt.lam <= 0 or opt.k < 1:
            raise AttackError("attack.options.pga: iterations ≥ 0, step > 0, lam > 0, k ≥ 1")
        rng = ctx.rng("attack", self.name)
        n_t = len(ctx.targets)
        excluded = np.zeros(ctx.n_items, dtype=bool)
        excluded[ctx.targets] = True
        fillers = sample_fillers(rng, ctx.n_fake, np.flatnonzero(~excluded), ctx.filler_size)
        items = np.hstack([np.tile(ctx.targets, (ctx.n_fake, 1)), fillers])
        if ctx.feedback == "implicit":
            return profiles_from(items, np.ones(items.shape))

        lo, top = ctx.scale.lowest, 1.0
        if opt.init == "average":
            mean, std = item_stats(ctx.view, ctx.n_items)
            start = rng.normal(mean[fillers], std[fillers])
        else:
            mean, std = global_stats(ctx.view)
            start = rng.normal(mean, std, size=fillers.shape)
        device = torch.device(ctx.device)
        ratings = torch.as_tensor(np.clip(start, lo, top), dtype=torch.float32, device=device)
        target_r = torch.ones(ctx.n_fake, n_t, device=device)
        item_idx = torch.as_tensor(items, device=device)

        surrogate = MFSurrogate(ctx, ctx.n_fake, "pga")
        best_hr, best = -1.0, ratings.clone()
        targets = torch.as_tensor(ctx.targets, device=device)
        eligible = ~surrogate.rated[:, targets]
        bar = tqdm(range(opt.iterations + 1), desc="pga", unit="it", leave=False,
                   disable=not ctx.progress)
        for it in bar:
            fake = profiles_from(items, torch.cat([target_r, ratings], 1).cpu().numpy())
            if it == 0:
                surrogate.calibrate(fake, opt.surrogate_epochs)
            else:
                surrogate.fit(fake)
            hr = surrogate.target_hit_rate(opt.k)
            if hr > best_hr:
                best_hr, best = hr, ratings.clone()
            bar.set_postfix_str(f"surrogate target HR@{opt.k} {hr:.3f} (best {best_hr:.3f})")
            if it == opt.iterations:
                break
            grad = self.rating_gradient(surrogate, item_idx, target_r, ratings, eligible)
            rms = grad.pow(2).mean().sqrt()
            if not torch.isfinite(rms) or rms == 0:
                break
            ratings = (ratings - opt.step * grad / rms).clamp(lo, top)
        out = ctx.scale.project(torch.cat([target_r, best], 1).cpu().numpy())
        return profiles_from(items, out)

    def rating_gradient(self, surrogate: MFSurrogate, item_idx, target_r, ratings,
                        eligible) -> torch.Tensor:
        """∂(hinge promotion loss)/∂(filler ratings) through the ridge solutions."""
        opt = self.options
        users, _, item_f = surrogate.factors()
        threshold = surrogate.top_lists(opt.k)[:, -1:]
        gram, rhs = surrogate.target_raters()
        r = ratings.clone().requires_grad_(True)
        fake_f = ridge_user_factors(item_f[item_idx], torch.cat([target_r, r], 1), opt.lam)
        target_f = ridge_target_factors(gram, rhs, fake_f, opt.lam)
        scores = users @ target_f.T
        gap = (threshold - scores).clamp(min=-opt.kappa)
        loss = (gap * eligible).sum() / eligible.sum().clamp(min=1)
        loss.backward()
        return r.grad
