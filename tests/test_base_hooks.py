"""The hooks `BinaryMethod` gives every method file: quantizer factories that receive their layer, scheduled
quantizer parameters for input quantizers too, the warm-up and step-first LR shapes, registered activations."""

from __future__ import annotations

import math

import pytest
import torch

from bnnbench import archs, cost
from bnnbench.config import MethodConfig, RunConfig
from bnnbench.errors import BadInput
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.runner import build_method, resolve


def make(method: str, epochs: int = 4, **overrides):
    return build_method(resolve(RunConfig(method=method, dataset="fake", arch="tiny", image_size=8, epochs=epochs,
                                          method_overrides=overrides)))


def epoch_rates(method, epochs: int) -> list[float]:
    scheduler = method.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(epochs):
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


class Partial(BinaryMethod):
    """Binarizes only the layers whose input has fewer than 64 channels, with a quantizer sized to the layer."""

    name = "partial"
    seen: list[tuple[str, int, int]]

    def make_weight_quantizer(self, layer):
        self.__dict__.setdefault("seen", []).append(("weight", layer.in_channels, layer.out_channels))
        return get_quantizer("ste") if layer.in_channels < 64 else None

    def make_input_quantizer(self, layer):
        self.__dict__["seen"].append(("input", layer.in_channels, layer.out_channels))
        return get_quantizer("bnn")


def test_quantizer_factories_receive_their_layer_and_none_keeps_it_full_precision():
    method = Partial(MethodConfig(), "tiny", num_classes=10, in_channels=1, image_size=8)
    # tiny: features.0 (1→32, the fp stem), features.3 (32→64), features.7 (64→64), fc (the fp classifier)
    assert method.seen == [("weight", 32, 64), ("input", 32, 64), ("weight", 64, 64)]
    assert [name for name, _ in method.binary_layers()] == ["features.3"]
    assert type(method.model.features[7]) is torch.nn.Conv2d
    recu = make("recu")  # ReCU's α: one per output channel of its own layer, made by the factory
    assert [layer.weight_quantizer.alpha.shape[0] for _, layer in recu.binary_layers()] == [64, 64]


def test_scheduled_parameters_reach_input_quantizers_only_when_asked():
    method = make("irnet")
    method.set_quantizer_param("t", 7.0)
    assert {layer.weight_quantizer.t for _, layer in method.binary_layers()} == {7.0}
    assert 7.0 not in {layer.input_quantizer.t for _, layer in method.binary_layers()}
    method.set_quantizer_param("t", 3.0, inputs=True)
    assert {q.t for _, layer in method.binary_layers() for q in (layer.weight_quantizer, layer.input_quantizer)} \
        == {3.0}


def test_step_first_and_warm_up_shape_the_cosine_and_the_linear_schedule_of_any_method():
    # AdaSTE's released loop: cosine (T_max = E) stepped before each epoch, so epoch e trains at the value of e + 1
    rates = epoch_rates(make("adaste", lr=1e-3, lr_min=0.0, lr_step_first=True), 4)
    assert rates == pytest.approx([1e-3 * (1 + math.cos(math.pi * (e + 1) / 4)) / 2 for e in range(4)], abs=1e-12)
    # a warm-up of 2 on a linear decay: (e+1)/2, then from 1 at epoch 1 down over the remaining 4 positions
    rates = epoch_rates(make("recu", epochs=5, lr=1e-3, scheduler="linear", warmup_epochs=2), 5)
    assert rates == pytest.approx([5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4])
    # without either, the shared schedule is PyTorch's cosine, as before
    assert epoch_rates(make("recu", lr=1e-3), 4) == pytest.approx([1e-3, 8.5355339e-4, 5e-4, 1.4644661e-4])
    with pytest.raises(BadInput, match="lr_step_first=true with scheduler='none'.*set scheduler=cosine or linear"):
        make("adaste", lr_step_first=True, scheduler="none")


def test_rprelu_is_an_activation_every_backbone_builds_and_cost_counts():
    prelu = archs.build("resnet20", 10, 3, 32, "prelu")
    rprelu = archs.build("resnet20", 10, 3, 32, "rprelu")
    channels = [m.weight.numel() for m in rprelu.modules() if isinstance(m, archs.RPReLU)]
    assert len(channels) == sum(isinstance(m, archs.PReLU) for m in prelu.modules()) == 19
    # each RPReLU: a slope and two shifts per channel, where PReLU has one slope per layer
    extra = cost.count(rprelu, (3, 32, 32)).params_real - cost.count(prelu, (3, 32, 32)).params_real
    assert extra == sum(3 * c - 1 for c in channels)
    with pytest.raises(BadInput, match="rprelu"):
        archs.activation_layer("rrelu", 4)
