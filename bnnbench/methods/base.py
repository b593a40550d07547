"""`BinaryMethod`: the LightningModule every training method subclasses.

It owns what all methods share — building the backbone and binarizing it, the training/validation/
test steps, metrics (torchmetrics), the optimizer and LR schedule, early stopping, the NaN guard and
the BNN diagnostics — and exposes small hooks for what differs. A method overrides only hooks:
`make_weight_quantizer(layer)` and `make_input_quantizer(layer)` (called once per conv/linear layer with
that layer, so per-channel parameters get its size; None keeps it full precision or its input real),
`activation` (a name of `archs.ACTIVATIONS`, ReActNet's `rprelu` among them, which `cost` counts),
`full_precision_layers`, `parameter_groups`, `make_optimizer`, `after_optimizer_step`, `loss` (it sees
the batch: distillation), `resume_state` (Python-side state a resumed run needs), `on_phase2_start`, and
Lightning's own epoch hooks for schedules, which `set_quantizer_param` applies to the quantizers.
It never overrides `training_step` wholesale.

Two-phase start (BNEW's recipe, Paren & Poudel, "Training Binarized Neural Networks the Easy Way", BMVC
2022, as its released code Alasdair-P/bnew runs every method it compares). A config with a
`phase1_epochs` field asks for it: phase 1 trains the binary layers' latent weights as real weights
(the training forward uses them as they are, with the plain gradient) clamped to [−1, 1], while the
activations are already binary; phase 2 is the method itself. The switch, at the first phase-2 epoch,
loads the model state of the best phase-1 `val/acc`, clears the optimizer's state (moments, Bop's
gradient average) and restarts the LR schedule, because the released code runs phase 2 as a new job
from phase 1's `best_model.pkl`; then `on_phase2_start` lets the method prepare (Bop signs the weights).
Evaluation uses hard binary weights in both phases. `clamp_before_step` (on a config) applies the
phase-1 clamp after backward and before the optimizer step, as the released code does, instead of after
the step. `phase1_epochs=None` takes the class's `phase1_fraction` of the run. A checkpoint carries the
best phase-1 state until the switch (`resume_state`), so a resumed run switches to the same weights.

LR schedule: `scheduler=cosine|linear` decays per epoch, or per optimizer step where the config has
`lr_interval=step` (the released BNEW scripts' `LRScheduler`: step t of T in a phase gets the factor
1 − t/(T − 1), so the last step runs at `lr_min`), and restarts at phase 2. Two per-epoch variants that
released codes use, for a config that has the field: `warmup_epochs` W (ReCU's `--warm_up`: epochs
0..W−1 at lr·(e+1)/W, then the decay from 1 at epoch W − 1 over the remaining E − W + 1 epochs) and
`lr_step_first` (AdaSTE's and Bi-Real Net's loops step the scheduler before each epoch, the first
included, so epoch e trains at the value of e + 1 and the last one at `lr_min`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from bnnbench import archs
from bnnbench.config import MethodConfig, apply_overrides
from bnnbench.errors import BadInput
from bnnbench.layers import binarize, binary_layers


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run is stopped and marked FAILED."""


def plan_phase1(phase1_epochs: int | None, epochs: int, fraction: float) -> int:
    """Phase-1 epochs of a run of `epochs`: `phase1_epochs`, or `fraction` of the run (at least one epoch,
    leaving phase 2 at least one) when it is None; 0 = no phase 1."""
    if phase1_epochs is None:
        return min(max(round(epochs * fraction), 1), epochs - 1)
    if not 0 <= phase1_epochs < epochs:
        raise BadInput(f"bad phase1_epochs {phase1_epochs}: must be 0..{epochs - 1} for a run of {epochs} epochs "
                       "(phase 2 needs at least one epoch)")
    return phase1_epochs


class Phase1Gate(nn.Module):
    """A binary layer's weight quantizer in a two-phase run: while `full_precision` is set (phase 1) the
    training forward uses the latent weight as it is, with the plain gradient; evaluation, and training
    once it is cleared, use the wrapped quantizer `inner`."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.full_precision = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.full_precision and self.training else self.inner(w)

    def extra_repr(self) -> str:
        return f"full_precision={self.full_precision}"


class AdamBeside(torch.optim.Adam):
    """Adam for every parameter group except those whose `own_rule` key is true; `update` steps those.

    One optimizer object, so Lightning's automatic optimization, the LR schedule and checkpoints treat
    it as one. Adam never sees the own-rule groups' gradients: they are hidden during its step. Every
    own-rule state entry keeps a tensor `step` (the steps so far), which Adam's `load_state_dict`
    expects in every entry when a run resumes. Bop (`bop.Bop`) and the released AdaSTE optimizer
    (`adaste.FenBP`) are the two rules.
    """

    own_rule: ClassVar[str]  # the group key that marks a group as stepped by `update`

    def update(self, param: torch.Tensor, group: dict, state: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        hidden = []
        for group in self.param_groups:
            if not group[self.own_rule]:
                continue
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                state["step"] = state.get("step", torch.zeros(())) + 1
                self.update(param, group, state)
                hidden.append((param, param.grad))
                param.grad = None
        try:
            super().step()
        finally:
            for param, grad in hidden:
                param.grad = grad
        return loss


class BinaryMethod(pl.LightningModule):
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # RunConfig defaults in paper mode (arch, epochs, batch_size, image_size) and Config defaults.
    paper_recipe: ClassVar[dict[str, Any]] = {}
    paper_config: ClassVar[dict[str, Any]] = {}
    # True where the training forward uses soft (non-binary) weights (AdaSTE while annealing, PC, BNN++,
    # MD): the base then logs `train/binary_gap` each epoch. A method may make it a property.
    soft_weights: ClassVar[bool] = False
    # `phase1_epochs=None`: the fraction of the run that phase 1 takes (the paper recipe's ratio)
    phase1_fraction: ClassVar[float] = 0.5

    @classmethod
    def default_config(cls, mode: str = "fair") -> MethodConfig:
        config = cls.Config()
        if mode != "paper":
            return config
        return apply_overrides(config, cls.paper_config, what=f"paper_config key of method '{cls.name}'")

    def __init__(self, config: MethodConfig, arch: str, num_classes: int, in_channels: int, image_size: int,
                 mode: str = "fair", epochs: int = 1):
        super().__init__()
        self.config = config
        self.mode = mode
        self.epochs = epochs
        self.phase1_epochs = plan_phase1(getattr(config, "phase1_epochs", 0), epochs, self.phase1_fraction)
        self._best_phase1_acc = -math.inf
        self._best_phase1_state: dict[str, torch.Tensor] | None = None
        self._steps_per_epoch = 1
        self.model = self.build_model(arch, num_classes, in_channels, image_size)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.val_acc_best = float("nan")
        self.confusion_matrix: torch.Tensor | None = None  # of the best validation epoch, then of the test
        self._epoch_signs: list[torch.Tensor] = []

    # -- hooks a method overrides ---------------------------------------------------------------------
    @property
    def activation(self) -> str:
        return getattr(self.config, "activation", "relu")

    def make_weight_quantizer(self, layer: nn.Module) -> nn.Module | None:
        """A fresh weight quantizer for `layer` (the full-precision conv or linear layer it will quantize, for
        parameters sized per channel); None keeps the layer full precision (`fp`: every layer)."""
        return None

    def make_input_quantizer(self, layer: nn.Module) -> nn.Module | None:
        """A fresh activation quantizer for `layer`'s input; None keeps it real (BWN)."""
        return None

    def full_precision_layers(self, backbone: nn.Module) -> tuple[str, ...]:
        """The backbone's first conv and classifier, plus its 1×1 shortcut convs when the config has
        `fp_shortcuts` on (BNEW's and Bop's paper setting)."""
        shortcuts = archs.pointwise_convs(backbone) if getattr(self.config, "fp_shortcuts", False) else ()
        return tuple(backbone.full_precision_layers) + shortcuts

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Runs after every optimizer step. Default: clip latent weights to [−1, 1] when the config has
        `clip_latent` on (BinaryConnect, BinaryNet, XNOR-Net), so a sign flip stays reachable; in phase 1
        the clamp of the two-phase start (here unless `clamp_before_step`)."""
        if self.in_phase1():
            if not getattr(self.config, "clamp_before_step", False):
                self.clamp_binary_weights()
        elif getattr(self.config, "clip_latent", False):
            self.clamp_binary_weights()

    def on_phase2_start(self) -> None:
        """Runs once at the switch to phase 2, after the best phase-1 state is loaded and the optimizer's
        state cleared (a method whose phase 2 stores other weights, such as Bop, converts them here)."""

    def loss(self, logits: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of a batch: its logits, labels and images (`inputs`, for a method whose loss
        needs more than the logits, such as distillation from a teacher network that sees the images)."""
        return F.cross_entropy(logits, target)

    # -- model ----------------------------------------------------------------------------------------
    def build_model(self, arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        backbone = archs.build(arch, num_classes, in_channels, image_size, self.activation)

        def weight_quantizer(layer: nn.Module) -> nn.Module | None:
            quantizer = self.make_weight_quantizer(layer)
            return Phase1Gate(quantizer) if quantizer is not None and self.phase1_epochs > 0 else quantizer

        skip = self.full_precision_layers(backbone)
        return binarize(backbone, weight_quantizer, self.make_input_quantizer, skip=skip)

    def binary_layers(self):
        return binary_layers(self.model)

    @torch.no_grad()
    def clamp_binary_weights(self) -> None:
        for _, layer in self.binary_layers():
            layer.weight.clamp_(-1.0, 1.0)

    # -- two-phase start ------------------------------------------------------------------------------
    def in_phase1(self) -> bool:
        return self.current_epoch < self.phase1_epochs

    def phase_epoch(self, epoch: int | None = None) -> int:
        """The epoch counted from the start of its phase (the released code runs each phase as a new job)."""
        epoch = self.current_epoch if epoch is None else epoch
        return epoch if epoch < self.phase1_epochs else epoch - self.phase1_epochs

    def phase_epochs(self, epoch: int | None = None) -> int:
        """How many epochs the phase of `epoch` has."""
        epoch = self.current_epoch if epoch is None else epoch
        return self.phase1_epochs if epoch < self.phase1_epochs else self.epochs - self.phase1_epochs

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: the trainer's count once training runs, else the estimate made when
        the optimizer was configured (1 without a trainer)."""
        trainer = self._trainer
        batches = getattr(trainer, "num_training_batches", None) if trainer is not None else None
        if isinstance(batches, int | float) and math.isfinite(batches) and batches > 0:
            return int(batches)
        return self._steps_per_epoch

    def phase_progress(self, epoch: int, step: int | None = None) -> float:
        """How far into its phase a position is, in [0, 1]: per epoch e of E, e/E; per optimizer step t of T
        (`step` counted from the run's start), t/(T − 1), as the released code's linear `LRScheduler`."""
        if step is None:
            return self.phase_epoch(epoch) / max(self.phase_epochs(epoch), 1)
        per_epoch = self.steps_per_epoch
        epoch = step // per_epoch
        first = 0 if epoch < self.phase1_epochs else self.phase1_epochs * per_epoch
        total = self.phase_epochs(epoch) * per_epoch
        return min(max((step - first) / max(total - 1, 1), 0.0), 1.0)

    def _enter_phase(self) -> None:
        """At each epoch start: the weight gates follow the phase; at the first phase-2 epoch, the switch."""
        if self.phase1_epochs == 0:
            return
        phase1 = self.in_phase1()
        for _, layer in self.binary_layers():
            if isinstance(layer.weight_quantizer, Phase1Gate):
                layer.weight_quantizer.full_precision = phase1
        if self.current_epoch == self.phase1_epochs:
            if self._best_phase1_state is not None:
                self.model.load_state_dict(self._best_phase1_state)
                self._best_phase1_state = None
            if getattr(self.config, "clip_latent", False):
                self.clamp_binary_weights()  # the released STE clamps before every forward, the first included
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()  # a fresh optimizer, as the released code's phase-2 job
            self.on_phase2_start()

    def _track_best_phase1(self) -> None:
        if self.trainer.sanity_checking or not self.in_phase1():
            return
        acc = float(self.trainer.callback_metrics["val/acc"])
        if acc > self._best_phase1_acc:  # the first of equal epochs, as the released `best_model.pkl`
            self._best_phase1_acc = acc
            self._best_phase1_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def on_before_optimizer_step(self, optimizer):
        if self.in_phase1() and getattr(self.config, "clamp_before_step", False):
            self.clamp_binary_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- steps ----------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y, x)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"train/loss is {loss.item()} at epoch {self.current_epoch}, "
                                     f"step {self.global_step}")
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch, split: str, accuracy: MulticlassAccuracy):
        """Accuracy and confusion are torchmetrics states, summed over processes when computed; the loss
        is averaged over them (`sync_dist`): with several processes every number is the whole split's."""
        x, y = batch
        if not len(y):  # this process's share of a last batch smaller than the number of processes
            return
        logits = self(x)
        accuracy(logits, y)
        self.confusion.update(logits, y)
        self.log(f"{split}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=split == "val", sync_dist=True)
        self.log(f"{split}/acc", accuracy, on_epoch=True, prog_bar=split == "val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_acc)

    def on_validation_epoch_start(self):
        self.confusion.reset()

    def on_test_epoch_start(self):
        self.confusion.reset()

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        acc = float(self.trainer.callback_metrics["val/acc"])
        if not acc <= self.val_acc_best:  # also true while val_acc_best is NaN
            self.val_acc_best = acc
            self.confusion_matrix = self.confusion.compute().cpu()
        self.log("val/acc_best", self.val_acc_best)
        self._track_best_phase1()

    def on_test_epoch_end(self):
        self.confusion_matrix = self.confusion.compute().cpu()

    # -- BNN diagnostics: binary weights that flipped sign this epoch; training weights against evaluation ones --
    def on_train_epoch_start(self):
        self._enter_phase()
        self._epoch_signs = [layer.weight.detach() >= 0 for _, layer in self.binary_layers()]

    def on_train_epoch_end(self):
        if self.soft_weights:
            self.log("train/binary_gap", self.binary_gap())
        if not self._epoch_signs:
            return
        flipped = sum(((layer.weight.detach() >= 0) != before).sum()
                      for (_, layer), before in zip(self.binary_layers(), self._epoch_signs))
        total = sum(before.numel() for before in self._epoch_signs)
        self.log("train/flip_rate", flipped.float() / total)

    @torch.no_grad()
    def binary_gap(self) -> float:
        """Mean |w_train − w_eval| over the binary layers: the effective weights as the training forward
        computes them against those evaluation uses (each quantizer switched to training, then evaluation
        mode, for the measurement). 0 means training is already on the weights evaluation uses; measuring
        against the evaluation weight rather than sign(w) keeps a scale α ≠ 1 (FDA's α_c) out of it."""
        total, count = 0.0, 0
        for _, layer in self.binary_layers():
            quantizer = layer.weight_quantizer
            was_training = quantizer.training
            quantizer.train()
            trained = layer.effective_weight()
            quantizer.eval()
            evaluated = layer.effective_weight()
            quantizer.train(was_training)
            total += (trained - evaluated).abs().sum().item()
            count += trained.numel()
        return total / max(count, 1)

    def set_quantizer_param(self, name: str, value: float, inputs: bool = False) -> None:
        """Set a scheduled quantizer parameter in every binary layer's weight quantizer (AdaSTE's μ, mirror
        descent's β) and, with `inputs`, in every input quantizer too (IR-Net's t and k, FDA's η)."""
        for _, layer in self.binary_layers():
            quantizer = layer.weight_quantizer
            setattr(quantizer.inner if isinstance(quantizer, Phase1Gate) else quantizer, name, value)
            if inputs and layer.input_quantizer is not None:
                setattr(layer.input_quantizer, name, value)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.after_optimizer_step()

    # -- resumable state: what a checkpoint carries beyond parameters, buffers and optimizer state -------
    def resume_state(self) -> dict[str, Any]:
        """Python-side state a resumed run needs to continue exactly; a method with more extends it."""
        return {"val_acc_best": self.val_acc_best, "confusion_matrix": self.confusion_matrix,
                "best_phase1_acc": self._best_phase1_acc, "best_phase1_state": self._best_phase1_state}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        self.val_acc_best = state.get("val_acc_best", self.val_acc_best)
        self.confusion_matrix = state.get("confusion_matrix", self.confusion_matrix)
        self._best_phase1_acc = state.get("best_phase1_acc", self._best_phase1_acc)
        self._best_phase1_state = state.get("best_phase1_state", self._best_phase1_state)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["bnnbench"] = self.resume_state()

    def on_load_checkpoint(self, checkpoint):
        self.load_resume_state(checkpoint.get("bnnbench", {}))

    # -- optimization ---------------------------------------------------------------------------------
    @property
    def _monitor_mode(self) -> str:
        return "max" if self.config.monitor.endswith("acc") else "min"

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over `parameter_groups()`; a method with its own update rule (Bop) overrides it
        and keeps the shared LR schedule below."""
        c = self.config
        groups = self.parameter_groups()
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
        return cls(groups, lr=c.lr, weight_decay=c.weight_decay)

    def lr_factor(self, position: int, interval: str = "epoch") -> float:
        """The cosine/linear LR factor at an epoch or optimizer step, restarted at phase 2, with the config's
        warm-up and step-first shift (module docstring)."""
        c = self.config
        if interval == "epoch":
            epoch, epochs = self.phase_epoch(position), self.phase_epochs(position)
            warmup = getattr(c, "warmup_epochs", 0)
            if epoch < warmup:
                return (epoch + 1) / warmup
            start = max(warmup - 1, 0)  # the decay starts from 1 at the warm-up's last epoch
            span = max(epochs - start, 1)
            progress = min(epoch - start + int(getattr(c, "lr_step_first", False)), span) / span
        else:
            progress = self.phase_progress(0, position)
        floor = c.lr_min / c.lr
        if c.scheduler == "linear":
            return 1 + (floor - 1) * progress
        return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2

    def configure_optimizers(self):
        c = self.config
        optimizer = self.make_optimizer()
        if c.scheduler == "none":
            return optimizer
        interval = getattr(c, "lr_interval", "epoch")
        shaped = getattr(c, "warmup_epochs", 0) or getattr(c, "lr_step_first", False)
        if c.scheduler in ("cosine", "linear") and (self.phase1_epochs > 0 or interval == "step" or shaped):
            if interval == "step":
                epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 \
                    else self.epochs
                self._steps_per_epoch = max(round(self.trainer.estimated_stepping_batches / epochs), 1)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: self.lr_factor(t, interval))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
        if c.scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs, eta_min=c.lr_min)
        elif c.scheduler == "linear":
            scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, max(c.lr_min / c.lr, 1e-8),
                                                          total_iters=self.epochs)
        else:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=self._monitor_mode, factor=c.plateau_factor,
                patience=c.plateau_patience_epochs, min_lr=c.lr_min)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": c.monitor}}

    def configure_callbacks(self):
        c = self.config
        if c.early_stopping_patience_epochs <= 0:
            return []
        return [EarlyStopping(monitor=c.monitor, mode=self._monitor_mode, min_delta=c.early_stopping_min_delta,
                              patience=c.early_stopping_patience_epochs,
                              check_on_train_epoch_end=c.monitor.startswith("train/"))]
