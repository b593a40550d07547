"""`dorefa`: DoReFa-Net at 1-bit weights and 1-bit activations (Zhou et al., 2016, arXiv:1606.06160).

Paper: "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth Gradients" by
Shuchang Zhou, Yuxin Wu, Zekun Ni, Xinyu Zhou, He Wen and Yuheng Zou (Megvii), arXiv:1606.06160 (2016).
DoReFa quantizes weights (W), activations (A) and gradients (G) to k bits each; bnnbench runs its W1A1
member with real gradients (G = 32: no gradient quantization), the member a BNN benchmark compares.

Fair mode, the paper's 1-bit rules as the authors' released code computes them, on the shared backbone:
- weights (quantizer `DorefaWeight`, `weight_scale=layer`, `weight_gradient=identity`): w = E·sign(θ)
  with E = mean |θ| over the whole layer (one scalar per layer) and sign(0) = +1. E is a constant in the
  backward (the released code stops its gradient) and the sign is passed straight through: θ receives
  ℓ' unchanged, neither gated nor multiplied by E. (XNOR-Net's `xnor` differentiates its α_c; this
  does not.) Since every binary conv feeds a BatchNorm, E only rescales what BN normalises anyway.
- activations (`activation_levels=sign`): every binary layer's input is sign(x), sign(0) = +1, with the
  gradient ℓ'·1[|x| ≤ 1] (quantizer `bnn`): BiBench's 1-bit DoReFa activation. The paper's own 1-bit
  activation takes the values {0, 1}; it is the option `activation_levels=zero_one` (below), not the
  default, because bnnbench's W1A1 networks binarize inputs to ±1 (docs/methods.md) and `bnnbench
  export` stores sign inputs only. The two differ by an affine map and a shifted threshold: a = (1 + s)/2
  with s = ±1 the sign of x − ½ (−1 at x = ½); the next conv and BatchNorm absorb the affine part except
  where zero padding enters.
- block order: BN → hardtanh → sign (`activation=hardtanh`, as BiBench's configs; `identity` gives the
  same forward, since sign(hardtanh(x)) = sign(x)). Latent weights are not clipped (`clip_latent`,
  neither released code does); Adam and the shared cosine schedule.

Released code.
1. The authors' (tensorpack/tensorpack, `examples/DoReFa-Net/`). `dorefa.py:get_dorefa(bitW, bitA, bitG)`
   returns the weight, activation and gradient quantizers fw, fa, fg. fw at 1 bit: E = stop_gradient(mean
   |x|) over the whole variable, forward where(x = 0, 1, sign(x/E))·E, gradient dy ↦ dy (identity). fa at
   k bits: round(x·(2^k − 1))/(2^k − 1) with the identity gradient. `alexnet-dorefa.py` (ImageNet) and
   `svhn-digit-dorefa.py` (SVHN) apply `activate(x) = fa(clip(x, 0, 1))` after each BatchNorm and keep the
   first conv and the last fully connected layer real. At k = 1 that is a = round(clip(x, 0, 1)) ∈ {0, 1},
   i.e. 1[x > ½] (`tf.round` rounds half to even, so ½ ↦ 0), with the gradient ℓ'·1[0 ≤ x ≤ 1]
   (`clip_by_value` passes the gradient on the closed interval, the rounding passes it unchanged). There
   is no CIFAR-10 script (the paper reports SVHN and ImageNet).
2. BiBench (htqin/BiBench; Qin et al., "BiBench: Benchmarking and Analyzing Network Binarization", ICML
   2023, arXiv:2301.11233), whose release produced the published CIFAR-10 DoReFa numbers.
   `bibench/models/layers/dorefa.py:DoReFaConv2d`: input torch.sign(x) with the straight-through gradient
   of clamp(x, −1, 1); weight α_c·torch.sign(θ) with α_c = mean |θ| over each output channel, detached,
   and the gradient of clamp(θ, −1, 1), so θ receives ℓ'·1[|θ| ≤ 1], again without a factor α_c.
   `configs/acc_cifar10/resnet20_dorefa_adam_1e-3_cosinelr.py` with `_base_/models/resnet20.py`,
   `_base_/datasets/cifar10.py` (crop + flip, 128 images per GPU) and
   `_base_/schedules/adam_1e-3_cosinelr_400e.py` (Adam lr 1e-3, cosine to 0, 400 epochs): the CIFAR ResNet-20
   of `bibench/models/backbones/resnet_cifar.py` and `resnet.py` with Hardtanh activations, DoReFa convs
   inside the blocks, the stem, the 1×1 downsampling convs and the classifier full precision, initialised
   from a full-precision checkpoint (`data/pretrained/res20_cifar10.pth`).

Paper mode is BiBench's CIFAR-10 ResNet-20 run (source 2): the paper has no CIFAR-10 experiment, and
BiBench's release is the code behind the CIFAR-10 DoReFa figure it can be checked against. `resnet20`,
400 epochs, batch 128, Adam lr 1e-3 with the cosine schedule to 0, hardtanh, 1×1 shortcuts full precision
(`fp_shortcuts`), per-output-channel α_c (`weight_scale=channel`) and the gated weight gradient
(`weight_gradient=clip`). Running it to compare needs CIFAR-10 and 400 epochs on a GPU; not done here.

Deviations:
- Fair mode's activations are ±1 (BiBench's rule), not the paper's {0, 1} (see above); `zero_one`
  reproduces the paper's, but `bnnbench export` refuses such a network (it stores sign inputs only).
- sign(0) = +1 everywhere; the released tensorpack weight rule maps 0 to +1 too, BiBench's torch.sign maps
  it to 0 (weights and activations).
- Paper mode's gates are 1[|·| ≤ 1]. BiBench takes them from PyTorch's clamp gradient, whose value at
  exactly |x| = 1 has changed across PyTorch versions (2.14 gives 0 there).
- Paper mode trains from scratch (bnnbench has no pretrained checkpoints); BiBench starts from a trained
  full-precision ResNet-20. BiBench's ResNet-20 config leaves mmcls' stem width at 64, so its stem is
  3 → 64 channels and its first block 64 → 16 with a full-precision 1×1 shortcut; `resnet20` here has a
  16-channel stem. BiBench validates and keeps the best epoch on the 10,000 test images; bnnbench splits
  45,000/5,000 and tests the best-validation checkpoint. Its 128 images are per GPU (the GPU count is not in
  the config).
- Gradient quantization (fg, G < 32) and the k-bit rules for k > 1 (tanh-normalised weights, k-bit
  activations) are not implemented. Cross-entropy in both modes, as in both released codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer, sign
from bnnbench.registry import METHODS


class _MeanScaledSign(torch.autograd.Function):
    """w = E·sign(θ) with E = mean |θ| over the layer (or over each output channel); E is a constant in
    the backward, so θ receives ℓ' (straight through) or ℓ'·1[|θ| ≤ 1] (`gated`). Saves at most a bool mask."""

    @staticmethod
    def forward(ctx, theta, per_channel: bool, gated: bool):
        magnitude = theta.detach().abs()
        scale = magnitude.mean(dim=tuple(range(1, theta.dim())), keepdim=True) if per_channel else magnitude.mean()
        ctx.gated = gated
        if gated:
            ctx.save_for_backward(magnitude <= 1)
        return sign(theta).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.gated:
            return grad, None, None
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


class DorefaWeight(nn.Module):
    """DoReFa's 1-bit weights: E·sign(θ), E = mean |θ| per layer (`per_channel=False`, the authors' code)
    or per output channel (BiBench); gradient ℓ', or ℓ'·1[|θ| ≤ 1] with `gated` (BiBench)."""

    def __init__(self, per_channel: bool = False, gated: bool = False):
        super().__init__()
        self.per_channel = per_channel
        self.gated = gated

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return _MeanScaledSign.apply(theta, self.per_channel, self.gated)

    def extra_repr(self) -> str:
        return f"per_channel={self.per_channel}, gated={self.gated}"


class _HalfStep(torch.autograd.Function):
    """DoReFa's 1-bit activation: round(clip(x, 0, 1)) = 1[x > ½] (round half to even: ½ ↦ 0), gradient
    ℓ'·1[0 ≤ x ≤ 1] (the clip's, on the closed interval; the rounding passes ℓ' unchanged)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward((x >= 0) & (x <= 1))
        return (x > 0.5).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside


class ZeroOneActivation(nn.Module):
    """Activations in {0, 1} as the tensorpack DoReFa code computes them at 1 bit; see `_HalfStep`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _HalfStep.apply(x)


@dataclass(frozen=True)
class DorefaConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 as both released codes (Adam without decay)
    weight_scale: Literal["layer", "channel"] = "layer"  # E = mean |θ| per layer (authors) or per output channel
    weight_gradient: Literal["identity", "clip"] = "identity"  # θ receives ℓ' (authors) or ℓ'·1[|θ| ≤ 1] (BiBench)
    activation_levels: Literal["sign", "zero_one"] = "sign"  # inputs ±1 (BiBench) or {0, 1} = 1[x > ½] (the paper)
    clip_latent: bool = False  # clip latent weights to [−1, 1] after each optimizer step (neither release does)
    activation: Literal["hardtanh", "identity"] = "hardtanh"  # what BN's output passes before the binarization
    fp_shortcuts: bool = False  # keep the 1×1 shortcut convs full precision (BiBench's ResNets)


@METHODS.register("dorefa")
class DorefaMethod(BinaryMethod):
    Config = DorefaConfig
    # BiBench configs/acc_cifar10/resnet20_dorefa_adam_1e-3_cosinelr.py: ResNet-20, 400 epochs, 128 per GPU
    paper_recipe = {"arch": "resnet20", "epochs": 400, "batch_size": 128}
    # the optimizer and schedule are spelled out (equal to the shared defaults today) so that paper mode
    # stays BiBench's `adam_1e-3_cosinelr_400e` if the shared defaults change
    paper_config = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "cosine", "lr_min": 0.0,
                    "weight_scale": "channel", "weight_gradient": "clip", "activation": "hardtanh",
                    "fp_shortcuts": True}

    def make_weight_quantizer(self, layer):
        c = self.config
        return DorefaWeight(per_channel=c.weight_scale == "channel", gated=c.weight_gradient == "clip")

    def make_input_quantizer(self, layer):
        return ZeroOneActivation() if self.config.activation_levels == "zero_one" else get_quantizer("bnn")


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True),
            "clip_latent": trial.suggest_categorical("clip_latent", [False, True])}
