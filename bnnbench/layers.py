"""Binary layers and `binarize`, which turns a full-precision backbone into a binary one.

A binary layer is the ordinary `nn.Conv2d` / `nn.Linear` (so optimizers, initialisation and
checkpoints treat the latent weight as usual) plus two quantizer modules: one for the weight and
optionally one for the input. The quantizers carry the method (see `quantizers.py`); the layers are
the same for every method, so no method copies a layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

# called with the full-precision layer it will quantize (so per-channel parameters get the layer's size);
# None: the weight factory keeps that layer full precision, the input factory keeps its input real
QuantizerFactory = Callable[[nn.Module], nn.Module | None]


class BinaryLayer:
    """Mixin: `weight_quantizer(weight)` is the effective weight; `input_quantizer` (if any) maps inputs."""

    weight_quantizer: nn.Module
    input_quantizer: nn.Module | None

    def _init_quantizers(self, weight_quantizer: nn.Module, input_quantizer: nn.Module | None) -> None:
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    @property
    def binary_input(self) -> bool:
        return self.input_quantizer is not None

    def effective_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.weight)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    @classmethod
    def from_float(cls, layer, weight_quantizer: nn.Module, input_quantizer: nn.Module | None = None):
        """A binary copy of `layer` sharing its hyperparameters, with its latent weights copied."""
        binary = cls.__new__(cls)
        nn.Module.__init__(binary)
        binary.__dict__.update({k: v for k, v in layer.__dict__.items()
                                if k not in ("_parameters", "_buffers", "_modules")})
        binary._parameters = dict(layer._parameters)
        binary._buffers = dict(layer._buffers)
        binary._modules = dict(layer._modules)
        binary._init_quantizers(weight_quantizer, input_quantizer)
        return binary


class BinaryConv2d(BinaryLayer, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantize_input(x), self.effective_weight(), self.bias)


class BinaryLinear(BinaryLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.effective_weight(), self.bias)


def binarize(model: nn.Module, weight_quantizer: QuantizerFactory, input_quantizer: QuantizerFactory | None = None,
             skip: Iterable[str] = ()) -> nn.Module:
    """Replace every `nn.Conv2d` and `nn.Linear` of `model` (in place) by its binary version.

    Each factory is called once per layer with that layer (the full-precision `nn.Conv2d` or `nn.Linear`),
    so a quantizer with parameters gets its own, sized to the layer (DRA's α, ReCU's α per output
    channel). A layer whose weight factory returns None stays full precision, as do the layers named in
    `skip` (module paths such as "stem.0" or "fc"); an input factory returning None leaves the input real.
    """
    skip = set(skip)
    missing = skip - {name for name, _ in model.named_modules()}
    if missing:
        raise ValueError(f"binarize: no module named {sorted(missing)} in the model")
    for name, module in list(model.named_modules()):
        if name in skip or isinstance(module, BinaryLayer):
            continue
        kind = BinaryConv2d if type(module) is nn.Conv2d else BinaryLinear if type(module) is nn.Linear else None
        if kind is None:
            continue
        weight = weight_quantizer(module)
        if weight is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, kind.from_float(module, weight, input_quantizer(module) if input_quantizer else None))
    return model


def binary_layers(model: nn.Module) -> list[tuple[str, BinaryLayer]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BinaryLayer)]
