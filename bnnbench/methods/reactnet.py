"""`reactnet`: ReActNet (Liu, Shen, Savvides & Cheng, ECCV 2020, arXiv:2003.03488).

Paper: "ReActNet: Towards Precise Binary Neural Network with Generalized Activation Functions" by Zechun Liu,
Zhiqiang Shen, Marios Savvides and Kwang-Ting Cheng, ECCV 2020.

What it computes (W1A1):
- RSign (`RSignLayer`): every binary layer's input is sign(x − β_c), with one learnable shift β_c per input
  channel (init 0) before the layer's sign; the sign has Bi-Real Net's ApproxSign gradient (quantizer
  `approx_sign`: ℓ'·max(0, 2 − 2|x − β_c|)), so x gets that gradient and β_c minus its sum over the
  channel's batch and positions. The shift is `archs.LearnableBias` (the released `move0`, x + b with b = −β),
  kept outside the layer's input quantizer so the exported network is the plain sign after a shift.
- RPReLU (`archs.RPReLU`): the activation of the network is PReLU(x + γ_c) + ζ_c with a slope (init 0.25)
  and two shifts (init 0) per channel (the released `move1`, `prelu`, `move2`); on the shared backbones
  every activation becomes one (`activation=rprelu`), on `bnew_resnet20` they are part of the network.
- Weights (`bireal.MagnitudeAwareSign`): w = α_c·sign(θ), α_c = mean |θ| over output channel c, recomputed
  at every forward; gradient ℓ'·1[|θ| < 1] (`weight_gradient=released`: the released `HardBinaryConv`
  detaches α_c and passes the gradient through clamp(θ, −1, 1), whose gradient is 0 at exactly ±1).
- Two steps (the shared two-phase start of `BinaryMethod`, `phase1_epochs`, by default half the run):
  step 1 trains real-valued weights with binary activations (the training forward uses θ as it is), step
  2 binarizes the weights too, starting from step 1's network with a fresh optimizer and a restarted LR
  schedule. Step 1 does not clamp θ (the released step 1 has none). `weight_decay` applies to the conv
  weights (4-D) in step 1, `phase2_weight_decay` in step 2 (released 1e-5 and 0); other parameters none.
- Distillation (`distill`): the training loss is the released `DistributionLoss`, the cross-entropy
  −mean_n Σ_k softmax(t_n)_k·log softmax(s_n)_k between a full-precision teacher's logits t and the
  student's s (the KL divergence up to the teacher's entropy, same gradient), no temperature and no
  label term. The teacher is the MLflow model of a FINISHED run (`teacher_run_id`, read as `bnnbench
  export` reads a run's model) with the same number of classes and input shape; without an id, the runner
  trains an `fp` run on the same dataset, arch, epochs, batch, image size and seed first, or reuses a
  FINISHED one of that configuration and code identity, and tags the student's run
  `bnnbench.teacher_run_id`. The teacher stays in eval mode, frozen, and is no submodule: it is not in
  the student's parameters, checkpoint, exported model or cost. Without `distill`: cross-entropy.

Released code: liuzechun/ReActNet. `resnet/1_step1/birealnet.py` (step 1: `BasicBlock` = `move0`
(LearnableBias) → `BinaryActivation` (torch.sign forward, the ApproxSign polynomial backward) → a plain
real 3×3 conv → BN, plus the shortcut (identity, or AvgPool2d(2) → real 1×1 conv → BN), then `move1` →
`prelu` (nn.PReLU(planes)) → `move2`; `BiRealNet`: 7×7 stem conv, BN, max-pool, no activation; Bi-Real-18
= 4 × 4 blocks), `resnet/2_step2/birealnet.py` (step 2: the same with `HardBinaryConv`: α_c·torch.sign(θ)
with the clamp trick above, α_c applied after the conv in eval), `resnet/*/train.py` (Adam; conv weights
(4-D) with `--weight_decay`, the others without; LambdaLR 1 − e/E per epoch, stepped before each epoch;
the teacher torchvision `resnet34(pretrained=True)`, frozen, eval; loss `DistributionLoss(student,
teacher)` only; step 2 loads step 1's last `checkpoint.pth.tar` non-strictly), `resnet/*/run.sh` (ImageNet,
batch 512, 128 epochs per step at lr 2.5e-3, weight decay 1e-5 in step 1 and 0 in step 2),
`utils/KD_loss.py` (`DistributionLoss`: −bmm(softmax(teacher), log_softmax(student)), averaged over the
batch). `mobilenet/` is the same recipe on ReActNet-A (MobileNet-based), not reproduced.

Paper mode reproduces the released ResNet recipe as far as bnnbench can: `bireal_resnet18` (the Bi-Real-18
network of `archs`, ImageNet stem above 32 px) with RSign before every binary conv and RPReLU after every
residual sum, 256 epochs (128 + 128), batch 512, Adam lr 2.5e-3 with the linear schedule restarted at step
2, weight decay 1e-5 / 0, 1×1 shortcut convs real, distillation from a full-precision teacher. Running it
needs ImageNet-scale data and a GPU: not done here. Fair mode: the same RSign, RPReLU, weights and two
steps on the shared backbone with the shared recipe (Adam 1e-3, cosine restarted at step 2, no weight
decay) and without distillation (`distill=false`), so that it is compared with the other methods on
equal terms (same data, same labels, no second network); `--set distill=true` adds it.

Deviations:
- sign(0) = +1 for weights and activations (the released torch.sign maps 0 to 0).
- Step 2 starts from step 1's best-`val/acc` state (the base's two-phase start, validated with hard binary
  weights); the released step 2 loads step 1's last checkpoint.
- LR: the base's linear schedule gives epoch e of a step 1 − e/E; the released LambdaLR, stepped before
  each epoch, gives 1 − (e+1)/E (last epoch at 0).
- Teacher: an `fp` run of the student's arch on the same data (released: a pretrained torchvision
  ResNet-34); the student's augmentation is the dataset's (released: RandomResizedCrop + lighting).
- Network (paper mode): `bireal_resnet18` has the builder's activation after the stem's BN, so an RPReLU
  there (released: none; its sign is unchanged, the real-valued shortcut sees its slope); on the shared
  backbones an RSign is added before every binary layer, the 1×1 shortcuts and a binary classifier
  included (released: 3×3 convs only are binary); a linear layer's shift is over its last (feature) dim,
  and a PReLU on tokens rather than feature maps stays a PReLU.
- With several processes (`devices` > 1) an automatically trained teacher is trained by each of them;
  give `teacher_run_id` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bnnbench import archs
from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveFloat
from bnnbench.errors import BadInput
from bnnbench.layers import BinaryLayer
from bnnbench.methods.base import BinaryMethod
from bnnbench.methods.bireal import MagnitudeAwareSign
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class ReactnetConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate (per step); the schedule restarts at step 2 (paper: 2.5e-3)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient on conv weights (4-D) in step 1 (released 1e-5)
    phase2_weight_decay: NonNegativeFloat = 0.0  # the same in step 2 (released 0)
    phase1_epochs: NonNegativeInt | None = None  # epochs of step 1 (real weights); None = half the run
    # the network's activation: rprelu = PReLU(x + γ_c) + ζ_c per channel (ReActNet); others as the backbone's
    activation: Literal["rprelu", "prelu", "hardtanh", "identity"] = "rprelu"
    weight_gradient: Literal["released", "paper"] = "released"  # released: ℓ'·1[|θ|<1]; paper: ℓ'·α_c·1[|θ|<1]
    fp_shortcuts: bool = False  # keep 1×1 shortcut convs full precision (released: real downsample convs)
    distill: bool = False  # loss = cross-entropy from a full-precision teacher's softmax, no labels (paper mode)
    teacher_run_id: str | None = None  # MLflow run id of a FINISHED run whose model teaches; None = trained first

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_run_id is not None and not self.distill:
            raise BadInput(f"bad value teacher_run_id={self.teacher_run_id!r} with distill=false for method "
                           "'reactnet': a teacher is used only with distill=true")


def distribution_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The released `DistributionLoss`: −mean_n Σ_k softmax(t_n)_k·log_softmax(s_n)_k (no temperature)."""
    target = F.softmax(teacher_logits.detach().float(), dim=1)
    return -(target * F.log_softmax(student_logits.float(), dim=1)).sum(dim=1).mean()


class ChannelShift(archs.LearnableBias):
    """RSign's shift, x + b_c (b = −β, init 0): over dim 1 of a conv's (N, C, H, W) input, or over the last
    dim of a linear layer's (…, C) input (`features_last`); an `archs.LearnableBias`, so `bnnbench.cost`
    counts b as real parameters."""

    def __init__(self, channels: int, features_last: bool = False):
        super().__init__(channels)
        self.features_last = features_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.bias.reshape(-1) if self.features_last else self.bias.reshape((1, -1) + (1,) * (x.dim() - 2)))


class RSignLayer(nn.Module):
    """A binary layer whose input is sign(x − β_c): the shift `shift`, then `layer`, which takes the sign
    (its input quantizer, ApproxSign) and applies its binary weights."""

    def __init__(self, layer: BinaryLayer):
        super().__init__()
        linear = isinstance(layer, nn.Linear)
        self.shift = ChannelShift(layer.in_features if linear else layer.in_channels, features_last=linear)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.shift(x))


def _has_shift(parent: nn.Module, child: str) -> bool:
    """Whether the network already shifts this layer's input (the RSign of `archs.BnewBlock`)."""
    return isinstance(parent, archs.BnewBlock) and child == "conv"


@METHODS.register("reactnet")
class ReactnetMethod(BinaryMethod):
    Config = ReactnetConfig
    # resnet/*/run.sh: Bi-Real-18 based ReActNet, batch 512, 128 epochs per step
    paper_recipe = {"arch": "bireal_resnet18", "epochs": 256, "batch_size": 512}
    # run.sh and train.py: Adam 2.5e-3, linear per epoch, weight decay 1e-5 (step 1) / 0 (step 2), KD from a teacher
    paper_config = {"optimizer": "adam", "lr": 2.5e-3, "scheduler": "linear", "lr_min": 0.0, "weight_decay": 1e-5,
                    "phase2_weight_decay": 0.0, "fp_shortcuts": True, "activation": "rprelu", "distill": True}
    phase1_fraction = 0.5  # 128 of 256 epochs

    def __init__(self, config, arch, num_classes, in_channels, image_size, mode="fair", epochs=1):
        self._input_shape = (in_channels, image_size, image_size)
        self._num_classes = num_classes
        super().__init__(config, arch, num_classes, in_channels, image_size, mode=mode, epochs=epochs)
        self.__dict__["_teacher"] = None  # no submodule: not trained, moved, saved, exported or costed

    def make_weight_quantizer(self, layer):
        return MagnitudeAwareSign(self.config.weight_gradient)

    def make_input_quantizer(self, layer):
        return get_quantizer("approx_sign")

    def build_model(self, arch, num_classes, in_channels, image_size):
        """The binarized backbone (its activations RPReLU with `activation=rprelu`, one of `archs.ACTIVATIONS`),
        then the RSign shift before each binary layer with a binary input."""
        model = super().build_model(arch, num_classes, in_channels, image_size)
        for name, module in list(model.named_modules()):
            if isinstance(module, BinaryLayer) and module.binary_input:
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                if not _has_shift(parent, child):
                    setattr(parent, child, RSignLayer(module))
        return model

    # -- the teacher ----------------------------------------------------------------------------------
    @property
    def teacher(self) -> nn.Module | None:
        return self.__dict__["_teacher"]

    def load_teacher(self, tracking_uri: str | None, run_id: str) -> None:
        """Use the MLflow model of FINISHED run `run_id` as the frozen teacher; BadInput naming the run if it is
        unknown, not FINISHED, has no model, or does not map this input shape to this number of classes."""
        from bnnbench import tracking

        summary = tracking.run_summary(tracking_uri, run_id)
        if summary["status"] != "FINISHED":
            raise BadInput(f"teacher run {run_id} is {summary['status']}: the teacher must be a FINISHED run")
        network = tracking.load_model(tracking_uri, run_id)
        shape = "x".join(map(str, self._input_shape))
        try:
            with torch.no_grad():
                out = network.eval()(torch.zeros(1, *self._input_shape))
        except Exception as error:  # noqa: BLE001 (any failure of a foreign network is the user's input)
            raise BadInput(f"teacher run {run_id}: its network does not take {shape} images "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
        if tuple(out.shape) != (1, self._num_classes):
            raise BadInput(f"teacher run {run_id}: its network gives {tuple(out.shape[1:])} outputs for a {shape} "
                           f"image, the student has {self._num_classes} classes")
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        self.__dict__["_teacher"] = network.eval()

    def on_fit_start(self):
        if self.config.distill and self.teacher is None:
            raise RuntimeError("reactnet: distill=true needs a teacher; bnnbench.runner.run loads one "
                               "(teacher_run_id) or trains one first")

    def loss(self, logits, target, inputs=None):
        if not self.config.distill:
            return F.cross_entropy(logits, target)
        teacher = self.teacher
        if next(teacher.parameters()).device != inputs.device:
            teacher.to(inputs.device)
        teacher.eval()
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        return distribution_loss(logits, teacher_logits)

    # -- optimization: conv weights decayed (per step), no clamp in step 1 -------------------------------------
    def parameter_groups(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.dim() == 4], "weight_decay": self.config.weight_decay,
                 "decayed": True},
                {"params": [p for p in params if p.dim() != 4], "weight_decay": 0.0, "decayed": False}]

    def on_phase2_start(self):
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if group.get("decayed"):
                    group["weight_decay"] = self.config.phase2_weight_decay

    @torch.no_grad()
    def after_optimizer_step(self):
        """Nothing: the released step 1 trains θ unclamped, and step 2 never clips it."""


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-4, log=True)}
