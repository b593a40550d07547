"""`dra`: Dual-Rate Alpha BNN, a learnable scale α per binary layer (Pham & Nakajo).

Paper: "Dual-Rate Alpha Binary Networks: An Energy-Efficient Optimization Approach for Waste
Classification" by Duc-Anh Pham and Hironori Nakajo (Tokyo University of Agriculture and Technology); no
arXiv id or venue is printed on it, and its PDF ships in the released repository named below.

What is reproduced. Paper mode is the behaviour of the released code, because that code produced the
published numbers (Garbage 82.66 %, CIFAR-10 89.80 %):
- binary value α·sign(θ) (eq. 3) with one learnable scalar α per binary layer, initialised to 0.5;
  θ receives ℓ' unchanged and α receives Σ ℓ'·sign(θ) (eq. 4) — quantizer `dra`;
- the `dra_resnet18` network: every conv except the stem is binary, including the 1×1 shortcuts and
  the bias-free classifier; BN + PReLU after every conv; no activation after the residual sum;
  stride-1 stem without max-pool; activations are never binarized; 224-px inputs;
- one Adam (lr 1e-3, weight decay 1e-4) over all parameters, α included; ReduceLROnPlateau (×0.5,
  patience 5, min 1e-4) and early stopping (patience 10, δ 0.001) both watching the *training*
  loss; batch 8; up to 400 epochs; the reported number is the best validation accuracy
  (`val/acc_best`).

Released code: ducanh2712/DRA-BNN. `models/binarization.py:DualRateAlphaFunction` (forward
torch.sign(θ)·α; backward ℓ' unchanged to θ and Σ ℓ'·torch.sign(θ) to α), `models/modules.py`
(BinaryConv2d = binary conv → BatchNorm2d → PReLU, BinaryLinear without bias, the residual block),
`models/resnet.py:BinaryResNet18`, `main.py` (Adam lr 1e-3 / weight decay 1e-4 over `model.parameters()`,
ReduceLROnPlateau(mode min, factor 0.5, patience 5, min_lr from `config.xml`) stepped on the epoch's mean
training loss, early stopping when that loss has not fallen by more than 0.001 for 10 epochs, best
validation accuracy kept, 80/20 random split), `config.xml` (400 epochs, min_lr 1e-4, patience 10, δ 0.001,
batch 8, 12 classes), `data/transforms.py` (the augmentation `GarbageDataModule` reproduces in paper mode),
`training/train.py` and `training/scheduler.py` (the α learning rate and the clamp to [0.1, 2.0] of class
DVLR, which never run: the check `hasattr(param, 'alpha')` is false for every parameter). Running paper
mode to compare with the paper needs the Garbage photos (a Kaggle download) and a GPU (27 G MACs per
224-px image, batch 8, up to 400 epochs): not done here.

Variants from the paper's text (options; off in paper mode, since the released code never runs them):
- `alpha_lr`: α in its own parameter group with its own learning rate ("dual variable learning
  rates", eq. 6); default None = the weights' rate.
- `alpha_clamp`: clamp α to [min, max] after every optimizer step (eq. 5 uses 0.1, 2.0); the released
  code's clamp never triggers.
- `mean_center`: binarize θ − mean(θ).
- `binarize_activations`: the text claims weight *and* activation quantization; activations then
  use sign with BinaryNet's gated straight-through gradient (our choice: the paper gives none).
- `activation=relu`: the ReLU row of Table I (85.47 % vs 89.80 % with PReLU).
- `fp_classifier`: keep the classifier full precision, as the paper's Fig. 1 describes.

Fair mode: the shared backbone (its first conv and classifier full precision, real activations)
with DRA's quantizer, PReLU and optimizer; the shared cosine schedule and budget.

Deviations (paper mode, from the released code; beyond numerical nondeterminism):
- sign(0): the released code uses torch.sign, so a latent weight exactly 0 gives w = 0 and adds nothing
  to α's gradient; here sign(0) = +1 (w = α, and +ℓ' in Σ ℓ'·sign(θ)), the bnnbench convention. No
  quantizer option reproduces torch.sign for `dra`. Latent weights start from PyTorch's continuous
  initialisation and move by Adam steps, so an exact 0 is possible but practically never happens.
- The epoch's training loss that the plateau schedule and early stopping watch is Lightning's mean over
  samples; the released code averages the per-batch means, which differs only through a smaller last
  batch.
- The released 80/20 split is drawn with an unseeded `np.random.shuffle`; `GarbageDataModule` draws a
  stratified, seeded one, and resizes once when caching (see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from bnnbench.config import Increasing, MethodConfig, NonNegativeFloat, PositiveFloat
from bnnbench.methods.base import BinaryMethod
from bnnbench.quantizers import AlphaSign, get_quantizer
from bnnbench.registry import METHODS


@dataclass(frozen=True)
class DraConfig(MethodConfig):
    lr: PositiveFloat = 1e-3  # Adam learning rate for weights (per step)
    weight_decay: NonNegativeFloat = 1e-4  # L2 coefficient, applied to every parameter as the released code does
    alpha_init: PositiveFloat = 0.5  # initial α of every binary layer (dimensionless scale)
    alpha_lr: PositiveFloat | None = None  # learning rate of α (own parameter group); None = `lr`
    # (min, max) α after each step, 0 < min < max, e.g. 0.1,2.0; None = off
    alpha_clamp: Annotated[tuple[PositiveFloat, PositiveFloat], Increasing()] | None = None
    mean_center: bool = False  # binarize θ − mean(θ) instead of θ
    binarize_activations: bool = False  # sign activations (gated STE) in front of every binary layer
    activation: Literal["prelu", "relu"] = "prelu"
    fp_classifier: bool = False  # keep the classifier full precision (paper mode; fair mode always does)


@METHODS.register("dra")
class DraMethod(BinaryMethod):
    Config = DraConfig
    paper_recipe = {"arch": "dra_resnet18", "epochs": 400, "batch_size": 8, "image_size": 224}
    paper_config = {"scheduler": "plateau", "monitor": "train/loss", "plateau_factor": 0.5,
                    "plateau_patience_epochs": 5, "lr_min": 1e-4, "early_stopping_patience_epochs": 10,
                    "early_stopping_min_delta": 0.001}

    def make_weight_quantizer(self, layer):
        return get_quantizer("dra", alpha=self.config.alpha_init, mean_center=self.config.mean_center)

    def make_input_quantizer(self, layer):
        return get_quantizer("bnn") if self.config.binarize_activations else None

    def full_precision_layers(self, backbone):
        return tuple(backbone.full_precision_layers) + (("fc",) if self.config.fp_classifier else ())

    def alphas(self) -> list[torch.nn.Parameter]:
        return [m.alpha for m in self.modules() if isinstance(m, AlphaSign)]

    def parameter_groups(self):
        if self.config.alpha_lr is None:
            return super().parameter_groups()
        alpha_ids = {id(a) for a in self.alphas()}
        return [{"params": [p for p in self.parameters() if id(p) not in alpha_ids]},
                {"params": self.alphas(), "lr": self.config.alpha_lr}]

    @torch.no_grad()
    def after_optimizer_step(self):
        if self.config.alpha_clamp is not None:
            low, high = self.config.alpha_clamp
            for alpha in self.alphas():
                alpha.clamp_(low, high)

    def on_train_epoch_end(self):
        super().on_train_epoch_end()
        self.log("train/alpha_mean", torch.cat([a.detach() for a in self.alphas()]).mean())


def search_space(trial) -> dict:
    low = trial.suggest_float("alpha_min", 0.01, 0.5, log=True)
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
            "alpha_lr": trial.suggest_float("alpha_lr", 1e-5, 1e-1, log=True),
            "alpha_clamp": (low, trial.suggest_float("alpha_max", 1.0, 4.0))}
