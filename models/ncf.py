"""NCF / NeuMF victim (He et al., WWW 2017), as attacked by Huang et al. (NDSS 2021).

Two branches share nothing but the output layer: GMF, the element-wise product of user and item
factors (``cfg.dim`` factors, 8 in the NDSS preset), and an MLP tower over the concatenated user
and item MLP embeddings (layers 64-32-16-8, so 32-dimensional MLP embeddings). The GMF product
and the tower's last layer are concatenated and mapped to one logit. Explicit feedback: the
output is sigmoid(logit), regressed on the normalized rating; implicit feedback: the output is
the logit itself, trained with BCE-with-logits on sampled negatives (``models/trainer.py``).

Deviations and choices:
- The MLP tower is fixed at 64-32-16-8 (the NDSS and NCF defaults); ``ModelConfig`` has no field
  for it, and ``dim`` keeps its meaning of "embedding factors" through the GMF branch.
- Embeddings start from N(0, 0.01) and linear layers from PyTorch's default uniform bound
  1/sqrt(fan_in) — the authors' initialization — drawn from the run's seeded generator.
- Each side's GMF and MLP embeddings are stored side by side in one table (``user_emb``,
  ``item_emb``: columns ``[:dim]`` GMF, ``[dim:]`` MLP), so a batch is two row gathers and
  adversarial defenses perturb a user's (item's) whole representation; the L2 penalty is the
  per-element mean over those rows (the preset's NDSS setting has no L2).
- ``score_all`` never materializes user-item pair rows: the first MLP layer splits into a user
  part and an item part (W [p; q] = W_u p + W_i q), which are added by broadcasting, and the
  GMF branch folds its output weights into the user factors. Users are processed in chunks so
  the (users × items × 32) activation stays bounded.

Embedding tensors returned by ``embed`` (what adversarial defenses perturb): the user rows and
the item rows (``emb_roles``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import Recommender

MLP_LAYERS = (64, 32, 16, 8)
# Float budget of one score_all chunk's largest activation (users × items × first MLP width).
SCORE_CHUNK_FLOATS = 1 << 22


def _uniform_linear(n_in: int, n_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    bound = 1.0 / math.sqrt(n_in)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(n_out, n_in, generator=generator) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(n_out, generator=generator) * 2 - 1) * bound)
    return layer


class NCF(Recommender):
    emb_roles = ["user", "item"]

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator,
                 feedback: str = "explicit", layers: tuple[int, ...] = MLP_LAYERS,
                 cfg=None, **_: object) -> None:
        super().__init__()
        if feedback not in ("explicit", "implicit"):
            raise ValueError(f"feedback '{feedback}' is unknown; use explicit or implicit")
        if len(layers) < 2 or layers[0] % 2:
            raise ValueError(f"MLP layers {layers}: need ≥ 2 layers and an even first width")
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.feedback = feedback
        self.loss = self.resolve_loss(getattr(cfg, "loss", "auto"), feedback)
        self.half = layers[0] // 2
        width = dim + self.half
        self.user_emb = nn.Parameter(torch.randn(n_users, width, generator=generator) * 0.01)
        self.item_emb = nn.Parameter(torch.randn(n_items, width, generator=generator) * 0.01)
        self.tower = nn.ModuleList(_uniform_linear(a, b, generator)
                                   for a, b in zip(layers[:-1], layers[1:]))
        self.out = _uniform_linear(dim + layers[-1], 1, generator)

    # ------------------------------------------------------------------ pairs
    def embed(self, users, items):
        return [self.user_emb.index_select(0, users), self.item_emb.index_select(0, items)]

    def head(self, embs, users, items):
        p, q = embs
        d = self.dim
        h = torch.cat([p[:, d:], q[:, d:]], dim=-1)
        for layer in self.tower:
            h = torch.relu(layer(h))
        logit = self.out(torch.cat([p[:, :d] * q[:, :d], h], dim=-1)).squeeze(-1)
        return self._output(logit)

    def _output(self, logit: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logit) if self.feedback == "explicit" else logit

    # ------------------------------------------------------------------ full rows
    def score_all(self, users):
        """Scores of every item for ``users`` (differentiable; chunked over users)."""
        d = self.dim
        first, rest = self.tower[0], self.tower[1:]
        w_user, w_item = first.weight[:, :self.half], first.weight[:, self.half:]
        item_part = self.item_emb[:, d:] @ w_item.T + first.bias        # (I, h1)
        w_gmf, w_mlp = self.out.weight[0, :d], self.out.weight[0, d:]
        gmf_items = self.item_emb[:, :d]
        chunk = max(1, SCORE_CHUNK_FLOATS // max(1, self.n_items * first.out_features))
        rows = []
        for part in users.split(chunk):
            p = self.user_emb.index_select(0, part)
            gmf = (p[:, :d] * w_gmf) @ gmf_items.T                        # (B, I)
            h = torch.relu((p[:, d:] @ w_user.T).unsqueeze(1) + item_part)
            for layer in rest:
                h = torch.relu(layer(h))
            rows.append(gmf + h @ w_mlp + self.out.bias)
        return self._output(torch.cat(rows) if rows else
                            self.user_emb.new_zeros((0, self.n_items)))

    # ------------------------------------------------------------------ hand-derived step
    @torch.no_grad()
    def loss_and_grads(self, users, items, ratings, reg: float,
                       grads: list[torch.Tensor]) -> torch.Tensor:
        """The batch loss of ``Trainer.batch_loss`` (squared error on sigmoid(logit) for
        explicit feedback, BCE on the logit for implicit, plus ``reg`` × the per-table mean of
        the squared batch embeddings) and its gradient, derived by hand and written into
        ``grads`` (buffers shaped like ``self.parameters()``, in that order).

        The same mathematics as autograd (tests/test_ncf_implicit.py checks it), without the
        graph and without allocating full-table gradients on every step: the trainer's hot
        loop for NCF, several times faster than the autograd step at batch 256."""
        b, d = len(users), self.dim
        p, q = self.user_emb.index_select(0, users), self.item_emb.index_select(0, items)
        acts = [torch.cat([p[:, d:], q[:, d:]], dim=1)]
        for layer in self.tower:
            acts.append(torch.relu(torch.addmm(layer.bias, acts[-1], layer.weight.T)))
        gmf = p[:, :d] * q[:, :d]
        w_gmf, w_mlp = self.out.weight[0, :d], self.out.weight[0, d:]
        logit = torch.addmv(torch.mv(acts[-1], w_mlp), gmf, w_gmf) + self.out.bias
        prob = torch.sigmoid(logit)
        if self.feedback == "implicit":
            loss = (torch.nn.functional.softplus(logit) - ratings * logit).mean()
            d_logit = (prob - ratings) / b
        else:
            err = prob - ratings
            loss = err.pow(2).mean()
            d_logit = 2.0 * err * prob * (1.0 - prob) / b
        g_user, g_item, rest = grads[0], grads[1], grads[2:]
        torch.mv(gmf.T, d_logit, out=rest[-2][0, :d])
        torch.mv(acts[-1].T, d_logit, out=rest[-2][0, d:])
        rest[-1].copy_(d_logit.sum().reshape(1))
        d_h = torch.outer(d_logit, w_mlp)
        for n in range(len(self.tower) - 1, -1, -1):
            d_z = d_h * (acts[n + 1] > 0)
            torch.mm(d_z.T, acts[n], out=rest[2 * n])
            torch.sum(d_z, dim=0, out=rest[2 * n + 1])
            d_h = d_z @ self.tower[n].weight
        d_gmf = torch.outer(d_logit, w_gmf)
        d_p = torch.cat([d_gmf * q[:, :d], d_h[:, :self.half]], dim=1)
        d_q = torch.cat([d_gmf * p[:, :d], d_h[:, self.half:]], dim=1)
        if reg > 0:
            loss = loss + reg * (p.pow(2).mean() + q.pow(2).mean())
            d_p.add_(p, alpha=2.0 * reg / p.numel())
            d_q.add_(q, alpha=2.0 * reg / q.numel())
        g_user.zero_().index_add_(0, users, d_p)
        g_item.zero_().index_add_(0, items, d_q)
        return loss

    def user_table(self):
        """A user's whole representation: GMF and MLP factors side by side."""
        return self.user_emb
