"""`bnew`: BNEW, binary networks trained by proximal weight updates.

Paper: Paren & Poudel, "Training Binarized Neural Networks the Easy Way", BMVC 2022 (main text and
supplementary material).

What is reproduced. There is no latent copy: the weights w themselves are used in the forward pass
during training (quantizer `direct`) and receive the plain gradient. Activations are binary in both
phases: every binary layer's input is sign(x), with the ApproxSign gradient of Bi-Real Net
(`activation_quantizer=approx_sign`; `bnn` is the supplement's "classic STE").
- Phase 1 (`phase1_epochs`, the shared two-phase start of `BinaryMethod`): the weights are clamped to
  [−1, 1] at every step. Phase 2 starts from phase 1's best-`val/acc` state with a fresh Adam and a
  restarted LR schedule.
- Phase 2: every step the binary weights take a proximal step towards ±1, w ← clamp((1+2λ)·w, −1, 1)
  (`reg=bnew`); variants from the supplement: `reg=l1`, w ← clamp(w + λ·sign w), and `reg=l2`,
  w ← clamp((w + λ·sign w)/(1+λ)). λ ramps linearly over the E phase-2 epochs: λ₀·(e+1)/E in phase-2
  epoch e (λ₀ = `lambda_max`), or, with `lagged_schedule`, λ₀·max(e, 1)/E (the released code, below).
- From phase-2 epoch `freeze_epoch` on, the binary weights are set to sign(w) and frozen (no gradient,
  no prox); the real-valued parameters keep training on the hard binary network.
- Binary parameters: every conv/linear weight except the first conv and the classifier and, with
  `fp_shortcuts` (paper mode), the 1×1 shortcut convs.
- Order of the clamp/prox and the optimizer step: the paper's proximal step (supplement, eq. 2, after
  ProxQuant) is w_{t+1} = prox(w_t − η·∇f(w_t)), so by default the clamp and the prox follow the
  optimizer step; `clamp_before_step` applies them after backward and before the step, as the released
  code does, so that the forward pass sees the weights before their prox.

Validation and test always use sign(w), also in phase 1, so `val/acc` measures the hard binary
network. `train/binary_gap` logs mean |w − sign(w)| over the binary weights (the released code's
`dist_to_binary`), `train/lambda` the current λ, `train/flip_rate` (from the base) the fraction of
signs that changed in an epoch.

Released code: Alasdair-P/bnew, which produced the published numbers. `binary_main.py` (the training
loop), `prox.py` (`prox_opt`: the binary parameters, the clamp `convex_hull` of phase 1, the prox
`u_reg`/`w_reg`/`U_reg` of `bnew_binary`/`l1_binary`/`l2_binary`, the λ ramp `adjust_reg`, the freeze
`binary_freeze`), `utils/lr_scheduler.py` (`LRScheduler`, linear per iteration), `models/ste_wide_resnet.py`
(`birealresnet20`, model `brn`), and the scripts `reproduce/cifar100/phase_1_100.py` (phase 1: 200
epochs, `--reg-type convex_hull`, Adam lr 0.01, `--lr_mode linear`, batch 128) and
`reproduce/cifar100/100bnew.py` (phase 2: 1000 epochs from phase 1's `best_model.pkl`, `--reg-type
bnew_binary`, Adam lr 0.01 linear, batch 128, `--reg` 1e-3 for its first job and 1e-4 for the other four,
`--freeze 980 … 999`). What the code computes, step by step: the LR of iteration t of T is
lr₀·(1 − t/(T − 1)); after `loss.backward()` and before `optimizer.step()` the binary weights are
clamped (phase 1) or take the prox (phase 2); λ is recomputed at the end of every epoch from the
index of the epoch just finished, λ₀·(e+1)/E after epoch e, so epoch e trains with λ₀·max(e, 1)/E;
at the end of phase-2 epoch 980 the weights become `torch.sign(w)` and stop training (epochs 981–999
run frozen). Paper mode reproduces all of this: `bnew_resnet20` (that network, see `archs.BnewResNet20`),
batch 128, 1200 epochs (`phase1_epochs=200` of them, by the default sixth of the run), Adam lr 0.01
with `scheduler=linear` and `lr_interval=step` in each phase, `clamp_before_step`, `lagged_schedule`,
λ₀ = 1e-4, `freeze_epoch` 981 (the default last 1.9 % of phase 2), 1×1 shortcut convs full precision.
Published: supplement Table 1, CIFAR-100 without distillation, 55.0 ± 0.5 at 1000 epochs (52.7 ± 0.3
at 200). Fair mode: the shared backbone (all convs but the first binary), the paper's order of the
update, λ₀·(e+1)/E, λ₀ = 1e-3, and the shared cosine schedule per epoch, restarted at phase 2
(`plateau` does not restart).

Epoch budget. Both phases run in one `bnnbench run` of `epochs` epochs: `phase1_epochs` defaults to one
sixth of the run (paper: 200 of 1200) and `freeze_epoch` to leave the last 1.9 % of phase 2 frozen, at
least one epoch (paper: from phase-2 epoch 981 of 1000; the released 200-epoch scripts of the ablation
freeze after epoch 180, i.e. `freeze_epoch=181`). The prox multiplies w by 1 + 2λ at every step, so
over phase 2 the total pull towards ±1 is about exp(λ₀·steps per epoch·E): λ₀ was tuned for a
1000-epoch phase 2, and short runs may need a larger `lambda_max` (see `search_space`).

Deviations:
- sign(0): the released code's `torch.sign` maps 0 to 0; here sign(0) = +1 everywhere. It matters at
  the freeze (an exact 0 weight stays 0, a ternary weight, in the released code and becomes +1 here),
  in the `l1`/`l2` prox (an exact 0 gets no pull there, +λ here) and in the activations, where exact
  zeros do occur (e.g. BatchNorm outputs after integer-valued binary convs): the released sign passes
  them as 0, bnnbench as +1, keeping every effective weight and activation exactly ±1.
- Phase 1's best state is chosen by `val/acc` of the hard binary network (sign(w)); the released code
  chooses it by the accuracy of the real-weight network. The released phase-2 job validates only in its
  frozen epochs (980–999 but 986), so its best model is always an exactly binary one; here every epoch
  is validated with sign(w) and the run's best `val/acc` epoch over both phases is tested (in practice a
  frozen epoch: before the freeze BatchNorm's statistics come from the soft weights). The released
  job's final test loads a `best_quant_model.pkl` that a `bnew_binary` job never writes, so how its test
  accuracies were read off is not in the code.
- λ₀: one setting per run; the released CIFAR-100 jobs used 1e-3 for one seed and 1e-4 for four
  (paper mode takes 1e-4).
- Both phases share one run and one MLflow record (the released code runs them as two jobs); the data
  pipeline is bnnbench's (CIFAR-100: a stratified 45,000/5,000 split, the released code's is random).
- No distillation (the supplement's distillation rows and `dist_main.py` are not reproduced).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bnnbench.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveFloat
from bnnbench.errors import BadInput
from bnnbench.methods.base import BinaryMethod, plan_phase1
from bnnbench.quantizers import get_quantizer, sign
from bnnbench.registry import METHODS

PHASE1_FRACTION = 1 / 6  # 200 of the paper's 1200 epochs


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
    lr_interval: Literal["epoch", "step"] = "epoch"  # LR schedule per epoch, or per optimizer step (released)
    clamp_before_step: bool = False  # clamp (phase 1) and prox (phase 2) before the optimizer step (released)
    lagged_schedule: bool = False  # λ of phase-2 epoch e = λ₀·max(e, 1)/E (released), else λ₀·(e+1)/E


def phase_plan(config: BnewConfig, epochs: int) -> tuple[int, int]:
    """(phase-1 epochs, phase-2 epoch at which the weights are signed and frozen) for a run of `epochs`."""
    phase1 = plan_phase1(config.phase1_epochs, epochs, PHASE1_FRACTION)
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
    paper_recipe = {"arch": "bnew_resnet20", "epochs": 1200, "batch_size": 128}
    paper_config = {"scheduler": "linear", "lr_interval": "step", "fp_shortcuts": True, "clamp_before_step": True,
                    "lagged_schedule": True, "lambda_max": 1e-4}
    soft_weights = True  # the training forward uses w in [−1, 1]: the base logs `train/binary_gap`
    phase1_fraction = PHASE1_FRACTION

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _, self.freeze_epoch = phase_plan(self.config, self.epochs)
        self.frozen = False

    def resume_state(self) -> dict:
        return {**super().resume_state(), "frozen": self.frozen}

    def load_resume_state(self, state: dict) -> None:
        super().load_resume_state(state)
        if state.get("frozen") and not self.frozen:
            self.freeze()  # the weights are ±1 already; this stops their updates again

    def make_weight_quantizer(self, layer):
        return get_quantizer("direct")

    def make_input_quantizer(self, layer):
        return get_quantizer(self.config.activation_quantizer)

    def binary_weights(self) -> list[torch.nn.Parameter]:
        return [layer.weight for _, layer in self.binary_layers()]

    # -- phase 2: prox, λ ramp, freeze ------------------------------------------------------------------
    def in_phase2(self) -> bool:
        return not self.in_phase1()

    def lambda_at(self, epoch: int) -> float:
        """λ of run epoch `epoch`: λ₀·(e+1)/E (or λ₀·max(e, 1)/E, `lagged_schedule`) in phase-2 epoch e
        of E; 0 in phase 1."""
        e = epoch - self.phase1_epochs
        if e < 0:
            return 0.0
        ramp = max(e, 1) if self.config.lagged_schedule else e + 1
        return self.config.lambda_max * ramp / (self.epochs - self.phase1_epochs)

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
        super().on_train_epoch_start()  # the phase switch (best phase-1 state, fresh Adam) happens here
        epoch = self.current_epoch
        if self.in_phase2() and self.phase_epoch() >= self.freeze_epoch and not self.frozen:
            self.freeze()
        self.log("train/lambda", self.lambda_at(epoch))

    def _prox_now(self) -> bool:
        return self.in_phase2() and not self.frozen

    def on_before_optimizer_step(self, optimizer):
        super().on_before_optimizer_step(optimizer)  # phase 1's clamp, with `clamp_before_step`
        if self.config.clamp_before_step and self._prox_now():
            self.prox(self.lambda_at(self.current_epoch))

    @torch.no_grad()
    def after_optimizer_step(self):
        super().after_optimizer_step()  # phase 1's clamp, without `clamp_before_step`
        if not self.config.clamp_before_step and self._prox_now():
            self.prox(self.lambda_at(self.current_epoch))


def search_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
            "lambda_max": trial.suggest_float("lambda_max", 1e-4, 1e-1, log=True),
            "reg": trial.suggest_categorical("reg", ["bnew", "l1", "l2"])}
