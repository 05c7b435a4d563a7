"""The speed work of issue 18 must not change what the hot paths compute.

Every case below runs a hot path on a small fixed synthetic problem with fixed seeds and
compares the result with reference numbers computed by the code *before* it was optimized
(``tests/fixtures/speed_equivalence.npz``): the MF trainer's fast path, TCD (pseudo-labels and a
whole fit, clip and round projections, rate 1 and < 1), an adversarial defense that reuses the
fast step (AT on MF), the NCF hand-derived step (implicit), and the neural attack in both modes
(NCF implicit, MF explicit, hinge batches of 1 and of several users).

Discrete outputs (pseudo-label cells, best epochs, fake profiles) must match exactly; float
outputs (losses, embeddings, labels) within a tolerance a little above float32 round-off, so a
reordered but equivalent sum passes and a change of mathematics does not. The MF cases run the
compiled epoch (``models.mf_kernel``, sums in another order); the PyTorch form of the same epoch
is checked bit for bit against the fixture, and the two forms against each other.

Regenerate the fixture only when a change of results is intended (never to make a speed change
pass): ``python tests/test_speed_equivalence.py --write``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from attacks import ATTACKS  # noqa: E402
from attacks.neural import NeuralOptions  # noqa: E402
from attacks.threat import ThreatContext, n_fake_users, select_targets  # noqa: E402
from defenses.adversarial import AdversarialOptions  # noqa: E402
from defenses.apr_kernel import SharedRowAPRKernel  # noqa: E402
from data import load_dataset, split_ratings  # noqa: E402
from data.ratings import Interactions  # noqa: E402
from defenses import DEFENSES, TrainingData  # noqa: E402
from defenses.tcd import ObservedCells, TCDOptions, pseudo_labels  # noqa: E402
from models import build_model  # noqa: E402
from models import mf_kernel  # noqa: E402
from models.trainer import Trainer  # noqa: E402
from utils.config import DatasetConfig, ModelConfig, SyntheticConfig  # noqa: E402
from utils.seeding import numpy_rng  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "speed_equivalence.npz"
RTOL, ATOL = 1e-4, 1e-5


def _split(feedback: str = "explicit", n_users: int = 300, n_items: int = 200):
    cfg = DatasetConfig(name="synthetic", feedback=feedback,
                        synthetic=SyntheticConfig(n_users=n_users, n_items=n_items))
    return split_ratings(load_dataset(cfg, 0), np.random.default_rng(0), feedback=feedback)


def _training_data(split) -> TrainingData:
    return TrainingData(split.train, split.val, split.n_users, split.n_items, split.scale,
                        split.feedback)


def _state(prefix: str, model) -> dict:
    return {f"{prefix}/{k}": v.detach().cpu().numpy().copy()
            for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- the cases
def case_mf() -> dict:
    """Plain MF through the trainer's fast path: 6 epochs, batch 256 (the last batch short)."""
    split = _split()
    cfg = ModelConfig(dim=32, epochs=6, batch_size=256)
    model = build_model(cfg, split.n_users, split.n_items, torch.Generator().manual_seed(0))
    trainer = Trainer(model, cfg, split.scale, torch.Generator().manual_seed(1))
    assert trainer.uses_fast_path()
    result = trainer.fit(split.train, split.val)
    out = _state("mf", model)
    out["mf/train_loss"] = np.array([h["train_loss"] for h in result.history])
    out["mf/val_loss"] = np.array([h["val_loss"] for h in result.history])
    out["mf/best_epoch"] = np.array(result.best_epoch)
    return out


def case_pseudo_labels() -> dict:
    """Pseudo-labels of two trained partners, several chunks, rate 0.5 and 1.0, both Π."""
    split = _split()
    data = _training_data(split)
    cfg = ModelConfig(dim=16, epochs=3, batch_size=256)
    partners = []
    for seed in (5, 6):
        model = build_model(cfg, split.n_users, split.n_items, torch.Generator().manual_seed(seed))
        Trainer(model, cfg, split.scale, torch.Generator().manual_seed(seed)).fit(
            split.train, split.val)
        partners.append(model)
    rated = Interactions.concat(data.train, data.val)
    observed = ObservedCells(rated, data.n_users, data.n_items, torch.device("cpu"))
    out = {}
    for name, rate, chunk, projection in (("full", 1.0, 2_000_000, "clip"),
                                          ("half", 0.5, 7_000, "clip"),
                                          ("round", 0.3, 2_000_000, "round")):
        gen = torch.Generator().manual_seed(11)
        u, i, r, agree = pseudo_labels(partners[0], partners[1], observed, data.n_users,
                                       data.n_items, data.scale, rate, gen, chunk,
                                       torch.device("cpu"), projection)
        out[f"pl_{name}/users"] = u.numpy()
        out[f"pl_{name}/items"] = i.numpy()
        out[f"pl_{name}/labels"] = r.numpy()
        out[f"pl_{name}/agree"] = np.array(agree)
        out[f"pl_{name}/next_random"] = torch.rand(3, generator=gen).numpy()
    return out


def case_tcd() -> dict:
    """A whole TCD fit: 7 epochs, T_pre 2, rate 1.0 (clip) and 0.4 (round)."""
    split = _split()
    data = _training_data(split)
    out = {}
    for name, opts in (("tcd", TCDOptions(t_pre=2, pseudo_rate=1.0)),
                       ("tcd_round", TCDOptions(t_pre=2, pseudo_rate=0.4, projection="round",
                                                chunk_cells=5_000))):
        defense = DEFENSES["tcd"](opts, ModelConfig(dim=16, epochs=7, batch_size=512), "cpu",
                                  seed=3)
        model, info = defense.fit(data)
        out.update(_state(name, model))
        for key in ("best_epoch", "best_val", "pseudo_per_model_epoch", "agreement"):
            out[f"{name}/{key}"] = np.array(info[key], dtype=np.float64)
    return out


def case_at() -> dict:
    """AT on MF: an adversarial defense that reuses the fast step and ``_adam_step``."""
    split = _split()
    defense = DEFENSES["at"](None, ModelConfig(dim=16, epochs=4, batch_size=256), "cpu", seed=2)
    model, info = defense.fit(_training_data(split))
    out = _state("at", model)
    out["at/best_val"] = np.array(info.get("best_val", np.nan), dtype=np.float64)
    return out


def case_ncf_implicit() -> dict:
    """NCF on implicit feedback through the hand-derived step (sampled negatives)."""
    split = _split("implicit")
    cfg = ModelConfig(name="ncf", dim=8, epochs=3, batch_size=256, reg=0.0)
    model = build_model(cfg, split.n_users, split.n_items, torch.Generator().manual_seed(0),
                        "implicit")
    trainer = Trainer(model, cfg, split.scale, torch.Generator().manual_seed(1), "cpu",
                      "implicit")
    assert trainer.uses_manual_step()
    result = trainer.fit(split.train, split.val)
    out = _state("ncf", model)
    out["ncf/train_loss"] = np.array([h["train_loss"] for h in result.history])
    out["ncf/val_loss"] = np.array([h["val_loss"] for h in result.history])
    return out


def _neural_context(feedback: str, model: str) -> ThreatContext:
    split = _split(feedback)
    cfg = ModelConfig(name=model, dim=8, epochs=4, batch_size=256, lr=0.002, reg=0.0)
    targets = select_targets(split, "unpopular", 3, numpy_rng(1, "targets"))
    return ThreatContext(view=split.observed(), visible_users=np.arange(split.n_users),
                         n_users=split.n_users, n_items=split.n_items, scale=split.scale,
                         targets=targets, n_fake=n_fake_users(split.n_users, 0.02),
                         filler_size=10, feedback=feedback, model_cfg=cfg, seed=4)


def case_neural() -> dict:
    """The neural attack: NCF implicit (hinge batches of 1 and 16, both filler rules) and MF
    explicit."""
    out = {}
    runs = (("neural_ncf_b1", "implicit", "ncf",
             dict(epochs=3, rounds=2, users_per_model=2, attack_batch_users=1)),
            ("neural_ncf_b16", "implicit", "ncf",
             dict(epochs=3, rounds=2, users_per_model=3, attack_batch_users=16,
                  filler_score="lift")),
            ("neural_mf", "explicit", "mf",
             dict(epochs=3, rounds=2, users_per_model=2, attack_batch_users=4)))
    for name, feedback, model, opts in runs:
        fake = ATTACKS["neural"](NeuralOptions(**opts)).generate(_neural_context(feedback, model))
        out[f"{name}/users"] = fake.users
        out[f"{name}/items"] = fake.items
        out[f"{name}/ratings"] = fake.ratings
    return out


CASES = {"mf": case_mf, "pseudo_labels": case_pseudo_labels, "tcd": case_tcd, "at": case_at,
         "ncf_implicit": case_ncf_implicit, "neural": case_neural}


# ---------------------------------------------------------------------------- the test
def _exact(key: str, value: np.ndarray) -> bool:
    """Integer arrays and discrete outcomes compare exactly."""
    return (value.dtype.kind in "iub" or key.endswith(("/best_epoch", "/agree", "/items",
                                                       "/users"))
            or key.startswith("neural"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_hot_paths_compute_what_they_computed_before(name):
    expected = np.load(FIXTURE)
    got = CASES[name]()
    mine = sorted(k for k in expected.files if k.split("/")[0].startswith(
        {"mf": "mf", "pseudo_labels": "pl_", "tcd": "tcd", "at": "at", "ncf_implicit": "ncf",
         "neural": "neural"}[name]))
    assert sorted(got) == mine
    for key in mine:
        want, have = expected[key], np.asarray(got[key])
        assert want.shape == have.shape, key
        if _exact(key, want):
            assert np.array_equal(want, have), key
        else:
            np.testing.assert_allclose(have, want, rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize("sparse_products", [True, False])
def test_both_forms_of_the_mf_gradient_give_the_same_numbers(monkeypatch, sparse_products):
    """The fast path computes E Q and Eᵀ P by CSR products or by gather + index_add,
    whichever is faster for the table size; each must reproduce the reference bit for bit."""
    monkeypatch.setattr(Trainer, "compiled_kernel", False)
    monkeypatch.setattr(Trainer, "sparse_products", sparse_products)
    expected = np.load(FIXTURE)
    got = case_mf()
    for key, value in got.items():
        assert np.array_equal(expected[key], np.asarray(value)), key


def test_the_compiled_epoch_agrees_with_the_pytorch_form(monkeypatch):
    """The compiled MF epoch (``models.mf_kernel``) sums in another order than the PyTorch
    form: the same model to float32 round-off after 6 epochs, the same best epoch — and the
    tolerance is tight enough to catch a 1 % change of the step size."""
    compiled = case_mf()
    monkeypatch.setattr(Trainer, "compiled_kernel", False)
    pytorch = case_mf()
    assert sorted(compiled) == sorted(pytorch)
    for key in compiled:
        if key.endswith("best_epoch"):
            assert compiled[key] == pytorch[key]
        else:
            np.testing.assert_allclose(compiled[key], pytorch[key], rtol=1e-5, atol=1e-6,
                                       err_msg=key)
    assert not np.array_equal(compiled["mf/user_emb"], pytorch["mf/user_emb"])  # both ran
    monkeypatch.setattr(Trainer, "compiled_kernel", True)
    real_constants = mf_kernel.adam_constants

    def lr_off_by_one_percent(states, n_batches, lr, betas):
        return real_constants(states, n_batches, lr * 1.01, betas)

    monkeypatch.setattr(mf_kernel, "adam_constants", lr_off_by_one_percent)
    changed = case_mf()
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(changed["mf/user_emb"], pytorch["mf/user_emb"], rtol=1e-5,
                                   atol=1e-6)


def test_the_compiled_epoch_does_not_depend_on_the_thread_count():
    """Only Adam's independent rows are split between threads: 1 and 2 threads give the same
    bits."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = case_mf()
        torch.set_num_threads(2)
        two = case_mf()
    finally:
        torch.set_num_threads(previous)
    for key in one:
        assert np.array_equal(one[key], two[key]), key


@pytest.mark.parametrize("name", ["at", "rat"])
def test_the_compiled_at_and_rat_epochs_agree_with_the_autograd_step(monkeypatch, name):
    """AT (gradient direction) and RAT (truncated-normal direction from the trainer's
    generator) with table-shared perturbations: the compiled epoch
    (``defenses/apr_kernel.py``) and the autograd ``train_step`` give the same model to
    float32 round-off, warm-up and adversarial epochs alike; the perturbation is not a no-op."""
    split = _split()
    data = _training_data(split)
    calls = []
    real = SharedRowAPRKernel.adversarial_epoch

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SharedRowAPRKernel, "adversarial_epoch", counted)

    def fit(eps: float):
        defense = DEFENSES[name](AdversarialOptions(eps=eps, warmup=2),
                                 ModelConfig(dim=16, epochs=6, batch_size=256), "cpu", seed=2)
        model, info = defense.fit(data)
        return _state(name, model), info

    compiled, info = fit(0.5)
    assert len(calls) == 4  # epochs 3–6 are adversarial
    monkeypatch.setattr(Trainer, "compiled_kernel", False)
    autograd, info_autograd = fit(0.5)
    assert len(calls) == 4
    assert info["best_epoch"] == info_autograd["best_epoch"]
    for key in compiled:
        np.testing.assert_allclose(compiled[key], autograd[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    plain, _ = fit(0.0)
    assert np.abs(plain[f"{name}/user_emb"] - autograd[f"{name}/user_emb"]).max() > 1e-3


@pytest.mark.parametrize("mode", ["constant", "user_norm", "user_loss"])
def test_the_compiled_per_occurrence_epoch_agrees_with_the_pytorch_form(mode):
    """PamaCF's, VAT's and SHARE's epoch (``adversarial_mf_epoch``) against its compiled form
    (``OccurrenceAPRKernel``), for each ε rule, with SHARE's per-row item weights (some 0) and
    per-item prior: the same tables to float32 round-off after 3 epochs, the same loss."""
    from defenses.mf_adversarial import (OccurrenceAPRKernel, adversarial_mf_epoch,
                                         norm_scaled_row_eps)
    from defenses.vat import loss_scaled_eps
    from models.mf_kernel import EPS_CONSTANT, EPS_USER_LOSS, EPS_USER_NORM

    split = _split()
    cfg = ModelConfig(dim=16, epochs=3, batch_size=256)
    eps = 0.3
    users, items, ratings = (torch.as_tensor(a) for a in (split.train.users,
                                                           split.train.items,
                                                           split.train.ratings))
    gen = torch.Generator().manual_seed(7)
    weight = (torch.rand(len(users), generator=gen) > 0.2).to(torch.float32)
    prior = torch.rand(split.n_items, generator=gen) * 0.01
    rules = {"constant": (EPS_CONSTANT, lambda u, sq, err: torch.full_like(sq, eps)),
             "user_norm": (EPS_USER_NORM, norm_scaled_row_eps(eps)),
             "user_loss": (EPS_USER_LOSS,
                           lambda u, sq, err: loss_scaled_eps(eps, u, err.pow(2)).squeeze(1))}
    code, row_eps = rules[mode]

    def trainer():
        model = build_model(cfg, split.n_users, split.n_items, torch.Generator().manual_seed(0))
        return Trainer(model, cfg, split.scale, torch.Generator().manual_seed(1))

    pytorch, compiled = trainer(), trainer()
    kernel = OccurrenceAPRKernel(split.n_users, split.n_items, cfg.dim)
    for _ in range(cfg.epochs):
        want, _ = adversarial_mf_epoch(pytorch, users, items, ratings, row_eps, 1.0, weight,
                                       prior)
        perm = torch.randperm(len(users), generator=compiled.generator)
        have = kernel.adversarial_epoch(compiled, users, items, ratings, perm, eps, code, 1.0,
                                        weight, prior)
        assert have == pytest.approx(want, rel=1e-5)
    for name in ("user_emb", "item_emb"):
        a = getattr(compiled.model, name).detach().numpy()
        b = getattr(pytorch.model, name).detach().numpy()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    plain = trainer()
    for _ in range(cfg.epochs):
        plain.fast_epoch(users, items, ratings)
    assert np.abs(plain.model.user_emb.detach().numpy()
                  - pytorch.model.user_emb.detach().numpy()).max() > 1e-3


def _write() -> None:
    torch.set_num_threads(1)  # as the test (conftest.py)
    arrays = {}
    for case in CASES.values():
        arrays.update(case())
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE}: {len(arrays)} arrays")


if __name__ == "__main__":
    if "--write" in sys.argv:
        _write()
    else:
        print(__doc__)
