"""Contract tests: every registered method trains end to end in both modes on tiny data.

A new method file gets these for free. Paper mode keeps its own recipe except what would make the
test slow (epochs, image size, architecture are overridden to the tiny ones).
"""

from __future__ import annotations

import math

import mlflow
import pytest
import torch

from bnnbench.config import RunConfig
from bnnbench.registry import METHODS
from bnnbench.runner import build_method, resolve, run


@pytest.mark.parametrize("mode", ["fair", "paper"])
@pytest.mark.parametrize("method", METHODS.names())
def test_method_trains_end_to_end_and_is_recorded(method, mode, tracking_uri):
    cfg = RunConfig(method=method, dataset="fake", arch="tiny", mode=mode, epochs=2, batch_size=16, image_size=8,
                    tracking_uri=tracking_uri, progress="none")
    result = run(cfg)
    for key in ("train/loss", "val/acc", "val/acc_best", "test/acc"):
        assert math.isfinite(result.metrics[key]), key
    client = mlflow.MlflowClient(tracking_uri)
    recorded = client.get_run(result.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["method"] == method and recorded.data.params["mode"] == mode
    assert recorded.data.metrics["test/acc"] == pytest.approx(result.metrics["test/acc"])


@pytest.mark.parametrize("method", METHODS.names())
def test_evaluation_uses_hard_binary_weights(method):
    """In eval mode every binary layer's effective weight takes at most two values per output channel
    (±1, or ±α), whatever the method trains on."""
    resolved = resolve(RunConfig(method=method, dataset="fake", arch="tiny", image_size=8))
    model = build_method(resolved).eval()
    assert bool(model.binary_layers()) == (method != "fp")  # every method but the reference binarizes
    for name, layer in model.binary_layers():
        with torch.no_grad():
            w = layer.effective_weight()
        per_channel = w.flatten(1).abs()
        assert torch.allclose(per_channel, per_channel[:, :1].expand_as(per_channel)), name
        assert (w != 0).all(), name


@pytest.mark.parametrize("method", METHODS.names())
def test_method_module_is_documented_and_its_search_space_fits_its_config(method):
    """`bnnbench tune` would fail on a search space that names a field the config lacks or gives a value
    of the wrong type; this draws one trial and applies it the way the tuner does."""
    import importlib

    import optuna

    from bnnbench.config import apply_overrides

    module = importlib.import_module(f"bnnbench.methods.{method}")
    assert module.__doc__ and len(module.__doc__.strip().splitlines()) >= 3
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    overrides = module.search_space(trial)
    assert overrides and "lr" in overrides  # every method tunes its learning rate
    config = apply_overrides(METHODS.get(method).default_config(), overrides)
    assert config.lr == overrides["lr"]
