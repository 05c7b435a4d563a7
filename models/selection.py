"""Best-epoch model selection, shared by ``Trainer.fit``, TCD and SHARE.

Each epoch the training loop offers its validation value (lower is better: the explicit
validation MSE, −HR for implicit feedback, −quality for SHARE); the selector keeps a copy of
the model's state when that epoch is eligible and better than every earlier one, and
``restore`` loads the kept state at the end. Only validation data ever reaches it (never the
test set, protocol.md §2).

Rules, the same for every caller:

- An epoch is eligible from ``first_eligible`` on (defenses skip their warm-up or pre-training
  epochs, so the returned model was trained under the defense), and the run's ``last_epoch``
  always is, so there is a model to return even when the warm-up fills the run.
- Strictly better wins: on a tie the earliest epoch stays.
- A NaN value (no validation rows, e.g. ``evaluation.select_on: last``) does not compare as
  worse: it replaces the kept epoch, and so does every eligible epoch after it, so the last
  eligible epoch is returned.
"""
from __future__ import annotations

import copy
import math

from torch import nn


class BestEpochSelector:
    """Keeps the state of ``model`` at its eligible epoch with the lowest validation value.

    Epoch numbers are the caller's (1-based); ``last_epoch`` None means no epoch is eligible
    just for being the last.
    """

    def __init__(self, model: nn.Module, first_eligible: int = 1,
                 last_epoch: int | None = None) -> None:
        self.model = model
        self.first_eligible = first_eligible
        self.last_epoch = last_epoch
        self.best_epoch = 0
        self.best_value = math.inf
        self.best_state: dict | None = None

    def eligible(self, epoch: int) -> bool:
        return epoch >= self.first_eligible or epoch == self.last_epoch

    def offer(self, epoch: int, value: float) -> bool:
        """Keep the model's current state if ``epoch`` is eligible and ``value`` is lower than
        the best so far (or nothing is kept yet); True when it was kept."""
        if not self.eligible(epoch):
            return False
        # Written as "not ≥" rather than "<" so that a NaN value replaces the kept epoch.
        if self.best_state is not None and value >= self.best_value:
            return False
        self.best_epoch, self.best_value = epoch, value
        self.best_state = copy.deepcopy(self.model.state_dict())
        return True

    def restore(self) -> nn.Module:
        """Load the kept state into the model (unchanged if no epoch was kept); the model."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.model

    def start_over(self, first_eligible: int) -> None:
        """Forget the kept epoch (training restarted from scratch); from now on epochs from
        ``first_eligible`` on, and the last, are eligible."""
        self.first_eligible = first_eligible
        self.best_epoch, self.best_value, self.best_state = 0, math.inf, None
