"""AUSH: Attacking recommender systems with Augmented User SHilling (Lin, Chen, Li, Pan, Ming,
"Attacking Recommender Systems with Augmented User Profiles", CIKM 2020; attacks.md §3).

A GAN writes fake profiles around real-user templates, trained on the attacker's knowledge-cost
view only (AUSH needs no surrogate recommender):

* selected items S: the ``n_selected`` items liked (normalized rating ≥ 0.8) by the most visible
  users who have rated none of the targets;
* templates: visible users with at least ``filler_size`` ratings outside targets ∪ S; a fake
  profile's fillers are ``filler_size`` of its template's own items with the template's ratings;
* generator G: an MLP from the template masked to its fillers (n_items inputs) to ratings for S
  only (sigmoid × top rating); discriminator D: an MLP n_items → 150 → 150 → 150 → 1 over
  fillers ∪ S with the target columns masked;
* G loss = adversarial BCE + shilling loss mean((G_S − top)²) + reconstruction of the
  template's ratings on S (its rated S items, plus a random half of its unrated S items as zero)
  + L2; D loss = BCE real/fake + small L2. Each epoch is one pass of D (Adam 1e-4, batch 64)
  then one of G (Adam 0.01, batch 256) over the templates; 150 epochs;
* output: fillers from the template, S from G, targets at the top rating, on the rating grid.

As in the authors' TensorFlow code (``XMUDM/ShillingAttack`` ``AUSH/``), the target patch is added
to the fake profile and masked for D (the Keras port's patch on S is a known defect), and fillers
are resampled for every batch. Several targets are attacked together: every target column is
patched and masked.

Deviations, and why: the authors' generator shrinks its hidden width by 3 per layer down to a
single unit before the output (400 → 133 → 44 → 14 → 4 → 1 → |S|); here it is
n_items → 133 → 44 → |S| — the same widths without the 1-unit bottleneck, which only limits
capacity. If no visible user has ``filler_size`` eligible ratings, the users with the most are
used as templates and their profiles are correspondingly shorter (never on the benchmark data).
Implicit feedback: every rating is 1, so G has nothing to generate; the fake profiles are the
targets, S and the template's items, all rated 1, without GAN training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from utils.seeding import torch_generator

from .base import Attack
from .threat import AttackError, ThreatContext, profiles_from


@dataclass
class AUSHOptions:
    epochs: int = 150
    n_selected: int = 3
    zero_reconstruction: float = 0.5  # share of a template's unrated S items reconstructed as 0
    g_hidden: int = 400               # generator widths g_hidden/3, g_hidden/9
    g_lr: float = 0.01
    g_batch: int = 256
    g_reg: float = 1e-4
    d_hidden: int = 150
    d_layers: int = 3
    d_lr: float = 1e-4
    d_batch: int = 64
    d_reg: float = 1e-5


def _mlp(widths: list[int], generator: torch.Generator) -> nn.Sequential:
    """Sigmoid MLP with the authors' init: weights U(±√(6/(in+out))), biases U(±0.01)."""
    layers: list[nn.Module] = []
    for n, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(fan_in, fan_out)
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        with torch.no_grad():
            lin.weight.copy_((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * limit)
            lin.bias.copy_((torch.rand(fan_out, generator=generator) * 2 - 1) * 0.01)
        layers.append(lin)
        if n < len(widths) - 2:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def _l2(module: nn.Module) -> torch.Tensor:
    return sum(p.pow(2).sum() for p in module.parameters()) / 2


class AUSHAttack(Attack):
    name = "aush"
    Options = AUSHOptions

    def generate(self, ctx: ThreatContext):
        opt = self.options
        if opt.epochs < 0 or opt.n_selected < 0 or not 0 <= opt.zero_reconstruction <= 1:
            raise AttackError("attack.options.aush: epochs ≥ 0, n_selected ≥ 0, "
                              "zero_reconstruction in [0, 1]")
        device = torch.device(ctx.device)
        n_items = ctx.n_items
        local = np.full(ctx.n_users, -1, dtype=np.int64)
        local[ctx.visible_users] = np.arange(len(ctx.visible_users))
        matrix = torch.zeros(len(ctx.visible_users), n_items, device=device)
        matrix[torch.as_tensor(local[ctx.view.users], device=device),
               torch.as_tensor(ctx.view.items, device=device)] = \
            torch.as_tensor(ctx.view.ratings, device=device)
        targets = torch.as_tensor(ctx.targets, device=device)
        selected = self.selected_items(matrix, targets, opt.n_selected)
        fixed = torch.zeros(n_items, dtype=torch.bool, device=device)
        fixed[targets] = True
        fixed[selected] = True
        candidate = (matrix > 0) & ~fixed                    # rated filler candidates per user
        counts = candidate.sum(1)
        filler = ctx.filler_size
        templates = torch.nonzero(counts >= filler).squeeze(1)
        if len(templates) == 0:
            if int(counts.max()) == 0:
                raise AttackError("aush: no visible user rates an item outside the targets; "
                                  "raise attack.knowledge_cost")
            templates = torch.argsort(counts, descending=True)[:max(ctx.n_fake, 1)]
        gen = torch_generator(ctx.seed, "attack", self.name, "gan")
        sampler = FillerSampler(candidate, filler, gen)

        g_net = _mlp([n_items, opt.g_hidden // 3, opt.g_hidden // 9, len(selected)], gen)
        d_net = _mlp([n_items] + [opt.d_hidden] * opt.d_layers + [1], gen)
        g_net.to(device)
        d_net.to(device)
        if ctx.feedback == "explicit" and len(selected) and opt.epochs:
            self.train_gan(ctx, g_net, d_net, matrix, templates, selected, targets, sampler,
                           gen)

        # Fake profiles: templates drawn without replacement (cycled if too few).
        reps = -(-ctx.n_fake // len(templates))
        draws = [torch.randperm(len(templates), generator=gen) for _ in range(reps)]
        order = templates[torch.cat(draws).to(device)][:ctx.n_fake]
        fill_mask = sampler.sample(order)
        width = int(fill_mask.sum(1).min())
        fill_items = torch.argsort((~fill_mask).to(torch.int8), dim=1, stable=True)[:, :width]
        fill_r = matrix[order].gather(1, fill_items)
        with torch.no_grad():
            if ctx.feedback == "explicit" and len(selected):
                sel_r = g_net(matrix[order] * fill_mask).sigmoid()
            else:
                sel_r = torch.ones(ctx.n_fake, len(selected), device=device)
        if ctx.feedback == "implicit":
            fill_r = torch.ones_like(fill_r)
        items = torch.cat([targets.expand(ctx.n_fake, -1), selected.expand(ctx.n_fake, -1),
                           fill_items], 1)
        ratings = torch.cat([torch.ones(ctx.n_fake, len(targets), device=device), sel_r,
                             fill_r], 1)
        ratings = ctx.scale.project(ratings)
        return profiles_from(items.cpu().numpy(), ratings.cpu().numpy())

    @staticmethod
    def selected_items(matrix: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
        """Items liked by most visible users who have rated none of the targets."""
        if n == 0:
            return torch.zeros(0, dtype=torch.long, device=matrix.device)
        outsiders = (matrix[:, targets] == 0).all(1)
        likes = (matrix[outsiders] >= 0.8 - 1e-6).sum(0).float()
        likes[targets] = -1
        order = torch.argsort(-likes, stable=True)
        return torch.sort(order[:n]).values

    def train_gan(self, ctx, g_net, d_net, matrix, templates, selected, targets, sampler,
                  gen) -> None:
        opt = self.options
        device = matrix.device
        n_items = matrix.shape[1]
        sel_cols = torch.zeros(n_items, device=device)
        sel_cols[selected] = 1.0
        target_mask = torch.ones(n_items, device=device)
        target_mask[targets] = 0.0
        top = 1.0
        g_opt = torch.optim.Adam(g_net.parameters(), lr=opt.g_lr)
        d_opt = torch.optim.Adam(d_net.parameters(), lr=opt.d_lr)
        bce = nn.BCEWithLogitsLoss()

        def fake_rows(real, fill_mask):
            """Template fillers + G's ratings on S (+ the target patch, masked for D)."""
            g_out = g_net(real * fill_mask).sigmoid() * top
            patch = torch.zeros_like(real).index_copy(1, selected, g_out)
            return real * fill_mask + patch + (1 - target_mask) * top, g_out

        def shuffled() -> torch.Tensor:
            return templates[torch.randperm(len(templates), generator=gen).to(device)]

        bar = tqdm(range(opt.epochs), desc="aush", unit="epoch", leave=False,
                   disable=not ctx.progress)
        for _ in bar:
            # Discriminator: one pass over the templates.
            for batch in shuffled().split(opt.d_batch):
                real = matrix[batch]
                fill_mask = sampler.sample(batch)
                with torch.no_grad():
                    fake, _ = fake_rows(real, fill_mask)
                real_d = real * torch.clamp(fill_mask + sel_cols, max=1.0) * target_mask
                d_real, d_fake = d_net(real_d), d_net(fake * target_mask)
                d_loss = (bce(d_real, torch.ones_like(d_real))
                          + bce(d_fake, torch.zeros_like(d_fake)) + opt.d_reg * _l2(d_net))
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
            # Generator: one pass over the templates.
            for batch in shuffled().split(opt.g_batch):
                real = matrix[batch]
                fill_mask = sampler.sample(batch)
                fake, g_out = fake_rows(real, fill_mask)
                d_fake = d_net(fake * target_mask)
                real_s = real[:, selected]
                keep = (real_s > 0) | (torch.rand(real_s.shape, generator=gen)
                                       < opt.zero_reconstruction).to(device)
                g_loss = (bce(d_fake, torch.ones_like(d_fake))
                          + (g_out - top).pow(2).mean()
                          + ((g_out - real_s).pow(2) * keep).sum(1).mean()
                          + opt.g_reg * _l2(g_net))
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
            bar.set_postfix_str(f"D {d_loss.item():.3f} G {g_loss.item():.3f}")


class FillerSampler:
    """Draws, per template row, ``size`` of the row's candidate items uniformly (vectorized)."""

    def __init__(self, candidate: torch.Tensor, size: int, generator: torch.Generator) -> None:
        self.candidate = candidate
        self.size = min(size, candidate.shape[1])
        self.generator = generator

    def sample(self, rows: torch.Tensor) -> torch.Tensor:
        cand = self.candidate[rows]
        keys = torch.rand(cand.shape, generator=self.generator).to(cand.device)
        keys = keys.masked_fill(~cand, 2.0)
        picks = keys.topk(self.size, dim=1, largest=False).indices
        mask = torch.zeros_like(cand).scatter_(1, picks, True)
        return mask & cand
