"""Cost counting: hand-derived figures, a cross-check with PyTorch's own counter, and the gaps that must fail.

Hand derivations (MACs per image, bias not counted):
- CIFAR ResNet-18 at 32 px: stem 3·64·9·32² = 1,769,472; body (3×3 convs and the three 1×1
  shortcuts) 553,648,128; classifier 512·10 = 5,120; total 555,422,720.
- DRA's network at 224 px is the same body at (224/32)² = 49× the positions: 27,128,758,272, plus the
  binary classifier 512·12 = 6,144 gives the 27,128,764,416 binary-weight MACs; the FP stem is
  3·64·9·224² = 86,704,128. thop: BN (4) and PReLU (1) on 30,105,600 elements = 150,528,000, the
  average pool 512·(28²+1) = 401,920, plus the stem: 237,634,048.
"""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bnnbench import archs, cost
from bnnbench.cli import main
from bnnbench.config import RunConfig
from bnnbench.layers import binarize
from bnnbench.quantizers import get_quantizer
from bnnbench.runner import build_method, resolve, run

RESNET18_BODY_MACS = 553_648_128
RESNET18_STEM_MACS = 3 * 64 * 9 * 32 * 32


def w1a1_resnet18() -> nn.Module:
    model = archs.build("resnet18", 10, 3, 32)
    return binarize(model, lambda layer: get_quantizer("ste"), lambda layer: get_quantizer("bnn"),
                    skip=model.full_precision_layers)


def method_model(method: str, dataset: str, mode: str = "fair", **kwargs):
    resolved = resolve(RunConfig(method=method, dataset=dataset, mode=mode, **kwargs))
    size = (resolved.dataset_cls.in_channels, resolved.image_size, resolved.image_size)
    return build_method(resolved).model, size


def test_full_precision_cifar_resnet18_is_555_million_macs():
    model = archs.build("resnet18", 10, 3, 32)
    c = cost.count(model, (3, 32, 32))
    assert c.fp_macs == 555_422_720 == RESNET18_STEM_MACS + RESNET18_BODY_MACS + 512 * 10
    assert (c.bwn_macs, c.bops, c.params_binary) == (0, 0, 0)
    assert c.ops == c.fp_macs
    assert c.params_real == sum(p.numel() for p in model.parameters())
    assert c.size_kib == c.params_real * 4 / 1024


def test_dra_paper_network_reproduces_the_papers_thop_figure():
    model, size = method_model("dra", "garbage", mode="paper")
    assert size == (3, 224, 224)
    c = cost.count(model, size)
    assert c.fp_macs == 86_704_128
    assert c.bwn_macs == 27_128_764_416 == RESNET18_BODY_MACS * 49 + 512 * 12
    assert c.bops == 0
    assert c.thop_legacy == 237_634_048
    assert c.ops == c.fp_macs + c.bwn_macs  # BWN MACs at full cost: 27.2 G OPs, not 237.63 M
    assert {layer.kind for layer in c.layers if layer.name != "stem.0"} == {"bwn"}
    # α (one per binary layer) and nothing else of a binary layer counts as a real parameter
    fc = next(layer for layer in c.layers if layer.name == "fc")
    assert (fc.params_binary, fc.params_real) == (512 * 12, 1)
    binary_layers = [layer for layer in c.layers if layer.kind != "fp"]
    assert c.params_binary == sum(layer.params_binary for layer in binary_layers) == 11_163_648
    assert c.params_binary + c.params_real == sum(p.numel() for p in model.parameters())
    assert c.size_kib == (c.params_binary + 32 * c.params_real) / 8 / 1024


def test_dra_with_binary_activations_moves_the_body_to_bops():
    overrides = {"binarize_activations": "true"}
    model, size = method_model("dra", "garbage", mode="paper", method_overrides=overrides)
    c = cost.count(model, size)
    assert (c.fp_macs, c.bwn_macs, c.bops) == (86_704_128, 0, 27_128_764_416)
    assert c.ops == 86_704_128 + 27_128_764_416 / 64


def test_w1a1_resnet18_puts_the_whole_body_under_bops():
    c = cost.count(w1a1_resnet18(), (3, 32, 32))
    assert c.bops == RESNET18_BODY_MACS  # all 3×3 convs and the three 1×1 shortcuts are W1A1
    assert c.fp_macs == RESNET18_STEM_MACS + 512 * 10
    assert c.bwn_macs == 0
    assert c.ops == c.fp_macs + RESNET18_BODY_MACS / 64
    kinds = {layer.name: layer.kind for layer in c.layers}
    assert kinds.pop("stem.0") == kinds.pop("fc") == "fp"
    assert set(kinds.values()) == {"binary"} and "layers.2.shortcut.0" in kinds


@pytest.mark.parametrize("build", [
    lambda: (archs.build("tiny", 10, 1, 8), (1, 8, 8)),
    lambda: (archs.build("resnet20", 10, 3, 32), (3, 32, 32)),
    lambda: (w1a1_resnet18(), (3, 32, 32)),
    lambda: method_model("ste", "cifar10", arch="resnet20"),
    lambda: method_model("dra", "garbage", mode="paper", image_size=32),
], ids=["tiny-fp", "resnet20-fp", "resnet18-w1a1", "resnet20-ste", "dra-paper-32px"])
def test_conv_and_linear_macs_agree_with_torch_flop_counter(build):
    model, size = build()
    c = cost.count(model, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *size))
    assert c.fp_macs + c.bwn_macs + c.bops == counter.get_total_flops() // 2  # FLOPs = 2 × MACs


class Gain(nn.Module):
    """A learnable scalar: a parameterised layer the counter has no hook for."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.gain


def test_a_parameterised_layer_without_a_hook_fails_and_names_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Gain()), nn.Flatten(),
                          nn.Linear(144, 2))
    with pytest.raises(cost.UncountedLayerError, match=r"'1\.1' \(Gain\).*gain"):
        cost.count(model, (3, 8, 8))
    with pytest.raises(cost.UncountedLayerError, match=r"'0' \(Conv1d\)"):
        cost.count(nn.Sequential(nn.Conv1d(3, 4, 3)), (3, 8))


def test_a_conv_that_never_runs_fails_instead_of_counting_zero():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(cost.UncountedLayerError, match="'spare'.*did not run"):
        cost.count(Unused(), (1, 8, 8))


def test_a_forward_that_needs_values_is_counted_on_the_cpu_and_the_model_is_left_alone():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x) * (1.0 if x.abs().max().item() >= 0 else 2.0)  # .item() fails on meta

    model = DataDependent().train()
    c = cost.count(model, (1, 4, 4))
    assert c.fp_macs == 2 * 9 * 16
    assert model.training and not hasattr(model, "compute_average_flops_cost")


def test_a_forward_that_fails_everywhere_raises_forward_error():
    with pytest.raises(cost.ForwardError, match="1x1x1"):
        cost.count(archs.build("tiny", 10, 1, 8), (1, 1, 1))


def test_cli_cost_json_prints_exactly_the_totals(capsys):
    assert main(["cost", "--method", "dra", "--dataset", "garbage", "--mode", "paper", "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert tuple(totals) == cost.KEYS
    assert (totals["fp_macs"], totals["bwn_macs"], totals["bops"], totals["thop_legacy"]) == (
        86_704_128, 27_128_764_416, 0, 237_634_048)


def test_cli_cost_prints_a_per_layer_table(capsys):
    assert main(["cost", "--method", "ste", "--dataset", "cifar10", "--arch", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "stem.0" in out and "layers.2.shortcut.0" in out and "bwn" in out
    assert f"{RESNET18_BODY_MACS:,}" in out  # bwn_macs total


def test_cli_cost_bad_image_size_is_one_line_and_exit_2(capsys):
    assert main(["cost", "--method", "fp", "--dataset", "digits", "--image-size", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 px" in err


def test_every_run_records_its_costs(tracking_uri, tmp_path):
    result = run(RunConfig(method="ste", dataset="fake", epochs=1, tracking_uri=tracking_uri,
                           progress="none"))
    # fake data: tiny at 3×8×8, 4 classes; ste binarizes the two inner convs (BWN)
    expected = {"cost/fp_macs": 3 * 32 * 9 * 64 + 64 * 4,
                "cost/bwn_macs": 32 * 64 * 9 * 64 + 64 * 64 * 9 * 16, "cost/bops": 0}
    client = mlflow.MlflowClient(tracking_uri)
    recorded = client.get_run(result.run_id).data.metrics
    assert {f"cost/{key}" for key in cost.KEYS} <= set(recorded)
    for key, value in expected.items():
        assert recorded[key] == result.metrics[key] == value
    assert recorded["cost/ops"] == expected["cost/fp_macs"] + expected["cost/bwn_macs"]
    table = client.download_artifacts(result.run_id, "cost_layers.csv", str(tmp_path))
    rows = open(table).read().splitlines()
    assert rows[0] == "layer,kind,shape,macs,params_binary,params_real"
    assert [row.split(",")[:2] for row in rows[1:]] == [["features.0", "fp"], ["features.3", "bwn"],
                                                         ["features.7", "bwn"], ["fc", "fp"]]
