"""``defense: pore`` (defenses/pore.py): the vectorized SAR bases against a per-model, per-user
transcription; frequencies; seed reproducibility; the frequency ranking; and, on a small
poisoned case, the certificate holding against several attacks of the registry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import ATTACKS
from attacks.threat import select_targets
from conftest import make_context
from data import load_dataset, split_ratings
from data.ratings import Interactions
from defenses import DEFENSES, TrainingData
from defenses.pore import (Pore, PoreModel, PoreOptions, certificate_columns, certificate_inputs,
                           current_top)
from utils import certification as cert
from experiment.validation import config_from_dict
from experiment.workspace import grid_fake_counts
from utils.config import ConfigError
from utils.metrics import Evaluator
from utils.seeding import numpy_rng


@pytest.fixture(scope="module")
def toy():
    cfg = config_from_dict({"dataset": {"name": "synthetic",
                                        "synthetic": {"n_users": 200, "n_items": 100}},
                            "progress": False,
                            "model": {"epochs": 2, "batch_size": 256, "dim": 8}})
    data = load_dataset(cfg.dataset, 0)
    split = split_ratings(data, numpy_rng(0, "split"))
    targets = select_targets(split, "unpopular", 3, numpy_rng(1, "targets"))
    return cfg, split, targets


def training_data(split, fake: Interactions | None = None) -> TrainingData:
    train, n = split.train, split.n_users
    if fake is not None and len(fake):
        train = Interactions.concat(train, Interactions(fake.users + n, fake.items, fake.ratings))
        n += int(fake.users.max()) + 1
    return TrainingData(train, split.val, n, split.n_items, split.scale)


def fit(cfg, data, seed=0, **options):
    defense = Pore(PoreOptions(**options), cfg.model, "cpu", seed)
    model, info = defense.fit(data)
    return defense, model, info


def naive_sar_counts(defense: Pore, data: TrainingData, n_prime: int, mode: str) -> np.ndarray:
    """SAR base models one by one and users one by one, from the same samples."""
    n, m = data.n_users, data.n_items
    obs = Interactions.concat(data.train, data.val)
    aff = np.zeros((n, m))
    aff[obs.users, obs.items] = obs.ratings
    rated = aff > 0
    counts = np.zeros((n, m), dtype=np.int64)
    for batch in defense.samples(n):
        for sample in batch:
            x = rated[sample].astype(float)
            co = x.T @ x
            sim = np.zeros((m, m))
            for i in range(m):
                for j in range(m):
                    union = co[i, i] + co[j, j] - co[i, j]
                    sim[i, j] = co[i, j] / union if union > 0 else 0.0
            for u in (range(n) if mode == "all" else sample):
                score = (aff[u] @ sim).astype(np.float32)
                score[rated[u]] = -np.inf
                order = sorted(range(m), key=lambda j: (-score[j], j))[:n_prime]
                for j in order:
                    if score[j] > 0:
                        counts[u, j] += 1
    return counts


@pytest.mark.parametrize("mode,n_prime", [("all", 1), ("sampled", 2)])
def test_sar_bases_equal_a_plain_transcription(mode, n_prime):
    cfg = config_from_dict({"dataset": {"name": "synthetic",
                                        "synthetic": {"n_users": 30, "n_items": 25}},
                            "progress": False})
    data = load_dataset(cfg.dataset, 0)
    split = split_ratings(data, numpy_rng(0, "split"))
    td = training_data(split)
    defense, model, info = fit(cfg, td, s=8, T=13, batch=4, n_prime=n_prime, recommend_to=mode)
    counts = model.counts.numpy()
    assert np.array_equal(counts, naive_sar_counts(defense, td, n_prime, mode))
    # frequencies: at most N' per user per base model that served the user
    served = np.zeros(td.n_users, dtype=int)
    for batch in defense.samples(td.n_users):
        for sample in batch:
            served[sample if mode == "sampled" else np.arange(td.n_users)] += 1
    assert (counts.sum(1) <= n_prime * served).all()
    assert counts.sum(1).max() == n_prime * served.max() or mode == "sampled"
    assert info["recommend_to"] == mode and info["T"] == 13


def test_frequencies_and_seen_items(toy):
    cfg, split, _ = toy
    td = training_data(split)
    _, model, _ = fit(cfg, td, s=20, T=64, batch=16)
    counts = model.counts.numpy()
    # every user who rated something gets one item per base model (all mode, N' = 1)
    assert (counts.sum(1) == 64).all()
    obs = Interactions.concat(td.train, td.val)
    assert (counts[obs.users, obs.items] == 0).all()      # never an item the user rated


def test_seed_reproducibility(toy):
    cfg, split, _ = toy
    td = training_data(split)
    a = fit(cfg, td, seed=5, s=20, T=40)[1].counts
    b = fit(cfg, td, seed=5, s=20, T=40)[1].counts
    c = fit(cfg, td, seed=6, s=20, T=40)[1].counts
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the batch size only groups the work: same samples, same counts
    d = fit(cfg, td, seed=5, s=20, T=40, batch=3)[1].counts
    assert torch.equal(a, d)


def test_score_all_ranks_by_frequency_then_item_id():
    counts = np.array([[3, 5, 5, 0, 1], [0, 0, 0, 0, 0]])
    model = __import__("defenses.pore", fromlist=["PoreModel"]).PoreModel(
        counts, 10, 2, 1, "all", 0.001, [0])
    scores = model.score_all(torch.arange(2))
    assert scores.dtype == torch.float32
    assert torch.argsort(scores[0], descending=True).tolist() == [1, 2, 0, 4, 3]
    assert torch.argsort(scores[1], descending=True).tolist() == [0, 1, 2, 3, 4]
    assert len(set(scores[0].tolist())) == 5              # no ties for the evaluator


def test_victim_base_trains_the_package_model(toy):
    cfg, split, _ = toy
    td = training_data(split)
    _, model, info = fit(cfg, td, s=30, T=3, base="victim", epochs=1)
    counts = model.counts.numpy()
    assert info["recommend_to"] == "sampled"
    assert counts.sum() == 3 * 30                       # N' = 1 for each sampled user
    assert counts.max() <= 3


def test_options_are_checked():
    parse = Pore.parse_options
    assert parse({"certify_e": [0, 3, "n_fake"]}).certify_e == [0, 3, "n_fake"]
    for bad in ({"base": "knn"}, {"recommend_to": "some"}, {"certify_e": [-1]},
                {"certify_e": ["many"]}, {"base": "victim", "recommend_to": "all"}, {"s": 0}):
        with pytest.raises(ConfigError):
            parse(bad)
    assert DEFENSES["pore"] is Pore


ATTACKS_TRIED = ["random", "average", "bandwagon", "segment", "clone"]


def test_certified_bound_holds_against_attacks(toy):
    """Clean PORE → certificate at e = n_fake with each user's clean top-1 as the reference set;
    then PORE on the data poisoned by each attack (same e fake users): the measured target HR@1
    never exceeds the certified bound, and every user whose top-1 is certified keeps it."""
    cfg, split, targets = toy
    K, T, s = 1, 1500, 10
    evaluator = Evaluator(split, targets, K)
    _, clean, _ = fit(cfg, training_data(split), seed=0, s=s, T=T, batch=50)
    counts, candidates, _, top = certificate_inputs(clean, split, K)
    prep = cert.prepare(counts, top, T, K, cert.bonferroni_alpha(0.001, *counts.shape),
                        candidates)
    setting = (cfg, split, targets)
    checked = 0
    for name in ATTACKS_TRIED:
        ctx = make_context(setting, seed=1, size=0.01)       # 2 fake users
        fake = ATTACKS[name](ATTACKS[name].Options()).generate(ctx)
        e = int(fake.users.max()) + 1
        r = cert.certify(prep, clean.n_users, s, [e], 1, "all")[0]
        bound = cert.target_hr_bound(r, K, top[:, targets], evaluator.eligible)
        assert bound < 0.8, "the certificate must say something for the check to mean anything"
        _, poisoned, _ = fit(cfg, training_data(split, fake), seed=1, s=s, T=T, batch=50)
        measured = evaluator.evaluate(poisoned).metrics[f"target_hr@{K}"]
        assert measured <= bound, (name, measured, bound)
        entry = cert.target_entry_bound(counts, candidates, targets, evaluator.eligible, T, K,
                                        cert.bonferroni_alpha(0.001, *counts.shape),
                                        clean.n_users, s, [e], "all")[0]
        assert measured <= entry <= bound, (name, measured, entry, bound)
        kept = current_top(poisoned, candidates, K, split.n_users)
        certified = r == K
        assert certified.sum() > 20
        assert (kept[certified] == top[certified]).all(), name
        checked += 1
    assert checked == len(ATTACKS_TRIED)


def test_certificate_columns_on_a_cell(toy):
    cfg, split, targets = toy
    evaluator = Evaluator(split, targets, 5)
    _, model, _ = fit(cfg, training_data(split), s=20, T=200, batch=50)
    run_cfg = config_from_dict({"attack": {"size": [0.01, 0.05]}})
    row = certificate_columns(model, split, evaluator, grid_fake_counts(run_cfg, 200, 0))
    e_values = sorted({0, 1, 2, 5, 10, 20, 2, 10})       # n_fake: 1 % and 5 % of 200 users
    for e in e_values:
        for what in ("precision", "recall", "target_hr", "target_entry"):
            assert 0.0 <= row[f"pore_cert_{what}@5_e{e}"] <= 1.0
    precision = [row[f"pore_cert_precision@5_e{e}"] for e in e_values]
    assert precision == sorted(precision, reverse=True)
    assert row["pore_cert_max_e@5"] >= -1
    # an attacked cell certifies its own number of fake users
    assert "pore_cert_precision@5_e7" in certificate_columns(model, split, evaluator,
                                                              grid_fake_counts(run_cfg, 200, 7))


def test_certificate_reference_set_is_the_ratio_splits_held_out_set():
    """Under split.mode ratio there is no leave-one-out item (test_items all −1): the
    certificate's test reference set is each real user's held-out set (PORE's own setting),
    fake users' rows left out."""
    from data.ratings import RatingScale
    from data.split import RatioSplit

    none = np.zeros(0, dtype=np.int64)
    test = Interactions(np.array([0, 0, 2, 3]), np.array([1, 4, 2, 0]), np.ones(4))
    train = Interactions(np.array([0, 1, 2]), np.array([0, 3, 1]), np.ones(3))
    split = RatioSplit(train, Interactions(none, none, np.zeros(0)), np.full(3, -1),
                       np.zeros(3, np.float32), 3, 5, RatingScale(1.0, 1), "implicit", test=test)
    model = PoreModel(np.ones((3, 5), np.int32), 10, 2, 1, "all", 0.001, [])
    _, candidates, reference, _ = certificate_inputs(model, split, 2)
    assert reference.toarray().astype(int).tolist() == [[0, 1, 0, 0, 1], [0] * 5,
                                                        [0, 0, 1, 0, 0]]
    assert not candidates[0, 0] and candidates[0, 1]   # the training item is no candidate
