"""Generate → detect → repair: a white-box attack on a defense that distrusts rows or users
(Koh, Steinhardt & Liang, "Stronger Data Poisoning Attacks Break Data Sanitization Defenses",
arXiv 1811.00741; threat-model.md §2).

The attacker knows the defense and runs it on its own surrogate data — its knowledge view
(visible users renumbered 0..n_visible−1, split 9:1 into training and validation by a seeded
draw) plus its current fake users appended after them, whose rows are split as the platform
splits every account's (``data.split.split_fake_rows``). After ``fit`` it reads
``defense.distrusted()`` and maps the distrusted rows (and users) back onto its fake rows:

1. **generate** — round 0 is the base attack's profiles (``base``, profile cloning by default);
2. **detect** — fit the defense (``against``) on the surrogate data, score the model it returns
   (the targets' HR@``k`` over the visible users, their rated items masked) and read what it
   distrusted;
3. **repair** — change what was distrusted, keeping the promotion objective (a fake user that
   carries a target rates it at the top of the scale):

   * distrusted target rows (the payload): when more than ``tolerance`` of the judged target
     rows were distrusted, each fake user carries fewer targets — half as many, rounded up,
     never below ``min_targets`` — re-assigned in balanced blocks of a shuffled target order
     (every target keeps ⌊n_fake · per_fake / T⌋ or ⌈·⌉ carriers). Fewer rare items top-rated
     together by the same accounts and a thinner crowd on each: the targets spread over more
     groups of fake users;
   * distrusted filler rows (the camouflage): a fake user with more than ``tolerance`` of its
     judged filler rows distrusted (or flagged as a whole by a user-level defense) drops its
     fillers for a fresh copy of a random visible user's profile; any other distrusted filler
     row is replaced by a row drawn from the view (an item in proportion to its visible
     popularity, never one the fake user already rates) with that real rating
     (``filler_ratings: copy``) or the item's visible mean on the grid (``mean``);

   then detect again, for ``rounds`` repairs in all (fewer when a round has nothing
   distrusted: there is nothing left to repair);
4. **select** — the round whose defended surrogate scored highest (ties: the earliest, so the
   base profiles win unless a repair did better). By construction the result is at least as
   strong as the base attack against the attacker's own copy of the defense.

It works from ``distrusted()`` alone (never a defense's internals), so any defense whose
``judges_data()`` is true can be attacked; the defense runs with its default options (a
white-box attacker facing a non-default configuration is not modelled). The defense is
retrained from the same seeded initialization every round, so rounds compare like for like.
Cost: at most ``rounds + 1`` fits of the defense on the view.

Limitation: the surrogate holds only the visible users, so a population-level signal (an item
pair's co-rating lift, a detector's fixed flag budget) is not calibrated as on the platform; a
repair that escapes the surrogate's copy may still be partly seen by the platform's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data.ratings import Interactions, Split, TrainingData
from data.split import split_fake_rows
from utils.config import ConfigError, ModelConfig, bounds
from utils.metrics import Evaluator
from utils.seeding import derive_seed

from .base import Attack, Component, item_stats
from .surrogate import surrogate_choices, surrogate_config
from .threat import ThreatContext

FILLER_RATINGS = ("copy", "mean")
# Attacks that cannot serve as the base: the clean data, a file, and this attack itself.
NOT_A_BASE = ("none", "file", "adaptive")


@dataclass
class AdaptiveOptions:
    against: str = "share"     # the defense attacked: one that distrusts rows or users
    base: str = "clone"        # the attack whose profiles round 0 holds
    rounds: int = field(default=3, metadata=bounds(0, 50))  # repairs (rounds + 1 defense fits)
    # Share of the judged target rows, or of a fake user's judged filler rows, that may be
    # distrusted before they are repaired.
    tolerance: float = field(default=0.25, metadata=bounds(0, 1, hi_open=True))
    min_targets: int = field(default=1, metadata=bounds(1))  # targets per fake user, at least
    filler_ratings: str = "copy"   # a replaced filler's rating: "copy" the real one, or "mean"
    k: int = field(default=50, metadata=bounds(1))           # the surrogate score's HR@k
    val_fraction: float = field(default=0.1, metadata=bounds(0, 1, lo_open=True, hi_open=True))
    # The model the defense trains on the attacker's copy (attacks/surrogate.py
    # surrogate_config): auto = the victim's (MF, NCF; MF for a graph victim), victim = the
    # victim's class whatever it is (LightGCN), or a model name.
    surrogate: str = "auto"


@dataclass
class Round:
    """What one detect step saw (the attack keeps them as ``trace``, for inspection and tests)."""

    score: float                 # target HR@k of the defended surrogate
    distrusted: int              # fake rows distrusted
    judged: int                  # fake rows the defense could judge (its training rows)
    target_share: float          # share of the judged target rows that were distrusted
    targets_per_fake: int
    fake: Interactions = field(repr=False)   # the profiles this round detected


class AdaptiveAttack(Attack):
    name = "adaptive"
    Options = AdaptiveOptions

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        opts = super().parse_options(data, where)
        if opts.filler_ratings not in FILLER_RATINGS:
            raise ConfigError(f"{where}.filler_ratings: '{opts.filler_ratings}' is unknown; use "
                              f"one of {', '.join(FILLER_RATINGS)}")
        if opts.surrogate not in surrogate_choices():
            raise ConfigError(f"{where}.surrogate: '{opts.surrogate}' is unknown; use one of "
                              f"{', '.join(surrogate_choices())}")
        return opts

    @classmethod
    def components(cls, options) -> list[Component]:
        return [Component("attack", options.base, "base",
                          lambda name, _: name not in NOT_A_BASE,
                          "cannot generate the first round"),
                Component("defense", options.against, "against",
                          lambda _, defense: defense.judges_data(),
                          "distrusts no rows or users, so there is nothing to repair")]

    def generate(self, ctx: ThreatContext) -> Interactions:
        opt = self.options
        base = ctx.component("attack", opt.base, self.name)
        fake = _canonical(base(base.parse_options(None)).generate(ctx), ctx)
        surrogate = _Surrogate(ctx, opt, self.name)
        per_fake = int(np.bincount(fake.users[np.isin(fake.items, ctx.targets)],
                                   minlength=ctx.n_fake).max(initial=0))
        self.trace: list[Round] = []
        for r in range(opt.rounds + 1):
            score, distrusted, judged = surrogate.detect(fake, r)
            on_target = judged & np.isin(fake.items, ctx.targets)
            self.trace.append(Round(score, int(distrusted.sum()), int(judged.sum()),
                                    float(distrusted[on_target].mean()) if on_target.any()
                                    else 0.0, per_fake, fake))
            if r == opt.rounds or not distrusted.any():
                break
            fake, per_fake = self._repair(ctx, fake, distrusted, judged, per_fake, r)
        scores = [t.score for t in self.trace]
        self.selected = int(np.argmax(scores))   # the first of equal scores: base wins ties
        return self.trace[self.selected].fake

    def _repair(self, ctx: ThreatContext, fake: Interactions, distrusted: np.ndarray,
                judged: np.ndarray, per_fake: int, r: int) -> tuple[Interactions, int]:
        """The next round's profiles (see the module docstring) and targets per fake user."""
        opt = self.options
        rng = ctx.rng("attack", self.name, "repair", r)
        bad = distrusted & judged
        is_target = np.isin(fake.items, ctx.targets)
        # Targets: thin the crowd when the defense saw it.
        carriers = fake.subset(is_target)
        t_judged = judged & is_target
        if (t_judged.any() and bad[t_judged].mean() > opt.tolerance
                and per_fake > opt.min_targets):
            per_fake = max(opt.min_targets, -(-per_fake // 2))
            carriers = _assign_targets(ctx, per_fake, rng)
        # Fillers: a fake user whose fillers were seen gets a fresh real profile; other
        # distrusted filler rows are redrawn one by one.
        fillers = ~is_target
        n_judged = np.bincount(fake.users, weights=judged & fillers, minlength=ctx.n_fake)
        n_bad = np.bincount(fake.users, weights=bad & fillers, minlength=ctx.n_fake)
        exposed = n_bad > opt.tolerance * np.maximum(n_judged, 1)
        mine = fillers & ~exposed[fake.users]
        kept = fake.subset(mine & ~bad)
        fresh = _copy_profiles(ctx, np.flatnonzero(exposed), rng)
        taken = Interactions.concat(kept, fresh, carriers)
        drawn = _draw_rows(ctx, fake.users[mine & bad], taken, rng)
        if opt.filler_ratings == "mean" and ctx.feedback != "implicit":
            drawn.ratings = ctx.scale.project(_item_means(ctx)[drawn.items]).astype(np.float32)
        return _canonical(Interactions.concat(taken, drawn), ctx), per_fake


class _Surrogate:
    """The attacker's copy of the platform: its view plus its fakes, the defense, the score."""

    def __init__(self, ctx: ThreatContext, opt: AdaptiveOptions, tag: str) -> None:
        self.ctx, self.opt, self.tag = ctx, opt, tag
        self.defense_cls = ctx.component("defense", opt.against, tag)
        self.model_cfg = surrogate_config(
            ctx.model_cfg if ctx.model_cfg is not None else ModelConfig(), opt.surrogate)
        self.visible = np.unique(np.asarray(ctx.visible_users, dtype=np.int64))
        view = ctx.view
        local = np.searchsorted(self.visible, view.users)
        is_val = np.zeros(len(view), dtype=bool)
        n_val = int(round(opt.val_fraction * len(view)))
        is_val[ctx.rng("attack", tag, "view-split").permutation(len(view))[:n_val]] = True
        self.train = Interactions(local[~is_val], view.items[~is_val], view.ratings[~is_val])
        self.val = Interactions(local[is_val], view.items[is_val], view.ratings[is_val])
        n_vis = len(self.visible)
        split = Split(self.train, self.val, np.full(n_vis, -1, dtype=np.int64),
                      np.zeros(n_vis, dtype=np.float32), n_vis, ctx.n_items, ctx.scale,
                      ctx.feedback)
        self.evaluator = Evaluator(split, ctx.targets, opt.k, device=ctx.device)
        self.seed = derive_seed(ctx.seed, "attack", tag, "defense")

    def detect(self, fake: Interactions, r: int) -> tuple[float, np.ndarray, np.ndarray]:
        """Fit the defense on view + ``fake``; returns the defended model's target HR@k and,
        per fake row, whether it was distrusted and whether the defense judged it."""
        ctx, n_vis = self.ctx, len(self.visible)
        shifted = Interactions(fake.users + n_vis, fake.items, fake.ratings)
        f_train, f_val = split_fake_rows(shifted, ctx.rng("attack", self.tag, "fake-rows", r),
                                         self.opt.val_fraction)
        data = TrainingData(Interactions.concat(self.train, f_train),
                            Interactions.concat(self.val, f_val), n_vis + ctx.n_fake,
                            ctx.n_items, ctx.scale, ctx.feedback)
        cls = self.defense_cls
        defense = cls(cls.parse_options(None), self.model_cfg, ctx.device, self.seed, False)
        model, _ = defense.fit(data)
        score = float(self.evaluator.evaluate(model).metrics[f"target_hr@{self.opt.k}"])
        distrusted = np.zeros(len(fake), dtype=bool)
        judged = np.zeros(len(fake), dtype=bool)
        rows = _row_index(fake, f_train.users - n_vis, f_train.items, ctx.n_items)
        judged[rows] = True
        verdict = defense.distrusted()
        if verdict is not None:
            distrusted[rows] = np.asarray(verdict.rows, dtype=bool)[len(self.train):]
            if verdict.users is not None:
                flagged = np.asarray(verdict.users, dtype=bool)[n_vis:n_vis + ctx.n_fake]
                distrusted |= flagged[fake.users]
                judged[:] = True
        return score, distrusted, judged


# ----------------------------------------------------------------------------- helpers

def _canonical(fake: Interactions, ctx: ThreatContext) -> Interactions:
    """One row per (fake user, item), sorted by user then item; targets at the top rating."""
    keys = fake.users * ctx.n_items + fake.items
    _, first = np.unique(keys, return_index=True)   # sorted keys, first occurrence kept
    out = fake.subset(first)
    out.ratings[np.isin(out.items, ctx.targets)] = 1.0
    return out


def _row_index(fake: Interactions, users: np.ndarray, items: np.ndarray, n_items: int
               ) -> np.ndarray:
    """Positions in the canonical (key-sorted) ``fake`` of the given (user, item) rows."""
    return np.searchsorted(fake.users * n_items + fake.items, users * n_items + items)


def _assign_targets(ctx: ThreatContext, per_fake: int, rng: np.random.Generator
                    ) -> Interactions:
    """Each fake user carries ``per_fake`` distinct targets at the top rating: consecutive
    blocks of a shuffled cyclic target order, so every target gets ⌊n_fake·per_fake/T⌋ or
    ⌈·⌉ carriers and no two fake users share more targets than the blocks force."""
    targets = rng.permutation(np.asarray(ctx.targets, dtype=np.int64))
    per_fake = min(per_fake, len(targets))
    position = rng.permutation(ctx.n_fake)
    slots = position[:, None] * per_fake + np.arange(per_fake)[None, :]
    users = np.repeat(np.arange(ctx.n_fake), per_fake)
    items = targets[(slots % len(targets)).reshape(-1)]
    return Interactions(users, items, np.ones(len(items)))


def _copy_profiles(ctx: ThreatContext, fakes: np.ndarray, rng: np.random.Generator
                   ) -> Interactions:
    """A fresh copy of a random visible user's profile (targets left out) for each fake user."""
    view = ctx.view
    if len(fakes) == 0 or len(view) == 0:
        return Interactions(np.zeros(0), np.zeros(0), np.zeros(0))
    visible = np.unique(view.users)
    sources = rng.choice(visible, size=len(fakes), replace=len(fakes) > len(visible))
    order = np.argsort(view.users, kind="stable")
    sorted_users = view.users[order]
    starts = np.searchsorted(sorted_users, sources, side="left")
    lengths = np.searchsorted(sorted_users, sources, side="right") - starts
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    rows = order[np.repeat(starts, lengths) + offsets]
    users = np.repeat(fakes, lengths)
    keep = ~np.isin(view.items[rows], ctx.targets)
    return Interactions(users[keep], view.items[rows][keep], view.ratings[rows][keep])


def _draw_rows(ctx: ThreatContext, users: np.ndarray, taken: Interactions,
               rng: np.random.Generator, tries: int = 16) -> Interactions:
    """One row per entry of ``users``, copied from a uniformly drawn row of the view (so items
    come in proportion to their visible popularity), never a target nor an item the fake user
    already rates; an entry whose ``tries`` draws all collide is dropped."""
    view = ctx.view
    if len(users) == 0 or len(view) == 0:
        return Interactions(np.zeros(0), np.zeros(0), np.zeros(0))
    n_items = ctx.n_items
    picks = rng.integers(0, len(view), size=(len(users), tries))
    keys = users[:, None] * n_items + view.items[picks]
    ok = ~np.isin(keys, taken.users * n_items + taken.items) \
        & ~np.isin(view.items[picks], ctx.targets)
    # Among each entry's draws the first one whose key no earlier entry or draw has claimed.
    flat_ok = ok.reshape(-1)
    flat_keys = keys.reshape(-1)
    _, first = np.unique(np.where(flat_ok, flat_keys, -1), return_index=True)
    unique_first = np.zeros(len(flat_keys), dtype=bool)
    unique_first[first] = True
    ok &= unique_first.reshape(ok.shape)
    has = ok.any(1)
    col = ok.argmax(1)[has]
    rows = picks[np.flatnonzero(has), col]
    return Interactions(users[has], view.items[rows], view.ratings[rows])


def _item_means(ctx: ThreatContext) -> np.ndarray:
    return item_stats(ctx.view, ctx.n_items)[0]
