"""The defense interface: a defense is a way of *training* a victim on (possibly poisoned) data.

It receives :class:`TrainingData` — the training and validation ratings (fake users included,
unlabelled), the table sizes and the rating scale — plus the model config. It never receives
the target items or which users are fake. It returns the trained model and a dict of facts
about what it did (logged to ``runs.csv`` / ``meta.json``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data.ratings import Interactions, RatingScale
from models import build_model
from models.trainer import Trainer
from utils.config import options_from
from utils.seeding import torch_generator


@dataclass
class TrainingData:
    train: Interactions
    val: Interactions
    n_users: int
    n_items: int
    scale: RatingScale
    feedback: str = "explicit"


@dataclass
class NoOptions:
    pass


class Defense:
    name = "defense"
    Options: type = NoOptions
    trainer_class: type[Trainer] = Trainer

    def __init__(self, options, model_cfg, device: torch.device | str = "cpu", seed: int = 0,
                 progress: bool = False) -> None:
        self.options = options if options is not None else self.Options()
        self.model_cfg = model_cfg
        self.device = torch.device(device)
        self.seed = seed
        self.progress = progress

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        return options_from(cls.Options, data, where)

    def new_model(self, data: TrainingData, tag: object = 0):
        gen = torch_generator(self.seed, "init", tag)
        return build_model(self.model_cfg, data.n_users, data.n_items, gen, data.feedback)

    def new_trainer(self, model, data: TrainingData, tag: object = 0) -> Trainer:
        return self.trainer_class(model, self.model_cfg, data.scale,
                                  torch_generator(self.seed, "shuffle", tag), self.device,
                                  data.feedback)

    def fit(self, data: TrainingData):
        """Train and return ``(model, info)``."""
        raise NotImplementedError
