"""Knowledge cost (issue 19): what the heuristic attacks take from the attacker's view, the
``fillers`` option (``all`` items vs the items rated in the view) and Average's ``unseen``
option (items unrated in the view: the view's global statistics vs the top rating)."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import ATTACKS
from attacks.base import HeuristicOptions
from attacks.threat import ThreatContext
from data.ratings import Interactions, RatingScale
from utils.config import ConfigError
from experiment.validation import config_from_dict
from experiment.planning import non_default

N_ITEMS, SEEN, TARGETS = 80, 20, np.array([70, 75])
HEURISTIC = ["random", "average", "bandwagon", "segment"]


def view_context(feedback: str = "explicit", seed: int = 0) -> ThreatContext:
    """Six visible users who rate items 0..19 only; item j always gets the rating
    (j % 5 + 1) / 5, so its view mean is that value and its view std is 0."""
    users = np.repeat(np.arange(6), SEEN)
    items = np.tile(np.arange(SEEN), 6)
    ratings = (items % 5 + 1) / 5.0
    if feedback == "implicit":
        ratings = np.ones(len(items))
    view = Interactions(users, items, ratings)
    return ThreatContext(view=view, visible_users=np.arange(6), n_users=30, n_items=N_ITEMS,
                         scale=RatingScale(5.0, 5), targets=TARGETS, n_fake=12, filler_size=10,
                         feedback=feedback, seed=seed)


def fillers_of(fake: Interactions, fixed: np.ndarray) -> np.ndarray:
    return fake.items[~np.isin(fake.items, fixed)]


def generate(name: str, ctx: ThreatContext, **options) -> Interactions:
    cls = ATTACKS[name]
    return cls(cls.parse_options(options, f"attack.options.{name}")).generate(ctx)


@pytest.mark.parametrize("feedback", ["explicit", "implicit"])
@pytest.mark.parametrize("name", HEURISTIC)
def test_view_fillers_come_only_from_items_rated_in_the_view(name, feedback):
    ctx = view_context(feedback)
    fake = generate(name, ctx, fillers="view")
    assert np.all(np.isin(TARGETS, fake.items))
    fillers = fillers_of(fake, TARGETS)
    assert len(fillers) > 0 and fillers.max() < SEEN
    # Every fake user still rates the targets and filler_size fillers (fewer only when the
    # view holds fewer items).
    assert np.all(np.bincount(fake.users) >= len(TARGETS) + min(ctx.filler_size, 1))


@pytest.mark.parametrize("name", HEURISTIC)
def test_default_fillers_range_over_every_item(name):
    fake = generate(name, view_context())
    fillers = fillers_of(fake, TARGETS)
    # 12 fake users × 10 fillers uniform over ~78 items: most land outside the 20 seen ones.
    assert (fillers >= SEEN).mean() > 0.5
    assert np.array_equal(np.unique(fake.items), np.unique(np.concatenate(
        [TARGETS, np.unique(fillers)])))


def test_average_filler_ratings_are_the_views_item_statistics():
    ctx = view_context()
    fake = generate("average", ctx, fillers="view")
    rows = ~np.isin(fake.items, TARGETS)
    # View std is 0 for every seen item, so each filler gets exactly its view mean.
    assert np.allclose(fake.ratings[rows], (fake.items[rows] % 5 + 1) / 5.0)
    # Unseen items (fillers: all) fall back to the view's global mean and std instead.
    fake_all = generate("average", ctx)
    unseen = ~np.isin(fake_all.items, TARGETS) & (fake_all.items >= SEEN)
    assert unseen.any()
    assert not np.allclose(fake_all.ratings[unseen], fake_all.ratings[unseen][0])


def test_view_fillers_cap_the_filler_size_at_the_views_items():
    ctx = view_context()
    ctx.filler_size = 50
    fake = generate("random", ctx, fillers="view")
    assert np.all(np.bincount(fake.users) == len(TARGETS) + SEEN)


def test_fillers_option_is_validated():
    for name in HEURISTIC:
        cls = ATTACKS[name]
        with pytest.raises(ConfigError, match="fillers: 'items' is unknown; use one of all, view"):
            cls.parse_options({"fillers": "items"}, f"attack.options.{name}")
        with pytest.raises(ConfigError, match="unknown key"):
            cls.parse_options({"filler": "view"}, f"attack.options.{name}")
    # bandwagon and segment keep their own option beside it
    opts = ATTACKS["bandwagon"].parse_options({"fillers": "view", "n_selected": 2})
    assert (opts.fillers, opts.n_selected) == ("view", 2)


def test_config_rejects_a_bad_fillers_value_before_any_work():
    tree = {"dataset": {"name": "synthetic"}, "attack": {"name": "average",
                                                         "options": {"average": {"fillers": "x"}}}}
    with pytest.raises(ConfigError, match="attack.options.average.fillers"):
        config_from_dict(tree)
    cfg = config_from_dict({"dataset": {"name": "synthetic"},
                            "attack": {"name": "average",
                                       "options": {"average": {"fillers": "view"}}}})
    assert cfg.attack.options["average"]["fillers"] == "view"


def test_default_fillers_keep_earlier_cell_keys():
    # Only options that differ from their defaults enter a cell's key.
    assert non_default(HeuristicOptions()) == {}
    assert non_default(HeuristicOptions(fillers="view")) == {"fillers": "view"}


def test_fillers_option_is_swept_as_a_grid_coordinate():
    from experiment.planning import plan_cells
    cfg = config_from_dict({"dataset": {"name": "synthetic"}, "repeats": 1,
                            "attack": {"name": "average", "knowledge_cost": 0.2,
                                       "options": {"average": {"fillers": ["all", "view"]}}}})
    params = {c.attack_params for c in plan_cells(cfg) if c.attack == "average"}
    assert params == {(("fillers", "all"),), (("fillers", "view"),)}


def test_average_unseen_top_rates_items_missing_from_the_view_at_the_top():
    ctx = view_context()
    fake = generate("average", ctx, unseen="top")
    rows = ~np.isin(fake.items, TARGETS)
    unseen = rows & (fake.items >= SEEN)
    seen = rows & (fake.items < SEEN)
    assert unseen.any() and seen.any()
    assert np.all(fake.ratings[unseen] == 1.0)
    # Seen items keep their view statistics (here: their constant view rating).
    assert np.allclose(fake.ratings[seen], (fake.items[seen] % 5 + 1) / 5.0)
    # The default draws unseen items from the view's global N(mean, std) instead: not all top.
    default = generate("average", ctx)
    d_unseen = ~np.isin(default.items, TARGETS) & (default.items >= SEEN)
    assert (default.ratings[d_unseen] < 1.0).mean() > 0.5


def test_average_unseen_changes_nothing_when_the_view_rates_every_filler():
    ctx = view_context()
    a = generate("average", ctx, fillers="view")
    b = generate("average", ctx, fillers="view", unseen="top")
    assert np.array_equal(a.items, b.items) and np.array_equal(a.ratings, b.ratings)


def test_average_unseen_option_is_validated():
    cls = ATTACKS["average"]
    with pytest.raises(ConfigError, match="unseen: 'max' is unknown; use one of global, top"):
        cls.parse_options({"unseen": "max"}, "attack.options.average")
    with pytest.raises(ConfigError, match="unknown key"):
        ATTACKS["random"].parse_options({"unseen": "top"}, "attack.options.random")


def test_a_cost_sweep_shares_its_draws(small_config):
    """Common random numbers across knowledge costs: two costs that give the attacker the same
    view (0.999 and 1.0 of 300 users both round to every user) must give identical fake
    profiles and victims, so a sweep's columns differ only in what the attacker sees."""
    import pandas as pd
    from experiment.pipeline import run_experiment

    cfg = small_config(attack={"name": ["average"], "knowledge_cost": [0.999, 1.0]})
    runs = pd.read_csv(run_experiment(cfg) / "runs.csv")
    attacked = runs[runs.attack == "average"].set_index("knowledge_cost")
    assert len(attacked) == 2
    for metric in ("target_hr@10", "hr@10", "prediction_shift"):
        assert attacked.loc[0.999, metric] == attacked.loc[1.0, metric], metric
