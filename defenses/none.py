"""No defense: plain training with model selection on validation. On poisoned data this is the
"Attack" column of the TCD tables; on clean data, the "Origin" column."""
from __future__ import annotations

from .base import Defense, TrainingData


class NoDefense(Defense):
    name = "none"
    accepts_epoch_hook = True

    def fit(self, data: TrainingData):
        model = self.new_model(data)
        trainer = self.new_trainer(model, data)
        hook = self._after_epoch if self.epoch_hook is not None else None
        result = trainer.fit(data.train, data.val, epoch_hook=hook)
        return trainer.model, {"best_epoch": result.best_epoch, "best_val": result.best_val}
