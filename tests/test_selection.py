"""Best-epoch selector (models/selection.py): the rules the trainer, TCD and SHARE share."""
from __future__ import annotations

import math

import torch
from torch import nn

from models.selection import BestEpochSelector


def run(values, first_eligible=1, last_epoch=None):
    """Offer ``values`` as epochs 1, 2, ...; the model's weight is the epoch number, so the
    restored state names the epoch it came from."""
    model = nn.Linear(1, 1, bias=False)
    selector = BestEpochSelector(model, first_eligible, last_epoch)
    for epoch, value in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        selector.offer(epoch, value)
    with torch.no_grad():
        model.weight.fill_(-1.0)          # training went on past the best epoch
    selector.restore()
    return selector, int(model.weight.item())


def test_keeps_the_lowest_value_and_restores_its_state():
    selector, restored = run([0.9, 0.5, 0.7, 0.6])
    assert (selector.best_epoch, selector.best_value, restored) == (2, 0.5, 2)


def test_a_tie_keeps_the_earliest_epoch():
    selector, restored = run([0.9, 0.5, 0.5, 0.7])
    assert selector.best_epoch == restored == 2


def test_the_kept_state_is_a_copy_not_the_live_parameters():
    model = nn.Linear(1, 1, bias=False)
    selector = BestEpochSelector(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    selector.offer(1, 0.1)
    with torch.no_grad():
        model.weight.fill_(2.0)           # an in-place update after the best epoch
    selector.offer(2, 0.2)
    selector.restore()
    assert model.weight.item() == 1.0


def test_epochs_before_first_eligible_are_skipped_but_the_last_always_counts():
    selector, restored = run([0.1, 0.2, 0.3, 0.4], first_eligible=3)
    assert selector.best_epoch == restored == 3
    # A warm-up that fills the run: only the last epoch is eligible.
    selector, restored = run([0.1, 0.2, 0.3], first_eligible=9, last_epoch=3)
    assert selector.best_epoch == restored == 3


def test_nan_values_hand_the_choice_to_the_last_eligible_epoch():
    # No validation rows (select_on: last): every value is NaN.
    selector, restored = run([math.nan] * 4)
    assert selector.best_epoch == restored == 4 and math.isnan(selector.best_value)


def test_nothing_eligible_leaves_the_model_as_it_is():
    selector, restored = run([0.1, 0.2], first_eligible=5)
    assert selector.best_epoch == 0 and selector.best_state is None and restored == -1


def test_start_over_forgets_the_kept_epoch():
    model = nn.Linear(1, 1, bias=False)
    selector = BestEpochSelector(model, first_eligible=2, last_epoch=6)
    for epoch, value in [(1, 0.1), (2, 0.2), (3, 0.3)]:
        selector.offer(epoch, value)
    selector.start_over(first_eligible=5)     # restarted at epoch 4, warm-up again
    assert not selector.offer(4, 0.01)
    assert selector.offer(5, 0.5) and selector.best_epoch == 5
    assert selector.offer(6, 0.4) and selector.best_epoch == 6
