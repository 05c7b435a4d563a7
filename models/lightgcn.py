"""LightGCN victim (He, Deng, Wang, Li, Zhang, Wang, SIGIR 2020).

The model keeps one ego embedding per user and per item (layer 0) and no other weights. The
normalised adjacency of the user–item bipartite graph of the *training* interactions,

    Â = D^{-1/2} A D^{-1/2},   A = [[0, R], [Rᵀ, 0]]   ((users + items) square, R the 0/1
                                                        user × item matrix of training rows),

propagates them ``layers`` times, E^(k+1) = Â E^(k), and the final representation is the mean
of the layer embeddings, E = (E^(0) + … + E^(K)) / (K + 1) (the paper's α_k = 1/(K+1)). A
user–item score is the dot product of the final rows. Training is BPR with one sampled negative
per positive (``models/bpr.py``) and L2 on the batch's *ego* rows, λ · ½ (‖e_u⁰‖² + ‖e_i⁰‖² +
‖e_j⁰‖²) averaged over the batch (the authors' ``tf.nn.l2_loss`` / batch size). Defaults in the
paper: d = 64, K = 3, Adam lr 1e-3, λ = 1e-4, batch 1024 (``PAPER_DEFAULTS``). ``model:
lightgcn`` takes d, lr and λ from the paper (``paper_defaults``) wherever the config leaves them
at the package defaults (128, 1e-3, 0.005), so a grid of MF and LightGCN trains each at its own
defaults; a value the user sets wins (``model.dim: 32``, or for LightGCN alone
``model.defaults.lightgcn.dim: 128``). K is ``model.layers`` (default 3, the paper's); the batch
size stays the package's 2048 unless set (``model.batch_size: 1024`` gives the paper's).

The graph is built from the interactions handed to the model at construction
(``build_model(..., interactions=train)``): every row with a positive rating, duplicates
counted once, fake users' rows included — the poison reaches real users through the graph, not
only through shared item embeddings. A node without an edge (a user or item absent from
training) has degree 0, its row of Â is empty and its final embedding is its ego embedding
/ (K+1).

Choices and deviations:
- Initialisation: Xavier (Glorot) uniform over each table, as the paper states (the PyTorch
  port draws N(0, 0.1²); RecBole also uses Xavier), from the run's seeded generator.
- Propagation is a sparse CSR × dense product per layer, recomputed once per training step
  (the whole graph: the gradient of a batch reaches every ego row within K hops). Â is
  symmetric, so the backward pass of Â E is Â G: a small autograd function multiplies by Â
  again instead of asking torch for a transposed sparse layout.
- Under ``torch.no_grad`` (evaluation, validation, attacks scoring the victim) the final
  embeddings are cached, so ``score_all`` over user chunks propagates once per evaluation, not
  once per chunk. The cache is dropped by any propagation with autograd on (every training
  step), ``train()``/``eval()``, ``load_state_dict``, ``.to()`` and any change of the tables'
  storage or version counters. (Version counters alone do not suffice: the fused Adam kernel
  updates parameters without bumping them.) Code that edits the tables in place under
  ``no_grad`` and then scores without one of those in between calls ``clear_cache()``.
- No dropout on the graph (the paper's LightGCN has none; the PyTorch port's is off by default).
- ``embed`` returns the *final* (propagated) rows of the batch and ``head`` their dot product:
  what generic code (prediction, adversarial defenses' pointwise steps) sees. The BPR step
  reads the ego rows for the L2 term itself.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Recommender, glorot_uniform

PAPER_DEFAULTS = {"dim": 64, "layers": 3, "optimizer": "adam", "lr": 1e-3, "reg": 1e-4,
                  "batch_size": 1024, "loss": "bpr"}


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int,
                         n_items: int) -> torch.Tensor:
    """Â = D^{-1/2} A D^{-1/2} of the bipartite graph with edges (u, n_users + i), as a
    (n_users + n_items)² float32 CSR tensor. Duplicate pairs count once; isolated nodes keep
    an empty row (degree 0 contributes nothing, never a division by zero)."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    n = n_users + n_items
    pairs = np.unique(users * n_items + items)
    u, i = pairs // n_items, pairs % n_items + n_users
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros(n)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    values = inv_sqrt[rows] * inv_sqrt[cols]
    order = np.lexsort((cols, rows))
    crow = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return torch.sparse_csr_tensor(torch.as_tensor(crow), torch.as_tensor(cols[order]),
                                   torch.as_tensor(values[order], dtype=torch.float32),
                                   size=(n, n), check_invariants=False)


class _SymmetricSpmm(torch.autograd.Function):
    """y = Â x for a symmetric sparse Â; the gradient with respect to x is Â g."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adj @ grad


class LightGCN(Recommender):
    emb_roles = ["user", "item"]
    feedback_kinds = ("implicit",)
    losses = ("bpr",)
    needs_graph = True
    compiled_fast_path = False
    paper_defaults = {"dim": 64, "lr": 1e-3, "reg": 1e-4}

    @classmethod
    def default_loss(cls, feedback: str) -> str:
        return "bpr"

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator,
                 feedback: str = "implicit", cfg=None, interactions=None, layers: int | None = None,
                 **_: object) -> None:
        super().__init__()
        self.loss = self.resolve_loss(getattr(cfg, "loss", "auto"), feedback)
        if interactions is None:
            raise ValueError("LightGCN is built from the training interactions: pass "
                             "build_model(..., interactions=train)")
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.layers = int(layers if layers is not None else getattr(cfg, "layers", 3))
        if self.layers < 0:
            raise ValueError(f"model.layers: {self.layers}; use 0 or more propagation steps")
        self.user_emb = nn.Parameter(glorot_uniform(n_users, dim, generator))
        self.item_emb = nn.Parameter(glorot_uniform(n_items, dim, generator))
        self.set_interactions(interactions)

    # ------------------------------------------------------------------ graph
    def set_interactions(self, interactions) -> None:
        """(Re)build Â from ``interactions`` (rows with a positive rating are edges)."""
        users, items = np.asarray(interactions.users), np.asarray(interactions.items)
        ratings = np.asarray(interactions.ratings)
        keep = ratings > 0
        if len(users) and (users.max() >= self.n_users or items.max() >= self.n_items):
            raise ValueError("interactions hold ids beyond the model's tables "
                             f"({self.n_users} users, {self.n_items} items)")
        adj = normalized_adjacency(users[keep], items[keep], self.n_users, self.n_items)
        # Â's CSR arrays as non-persistent buffers: they follow .to(), deepcopy and pickle like
        # any tensor, and stay out of state_dict (the graph comes from the data, not training).
        device = self.user_emb.device
        self.register_buffer("adj_crow", adj.crow_indices().to(device), persistent=False)
        self.register_buffer("adj_col", adj.col_indices().to(device), persistent=False)
        self.register_buffer("adj_val", adj.values().to(device), persistent=False)
        self._cache = None

    @property
    def adjacency(self) -> torch.Tensor:
        """Â as a CSR tensor (a view of the buffers, built per call: microseconds)."""
        n = self.n_users + self.n_items
        return torch.sparse_csr_tensor(self.adj_crow, self.adj_col, self.adj_val, size=(n, n),
                                       check_invariants=False)

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def clear_cache(self) -> None:
        """Forget the cached final embeddings (see the module docstring)."""
        self._cache = None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    # ------------------------------------------------------------------ propagation
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embeddings: the mean of E^(0) … E^(K)."""
        key = (self.user_emb._version, self.item_emb._version, self.user_emb.data_ptr(),
               self.item_emb.data_ptr())
        cacheable = not torch.is_grad_enabled()
        if not cacheable:
            self._cache = None
        elif self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        ego = torch.cat([self.user_emb, self.item_emb])
        total, layer = ego, ego
        adjacency = self.adjacency
        for _ in range(self.layers):
            layer = _SymmetricSpmm.apply(adjacency, layer)
            total = total + layer
        final = total / (self.layers + 1)
        out = final.split([self.n_users, self.n_items])
        if cacheable:
            self._cache = (key, out)
        return out

    # ------------------------------------------------------------------ scores
    def embed(self, users, items):
        final_users, final_items = self.propagate()
        return [final_users[users], final_items[items]]

    def head(self, embs, users, items):
        p, q = embs
        return (p * q).sum(-1)

    def score_all(self, users):
        final_users, final_items = self.propagate()
        return final_users[users] @ final_items.T

    def bpr_embeddings(self, users, pos, neg):
        """Final rows of the triple from one propagation; the L2 term reads the ego rows."""
        final_users, final_items = self.propagate()
        rows = [final_users[users], final_items[pos], final_items[neg]]
        ego = [self.user_emb[users], self.item_emb[pos], self.item_emb[neg]]
        return rows, ego

    def lookup_tables(self) -> list[nn.Parameter]:
        """None: propagation reads every row of both tables, not only the batch's."""
        return []

    def user_table(self):
        """The ego user table (what the embedding-norm rules of PamaCF/SHARE read)."""
        return self.user_emb
