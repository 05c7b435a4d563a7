"""PCASelectUsers (Mehta & Nejdl, "Unsupervised strategies for shilling detection and robust
collaborative filtering", User Modeling and User-Adapted Interaction 19, 2009; also Mehta,
"Unsupervised shilling detection for collaborative filtering", AAAI 2007), as a defense that
drops the users it flags and trains the victim plainly (``defenses/detection.py``).

The detector, with users as the variables of a PCA and items as the observations:

1. Z-score the user × item rating matrix per user, so that every user's row has zero mean
   and unit variance. ``zscore: all`` (default) z-scores each user's whole row, unrated cells
   counted as 0 (a z-score of the filled table, our reading of the paper's first step; the
   paper does not say how unrated cells enter); ``zscore: rated``
   z-scores over the items the user rated, (r_ui − μ_u) / σ_u, and leaves unrated cells at 0.
   Either way each row is centred over the items, so X Xᵀ (X: users × items) is, up to a
   constant, the user-user covariance. A user with a constant row gets zeros.
2. Take its top ``components`` eigenvectors (the principal components, u_1, …, u_c: the left
   singular vectors of X). A user's coordinates on them are the loadings u_k[user].
3. A user's contribution is Σ_k u_k[user]²; the ``flag_fraction`` × n_users users with the
   *smallest* contribution are flagged. Shilling profiles correlate strongly with one another
   and weakly with the structure of real users, so they contribute little to the directions
   of largest variance.

Why ``all`` is the default (measured on ML-100K, seed 1, 3 % attacks, ``platform`` rows, 29
users flagged of 971 with 28 fake): with ``all`` the top components carry *which* items users
rate (popular ones), and fillers drawn uniformly at random load little on them — precision
0.90–0.97 on average, bandwagon and random attacks; with ``rated`` the rating pattern alone
is left, the average attack's fillers (item mean + noise) follow the consensus direction that
dominates it, and precision is 0.00–0.10 (fake users rank on the *high*-contribution side).

The eigenproblem is solved on the smaller Gram matrix: X Xᵀ (n_users²) when there are fewer
users than items, else Xᵀ X (n_items²) with u_k = X v_k / √λ_k. X = A − c 1ᵀ with A sparse is
never formed densely, so memory is O(min(n_users, n_items)²) plus the ratings. Loadings are
squared, so the eigenvectors' signs do not matter. Options: ``flag_fraction`` (0.03, the
assumed attack size), ``components`` (3), ``zscore`` (``all``), ``use_validation`` (False; see
``defenses/detection.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from data.ratings import Interactions
from utils.config import bounds

from .base import TrainingData
from .detection import DetectionDefense, DetectionOptions, user_zscores


ZSCORES = ("all", "rated")


@dataclass
class PCADetectOptions(DetectionOptions):
    components: int = field(default=3, metadata=bounds(1, 100))
    # "all": z-score each user's whole row, unrated cells counted as 0; "rated": z-score over
    # the rated items only, unrated cells 0 after (see the module docstring).
    zscore: str = "all"


def top_eigh(sym: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``c`` largest eigenvalues (descending) of a symmetric matrix and their vectors."""
    n = len(sym)
    values, vectors = scipy.linalg.eigh(sym, subset_by_index=[n - c, n - 1])
    return values[::-1], vectors[:, ::-1]


def pca_contributions(obs: Interactions, n_users: int, n_items: int, components: int,
                      zscore: str = "all") -> np.ndarray:
    """Σ over the top ``components`` principal components of each user's squared loading,
    from the user-z-scored rating matrix (users with no rating get 0).

    The z-scored matrix is X = A − c 1ᵀ with A sparse: for ``rated``, A holds the z-scores of
    the rated cells and c = 0; for ``all``, A = diag(1/σ_u) R and c_u = μ_u / σ_u (μ_u, σ_u over
    all n_items cells). The Gram products are formed from A and c, never a dense X."""
    c_top = min(components, n_users, n_items)
    if zscore == "rated":
        a = sp.csr_matrix((user_zscores(obs, n_users), (obs.users, obs.items)),
                          shape=(n_users, n_items), dtype=np.float64)
        shift = np.zeros(n_users)
    else:
        r = obs.ratings.astype(np.float64)
        total = np.bincount(obs.users, weights=r, minlength=n_users)
        sq = np.bincount(obs.users, weights=r * r, minlength=n_users)
        mean = total / n_items
        std = np.sqrt(np.maximum(sq / n_items - mean ** 2, 0.0))
        inv = np.divide(1.0, std, out=np.zeros(n_users), where=std > 1e-12)
        a = sp.csr_matrix((r * inv[obs.users], (obs.users, obs.items)),
                          shape=(n_users, n_items), dtype=np.float64)
        shift = mean * inv
    ones_items = np.ones(n_items)
    if n_users <= n_items:
        # X Xᵀ = A Aᵀ − (A1) cᵀ − c (A1)ᵀ + n_items c cᵀ
        row = a @ ones_items
        gram = ((a @ a.T).toarray() - np.outer(row, shift) - np.outer(shift, row)
                + n_items * np.outer(shift, shift))
        _, vectors = top_eigh(gram, c_top)
        loadings = vectors
    else:
        # Xᵀ X = AᵀA − (Aᵀc) 1ᵀ − 1 (Aᵀc)ᵀ + (cᵀc) 1 1ᵀ;  u_k = X v_k / √λ_k
        col = a.T @ shift
        cov = ((a.T @ a).toarray() - np.outer(col, ones_items) - np.outer(ones_items, col)
               + float(shift @ shift))
        values, vectors = top_eigh(cov, c_top)
        scale = np.divide(1.0, np.sqrt(np.maximum(values, 0.0)), out=np.zeros(c_top),
                          where=values > 1e-12)
        projected = np.asarray(a @ vectors) - np.outer(shift, vectors.sum(axis=0))
        loadings = projected * scale
    return (loadings ** 2).sum(axis=1)


class PCADetect(DetectionDefense):
    name = "pca_detect"
    Options = PCADetectOptions
    choices = {"zscore": ZSCORES}

    def user_scores(self, data: TrainingData, observed: Interactions) -> np.ndarray:
        # The least contributing users are the most suspicious.
        return -pca_contributions(observed, data.n_users, data.n_items,
                                  self.options.components, self.options.zscore)
