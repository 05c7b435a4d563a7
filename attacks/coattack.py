"""CoAttack and GCoAttack: fake profiles optimized while the surrogate trains (Wang, Wu, Lian,
Chen, "Securing Recommender System via Cooperative Training", arXiv 2401.12700 / WWW Journal
2023; authors' code ``greensun0830/Cotraining-Attack``; threat-model.md §2).

Instead of training a surrogate first and attacking it afterwards, the attacker adds a
promotion loss to the surrogate's training and reads the fake profiles out of the co-trained
model:

0. Initial profiles: the targets at the top rating plus ``filler_size`` fillers rated
   N(item mean, item std) of the view, projected; fillers drawn from the 2 × filler_size most
   rated visible items (``init: popular``) or uniformly (``average``).
1. The attacker's data: its knowledge view (visible real users get local ids 0..n_v−1) split
   9:1 into training and validation with its own draw, plus the current fake profiles (fake
   user k gets id n_v + k), whose rows are split by ``data.split.split_fake_rows`` — the
   attacker assumes the ``platform`` protocol. Fake users are in the training data, so their
   embeddings are trained (the authors' code leaves them out, and reads profiles from
   untrained embeddings).
2. A surrogate is trained on it by a defense's own ``fit``: ``none`` (plain training, CoAttack)
   or, for GCoAttack, the defense named by ``against`` (default ``tcd``: three models,
   pseudo-labels and all — the defense in the loop). The defense calls the attacker's
   ``epoch_hook`` after every epoch of every model it trains; from epoch
   ⌊attack_from × epochs⌋ + 1 on (the later half by default) the hook takes ``steps`` gradient
   steps of the attack loss on that model: alternating, a defense epoch first, then the attack
   loss, as the authors' GCoAttack does.
3. Attack loss, over the visible users u and the targets t that u has not rated:
   mean of max(s_u[K] − s_ut, −κ), s_u[K] the user's K-th highest score among the non-target
   items it has not rated (K = 50, κ = 0.2). The authors' hinge has a sign error that makes it
   flat (max(−s_K − s_t, −κ) on sigmoid scores); this is the intended form. K-th scores come
   from ``torch.topk`` over users × items in batches of users.
4. Profiles are read from the trained model: each fake user rates the targets at the top rating
   and its ``filler_size`` highest-scored non-target items at the projected prediction
   Π(p_v · q_j) (implicit feedback: rating 1).
5. ``rounds`` outer rounds repeat 1–4 with the profiles just read, so fakes and model co-evolve.
   Each round's profiles are then scored by training the same defense on view + those profiles
   without the hook: the attacker's estimate of the target HR@K over its visible users (ties
   broken by the mean margin s_ut − s_u[K]). The best round's profiles are returned (one round:
   its profiles, unscored). CoAttack runs 3 rounds, GCoAttack 2 (each trains TCD's three
   models twice); on ML-100K at 3 % they take 17 s and 156 s on one thread.

Implicit feedback: CoAttack works unchanged (the surrogate trains with BCE and sampled
negatives; fillers are rated 1); GCoAttack against ``tcd`` stops with an AttackError, because
TCD needs explicit ratings.

The optimizer of the attack steps. Plain MF and TCD train with a hand-derived gradient and no
autograd graph (``Trainer.fast_epoch``), so the attack loss cannot join their batch loss; the
hook therefore runs its own optimizer: one Adam per model (state kept across epochs), on all of
the model's parameters, with step size ``weight × model.lr``. Adam because the hinge's
gradient, averaged over users × targets, is orders of magnitude smaller per parameter than the
rating loss's, so SGD would need a step size tuned per dataset; with Adam ``weight`` sets how far
each attack step may move a parameter relative to a training step — the relative weight of the
attack loss. The defense's own optimizer state is left untouched.

Two defaults chosen by measurement (ML-100K, seed 1, 3 %, c = 0.4, unpopular targets,
undefended victim's target HR@50):

* ``read: last`` — the profiles come from the model after the last epoch (and its attack
  steps), not from the epoch the defense selects on validation: that epoch (13–14 of 40 for
  plain MF) precedes the attack window, so ``read: best`` returned the same profiles for every
  ``weight`` (0.65); ``last``: 0.75.
* ``init: popular`` — the first round's fillers are drawn from the most rated visible items;
  the read-out keeps each fake user's highest-scored items, so the start persists through the
  rounds: 0.93, against 0.75 from uniform (``average``) fillers.

Against TCD the attack loss itself matters little: inside the attacker's co-training the hooked
TCD model reaches target HR 1.0 on the visible users, but a profile carries only a fake user's
top-scored items, and TCD's pseudo-labels fix the real users' target predictions near their
value at the end of pre-training (≈ 0.45 on the normalized scale, well under the top-50
threshold ≈ 0.75). Sweeping ``attack_from`` ∈ {0, 0.5} × ``weight`` ∈ {1, 5} moved the
TCD victim's target HR@50 between 0.05 and 0.08 (random targets) and 0.002–0.005 (unpopular);
the defaults were best on both.

Deviations from the authors' code, and why: fake users are trained (above); the hinge's sign is
fixed; the attack loss alternates with the defense's epochs for plain MF too (their CoAttack
adds it to every batch loss: impossible without autograd in the fast path, and one schedule for
both attacks keeps CoAttack exactly GCoAttack against ``none``); in GCoAttack's later half the
defense keeps training its own way (theirs drops TCD's pseudo-labels there); competitors
exclude the user's rated items and the targets (theirs rank every item); profiles are read
after the last epoch (``read``, above); several outer rounds with a selection on the attacker's
own estimate (theirs: one pass). The estimate is optimistic: the attacker's view holds
c × n_users real users beside the same number of fakes, so its poison ratio is 1/c times the
victim's.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from data.ratings import Interactions, TrainingData
from data.split import split_fake_rows
from utils.config import ConfigError, bounds
from utils.seeding import derive_seed

from .base import Attack, Component, item_stats, popular_items
from .surrogate import surrogate_choices, surrogate_config
from .threat import AttackError, ThreatContext, profiles_from, sample_fillers


@dataclass
class CoAttackOptions:
    rounds: int = field(default=3, metadata=bounds(1, 20))   # train → read profiles rounds
    epochs: int = field(default=0, metadata=bounds(0))       # surrogate epochs; 0 = model.epochs
    # The attack loss starts after this fraction of the epochs (0.5: the later half).
    attack_from: float = field(default=0.5, metadata=bounds(0, 1, hi_open=True))
    steps: int = field(default=10, metadata=bounds(1))       # attack-loss steps after an epoch
    weight: float = field(default=1.0, metadata=bounds(0, lo_open=True))  # step = weight·lr
    k: int = field(default=50, metadata=bounds(1))            # K of the hinge and of the HR
    kappa: float = field(default=0.2, metadata=bounds(0))     # hinge margin κ
    # Initial fillers, rated N(item mean, item std): drawn from the 2 × filler_size most rated
    # visible items (popular) or uniformly (average, as the Average attack).
    init: str = "popular"
    read: str = "last"           # profiles from the last epoch | the defense's selected (best)
    val_fraction: float = field(default=0.1, metadata=bounds(0, 1, lo_open=True, hi_open=True))
    user_batch: int = field(default=1024, metadata=bounds(1))  # users per score batch
    # The co-trained model's class (attacks/surrogate.py surrogate_config): auto = the victim's
    # (MF, NCF; MF for a graph victim), victim = the victim's whatever it is (LightGCN), or a name.
    surrogate: str = "auto"


@dataclass
class GCoAttackOptions(CoAttackOptions):
    against: str = "tcd"         # the defense whose training the attacker co-trains with
    # Fewer rounds than CoAttack: each trains the defense (TCD: three models) twice.
    rounds: int = field(default=2, metadata=bounds(1, 20))


_CHOICES = {"init": ("popular", "average"), "read": ("last", "best")}


def hook_defenses(defenses) -> list[str]:
    """Names of the defenses of registry ``defenses`` that call an epoch hook (can be
    co-trained with)."""
    return sorted(name for name, cls in defenses.items() if cls.accepts_epoch_hook)


def check_options(opts, where: str) -> None:
    for key, valid in {**_CHOICES, "surrogate": surrogate_choices()}.items():
        value = getattr(opts, key)
        if value not in valid:
            raise ConfigError(f"{where}.{key}: '{value}' is unknown; use "
                              f"{' or '.join(valid)}")


class AttackLoss:
    """The hinge promotion loss of the visible users (local ids 0..n_real−1) on the targets."""

    def __init__(self, rated: torch.Tensor, targets: np.ndarray, k: int, kappa: float,
                 user_batch: int) -> None:
        self.rated = rated                        # (n_real, n_items) bool: the user's view items
        self.targets = torch.as_tensor(targets, device=rated.device)
        n_items = rated.shape[1]
        if k > n_items - len(targets):
            raise AttackError(f"attack k={k}: only {n_items - len(targets)} non-target items; "
                              "lower the k option")
        self.k, self.kappa, self.user_batch = k, kappa, user_batch
        self.masked = rated.clone()
        self.masked[:, self.targets] = True       # competitors: unrated non-target items
        self.eligible = ~rated[:, self.targets]   # (n_real, n_targets)
        self.n_pairs = max(int(self.eligible.sum()), 1)

    def batches(self):
        n = self.rated.shape[0]
        for lo in range(0, n, self.user_batch):
            hi = min(lo + self.user_batch, n)
            yield lo, hi, torch.arange(lo, hi, device=self.rated.device)

    def margins(self, model, lo: int, hi: int, users: torch.Tensor):
        """(s_ut − s_u[K]) for a batch of users, and the eligibility mask."""
        scores = model.score_all(users)
        kth = scores.masked_fill(self.masked[lo:hi], float("-inf")).topk(self.k, dim=1).values
        return scores[:, self.targets] - kth[:, -1:], self.eligible[lo:hi]

    def backward(self, model) -> float:
        """Accumulate ∂loss/∂parameters batch by batch; returns the loss."""
        total = 0.0
        for lo, hi, users in self.batches():
            margin, eligible = self.margins(model, lo, hi, users)
            loss = ((-margin).clamp(min=-self.kappa) * eligible).sum() / self.n_pairs
            loss.backward()
            total += float(loss.detach())
        return total

    @torch.no_grad()
    def hit_rate(self, model) -> tuple[float, float]:
        """(target HR@K over eligible user–target pairs, mean per-target, and the mean margin)."""
        hits = torch.zeros(len(self.targets), device=self.rated.device)
        margin_sum = 0.0
        for lo, hi, users in self.batches():
            margin, eligible = self.margins(model, lo, hi, users)
            hits += ((margin > 0) & eligible).sum(0).float()
            margin_sum += float((margin * eligible).sum())
        per_target = hits / self.eligible.sum(0).clamp(min=1)
        return float(per_target.mean()), margin_sum / self.n_pairs


class EpochHook:
    """The attacker's ``Defense.epoch_hook``: attack-loss steps from epoch ``start`` on, one
    Adam per model; records the fake users' scores after each model's ``last`` epoch."""

    def __init__(self, loss: AttackLoss, start: int, last: int, steps: int, lr: float,
                 fake_users: torch.Tensor) -> None:
        self.loss, self.start, self.last, self.steps, self.lr = loss, start, last, steps, lr
        self.fake_users = fake_users
        self.optimizers: dict[int, torch.optim.Optimizer] = {}
        self.last_scores: dict[int, torch.Tensor] = {}
        self.calls = 0

    def __call__(self, model, epoch: int) -> None:
        self.calls += 1
        if epoch >= self.start:
            params = [p for p in model.parameters() if p.requires_grad]
            opt = self.optimizers.get(id(model))
            if opt is None:
                opt = self.optimizers[id(model)] = torch.optim.Adam(params, lr=self.lr)
            was_training = model.training
            model.train()
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                self.loss.backward(model)
                opt.step()
            opt.zero_grad(set_to_none=True)
            model.train(was_training)
        if epoch == self.last:
            with torch.no_grad():
                self.last_scores[id(model)] = model.score_all(self.fake_users).detach().clone()


class GCoAttack(Attack):
    name = "gcoattack"
    Options = GCoAttackOptions

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        opts = super().parse_options(data, where)
        check_options(opts, where)
        return opts

    def against(self) -> str:
        return self.against_of(self.options)

    @classmethod
    def against_of(cls, options) -> str:
        return options.against

    @classmethod
    def components(cls, options) -> list[Component]:
        return [Component("defense", cls.against_of(options), "against",
                          lambda _, defense: defense.accepts_epoch_hook,
                          "does not accept an epoch hook (cannot be co-trained with)")]

    # ------------------------------------------------------------------ generate
    def generate(self, ctx: ThreatContext) -> Interactions:
        opt = self.options
        check_options(opt, f"attack.options.{self.name}")
        if ctx.model_cfg is None:
            raise AttackError(f"attack {self.name}: the threat context has no model_cfg; the "
                              "surrogate needs the victim's model settings")
        against = self.against()
        defense_cls = ctx.component("defense", against, self.name)
        if not defense_cls.accepts_epoch_hook:
            raise AttackError(f"attack {self.name}: defense '{against}' does not accept an epoch "
                              "hook; use one of " + ", ".join(hook_defenses(ctx.defenses)))
        device = torch.device(ctx.device)
        n_v, n_fake = len(ctx.visible_users), ctx.n_fake
        local = np.full(ctx.n_users, -1, dtype=np.int64)
        local[ctx.visible_users] = np.arange(n_v)
        view = Interactions(local[ctx.view.users], ctx.view.items, ctx.view.ratings)
        held_out = ctx.rng(self.name, "view-split").random(len(view)) < opt.val_fraction
        real_train, real_val = view.subset(~held_out), view.subset(held_out)
        rated = torch.zeros(n_v, ctx.n_items, dtype=torch.bool, device=device)
        rated[torch.as_tensor(view.users, device=device),
              torch.as_tensor(view.items, device=device)] = True
        loss = AttackLoss(rated, ctx.targets, opt.k, opt.kappa, opt.user_batch)
        model_cfg = surrogate_config(ctx.model_cfg, opt.surrogate)
        if opt.epochs:
            model_cfg = dataclasses.replace(model_cfg, epochs=opt.epochs)
        epochs = model_cfg.epochs
        start = int(math.floor(opt.attack_from * epochs)) + 1
        lr = opt.weight * model_cfg.lr
        defense_seed = derive_seed(ctx.seed, self.name, "surrogate")
        fake_users = torch.arange(n_v, n_v + n_fake, device=device)

        def train(fake: Interactions, round_: int, hook: EpochHook | None):
            shifted = Interactions(fake.users + n_v, fake.items, fake.ratings)
            f_train, f_val = split_fake_rows(shifted, ctx.rng(self.name, "fake-rows", round_),
                                             opt.val_fraction)
            data = TrainingData(Interactions.concat(real_train, f_train),
                                Interactions.concat(real_val, f_val), n_v + n_fake,
                                ctx.n_items, ctx.scale, ctx.feedback)
            defense = defense_cls(defense_cls.Options(), model_cfg, device, defense_seed)
            defense.epoch_hook = hook
            try:
                model, _ = defense.fit(data)
            except ValueError as err:
                raise AttackError(f"attack {self.name} (against {against}): {err}") from err
            return model

        fake = self.initial_profiles(ctx)
        best_key, best = None, fake
        bar = tqdm(range(1, opt.rounds + 1), desc=self.name, unit="round", leave=False,
                   disable=not ctx.progress)
        for round_ in bar:
            hook = EpochHook(loss, start, epochs, opt.steps, lr, fake_users)
            model = train(fake, round_, hook)
            if hook.calls == 0:
                raise AttackError(f"attack {self.name}: defense '{against}' never called the "
                                  "epoch hook; use one of "
                                  + ", ".join(hook_defenses(ctx.defenses)))
            if opt.read == "last" and id(model) in hook.last_scores:
                scores = hook.last_scores[id(model)]
            else:
                with torch.no_grad():
                    scores = model.score_all(fake_users)
            fake = self.read_profiles(ctx, scores)
            if opt.rounds == 1:
                return fake
            # The attacker's estimate of these profiles: the defense retrained on them, no hook.
            key = loss.hit_rate(train(fake, round_, None))
            bar.set_postfix_str(f"visible target HR@{opt.k} {key[0]:.3f}")
            if best_key is None or key > best_key:
                best_key, best = key, fake
        return best

    # ------------------------------------------------------------------ profiles
    def initial_profiles(self, ctx: ThreatContext) -> Interactions:
        """Targets at the top rating plus ``filler_size`` fillers: uniform over the non-target
        items (``init: average``) or over the 2 × filler_size most rated visible ones
        (``popular``), rated N(item mean, item std) of the view, projected."""
        rng = ctx.rng("attack", self.name, "init")
        excluded = np.zeros(ctx.n_items, dtype=bool)
        excluded[ctx.targets] = True
        if self.options.init == "popular":
            pool = popular_items(ctx.view, ctx.n_items, 2 * ctx.filler_size, ctx.targets)
        else:
            pool = np.flatnonzero(~excluded)
        fillers = sample_fillers(rng, ctx.n_fake, pool, ctx.filler_size)
        if ctx.feedback == "implicit":
            filler_r = np.ones(fillers.shape)
        else:
            mean, std = item_stats(ctx.view, ctx.n_items)
            filler_r = ctx.scale.project(rng.normal(mean[fillers], std[fillers]))
        return self._profiles(ctx, fillers, filler_r)

    def read_profiles(self, ctx: ThreatContext, scores: torch.Tensor) -> Interactions:
        """Fillers: each fake user's ``filler_size`` highest-scored non-target items, rated at
        Π(score) (1 under implicit feedback); targets at the top rating."""
        scores = scores.float().clone()
        scores[:, torch.as_tensor(ctx.targets, device=scores.device)] = float("-inf")
        size = min(ctx.filler_size, ctx.n_items - len(ctx.targets))
        top = scores.topk(size, dim=1)
        fillers = top.indices.cpu().numpy()
        if ctx.feedback == "implicit":
            filler_r = np.ones(fillers.shape)
        else:
            filler_r = ctx.scale.project(top.values.cpu().numpy().astype(np.float64))
        return self._profiles(ctx, fillers, filler_r)

    @staticmethod
    def _profiles(ctx: ThreatContext, fillers: np.ndarray, filler_r: np.ndarray) -> Interactions:
        n_t = len(ctx.targets)
        items = np.hstack([np.tile(ctx.targets, (ctx.n_fake, 1)), fillers])
        ratings = np.hstack([np.ones((ctx.n_fake, n_t)), filler_r])
        return profiles_from(items, ratings)


class CoAttack(GCoAttack):
    """CoAttack: GCoAttack co-trained with plain training (the ``none`` defense)."""

    name = "coattack"
    Options = CoAttackOptions

    @classmethod
    def against_of(cls, options) -> str:
        return "none"
