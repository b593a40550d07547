"""`BinaryMethod`: the LightningModule every training method subclasses.

It owns what all methods share — building the backbone and binarizing it, the training/validation/
test steps, metrics (torchmetrics), the optimizer and LR schedule, early stopping, the NaN guard and
the BNN diagnostics — and exposes small hooks for what differs. A method overrides only hooks:
`make_weight_quantizer`, `make_input_quantizer`, `activation`, `full_precision_layers`,
`parameter_groups`, `make_optimizer`, `after_optimizer_step`, `loss`, `resume_state` (Python-side state a
resumed run needs), and Lightning's own epoch hooks for schedules.
It never overrides `training_step` wholesale.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from bnnbench import archs
from bnnbench.config import MethodConfig, apply_overrides
from bnnbench.layers import binarize, binary_layers
from bnnbench.quantizers import sign


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run is stopped and marked FAILED."""


class BinaryMethod(pl.LightningModule):
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # RunConfig defaults in paper mode (arch, epochs, batch_size, image_size) and Config defaults.
    paper_recipe: ClassVar[dict[str, Any]] = {}
    paper_config: ClassVar[dict[str, Any]] = {}
    # True where the training forward uses soft (non-binary) weights (AdaSTE while annealing, PC, BNN++,
    # MD): the base then logs `train/binary_gap` each epoch. A method may make it a property.
    soft_weights: ClassVar[bool] = False

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

    def make_weight_quantizer(self) -> nn.Module | None:
        """A fresh weight quantizer for one binary layer; None keeps the model full precision."""
        return None

    def make_input_quantizer(self) -> nn.Module | None:
        """A fresh activation quantizer for one binary layer; None keeps activations real (BWN)."""
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
        `clip_latent` on (BinaryConnect, BinaryNet, XNOR-Net), so a sign flip stays reachable."""
        if getattr(self.config, "clip_latent", False):
            for _, layer in self.binary_layers():
                layer.weight.clamp_(-1.0, 1.0)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)

    # -- model ----------------------------------------------------------------------------------------
    def build_model(self, arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        backbone = archs.build(arch, num_classes, in_channels, image_size, self.activation)
        if self.make_weight_quantizer() is None:
            return backbone
        input_factory = self.make_input_quantizer if self.make_input_quantizer() is not None else None
        return binarize(backbone, self.make_weight_quantizer, input_factory,
                        skip=self.full_precision_layers(backbone))

    def binary_layers(self):
        return binary_layers(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- steps ----------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"train/loss is {loss.item()} at epoch {self.current_epoch}, "
                                     f"step {self.global_step}")
        self.train_acc(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _eval_step(self, batch, split: str, accuracy: MulticlassAccuracy):
        x, y = batch
        logits = self(x)
        accuracy(logits, y)
        self.confusion.update(logits, y)
        self.log(f"{split}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=split == "val")
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

    def on_test_epoch_end(self):
        self.confusion_matrix = self.confusion.compute().cpu()

    # -- BNN diagnostics: how many binary weights flipped sign this epoch, how far soft weights are from ±1 --
    def on_train_epoch_start(self):
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
        """Mean |w − sign(w)| over the binary layers' effective weights as the training forward computes
        them (quantizers switched to training mode for the measurement): 0 means training is already on
        the hard weights that evaluation uses."""
        total, count = 0.0, 0
        for _, layer in self.binary_layers():
            quantizer = layer.weight_quantizer
            was_training = quantizer.training
            quantizer.train()
            w = layer.effective_weight()
            quantizer.train(was_training)
            total += (w - sign(w)).abs().sum().item()
            count += w.numel()
        return total / max(count, 1)

    def set_quantizer_param(self, name: str, value: float) -> None:
        """Set a scheduled weight-quantizer parameter (AdaSTE's μ, mirror descent's β) in every binary layer."""
        for _, layer in self.binary_layers():
            setattr(layer.weight_quantizer, name, value)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.after_optimizer_step()

    # -- resumable state: what a checkpoint carries beyond parameters, buffers and optimizer state -------
    def resume_state(self) -> dict[str, Any]:
        """Python-side state a resumed run needs to continue exactly; a method with more extends it."""
        return {"val_acc_best": self.val_acc_best, "confusion_matrix": self.confusion_matrix}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        self.val_acc_best = state.get("val_acc_best", self.val_acc_best)
        self.confusion_matrix = state.get("confusion_matrix", self.confusion_matrix)

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

    def configure_optimizers(self):
        c = self.config
        optimizer = self.make_optimizer()
        if c.scheduler == "none":
            return optimizer
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
