"""LightGCN, the BPR loss and the victim interface (issue 30).

Hand computations: propagation against dense matrices on a 4-user graph, the BPR gradient on
a one-user case, fake users' rows in the graph; the capability checks that replace
``type(model) is MF``; the config errors of unsupported model / feedback / loss combinations.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.ratings import Interactions
from models import MODELS, MF, LightGCN, build_model
from models.base import declares
from models.bpr import sample_negatives
from models.lightgcn import normalized_adjacency
from models.trainer import Trainer
from utils.config import ConfigError, ModelConfig, config_from_dict

# 4 users, 3 items: user 0 {0, 1}, user 1 {1}, user 2 {1, 2}, user 3 {2}; a duplicate row.
USERS = np.array([0, 0, 1, 2, 2, 3, 0])
ITEMS = np.array([0, 1, 1, 1, 2, 2, 1])
GRAPH = Interactions(USERS, ITEMS, np.ones(len(USERS)))


def lightgcn(layers=3, dim=4, interactions=GRAPH, n_users=4, n_items=3, seed=0):
    cfg = ModelConfig(name="lightgcn", dim=dim, layers=layers, reg=1e-4)
    return build_model(cfg, n_users, n_items, torch.Generator().manual_seed(seed), "implicit",
                       interactions=interactions)


def dense_adjacency(users, items, n_users, n_items):
    r = np.zeros((n_users, n_items))
    r[users, items] = 1.0
    a = np.block([[np.zeros((n_users, n_users)), r], [r.T, np.zeros((n_items, n_items))]])
    deg = a.sum(1)
    inv = np.where(deg > 0, deg, 1.0) ** -0.5 * (deg > 0)
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_by_hand():
    adj = normalized_adjacency(USERS, ITEMS, 4, 3).to_dense().numpy()
    # Degrees: users 2, 1, 2, 1; items 1, 3, 2 (the duplicate (0, 1) counts once).
    assert adj[0, 4 + 1] == pytest.approx(1 / np.sqrt(2 * 3))
    assert adj[4 + 2, 3] == pytest.approx(1 / np.sqrt(2 * 1))
    assert adj[1, 4 + 0] == 0.0
    np.testing.assert_allclose(adj, dense_adjacency(USERS, ITEMS, 4, 3), rtol=1e-6)
    np.testing.assert_allclose(adj, adj.T)


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_propagation_equals_dense_computation(layers):
    model = lightgcn(layers)
    a = dense_adjacency(USERS, ITEMS, 4, 3)
    e0 = torch.cat([model.user_emb, model.item_emb]).detach().double().numpy()
    layer, total = e0, e0.copy()
    for _ in range(layers):
        layer = a @ layer
        total += layer
    final = total / (layers + 1)
    users, items = model.propagate()
    np.testing.assert_allclose(users.detach().numpy(), final[:4], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(items.detach().numpy(), final[4:], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.score_all(torch.arange(4)).detach().numpy(),
                               final[:4] @ final[4:].T, rtol=1e-5, atol=1e-7)


def test_bpr_gradient_by_hand():
    """One user, items i (positive) and j (negative): ∂/∂p = −σ(−x)(q_i − q_j) + λp,
    ∂/∂q_i = −σ(−x)p + λq_i, ∂/∂q_j = σ(−x)p + λq_j, x = p·(q_i − q_j)."""
    reg = 0.1
    model = MF(1, 2, 2, torch.Generator().manual_seed(0), feedback="implicit",
               cfg=ModelConfig(loss="bpr"))
    with torch.no_grad():
        model.user_emb.copy_(torch.tensor([[0.5, -1.0]]))
        model.item_emb.copy_(torch.tensor([[1.0, 2.0], [-0.5, 0.25]]))
    p, qi, qj = np.array([0.5, -1.0]), np.array([1.0, 2.0]), np.array([-0.5, 0.25])
    x = p @ (qi - qj)
    s = 1 / (1 + np.exp(x))  # σ(−x)
    loss = model.bpr_loss(torch.tensor([0]), torch.tensor([0]), torch.tensor([1]), reg)
    assert float(loss.detach()) == pytest.approx(np.log1p(np.exp(-x)) + reg / 2 * (p @ p + qi @ qi + qj @ qj),
                                        rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(model.user_emb.grad[0].numpy(), -s * (qi - qj) + reg * p, rtol=1e-5)
    np.testing.assert_allclose(model.item_emb.grad.numpy(),
                               [-s * p + reg * qi, s * p + reg * qj], rtol=1e-5)


def test_lightgcn_bpr_gradient_matches_dense_autograd():
    """The sparse propagation's hand-written backward (Â symmetric) against dense autograd;
    the L2 term reads the ego rows."""
    model = lightgcn(layers=2)
    users, pos, neg = torch.tensor([0, 2, 3]), torch.tensor([1, 2, 2]), torch.tensor([2, 0, 0])
    loss = model.bpr_loss(users, pos, neg, reg=0.3)
    loss.backward()
    a = torch.as_tensor(dense_adjacency(USERS, ITEMS, 4, 3), dtype=torch.float64)
    e0 = torch.cat([model.user_emb, model.item_emb]).detach().double().requires_grad_(True)
    final = (e0 + a @ e0 + a @ (a @ e0)) / 3
    fu, fi = final[:4], final[4:]
    x = (fu[users] * (fi[pos] - fi[neg])).sum(1)
    ego = [e0[users], e0[4 + pos], e0[4 + neg]]
    ref = torch.nn.functional.softplus(-x).mean() + 0.3 * 0.5 * sum(
        e.pow(2).sum(1).mean() for e in ego)
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    grad = torch.cat([model.user_emb.grad, model.item_emb.grad]).double()
    torch.testing.assert_close(grad, e0.grad, rtol=1e-4, atol=1e-6)


def test_lightgcn_without_layers_is_mf_bpr():
    """K = 0: the final embeddings are the ego embeddings, the loss MF-BPR's."""
    model = lightgcn(layers=0)
    mf = MF(4, 3, 4, torch.Generator(), feedback="implicit", cfg=ModelConfig(loss="bpr"))
    mf.load_state_dict(model.state_dict())
    args = (torch.tensor([0, 1]), torch.tensor([1, 1]), torch.tensor([2, 0]), 0.01)
    assert float(model.bpr_loss(*args)) == pytest.approx(float(mf.bpr_loss(*args)), rel=1e-6)


def test_fake_users_rows_enter_the_graph():
    """A fake user (id 4) rating items 0 and 2: Â changes (item degrees, new edges), and
    so does a real user's score of an item the fake user rated, with the same parameters."""
    clean = lightgcn(n_users=5)
    fake = Interactions(np.array([4, 4]), np.array([0, 2]), np.ones(2))
    poisoned = lightgcn(n_users=5, interactions=Interactions.concat(GRAPH, fake))
    poisoned.load_state_dict(clean.state_dict())
    a0, a1 = clean.adjacency.to_dense(), poisoned.adjacency.to_dense()
    assert a0[4].abs().sum() == 0 and a1[4, 5 + 0] > 0 and a1[4, 5 + 2] > 0
    assert a1[0, 5 + 0] < a0[0, 5 + 0]   # item 0's degree grew: user 0's edge weight fell
    with torch.no_grad():
        s0, s1 = clean.score_all(torch.tensor([1])), poisoned.score_all(torch.tensor([1]))
    assert abs(float(s1[0, 0] - s0[0, 0])) > 1e-6
    assert abs(float(s1[0, 2] - s0[0, 2])) > 1e-6


def test_eval_cache_follows_training_steps():
    """Scores under no_grad are cached, but never stale after an optimizer step (the fused
    Adam kernel does not bump version counters) or a state load."""
    model = lightgcn()
    cfg = ModelConfig(name="lightgcn", dim=4, lr=0.05, reg=1e-4, batch_size=4)
    trainer = Trainer(model, cfg, None, torch.Generator().manual_seed(0), "cpu", "implicit")
    with torch.no_grad():
        before = model.score_all(torch.arange(4)).clone()
    trainer.train_epoch(GRAPH)
    with torch.no_grad():
        after = model.score_all(torch.arange(4))
        assert not torch.equal(before, after)
        fresh = lightgcn()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh.score_all(torch.arange(4)), after)


def test_capabilities_replace_type_checks():
    assert declares(MF(2, 2, 2, torch.Generator()), "compiled_fast_path")

    class ScaledMF(MF):
        def head(self, embs, users, items):
            return 2 * super().head(embs, users, items)

    assert not declares(ScaledMF(2, 2, 2, torch.Generator()), "compiled_fast_path")
    assert not declares(lightgcn(), "compiled_fast_path")
    assert LightGCN.needs_graph and not MF.needs_graph
    assert LightGCN.feedback_kinds == ("implicit",)
    assert MF.resolve_loss("auto", "explicit") == "mse"
    assert MF.resolve_loss("auto", "implicit") == "bce"
    assert MF.resolve_loss("bpr", "implicit") == "bpr"
    assert LightGCN.resolve_loss("auto", "implicit") == "bpr"
    assert set(MODELS) >= {"mf", "ncf", "lightgcn"}


def test_lightgcn_needs_the_interactions():
    with pytest.raises(ValueError, match="interactions"):
        build_model(ModelConfig(name="lightgcn"), 4, 3, torch.Generator(), "implicit")


@pytest.mark.parametrize("model, feedback, loss, message", [
    ("lightgcn", "explicit", "auto", "implicit"),
    ("mf", "explicit", "bpr", "does not fit explicit"),
    ("lightgcn", "implicit", "bce", "no loss 'bce'"),
    ("mf", "implicit", "hinge", "model.loss"),
])
def test_unsupported_combinations_are_config_errors(tmp_path, model, feedback, loss, message):
    tree = {"dataset": {"name": "synthetic", "feedback": feedback},
            "model": {"name": model, "loss": loss}, "results_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tree)


def test_mf_bpr_is_a_config_line(tmp_path):
    cfg = config_from_dict({"dataset": {"name": "synthetic", "feedback": "implicit"},
                            "model": {"name": "mf", "loss": "bpr"}})
    assert cfg.model.loss == "bpr"
    model = build_model(cfg.model, 4, 3, torch.Generator(), "implicit", interactions=GRAPH)
    assert model.loss == "bpr"


def test_negatives_avoid_positives_and_follow_the_seed():
    users = torch.as_tensor(USERS)
    items = torch.as_tensor(ITEMS)
    neg, ok = sample_negatives(users, items, 4, 3, torch.Generator().manual_seed(1))
    positive = set(zip(USERS.tolist(), ITEMS.tolist()))
    assert all((u, j) not in positive for u, j, k in zip(USERS.tolist(), neg.tolist(),
                                                           ok.tolist()) if k)
    assert ok.all()   # every user here has an item left
    again, _ = sample_negatives(users, items, 4, 3, torch.Generator().manual_seed(1))
    assert torch.equal(neg, again)
    full = Interactions(np.repeat(0, 3), np.arange(3), np.ones(3))   # user 0 holds every item
    _, ok = sample_negatives(torch.as_tensor(full.users), torch.as_tensor(full.items), 1, 3,
                             torch.Generator().manual_seed(0))
    assert not ok.any()


def test_bpr_on_an_adversarial_trainer_is_an_error():
    from defenses.adversarial import AdversarialTrainer
    model = lightgcn()
    cfg = ModelConfig(name="lightgcn", dim=4, batch_size=4)
    trainer = AdversarialTrainer(model, cfg, None, torch.Generator(), "cpu", "implicit")
    with pytest.raises(NotImplementedError, match="pairwise"):
        trainer.train_epoch(GRAPH)


def test_defense_without_a_bpr_step_is_a_config_error(tmp_path):
    tree = {"dataset": {"name": "synthetic", "feedback": "implicit"},
            "model": {"name": "lightgcn"}, "defense": {"name": ["none", "at"]}}
    with pytest.raises(ConfigError, match="defense.name: at has no BPR"):
        config_from_dict(tree)
    tree["model"] = {"name": "mf"}   # MF on implicit feedback with bce: AT trains it
    config_from_dict(tree)
