"""SHARE — "SHoot the ARrow at the targEt": personalized adversarial training driven by dynamic
rewards. Only the authors' abstract is public (no paper text, no code); this is the package's
design from it (defenses.md §3), with each of the abstract's three claims as a switchable part,
and a fourth part of ours. ``fit`` runs the parts epoch by epoch; the helpers hold the parts'
mechanics: ``share_elimination.py`` (a) over a run, ``share_valuation.py`` and
``share_group.py`` (a)'s row values, ``share_reward.py`` (c), ``mf_adversarial.py`` (b)'s
hand-derived epoch. What was measured, with the commands: docs/share-measurements.md.

(a) value-based elimination (``eliminate``): training rows are valued and the least valuable
    are distrusted. The default valuation is the *group signal* (``share_group.py``): a
    top-rated row whose item has at least ``group_min_partners`` lockstep partners among its
    user's top ratings (item pairs top-rated together by a crowd, shrunk lift ≥
    ``group_lift``, users weighted 1/log(e + their top ratings)) — a promotion attack's fake
    users must top-rate the same targets together, whatever their fillers or cloned profiles
    look like. It is counted on every observed rating (train ∪ val), so it does not depend on
    where fake rows were placed, and it needs no model: with ``eliminate_amount: significant``
    (default) only the flagged rows are distrusted (at most ``eliminate_fraction``, no per-user
    cap), from the first epoch (``screen_first``) and again at every scoring after ``warmup``
    every ``rescore_every`` epochs. ``eliminate_amount: fraction`` always distrusts the
    lowest-valued ``eliminate_fraction`` (no user giving more than ``max_user_share`` of their
    rows; or whole users with ``granularity: user``), valued by the weighted ranks of every
    term with a weight > 0 (``share_valuation.py``): the spec's first-order terms — influence
    on the validation loss, on the active/inactive fairness gap (weight 1 − α), the exposure
    penalty — weak detectors (the rows they eliminate hold *fewer* fake rows than chance); the
    first default's terms (``share_v1``): a top rating (*push*) from a user of low *reach*
    (whose items sit far from an audience's top-K lists) on an item of high *unanimity* (a
    crowd rates it at the top) and of low validation *support* (few validation ratings per
    training rating); and the group signal's rank. At each scoring an item whose rows are
    mostly distrusted goes back to its initial embedding, undoing what they gave it (with
    ``screen_first`` only items newly over the threshold: the others learnt from trusted rows
    only since the screening). Distrusted rows keep training their own user but stop moving
    the item table (``eliminate_from: items``; ``all`` drops them), so a real user flagged by
    mistake is still personalized.
(b) personalized adversarial training (``adversarial``): the APR step of ``adversarial.py`` with
    ε_u = ε · 2 · sigmoid(‖p_u‖² / mean_batch ‖p‖² − 1) (PamaCF's form; ``personalized: false``
    gives every row ε); item rows take their sample's user's ε; one δ per occurrence.
(c) reward-driven strength (``reward``): after each epoch a reward from validation quality,
    robustness and fairness (``share_reward.py``) feeds a UCB bandit over multipliers of ε and of
    the adversarial weight, which picks the next epoch's strength.
(d) count-aware item prior (``item_prior``; ours, not in the abstract): bounded item influence.
    The group signal cannot see targets pushed by accounts that share nothing else (the
    ``adaptive`` attack spreads them: a few targets per fake user, none top-rated together
    often enough). What such poison *does* is still visible: a handful of top ratings turns a
    thinly rated item into one that sits in everyone's top-K, because the per-element L2 grows
    with an item's number of ratings exactly as its data term does, so a rare item is barely
    held (and Adam moves a rarely seen row as fast as a popular one). Part (d) adds, per
    occurrence of item i, λ / n_i^γ · ‖q_i‖² (n_i: the item's trusted training rows — the rows
    part (a) distrusts do not count), a total of λ / n_i^(γ−1) per epoch: a Gaussian prior whose
    weight falls with the evidence, so an item's embedding needs many ratings to move far from
    0. λ = 2·10⁵, γ = 3 when on. It needs no model, no validation property and never looks at
    who rated the item (so cloned profiles, spread targets and targets rated below the top are
    alike to it). **Off by default** (``item_prior: 0``; the variant ``share_prior`` turns it
    on), because it wins by a blind spot of the protocol rather than by robustness: on clean
    data it keeps thinly rated items out of the top-K lists altogether, and a defense that
    never recommends a thinly rated item scores 0 on unpopular targets (rarely rated by
    construction) whoever rated them; target HR@K cannot tell that from robustness.

The defense never sees the target items or which users are fake; all users are treated alike
(the audience is drawn among users that have validation rows, i.e. the users whose lists the
platform can check). The support term (``share_v1``) assumes what only the `train` protocol
gives — validation data without fake ratings — and carries no signal under
``split.fake_rows: platform`` (threat-model.md §1); the group signal assumes nothing about the
split. For explicit MF every epoch is hand-derived (``mf_adversarial.adversarial_mf_epoch``:
the autograd step's mathematics without the graph); other models use the autograd step. Part
(a) needs MF's closed-form per-sample gradients and explicit feedback; asking for it elsewhere
is a clear error.

Deviations from the spec (evidence in docs/share-measurements.md and the README): the default
valuation (the group signal, only significant rows, from the first epoch; the spec's terms at
0, α = 1) because the spec's first-order terms distrust real rows rather than poison; the
item-side elimination, the item reset and the per-user cap of the fixed budget; ε = 0.03 (AT's,
not PamaCF's 0.5: on explicit MF with validation-MSE model selection a large ε makes the warm-up
epoch the selected model, i.e. no adversarial training at all); the reward's robustness term
uses the base ε, not the chosen arm's, so it measures the model.

Model selection (``models.selection.BestEpochSelector``): the epoch with the best quality Q
among the epochs after the warm-up (so the model returned was trained under SHARE's parts,
never the plain warm-up model). ``quality: hr`` (validation HR@50 of the held-out liked items
instead of −validation MSE) is an option, not the default: it raises clean-data test HR@50, but
plain MF selected the same way gains as much, so that gain belongs to the selection rule, not
to SHARE (docs/share-measurements.md).

``info`` (logged to runs.csv's ``defense_info``): per epoch the chosen multiplier, ε, weight,
reward and its components, and the number of rows eliminated; per scoring the eliminated rows,
encoded compactly (:func:`decode_eliminated` gives them back as row indices of
``TrainingData.train``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from models.base import declares_class
from models.mf_kernel import EPS_CONSTANT, EPS_USER_NORM
from models.selection import BestEpochSelector
from models.optimizers import make_optimizer
from utils.config import bounds
from utils.seeding import torch_generator

from .adversarial import AdversarialDefense, user_rows
from .base import Distrust, TrainingData
from .mf_adversarial import HandDerivedAdversarialTrainer
from .pamacf import eps_from_sq_norms, norm_scaled_eps
# encode_rows, decode_rows and decode_eliminated stay importable from here (runs.csv readers).
from .share_elimination import (Elimination, decode_eliminated, decode_rows,  # noqa: F401
                                encode_rows)
from .share_reward import (RewardComponents, RewardedStrength, ValidationQuality, fairness_gap,
                           perturbed_losses)
from .share_valuation import active_users

CHOICES = {"granularity": ("sample", "user"), "eliminate_from": ("items", "all"),
           "quality": ("hr", "loss"),
           "reach_lists": ("current", "warmup"), "combine": ("min", "sum"),
           "eliminate_amount": ("significant", "fraction")}


@dataclass
class SHAREOptions:
    # (b) personalized adversarial training
    adversarial: bool = True
    personalized: bool = True
    eps: float = field(default=0.03, metadata=bounds(0))  # AT's ε; see the module docstring
    adv_weight: float = field(default=1.0, metadata=bounds(0))
    warmup: int = field(default=5, metadata=bounds(0))     # T_w: plain epochs first
    # (a) value-based elimination
    eliminate: bool = True
    eliminate_fraction: float = field(default=0.03, metadata=bounds(0, 1, hi_open=True))
    rescore_every: int = field(default=10, metadata=bounds(1))  # T_v
    granularity: str = "sample"                             # or "user": whole users
    eliminate_from: str = "items"    # "items": rows stop moving the item table; "all": dropped
    restart: bool = False            # after the first scoring, train again from the start
    # At each scoring, an item with at least this share of its rows distrusted goes back to its
    # initial embedding (and a fresh Adam state): what those rows gave it is undone.
    reset_items_above: float = field(default=0.5, metadata=bounds(0, 1, lo_open=True))
    # Only rows on items where the lowest-valued rows make up at least this share of the item's
    # rows stay distrusted (share_valuation.concentrated_rows); 0 keeps every chosen row.
    # Not the default: on tuning seeds 0.3 gave FilmTrust +0.003 clean test HR@50 and ML-100K
    # −0.005, with slightly weaker robustness there (README).
    min_item_share: float = field(default=0.0, metadata=bounds(0, 1))
    reach_lists: str = "current"     # reach against the "current" model's lists or the "warmup"'s
    max_user_share: float = field(default=0.25, metadata=bounds(0, 1, lo_open=True))
    alpha: float = field(default=1.0, metadata=bounds(0, 1))    # robustness vs fairness value
    validation_weight: float = field(default=0.0, metadata=bounds(0))
    exposure_weight: float = field(default=0.0, metadata=bounds(0))
    # The old default valuation (``share_v1``): reach 0.5, push 1, unanimity 1, support 1.
    reach_weight: float = field(default=0.0, metadata=bounds(0))
    push_weight: float = field(default=0.0, metadata=bounds(0))
    unanimity_weight: float = field(default=0.0, metadata=bounds(0))
    unanimity_prior: float = field(default=20.0, metadata=bounds(0))
    # Validation support of the row's item (share_valuation.item_support): validation ratings
    # per training rating. Only a signal when fake rows never reach validation (the `train`
    # protocol); under `split.fake_rows: platform` it carries none (threat-model.md §1).
    support_weight: float = field(default=0.0, metadata=bounds(0))
    support_prior: float = field(default=10.0, metadata=bounds(0))
    # Group signal (share_group.py): a top-rated row's lockstep partners among its user's top
    # ratings; pairs with shrunk lift (C + group_prior) / (E + group_prior) ≥ group_lift.
    group_weight: float = field(default=1.0, metadata=bounds(0))
    group_prior: float = field(default=2.0, metadata=bounds(0, lo_open=True))
    group_lift: float = field(default=5.0, metadata=bounds(1, lo_open=True))
    group_min_partners: int = field(default=2, metadata=bounds(1))
    # "significant": eliminate only group-flagged rows (≥ group_min_partners partners), at
    # most eliminate_fraction of the rows, lowest-valued first, no per-user cap (clean data
    # loses almost nothing); "fraction": always the lowest-valued eliminate_fraction.
    eliminate_amount: str = "significant"
    # With eliminate_amount "significant", the flagged rows are distrusted from the first
    # epoch (the group signal needs no model); the model-based terms join at the scorings.
    screen_first: bool = True
    combine: str = "sum"             # reach and unanimity terms: "sum" or "min" (either side)
    active_fraction: float = field(default=0.2, metadata=bounds(0, 1, lo_open=True, hi_open=True))
    audience: int = field(default=300, metadata=bounds(1))
    top_k: int = field(default=50, metadata=bounds(1))
    exposure_tau: float = field(default=0.1, metadata=bounds(0, lo_open=True))
    # Quality Q, which also selects the returned epoch (among the epochs after the warm-up):
    # "loss" = −validation loss (the spec's: −MSE explicit, HR@10 implicit); "hr" = validation
    # HR@top_k of the held-out liked items (normalized rating ≥ positive_rating). Not the
    # default: see the module docstring.
    quality: str = "loss"
    positive_rating: float = field(default=0.8, metadata=bounds(0, 1))
    # (d) count-aware item prior (bounded item influence; see the module docstring): per
    # occurrence of item i an extra L2 of item_prior / n_i ** item_prior_power on q_i (n_i: the
    # item's trusted training rows), a total of item_prior / n_i ** (power − 1) per epoch:
    # with the default (2e5, 3) 500 at 20 ratings, 20 at 100, 2 at 300 — a thinly rated item's
    # embedding is held near 0, a popular one is free. 0 = off (the default; ``share_prior``
    # sets 2e5: see the module docstring for why it is not the default). Power 1 gives every
    # item the same total penalty.
    item_prior: float = field(default=0.0, metadata=bounds(0))
    item_prior_power: float = field(default=3.0, metadata=bounds(1))
    # (c) reward-driven strength
    reward: bool = True
    arms: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    ucb_c: float = field(default=1.0, metadata=bounds(0))
    w_quality: float = 1.0
    w_robustness: float = 1.0
    w_fairness: float = 1.0


class SHARETrainer(HandDerivedAdversarialTrainer):
    """The hand-derived adversarial trainer with SHARE's switch for the per-user ε."""

    personalized: bool = True


class SHARE(AdversarialDefense):
    name = "share"
    Options = SHAREOptions
    trainer_class = SHARETrainer

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        opts = super().parse_options(data, where)
        from utils.config import ConfigError
        for name, valid in CHOICES.items():
            if getattr(opts, name) not in valid:
                raise ConfigError(f"{where}.{name}: '{getattr(opts, name)}' is unknown; use one "
                                  f"of {', '.join(valid)}")
        if not opts.arms or any(a < 0 for a in opts.arms):
            raise ConfigError(f"{where}.arms: give a non-empty list of multipliers ≥ 0")
        if opts.eliminate and opts.eliminate_amount == "significant" and opts.group_weight <= 0:
            raise ConfigError(f"{where}.eliminate_amount: 'significant' needs the group signal "
                              "(group_weight > 0); set group_weight or eliminate_amount: fraction")
        return opts

    @classmethod
    def cannot_train(cls, options, model, loss, feedback):
        """Parts (a) and (d) live in explicit MF's hand-derived epoch (the row values read MF's
        closed-form per-sample gradients; distrusted rows stop moving only the item table);
        parts (b) and (c) are pointwise steps with no BPR form. So: explicit MF with (a) or
        (d) on (``share``, ``share_prior``, every valuation variant); MF and NCF with mse or
        bce without them (``share_no_elim``); no BPR victim (MF-BPR, LightGCN)."""
        parts = [part for part, on in (("(a) row elimination", options.eliminate),
                                       ("(d) item prior", options.item_prior > 0)) if on]
        if parts and not (declares_class(model, "compiled_fast_path") and feedback == "explicit"):
            return (f"its part {' and '.join(parts)} runs inside explicit MF's hand-derived "
                    "epoch (row values from MF's closed-form per-sample gradients); it trains "
                    "mf on explicit feedback (share_no_elim also mf and ncf with loss bce)")
        if loss == "bpr":
            return ("its adversarial step (b) and reward (c) are pointwise (a per-rating loss) "
                    "with no BPR form; it trains mf and ncf with model.loss mse (explicit) or "
                    "bce (implicit)")
        return super().cannot_train(options, model, loss, feedback)

    def mf_row_eps(self, trainer, users, user_sq_norms, err) -> torch.Tensor:
        """Hand-derived path (explicit MF): ε per batch row from the user rows' norms."""
        if not trainer.personalized:
            return torch.full_like(user_sq_norms, trainer.eps)
        return eps_from_sq_norms(trainer.eps, user_sq_norms)

    def mf_eps_mode(self, trainer) -> int:
        """The compiled epoch's name for ``mf_row_eps`` (``models.mf_kernel``)."""
        return EPS_USER_NORM if trainer.personalized else EPS_CONSTANT

    def row_eps(self, trainer, embs, users, items, sample_losses):
        """Autograd path (models other than explicit MF): ε per batch row."""
        if not trainer.personalized:
            return [torch.full_like(e[:, :1], trainer.eps) for e in embs]
        is_user = user_rows(trainer.model, embs)
        eps_u = norm_scaled_eps(trainer.eps, embs[is_user.index(True)])
        return [eps_u for _ in embs]

    # ------------------------------------------------------------------ fit
    def fit(self, data: TrainingData):
        """Train one model under SHARE; each epoch: (a) rescore the rows on schedule, (c) pick
        the strength, (d) set the item prior, (b) train an adversarial epoch, measure quality
        and credit (c)'s reward; return the best-quality epoch after the warm-up and ``info``."""
        opt = self.options
        model = self.new_model(data)
        trainer = self._configured_trainer(model, data)
        train, val = trainer._tensors(data.train), trainer._tensors(data.val)
        epochs = self.model_cfg.epochs
        elimination = Elimination(opt, train, val, data.n_users, data.n_items,
                                  self._audience(val[0], opt.audience))            # (a)
        strength = RewardedStrength(opt, on=opt.reward and opt.adversarial)         # (c)
        active = active_users(train[0], data.n_users, opt.active_fraction)
        quality = ValidationQuality(opt.quality, train, val, opt.positive_rating, opt.top_k)
        # Selection sees only epochs that trained under a defense part (after the warm-up), so
        # the returned model is never the plain warm-up model.
        defended = opt.adversarial or opt.eliminate
        select_from = opt.warmup + 1 if defended and epochs > opt.warmup else 1
        selector = BestEpochSelector(model, first_eligible=select_from, last_epoch=epochs)
        initial = copy.deepcopy(model.state_dict())
        restarted = False
        log = []
        for epoch in range(epochs):
            entry: dict = {"epoch": epoch + 1}
            # (a) on schedule: value the rows, distrust the lowest, undo what they gave items
            scheduled = elimination.scheduled(epoch)
            if scheduled or elimination.screening(epoch):
                entry.update(elimination.rescore(epoch, model, scheduled))
                if opt.reset_items_above < 1 and not opt.restart:
                    entry["items_reset"] = elimination.reset_items(trainer, initial)
                if opt.restart and not restarted and scheduled:
                    self._start_over(trainer, initial)
                    strength.restart()
                    # The warm-up counts again from here (as trainer.epoch does).
                    selector.start_over(first_eligible=select_from + epoch)
                    restarted = entry["restart"] = True
            entry["eliminated"] = elimination.n_distrusted
            # (c) this epoch's strength of (b)
            multiplier = strength.choose(trainer)
            if multiplier is not None:
                entry["arm"] = multiplier
            if opt.adversarial:
                entry["eps"], entry["adv_weight"] = trainer.eps, trainer.adv_weight
            # (d) the item prior, over the trusted rows
            if opt.item_prior > 0:
                trainer.item_l2 = self._item_l2(train[1], elimination.keep, data.n_items,
                                                opt.item_prior, opt.item_prior_power)
            # (b) one adversarial epoch (distrusted rows as eliminate_from says)
            rows, trainer.item_weight = elimination.epoch_rows()
            entry["train_loss"] = trainer.train_epoch(rows)
            entry["val_loss"] = trainer.validate(data.val)
            entry["val_quality"] = q = quality(trainer, entry["val_loss"])
            # (c) the reward of this epoch's strength
            if strength.past_warmup(trainer):
                entry.update(strength.credit(self._components(trainer, val, active,
                                                              data.n_users, q)))
            log.append(entry)
            selector.offer(epoch + 1, -q)
        selector.restore()
        # What the returned model was trained without: the last scoring at or before its epoch.
        self._distrusted_rows = elimination.distrusted_at(selector.best_epoch)
        return model, self._info(selector, log, elimination, strength)

    def _info(self, selector, log: list, elimination, strength) -> dict:
        """runs.csv's ``defense_info``: the selected epoch, every epoch's log, every scoring
        and the bandit's totals."""
        opt = self.options
        info = {"best_epoch": selector.best_epoch, "best_val": selector.best_value,
                "quality": opt.quality, "eps": opt.eps,
                "parts": {"eliminate": opt.eliminate, "adversarial": opt.adversarial,
                          "personalized": opt.personalized, "reward": strength.on},
                "restarted_at": next((e["epoch"] for e in log if e.get("restart")), None),
                "n_train_rows": len(elimination.keep), "epochs": log,
                "scorings": elimination.scorings}
        if strength.on:
            info.update(strength.info())
        return info

    def _configured_trainer(self, model, data: TrainingData) -> SHARETrainer:
        """The trainer of part (b) at its base strength (ε 0 without it); parts (a) and (d)
        need the hand-derived explicit MF path."""
        opt = self.options
        trainer = self.new_trainer(model, data)
        trainer.eps = opt.eps if opt.adversarial else 0.0
        trainer.adv_weight = opt.adv_weight if opt.adversarial else 0.0
        trainer.warmup = opt.warmup
        trainer.direction = "gradient"
        trainer.shared_rows = False
        trainer.defense = self
        trainer.personalized = opt.personalized
        if opt.eliminate and not trainer.hand_derived():
            raise ValueError("share: part (a), sample valuation, needs explicit MF; set "
                             "defense.options.share.eliminate=false for this model/feedback")
        if opt.item_prior > 0 and not trainer.hand_derived():
            raise ValueError("share: part (d), the item prior, needs explicit MF; set "
                             "defense.options.share.item_prior=0 for this model/feedback")
        return trainer

    def _start_over(self, trainer, initial: dict) -> None:
        """``restart``: the warm-up model was a probe; what the distrusted rows gave the items
        during it would stay in the item table, so training starts over from ``initial``."""
        model = trainer.model
        model.load_state_dict(initial)
        trainer.optimizer = make_optimizer(model.parameters(), self.model_cfg,
                                           lookup_tables=model.lookup_tables())
        trainer.epoch = 0

    @classmethod
    def judges_data(cls) -> bool:
        """Only variants that eliminate (part a on by default) distrust anything."""
        return bool(cls.Options().eliminate)

    def distrusted(self) -> Distrust | None:
        """The rows eliminated when the returned model's epoch was trained (none without
        part (a))."""
        rows = getattr(self, "_distrusted_rows", None)
        return None if rows is None or not self.options.eliminate else Distrust(rows)

    @staticmethod
    def _item_l2(items: torch.Tensor, keep: torch.Tensor, n_items: int,
                 prior: float, power: float = 1.0) -> torch.Tensor:
        """Per item, the extra L2 per occurrence λ / n_i^power (n_i: the item's trusted
        rows)."""
        counts = torch.bincount(items[keep], minlength=n_items).to(torch.float32)
        return prior / counts.clamp_min(1.0).pow(power)

    def _audience(self, val_users: torch.Tensor, size: int) -> torch.Tensor:
        """A fixed random sample of the users that have validation rows (the users whose lists
        the platform can check)."""
        users = torch.unique(val_users)
        if len(users) == 0:
            raise ValueError("share: the validation data is empty; SHARE needs validation "
                             "rows (split.val_fraction > 0)")
        gen = torch_generator(self.seed, "share", "audience")
        pick = torch.randperm(len(users), generator=gen)[:size].to(users.device)
        return users[pick]

    @torch.no_grad()
    def _components(self, trainer, val, active, n_users: int, quality: float):
        """Quality, robustness and fairness of the current model on validation data; the
        robustness at the base ε (not the chosen arm's), so it measures the model."""
        clean, adv = perturbed_losses(trainer, val, self.options.eps)
        gap = float(adv.mean() - clean.mean())
        fair = fairness_gap(clean.double(), val[0], active, n_users)
        return RewardComponents(quality=quality, robustness=-gap, fairness=-fair)


def _variant(name: str, doc: str, **overrides):
    """An ablation preset: SHARE with some parts switched off (its own defense name, so one
    experiment can hold every variant as a column)."""
    fields = [(k, type(v), field(default=v)) for k, v in overrides.items()]
    from dataclasses import make_dataclass
    options = make_dataclass(f"{name}_options", fields, bases=(SHAREOptions,))
    return type(name, (SHARE,), {"name": name, "Options": options, "__doc__": doc})


# The valuation variants below keep their valuation and train without part (d) (item_prior
# 0, the default), so their earlier tables regenerate; the part ablations (share_no_elim,
# share_uniform, share_no_adv, share_no_reward) are the default minus a part.
V1 = {"item_prior": 0.0, "group_weight": 0.0, "eliminate_amount": "fraction", "reach_weight": 0.5,
      "push_weight": 1.0, "unanimity_weight": 1.0, "support_weight": 1.0}

SHARE_DEFENSES = {
    "share": SHARE,
    "share_no_elim": _variant("share_no_elim", "SHARE without part (a).", eliminate=False),
    "share_uniform": _variant("share_uniform", "SHARE with one ε for every row (part b's "
                              "personalization off).", personalized=False),
    "share_no_adv": _variant("share_no_adv", "SHARE without adversarial training (part b off; "
                             "part c then has nothing to steer).", adversarial=False),
    "share_no_reward": _variant("share_no_reward", "SHARE with a fixed strength (part c off).",
                                reward=False),
    "share_prior": _variant("share_prior", "SHARE with the count-aware item prior (part d, "
                            "λ = 2e5, γ = 3): robust to spread targets by holding every thinly "
                            "rated item out of the lists (module docstring).",
                            item_prior=200000.0),
    # The old default (before the group signal): reach, push, unanimity and validation
    # support fill a fixed 3 % budget from the first scoring after the warm-up.
    "share_v1": _variant("share_v1", "SHARE with the first default valuation (reach, push, "
                         "unanimity, validation support; a fixed budget).", **V1),
    "share_no_support": _variant("share_no_support", "SHARE with the first default valuation "
                                 "without the item's validation support.",
                                 **{**V1, "support_weight": 0.0}),
    "share_no_group": _variant("share_no_group", "SHARE whose valuation leaves out the group "
                               "signal: the first default's terms without support (the same "
                               "valuation as share_no_support).",
                               **{**V1, "support_weight": 0.0}),
    "share_group_budget": _variant("share_group_budget", "SHARE whose group-signal valuation "
                                   "always fills the fixed eliminate_fraction budget "
                                   "(eliminate_amount: fraction) instead of only the "
                                   "significant rows.", eliminate_amount="fraction",
                                   item_prior=0.0),
    "share_group_v1": _variant("share_group_v1", "SHARE whose valuation adds the group signal "
                               "to the first default's terms without support, on the fixed "
                               "budget.", **{**V1, "support_weight": 0.0, "group_weight": 1.0}),
    "share_spec_value": _variant("share_spec_value", "SHARE whose valuation uses the spec's "
                                 "terms only (validation, exposure, fairness; no reach, no "
                                 "push, no unanimity, no support).", reach_weight=0.0,
                                 push_weight=0.0, unanimity_weight=0.0, support_weight=0.0,
                                 group_weight=0.0, eliminate_amount="fraction",
                                 validation_weight=1.0, exposure_weight=1.0, alpha=0.5,
                                 item_prior=0.0),
}
