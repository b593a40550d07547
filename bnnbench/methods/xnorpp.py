"""`xnorpp`: XNOR-Net++ (Bulat & Tzimiropoulos, BMVC 2019, arXiv:1909.13863).

Paper: "XNOR-Net++: Improved Binary Neural Networks" by Adrian Bulat and Georgios Tzimiropoulos, BMVC 2019.

What it computes (fair mode, the paper's formulation). W1A1: a binary conv computes
y = (sign(x) ⊛ sign(θ)) ⊙ Γ. XNOR-Net scales the binary conv by two factors computed analytically, K from
the activations and α_c from the weights; XNOR-Net++ fuses them into one factor Γ learned by
backpropagation with the rest of the network. Of the shapes of Γ the paper studies, the factorised one is
implemented: Γ = α ⊗ β ⊗ γ, Γ_chw = α_c·β_h·γ_w, with α over the C output channels, β over the H output rows
and γ over the W output columns, C + H + W parameters per layer instead of C·H·W (`scale=factorised`);
`scale=channel` is the per-channel Γ = α. A binary linear layer (only `dra_resnet18` binarizes its
classifier) gets Γ = α per output feature. Every factor starts at 1 and is trained by the same Adam.
- forward: w = sign(θ), no analytic scale, and every binary layer's input is sign(x); sign(0) = +1;
- backward: θ receives ℓ'·1[|θ| ≤ 1] and the input ℓ'·1[|x| ≤ 1] (quantizer `bnn` for both), ℓ' being the
  gradient at sign(x) ⊛ sign(θ) times Γ; the factors receive their exact derivatives (autograd of the
  product): ∂L/∂α_c = Σ_n,h,w ℓ'_nchw·y_nchw·β_h·γ_w, ∂L/∂β_h = Σ_n,c,w ℓ'·y·α_c·γ_w,
  ∂L/∂γ_w = Σ_n,c,h ℓ'·y·α_c·β_h, with y the binary conv's output before Γ and ℓ' the gradient after it;
- block order BN → hardtanh → sign (`activation=hardtanh`, as BiBench; `identity` gives the same forward).
On the shared backbones, as on BiBench's, a BatchNorm follows every binary conv. In training it
normalises each channel, so α is absorbed (BN(α_c·y) = sign(α_c)·BN(y)) and its gradient is zero up to
rounding; β ⊗ γ varies within a channel and is what Γ adds there. (With `scale=channel` Γ changes
nothing a training-mode BatchNorm passes on; it is kept as the simplest shape of Γ.)

Where Γ lives. Γ's shape depends on the layer's output size, known only after a forward. `build_model`
therefore binarizes the backbone as every method does, runs one forward of a throwaway copy on the `meta`
device (shapes only; on the CPU if the forward needs values) at the run's image size, and then replaces
each binary layer in place by a `ScaledBinary` holding it (child `layer`, unchanged) and its `OutputScale`
Γ (child `scale`). So Γ's parameters exist before `configure_optimizers` runs, are in every checkpoint
and resume, and evaluation still uses hard weights sign(θ): Γ multiplies the output, not the weight.
A binary layer's module path gains `.layer` (e.g. `features.3.layer`). An input of another spatial size is
refused with a clear error: Γ has one β per output row and one γ per output column.

Cost and export. `OutputScale` is registered as the quantizer `xnorpp_scale` for one reason:
`bnnbench.cost` counts the parameters of registered quantizers as real (32-bit) parameters costing no
MACs, and refuses any other unknown module that owns parameters. So each binary conv adds C + H + W real
parameters (they appear in the totals, not in the conv's own row of the per-layer table) and no MACs (the
multiply by Γ, an elementwise product like BatchNorm's, is not counted). `bnnbench export` replaces the
binary layer inside `ScaledBinary` by its inference form and keeps Γ, whose values it stores as real
parameters.

Released code: the paper has none. BiBench (htqin/BiBench; Qin et al., "BiBench: Benchmarking and
Analyzing Network Binarization", ICML 2023, arXiv:2301.11233) implements it in
`bibench/models/layers/xnorplusplus.py`: `XNORPlusPlusConv2d` binarizes the input with torch.sign(x) and the
straight-through gradient of clamp(x, −1, 1), the weight with torch.sign(θ) and the gradient of
clamp(θ, −1, 1) (no weight scale), and multiplies the conv's output by `o_scale` (1, C, 1, 1), `h_scale`
(1, 1, 2000, 1) and `w_scale` (1, 1, 1, 2000), all initialised to 1, the last two sliced to the output's
height and width at every forward; `XNORPlusPlusLinear` has a per-output `o_scale`. Its CIFAR-10 recipe
`configs/acc_cifar10/resnet20_xnorplusplus_adam_1e-3_cosinelr.py` (with `_base_/models/resnet20.py`,
`_base_/datasets/cifar10.py`: crop + flip, 128 images per GPU; `_base_/schedules/adam_1e-3_cosinelr_400e.py`:
Adam lr 1e-3, cosine to 0, 400 epochs) runs its CIFAR ResNet-20 (`bibench/models/backbones/resnet_cifar.py`,
`resnet.py`) with Hardtanh activations, XNOR++ convs inside the blocks, and the stem, the 1×1 downsampling
convs and the classifier full precision, initialised from a full-precision checkpoint.

Paper mode is that BiBench run, the code behind BiBench's published CIFAR-10 XNOR-Net++ figure (the
paper reports ImageNet only): `resnet20`, 400 epochs, batch 128, Adam lr 1e-3 with the cosine schedule to 0,
hardtanh, 1×1 shortcuts full precision (`fp_shortcuts`), factorised Γ. Fair and paper mode share the update
rule; they differ in the recipe. Running paper mode to compare needs CIFAR-10 and a GPU; not done here.

Deviations:
- Γ's β and γ have exactly the output's height and width; BiBench allocates 2,000 of each and slices, so
  its parameter count carries 4,000 mostly unused entries per conv. The values a network uses are the same.
- sign(0) = +1 (BiBench's torch.sign maps 0 to 0, for weights and activations). The gates are 1[|·| ≤ 1];
  BiBench's come from PyTorch's clamp gradient, whose value at exactly |x| = 1 has changed across PyTorch
  versions (2.14 gives 0 there).
- A network is built for one input size (the run's); BiBench's sliced factors accept any size up to 2,000.
- Paper mode trains from scratch (bnnbench has no pretrained checkpoints); BiBench starts from a trained
  full-precision ResNet-20. BiBench's ResNet-20 config leaves mmcls' stem width at 64 (stem 3 → 64, first
  block 64 → 16 with a full-precision 1×1 shortcut); `resnet20` here has a 16-channel stem. BiBench
  validates and keeps the best epoch on the 10,000 test images; bnnbench splits 45,000/5,000 and tests the
  best-validation checkpoint. The 128 images are per GPU (the GPU count is not in the config).
- The paper's ImageNet recipes (AlexNet and ResNet-18, its own schedule) and its other shapes of Γ beyond
  the per-channel and factorised ones are not reproduced. Cross-entropy in both modes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.errors import BadInput
from bnnbench.layers import binary_layers
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer, quantizer
from bnnbench.registry import METHODS


@quantizer("xnorpp_scale")
class OutputScale(nn.Module):
    """XNOR-Net++'s learned Γ for one binary layer's output of `channels` channels: Γ = α ⊗ β ⊗ γ with
    β over `height` rows and γ over `width` columns, or Γ = α when `height` and `width` are 0.

    Every factor starts at 1. Registered as a quantizer only so that `bnnbench.cost` counts its
    parameters (real, no MACs); it maps a layer's output, not a weight.
    """

    def __init__(self, channels: int = 1, height: int = 0, width: int = 0, features_last: bool = False):
        super().__init__()
        self.features_last = features_last  # a linear layer's output: α over the last dim (tokens before it)
        if channels < 1 or height < 0 or width < 0 or (height == 0) != (width == 0):
            raise BadInput(f"bad OutputScale shape channels={channels}, height={height}, width={width}: "
                           "channels ≥ 1, and height and width both ≥ 1 (factorised) or both 0 (per channel)")
        self.alpha = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.ones(height)) if height else None
        self.gamma = nn.Parameter(torch.ones(width)) if width else None

    def factor(self) -> torch.Tensor:
        """Γ as one tensor that broadcasts over the batch: (C, H, W) factorised, (C,) per channel."""
        if self.beta is None:
            return self.alpha
        return self.alpha.view(-1, 1, 1) * self.beta.view(1, -1, 1) * self.gamma.view(1, 1, -1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.beta is None:
            shape = (1,) * (y.dim() - 1) + (-1,) if self.features_last else (1, -1) + (1,) * (y.dim() - 2)
            return y * self.alpha.to(y.dtype).view(shape)
        if y.shape[-2:] != (self.beta.numel(), self.gamma.numel()):
            raise BadInput(f"xnorpp: a binary layer's Γ is sized for outputs of {self.beta.numel()}×"
                           f"{self.gamma.numel()}, got {y.shape[-2]}×{y.shape[-1]}: an XNOR-Net++ network is "
                           f"built for the input size of its run (β per output row, γ per output column)")
        return y * self.factor().to(y.dtype)

    def extra_repr(self) -> str:
        spatial = f", height={self.beta.numel()}, width={self.gamma.numel()}" if self.beta is not None else ""
        return f"channels={self.alpha.numel()}{spatial}"


class ScaledBinary(nn.Module):
    """A binary conv or linear layer (`layer`, unchanged) followed by its learned output scale (`scale`)."""

    def __init__(self, layer: nn.Module, scale: OutputScale):
        super().__init__()
        self.layer = layer
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.layer(x))


def _recorder(shapes: dict[str, torch.Size], name: str):
    """A forward hook that stores its module's output shape (without the batch) under `name`."""
    def hook(module, inputs, output):
        shapes[name] = output.shape[1:]
    return hook


def output_shapes(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, torch.Size]:
    """Each binary layer's output shape without the batch, for one input of `input_size` (C, H, W): one
    forward of a throwaway copy in eval mode, on `meta` (no arithmetic) or, where the forward needs
    values, on the CPU. `model` itself is not touched."""
    failure: Exception | None = None
    for device in ("meta", "cpu"):
        probe = copy.deepcopy(model).to(device).eval()
        shapes: dict[str, torch.Size] = {}
        for name, layer in binary_layers(probe):
            layer.register_forward_hook(_recorder(shapes, name))
        try:
            with torch.no_grad():
                probe(torch.zeros((1, *input_size), device=device))
        except (RuntimeError, NotImplementedError) as error:  # e.g. `.item()` of a meta tensor
            failure = error
            continue
        return shapes
    raise BadInput(f"xnorpp: the network's forward fails at input {'x'.join(map(str, input_size))}: {failure}")


@dataclass(frozen=True)
class XnorppConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step), for θ and Γ alike
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient on every parameter, Γ included; 0 as BiBench's Adam
    scale: Literal["factorised", "channel"] = "factorised"  # Γ = α⊗β⊗γ (C + H + W per conv) or α (C per conv)
    clip_latent: bool = False  # clip latent weights to [−1, 1] after each optimizer step (BiBench does not)
    activation: Literal["hardtanh", "identity"] = "hardtanh"  # what BN's output passes before the sign
    fp_shortcuts: bool = False  # keep the 1×1 shortcut convs full precision (BiBench's ResNets)


@METHODS.register("xnorpp")
class XnorppMethod(BinaryMethod):
    Config = XnorppConfig
    # BiBench configs/acc_cifar10/resnet20_xnorplusplus_adam_1e-3_cosinelr.py: ResNet-20, 400 epochs, 128 per GPU
    paper_recipe = {"arch": "resnet20", "epochs": 400, "batch_size": 128}
    # spelled out (equal to the shared defaults today) so paper mode stays BiBench's `adam_1e-3_cosinelr_400e`
    paper_config = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "cosine", "lr_min": 0.0,
                    "scale": "factorised", "activation": "hardtanh", "fp_shortcuts": True}

    def make_weight_quantizer(self, layer):
        return get_quantizer("bnn")

    def make_input_quantizer(self, layer):
        return get_quantizer("bnn")

    def build_model(self, arch, num_classes, in_channels, image_size):
        model = super().build_model(arch, num_classes, in_channels, image_size)
        shapes = output_shapes(model, (in_channels, image_size, image_size))
        for name, layer in binary_layers(model):
            if name not in shapes:
                raise BadInput(f"xnorpp: binary layer '{name}' does not run in the forward pass, so its Γ has no shape")
            shape = shapes[name]
            if isinstance(layer, nn.Linear):  # one α per output feature, whatever leads (batch, tokens)
                scale = OutputScale(layer.out_features, features_last=True)
            else:
                factorised = self.config.scale == "factorised" and len(shape) == 3
                scale = OutputScale(shape[0], *(shape[1:] if factorised else (0, 0)))
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, ScaledBinary(layer, scale))
        return model

    def output_scales(self) -> list[OutputScale]:
        return [m for m in self.modules() if isinstance(m, OutputScale)]


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True),
            "clip_latent": trial.suggest_categorical("clip_latent", [False, True])}
