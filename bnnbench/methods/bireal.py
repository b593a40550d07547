"""`bireal`: Bi-Real Net (Liu, Wu, Luo, Yang, Liu & Cheng, ECCV 2018, arXiv:1808.00278).

Paper: "Bi-Real Net: Enhancing the Performance of 1-bit CNNs With Improved Representational Capability and
Advanced Training Algorithm" by Zechun Liu, Baoyuan Wu, Wenhan Luo, Xin Yang, Wei Liu and Kwang-Ting Cheng,
ECCV 2018.

Three things make Bi-Real Net, W1A1:
- the ApproxSign activation: forward sign(x), backward ℓ'·(2 − 2|x|)·1[|x| < 1], the derivative of the
  piecewise quadratic −1 / x² + 2x / −x² + 2x / 1 that approximates sign (quantizer `approx_sign`, shared);
- magnitude-aware weights: forward w = α_c·sign(θ) with α_c = mean |θ| over output channel c (paper eq. 9),
  recomputed from θ at every forward;
- a real-valued shortcut around every binary conv (the network, `archs.BiRealResNet`): each 3×3 binary
  conv + BN has its own identity shortcut, the downsampling ones average pool → 1×1 conv → BN, real.

The weight gradient (`weight_gradient`), see `_MagnitudeAwareSign`:
- `paper` (fair mode): eq. 10, ∂L/∂θ ≈ ℓ'·α_c·1[|θ| < 1], where ℓ' is the gradient with respect to the
  scaled binary weight. The paper drops α_c's own dependence on θ (XNOR-Net's extra term, quantizer `xnor`);
  the released Caffe layer (`binary_conv_train_layer.cpp`, `ModifyGradientsCPUTo`) computes the same, with
  the gate −1 < θ ≤ 1.
- `released` (paper mode): the released PyTorch code, ℓ'·1[|θ| < 1]. Its `HardBinaryConv` detaches the
  scale and passes the gradient through `clamp(θ, −1, 1)` by a straight-through trick: no α_c factor and
  no term through α_c; the gate is torch.clamp's gradient (zero at exactly ±1 in the torch used here, 2.14,
  and in the paper's indicator; the Caffe layer passes θ = 1).
With Adam the α_c factor mostly washes out (Adam divides by the gradient's running magnitude, and α_c
changes slowly); with SGD it shrinks the steps of small-magnitude channels.

Released code: liuzechun/Bi-Real-net. `pytorch_implementation/BiReal18_34/birealnet.py` (`BinaryActivation`:
the ApproxSign as sign(x) − q(x).detach() + q(x); `HardBinaryConv`: α_c·torch.sign(θ) with the clamp
trick above, latent weights initialised U[0, 0.001); `BasicBlock`: sign → binary conv → BN, plus the
shortcut, no activation after the sum; `BiRealNet`: the 7×7 stem without ReLU, the downsampling shortcut
AvgPool2d(2) → 1×1 conv → BN, Bi-Real-18 = 4 × 4 blocks) and `train.py` (ImageNet: Adam lr 1e-3, weight
decay 0, batch 512, 256 epochs, the LR multiplied by 1 − (e+1)/256 in 0-based epoch e (a LambdaLR stepped
before each epoch, the first included, so the last epoch runs at 0), label smoothing 0.1 in the training
loss and plain cross-entropy for validation, training from scratch). The Caffe code of the paper's own
numbers (`Bi-Real-net-caffe`, README: 56.4 % top-1 for Bi-Real-18 on ImageNet) initialises from a
real-valued network pretrained in three steps, trains with SGD and retrains BatchNorm for one epoch; it is
not what paper mode follows. The paper reports ImageNet only.

Paper mode reproduces the released PyTorch code as far as bnnbench can: `bireal_resnet18` (the ImageNet
stem above 32 px, bnnbench's CIFAR stem at 32 px and below), 256 epochs, batch 512, Adam lr 1e-3 without
weight decay, the linear LR stepped before each epoch (`lr_step_first`), label smoothing 0.1
(`label_smoothing`), `weight_gradient=released`, latent weights of the binary convs U[0, 0.001)
(`init_scale`), 1×1 shortcut convs real (`fp_shortcuts`), no activation after the sums (`activation=
identity`). Running it to compare needs ImageNet (or CIFAR) and 256 ResNet-18 epochs on a GPU: not done
here. Fair mode: the same two quantizers (`weight_gradient=paper`) on the shared backbone with the shared
recipe (Adam, cosine per epoch), without extra shortcuts: the shared blocks have one shortcut per two
convs; `activation=identity` puts BatchNorm's output straight into the sign (BN → sign → binary conv),
as every Bi-Real block does. `--arch bireal_resnet18` (or the small `bireal_resnet20`, 28–32 px) runs the
Bi-Real network in fair mode too.

Deviations:
- sign(0) = +1 for weights and activations (the released code's torch.sign maps 0 to 0, a ternary value;
  exact zeros occur, e.g. BatchNorm outputs after integer-valued binary convs).
- The released `HardBinaryConv` initialises every latent weight in [0, 0.001), all signs +1 at the start;
  `init_scale` reproduces that for the binary layers only (the real stem, shortcuts and classifier keep
  PyTorch's default initialisation, as released).
- Data: bnnbench's datasets and augmentation (the released ImageNet pipeline uses RandomResizedCrop with
  scale (0.08, 1) and PCA lighting noise); the best validation epoch is tested (the released code reports
  the best validation accuracy).
- Fair mode on the shared backbones has no shortcut per conv: that is the architecture, which `--arch
  bireal_resnet18` provides; the downsampling pool uses `ceil_mode` (identical at the released even sides).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat, UnitFraction
from bnnbench.errors import BadInput
from bnnbench.layers import binary_layers
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer, sign
from bnnbench.registry import METHODS


class _MagnitudeAwareSign(torch.autograd.Function):
    """Bi-Real Net's weights: forward w = α_c·sign(θ), α_c = mean |θ| over output channel c (dim 0).

    Backward, `paper` (eq. 10): ℓ'·α_c·1[|θ| < 1]; `released` (birealnet.py): ℓ'·1[|θ| < 1]. Neither has a
    term through α_c. Saves a boolean gate and, for `paper`, α_c (one value per channel).
    """

    @staticmethod
    def forward(ctx, theta, rule: str):
        flat = theta.reshape(theta.shape[0], -1)
        alpha = flat.abs().mean(dim=1, keepdim=True)
        inside = theta.abs() < 1
        ctx.save_for_backward(*((inside, alpha) if rule == "paper" else (inside,)))
        return (alpha * sign(flat)).reshape(theta.shape)

    @staticmethod
    def backward(ctx, grad):
        gate, *alpha = ctx.saved_tensors
        out = grad * gate
        if alpha:
            out = (out.reshape(grad.shape[0], -1) * alpha[0]).reshape(grad.shape)
        return out, None


class MagnitudeAwareSign(nn.Module):
    """Bi-Real Net's weight quantizer: α_c·sign(θ) with the `paper` or `released` gradient (see
    `_MagnitudeAwareSign`). Evaluation uses the same ±α_c weights."""

    def __init__(self, rule: Literal["paper", "released"] = "paper"):
        super().__init__()
        if rule not in ("paper", "released"):
            raise BadInput(f"unknown weight gradient '{rule}' for Bi-Real Net; valid: paper, released")
        self.rule = rule

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _MagnitudeAwareSign.apply(theta, self.rule)

    def extra_repr(self) -> str:
        return f"rule={self.rule}"


@dataclass(frozen=True)
class BirealConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step); released 1e-3 too
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 as released ("no longer encourage weights near 0")
    weight_gradient: Literal["paper", "released"] = "paper"  # paper: ℓ'·α_c·1[|θ|<1]; released: ℓ'·1[|θ|<1]
    # what the residual sum passes before the next block's sign; identity = Bi-Real's (BN → sign)
    activation: Literal["identity", "hardtanh", "prelu"] = "identity"
    fp_shortcuts: bool = False  # keep the 1×1 shortcut convs full precision (Bi-Real's real-valued shortcuts)
    label_smoothing: UnitFraction = 0.0  # of the training cross-entropy, in [0, 1) (released: 0.1); not validation
    # latent weights of the binary layers ~ U[0, init_scale) (released: 0.001, all signs +1); None = PyTorch's
    init_scale: PositiveFloat | None = None
    lr_step_first: bool = False  # LR schedule stepped before each epoch, the first included (released; base)


@METHODS.register("bireal")
class BirealMethod(BinaryMethod):
    Config = BirealConfig
    paper_recipe = {"arch": "bireal_resnet18", "epochs": 256, "batch_size": 512}
    paper_config = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "linear", "lr_step_first": True,
                    "label_smoothing": 0.1, "weight_gradient": "released", "init_scale": 1e-3, "fp_shortcuts": True,
                    "activation": "identity"}

    def make_weight_quantizer(self, layer):
        return MagnitudeAwareSign(self.config.weight_gradient)

    def make_input_quantizer(self, layer):
        return get_quantizer("approx_sign")

    def build_model(self, arch, num_classes, in_channels, image_size):
        model = super().build_model(arch, num_classes, in_channels, image_size)
        if self.config.init_scale is not None:
            with torch.no_grad():
                for _, layer in binary_layers(model):
                    layer.weight.uniform_(0.0, self.config.init_scale)
        return model

    def loss(self, logits, target, inputs=None):
        return F.cross_entropy(logits, target, label_smoothing=self.config.label_smoothing)


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "weight_gradient": trial.suggest_categorical("weight_gradient", ["paper", "released"]),
            "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2)}
