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
