"""Every method config field declares its valid range: the defaults, paper recipes and search spaces lie
inside them, and a value outside is one line naming the field, the value and the range, before anything
runs or is recorded."""

from __future__ import annotations

import importlib
from pathlib import Path

import mlflow
import optuna
import pytest

from bnnbench import config
from bnnbench.cli import main
from bnnbench.config import MODES, PaperRecipe, RunConfig, apply_overrides, resolve, validate
from bnnbench.errors import BadInput
from bnnbench.registry import METHODS

SEARCH_TRIALS = 20


def search_space(method: str):
    return importlib.import_module(f"bnnbench.methods.{method}").search_space


def search_distributions(method: str) -> dict[str, optuna.distributions.BaseDistribution]:
    """The parameter names and bounds the method's search space asks the sampler for."""
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    search_space(method)(trial)
    return trial.distributions


def corner(distributions: dict, end: int) -> dict:
    """Every parameter at its lower (end=0) or upper (end=-1) bound, categorical ones at a first/last choice."""
    return {name: d.choices[end] if isinstance(d, optuna.distributions.CategoricalDistribution)
            else (d.low, d.high)[end] for name, d in distributions.items()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS.names())
def test_defaults_and_paper_recipe_lie_in_their_ranges(method, mode):
    cls = METHODS.get(method)
    validate(cls.default_config(mode), f"{mode}-mode defaults of {method}")
    validate(apply_overrides(cls.Config(), cls.paper_config))  # converted and range-checked like a --set
    validate(apply_overrides(PaperRecipe(), cls.paper_recipe))
    resolved = resolve(RunConfig(method=method, dataset="fake", mode=mode))
    assert resolved.method_config == cls.default_config(mode)


@pytest.mark.parametrize("method", METHODS.names())
def test_every_search_space_value_lies_in_its_range(method):
    """Both ends of every suggested range and a random sample in between, applied in both modes as the
    tuner applies a trial's values."""
    cls = METHODS.get(method)
    space = search_space(method)
    distributions = search_distributions(method)
    assert distributions
    trials = [optuna.trial.FixedTrial(corner(distributions, 0)), optuna.trial.FixedTrial(corner(distributions, -1))]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trials += [study.ask() for _ in range(SEARCH_TRIALS)]
    for trial in trials:
        overrides = space(trial)
        for mode in MODES:
            try:
                validate(apply_overrides(cls.default_config(mode), overrides))
                resolve(RunConfig(method=method, dataset="fake", mode=mode, method_overrides=overrides))
            except BadInput as error:
                pytest.fail(f"{method} search space proposes {overrides} ({mode} mode): {error}")


# (method, --set values, what the one-line error must name: the field, the value, the valid range)
BAD = [
    ("ste", ["lr=0"], ("'lr'", "'0'", "(0, inf)")),
    ("fp", ["lr=-1"], ("'lr'", "'-1'", "(0, inf)")),
    ("bnn", ["optimizer=sgd", "momentum=7"], ("'momentum'", "'7'", "[0, 1)")),
    ("ste", ["early_stopping_patience_epochs=-3"], ("'early_stopping_patience_epochs'", "'-3'", "[0, inf)")),
    ("dra", ["plateau_patience_epochs=-1"], ("'plateau_patience_epochs'", "'-1'", "[0, inf)")),
    ("dra", ["scheduler=plateau", "plateau_factor=1"], ("'plateau_factor'", "'1'", "(0, 1)")),
    ("xnor", ["lr_min=-1e-4"], ("'lr_min'", "'-1e-4'", "[0, inf)")),
    # one per method, on its own fields (for those without any: the weight decay it re-declares)
    ("adaste", ["alpha=1"], ("'alpha'", "'1'", "(0, 1)")),
    ("adaste", ["anneal_fraction=0"], ("'anneal_fraction'", "'0'", "(0, 1]")),
    ("adaste", ["mu_start=0"], ("'mu_start'", "'0'", "(0, inf)")),
    ("bmd", ["beta_growth=0.9"], ("'beta_growth'", "'0.9'", "[1, inf)")),
    ("bmd", ["beta_period_steps=-200"], ("'beta_period_steps'", "'-200'", "[0, inf)")),
    ("bmd", ["beta_start=-1"], ("'beta_start'", "'-1'", "(0, inf)")),
    ("bnew", ["lambda_max=-0.001"], ("'lambda_max'", "'-0.001'", "[0, inf)")),
    ("bnew", ["phase1_epochs=-1"], ("'phase1_epochs'", "'-1'", "[0, inf)")),
    ("bnew", ["freeze_epoch=-2"], ("'freeze_epoch'", "'-2'", "[0, inf)")),
    ("bnn", ["weight_decay=-1e-5"], ("'weight_decay'", "'-1e-5'", "[0, inf)")),
    ("bnn_plus", ["beta=0"], ("'beta'", "'0'", "(0, inf)")),
    ("bnnpp", ["mu_end=-5"], ("'mu_end'", "'-5'", "(0, inf)")),
    ("bnnpp", ["mu_start=2000"], ("mu_start=2000.0", "mu_end=1000.0", "need mu_start <= mu_end")),
    ("bop", ["gamma=0"], ("'gamma'", "'0'", "(0, 1]")),
    ("bop", ["gamma=1.5"], ("'gamma'", "'1.5'", "(0, 1]")),
    ("bop", ["tau=-1e-8"], ("'tau'", "'-1e-8'", "[0, inf)")),
    ("bop", ["gamma_decay=2"], ("'gamma_decay'", "'2'", "(0, 1]")),
    ("bop", ["gamma_decay_epochs=0"], ("'gamma_decay_epochs'", "'0'", "[1, inf)")),
    ("dra", ["alpha_clamp=2.0,0.1"], ("'alpha_clamp'", "2.0,0.1", "needs low < high")),
    ("dra", ["alpha_clamp=0,2"], ("'alpha_clamp'", "'0'", "(0, inf)")),
    ("dra", ["alpha_lr=0"], ("'alpha_lr'", "'0'", "(0, inf)")),
    ("dra", ["alpha_init=-0.5"], ("'alpha_init'", "'-0.5'", "(0, inf)")),
    ("fp", ["weight_decay=-1e-4"], ("'weight_decay'", "'-1e-4'", "[0, inf)")),
    ("pc", ["alpha=1.5"], ("'alpha'", "'1.5'", "(0, 1)")),
    ("pc", ["mu_start=20"], ("mu_start=20.0", "mu_end=10.0", "need mu_start <= mu_end")),
    ("ste", ["weight_decay=-1"], ("'weight_decay'", "'-1'", "[0, inf)")),
    ("xnor", ["weight_decay=-1e-5"], ("'weight_decay'", "'-1e-5'", "[0, inf)")),
    ("fda", ["omega=4"], ("'omega'", "'4'", "(0, 3.14159)")),
    ("bireal", ["label_smoothing=1"], ("'label_smoothing'", "'1'", "[0, 1)")),
    ("dorefa", ["weight_scale=row"], ("'weight_scale'", "'row'", "layer, channel")),
    ("xnorpp", ["weight_decay=-1"], ("'weight_decay'", "'-1'", "[0, inf)")),
    ("irnet", ["t_min=0"], ("'t_min'", "'0'", "(0, inf)")),
    ("recu", ["tau_min=0.5"], ("'tau_min'", "'0.5'", "(0.5, 1)")),
    ("reactnet", ["phase2_weight_decay=-1"], ("'phase2_weight_decay'", "'-1'", "[0, inf)")),
]
BAD_IDS = [f"{method}-{'-'.join(sets)}" for method, sets, _ in BAD]


def test_every_method_has_a_bad_value_case():
    assert {method for method, _, _ in BAD} == set(METHODS.names())


@pytest.mark.parametrize(("method", "sets", "named"), BAD, ids=BAD_IDS)
def test_out_of_range_value_is_rejected_by_resolve(method, sets, named):
    overrides = config.parse_assignments(sets)
    with pytest.raises(BadInput) as error:
        resolve(RunConfig(method=method, dataset="fake", method_overrides=overrides))
    message = str(error.value)
    assert "\n" not in message
    for part in named:
        assert part in message, (part, message)


def recorded_runs(uri: str, db: Path) -> list:
    """The store's runs; a store that was never created holds none (and is not created to look)."""
    if not db.exists():
        return []
    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(("method", "sets", "named"), BAD, ids=BAD_IDS)
def test_out_of_range_value_is_one_line_from_the_cli_and_nothing_runs(method, sets, named, tmp_path, capsys):
    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    code = main(["run", "--method", method, "--dataset", "fake", "--set", *sets, "--tracking-uri", uri])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    for part in named:
        assert part in lines[0], (part, lines[0])
    assert recorded_runs(uri, db) == []
