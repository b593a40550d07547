"""`bnew`: BNEW, binary networks trained by proximal weight updates (Paren & Poudel, BMVC 2022).

Paper: shared/papers/004_58931979113fa892.txt (the supplement; the main text's equations are
restated in METHODS.md); released code Alasdair-P/bnew (`binary_main.py`, `prox.py`), which produced
the published numbers.

What is reproduced. There is no latent copy: the weights w themselves are used in the forward pass
during training (quantizer `direct`) and receive the plain gradient. Activations are binary in both
phases: every binary layer's input is sign(x), with the ApproxSign gradient of Bi-Real Net
(`activation_quantizer=approx_sign`, the comparison's choice; `bnn` = the supplement's "classic STE"),
taken of PReLU(BN(x)) as in the comparison's PReLU blocks (`activation`; see `bop` for why PReLU).
- Phase 1 (`phase1_epochs`): the weights are clamped to [−1, 1] after every optimizer step.
- Phase 2 starts from phase 1's best-validation state: the method keeps a copy of the model's state
  at the best phase-1 `val/acc` in memory and loads it at the phase boundary; Adam's moments are
  reset and the LR schedule restarts, as the released code starts phase 2 as a new run from
  `best_model.pkl`. After backward and before each optimizer step (`on_before_optimizer_step`) the
  binary weights take a proximal step towards ±1, w ← clamp((1+2λ)·w, −1, 1) (`reg=bnew`), with
  λ = λ₀·(e+1)/E in phase-2 epoch e of E (λ₀ = `lambda_max`). Variants from the supplement:
  `reg=l1`, w ← clamp(w + λ·sign w), and `reg=l2`, w ← clamp((w + λ·sign w)/(1+λ)).
- From the start of phase-2 epoch `freeze_epoch` the binary weights are set to sign(w) and frozen
  (no gradient, no prox); the real-valued parameters keep training on the hard binary network.
- Binary parameters: every conv/linear weight except the first conv and the classifier (the shared
  backbone's full-precision layers) and, with `fp_shortcuts` (paper mode), the 1×1 shortcut convs.

Validation and test always use sign(w) (METHODS.md), also in phase 1, so `val/acc` — and hence the
phase-1 state phase 2 starts from — measures the hard binary network. `train/binary_gap` logs
mean |w − sign(w)| over the binary weights (the released code's `dist_to_binary`), `train/lambda`
the current λ, and `train/flip_rate` (from the base) the fraction of signs that changed in an epoch.

Epoch budget. Both phases run in one `bnnbench run` of `epochs` epochs: `phase1_epochs` defaults to
one sixth of the run (paper: 200 of 1200) and `freeze_epoch` to leave the last 1.9 % of phase 2
frozen, at least one epoch (paper: 981 of 1000, i.e. frozen after the released code's epoch 980).
The released code applies the prox with λ proportional to the step count of a 1000-epoch phase 2;
on short runs the total pull towards ±1 (about exp(λ₀·steps per epoch·E)) is much weaker, so a
larger `lambda_max` may be needed there (see `search_space`).

Paper mode: `resnet20`, batch 128, 1200 epochs (200 + 1000), Adam lr 0.01 with linear decay in each
phase, λ₀ = 1e-3, 1×1 shortcut convs full precision (supplement Table 1, CIFAR-100 without
distillation: 52.7 ± 0.3 at 200 epochs, 55.0 at 1000). Fair mode: the shared backbone (all convs but
the first binary) and the shared cosine schedule, restarted at phase 2 (`plateau` does not restart).

Deviations:
- Our `resnet20` replaces the comparison's ReActNet-style ResNet-20 (learnable biases before signs
  and around PReLU, learnable per-channel scales, average-pool + 1×1 shortcuts).
- The released code selects the phase-1 checkpoint by validation accuracy of the real-weight network
  and runs phase 1 and 2 as separate jobs; here the selection uses the hard binary network's
  `val/acc` (our evaluation convention) and both phases share one run, one MLflow record.
- Phase 1 clamps after each step (METHODS.md); the released code clamps before it.
- LR and λ change per epoch, not per step; the released script used λ₀ = 1e-4 for four of its five
  CIFAR-100 seeds and 1e-3 for one.
- sign(0) = +1 in the prox variants (the released code's `torch.sign` leaves an exact 0 at 0).
- No distillation (the supplement's distillation rows are not reproduced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveFloat
from bnnbench.errors import BadInput
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import get_quantizer, sign
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class BnewConfig(MethodConfig):
    lr: PositiveFloat = 0.01  # Adam learning rate (per step); the schedule restarts at phase 2
    weight_decay: NonNegativeFloat = 0.0  # L2 coefficient; 0 as in the released code
    lambda_max: NonNegativeFloat = 1e-3  # λ₀: prox strength at the end of the ramp λ = λ₀·(e+1)/E (per step)
    reg: Literal["bnew", "l1", "l2"] = "bnew"  # prox: bnew (1+2λ)·w, l1 w + λ·sign w, l2 (w + λ·sign w)/(1+λ)
    phase1_epochs: NonNegativeInt | None = None  # epochs of phase 1 (0 = no pretraining); None = one sixth of the run
    # phase-2 epoch (0-based) from which w = sign(w), frozen; None = last 1.9 %
    freeze_epoch: NonNegativeInt | None = None
    activation_quantizer: Literal["approx_sign", "bnn"] = "approx_sign"  # gradient of the sign activation
    activation: Literal["prelu", "hardtanh", "identity"] = "prelu"  # what BN's output passes before the sign
    fp_shortcuts: bool = False  # keep 1×1 shortcut convs full precision (paper mode)


def phase_plan(config: BnewConfig, epochs: int) -> tuple[int, int]:
    """(phase-1 epochs, phase-2 epoch at which the weights are signed and frozen) for a run of `epochs`."""
    phase1 = config.phase1_epochs
    if phase1 is None:
        phase1 = min(max(round(epochs / 6), 1), epochs - 1)
    elif not 0 <= phase1 < epochs:
        raise BadInput(f"bad phase1_epochs {phase1}: must be 0..{epochs - 1} for a run of {epochs} epochs "
                       "(phase 2 needs at least one epoch)")
    phase2 = epochs - phase1
    freeze = config.freeze_epoch
    if freeze is None:
        freeze = phase2 - max(1, round(0.019 * phase2))
    elif not 0 <= freeze < phase2:
        raise BadInput(f"bad freeze_epoch {freeze}: must be a phase-2 epoch, 0..{phase2 - 1} "
                       f"({epochs} epochs, {phase1} of them in phase 1)")
    return phase1, freeze


@METHODS.register("bnew")
class BnewMethod(BinaryMethod):
    Config = BnewConfig
    paper_recipe = {"arch": "resnet20", "epochs": 1200, "batch_size": 128}
    paper_config = {"scheduler": "linear", "fp_shortcuts": True}
    soft_weights = True  # the training forward uses w in [−1, 1]: the base logs `train/binary_gap`

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.phase1_epochs, self.freeze_epoch = phase_plan(self.config, self.epochs)
        self.frozen = False
        self._best_phase1_acc = -math.inf
        self._best_phase1_state: dict[str, torch.Tensor] | None = None

    def resume_state(self) -> dict:
        return {**super().resume_state(), "frozen": self.frozen, "best_phase1_acc": self._best_phase1_acc,
                "best_phase1_state": self._best_phase1_state}

    def load_resume_state(self, state: dict) -> None:
        super().load_resume_state(state)
        self._best_phase1_acc = state.get("best_phase1_acc", self._best_phase1_acc)
        self._best_phase1_state = state.get("best_phase1_state", self._best_phase1_state)
        if state.get("frozen") and not self.frozen:
            self.freeze()  # the weights are ±1 already; this stops their updates again

    def make_weight_quantizer(self):
        return get_quantizer("direct")

    def make_input_quantizer(self):
        return get_quantizer(self.config.activation_quantizer)

    def binary_weights(self) -> list[torch.nn.Parameter]:
        return [layer.weight for _, layer in self.binary_layers()]

    # -- phases ---------------------------------------------------------------------------------------
    def in_phase2(self) -> bool:
        return self.current_epoch >= self.phase1_epochs

    def lambda_at(self, epoch: int) -> float:
        """λ of run epoch `epoch`: λ₀·(e+1)/E over phase-2 epochs e of E; 0 in phase 1."""
        phase2_epoch = epoch - self.phase1_epochs
        if phase2_epoch < 0:
            return 0.0
        return self.config.lambda_max * (phase2_epoch + 1) / (self.epochs - self.phase1_epochs)

    @torch.no_grad()
    def prox(self, lam: float) -> None:
        """One proximal step of the regulariser towards ±1 on every binary weight."""
        for w in self.binary_weights():
            if self.config.reg == "bnew":
                w.mul_(1 + 2 * lam)
            elif self.config.reg == "l1":
                w.add_(sign(w), alpha=lam)
            else:
                w.add_(sign(w), alpha=lam).div_(1 + lam)
            w.clamp_(-1.0, 1.0)

    @torch.no_grad()
    def freeze(self) -> None:
        """w ← sign(w) and no further updates: the end of BNEW's phase 2."""
        for w in self.binary_weights():
            w.copy_(sign(w))
            w.requires_grad_(False)
            w.grad = None
        self.frozen = True

    def on_train_epoch_start(self):
        epoch = self.current_epoch
        if epoch == self.phase1_epochs and epoch > 0:
            if self._best_phase1_state is not None:
                self.model.load_state_dict(self._best_phase1_state)
                self._best_phase1_state = None
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()  # phase 2 is a fresh Adam, as the released code's second run
        if self.in_phase2() and epoch - self.phase1_epochs >= self.freeze_epoch and not self.frozen:
            self.freeze()
        super().on_train_epoch_start()
        self.log("train/lambda", self.lambda_at(epoch))

    def on_before_optimizer_step(self, optimizer):
        if self.in_phase2() and not self.frozen:
            self.prox(self.lambda_at(self.current_epoch))

    @torch.no_grad()
    def after_optimizer_step(self):
        if not self.in_phase2():
            for w in self.binary_weights():
                w.clamp_(-1.0, 1.0)

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking or self.in_phase2():
            return
        acc = float(self.trainer.callback_metrics["val/acc"])
        if acc > self._best_phase1_acc:
            self._best_phase1_acc = acc
            self._best_phase1_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # -- optimization: the configured schedule runs once per phase ------------------------------------
    def lr_factor(self, epoch: int) -> float:
        c = self.config
        if epoch < self.phase1_epochs:
            progress = epoch / self.phase1_epochs
        else:
            progress = (epoch - self.phase1_epochs) / (self.epochs - self.phase1_epochs)
        floor = c.lr_min / c.lr
        if c.scheduler == "linear":
            return 1 + (max(floor, 1e-8) - 1) * progress
        return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2

    def configure_optimizers(self):
        if self.config.scheduler not in ("cosine", "linear"):
            return super().configure_optimizers()
        optimizer = self.make_optimizer()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: self.lr_factor(epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
            "lambda_max": trial.suggest_float("lambda_max", 1e-4, 1e-1, log=True),
            "reg": trial.suggest_categorical("reg", ["bnew", "l1", "l2"])}
