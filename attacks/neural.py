"""Neural poisoning attack on deep-learning recommenders (Huang, Mu, Gong, Zhang, Zhang, "Data
Poisoning Attacks to Deep Learning Based Recommender Systems", NDSS 2021; authors' code
``MiracleHH/RecommPoison`` ``attacks/main.py``; attacks.md §6).

Fake users are made one at a time (``users_per_model`` = s at a time, an option). For each:

1. the fake user(s) join the attacker's data with the targets only, and a fresh *poison model*
   (the surrogate: the victim's family by default, NCF or MF, either feedback mode; MF for a
   LightGCN victim, ``surrogate: victim`` trains a LightGCN) is trained for
   ``epochs`` epochs, keeping the best epoch on the attacker's own held-out data (validation
   HR@10 in implicit mode, MSE in explicit mode);
2. ``rounds`` rounds of: steps on the hit-ratio surrogate λ·η·Σ_u g(u) with
   g(u) = max(log ŷ_{u,[K]} − log ŷ_{u,t}, −κ) (ŷ_{u,[K]} the K-th highest score among u's
   unrated items, u ranging over the visible users who have not rated t, summed over targets),
   one step on λ·‖ŷ_v‖² (the new fake users' scores on every non-target item), one normal
   training epoch; the model is kept when its target HR@K over the visible users improves;
3. fillers = the top-n items of ŷ_v ⊙ p, where p is a per-item selection probability: the chosen
   items' p is multiplied by ``decay``, and p is reset to 1 once every entry is below 1, so
   successive fake users spread over more items;
4. the fake user is added with its fillers: implicit, as positives (the trainer draws 4 negatives
   per positive each epoch); explicit, rated with the poison model's predictions projected onto
   the rating grid (targets at the top rating).

Scores ŷ are probabilities: sigmoid(logit) in implicit mode (the authors' NeuMF output), the
model's prediction in explicit mode (NCF's sigmoid output; MF's raw score, floored at 1e-6 inside
the log). Defaults are the authors' README command (κ 1, η 100 = ``reg_u``, λ 0.01 = ``alpha``,
decay 0.9, 5 rounds, 20 epochs, K 10); their argparse defaults (κ 0, reg_u 0) switch the
hit-ratio term off, so the README values are the ones the paper's numbers come from.

Deviations, and why:
- Several targets (the package's threat model): every fake user rates all targets, g is summed
  over (user, target) pairs with the user eligible for that target, and the kept model is the
  one with the best mean target HR.
- The hit-ratio steps are batched: the visible users are shuffled and taken
  ``attack_batch_users`` at a time, one Adam step per batch on the summed g, with the full
  score rows of a batch computed at once (``score_all``). The authors take one step per user
  (hundreds of steps per round, each with one user's item list); batching keeps the direction
  and cuts the cost to a few vectorized steps per round.
- The attacker's held-out data is a random ``val_fraction`` of its own view (the authors select
  on the defender's test split, which an attacker does not have).
- Visible users and fakes get compact ids in the poison model (as in ``attacks/surrogate.py``).
- ``max_poison_models`` (off by default) caps the number of poison models by raising s to
  ceil(m / cap): the cost is about (m / s) × 25 poison-model epochs, and the NDSS preset uses
  a cap of 10 so that its 3% and 5% cells stay within an hour per seed on two cores.
- ``filler_score: lift`` (an option; the default ``score`` is the authors' rule) ranks items by
  ŷ_v / exp(mean_u log ŷ_{u,i}) — the fake user's predicted probability over a typical real
  user's — instead of ŷ_v. On implicit ML-100K the authors' rule picks the most popular items
  (median filler popularity ≈ 180–260 ratings vs ≈ 25 for uniform fillers) because a fake user
  with a handful of ratings is scored mostly by the items' popularity; popular fillers move the
  targets' median rank up a lot but rarely into a top-10 that those same items occupy. The lift
  removes the part of ŷ_v every user shares. Both are reported by ``configs/ndss.yaml``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from data.ratings import Interactions
from models import build_model
from models.trainer import Trainer
from utils.config import ConfigError, bounds
from utils.seeding import torch_generator

from .base import Attack
from .surrogate import surrogate_choices, surrogate_config
from .threat import AttackError, ThreatContext, profiles_from

MIN_PROB = 1e-6  # floor of explicit-mode scores inside the log (MF scores are unbounded)


@dataclass
class NeuralOptions:
    kappa: float = field(default=1.0, metadata=bounds(0))          # hinge floor κ
    eta: float = field(default=100.0, metadata=bounds(0))          # η: weight of Σ g(u)
    lam: float = field(default=0.01, metadata=bounds(0))           # λ: weight of the objective
    decay: float = field(default=0.9, metadata=bounds(0, 1, lo_open=True))  # p ← p · decay
    rounds: int = field(default=5, metadata=bounds(0))
    epochs: int = field(default=20, metadata=bounds(1))            # poison-model training
    top_k: int = field(default=10, metadata=bounds(1))             # K of g(u) and target HR
    n_fillers: int | None = field(default=None, metadata=bounds(1))  # None: threat model's size
    users_per_model: int = field(default=1, metadata=bounds(1))    # s
    max_poison_models: int | None = field(default=None, metadata=bounds(1))  # caps m / s
    attack_batch_users: int = field(default=32, metadata=bounds(1))
    # The poison model (attacks/surrogate.py surrogate_config): None/auto = the victim's class
    # (MF or NCF; MF for a graph victim), victim = the victim's class whatever it is, or a model.
    surrogate: str | None = None
    val_fraction: float = field(default=0.1, metadata=bounds(0, 1, hi_open=True))
    filler_score: str = "score"   # score: ŷ_v (the authors'); lift: ŷ_v / typical user's ŷ

    def __post_init__(self) -> None:
        if self.filler_score not in ("score", "lift"):
            raise ConfigError(f"filler_score: unknown rule '{self.filler_score}'; use score "
                              "(the authors' ŷ_v) or lift")
        if self.surrogate is not None and self.surrogate not in surrogate_choices():
            raise ConfigError(f"surrogate: unknown model '{self.surrogate}'; use "
                              f"{', '.join(surrogate_choices())} or null (auto)")


def hit_ratio_hinge(log_scores: torch.Tensor, rated: torch.Tensor, targets: torch.Tensor,
                    eligible: torch.Tensor, k: int, kappa: float) -> torch.Tensor:
    """g(u, t) = max(log ŷ_{u,[K]} − log ŷ_{u,t}, −κ) for a batch of users.

    ``log_scores`` (B, I) are log ŷ; ``rated`` (B, I) marks each user's rated items, which are
    not candidates for the K-th place; ``eligible`` (B, T) marks the pairs that count (the user
    has not rated t); ineligible pairs are 0. Returns (B, T)."""
    unrated = log_scores.masked_fill(rated, float("-inf"))
    kth = unrated.topk(min(k, unrated.shape[1]), dim=1).values[:, -1:]
    g = torch.clamp(kth - log_scores[:, targets], min=-kappa)
    return torch.where(eligible, g, torch.zeros_like(g))


class NeuralAttack(Attack):
    name = "neural"
    Options = NeuralOptions

    def generate(self, ctx: ThreatContext) -> Interactions:
        if ctx.model_cfg is None:
            raise AttackError("attack neural: the threat context has no model_cfg; the poison "
                              "model needs the victim's model settings")
        run = _NeuralRun(self.options, ctx)
        return run.generate()


class _NeuralRun:
    """One generation: the attacker's data, the poison models and the selection probability."""

    def __init__(self, opts: NeuralOptions, ctx: ThreatContext) -> None:
        self.opts, self.ctx = opts, ctx
        self.device = torch.device(ctx.device)
        self.implicit = ctx.feedback == "implicit"
        self.targets = np.asarray(ctx.targets, dtype=np.int64)
        self.n_items = ctx.n_items
        self.n_fill = min(opts.n_fillers or ctx.filler_size, self.n_items - len(self.targets))
        if self.n_fill < 1:
            raise AttackError("attack neural: no room for fillers; lower targets.count")
        self.model_cfg = surrogate_config(ctx.model_cfg, opts.surrogate)
        # Compact ids: visible users 0..n_visible-1, fake user j at n_visible + j.
        self.n_visible = len(ctx.visible_users)
        local = np.full(ctx.n_users, -1, dtype=np.int64)
        local[ctx.visible_users] = np.arange(self.n_visible)
        view = Interactions(local[ctx.view.users], ctx.view.items, ctx.view.ratings)
        if (view.users < 0).any():
            raise AttackError("attack neural: the view has ratings of users outside "
                              "visible_users")
        holdout = ctx.rng("neural", "holdout").random(len(view)) < opts.val_fraction
        self.train_view, self.val_view = view.subset(~holdout), view.subset(holdout)
        # The users the hinge and the target HR run over: visible users, rated items masked.
        self.rated = torch.zeros(self.n_visible, self.n_items, dtype=torch.bool,
                                 device=self.device)
        self.rated[torch.as_tensor(view.users), torch.as_tensor(view.items)] = True
        self.targets_t = torch.as_tensor(self.targets, device=self.device)
        self.eligible = ~self.rated[:, self.targets_t]
        self.hinge_users = torch.nonzero(self.eligible.any(1)).squeeze(1)
        self.candidates = np.setdiff1d(np.arange(self.n_items), self.targets)
        self.prob = torch.ones(len(self.candidates), device=self.device)

    # ------------------------------------------------------------------ scores
    def log_scores(self, scores: torch.Tensor) -> torch.Tensor:
        if self.implicit:
            return torch.nn.functional.logsigmoid(scores)
        return torch.log(scores.clamp_min(MIN_PROB))

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(scores) if self.implicit else scores.clamp_min(0.0)

    @torch.no_grad()
    def target_hr(self, model, chunk: int = 256) -> float:
        """Mean over targets of the share of eligible visible users with the target in their
        top K among unrated items (pessimistic ties, like the evaluator)."""
        model.eval()
        hits = torch.zeros(len(self.targets), device=self.device)
        for users in torch.arange(self.n_visible, device=self.device).split(chunk):
            scores = model.score_all(users).float().masked_fill(self.rated[users],
                                                                float("-inf"))
            s_t = scores[:, self.targets_t]
            rank = (scores.unsqueeze(1) >= s_t.unsqueeze(2)).sum(2) - 1
            hits += ((rank < self.opts.top_k) & self.eligible[users]).sum(0)
        n_elig = self.eligible.sum(0).clamp_min(1)
        return float((hits / n_elig).mean())

    # ------------------------------------------------------------------ attack steps
    @staticmethod
    def descend(trainer: Trainer, params: list, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` and take one step of the trainer's optimizer.

        The same update as ``optimizer.zero_grad(); loss.backward(); optimizer.step()``: the
        optimizer's own state and, for fused Adam, the same kernel (``Trainer._adam_step``),
        without ``Optimizer.step``'s per-call bookkeeping, which cost as much as the kernel on
        the ~4 k single-user hinge steps of each poison model (issue 18)."""
        for p in params:
            p.grad = None
        loss.backward()
        stepped = [p for p in params if p.grad is not None]  # as Adam skips grad-less ones
        with torch.no_grad():
            trainer._adam_step(stepped, [p.grad for p in stepped])
        for p in stepped:
            p.grad = None

    def hinge_steps(self, model, trainer: Trainer, generator: torch.Generator) -> float:
        """One pass over the eligible visible users in shuffled batches; an Adam step on
        λ·η·Σ g per batch. Returns the summed objective."""
        opts = self.opts
        model.train()
        params = list(model.parameters())
        order = self.hinge_users[torch.randperm(len(self.hinge_users), generator=generator)
                                 .to(self.device)]
        weight = opts.lam * opts.eta
        losses = []
        for users in order.split(opts.attack_batch_users):
            g = hit_ratio_hinge(self.log_scores(model.score_all(users)), self.rated[users],
                                self.targets_t, self.eligible[users], opts.top_k, opts.kappa)
            loss = weight * g.sum()
            self.descend(trainer, params, loss)
            losses.append(loss.detach())
        total = 0.0
        for value in (torch.stack(losses).tolist() if losses else []):
            total += value
        return total

    def norm_step(self, model, trainer: Trainer, fake_rows: torch.Tensor) -> float:
        """One Adam step on λ·‖ŷ_v‖² over the new fake users' non-target scores."""
        model.train()
        y = self.probabilities(model.score_all(fake_rows))
        y = y[:, torch.as_tensor(self.candidates, device=self.device)]
        loss = self.opts.lam * y.pow(2).sum()
        self.descend(trainer, list(model.parameters()), loss)
        return float(loss.detach())

    # ------------------------------------------------------------------ one poison model
    def poison_model(self, fakes: Interactions, new: np.ndarray, group: int):
        """Train the poison model with the new fake users holding the targets only, then run
        the attack rounds; returns the best model (by target HR)."""
        ctx, opts = self.ctx, self.opts
        new_rows = self.n_visible + new
        seeds = Interactions(np.repeat(new_rows, len(self.targets)),
                             np.tile(self.targets, len(new)),
                             np.ones(len(new) * len(self.targets)))
        data = Interactions.concat(self.train_view, fakes, seeds)
        n_rows = self.n_visible + ctx.n_fake
        model = build_model(self.model_cfg, n_rows, self.n_items,
                            torch_generator(ctx.seed, "neural", "init", group), ctx.feedback,
                            interactions=data)
        trainer = Trainer(model, self.model_cfg, ctx.scale,
                          torch_generator(ctx.seed, "neural", "shuffle", group), self.device,
                          ctx.feedback)
        if len(self.val_view):
            trainer.fit(data, self.val_view, epochs=opts.epochs)
        else:
            for _ in range(opts.epochs):
                trainer.train_epoch(data)
        best_hr = self.target_hr(model)
        best_state = copy.deepcopy(model.state_dict())
        steps_gen = torch_generator(ctx.seed, "neural", "hinge-order", group)
        fake_rows = torch.as_tensor(new_rows, device=self.device)
        for _ in range(opts.rounds):
            self.hinge_steps(model, trainer, steps_gen)
            self.norm_step(model, trainer, fake_rows)
            trainer.train_epoch(data)
            hr = self.target_hr(model)
            if hr > best_hr:
                best_hr, best_state = hr, copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        model.eval()
        return model, best_hr

    # ------------------------------------------------------------------ fillers
    @torch.no_grad()
    def mean_log_scores(self, model, chunk: int = 256) -> torch.Tensor:
        """Per item, the mean over visible real users of log ŷ_{u,i}: how much a typical user
        is predicted to like the item (the popularity part of every user's scores)."""
        total = torch.zeros(self.n_items, device=self.device)
        for users in torch.arange(self.n_visible, device=self.device).split(chunk):
            total += self.log_scores(model.score_all(users).float()).sum(0)
        return total / max(self.n_visible, 1)

    @torch.no_grad()
    def choose_fillers(self, model, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-n of ŷ_v ⊙ p per new fake user, in order, decaying p as items are chosen.
        Returns (items, ratings), each (len(new), n_fill)."""
        cand = torch.as_tensor(self.candidates, device=self.device)
        scores = model.score_all(torch.as_tensor(self.n_visible + new, device=self.device))
        y = scores[:, cand].float()
        if self.opts.filler_score == "lift":
            typical = self.mean_log_scores(model)[cand]
            preference = torch.exp(self.log_scores(y) - typical)
        else:
            preference = self.probabilities(y)
        items, ratings = [], []
        for row, pref in zip(y, preference):  # a few fake users; p changes between them
            picks = torch.topk(pref * self.prob, self.n_fill).indices
            self.prob[picks] *= self.opts.decay
            if bool((self.prob < 1.0).all()):
                self.prob.fill_(1.0)
            items.append(self.candidates[picks.cpu().numpy()])
            if self.implicit:
                ratings.append(np.ones(self.n_fill))
            else:
                ratings.append(self.ctx.scale.project(row[picks].cpu().numpy().astype(np.float64)))
        return np.stack(items), np.stack(ratings)

    def generate(self) -> Interactions:
        ctx, opts = self.ctx, self.opts
        width = len(self.targets) + self.n_fill
        all_items = np.zeros((ctx.n_fake, width), dtype=np.int64)
        all_ratings = np.zeros((ctx.n_fake, width))
        bar = tqdm(total=ctx.n_fake, desc="neural attack", unit="fake user",
                   disable=not ctx.progress, leave=False)
        per_model = opts.users_per_model
        if opts.max_poison_models:
            per_model = max(per_model, -(-ctx.n_fake // opts.max_poison_models))
        for group, start in enumerate(range(0, ctx.n_fake, per_model)):
            new = np.arange(start, min(start + per_model, ctx.n_fake))
            done = profiles_from(all_items[:start], all_ratings[:start])
            fakes = Interactions(done.users + self.n_visible, done.items, done.ratings)
            model, hr = self.poison_model(fakes, new, group)
            fill_items, fill_ratings = self.choose_fillers(model, new)
            all_items[new] = np.hstack([np.tile(self.targets, (len(new), 1)), fill_items])
            all_ratings[new] = np.hstack([np.ones((len(new), len(self.targets))), fill_ratings])
            bar.set_postfix_str(f"poison-model target HR@{opts.top_k} {hr:.4f}")
            bar.update(len(new))
        bar.close()
        return profiles_from(all_items, all_ratings)
