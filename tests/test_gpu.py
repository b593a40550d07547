"""On a CUDA device: a run trains there in bf16, is recorded with the device's name, and its costs are the
CPU's (cost counting is device-independent). Skipped without CUDA (`gpu` marker, tests/conftest.py)."""

from __future__ import annotations

import mlflow
import pytest
import torch

from bnnbench.config import RunConfig
from bnnbench.runner import run

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", ["fp", "bnn"])
def test_a_run_on_the_gpu_in_bf16_is_recorded_with_its_device(method, tracking_uri):
    result = run(RunConfig(method=method, dataset="fake", epochs=2, accelerator="gpu", precision="bf16-mixed",
                           tracking_uri=tracking_uri, progress="none"))
    recorded = mlflow.MlflowClient(tracking_uri).get_run(result.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.tags["device"] == torch.cuda.get_device_name()
    assert recorded.data.params["precision"] == "bf16-mixed"
    cpu = run(RunConfig(method=method, dataset="fake", epochs=1, accelerator="cpu", tracking_uri=tracking_uri,
                        progress="none"))
    assert result.metrics["cost/ops"] == cpu.metrics["cost/ops"]
