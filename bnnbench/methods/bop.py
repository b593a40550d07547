"""`bop`: the Binary Optimizer (Helwegen, Widdicombe, Geiger, Wang, Koutsouri & Lee, NeurIPS 2019,
arXiv:1906.02107, "Latent Weights Do Not Exist: Rethinking Binarized Neural Network Optimization").

No latent weights: the binary layers store their weights as ±1 and the forward pass uses them as they
are (quantizer `direct`, which hands ℓ' to the stored weight unchanged). The `Bop` optimizer below keeps
an exponential moving average of the gradient, m ← (1−γ)·m + γ·ℓ', and flips w_j ← −w_j where
|m_j| > τ and sign(m_j) = sign(w_j), i.e. where the gradient has consistently pointed towards the
other sign (Algorithm 1 of the paper). The adaptivity rate γ decays ×0.1 every 100 epochs
(`gamma_schedule=step`, the paper's CIFAR-10 setting) or linearly to zero over the run's (phase 2's)
epochs or optimizer steps (`gamma_schedule=linear`, with `lr_interval`). Every real-valued parameter
(BN, PReLU, shifts, first conv, classifier, full-precision shortcuts) is trained by Adam. Activations are
binary: every binary layer's input is sign(x), with the ApproxSign gradient of Bi-Real Net
(`activation_quantizer=approx_sign`) or BinaryNet's gate (`bnn`). On the shared backbones what the sign
sees is PReLU(BN(x)) (`activation=prelu`; while its learnt slope stays positive PReLU keeps the sign of
its input, so the forward equals sign(BN(x)) and the slope scales the gradient of negative inputs;
`identity`/`hardtanh` are options); `bnew_resnet20` has its own RPReLU blocks.

Why one optimizer object. Lightning's automatic optimization steps exactly one optimizer per batch
(two optimizers require manual optimization, i.e. rewriting `training_step`). `Bop` therefore
subclasses Adam: groups marked `binary` get the flip rule, all other groups Adam's update, in one
`step()`; the shared LR schedulers, `state_dict()` and checkpoints see one optimizer. The LR
schedule acts on Adam's `lr` only; γ lives in its own group key and follows its own schedule. In
phase 1 of a two-phase run (below) the weight group is not `binary`: Adam trains it as real weights.

`train/flip_rate` (from the base) is the fraction of stored ±1 weights whose sign differs between
the start and the end of an epoch: for Bop these are exactly the flips (a weight flipped twice in
one epoch counts as unchanged).

Released code. Helwegen et al.'s own is larq's `Bop` (larq/larq, `larq/optimizers.py`): m ← m + γ·(g − m)
and w ← sign(−sign(w·m − τ)·w), the same flip rule, with γ = 1e-4 and τ = 1e-8 by default; fair mode
follows the paper with these values and its ×0.1-per-100-epochs γ decay. The published number paper
mode compares with comes from the BNEW comparison (Paren & Poudel, "Training Binarized Neural Networks
the Easy Way", BMVC 2022, supplement Table 1, CIFAR-100, 200 epochs, no distillation: BOP 54.3 ± 0.7),
whose released code Alasdair-P/bnew runs Bop with `bop.py` (class `BOP`: the weights are set to
`torch.sign` of their starting values when the optimizer is built; m ← (1−γ)·m + γ·g; flip where
|m| > τ and `sign(m) == sign(w)`) and `bop_main.py` (Bop with γ = 1e-4, τ = 1e-8 on every conv weight
but the first conv and the downsample shortcuts; Adam lr 0.01 on the rest; both γ and the LR decay
linearly per iteration, γ_t = 1e-4·(1 − t/(T − 1)), by `utils/lr_scheduler.py`; the stored ±1 weights
are validated every epoch and the best epoch is tested), launched by `reproduce/bop/phase_2_bop.py`
(200 epochs, batch 128, model `brn`, from the phase-1 checkpoint `phase_1_k/best_model.pkl` that
`reproduce/cifar100/phase_1_100.py` trains: 200 epochs of real weights clamped to [−1, 1] after backward
and before each step, binary activations, Adam lr 0.01 decaying linearly per iteration). Paper mode
reproduces that: `bnew_resnet20` (`archs.BnewResNet20`), batch 128, 400 epochs of which `phase1_epochs`
(None: half the run) 200 are the two-phase start of `BinaryMethod` (`clamp_before_step`), then Bop from
the sign of the best phase-1 weights with a fresh optimizer, γ = 1e-4 and the LR decaying linearly per
step (`gamma_schedule=linear`, `lr_interval=step`), τ = 1e-8, 1×1 shortcut convs full precision. Fair
mode: the shared backbone (all convs but the first binary, classifier real), no phase 1 (weights start
at the sign of the usual initialisation), the shared cosine schedule for Adam per epoch, and the
paper's γ, τ and γ steps.

Deviations:
- `phase_2_bop.py` launches `bop_main2.py`, which the repository does not contain; `bop_main.py` (the
  same loop, whose teacher network is never built) is taken as its description.
- sign(0): the released `BOP` signs the phase-1 weights with `torch.sign`, so an exact 0 stays 0 and
  never flips (`sign(m) == sign(0)` is false); here sign(0) = +1. The released activation sign also maps
  an exact 0 input to 0 (such zeros do occur, e.g. BatchNorm outputs after integer-valued binary convs),
  bnnbench's to +1.
- Phase 1's best state is chosen by `val/acc` of the hard binary network (sign(w)), not of the
  real-weight network as in the released code, and the run's best epoch over both phases is tested.
- Both phases share one run; bnnbench's data pipeline (CIFAR-100: stratified 45,000/5,000 split).
- Helwegen et al.'s own CIFAR-10 recipe (BinaryNet network, 500 epochs, 91.3 %) is not the paper mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range
from bnnbench.layers import binary_layers
from bnnbench.methods.base import AdamBeside, BinaryMethod
from bnnbench.quantizers import get_quantizer, sign
from bnnbench.registry import METHODS


class Bop(AdamBeside):
    """Bop's flip rule for parameter groups marked `binary`, Adam for every other group.

    A binary group holds weights that are exactly ±1 and has keys `gamma` (adaptivity rate of the
    gradient average, per step) and `tau` (flip threshold, in gradient units). Its state per weight is
    `momentum` (m). The loop around the rule is `AdamBeside`'s.
    """

    own_rule = "binary"

    def __init__(self, params, lr: float = 1e-3, gamma: float = 1e-4, tau: float = 1e-8, **adam_options):
        super().__init__(params, lr=lr, **adam_options)
        for group in self.param_groups:
            group.setdefault("binary", False)
            group.setdefault("gamma", gamma)
            group.setdefault("tau", tau)

    def update(self, w, group, state):
        if "momentum" not in state:
            state["momentum"] = torch.zeros_like(w)
        m = state["momentum"]
        m.mul_(1 - group["gamma"]).add_(w.grad, alpha=group["gamma"])
        flip = (m.abs() > group["tau"]) & ((m > 0) == (w > 0))
        w.copy_(torch.where(flip, -w, w))


@dataclass(frozen=True)
class BopConfig(MethodConfig):
    lr: PositiveFloat = 0.01  # Adam learning rate of the real-valued parameters (per step)
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient of the real-valued parameters (never the ±1 weights)
    optimizer: Literal["adam"] = "adam"  # real-valued parameters: Adam, as in the paper
    # adaptivity rate γ of the gradient moving average, in (0, 1] (per step, dimensionless)
    gamma: Annotated[float, Range(0.0, 1.0, low_open=True)] = 1e-4
    tau: NonNegativeFloat = 1e-8  # flip threshold τ on |m| (gradient units)
    gamma_schedule: Literal["step", "linear"] = "step"  # step: ×gamma_decay every gamma_decay_epochs
    # γ multiplier at each step of the `step` schedule, in (0, 1] (dimensionless)
    gamma_decay: Annotated[float, Range(0.0, 1.0, low_open=True)] = 0.1
    gamma_decay_epochs: PositiveInt = 100  # epochs between γ decays of the `step` schedule
    activation_quantizer: Literal["approx_sign", "bnn"] = "approx_sign"  # gradient of the sign activation
    activation: Literal["prelu", "hardtanh", "identity"] = "prelu"  # what BN's output passes before the sign
    fp_shortcuts: bool = False  # keep 1×1 shortcut convs full precision (the BNEW comparison's network)
    phase1_epochs: NonNegativeInt | None = 0  # two-phase start: epochs of real weights first (None = half the run)
    clamp_before_step: bool = False  # phase 1 clamps after backward, before the optimizer step (released)
    lr_interval: Literal["epoch", "step"] = "epoch"  # LR and linear γ schedules per epoch or per optimizer step


@METHODS.register("bop")
class BopMethod(BinaryMethod):
    Config = BopConfig
    paper_recipe = {"arch": "bnew_resnet20", "epochs": 400, "batch_size": 128}
    paper_config = {"scheduler": "linear", "gamma_schedule": "linear", "fp_shortcuts": True, "phase1_epochs": None,
                    "clamp_before_step": True, "lr_interval": "step"}

    def make_weight_quantizer(self, layer):
        return get_quantizer("direct")

    def make_input_quantizer(self, layer):
        return get_quantizer(self.config.activation_quantizer)

    def build_model(self, arch, num_classes, in_channels, image_size):
        model = super().build_model(arch, num_classes, in_channels, image_size)
        if self.phase1_epochs == 0:  # else phase 1 trains real weights and `on_phase2_start` signs them
            self._sign_weights(model)
        return model

    @staticmethod
    @torch.no_grad()
    def _sign_weights(model) -> None:
        for _, layer in binary_layers(model):
            layer.weight.copy_(sign(layer.weight))

    def parameter_groups(self):
        binary = [layer.weight for _, layer in self.binary_layers()]
        binary_ids = {id(w) for w in binary}
        real = [p for p in self.parameters() if p.requires_grad and id(p) not in binary_ids]
        return [{"params": real}, {"params": binary, "binary": not self.in_phase1(), "binary_weights": True}]

    def on_phase2_start(self):
        self._sign_weights(self.model)  # the released `BOP` signs the loaded phase-1 weights

    def make_optimizer(self):
        c = self.config
        return Bop(self.parameter_groups(), lr=c.lr, gamma=c.gamma, tau=c.tau, weight_decay=c.weight_decay)

    def gamma_at(self, epoch: int, step: int | None = None) -> float:
        """γ at run epoch `epoch` (or optimizer step `step`, counted from the run's start, for the linear
        schedule per step), counted from the start of phase 2: γ₀·(1 − progress) or γ₀·decay^(e // period)."""
        c = self.config
        if c.gamma_schedule == "linear":
            return c.gamma * (1 - self.phase_progress(epoch, step))
        return c.gamma * c.gamma_decay ** (self.phase_epoch(epoch) // c.gamma_decay_epochs)

    def _set_gamma(self, gamma: float) -> None:
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if group.get("binary_weights"):
                    group["gamma"] = gamma
                    group["binary"] = not self.in_phase1()  # phase 1: Adam trains them as real weights

    def _per_step(self) -> bool:
        return self.config.gamma_schedule == "linear" and self.config.lr_interval == "step"

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        gamma = self.gamma_at(self.current_epoch, self.global_step if self._per_step() else None)
        self._set_gamma(gamma)
        self.log("train/gamma", gamma)

    def on_train_batch_start(self, batch, batch_idx):
        if self._per_step():
            self._set_gamma(self.gamma_at(self.current_epoch, self.global_step))


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "gamma": trial.suggest_float("gamma", 1e-6, 1e-2, log=True),
            "tau": trial.suggest_float("tau", 1e-10, 1e-5, log=True)}
