"""PamaCF and VAT (defenses/pamacf.py, vat.py) and the hand-derived adversarial MF epoch
(defenses/mf_adversarial.py): per-row ε follow their formulas (an average user gets ε), every
occurrence of a row is perturbed along its own gradient with norm ε_row, and the hand-derived
epoch is the autograd epoch."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from data import load_dataset, split_ratings
from defenses import DEFENSES, TrainingData
from defenses.adversarial import AdversarialTrainer
from defenses.mf_adversarial import (HandDerivedAdversarialTrainer, adversarial_mf_epoch,
                                     norm_scaled_row_eps)
from defenses.pamacf import PamaCFOptions, norm_scaled_eps
from defenses.vat import VATOptions, loss_scaled_eps
from models.mf import MF
from models.trainer import Trainer
from utils.config import DatasetConfig, ModelConfig

CFG = ModelConfig(dim=16, epochs=6, batch_size=256)


@pytest.fixture(scope="module")
def data():
    split = split_ratings(load_dataset(DatasetConfig(name="synthetic"), 0),
                          np.random.default_rng(0))
    return TrainingData(split.train, split.val, split.n_users, split.n_items, split.scale)


def test_pamacf_eps_follows_the_norm_formula_and_an_average_user_gets_eps():
    user_embs = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]])
    sq = torch.tensor([1.0, 4.0, 2.0, 0.0])
    expected = 0.5 * 2.0 * torch.sigmoid(sq / sq.mean() - 1.0)
    got = norm_scaled_eps(0.5, user_embs).squeeze(1)
    assert torch.allclose(got, expected)
    # ‖p‖² equal to the batch mean → exactly ε; larger norms → more, up to 2ε.
    assert torch.isclose(norm_scaled_eps(0.5, torch.ones(3, 4)), torch.tensor(0.5)).all()
    assert got[1] > got[2] > got[0] > got[3] and got.max() < 1.0
    # Squared norms symmetric around their mean → the batch mean of ε_u is exactly ε.
    sym = torch.tensor([0.5, 1.5, 1.0, 0.2, 1.8]).sqrt().unsqueeze(1)
    assert torch.isclose(norm_scaled_eps(0.3, sym).mean(), torch.tensor(0.3), atol=1e-6)


def test_vat_eps_is_larger_for_well_fit_users():
    users = torch.tensor([0, 0, 1, 2, 2])
    losses = torch.tensor([0.1, 0.3, 0.8, 0.05, 0.05])  # per-user sums 0.4, 0.8, 0.1
    per_user = torch.tensor([0.4, 0.8, 0.1])  # summed, as the authors' _get_user_eps
    expected = 0.4 * 2.0 * torch.sigmoid(per_user.mean() / per_user - 1.0)
    got = loss_scaled_eps(0.4, users, losses).squeeze(1)
    assert torch.allclose(got, expected[users])
    assert got[3] > got[0] > got[2]  # smallest loss → largest ε
    assert torch.equal(got[0], got[1]) and torch.equal(got[3], got[4])


@pytest.mark.parametrize("name", ["pamacf", "vat"])
def test_each_occurrence_is_perturbed_along_its_own_gradient_with_its_users_eps(name, data):
    defense = DEFENSES[name]((PamaCFOptions if name == "pamacf" else VATOptions)(eps=0.2), CFG)
    model = defense.new_model(data)
    trainer = defense.configure(defense.new_trainer(model, data))
    rng = np.random.default_rng(1)
    idx = torch.as_tensor(rng.choice(len(data.train), 400, replace=False))
    users = torch.as_tensor(data.train.users)[idx]
    items = torch.as_tensor(data.train.items)[idx]
    ratings = torch.as_tensor(data.train.ratings)[idx]
    embs = model.embed(users, items)
    pred = model.head(embs, users, items)
    losses = (pred - ratings).pow(2)
    d_user, d_item = trainer.perturbations(embs, users, items, losses, losses.mean())
    eps = defense.row_eps(trainer, embs, users, items, losses.detach())[0].squeeze(1)
    assert torch.allclose(d_user.norm(dim=1), eps, atol=1e-6)
    assert torch.allclose(d_item.norm(dim=1), eps, atol=1e-6)
    # Per occurrence: δp ∥ sign(e) q, δq ∥ sign(e) p (the row's own gradient direction).
    err = (pred - ratings).detach()
    p, q = (e.detach() for e in embs)
    cos_u = torch.nn.functional.cosine_similarity(d_user, torch.sign(err)[:, None] * q)
    cos_i = torch.nn.functional.cosine_similarity(d_item, torch.sign(err)[:, None] * p)
    assert torch.allclose(cos_u, torch.ones_like(cos_u), atol=1e-5)
    assert torch.allclose(cos_i, torch.ones_like(cos_i), atol=1e-5)
    if name == "pamacf":
        assert torch.allclose(eps, norm_scaled_eps(0.2, p).squeeze(1))


@pytest.mark.parametrize("name", ["pamacf", "vat"])
def test_hand_derived_adversarial_epoch_equals_the_autograd_epoch(name, data):
    """Same init, same batch order: the defense's own (hand-derived) trainer and the autograd
    AdversarialTrainer agree to float precision after two adversarial epochs."""
    start = MF(data.n_users, data.n_items, 16, torch.Generator().manual_seed(0))
    options = (PamaCFOptions if name == "pamacf" else VATOptions)(eps=0.3, warmup=0)
    defense = DEFENSES[name](options, CFG)

    def trainer(cls):
        return defense.configure(cls(copy.deepcopy(start), CFG, data.scale,
                                     torch.Generator().manual_seed(5)))

    auto, hand = trainer(AdversarialTrainer), trainer(defense.trainer_class)
    assert isinstance(hand, HandDerivedAdversarialTrainer) and hand.hand_derived()
    for _ in range(2):
        auto.train_epoch(data.train)
        hand.train_epoch(data.train)
    for a, b in ((auto.model.user_emb, hand.model.user_emb),
                 (auto.model.item_emb, hand.model.item_emb)):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    assert (hand.model.user_emb - start.user_emb).abs().max() > 1e-3  # the epochs did train
    assert hand.validate(data.val) == pytest.approx(auto.validate(data.val), rel=1e-5)


def test_the_perturbed_loss_exceeds_the_clean_loss(data):
    start = MF(data.n_users, data.n_items, 16, torch.Generator().manual_seed(0))
    t = AdversarialTrainer(start, CFG, data.scale, torch.Generator().manual_seed(5))
    clean, adv = adversarial_mf_epoch(t, *t._tensors(data.train), norm_scaled_row_eps(0.3), 1.0)
    assert adv > clean > 0


@pytest.mark.parametrize("name", ["pamacf", "vat"])
def test_pamacf_and_vat_train_end_to_end(name, data):
    options = DEFENSES[name].parse_options({"eps": 0.05, "warmup": 2})
    defense = DEFENSES[name](options, ModelConfig(dim=16, epochs=8, batch_size=256, lr=0.01),
                             seed=1)
    untrained = defense.new_trainer(defense.new_model(data), data).validate(data.val)
    model, info = defense.fit(data)
    assert info["eps"] == 0.05 and 1 <= info["best_epoch"] <= 8
    assert np.isfinite(info["best_val"]) and info["best_val"] < 0.5 * untrained


def test_item_weight_zero_rows_train_their_user_but_never_move_their_item(data):
    """SHARE's elimination from the item side: an item whose rows all have weight 0 keeps its
    embedding (without L2, a fresh Adam moves nothing without a gradient) while its raters
    still train; with L2 the distrusted item only decays."""
    start = MF(data.n_users, data.n_items, 16, torch.Generator().manual_seed(0))
    no_l2 = ModelConfig(dim=16, epochs=6, batch_size=256, reg=0.0)
    defense = DEFENSES["pamacf"](PamaCFOptions(eps=0.1, warmup=0), no_l2)
    item = int(np.bincount(data.train.items).argmax())
    users, items, ratings = (torch.as_tensor(a) for a in
                             (data.train.users, data.train.items, data.train.ratings))
    weight = (items != item).float()

    def run(w, cfg=no_l2):
        t = defense.configure(AdversarialTrainer(copy.deepcopy(start), cfg, data.scale,
                                                 torch.Generator().manual_seed(5)))
        adversarial_mf_epoch(t, users, items, ratings, norm_scaled_row_eps(0.1), 1.0, w)
        return t.model

    masked, ones, plain = run(weight), run(torch.ones_like(weight)), run(None)
    assert torch.equal(masked.item_emb[item], start.item_emb[item])
    decayed = run(weight, CFG).item_emb[item]
    assert decayed.norm() < start.item_emb[item].norm()
    raters = torch.unique(users[items == item])
    assert (masked.user_emb[raters] != start.user_emb[raters]).any(dim=1).all()
    # Weight 1 everywhere is the unweighted epoch.
    assert torch.allclose(ones.item_emb, plain.item_emb, atol=1e-6)
    assert torch.allclose(ones.user_emb, plain.user_emb, atol=1e-6)


def test_the_selected_model_is_an_adversarially_trained_one(data, monkeypatch):
    """A strong ε makes every adversarial epoch validate worse than the warm-up's last; the
    defense still returns an adversarial epoch, not the plain warm-up model."""
    results = []
    fit = Trainer.fit

    def recording_fit(self, *args, **kwargs):
        results.append(fit(self, *args, **kwargs))
        return results[-1]

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    options = DEFENSES["pamacf"].parse_options({"eps": 5.0, "warmup": 3})
    defense = DEFENSES["pamacf"](options, ModelConfig(dim=16, epochs=8, batch_size=256,
                                                      lr=0.01), seed=1)
    _, info = defense.fit(data)
    history = {h["epoch"]: h["val_loss"] for h in results[-1].history}
    assert min(history, key=history.get) <= 3      # over every epoch, the warm-up would win
    assert 4 <= info["best_epoch"] <= 8
    assert info["best_val"] == min(v for e, v in history.items() if e >= 4)


@pytest.mark.parametrize("name", ["pamacf", "vat"])
def test_unset_eps_is_the_papers_on_implicit_and_ats_on_explicit_feedback(name, data):
    """ε left unset: 0.5 (the papers', set for BPR) on implicit feedback, AT's 0.03 on explicit
    MF; a given ε is used as is. The value reaches the trainer and the logged info."""
    defense_cls = DEFENSES[name]
    unset = defense_cls(defense_cls.parse_options({}), ModelConfig(dim=8, epochs=6), seed=0)
    assert unset.options.eps is None
    assert (unset.base_eps("implicit"), unset.base_eps("explicit")) == (0.5, 0.03)
    given = defense_cls(defense_cls.parse_options({"eps": 0.2}), CFG)
    assert given.base_eps("implicit") == given.base_eps("explicit") == 0.2
    _, info = unset.fit(data)  # explicit synthetic data
    assert info["eps"] == 0.03
