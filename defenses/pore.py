"""PORE — provably robust recommendation by user subsampling (Jia, Liu, Hu & Gong, "PORE: Provably
Robust Recommender Systems against Data Poisoning Attacks", USENIX Security 2023, arXiv
2303.14601; authors' code ``liu00222/PORE-Provably-Robust-Recommender-Systems-against-Data-
Poisoning-Attacks``).

The defense. T base recommenders; each is trained on ``s`` users drawn without replacement from
*all* the users the defense is given (fake users included — it cannot tell them apart) and
recommends ``n_prime`` (N') items to users, never an item the user already rated. The count of
base recommenders that recommended item i to user u is u's frequency of i; PORE recommends the
items of largest frequency. Theorem 1 of the paper then bounds, per user, how many items of a
reference set stay in the top-N whatever e fake users an attacker adds; the arithmetic lives in
``utils/certification.py`` (checked against the authors' own files to 4 digits).

Base recommenders (``base``):

* ``sar`` (default) — item-based, as the authors' SAR: co-occurrence of the sampled users'
  items (binary), Jaccard similarity J(i, j) = C_ij / (C_ii + C_jj − C_ij), score of item j for
  user u = Σ_i a_ui J(i, j) with u's affinity a_ui = u's normalized rating. Deviation: no time
  decay of the affinity (the authors' SAR halves it every 30 days; the package's data carry no
  timestamps). Many subsamples are vectorized: per batch of ``batch`` base models the
  similarities are built from sparse products and one (users × items) · (items × batch·items)
  product scores every user for every model of the batch; no Python loop over users.
  An item of score 0 (no co-occurrence with anything the user rated) is never recommended.
* ``victim`` — the cell's victim model (``model:``; MF by default, i.e. the package's MF/BPR
  in implicit feedback) trained by the package's trainer on the sampled users' rows (model
  selection on their validation rows), ``epochs`` epochs (0: the model config's).
  One training per base model (a loop over base models, not over users): ≈ 1.6 s per base
  model on ML-100K (s = 200, 40 epochs, load ≈ 4), so set ``T`` (and ``epochs``) yourself —
  T = 100 is ≈ 3 min, and its certificate is empty (each user is in ≈ T·s/n = 21 samples).

Who gets recommendations (``recommend_to``): ``sampled`` — only the users of the sample, as the
authors' code does (their frequencies sum to T·s/n per user); ``all`` — every user, which an
item-based base can do because u's affinity row is u's own data. ``auto`` (default) is ``all``
for ``sar`` and ``sampled`` for ``victim`` (an MF has no embedding for a user outside its
sample). The certificate uses the matching fake mass δ (``utils/certification.py``). What
matters for the certificate is the number of recommendations per user (T in ``all`` mode,
≈ T·s/n in ``sampled``), so ``all`` needs n/s ≈ 4.7 times fewer base models on ML-100K for the
same certificate; a base model of ``all`` costs ≈ 2–3 times one of ``sampled`` (it scores n
users, but the similarity, built once per sample, is shared by all), so ``all`` is ≈ 2 times
cheaper for the same certificate (measured: ``docs/pore.md``).

Defaults. ``s`` = 200 and N' = 1, α = 0.001 are the authors' ML-100K values. The authors ran
T = 100,000 base models in ``sampled`` mode (≈ 21,000 recommendations per user). ``T`` = 1,000
here, in ``all`` mode (1,000 recommendations per user): one SAR base model costs 90 ms of CPU on
ML-100K (one sparse 943 × 1682 by 1682 × 1682 product plus its similarity), so a cell's 1,000
base models take ≈ 1.5 min on an idle 2-core machine (355 s measured with four other jobs on
it, ``docs/pore.md``) — the budget of one grid cell on the 2-core machine the presets target.
The price is width: with 1,000 trials the Bonferroni-corrected Clopper–Pearson intervals (level
α/(users · items) ≈ 6·10⁻¹⁰ each, z ≈ 6) are about ±0.09 around a frequency of 0.3, and the
certified precision@10 at e = 0 on ML-100K is half the authors' (0.1375 vs 0.2806; their own
counts thinned to the same budget give 0.1367). Raise ``T`` for a tighter certificate (cost is
linear in T).

The returned model ranks items by frequency, ties by item id (lower first): ``score_all``
returns (n_items − position)/n_items in that order, exact in float32 and free of ties, so the
evaluator's pessimistic ranks are the frequency order. Test MSE and prediction shift are not
meaningful for PORE (the scores are ranks, not ratings).

The certificate (:func:`certificate_columns`) is computed by the evaluation side, which knows
the real users, their test items and the targets (the defense never does): per e in
``certify_e`` (``n_fake`` = the grid's number of fake users), certified precision@K and
recall@K with the test item as the reference set (one test item per user: recall@K is the
certified HR@K), and two certified upper bounds on target HR@K: Theorem 1 with each user's
current top-K as the reference set (a target can enter only where the whole top-K is not
certified), and a per-target one (a target stays out where K items are guaranteed to stay above
it: the attacker can raise the target by at most δ and cannot pull an item below
disc · lower bound) — sound by the same two inequalities and much tighter. On a clean cell
(``attack: none``) the bound at e = n_fake holds for every attack of that size on the same
data: that is the number to set beside the attacked cells'
measured target HR. On an attacked cell the certificate is about e *more* fake users.
Reproducible from the seed the defense is given (samples and model initializations are derived
from it).

What it shows on ML-100K (``docs/pore.md``): measured target HR@50 0 under every 3 % attack
tried, but the certificate is empty at e = 28 (3 %) by arithmetic — C(943, 200)/C(971, 200) =
0.0014 — and the target-HR bounds are empty for every e ≥ 1 at K = 50, N' = 1, s = 200.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from data.ratings import Interactions
from models.base import Recommender
from utils import certification as cert
from utils.seeding import numpy_rng

from .base import Defense, TrainingData

BASES = ("sar", "victim")
RECOMMEND_TO = ("auto", "all", "sampled")
DEFAULT_CERTIFY_E = [0, 1, 2, 5, 10, 20, "n_fake"]


def _at_least(lo, doc=""):
    return {"range": (lo, None, False, False), "doc": doc}


@dataclass
class PoreOptions:
    s: int = field(default=200, metadata=_at_least(1))          # users per base model
    T: int = field(default=1000, metadata=_at_least(1))         # base models
    n_prime: int = field(default=1, metadata=_at_least(1))      # N': items per base model
    base: str = "sar"                                           # sar | victim
    alpha: float = field(default=0.001, metadata={"range": (0, 1, True, True), "doc": ""})
    recommend_to: str = "auto"                                  # auto | all | sampled
    certify_e: list[int | str] = field(default_factory=lambda: list(DEFAULT_CERTIFY_E))
    batch: int = field(default=8, metadata=_at_least(1))        # SAR base models per product
    epochs: int = field(default=0, metadata=_at_least(0))       # victim base: 0 = model's
    use_validation: bool = True   # the validation ratings are known ratings: bases use them


class PoreModel(Recommender):
    """Recommends by frequency over the base recommenders; carries what the certificate needs.
    ``counts`` (n_users × n_items, int32) is a buffer, so ``state_dict`` holds it."""

    def __init__(self, counts: np.ndarray, T: int, s: int, n_prime: int, mode: str,
                 alpha: float, certify_e: list) -> None:
        super().__init__()
        self.n_users, self.n_items = counts.shape
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.int32))
        self.T, self.s, self.n_prime, self.mode, self.alpha = T, s, n_prime, mode, alpha
        self.certify_e = list(certify_e)

    def order_key(self, counts: torch.Tensor) -> torch.Tensor:
        """Ascending key = frequency descending, ties by item id ascending."""
        ids = torch.arange(self.n_items, dtype=torch.int64, device=counts.device)
        return (self.T - counts.long()) * self.n_items + ids

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        key = self.order_key(self.counts[users])
        order = key.argsort(dim=1)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(self.n_items, device=order.device)
                      .expand_as(order).contiguous())
        return (self.n_items - rank).float() / self.n_items

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(users).gather(1, items.view(-1, 1)).view(-1)

    def user_table(self) -> torch.Tensor:
        raise NotImplementedError("PORE has no user embeddings")


class Pore(Defense):
    name = "pore"
    Options = PoreOptions
    choices = {"base": BASES, "recommend_to": RECOMMEND_TO}

    @classmethod
    def parse_options(cls, data, where: str = "options"):
        from utils.config import ConfigError
        opts = super().parse_options(data, where)
        if opts.base == "victim" and opts.recommend_to == "all":
            raise ConfigError(f"{where}.recommend_to: 'all' needs base: sar (a victim model "
                              "has no embedding for users outside its sample); use sampled")
        for e in opts.certify_e:
            if not (e == "n_fake" or (isinstance(e, int) and not isinstance(e, bool)
                                      and e >= 0)):
                raise ConfigError(f"{where}.certify_e: {e!r} is neither a count of fake users "
                                  "(an integer ≥ 0) nor 'n_fake'")
        return opts

    @property
    def mode(self) -> str:
        o = self.options
        if o.recommend_to != "auto":
            return o.recommend_to
        return "all" if o.base == "sar" else "sampled"

    # ------------------------------------------------------------------ sampling
    def samples(self, n_users: int):
        """The T samples, in batches of ``batch``: arrays (B, s) of user ids, drawn without
        replacement from all n users, each from the defense's seed."""
        o = self.options
        if o.s > n_users:
            raise ValueError(f"pore: s={o.s} users per base model but the data has only "
                             f"{n_users} users; set defense.options.pore.s below {n_users}")
        rng = numpy_rng(self.seed, "pore", "samples")
        for start in range(0, o.T, o.batch):
            b = min(o.batch, o.T - start)
            keys = rng.random((b, n_users))
            yield np.argpartition(keys, o.s - 1, axis=1)[:, :o.s]

    def observed(self, data: TrainingData) -> Interactions:
        return (Interactions.concat(data.train, data.val)
                if self.options.use_validation and data.val_known else data.train)

    def certificate(self, model: PoreModel, split, evaluator, fake_counts: list[int]) -> dict:
        """Evaluation-side hook: the certificate of ``model`` on one cell, as runs.csv columns
        (:func:`certificate_columns`). ``fake_counts``: what ``n_fake`` in ``certify_e`` stands
        for, given by the runner (the cell's own number of fake users on an attacked cell,
        else every attack setting's of the grid)."""
        return certificate_columns(model, split, evaluator, fake_counts)

    # ------------------------------------------------------------------ fit
    def fit(self, data: TrainingData):
        start = time.perf_counter()
        o = self.options
        n, m = data.n_users, data.n_items
        if o.base == "sar":
            counts = self._sar_counts(data, n, m)
        else:
            counts = self._victim_counts(data, n, m)
        model = PoreModel(counts, o.T, o.s, o.n_prime, self.mode, o.alpha, o.certify_e)
        model.to(self.device)
        info = {"base": o.base, "T": o.T, "s": o.s, "n_prime": o.n_prime,
                "recommend_to": self.mode, "n_users_sampled": n,
                "seconds_bases": round(time.perf_counter() - start, 3)}
        return model, info

    def _top(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        """Indices of the k best items per row, ties by the lower item id; −1 where the
        score is not positive (no recommendation)."""
        if k == 1:
            best, idx = scores.max(dim=-1, keepdim=True)   # max returns the first maximum
        else:
            best, idx = scores.sort(dim=-1, descending=True, stable=True)
            best, idx = best[..., :k], idx[..., :k]
        return torch.where(best > 0, idx, torch.full_like(idx, -1))

    def _sar_counts(self, data: TrainingData, n: int, m: int) -> np.ndarray:
        o = self.options
        obs = self.observed(data)
        affinity = sp.csr_matrix((obs.ratings.astype(np.float32), (obs.users, obs.items)),
                                 shape=(n, m), dtype=np.float32)
        affinity.sum_duplicates()
        binary = affinity.copy()
        binary.data[:] = 1.0
        seen = torch.from_numpy(binary.toarray() > 0)
        counts = torch.zeros(n * m, dtype=torch.int64)
        all_users = self.mode == "all"
        k = min(o.n_prime, m)
        # at most ~256 MB of similarities and scores per product (ML-1M: one model at a time);
        # splitting a batch changes nothing: the samples come from the same stream
        per_model = 4 * m * (m + (n if all_users else o.s))
        chunk = max(1, min(o.batch, (1 << 28) // per_model))
        batches = (part for batch in self.samples(n)
                   for part in np.array_split(batch, -(-len(batch) // chunk)))
        for batch in batches:
            b = len(batch)
            sims = np.empty((m, b * m), dtype=np.float32)   # [J_1 | J_2 | ... | J_b]
            for j, users in enumerate(batch):
                x = binary[np.sort(users)]
                co = (x.T @ x).toarray()
                d = np.diagonal(co).copy()
                # Jaccard; an item nobody in the sample rated has C = 0 and gets 0
                denom = d[:, None] + d[None, :] - co
                np.maximum(denom, 1.0, out=denom)
                np.divide(co, denom, out=sims[:, j * m:(j + 1) * m])
            if all_users:
                scores = torch.from_numpy(affinity @ sims)                      # (n, b·m)
                scores = scores.view(n, b, m).transpose(0, 1)                   # (b, n, m)
                scores.masked_fill_(seen.unsqueeze(0), float("-inf"))
                top = self._top(scores, k)                                      # (b, n, k)
                rows = torch.arange(n).view(1, n, 1).expand_as(top)
            else:
                idx = torch.as_tensor(batch)                                    # (b, s)
                parts = [torch.from_numpy(affinity[users] @ sims[:, j * m:(j + 1) * m])
                         for j, users in enumerate(batch)]
                scores = torch.stack(parts)                                     # (b, s, m)
                scores.masked_fill_(seen[idx], float("-inf"))
                top = self._top(scores, k)
                rows = idx.unsqueeze(2).expand_as(top)
            keep = top >= 0
            flat = (rows[keep] * m + top[keep]).view(-1)
            counts.index_add_(0, flat, torch.ones_like(flat))
        return counts.view(n, m).numpy().astype(np.int32)

    def _victim_counts(self, data: TrainingData, n: int, m: int) -> np.ndarray:
        o = self.options
        counts = np.zeros((n, m), dtype=np.int64)
        obs = self.observed(data)
        k = min(o.n_prime, m)
        b = 0
        for batch in self.samples(n):
            for users in batch:
                users = np.sort(users)
                pos = np.full(n, -1, dtype=np.int64)
                pos[users] = np.arange(len(users))

                def local(rows: Interactions) -> Interactions:
                    keep = pos[rows.users] >= 0
                    return Interactions(pos[rows.users[keep]], rows.items[keep],
                                        rows.ratings[keep])

                sub = TrainingData(local(data.train), local(data.val), len(users), m,
                                   data.scale, data.feedback, data.val_known)
                model = self.new_model(sub, tag=("pore", b))
                trainer = self.new_trainer(model, sub, tag=("pore", b))
                trainer.fit(sub.train, sub.val, epochs=o.epochs or None)
                seen_rows = local(obs)
                with torch.no_grad():
                    trainer.model.eval()
                    scores = trainer.model.score_all(
                        torch.arange(len(users), device=self.device)).float().cpu()
                scores[torch.as_tensor(seen_rows.users), torch.as_tensor(seen_rows.items)] = \
                    float("-inf")
                # the victim's scores may be negative: rank, then keep finite ones
                best, idx = scores.sort(dim=1, descending=True, stable=True)
                idx = idx[:, :k].numpy()
                ok = np.isfinite(best[:, :k].numpy())
                np.add.at(counts, (np.repeat(users, k).reshape(-1, k)[ok], idx[ok]), 1)
                b += 1
        return counts.astype(np.int32)


# ----------------------------------------------------------------------------- evaluation side

def current_top(model: PoreModel, candidates: np.ndarray, K: int, rows: int | None = None
                ) -> np.ndarray:
    """(rows × items) bool: each user's top-K as the evaluator ranks the model (frequency,
    ties by item id), only among ``candidates`` (the items the user has not rated)."""
    counts = model.counts[:rows].cpu().numpy().astype(np.int64)
    m = counts.shape[1]
    key = np.where(candidates, (model.T - counts) * m + np.arange(m), np.iinfo(np.int64).max)
    top = np.zeros(counts.shape, bool)
    np.put_along_axis(top, np.argsort(key, axis=1, kind="stable")[:, :K], True, axis=1)
    return top & candidates


def certificate_inputs(model: PoreModel, split, K: int):
    """The real users' counts, candidate items (not rated by the user), test-item reference
    set (the leave-one-out item, or a ratio split's held-out set) and current top-K reference
    set."""
    n_real, m = split.n_users, split.n_items
    counts = model.counts[:n_real].cpu().numpy()
    seen = split.observed()
    observed = sp.csr_matrix((np.ones(len(seen), bool), (seen.users, seen.items)),
                             shape=(n_real, m), dtype=bool)
    candidates = ~observed.toarray()
    held_out = getattr(split, "test", None)   # a ratio split's held-out set (split.mode: ratio)
    if held_out is not None and len(held_out):
        real = held_out.users < n_real
        users, items = held_out.users[real], held_out.items[real]
    else:                                      # leave-one-out: one test item per user
        users = np.flatnonzero(split.test_items >= 0)
        items = split.test_items[users]
    test = sp.csr_matrix((np.ones(len(users), bool), (users, items)), shape=(n_real, m),
                         dtype=bool)
    test.sum_duplicates()
    return counts, candidates, test, current_top(model, candidates, K, n_real)


def certificate_columns(model: PoreModel, split, evaluator, fake_counts: list[int] = (),
                        e_values=None) -> dict:
    """The certificate of a trained PORE model on one cell, as runs.csv columns (K = the
    evaluator's K): ``pore_cert_precision@K_e{e}``, ``pore_cert_recall@K_e{e}``,
    ``pore_cert_target_hr@K_e{e}`` (Theorem 1 with the current top-K as reference: a target
    enters only the top-K of users whose top-K is not wholly certified),
    ``pore_cert_target_entry@K_e{e}`` (per target, tighter: K items guaranteed to stay above
    the target keep it out; ``utils.certification.target_entry_bound``) for each e,
    ``pore_cert_max_e@K`` (largest e with a
    certified test item for some user; −1: none) and ``pore_cert_max_e_top@K`` (largest e at
    which some user's whole top-K is certified, i.e. the target-HR bound is below 1 for some
    target's users; −1: none)."""
    K = evaluator.k
    n_real, m = split.n_users, split.n_items
    if e_values is None:
        e_values = []
        for e in model.certify_e:
            e_values += [int(n) for n in fake_counts] if e == "n_fake" else [int(e)]
        e_values = sorted(set(e_values))
    counts, candidates, test, top = certificate_inputs(model, split, K)
    alpha_each = cert.bonferroni_alpha(model.alpha, n_real, m)
    n, s = model.n_users, model.s
    prep_test = cert.prepare(counts, test, model.T, K, alpha_each, candidates)
    prep_top = cert.prepare(counts, top, model.T, K, alpha_each, candidates)
    r_test = cert.certify(prep_test, n, s, e_values, model.n_prime, model.mode)
    r_top = cert.certify(prep_top, n, s, e_values, model.n_prime, model.mode)
    in_top = top[:, evaluator.targets]
    entry = cert.target_entry_bound(counts, candidates, evaluator.targets, evaluator.eligible,
                                    model.T, K, alpha_each, n, s, e_values, model.mode)
    row = {}
    for e, rt, rp, en in zip(e_values, r_test, r_top, entry):
        p, r = cert.precision_recall(rt, prep_test.n_ref, K)
        row[f"pore_cert_precision@{K}_e{e}"] = p
        row[f"pore_cert_recall@{K}_e{e}"] = r
        row[f"pore_cert_target_hr@{K}_e{e}"] = cert.target_hr_bound(rp, K, in_top,
                                                                     evaluator.eligible)
        row[f"pore_cert_target_entry@{K}_e{e}"] = float(en)
    row[f"pore_cert_max_e@{K}"] = cert.largest_certified_e(prep_test, n, s, model.n_prime,
                                                           model.mode)
    row[f"pore_cert_max_e_top@{K}"] = cert.largest_certified_e(prep_top, n, s, model.n_prime,
                                                               model.mode, need=K)
    return row
