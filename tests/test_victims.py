"""Victims × defenses × attacks (issue 30): LightGCN's paper defaults in the resolved config,
the defenses' declared capabilities as one-line config errors, every attack against a LightGCN
victim, and the ``surrogate`` option of the model-training attacks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

import main
from attacks import ATTACKS
from attacks.surrogate import surrogate_config
from attacks.threat import ThreatContext
from data.split import split_by_ratio
from defenses import DEFENSES
from experiment.planning import model_config
from experiment.validation import config_from_dict
from utils.config import ConfigError, ModelConfig, dump_yaml
from test_lightgcn import community_data, target_hr_clean_and_attacked

IMPLICIT = {"name": "synthetic", "feedback": "implicit"}


# ----------------------------------------------------------------------------- paper defaults
def test_lightgcn_takes_its_paper_defaults_and_mf_keeps_the_package_ones():
    cfg = config_from_dict({"dataset": IMPLICIT, "model": {"name": ["mf", "lightgcn"]}})
    lg, mf = model_config(cfg, "lightgcn"), model_config(cfg, "mf")
    assert (lg.dim, lg.lr, lg.reg, lg.layers) == (64, 1e-3, 1e-4, 3)
    package = ModelConfig()
    assert (mf.dim, mf.lr, mf.reg) == (package.dim, package.lr, package.reg)
    # MF's resolved section is the section itself: its cells keep their keys.
    assert mf == dataclasses.replace(cfg.model, name="mf", defaults={})
    # The stored config records the values LightGCN used, and reads back the same.
    tree = yaml.safe_load(dump_yaml(cfg))
    assert tree["model"]["defaults"]["lightgcn"] == {"dim": 64, "lr": 0.001, "reg": 0.0001}
    assert model_config(config_from_dict(tree), "lightgcn") == lg


def test_a_value_the_user_sets_wins():
    cfg = config_from_dict({"dataset": IMPLICIT, "model": {"name": "lightgcn", "dim": 32,
                                                           "reg": 0.01}})
    lg = model_config(cfg, "lightgcn")
    assert (lg.dim, lg.lr, lg.reg) == (32, 1e-3, 0.01)
    # LightGCN alone at a package value: model.defaults.<model>.
    cfg = config_from_dict({"dataset": IMPLICIT, "model": {
        "name": ["mf", "lightgcn"], "defaults": {"lightgcn": {"dim": 128}}}})
    assert model_config(cfg, "lightgcn").dim == 128 and model_config(cfg, "lightgcn").reg == 1e-4
    with pytest.raises(ConfigError, match="model.defaults: unknown name 'lgcn'"):
        config_from_dict({"model": {"defaults": {"lgcn": {"dim": 8}}}})
    with pytest.raises(ConfigError, match="model.defaults.lightgcn.dim"):
        config_from_dict({"model": {"defaults": {"lightgcn": {"dim": "big"}}}})


# ----------------------------------------------------------------------------- defenses
@pytest.mark.parametrize("model, loss, defense, message", [
    ("lightgcn", "auto", "share", "defense 'share' cannot train lightgcn with loss bpr on "
     "implicit feedback: its part (a) row elimination"),
    ("lightgcn", "auto", "share_prior", "part (a) row elimination and (d) item prior"),
    ("mf", "bpr", "share_no_elim", "its adversarial step (b) and reward (c) are pointwise"),
    ("mf", "auto", "share", "it trains mf on explicit feedback"),
    ("lightgcn", "auto", "tcd", "defense 'tcd' cannot train lightgcn (which trains on implicit "
     "feedback only): its pseudo-labels are ratings projected onto the rating grid"),
])
def test_unsupported_defense_and_victim_is_one_line_and_exit_2(tmp_path, capsys, model, loss,
                                                               defense, message):
    code = main.main([f"results_dir={tmp_path}", "dataset=synthetic", "dataset.feedback=implicit",
                      f"model={model}", f"model.loss={loss}", f"defense={defense}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())   # before any work


def test_defenses_that_train_lightgcn_and_mf_bpr_pass_the_check():
    ok = ["none", "at", "rat", "vat", "pamacf", "pca_detect", "degsim", "pore"]
    for model in ({"name": "lightgcn"}, {"name": "mf", "loss": "bpr"}):
        config_from_dict({"dataset": IMPLICIT, "model": model, "defense": {"name": ok}})
    # SHARE's parts (b) and (c) alone train implicit MF and NCF with BCE.
    config_from_dict({"dataset": IMPLICIT, "model": {"name": ["mf", "ncf"]},
                      "defense": {"name": ["share_no_elim"]}})


# ----------------------------------------------------------------------------- attacks
LIGHTGCN = ModelConfig(name="lightgcn", dim=16, epochs=4, batch_size=256, lr=0.01, reg=1e-4)
# Small settings so every model-training attack finishes in a few seconds.
FAST = {"aush": {"epochs": 2}, "pga": {"iterations": 2}, "tna": {"steps": 3, "refine_steps": 1},
        "neural": {"rounds": 1, "epochs": 2, "max_poison_models": 2},
        "coattack": {"rounds": 1, "epochs": 4}, "gcoattack": {"rounds": 1, "epochs": 4,
                                                              "against": "none"},
        "adaptive": {"rounds": 1, "against": "pca_detect"}}


def lightgcn_context(split, targets, n_fake=12, model_cfg=LIGHTGCN, filler=10, seed=3):
    return ThreatContext(view=split.train, visible_users=np.arange(split.n_users),
                         n_users=split.n_users, n_items=split.n_items, scale=split.scale,
                         targets=targets, n_fake=n_fake, filler_size=filler,
                         feedback="implicit", model_cfg=model_cfg, seed=seed,
                         attacks=ATTACKS, defenses=DEFENSES)


@pytest.fixture(scope="module")
def community():
    data = community_data(seed=1, n_items=200, per_user=20, power=1.0)
    split = split_by_ratio(data, np.random.default_rng(1), 0.2, 0.1)
    counts = np.bincount(split.train.items, minlength=data.n_items)
    return data, split, np.argsort(counts, kind="stable")[:3]


@pytest.mark.parametrize("name", sorted(set(ATTACKS) - {"none", "file"}))
def test_every_attack_runs_against_a_lightgcn_victim(community, name):
    _, split, targets = community
    attack = ATTACKS[name]
    fake = attack(attack.parse_options(FAST.get(name))).generate(
        lightgcn_context(split, targets, n_fake=6))
    assert len(fake) and fake.users.max() < 6 and fake.items.max() < split.n_items
    assert np.isin(targets, fake.items).any()


@pytest.mark.parametrize("name", ["pga", "clone"])
def test_attacks_raise_target_hr_on_lightgcn(community, name):
    """PGA (through its MF surrogate: transfer) and clone with 10 % fake users on the three
    least popular items: LightGCN's target HR@50 over real users rises by more than 0.1 over
    the clean model's, same seeds (bandwagon: test_lightgcn.py)."""
    data, split, targets = community
    attack = ATTACKS[name]
    fake = attack(attack.parse_options(FAST.get(name))).generate(
        lightgcn_context(split, targets, n_fake=24, filler=20))
    hr = target_hr_clean_and_attacked(data, split, targets, fake)
    assert hr[1] > hr[0] + 0.1, hr


# ----------------------------------------------------------------------------- surrogate
def test_surrogate_option_picks_the_model_class():
    lg = LIGHTGCN
    assert surrogate_config(lg, "auto").name == "mf"            # MF by default: transfer
    assert surrogate_config(lg, "auto").dim == lg.dim           # the victim's settings
    assert surrogate_config(lg, "victim") is lg                 # LightGCN itself
    mf = dataclasses.replace(lg, name="ncf", loss="bce")
    assert surrogate_config(mf, "auto") is mf and surrogate_config(mf, "mf").loss == "bce"
    for attack in ("pga", "tna"):
        with pytest.raises(ConfigError, match=f"{attack} differentiates through MF's"):
            config_from_dict({"attack": {"name": attack,
                                         "options": {attack: {"surrogate": "victim"}}}})
    with pytest.raises(ConfigError, match="surrogate: 'gcn' is unknown"):
        config_from_dict({"attack": {"name": "coattack",
                                     "options": {"coattack": {"surrogate": "gcn"}}}})


def test_coattack_co_trains_the_victims_lightgcn_on_request(community, monkeypatch):
    """``surrogate: victim`` hands the defense a LightGCN section; ``auto`` an MF one."""
    _, split, targets = community
    seen = []
    original = DEFENSES["none"].__init__

    def spy(self, options, model_cfg, *args, **kwargs):
        seen.append(model_cfg.name)
        original(self, options, model_cfg, *args, **kwargs)

    monkeypatch.setattr(DEFENSES["none"], "__init__", spy)
    for choice in ("auto", "victim"):
        opts = ATTACKS["coattack"].parse_options({**FAST["coattack"], "surrogate": choice})
        fake = ATTACKS["coattack"](opts).generate(lightgcn_context(split, targets, n_fake=6))
        assert len(fake)
    assert seen == ["mf", "lightgcn"]
