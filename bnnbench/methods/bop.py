"""`bop`: the Binary Optimizer (Helwegen, Widdicombe, Geiger, Wang, Koutsouri & Lee, NeurIPS 2019,
arXiv:1906.02107, "Latent Weights Do Not Exist: Rethinking Binarized Neural Network Optimization").

No latent weights: the binary layers store their weights as ±1 (initialised to sign of the usual
initialisation) and the forward pass uses them as they are (quantizer `direct`, which hands ℓ' to
the stored weight unchanged). The `Bop` optimizer below keeps an exponential moving average of the
gradient, m ← (1−γ)·m + γ·ℓ', and flips w_j ← −w_j where |m_j| > τ and sign(m_j) = sign(w_j), i.e.
where the gradient has consistently pointed towards the other sign. The adaptivity rate γ decays ×0.1
every 100 epochs (`gamma_schedule=step`, the paper's CIFAR-10 setting) or linearly to zero
(`gamma_schedule=linear`, the BNEW released code). Every real-valued parameter (BN, PReLU, first conv,
classifier) is trained by Adam. Activations are binary: every binary layer's input is sign(x), with
the ApproxSign gradient of Bi-Real Net (`activation_quantizer=approx_sign`) as in the BNEW comparison
(Paren & Poudel, BMVC 2022; released code Alasdair-P/bnew), or BinaryNet's gate (`bnn`). What the
sign sees is PReLU(BN(x)) (`activation=prelu`), the real-valued non-linearity of the comparison's
ReActNet-style blocks; while its learnt slope stays positive PReLU keeps the sign of its input, so
the forward equals sign(BN(x)) and the slope scales the gradient of negative inputs
(`identity`/`hardtanh` are options).

Why one optimizer object. Lightning's automatic optimization steps exactly one optimizer per batch
(two optimizers require manual optimization, i.e. rewriting `training_step`). `Bop` therefore
subclasses Adam: groups marked `binary` get the flip rule, all other groups Adam's update, in one
`step()`; the shared LR schedulers, `state_dict()` and checkpoints see one optimizer. The LR
schedule acts on Adam's `lr` only; γ lives in its own group key and follows its own schedule.

`train/flip_rate` (from the base) is the fraction of stored ±1 weights whose sign differs between
the start and the end of an epoch: for Bop these are exactly the flips (a weight flipped twice in
one epoch counts as unchanged).

Paper mode follows the BNEW comparison (supplement Table 1, CIFAR-100 200 epochs: BOP 54.3 ± 0.7):
`resnet20`, batch 128, 200 epochs, Adam lr 0.01 with linear decay, γ = 1e-4 decaying linearly,
τ = 1e-8, 1×1 shortcut convs full precision. Fair mode: the shared backbone (all convs but the first
binary, classifier real) and the shared cosine schedule for Adam, with the paper's γ, τ and γ steps.

Deviations:
- The BNEW comparison started Bop from its phase-1 checkpoint (real weights, binary activations,
  200 epochs) and signed those weights; here Bop starts from the sign of a random initialisation.
- Paper mode uses our `resnet20` instead of the comparison's ReActNet-style ResNet-20 (learnable
  biases, per-channel scales, average-pool shortcuts); γ and the LR decay per epoch, not per step.
- Helwegen et al.'s own CIFAR-10 recipe (BinaryNet network, 500 epochs, 91.3 %) is not the paper
  mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from bnnbench.config import MethodConfig, NonNegativeFloat, PositiveFloat, PositiveInt, Range
from bnnbench.layers import binary_layers
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer, sign
from bnnbench.registry import METHODS


class Bop(torch.optim.Adam):
    """Bop's flip rule for parameter groups marked `binary`, Adam for every other group.

    A binary group holds weights that are exactly ±1 and has keys `gamma` (adaptivity rate of the
    gradient average, per step) and `tau` (flip threshold, in gradient units). Its state per weight is
    `momentum` (m). Adam never sees the binary groups' gradients: they are hidden during its step.
    """

    def __init__(self, params, lr: float = 1e-3, gamma: float = 1e-4, tau: float = 1e-8, **adam_options):
        super().__init__(params, lr=lr, **adam_options)
        for group in self.param_groups:
            group.setdefault("binary", False)
            group.setdefault("gamma", gamma)
            group.setdefault("tau", tau)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hidden = []
        for group in self.param_groups:
            if not group["binary"]:
                continue
            for w in group["params"]:
                if w.grad is None:
                    continue
                state = self.state[w]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(w)
                m = state["momentum"]
                m.mul_(1 - group["gamma"]).add_(w.grad, alpha=group["gamma"])
                flip = (m.abs() > group["tau"]) & ((m > 0) == (w > 0))
                w.copy_(torch.where(flip, -w, w))
                hidden.append((w, w.grad))
                w.grad = None
        try:
            super().step()
        finally:
            for w, grad in hidden:
                w.grad = grad
        return loss


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


@METHODS.register("bop")
class BopMethod(BinaryMethod):
    Config = BopConfig
    paper_recipe = {"arch": "resnet20", "epochs": 200, "batch_size": 128}
    paper_config = {"scheduler": "linear", "gamma_schedule": "linear", "fp_shortcuts": True}

    def make_weight_quantizer(self):
        return get_quantizer("direct")

    def make_input_quantizer(self):
        return get_quantizer(self.config.activation_quantizer)

    def build_model(self, arch, num_classes, in_channels, image_size):
        model = super().build_model(arch, num_classes, in_channels, image_size)
        with torch.no_grad():
            for _, layer in binary_layers(model):
                layer.weight.copy_(sign(layer.weight))
        return model

    def parameter_groups(self):
        binary = [layer.weight for _, layer in self.binary_layers()]
        binary_ids = {id(w) for w in binary}
        real = [p for p in self.parameters() if p.requires_grad and id(p) not in binary_ids]
        return [{"params": real}, {"params": binary, "binary": True}]

    def make_optimizer(self):
        c = self.config
        return Bop(self.parameter_groups(), lr=c.lr, gamma=c.gamma, tau=c.tau, weight_decay=c.weight_decay)

    def gamma_at(self, epoch: int) -> float:
        c = self.config
        if c.gamma_schedule == "linear":
            return c.gamma * (1 - epoch / self.epochs)
        return c.gamma * c.gamma_decay ** (epoch // c.gamma_decay_epochs)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        gamma = self.gamma_at(self.current_epoch)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if group.get("binary"):
                    group["gamma"] = gamma
        self.log("train/gamma", gamma)


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
            "gamma": trial.suggest_float("gamma", 1e-6, 1e-2, log=True),
            "tau": trial.suggest_float("tau", 1e-10, 1e-5, log=True)}
