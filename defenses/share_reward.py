"""SHARE part (c): the multi-dimensional reward and the bandit that sets the adversarial
strength each epoch (defenses.md §3c).

After every epoch past the warm-up the defense measures, on validation data only:
quality Q (−validation loss), robustness B (−(L_adv − L_clean), the validation-loss gap under a
fixed reference perturbation) and fairness F (−|active − inactive validation-loss gap|).
The reward of the epoch is R = w_q·z(ΔQ) + w_b·z(ΔB) + w_f·z(ΔF): each change from the previous
epoch is z-scored against the recent changes (exponential moving mean and variance), so the
three live on one scale and the trend of training is not credited to an arm. A UCB1 bandit
over strength multipliers (default {0.5, 1, 2}, applied to ε and to the adversarial weight)
credits R to the multiplier used in that epoch and picks the next one.

``RewardedStrength`` runs this over one training run; ``ValidationQuality`` (Q, which also
selects SHARE's returned epoch) and ``perturbed_losses`` (the losses behind B and F) are the
measurements it is fed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class RewardComponents:
    quality: float
    robustness: float
    fairness: float


class RunningZ:
    """z-score of a value against the recent ones: an exponential moving mean and variance
    (weight ``decay`` on the newest), so the slow drift of the changes over training — large
    early improvements, small late ones — is not credited to whichever arm ran at the time.
    0 until two values are seen."""

    def __init__(self, decay: float = 0.3) -> None:
        self.decay = decay
        self.n, self.mean, self.var = 0, 0.0, 0.0

    def __call__(self, x: float) -> float:
        self.n += 1
        if self.n == 1:
            self.mean = x
            return 0.0
        z = (x - self.mean) / math.sqrt(self.var) if self.var > 1e-24 else 0.0
        delta = x - self.mean
        self.mean += self.decay * delta
        self.var = (1 - self.decay) * (self.var + self.decay * delta * delta)
        return z


@dataclass
class RewardTracker:
    """Turns successive component measurements into rewards."""

    w_quality: float = 1.0
    w_robustness: float = 1.0
    w_fairness: float = 1.0
    previous: RewardComponents | None = None
    _z: list = field(default_factory=lambda: [RunningZ(), RunningZ(), RunningZ()])

    def reward(self, now: RewardComponents) -> tuple[float, list[float]]:
        """The reward of the step that led from the previous measurement to ``now`` (0 for the
        first measurement), and the three z-scored changes."""
        prev, self.previous = self.previous, now
        if prev is None:
            return 0.0, [0.0, 0.0, 0.0]
        deltas = [now.quality - prev.quality, now.robustness - prev.robustness,
                  now.fairness - prev.fairness]
        zs = [z(d) for z, d in zip(self._z, deltas)]
        weights = [self.w_quality, self.w_robustness, self.w_fairness]
        return float(sum(w * z for w, z in zip(weights, zs))), zs


class UCBBandit:
    """UCB1 over a fixed list of arms: untried arms first (in order), then the arm maximizing
    mean reward + c · sqrt(2 ln t / n_arm)."""

    def __init__(self, arms: list[float], c: float = 1.0) -> None:
        if not arms:
            raise ValueError("share: reward arms must not be empty")
        self.arms = list(arms)
        self.c = c
        self.counts = [0] * len(arms)
        self.totals = [0.0] * len(arms)

    def select(self) -> int:
        for a, n in enumerate(self.counts):
            if n == 0:
                return a
        t = sum(self.counts)
        ucb = [self.totals[a] / self.counts[a]
               + self.c * math.sqrt(2.0 * math.log(t) / self.counts[a])
               for a in range(len(self.arms))]
        return max(range(len(self.arms)), key=lambda a: ucb[a])

    def update(self, arm: int, reward: float) -> None:
        self.counts[arm] += 1
        self.totals[arm] += reward

    def means(self) -> list[float]:
        return [t / n if n else float("nan") for t, n in zip(self.totals, self.counts)]


def fairness_gap(per_row_loss: torch.Tensor, users: torch.Tensor, active: torch.Tensor,
                 n_users: int) -> float:
    """|mean over active users of their mean loss − the same over the other users| (users with
    validation rows only)."""
    n = torch.bincount(users, minlength=n_users).to(per_row_loss.dtype)
    total = torch.zeros(n_users, dtype=per_row_loss.dtype,
                        device=per_row_loss.device).index_add_(0, users, per_row_loss)
    has = n > 0
    per_user = total / n.clamp_min(1)
    a, rest = has & active, has & ~active
    if not a.any() or not rest.any():
        return 0.0
    return float((per_user[a].mean() - per_user[rest].mean()).abs())


class RewardedStrength:
    """Part (c) over a run: before each epoch past the warm-up the bandit picks a multiplier of
    ε and of the adversarial weight; after it, the epoch's reward is credited to that arm.
    ``on`` False (part c off, or no adversarial training to steer): the base strength stays."""

    def __init__(self, opt, on: bool) -> None:
        self.on = on
        self.eps, self.adv_weight, self.warmup = opt.eps, opt.adv_weight, opt.warmup
        self.weights = (opt.w_quality, opt.w_robustness, opt.w_fairness)
        self.tracker = RewardTracker(*self.weights)
        self.bandit = UCBBandit(opt.arms, opt.ucb_c)
        self.arm: int | None = None

    def past_warmup(self, trainer) -> bool:
        return self.on and trainer.epoch >= self.warmup

    def choose(self, trainer) -> float | None:
        """Set the trainer's ε and adversarial weight for the next epoch; the multiplier, or
        None while the base strength stays (warm-up, or part (c) off)."""
        self.arm = None
        if not self.past_warmup(trainer):
            return None
        self.arm = self.bandit.select()
        multiplier = self.bandit.arms[self.arm]
        trainer.eps = self.eps * multiplier
        trainer.adv_weight = self.adv_weight * multiplier
        return multiplier

    def credit(self, components: RewardComponents) -> dict:
        """The reward of the change since the last measurement, credited to the arm of the
        epoch just trained (the first measurement after the warm-up has no arm); the entries
        to log."""
        logged = {"quality": components.quality, "robustness": components.robustness,
                  "fairness": components.fairness}
        reward, zs = self.tracker.reward(components)
        if self.arm is not None:
            self.bandit.update(self.arm, reward)
            logged["reward"] = reward
            logged["z"] = [round(z, 4) for z in zs]
        return logged

    def restart(self) -> None:
        """Training starts over: the changes are measured afresh (the bandit keeps its
        experience)."""
        self.tracker = RewardTracker(*self.weights)

    def info(self) -> dict:
        arms = list(map(str, self.bandit.arms))
        return {"arm_counts": dict(zip(arms, self.bandit.counts)),
                "arm_mean_reward": dict(zip(arms, [round(m, 4) for m in self.bandit.means()]))}


class ValidationQuality:
    """Quality Q of the model after an epoch, which also selects the returned epoch: "loss" =
    −validation loss; "hr" = validation HR@``k`` of the held-out liked items (normalized rating
    ≥ ``positive_rating``), ranked among the items the user did not train on."""

    def __init__(self, kind: str, train: tuple, val: tuple, positive_rating: float,
                 k: int) -> None:
        liked = val[2] >= positive_rating - 1e-6
        if kind == "hr" and not bool(liked.any()):
            raise ValueError(f"share: no validation rating reaches positive_rating "
                             f"{positive_rating}, so quality 'hr' has nothing to rank; "
                             "lower positive_rating or set quality: loss")
        self.kind, self.k = kind, k
        self.liked_rows = (val[0][liked], val[1][liked])
        self.seen = (train[0], train[1])

    @torch.no_grad()
    def __call__(self, trainer, val_loss: float) -> float:
        if self.kind != "hr":
            return -val_loss
        saved, trainer.val_k = trainer.val_k, self.k   # the trainer's full-ranking check
        try:
            return trainer.validation_hr(self.liked_rows[0], self.liked_rows[1], self.seen)
        finally:
            trainer.val_k = saved


def reference_eps(personalized: bool, eps: float, user_sq_norms: torch.Tensor) -> torch.Tensor:
    """ε at the base strength (not the chosen arm's), so robustness is comparable across
    epochs: SHARE's per-user rule, or one ε for every row."""
    if not personalized:
        return torch.full_like(user_sq_norms, eps)
    mean = user_sq_norms.mean().clamp_min(1e-12)
    return eps * 2.0 * torch.sigmoid(user_sq_norms / mean - 1.0)


@torch.no_grad()
def perturbed_losses(trainer, val: tuple, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per validation row, the clean loss and the loss under the reference perturbation of
    size ``eps``: closed form for the hand-derived MF path, autograd for any other model."""
    users, items, ratings = val
    model = trainer.model
    if trainer.hand_derived():
        P, Q = model.user_emb, model.item_emb
        p, q = P[users], Q[items]
        pred = (p * q).sum(1)
        err = pred - ratings
        sq_p, norm_p, norm_q = p.pow(2).sum(1), p.norm(dim=1), q.norm(dim=1)
        step = reference_eps(trainer.personalized, eps, sq_p) * torch.sign(err)
        inv = torch.where((norm_p > 0) & (norm_q > 0),
                          1.0 / (norm_p * norm_q).clamp_min(1e-12), torch.zeros_like(norm_p))
        err_adv = err + step * (norm_p + norm_q) + step * step * pred * inv
        return err.pow(2), err_adv.pow(2)
    saved = trainer.eps
    trainer.eps = eps
    clean_all, adv_all = [], []
    try:
        for idx in torch.arange(len(users), device=users.device).split(65536):
            with torch.enable_grad():
                embs = [e.detach().requires_grad_(True)
                        for e in model.embed(users[idx], items[idx])]
                pred = model.head(embs, users[idx], items[idx])
                losses = trainer.sample_losses(pred, ratings[idx])
                deltas = trainer.perturbations(embs, users[idx], items[idx], losses,
                                               losses.mean())
            adv_pred = model.head([e + d for e, d in zip(embs, deltas)], users[idx], items[idx])
            clean_all.append(losses.detach())
            adv_all.append(trainer.sample_losses(adv_pred, ratings[idx]).detach())
    finally:
        trainer.eps = saved
    return torch.cat(clean_all), torch.cat(adv_all)
