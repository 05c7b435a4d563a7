"""No defense: plain training with model selection on validation. On poisoned data this is the
"Attack" column of the TCD tables; on clean data, the "Origin" column."""
from __future__ import annotations

from .base import Defense, TrainingData


class NoDefense(Defense):
    name = "none"

    def fit(self, data: TrainingData):
        model = self.new_model(data)
        trainer = self.new_trainer(model, data)
        result = trainer.fit(data.train, data.val)
        return trainer.model, {"best_epoch": result.best_epoch, "best_val": result.best_val}
