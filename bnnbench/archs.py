"""Backbones by name, built full precision; methods binarize them with `layers.binarize`.

Every builder takes (num_classes, in_channels, image_size, activation) and returns a module with a
`full_precision_layers` attribute: the module paths that stay full precision in fair mode (the first
conv and the classifier, as in BinaryNet, XNOR-Net and every paper compared here). Convolutions that
feed a BatchNorm have no bias. Blocks put BatchNorm, not ReLU, in front of each binary conv's input
quantizer path when asked for `hardtanh`/`identity`, because sign(ReLU(x)) is always +1.

- `tiny`: 3 convs + linear, for digits and tests (~0.2 s per CIFAR batch on a CPU).
- `resnet18`: He et al. 2016 with the CIFAR stem (3×3 stride 1, no max-pool) for inputs up to 32 px
  and the ImageNet stem (7×7 stride 2 + max-pool) above, so 224-px Garbage costs 1.8 G MACs, not 27 G.
- `resnet20`: the CIFAR ResNet-20 (16/32/64 channels, 3 blocks per stage), 1×1-conv shortcuts (option B).
- `vgg_small`: the VGG-Small of LQ-Nets/XNOR-Net CIFAR experiments (128-128-256-256-512-512).
- `dra_resnet18`: the network of the DRA-BNN released code (ducanh2712/DRA-BNN), see `DraResNet18`.
- `fmnist_cnn`: four convs (16/64/128/256) for 28-px Fashion-MNIST on a CPU, see `FmnistCnn`.
- `bnew_resnet20`: the ReActNet-style ResNet-20 of the BNEW released code (Alasdair-P/bnew), see
  `BnewResNet20`.
- `bireal_resnet18`, `bireal_resnet20`: Bi-Real Net (Liu et al., ECCV 2018), a real-valued shortcut
  around every 3×3 conv, see `BiRealResNet`.
- `vit_tiny`: a small pre-norm vision transformer (dim 64, 4 blocks, 4 heads) for 8–32 px on a CPU, whose
  attention and MLP linears are the binary layers, see `VitTiny`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bnnbench.errors import BadInput
from bnnbench.registry import unknown_choice


class _PReLUFunction(torch.autograd.Function):
    """PReLU with one slope a, or one a_c per channel (dim 1): y = x if x > 0 else a·x; ∂x = ℓ'·(1 if x > 0
    else a), ∂a = Σ ℓ'·min(x, 0) (per channel: summed over every other dim).

    The forward is PyTorch's own `F.prelu` kernel (one pass); the backward is ours, with the same values
    (x = 0 takes the slope, as there) and 3× faster on the CPU: PyTorch's slope-gradient kernel made
    DRA's, Bop's and BNEW's steps 1.4–1.6× the FP step (measured 5.0 vs 16.1 ms on 2M elements), and its
    per-channel kernel was ReActNet's largest extra cost (67 of 165 ms a resnet20 step, profiled).
    """

    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x, slope)
        return F.prelu(x, slope)

    @staticmethod
    def backward(ctx, grad):
        x, slope = ctx.saved_tensors
        positive = torch.ops.aten.threshold_backward(grad, x, 0)  # ℓ' where x > 0, else 0 (ReLU's kernel)
        negative = grad - positive  # ℓ' where x ≤ 0, else 0
        factor = slope
        if slope.numel() > 1:  # per channel
            grad_slope = (negative * x).sum([d for d in range(x.dim()) if d != 1])
            factor = slope.reshape((1, -1) + (1,) * (x.dim() - 2))
        elif torch.compiler.is_compiling():  # a sum Inductor fuses into the elementwise kernel
            grad_slope = (negative * x).sum()
        else:  # BLAS dot: no product tensor (a dot is an opaque call that splits Inductor's kernels)
            grad_slope = torch.dot(negative.reshape(-1), x.reshape(-1))
        return negative.mul_(factor).add_(positive), grad_slope.reshape(slope.shape)  # exact: one term is 0


class PReLU(nn.PReLU):
    """`nn.PReLU()` (one slope per layer, as DRA's released code) with the faster `_PReLUFunction`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PReLUFunction.apply(x, self.weight)


ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "relu": lambda channels: nn.ReLU(inplace=True),
    "prelu": lambda channels: PReLU(),  # one slope per layer, as DRA's released code
    "hardtanh": lambda channels: nn.Hardtanh(inplace=True),
    "identity": lambda channels: nn.Identity(),
    "rprelu": lambda channels: RPReLU(channels),  # ReActNet's: per-channel slope and two shifts
}


def activation_layer(name: str, channels: int) -> nn.Module:
    if name not in ACTIVATIONS:
        raise unknown_choice("activation", name, sorted(ACTIVATIONS))
    return ACTIVATIONS[name](channels)


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]


class Tiny(nn.Module):
    """Three 3×3 convs (32/64/64 channels) and a linear classifier: for digits and tests."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, activation: str = "relu"):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(in_channels, 32, 3), activation_layer(activation, 32),
            *conv_bn(32, 64, 3), activation_layer(activation, 64), nn.MaxPool2d(2),
            *conv_bn(64, 64, 3), activation_layer(activation, 64),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(64, num_classes)
        self.full_precision_layers = ("features.0", "fc")

    def forward(self, x):
        return self.fc(self.features(x))


class BasicBlock(nn.Module):
    """conv-BN-act-conv-BN, plus the shortcut, then the activation (He et al. 2016)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(in_ch, out_ch, 3, stride), activation_layer(activation, out_ch),
                                  *conv_bn(out_ch, out_ch, 3))
        self.shortcut = (nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride))
                         if stride != 1 or in_ch != out_ch else nn.Identity())
        self.act = activation_layer(activation, out_ch)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int, in_channels: int,
                 image_size: int, activation: str = "relu", imagenet_stem: bool = False):
        super().__init__()
        if imagenet_stem:
            stem = [nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                    activation_layer(activation, widths[0]), nn.MaxPool2d(3, 2, 1)]
        else:
            stem = [*conv_bn(in_channels, widths[0], 3), activation_layer(activation, widths[0])]
        self.stem = nn.Sequential(*stem)
        layers, in_ch = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(in_ch, width, stride, activation))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_ch, num_classes)
        self.full_precision_layers = ("stem.0", "fc")

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))))


class VggSmall(nn.Module):
    """VGG-Small (128-128-256-256-512-512 3×3 convs, three max-pools), the XNOR/LQ-Nets CIFAR net."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, activation: str = "relu"):
        super().__init__()
        layers, in_ch = [], in_channels
        for width, pool in ((128, False), (128, True), (256, False), (256, True), (512, False), (512, True)):
            layers += [*conv_bn(in_ch, width, 3)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            layers.append(activation_layer(activation, width))
            in_ch = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes)
        self.full_precision_layers = ("features.0", "fc")

    def forward(self, x):
        return self.fc(self.features(x))


class DraUnit(nn.Sequential):
    """conv → BN (affine) → activation: what follows every conv of the DRA released network."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, activation: str):
        super().__init__(*conv_bn(in_ch, out_ch, kernel, stride), activation_layer(activation, out_ch))


class DraBlock(nn.Module):
    """out = unit2(unit1(x)) + shortcut(x), with no activation after the sum (as released)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(DraUnit(in_ch, out_ch, 3, stride, activation),
                                  DraUnit(out_ch, out_ch, 3, 1, activation))
        self.shortcut = (DraUnit(in_ch, out_ch, 1, stride, activation)
                         if stride != 1 or in_ch != out_ch else nn.Identity())

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class DraResNet18(nn.Module):
    """The BinaryResNet18 of the DRA-BNN released code, which produced the paper's numbers.

    Stem: full-precision 3×3 stride-1 conv, 64 channels, BN, activation, no max-pool, at any input
    size (224 px in the paper: 27 G binary-weight MACs per image, GPU territory). Stages 64/128/256/
    512 × 2 blocks, strides 1/2/2/2, 1×1 shortcuts followed by BN + activation, adaptive average pool,
    and a Linear classifier without bias. Only the stem stays full precision: the released code
    binarizes the shortcuts and the classifier too.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, activation: str = "prelu"):
        super().__init__()
        self.stem = DraUnit(in_channels, 64, 3, 1, activation)
        blocks, in_ch = [], 64
        for stage, width in enumerate((64, 128, 256, 512)):
            for index in range(2):
                blocks.append(DraBlock(in_ch, width, 2 if stage > 0 and index == 0 else 1, activation))
                in_ch = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes, bias=False)
        self.full_precision_layers = ("stem.0",)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))))


class FmnistCnn(nn.Module):
    """Four 3×3 convs (16/64/128/256 channels) and a linear classifier, for 28-px Fashion-MNIST on a CPU.

    Each stage but the last halves the side with a 2×2 max-pool (28 → 14 → 7 → 3), placed as in
    BinaryNet: conv → max-pool → BN → activation. Pooling before the BatchNorm keeps the sign of the next
    binary conv's input centred (a max-pool after BN would push it towards +1) and runs BN and the
    activation on a quarter of the pixels. 8.2 M MACs per 28-px image, 99 % of them in the three binary
    convs; the first conv (1 → 16) and the classifier stay full precision. Sized so that a binary training
    epoch of 55,000 images takes under 30 s on 2 CPU cores (benchmarks/fashion_epoch.py measures it).
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, activation: str = "relu"):
        super().__init__()
        layers, in_ch = [], in_channels
        for width, pool in ((16, True), (64, True), (128, True), (256, False)):
            layers.append(nn.Conv2d(in_ch, width, 3, 1, 1, bias=False))
            if pool:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.BatchNorm2d(width), activation_layer(activation, width)]
            in_ch = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_ch, num_classes)
        self.full_precision_layers = ("features.0", "fc")

    def forward(self, x):
        return self.fc(self.features(x))


class LearnableBias(nn.PReLU):
    """x + b_c: one learnable shift per channel (init 0), the released code's `LearnableBias`.

    A subclass of `nn.PReLU` with its slope removed, only so that `bnnbench.cost` counts its parameters
    (it counts those of conv, linear, BatchNorm, PReLU and quantizer modules); it has no slope and
    computes no PReLU.
    """

    def __init__(self, channels: int):
        nn.Module.__init__(self)
        self.num_parameters = channels
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias

    def extra_repr(self) -> str:
        return f"channels={self.num_parameters}"


class ScaledBatchNorm2d(nn.BatchNorm2d):
    """BN(s_c·x): BatchNorm of its input scaled by one learnable factor per channel (init 1), the
    released code's `LearnableScale` followed by its `BatchNorm2d`, as one module."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * self.scale)


class RPReLU(nn.PReLU):
    """ReActNet's RPReLU as the released code builds it: PReLU(x + γ_c) + ζ_c, with one slope per channel
    (init 0.25) and the two learnable shifts (init 0) its `move1` and `move2`."""

    def __init__(self, channels: int):
        super().__init__(num_parameters=channels)
        self.shift_in = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.shift_out = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _PReLUFunction.apply(x + self.shift_in, self.weight) + self.shift_out


class BnewBlock(nn.Module):
    """One Bi-Real/ReActNet-style block of the BNEW released network: a single 3×3 conv.

    out = RPReLU(BN(s·conv(x + b)) + shortcut(x)). The conv is the binary layer: `binarize` gives it the
    method's input quantizer, so it sees sign(x + b) — x is the previous block's RPReLU output (or the
    stem's pooled BatchNorm output), never a ReLU's. The shortcut is the identity, or, where the block
    downsamples or widens, average pool (2×2, stride 2) → 1×1 conv → BN.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.shift = LearnableBias(in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = ScaledBatchNorm2d(out_ch)
        self.shortcut = (nn.Sequential(nn.AvgPool2d(2, stride), nn.Conv2d(in_ch, out_ch, 1, bias=False),
                                       nn.BatchNorm2d(out_ch))
                         if stride != 1 or in_ch != out_ch else nn.Identity())
        self.act = RPReLU(out_ch)

    def forward(self, x):
        return self.act(self.bn(self.conv(self.shift(x))) + self.shortcut(x))


class BnewResNet20(nn.Module):
    """The ReActNet-style ResNet-20 of the BNEW released code (Alasdair-P/bnew, `models/ste_wide_resnet.py`,
    `birealresnet20`, model `brn` of every CIFAR script), which produced the paper's CIFAR numbers.

    Stem: full-precision 3×3 conv (stride 1, 16 channels, no bias), BN, then a 3×3 max-pool of stride 2
    (32 → 16 px), no activation. Three stages of six `BnewBlock`s, 16/32/64 channels, strides 1/2/2
    (16 → 8 → 4 px): 18 binary 3×3 convs, each with its own learnable input shift and output scale, and
    per-channel RPReLU after every residual sum. The two downsampling shortcuts are average pool → 1×1
    conv → BN; BNEW keeps their convs full precision (the methods' `fp_shortcuts`). Adaptive average pool
    and a Linear classifier with bias, full precision. PyTorch's default initialisation everywhere, as
    released. `activation` is accepted for the common builder signature and ignored: the released
    network's non-linearity (RPReLU) is part of its definition.

    Cost at 3×32×32, 100 classes: 10,027,008 MACs in the binary convs and 514,304 in the full-precision
    stem, shortcuts and classifier. Released-code names: `move0` is `shift`, `scale0` + `bn1` are `bn`,
    `move1` + `prelu` + `move2` are `act`, `downsample` is `shortcut`.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, activation: str = "prelu"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, in_ch = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for index in range(6):
                blocks.append(BnewBlock(in_ch, width, 2 if stage > 0 and index == 0 else 1))
                in_ch = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_ch, num_classes)
        self.full_precision_layers = ("stem.0", "fc")

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))))


class BiRealBlock(nn.Module):
    """One Bi-Real Net block: a single 3×3 conv with its own real-valued shortcut (released
    liuzechun/Bi-Real-net `pytorch_implementation/BiReal18_34/birealnet.py`, `BasicBlock`).

    out = act(BN(conv(x)) + shortcut(x)). The conv is the binary layer: `binarize` gives it the method's
    input quantizer, so it sees sign(x), where x is the previous block's sum (or the stem's BatchNorm
    output), never a ReLU's: the shortcut carries that real-valued sum past the sign to the next block,
    which is the point of the design. The shortcut is the identity, or where the block downsamples, average
    pool (2×2, stride 2) → 1×1 conv → BN; where it only widens, 1×1 conv → BN. `act` is the builder's
    activation after the sum: the released network has none (`identity`).

    The pool uses `ceil_mode` (windows cut at the border are averaged over what they cover): at an even side,
    the released case (ImageNet: 56/28/14 px), it is the released pool; at an odd side (7 px in the last
    stage at 28 px) it keeps the shortcut the size of the strided conv's output.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, activation: str):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        if stride != 1:
            self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False),
                                          nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        elif in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()
        self.act = activation_layer(activation, out_ch)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class BiRealResNet(nn.Module):
    """Bi-Real Net (Liu, Wu, Luo, Yang, Liu & Cheng, ECCV 2018, arXiv:1808.00278), as its released PyTorch
    code builds it (`birealnet.py`, `BiRealNet`): every 3×3 conv of a ResNet is a `BiRealBlock` with its own
    shortcut, so Bi-Real Net-18 has 4 stages of 4 single-conv blocks (16 binary convs, as ResNet-18).

    Stem: the released ImageNet stem (7×7 stride-2 conv, BN, 3×3 stride-2 max-pool) above 32 px; at 32 px and
    below a CIFAR stem (3×3 stride-1 conv, BN, no pool), as bnnbench's `resnet18`. No ReLU in the stem: the
    first block takes the sign of the stem's BatchNorm output (the builder's activation follows the stem BN;
    `identity`, the released network's, adds nothing). Adaptive average pool and a Linear classifier with
    bias. The first conv and the classifier are the `full_precision_layers`; the 1×1 shortcut convs are real
    in the released network too, which the methods ask for with `fp_shortcuts` (as for `bnew_resnet20`).
    PyTorch's default initialisation (a method may re-initialise its binary layers).
    """

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int, in_channels: int,
                 image_size: int, activation: str = "identity", imagenet_stem: bool = False):
        super().__init__()
        if imagenet_stem:
            stem = [nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                    nn.MaxPool2d(3, 2, 1), activation_layer(activation, widths[0])]
        else:
            stem = [*conv_bn(in_channels, widths[0], 3), activation_layer(activation, widths[0])]
        self.stem = nn.Sequential(*stem)
        layers, in_ch = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                layers.append(BiRealBlock(in_ch, width, 2 if stage > 0 and index == 0 else 1, activation))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_ch, num_classes)
        self.full_precision_layers = ("stem.0", "fc")

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))))


def _bireal_resnet18(num_classes, in_channels, image_size, activation="identity"):
    """Bi-Real Net-18: 64/128/256/512 channels, 4 single-conv blocks per stage; ImageNet stem above 32 px."""
    return BiRealResNet((64, 128, 256, 512), (4, 4, 4, 4), num_classes, in_channels, image_size, activation,
                        imagenet_stem=image_size > 32)


def _bireal_resnet20(num_classes, in_channels, image_size, activation="identity"):
    """The Bi-Real form of the CIFAR ResNet-20, for 28-32 px on a CPU: 16/32/64 channels, 6 single-conv blocks
    per stage (its 18 3×3 convs, each with its own shortcut), CIFAR stem at every size. 40,108,032 binary
    MACs at 3×32×32 (the 3×3 convs), 705,152 full precision with 10 classes (stem, two 1×1 shortcuts,
    classifier)."""
    return BiRealResNet((16, 32, 64), (6, 6, 6), num_classes, in_channels, image_size, activation)


class PositionEmbedding(nn.Module):
    """x + p: one learned vector per token position (ViT, Dosovitskiy et al. 2021), initialised N(0, 0.02²)
    truncated at ±2σ as in timm/DeiT.

    A module of its own rather than a parameter of the network, so that `bnnbench.cost` can name it: it
    counts its parameters as real (32-bit) ones and it costs no MACs (an addition per element).
    """

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.weight, std=0.02, a=-0.04, b=0.04)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight

    def extra_repr(self) -> str:
        return f"tokens={self.weight.shape[1]}, dim={self.weight.shape[2]}"


class Attention(nn.Module):
    """Multi-head self-attention, written out: qkv = W_qkv·x, per head softmax(q·kᵀ/√d_h)·v, then
    out = W_o·LN(concat of heads).

    `qkv` and `proj` are `nn.Linear`, so `binarize` makes them binary layers. The two activation ×
    activation products, q·kᵀ and attn·v, are explicit matrix products here (not
    `F.scaled_dot_product_attention`), each costing heads × tokens² × head_dim MACs per image, which
    `bnnbench.cost` counts from this module. Their operands are real in this design: q, k, v are outputs of
    binary layers (integer-valued sums, then the bias), and the attention probabilities are softmax outputs
    in (0, 1), so both products are real × real (`fp_macs`). The four operand quantizers (`q_quantizer`,
    `k_quantizer`, `attn_quantizer`, `v_quantizer`, all None here) are where a binary-attention variant
    (BiT's {0, 1} attention with sign(q), sign(k); BiViT's softmax-aware binarization) would put its maps;
    `binary_operands` tells the cost counter which product then has two, one or no binary operands (BOPs,
    binary × real MACs, real MACs), as it does for a binary layer's weight and input.

    The LayerNorm before `proj` (the "sub-LN" of NormFormer, Shleifer et al. 2021, and of BitNet, Wang et
    al. 2023, which normalises the input of every binarized linear) centres the heads' output per token: it
    is a convex combination of values, whose sign need not be balanced, and a W1A1 method takes its sign.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention: dim {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.q_quantizer: nn.Module | None = None
        self.k_quantizer: nn.Module | None = None
        self.attn_quantizer: nn.Module | None = None
        self.v_quantizer: nn.Module | None = None

    def binary_operands(self) -> dict[str, int]:
        """How many binary operands each product has (0, 1 or 2): {"q@k": ..., "attn@v": ...}."""
        def binary(*quantizers):
            return sum(quantizer is not None for quantizer in quantizers)

        return {"q@k": binary(self.q_quantizer, self.k_quantizer),
                "attn@v": binary(self.attn_quantizer, self.v_quantizer)}

    @staticmethod
    def _quantize(quantizer: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
        return x if quantizer is None else quantizer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self._quantize(self.q_quantizer, q), self._quantize(self.k_quantizer, k)
        v = self._quantize(self.v_quantizer, v)
        attn = (q @ k.transpose(-2, -1)).mul_(self.scale).softmax(dim=-1)  # (batch, heads, tokens, tokens)
        out = self._quantize(self.attn_quantizer, attn) @ v  # (batch, heads, tokens, head_dim)
        return self.proj(self.norm(out.transpose(1, 2).reshape(batch, tokens, dim)))


class Mlp(nn.Module):
    """fc2(LN(GELU(fc1(x)))): the transformer MLP with a LayerNorm between the activation and `fc2`.

    GELU's output is mostly positive (≥ −0.17, and most of its mass above 0), so sign(GELU(h)) is +1 for
    most units, the transformer form of sign(ReLU(x)) = +1 that the conv backbones avoid with BatchNorm
    before each binary conv. The mid-LayerNorm (NormFormer's "FFN LN"; BitNet's LayerNorm before every
    binarized linear) subtracts each token's mean so the sign fc2's W1A1 input quantizer takes carries
    information. BiT (Liu et al., NeurIPS 2022) gets there with a learned per-layer shift and scale inside
    its "elastic" activation binarizer (ReActNet's learnable bias); that is a method's quantizer, whereas a
    LayerNorm belongs to the backbone and serves every method here alike.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x)); the residual stream stays real.

    Every binary linear has a LayerNorm right before it (`norm1` → qkv, `attn.norm` → proj, `norm2` → fc1,
    `mlp.norm` → fc2), so a W1A1 method's sign always sees a per-token centred input of unit scale, which
    also puts it where clipped straight-through gradients (|x| ≤ 1) pass.
    """

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VitTiny(nn.Module):
    """A small vision transformer for 8–32 px images on a CPU (ViT, Dosovitskiy et al. 2021, pre-norm).

    Patch embedding: a conv with kernel = stride = patch (2 px below 16 px, 4 px up to 32 px, 4·⌈side/32⌉
    above, so 28 and 32 px give 7×7 and 8×8 tokens and 8 px gives 4×4), with bias, full precision like the
    first conv of the conv backbones. Learned position embeddings (`PositionEmbedding`), 4 pre-norm
    `TransformerBlock`s of width 64 with 4 heads of 16 and an MLP of 128 (ratio 2, as the CIFAR ViT-Lite of
    Hassani et al. 2021), a final LayerNorm, mean pooling over the tokens and the classifier `fc`, full
    precision. The binary layers are the 16 linears of the blocks (qkv, proj, fc1, fc2).

    Mean pooling, not a class token: the class token reaches the image only through attention, which
    binary methods make coarse (binary q, k and v layers here; binary attention maps in BiT and BiViT), while
    the mean of the tokens gives the classifier, and the gradient, every token directly; BinaryViT (Le &
    Li 2023) replaces the class token by average pooling for this reason, and "Better plain ViT baselines"
    (Beyer et al. 2022) trains small-data ViTs with global average pooling too. It also keeps every token
    position alike, so there is no token the LayerNorms treat differently.

    `activation` is accepted for the common builder signature and ignored (as `bnew_resnet20` does): the
    MLP's GELU is part of the definition, and the conv backbones' choice of `hardtanh`/`identity` exists
    to keep sign inputs centred, which the LayerNorm before every binary linear does here.

    Cost at 3×32×32, 10 classes (64 tokens): 8,388,608 MACs in the binary linears (per block qkv 786,432,
    proj 262,144, fc1 and fc2 524,288 each); real MACs 196,608 in the patch conv, 640 in the classifier and
    2,097,152 in the attention products (per block 2 × 4 heads × 64² × 16). PyTorch's default
    initialisation for the linears and the conv, LayerNorm γ = 1, β = 0.
    """

    dim = 64
    depth = 4
    heads = 4
    mlp_hidden = 128

    def __init__(self, num_classes: int, in_channels: int, image_size: int, activation: str = "gelu"):
        super().__init__()
        self.patch = 2 if image_size < 16 else 4 * math.ceil(image_size / 32)
        side = image_size // self.patch
        if side < 1:
            raise BadInput(f"vit_tiny: a {image_size} px image is smaller than one {self.patch}-px patch; "
                           f"give at least {self.patch} px")
        self.patch_embed = nn.Conv2d(in_channels, self.dim, self.patch, self.patch)
        self.pos_embed = PositionEmbedding(side * side, self.dim)
        self.blocks = nn.Sequential(*(TransformerBlock(self.dim, self.heads, self.mlp_hidden)
                                      for _ in range(self.depth)))
        self.norm = nn.LayerNorm(self.dim)
        self.fc = nn.Linear(self.dim, num_classes)
        self.full_precision_layers = ("patch_embed", "fc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, tokens, dim)
        x = self.blocks(self.pos_embed(x))
        return self.fc(self.norm(x).mean(dim=1))


def _resnet18(num_classes, in_channels, image_size, activation="relu"):
    """ResNet-18; CIFAR stem (3×3 stride 1, no max-pool) up to 32 px, ImageNet stem above."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, in_channels, image_size, activation,
                  imagenet_stem=image_size > 32)


def _resnet20(num_classes, in_channels, image_size, activation="relu"):
    """CIFAR ResNet-20: 16/32/64 channels, 3 blocks per stage, 1×1-conv shortcuts."""
    return ResNet((16, 32, 64), (3, 3, 3), num_classes, in_channels, image_size, activation)


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "tiny": Tiny,
    "resnet18": _resnet18,
    "resnet20": _resnet20,
    "vgg_small": VggSmall,
    "dra_resnet18": DraResNet18,
    "fmnist_cnn": FmnistCnn,
    "bnew_resnet20": BnewResNet20,
    "bireal_resnet18": _bireal_resnet18,
    "bireal_resnet20": _bireal_resnet20,
    "vit_tiny": VitTiny,
}


def pointwise_convs(backbone: nn.Module) -> tuple[str, ...]:
    """Names of the 1×1 convs (the downsampling shortcuts), which BNEW and Bop keep full precision."""
    return tuple(name for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))


def build(name: str, num_classes: int, in_channels: int, image_size: int, activation: str = "relu") -> nn.Module:
    """A full-precision backbone by name; an unknown name lists the valid ones."""
    if name not in ARCHS:
        raise unknown_choice("architecture", name, sorted(ARCHS))
    return ARCHS[name](num_classes, in_channels, image_size, activation)
