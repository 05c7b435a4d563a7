"""TNA with S-TNA user selection (Fang, Gong, Liu, "Influence Function based Data Poisoning
Attacks to Top-N Recommender Systems", WWW 2020; attacks.md §5).

Fake users are built one at a time against the MF surrogate, which is retrained after each
one is injected (from its seeded initialization, for the epoch count it chose on held-out view
ratings before the attack; see ``attacks.surrogate``). For a fake user v with relaxed rating
vector w_v ∈ [0, 1]^items:

* loss L(w_v) = mean over users u ∈ S, items i ∈ Γ_u (u's current top-N) and targets t that u
  has not rated, of σ((s_ui − s_ut)/b), plus η ‖w_v‖₁ (η relative to the largest entry of the
  loss gradient, so it is scale-free);
* the gradient flows through the MF solution: v's factor is the ridge fit of the dense vector
  w_v over every item factor, ũ_v = (λI + QᵀQ)⁻¹ Qᵀ w_v, and each target's factor is the ridge
  solution over its raters, the injected fake users and v (``attacks.surrogate``); s_ui stays at
  the surrogate's value;
* projected gradient steps w ← clip(w − α (∇L / ‖∇L‖_∞ + η), 0, 1) from w = 0;
* fillers = the n largest entries of w_v (ties broken by the last gradient), targets at the top;
  the fillers' ratings start at w and are refined by the same loss through the fake user's exact
  sparse ridge solution (its Gram over the chosen items only), then rounded to the grid.

S-TNA: S is the most influential fraction of the visible users who miss at least one target.
A user's influence is the first-order change of the summed target scores when their ratings
are removed, −∇f(θ)ᵀ H⁻¹ ∇_θ ℓ_u (Koh & Liang), with H the damped Gauss–Newton Hessian of the
surrogate's squared loss; one inverse-Hessian-vector product H⁻¹∇f (conjugate gradient,
matrix-free Hessian-vector products over the rating list) serves every user, and the per-user
dot products are one scatter over the ratings. Users are ranked by the magnitude of their
influence and the top ``user_fraction`` kept (``user_fraction: 1`` is plain TNA).

Deviations, and why: Fang et al. propagate the gradient through the full MF optimum with
influence functions; the two ridge solutions above carry the same dependence of the targets'
scores on the fake ratings, batched and exact around the trained surrogate. The inverse HVP uses
conjugate gradient instead of LiSSA (same quantity; CG converges on a damped PSD system without a
scale hyper-parameter). With more than 30 fake users (ML-1M: 181) the surrogate is retrained
after every ``retrain_every`` of them (auto: at most 30 retrains) and the fake users in between
enter the targets' ridge solutions through their closed-form factors, which keeps the attack's
cost bounded; on ML-100K and FilmTrust it retrains after every fake user. The surrogate is an
MF because the closed form needs a factorization (against a LightGCN victim its profiles
transfer; ``surrogate`` accepts only ``mf``). Implicit feedback: the fillers are chosen by
the same relaxation and rated 1 (no value refinement).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from data.ratings import Interactions

from .base import Attack
from .surrogate import (MFSurrogate, closed_form_surrogate, ridge_target_factors,
                        ridge_user_factors)
from .threat import AttackError, profiles_from


@dataclass
class TNAOptions:
    top_n: int = 50              # |Γ_u|: each user's current top-N list
    b: float = 0.05              # sigmoid temperature (normalized rating units)
    eta: float = 0.1             # ℓ1 weight, relative to the largest loss-gradient entry
    steps: int = 30              # projected-gradient steps on the relaxed vector w_v
    step: float = 0.1            # step size α of those steps
    refine_steps: int = 10       # steps on the chosen fillers' ratings (RMS step α)
    lam: float = 1.0             # ridge λ of the closed-form factor solutions
    user_fraction: float = 0.5   # S-TNA: fraction of influential users kept in S (1 = TNA)
    cg_steps: int = 30           # conjugate-gradient steps of the inverse HVP
    damping: float = 0.01        # damping of the Gauss–Newton Hessian
    surrogate_epochs: int = 0    # surrogate epochs; 0 = best epoch on held-out view ratings
    retrain_every: int = 0       # retrain after this many fake users (folding the others in by
                                 # their closed-form factors); 0 = auto, at most 30 retrains
    surrogate: str = "mf"        # only mf: the closed form needs MF (surrogate.closed_form_surrogate)


class TNAAttack(Attack):
    name = "tna"
    Options = TNAOptions

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        return closed_form_surrogate("tna", super().parse_options(data, where), where)

    def generate(self, ctx):
        opt = self.options
        if not 0 < opt.user_fraction <= 1:
            raise AttackError("attack.options.tna.user_fraction: use a value in (0, 1]")
        if opt.top_n < 1 or opt.b <= 0 or opt.lam <= 0 or opt.steps < 1 or opt.step <= 0:
            raise AttackError("attack.options.tna: top_n ≥ 1, b > 0, lam > 0, steps ≥ 1, "
                              "step > 0")
        device = torch.device(ctx.device)
        n_t, width = len(ctx.targets), ctx.filler_size
        targets = torch.as_tensor(ctx.targets, device=device)
        surrogate = MFSurrogate(ctx, ctx.n_fake, "tna")
        surrogate.calibrate(None, opt.surrogate_epochs)
        eligible = ~surrogate.rated[:, targets]
        selected = self.influential_users(surrogate, eligible)
        items = np.zeros((ctx.n_fake, n_t + width), dtype=np.int64)
        ratings = np.zeros((ctx.n_fake, n_t + width), dtype=np.float32)
        candidates = torch.ones(ctx.n_items, dtype=torch.bool, device=device)
        candidates[targets] = False
        width = min(width, int(candidates.sum()))
        every = opt.retrain_every or -(-ctx.n_fake // 30)
        folded: list[torch.Tensor] = []  # factors of the fake users since the last retrain
        bar = tqdm(range(ctx.n_fake), desc="tna", unit="fake user", leave=False,
                   disable=not ctx.progress)
        for v in bar:
            if v > 0 and v % every == 0:
                fake = profiles_from(items[:v, :n_t + width], ratings[:v, :n_t + width])
                surrogate.fit(fake)
                folded = []
            problem = self.Problem(self, surrogate, selected, eligible, v - len(folded), folded)
            w, grad = problem.relaxed_profile(candidates)
            # Ties in w (many entries at 0 or 1) go to the items the loss pulls hardest.
            tie_break = grad / grad.abs().max().clamp(min=1e-30)
            key = torch.where(candidates, w - 1e-4 * tie_break, torch.full_like(w, -np.inf))
            chosen = key.topk(width).indices
            if ctx.feedback == "implicit":
                values = torch.ones(width, device=device)
            else:
                values = problem.refine(chosen, w[chosen].clamp(min=ctx.scale.lowest))
                values = ctx.scale.project(values)
            if every > 1:
                folded.append(problem.sparse_factor(chosen, values))
            items[v, :n_t] = ctx.targets
            items[v, n_t:n_t + width] = chosen.cpu().numpy()
            ratings[v, :n_t] = 1.0
            ratings[v, n_t:n_t + width] = values.cpu().numpy()
        return profiles_from(items[:, :n_t + width], ratings[:, :n_t + width])

    # ------------------------------------------------------------------ S-TNA
    def influential_users(self, surrogate: MFSurrogate, eligible: torch.Tensor) -> torch.Tensor:
        """Visible users in S (indices), ranked by |influence| on the summed target scores."""
        opt = self.options
        pool = torch.nonzero(eligible.any(1)).squeeze(1)
        if opt.user_fraction >= 1 or len(pool) <= 1:
            return pool
        users, _, items = surrogate.factors()
        real: Interactions = surrogate.real
        u = torch.as_tensor(real.users, device=users.device)
        i = torch.as_tensor(real.items, device=users.device)
        r = torch.as_tensor(real.ratings, device=users.device)
        targets = torch.as_tensor(surrogate.ctx.targets, device=users.device)
        # f = Σ_{eligible (u, t)} p_u · q_t; its gradient in the (P, Q) blocks.
        elig = eligible.float()
        grad_p = elig @ items[targets]
        grad_q = torch.zeros_like(items)
        grad_q[targets] = elig.T @ users
        sol_p, sol_q = conjugate_gradient(users, items, u, i, grad_p, grad_q,
                                          opt.damping, opt.cg_steps)
        # ∇_θ ℓ_u for u's ratings: 2 e_uj (q_j on p_u, p_u on q_j); its dot with H⁻¹∇f.
        err = (users[u] * items[i]).sum(1) - r
        per_rating = 2 * err * ((sol_p[u] * items[i]).sum(1) + (users[u] * sol_q[i]).sum(1))
        influence = torch.zeros(len(users), device=users.device).index_add_(0, u, per_rating)
        keep = max(1, int(round(opt.user_fraction * len(pool))))
        order = torch.argsort(influence[pool].abs(), descending=True, stable=True)
        return torch.sort(pool[order[:keep]]).values

    # ------------------------------------------------------------------ one fake user
    class Problem:
        """The loss of one fake user, given the surrogate after the previous injections."""

        def __init__(self, attack: "TNAAttack", surrogate: MFSurrogate, selected, eligible,
                     n_trained: int, folded: list[torch.Tensor]) -> None:
            self.opt = attack.options
            users, fake_f, self.items = surrogate.factors()
            self.users = users[selected]
            self.eligible = eligible[selected].float()
            # Injected fake users: those the surrogate was trained with, then the folded ones.
            self.previous = torch.cat([fake_f[:n_trained]] + [f.unsqueeze(0) for f in folded])
            self.gram, self.rhs = surrogate.target_raters()
            self.competitors = surrogate.top_lists(self.opt.top_n)[selected]
            self.targets = torch.as_tensor(surrogate.ctx.targets, device=users.device)
            self.lowest = surrogate.ctx.scale.lowest

        def loss(self, fake_factor: torch.Tensor) -> torch.Tensor:
            factors = torch.cat([self.previous, fake_factor.unsqueeze(0)])
            target_f = ridge_target_factors(self.gram, self.rhs, factors, self.opt.lam)
            t_scores = self.users @ target_f.T                            # (|S|, T)
            diff = (self.competitors.unsqueeze(2) - t_scores.unsqueeze(1)) / self.opt.b
            per_pair = torch.sigmoid(diff).mean(1)                        # (|S|, T)
            return (per_pair * self.eligible).sum() / self.eligible.sum().clamp(min=1)

        def relaxed_profile(self, candidates: torch.Tensor):
            """Projected gradient on the dense relaxed rating vector w ∈ [0, 1]^items."""
            opt, q = self.opt, self.items
            d = q.shape[1]
            # ũ(w) = (λI + QᵀQ)⁻¹ Qᵀ w = Mᵀ w with M = Q (λI + QᵀQ)⁻¹ (computed once).
            gram = q.T @ q + opt.lam * torch.eye(d, device=q.device)
            m = torch.linalg.solve(gram, q.T).T                          # (items, d)
            target_part = m[self.targets].sum(0)                         # targets rated 1
            w = torch.zeros(len(q), device=q.device)
            grad = torch.zeros_like(w)
            for _ in range(opt.steps):
                w_var = w.clone().requires_grad_(True)
                loss = self.loss(target_part + m.T @ w_var)
                (grad,) = torch.autograd.grad(loss, w_var)
                grad = grad.masked_fill(~candidates, 0.0)
                scale = grad.abs().max()
                if not torch.isfinite(scale) or scale == 0:
                    break
                w = (w - opt.step * (grad / scale + opt.eta)).clamp(0.0, 1.0)
                w = w.masked_fill(~candidates, 0.0)
            return w, grad

        def sparse_factor(self, chosen: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            """The fake user's factor from its final profile (targets at the top + fillers)."""
            idx = torch.cat([self.targets, chosen]).unsqueeze(0)
            r = torch.cat([torch.ones(len(self.targets), device=values.device), values])
            return ridge_user_factors(self.items[idx], r.unsqueeze(0), self.opt.lam)[0]

        def refine(self, chosen: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
            """Refine the chosen fillers' ratings through the exact sparse ridge solution."""
            opt, q = self.opt, self.items
            idx = torch.cat([self.targets, chosen]).unsqueeze(0)
            n_t = len(self.targets)
            values = start.clone()
            for _ in range(opt.refine_steps):
                var = values.clone().requires_grad_(True)
                r = torch.cat([torch.ones(n_t, device=q.device), var]).unsqueeze(0)
                fake_factor = ridge_user_factors(q[idx], r, opt.lam)[0]
                (grad,) = torch.autograd.grad(self.loss(fake_factor), var)
                rms = grad.pow(2).mean().sqrt()
                if not torch.isfinite(rms) or rms == 0:
                    break
                values = (values - opt.step * grad / rms).clamp(self.lowest, 1.0)
            return values.detach()


def conjugate_gradient(users, items, u, i, rhs_p, rhs_q, damping: float, steps: int):
    """Solve (JᵀJ + damping·I) x = rhs for the MF squared loss's Gauss–Newton matrix, where J is
    the Jacobian of the residuals p_u·q_i over the rating list (u, i); x = (x_P, x_Q)."""

    def hvp(xp, xq):
        jx = (xp[u] * items[i]).sum(1) + (users[u] * xq[i]).sum(1)
        hp = torch.zeros_like(xp).index_add_(0, u, jx.unsqueeze(1) * items[i])
        hq = torch.zeros_like(xq).index_add_(0, i, jx.unsqueeze(1) * users[u])
        return hp + damping * xp, hq + damping * xq

    xp, xq = torch.zeros_like(rhs_p), torch.zeros_like(rhs_q)
    rp, rq = rhs_p.clone(), rhs_q.clone()
    dp, dq = rp.clone(), rq.clone()
    rr = (rp * rp).sum() + (rq * rq).sum()
    for _ in range(steps):
        if rr <= 1e-20:
            break
        hp, hq = hvp(dp, dq)
        alpha = rr / ((dp * hp).sum() + (dq * hq).sum())
        xp, xq = xp + alpha * dp, xq + alpha * dq
        rp, rq = rp - alpha * hp, rq - alpha * hq
        rr_new = (rp * rp).sum() + (rq * rq).sum()
        dp, dq = rp + (rr_new / rr) * dp, rq + (rr_new / rr) * dq
        rr = rr_new
    return xp, xq
