"""The interface every victim model implements, so defenses and the evaluator stay model-agnostic.

A model maps a batch of (user, item) pairs to scores in two steps, ``embed`` (the embedding rows
of the batch: what adversarial defenses perturb) and ``head`` (scores from those rows), and can
score every item for a batch of users (``score_all``, used by the evaluator and TCD).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def glorot_uniform(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    limit = math.sqrt(6.0 / (rows + cols))
    return (torch.rand(rows, cols, generator=generator) * 2 - 1) * limit


def declares(model, capability: str) -> bool:
    """Whether ``type(model)`` itself (not a base class) declares ``capability`` true."""
    return declares_class(type(model), capability)


def declares_class(cls: type, capability: str) -> bool:
    """Whether model class ``cls`` itself (not a base class) declares ``capability`` true."""
    return bool(vars(cls).get(capability, False))


class Recommender(nn.Module):
    n_users: int
    n_items: int
    feedback_kinds: tuple[str, ...] = ("explicit", "implicit")
    losses: tuple[str, ...] = ("mse", "bce", "bpr")
    needs_graph: bool = False
    compiled_fast_path: bool = False
    #: ``model`` keys (dim, lr, reg …) the model takes from its paper when the config leaves
    #: them at the package default (``experiment.planning.model_config``); {} keeps those.
    paper_defaults: dict = {}
    loss: str = "mse"

    @classmethod
    def default_loss(cls, feedback: str) -> str:
        """The loss of ``model.loss: auto``: squared error on explicit ratings, BCE on sampled
        negatives for implicit feedback (the package's behaviour before ``model.loss``)."""
        return "mse" if feedback == "explicit" else "bce"

    @classmethod
    def resolve_loss(cls, name: str | None, feedback: str) -> str:
        """The loss this class trains with for ``model.loss: name`` on ``feedback``; a
        ValueError (one line: the problem and the fix) for a combination it does not
        support."""
        if feedback not in cls.feedback_kinds:
            raise ValueError(f"model {cls.__name__} trains on {' or '.join(cls.feedback_kinds)}"
                             f" feedback, not {feedback}; set dataset.feedback: "
                             f"{cls.feedback_kinds[0]}")
        loss = cls.default_loss(feedback) if name in (None, "auto") else name
        if loss not in cls.losses:
            raise ValueError(f"model {cls.__name__} has no loss '{loss}'; use one of "
                             f"{', '.join(('auto',) + cls.losses)}")
        pointwise = {"explicit": "mse", "implicit": "bce"}[feedback]
        if loss != pointwise and not (loss == "bpr" and feedback == "implicit"):
            raise ValueError(f"model.loss: '{loss}' does not fit {feedback} feedback; use "
                             f"{pointwise}{' or bpr' if feedback == 'implicit' else ''} (or auto)")
        return loss

    def bpr_embeddings(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The rows a BPR step scores — ``[user, positive item, negative item]``, what
        ``head`` reads and adversarial defenses perturb — and the rows its L2 term reads.
        Here both are the ``embed`` rows; models whose scores come from more than row lookups
        override it (LightGCN: final rows from one propagation, L2 on the ego rows)."""
        user, item_pos = self.embed(users, pos)
        _, item_neg = self.embed(users, neg)
        rows = [user, item_pos, item_neg]
        return rows, rows

    def bpr_diff(self, rows: list[torch.Tensor], users, pos, neg) -> torch.Tensor:
        """s_up − s_un from the ``bpr_embeddings`` rows (perturbed or not)."""
        user, item_pos, item_neg = rows
        return self.head([user, item_pos], users, pos) - self.head([user, item_neg], users, neg)

    def bpr_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                 reg: float) -> torch.Tensor:
        """BPR (Rendle et al., UAI 2009) on (user, positive, negative) triples:
        mean softplus(−(s_up − s_un)) + reg · ½ mean over the batch of ‖e_u‖² + ‖e_p‖² +
        ‖e_n‖² on the batch's L2 rows — the L2 form of the LightGCN authors' code
        (``gusye1234/LightGCN-PyTorch``, ``kuandeng/LightGCN``: tf.nn.l2_loss / batch size),
        which the MF-BPR victims of VAT and PamaCF share."""
        rows, l2_rows = self.bpr_embeddings(users, pos, neg)
        return bpr_objective(self.bpr_diff(rows, users, pos, neg), l2_rows, reg)

    def embed(self, users: torch.Tensor, items: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def head(self, embs: list[torch.Tensor], users: torch.Tensor,
             items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(users, items), users, items)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for ``users``: shape (len(users), n_items)."""
        raise NotImplementedError

    def lookup_tables(self) -> list[nn.Parameter]:
        """The embedding tables the loss reads only by row lookup (user and item tables):
        ``model.optimizer: adadelta_sparse`` updates only their rows in the batch."""
        return [t for t in (getattr(self, "user_emb", None), getattr(self, "item_emb", None))
                if isinstance(t, nn.Parameter)]

    def user_table(self) -> torch.Tensor:
        """The user embedding table whose row norms personalized defenses read."""
        raise NotImplementedError

    def reg_loss(self, embs: list[torch.Tensor]) -> torch.Tensor:
        """TCD's per-element L2 penalty: the mean of the squared batch embeddings, per table."""
        return sum(e.pow(2).mean() for e in embs)


def bpr_objective(diff: torch.Tensor, rows: list[torch.Tensor], reg: float) -> torch.Tensor:
    """mean softplus(−diff) + reg · ½ · Σ_tables mean_batch ‖row‖² (see ``bpr_loss``)."""
    loss = torch.nn.functional.softplus(-diff).mean()
    if reg > 0:
        loss = loss + reg * 0.5 * sum(r.pow(2).sum(-1).mean() for r in rows)
    return loss
