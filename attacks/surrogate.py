"""The attacker's local MF surrogate and the closed-form ridge steps PGA and TNA differentiate.

The surrogate is the package's :class:`models.mf.MF` trained by :class:`models.trainer.Trainer`
on the knowledge-cost view (visible real users get local ids 0..n_visible−1) plus fake rows
(fake user k gets id n_visible + k), with the victim's hyper-parameters (``ctx.model_cfg``).
The attacker has no access to the defender's validation data, so it picks the number of
epochs the way the victim does, on a held-out tenth of its own view (the victim's early
stopping lands near epoch 13 of 40 on ML-100K; a 40-epoch surrogate is far more overfit than
the model it attacks).

The attack gradient flows through two ridge (one-ALS-step) solutions around the trained
surrogate, with every other factor held at its trained value:

* a fake user's factor given the item factors of the items it rates,
  ũ_v = (λI + Σ_{j∈Ω_v} q_j q_jᵀ)⁻¹ Σ_{j∈Ω_v} r̃_vj q_j;
* each target's item factor given the factors of the users who rate it (real raters and every
  fake user, which rates every target at the top rating),
  q_t = (λI + Σ_{i∈Ω_t} p_i p_iᵀ + Σ_v ũ_v ũ_vᵀ)⁻¹ (Σ_{i∈Ω_t} r_it p_i + Σ_v ũ_v).

Real users' scores for the targets, p_u · q_t, are then differentiable functions of the fake
ratings; scores of every other item are held at the surrogate's values. All solves are batched
(fake users × d × d and targets × d × d).
"""
from __future__ import annotations

import numpy as np
import torch

import dataclasses

from data.ratings import Interactions
from models import MODELS
from models.mf import MF
from models.trainer import Trainer
from utils.seeding import torch_generator

from .threat import ThreatContext


def surrogate_choices() -> tuple[str, ...]:
    """The values of an attack's ``surrogate`` option: ``auto``, ``victim`` or a model name."""
    return ("auto", "victim", *MODELS)


def surrogate_config(model_cfg, choice: str | None):
    """The model section a model-training attack's surrogate trains with.

    ``auto`` (or None): the victim's own class when it is a pointwise model (MF, NCF: the
    attack's behaviour before graph victims existed), else MF — a graph victim (LightGCN) is
    attacked through an MF surrogate, and the profiles transfer. ``victim``: the victim's class,
    whatever it is (LightGCN for a LightGCN victim). A model name: that class. The victim's
    hyper-parameters (dim, lr, reg, epochs …) are kept, and its loss where the surrogate's
    class has it (else the class's default: an MF surrogate of LightGCN trains with BCE on
    implicit feedback)."""
    choice = choice or "auto"
    name = model_cfg.name
    if choice == "victim":
        return model_cfg
    if choice == "auto":
        cls = MODELS.get(name)
        if cls is None or not cls.needs_graph:
            return model_cfg
        choice = "mf"
    if choice == name:
        return model_cfg
    loss = model_cfg.loss if model_cfg.loss in MODELS[choice].losses else "auto"
    return dataclasses.replace(model_cfg, name=choice, loss=loss)


def closed_form_surrogate(attack: str, opts, where: str):
    """PGA and TNA: ``surrogate`` must be ``mf`` — their gradients go through MF's closed-form
    ridge (one ALS step) solutions of the fake users' and targets' factors, and a graph model's
    scores have no such form (a fake user moves every node within K hops)."""
    from utils.config import ConfigError
    if opts.surrogate != "mf":
        raise ConfigError(f"{where}.surrogate: '{opts.surrogate}' is not possible: {attack} "
                          "differentiates through MF's closed-form ridge solutions of the fake "
                          "users' and targets' factors, which a graph model (LightGCN) has no "
                          "counterpart of; use mf (its profiles transfer to any victim)")
    return opts


class MFSurrogate:
    """MF on the attacker's view plus up to ``n_fake_slots`` fake users.

    The victim keeps its best epoch on the defender's validation data; the attacker mimics that
    on its own data: :meth:`calibrate` holds out ``val_fraction`` of the view's ratings, trains
    up to ``model_cfg.epochs`` epochs and keeps the best epoch count, and every later
    :meth:`fit` retrains from the same seeded initialization and batch order for that many
    epochs on the rest of the view plus the fake rows.
    """

    def __init__(self, ctx: ThreatContext, n_fake_slots: int, tag: str,
                 val_fraction: float = 0.1) -> None:
        if ctx.model_cfg is None:
            raise ValueError("the threat context has no model_cfg; the MF surrogate needs the "
                             "victim's model settings")
        self.ctx = ctx
        self.tag = tag
        self.cfg = ctx.model_cfg
        self.device = torch.device(ctx.device)
        self.n_visible = len(ctx.visible_users)
        self.n_fake_slots = n_fake_slots
        local = np.full(ctx.n_users, -1, dtype=np.int64)
        local[ctx.visible_users] = np.arange(self.n_visible)
        view = Interactions(local[ctx.view.users], ctx.view.items, ctx.view.ratings)
        held_out = ctx.rng(tag, "surrogate-holdout").random(len(view)) < val_fraction
        self.real, self.val = view.subset(~held_out), view.subset(held_out)
        # Visible users' rated items: excluded from their top-N lists, as the victim excludes them.
        self.rated = torch.zeros(self.n_visible, ctx.n_items, dtype=torch.bool, device=self.device)
        self.rated[torch.as_tensor(view.users, device=self.device),
                   torch.as_tensor(view.items, device=self.device)] = True
        self.epochs = 0
        self.model: MF | None = None

    def training_data(self, fake: Interactions | None) -> Interactions:
        if fake is None or len(fake) == 0:
            return self.real
        shifted = Interactions(fake.users + self.n_visible, fake.items, fake.ratings)
        return Interactions.concat(self.real, shifted)

    def _fresh(self) -> Trainer:
        ctx = self.ctx
        model = MF(self.n_visible + self.n_fake_slots, ctx.n_items, self.cfg.dim,
                   torch_generator(ctx.seed, self.tag, "surrogate-init"))
        return Trainer(model, self.cfg, ctx.scale,
                       torch_generator(ctx.seed, self.tag, "surrogate-shuffle"), self.device,
                       "explicit")

    def calibrate(self, fake: Interactions | None, epochs: int = 0) -> MF:
        """Fit on view + ``fake`` keeping the best epoch on the held-out view ratings, and use
        that epoch count from now on; ``epochs`` > 0 fixes the count instead."""
        if epochs > 0:
            self.epochs = epochs
            return self.fit(fake)
        trainer = self._fresh()
        result = trainer.fit(self.training_data(fake), self.val, epochs=self.cfg.epochs)
        self.epochs = max(result.best_epoch, 1)
        self.model = trainer.model
        return self.model

    def fit(self, fake: Interactions | None) -> MF:
        """Retrain from the seeded initialization on view + ``fake`` (fake ids
        0..n_fake_slots−1) for the calibrated number of epochs."""
        if self.epochs < 1:
            raise RuntimeError("calibrate the surrogate before fitting it")
        trainer = self._fresh()
        data = self.training_data(fake)
        for _ in range(self.epochs):
            trainer.train_epoch(data)
        self.model = trainer.model
        return self.model

    # ------------------------------------------------------------------ read-outs
    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(visible users' factors, fake users' factors, item factors), detached."""
        p = self.model.user_emb.detach()
        return p[:self.n_visible], p[self.n_visible:], self.model.item_emb.detach()

    @torch.no_grad()
    def real_scores(self) -> torch.Tensor:
        """Visible users × items scores; the users' own rated items set to −inf."""
        users, _, items = self.factors()
        scores = users @ items.T
        return scores.masked_fill(self.rated, float("-inf"))

    @torch.no_grad()
    def target_hit_rate(self, k: int) -> float:
        """Surrogate target HR@k over visible users who have not rated the target."""
        scores = self.real_scores()
        targets = torch.as_tensor(self.ctx.targets, device=self.device)
        competitors = scores.clone()
        competitors[:, targets] = float("-inf")
        kth = competitors.topk(k, dim=1).values[:, -1:]
        eligible = ~self.rated[:, targets]
        hit = (scores[:, targets] > kth) & eligible
        per_target = hit.sum(0).float() / eligible.sum(0).clamp(min=1)
        return float(per_target.mean())

    @torch.no_grad()
    def top_lists(self, n: int) -> torch.Tensor:
        """Each visible user's current top-n items among unrated non-target items: scores of
        shape (n_visible, n), held fixed while the fake ratings are optimized."""
        scores = self.real_scores()
        scores[:, torch.as_tensor(self.ctx.targets, device=self.device)] = float("-inf")
        return scores.topk(n, dim=1).values

    def target_raters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per target, the Gram Σ p_i p_iᵀ and Σ r_it p_i over its visible real raters:
        shapes (n_targets, d, d) and (n_targets, d)."""
        users, _, _ = self.factors()
        targets = self.ctx.targets
        column = np.full(self.ctx.n_items, -1, dtype=np.int64)
        column[targets] = np.arange(len(targets))
        rows = column[self.real.items] >= 0
        u = torch.as_tensor(self.real.users[rows], device=self.device)
        t = torch.as_tensor(column[self.real.items[rows]], device=self.device)
        r = torch.as_tensor(self.real.ratings[rows], device=self.device)
        d = users.shape[1]
        p = users[u]
        gram = torch.zeros(len(targets), d, d, device=self.device)
        gram.index_add_(0, t, p.unsqueeze(2) * p.unsqueeze(1))
        rhs = torch.zeros(len(targets), d, device=self.device)
        rhs.index_add_(0, t, r.unsqueeze(1) * p)
        return gram, rhs


def ridge_user_factors(item_factors: torch.Tensor, ratings: torch.Tensor,
                       lam: float) -> torch.Tensor:
    """Fake users' factors from their rated items' factors and ratings.

    ``item_factors``: (n_fake, width, d) factors of each fake user's rated items (a zero row
    marks an unused slot); ``ratings``: (n_fake, width). Returns (n_fake, d).
    """
    d = item_factors.shape[-1]
    gram = item_factors.transpose(1, 2) @ item_factors
    gram = gram + lam * torch.eye(d, dtype=gram.dtype, device=gram.device)
    rhs = (item_factors * ratings.unsqueeze(2)).sum(1)
    return torch.linalg.solve(gram, rhs)


def ridge_target_factors(rater_gram: torch.Tensor, rater_rhs: torch.Tensor,
                         fake_factors: torch.Tensor, lam: float,
                         top: float = 1.0) -> torch.Tensor:
    """Target item factors given their real raters' sums and fake users rating each at ``top``.

    ``fake_factors``: (n_fake, d), every fake user rates every target. Returns (n_targets, d).
    """
    d = fake_factors.shape[1]
    fake_gram = fake_factors.T @ fake_factors
    eye = torch.eye(d, dtype=fake_gram.dtype, device=fake_gram.device)
    gram = rater_gram + (fake_gram + lam * eye).unsqueeze(0)
    rhs = rater_rhs + top * fake_factors.sum(0).unsqueeze(0)
    return torch.linalg.solve(gram, rhs.unsqueeze(2)).squeeze(2)
