"""models/optimizers.py: the ``tcd_authors`` profile and the sparse Adadelta optimizer (moved
from test_paper_protocol.py, issue 16)."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from conftest import small_tree

from data.ratings import RatingScale
from experiment.validation import config_from_dict, load_config
from experiment.workspace import Workspace
from models import build_model
from models.optimizers import SparseRowAdadelta, make_optimizer
from models.trainer import Trainer
from utils.config import ConfigError, ModelConfig, for_dataset
from utils.seeding import torch_generator


def test_profile_sets_the_authors_optimizer_lr_and_l2():
    cfg = load_config(None, ["model.profile=tcd_authors"])
    assert (cfg.model.optimizer, cfg.model.lr, cfg.model.reg) == ("adadelta_sparse", 20.0, 1e-4)
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg.model)
    assert isinstance(opt, SparseRowAdadelta)
    assert (opt.defaults["lr"], opt.defaults["rho"], opt.defaults["eps"]) == (20.0, 0.95, 1e-8)
    assert load_config(None, []).model.optimizer == "adam"       # not the default
    with pytest.raises(ConfigError, match=r"model.profile: unknown name 'tcd_author' \(did "
                                          r"you mean 'tcd_authors'\?\)"):
        load_config(None, ["model.profile=tcd_author"])
    with pytest.raises(ConfigError, match=r"model.profile: profile 'tcd_authors' sets "
                                          r"optimizer, lr, reg; remove model.lr"):
        load_config(None, ["model.profile=tcd_authors", "model.lr=0.5"])
    with pytest.raises(ConfigError, match=r"model.profil: unknown key; did you mean 'profile'"):
        load_config(None, ["model.profil=tcd_authors"])
    layered = load_config(None, ["dataset=[ml-100k,filmtrust]",
                                 "by_dataset={filmtrust: {model: {profile: tcd_authors}}}"])
    assert for_dataset(layered, "filmtrust").model.lr == 20.0
    assert for_dataset(layered, "ml-100k").model.lr == 1e-3


def test_sparse_adadelta_updates_only_the_rows_in_the_batch():
    """TensorFlow 1 applies Adadelta to an embedding lookup's IndexedSlices: rows outside the
    batch keep their value and both accumulators. Rows in the batch, and dense parameters,
    follow torch's (dense) Adadelta exactly."""
    torch.manual_seed(0)
    table0, dense0 = torch.randn(4, 3), torch.randn(2, 3)
    table, dense = (torch.nn.Parameter(t.clone()) for t in (table0, dense0))
    ref_t, ref_d = (torch.nn.Parameter(t.clone()) for t in (table0, dense0))
    cfg = types.SimpleNamespace(optimizer="adadelta_sparse", lr=20.0)
    opt = make_optimizer([table, dense], cfg, lookup_tables=[table])
    ref = torch.optim.Adadelta([ref_t, ref_d], lr=20.0, rho=0.95, eps=1e-8)
    grads = [torch.randn(4, 3) for _ in range(3)]
    grads[1][2] = 0.0   # row 2 is not in the second batch
    dense_grads = [torch.randn(2, 3) for _ in range(3)]
    dense_grads[1][0] = 0.0   # a dense row with a zero gradient still decays (TF's dense op)
    for step in range(2):
        for p, g in ((table, grads[step]), (dense, dense_grads[step])):
            p.grad = g.clone()
        opt.step()
        for p, g in ((ref_t, grads[step]), (ref_d, dense_grads[step])):
            p.grad = g.clone()
        ref.step()
    # Step 1 was dense for every row; in step 2 row 2 had no gradient.
    state, ref_state = opt.state[table], ref.state[ref_t]
    assert torch.equal(table[[0, 1, 3]], ref_t[[0, 1, 3]])
    assert torch.equal(table[2], ref_t[2])   # no gradient: not moved by either
    rho = 0.95
    assert torch.allclose(ref_state["square_avg"][2], state["square_avg"][2] * rho)
    assert torch.equal(state["square_avg"][2], (1 - rho) * grads[0][2] ** 2)
    assert torch.equal(state["acc_delta"][[0, 1, 3]], ref_state["acc_delta"][[0, 1, 3]])
    assert not torch.equal(state["acc_delta"][2], ref_state["acc_delta"][2])
    assert torch.equal(opt.state[dense]["square_avg"], ref.state[ref_d]["square_avg"])
    assert torch.equal(dense, ref_d)
    # Step 3: row 2 resumes from its kept accumulators, so it moves further than under the
    # dense form, whose accumulators decayed once more.
    table.grad, ref_t.grad = grads[2].clone(), grads[2].clone()
    before = table[2].clone()
    opt.step()
    ref.step()
    hand_sq = rho * (1 - rho) * grads[0][2] ** 2 + (1 - rho) * grads[2][2] ** 2
    assert torch.allclose(opt.state[table]["square_avg"][2], hand_sq)
    assert not torch.equal(table[2] - before, ref_t[2] - before)


def test_sparse_adadelta_fast_path_equals_the_autograd_step():
    """The hand-derived MF gradient leaves exact zeros in the rows outside a batch, so the
    fast path and autograd's lookups update the same rows with the same numbers."""
    cfg = ModelConfig(name="mf", dim=8, optimizer="adadelta_sparse", lr=20.0, reg=1e-4,
                      batch_size=64, epochs=2)
    gen = torch.Generator().manual_seed(3)
    n_users, n_items = 60, 90
    users = torch.randint(n_users, (400,), generator=gen)
    items = torch.randint(n_items, (400,), generator=gen)
    ratings = torch.randint(1, 6, (400,), generator=gen).float() / 5

    class Autograd(Trainer):
        def train_step(self, users, items, ratings):
            return super().train_step(users, items, ratings)

    models = []
    for cls in (Trainer, Autograd):
        model = build_model(cfg, n_users, n_items, torch_generator(0, "m"))
        trainer = cls(model, cfg, RatingScale(5, 5), torch_generator(0, "t"))
        assert trainer.uses_fast_path() == (cls is Trainer)
        for _ in range(2):
            trainer.train_epoch((users, items, ratings))
        models.append(model)
    fast, auto = models
    torch.testing.assert_close(fast.user_emb, auto.user_emb, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.item_emb, auto.item_emb, rtol=1e-4, atol=1e-6)
    untouched = torch.ones(n_items, dtype=torch.bool)
    untouched[items] = False
    assert untouched.any()
    init = build_model(cfg, n_users, n_items, torch_generator(0, "m"))
    assert torch.equal(fast.item_emb[untouched], init.item_emb[untouched])


def test_profile_trains_with_adadelta_on_the_fast_path(tmp_path):
    cfg = config_from_dict(small_tree(tmp_path, model={"profile": "tcd_authors", "dim": 8,
                                                      "epochs": 3, "batch_size": 256}))
    ws = Workspace(cfg)
    data = ws.training_data(ws.split("synthetic", 0), None)
    model, info, impl = ws.train("none", (), "mf", data, 1)
    assert np.isfinite(info["best_val"])
