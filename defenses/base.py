"""The defense interface: a defense is a way of *training* a victim on (possibly poisoned) data.

It receives :class:`TrainingData` (``data/ratings.py``) — the training and validation
ratings (fake users included, unlabelled), the table sizes and the rating scale — plus the
model config. It never receives the target items or which users are fake. It returns the trained model and a dict of facts
about what it did (logged to ``runs.csv`` / ``meta.json``).

Two small hooks serve the threat model (``threat-model.md``):

* :meth:`Defense.distrusted` — a defense that distrusts rows or users (SHARE's elimination, the
  detectors) says which, after ``fit``. The evaluation side scores it against the fake users it
  knows (precision, recall, false positives); a generate → detect → repair attacker
  (``attacks/adaptive.py``) reads it on its own copy of the defense.
* :attr:`Defense.epoch_hook` — an attacker that co-trains with the defense (``gcoattack``) sets
  a callable ``hook(model, epoch)`` that a defense with ``accepts_epoch_hook`` calls after every
  training epoch of each model it trains (epoch counted from 1). The evaluation never sets it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from data.ratings import TrainingData
from models import build_model
from models.trainer import Trainer, has_pairwise_step
from utils.config import options_from
from utils.seeding import torch_generator


@dataclass
class NoOptions:
    pass


@dataclass
class Distrust:
    """What a defense distrusted in the data it trained on.

    ``rows``: boolean mask over ``TrainingData.train`` rows that the returned model was not
    (fully) trained on. ``users``: boolean mask over users, for defenses that judge whole
    users (their rows are then all in ``rows`` too); None for row-level defenses.
    """

    rows: np.ndarray
    users: np.ndarray | None = None


class Defense:
    name = "defense"
    Options: type = NoOptions
    choices: dict[str, tuple[str, ...]] = {}   # option → its valid values (checked on parse)
    trainer_class: type[Trainer] = Trainer
    #: True when ``fit`` calls :attr:`epoch_hook` after every epoch (an attacker can co-train).
    accepts_epoch_hook: bool = False
    #: The ``dataset.feedback`` kinds the defense can train on; the config check
    #: (``experiment/validation.py``) rejects any other before any work starts.
    feedbacks: tuple[str, ...] = ("explicit", "implicit")
    #: Why it needs those feedback kinds (a clause of the config error; "" for any).
    feedback_reason: str = ""
    epoch_hook: Callable | None = None

    def __init__(self, options, model_cfg, device: torch.device | str = "cpu", seed: int = 0,
                 progress: bool = False) -> None:
        self.options = options if options is not None else self.Options()
        self.model_cfg = model_cfg
        self.device = torch.device(device)
        self.seed = seed
        self.progress = progress

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        return options_from(cls.Options, data, where, cls.choices)

    @classmethod
    def cannot_train(cls, options, model: type, loss: str, feedback: str) -> str | None:
        """Why this defense, with ``options``, cannot train a victim of class ``model`` (a
        ``Recommender``: what it declares, never its type) with ``loss`` on ``feedback``
        feedback — one clause naming the reason and what it does train — or None when it can.
        The config check (``experiment/validation.py``) runs it for every defense and model of
        the grid before any work; the feedback kinds (:attr:`feedbacks`) are checked there."""
        if loss == "bpr" and not has_pairwise_step(cls.trainer_class):
            return ("it has no BPR training step yet; it trains mf and ncf with model.loss mse "
                    "(explicit) or bce (implicit)")
        return None

    def new_model(self, data: TrainingData, tag: object = 0):
        gen = torch_generator(self.seed, "init", tag)
        return build_model(self.model_cfg, data.n_users, data.n_items, gen, data.feedback,
                           interactions=data.train)

    def new_trainer(self, model, data: TrainingData, tag: object = 0) -> Trainer:
        return self.trainer_class(model, self.model_cfg, data.scale,
                                  torch_generator(self.seed, "shuffle", tag), self.device,
                                  data.feedback)

    def fit(self, data: TrainingData):
        """Train and return ``(model, info)``."""
        raise NotImplementedError

    def distrusted(self) -> Distrust | None:
        """After :meth:`fit`: what this defense distrusted; None for a defense that trains on
        every row it is given. Defenses that judge data override it."""
        return None

    @classmethod
    def judges_data(cls) -> bool:
        """Whether the defense reports what it distrusts (:meth:`distrusted`)."""
        return cls.distrusted is not Defense.distrusted

    def _after_epoch(self, model, epoch: int) -> None:
        if self.epoch_hook is not None:
            self.epoch_hook(model, epoch)
