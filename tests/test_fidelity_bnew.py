"""The BNEW family — `bnew`, `bop`, `bmd`, `bnn`, `ste` — against what the released code computes.

Expected numbers are worked out by hand from the released rules (Alasdair-P/bnew: `prox.py`,
`binary_main.py`, `bop.py`, `bop_main.py`, `utils/lr_scheduler.py`, `models/ste_wide_resnet.py`, the
`reproduce/` scripts; kartikgupta-at-anu/md-bnn; larq/larq; itayhubara/BinaryNet.pytorch) and written
here, never recomputed with bnnbench's own code. Where bnnbench's sign(0) = +1 differs from the
released `torch.sign` (0 ↦ 0) the comment says so.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import signal
import time

import lightning.pytorch as pl
import mlflow
import pytest
import torch
from torch import nn

from bnnbench import archs, cost
from bnnbench.config import RunConfig
from bnnbench.errors import Terminated
from bnnbench.layers import BinaryLayer, binarize
from bnnbench.methods.base import Phase1Gate
from bnnbench.methods.bmd import BmdConfig, scheduled_beta
from bnnbench.methods.bnew import phase_plan
from bnnbench.methods.bop import Bop
from bnnbench.quantizers import get_quantizer
from bnnbench.registry import METHODS
from bnnbench.runner import build_method, resolve, run

FAMILY = ("bnew", "bop", "bmd", "bnn", "ste")


def make(method: str, mode: str = "fair", epochs: int = 4, arch: str = "tiny", **overrides):
    return build_method(resolve(RunConfig(method=method, dataset="fake", arch=arch, image_size=8, epochs=epochs,
                                          mode=mode, method_overrides=overrides)))


def forward_backward(quantizer, x, grad):
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = quantizer(x)
    out.backward(torch.tensor(grad, dtype=torch.float64))
    return out.detach().tolist(), x.grad.tolist()


def fill(method, values):
    """Every binary weight of `method` set to `values`, repeated."""
    values = torch.tensor(values)
    with torch.no_grad():
        for _, layer in method.binary_layers():
            w = layer.weight
            w.copy_(values.repeat(w.numel() // len(values) + 1)[: w.numel()].reshape(w.shape))


def first_weights(method, n):
    return method.binary_layers()[0][1].weight.detach().flatten()[:n].tolist()


# -- fixed tensors through each method's rules -----------------------------------------------------------
def test_ste_sign_identity_gradient_and_approx_sign_activation():
    # released ste_binary: forward torch.sign(θ) (0 ↦ 0; here +1), gradient taken at the signs handed to θ
    w, g = forward_backward(get_quantizer("ste"), [-1.5, -1.0, -0.3, 0.0, 0.4, 1.0, 2.0],
                            [0.5, -1.0, 2.0, 3.0, -4.0, 0.25, 1.0])
    assert w == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    assert g == [0.5, -1.0, 2.0, 3.0, -4.0, 0.25, 1.0]
    # released BinaryActivation: d/dx of −1 (x < −1), x² + 2x (x < 0), −x² + 2x (x < 1), 1: 0, 2x + 2, 2 − 2x, 0
    a, ga = forward_backward(get_quantizer("approx_sign"), [-1.5, -1.0, -0.5, 0.0, 0.25, 1.0, 1.2], [1.0] * 7)
    assert a == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]  # torch.sign(0) = 0 in the released network
    assert ga == [0.0, 0.0, 1.0, 2.0, 1.5, 0.0, 0.0]


def test_ste_clamps_before_the_step_in_phase_1_and_clips_after_it_in_phase_2():
    method = make("ste", mode="paper")  # phase 1 (epoch 0 of 4; half the run), `clamp_before_step`
    assert method.phase1_epochs == 2
    values = [1.3, -0.4, 0.0, -2.0]
    fill(method, values)
    method.after_optimizer_step()  # released phase 1 (`convex_hull`) clamps only after backward, before the step
    assert first_weights(method, 4) == pytest.approx(values)
    method.on_before_optimizer_step(None)
    assert first_weights(method, 4) == [1.0, pytest.approx(-0.4), 0.0, -1.0]
    fair = make("ste")  # no phase 1: BinaryConnect's clip after every step
    fill(fair, values)
    fair.after_optimizer_step()
    assert first_weights(fair, 4) == [1.0, pytest.approx(-0.4), 0.0, -1.0]


def test_bnn_gates_weights_and_activations_to_the_unit_interval():
    # BinaryNet: Hardtanh's derivative 1[|x| ≤ 1]; BNEW's classic STE (`models/ste.py`) is 1[−1 ≤ x < 1]:
    # the two differ at x = 1 only (the classic STE gives 0 there)
    w, g = forward_backward(get_quantizer("bnn"), [-1.5, -1.0, 0.0, 0.5, 1.0, 1.2], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert w == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]  # torch.sign(0) = 0 in both released codes
    assert g == [0.0, 2.0, 2.0, 2.0, 2.0, 0.0]
    method = make("bnn", mode="paper")
    assert all(layer.binary_input for _, layer in method.binary_layers())
    assert all(type(layer.input_quantizer).__name__ == "SignClipped" for _, layer in method.binary_layers())


def test_bmd_beta_schedules_and_tanh_forward():
    paper = METHODS.get("bmd").default_config("paper")
    # BNEW's adjust_reg: β = 1.01^epoch, recomputed after each epoch from the index of the epoch just
    # finished, so epochs 0, 1, 2, 199 train with 1.01^(0, 0, 1, 198)
    assert [scheduled_beta(e, 0, paper) for e in (0, 1, 2)] == [1.0, 1.0, pytest.approx(1.01)]
    assert scheduled_beta(199, 0, paper) == pytest.approx(7.171863397539411)
    unlagged = BmdConfig(beta_growth=1.01, beta_end=None)
    assert scheduled_beta(199, 0, unlagged) == pytest.approx(7.243582031514805)
    # md-bnn: `if iters % interval == 0: beta *= scale` after step `iters`, so step k trains with s^ceil(k/P)
    md = BmdConfig(beta_growth=1.02, beta_period_steps=200)
    assert [scheduled_beta(0, k, md) for k in (0, 1, 200, 201, 400, 401)] == pytest.approx(
        [1.0, 1.02, 1.02, 1.0404, 1.0404, 1.061208])
    # prox.py `mirror_binary`: the forward uses tanh(β·θ), θ gets the gradient at tanh(β·θ) unchanged
    q = get_quantizer("bmd", beta=2.0)
    w, g = forward_backward(q, [-0.5, 0.0, 0.25, 1.0], [0.3, -1.0, 2.0, 0.5])
    assert w == pytest.approx([-0.7615941559557649, 0.0, 0.46211715726000974, 0.9640275800758169])
    assert g == [0.3, -1.0, 2.0, 0.5]
    assert q.eval()(torch.tensor([-0.5, 0.0, 0.25])).tolist() == [-1.0, 1.0, 1.0]  # torch.sign: [-1, 0, 1]


def test_bmd_counts_beta_and_the_freeze_from_the_start_of_phase_2():
    method = make("bmd", mode="paper", epochs=400)  # 200 + 200 epochs
    assert method.phase1_epochs == 200 and method.freeze_epoch() == 181  # released: freeze after epoch 180
    assert make("bmd", mode="paper", epochs=1200, phase1_epochs=200).freeze_epoch() == 981  # 100bmd.py
    assert make("bmd").freeze_epoch() is None  # fair mode: no freeze
    fill(method, [0.3, -0.2, 0.0, -0.0])
    method.freeze()
    assert first_weights(method, 4) == [1.0, -1.0, 1.0, 1.0]  # released torch.sign: [1, -1, 0, 0]
    assert not any(layer.weight.requires_grad for _, layer in method.binary_layers())


def test_bnew_prox_lambda_and_freeze_follow_prox_py():
    # u_reg: clamp(w + 2·λ·w); w_reg: clamp(w + λ·sign w); U_reg: clamp((w + λ·sign w)/(1 + λ)), λ = 0.25
    values = [0.5, -0.9, 0.0, 1.0, -1.0]
    for reg, expected in (("bnew", [0.75, -1.0, 0.0, 1.0, -1.0]),
                          ("l1", [0.75, -1.0, 0.25, 1.0, -1.0]),  # released torch.sign(0) = 0: stays 0.0
                          ("l2", [0.6, -0.92, 0.2, 1.0, -1.0])):  # released: 0.0
        method = make("bnew", reg=reg)
        fill(method, values)
        method.prox(0.25)
        assert first_weights(method, 5) == pytest.approx(expected), reg
    # adjust_reg after phase-2 epoch e: λ₀·(e+1)/E, so epoch e trains with λ₀·max(e, 1)/E (E = 10 here)
    paper = make("bnew", mode="paper", epochs=12, phase1_epochs=2, lambda_max=0.1)
    assert [paper.lambda_at(e) for e in (0, 1, 2, 3, 4, 11)] == pytest.approx([0, 0, 0.01, 0.01, 0.02, 0.09])
    fair = make("bnew", epochs=12, phase1_epochs=2, lambda_max=0.1)
    assert [fair.lambda_at(e) for e in (2, 3, 4, 11)] == pytest.approx([0.01, 0.02, 0.03, 0.10])
    # binary_freeze: w ← sign(w) (released torch.sign leaves 0 at 0), no more gradient
    fill(paper, [0.2, -0.7, 0.0])
    paper.freeze()
    assert first_weights(paper, 3) == [1.0, -1.0, 1.0]
    assert not any(w.requires_grad for w in paper.binary_weights())


def test_bnew_prox_order_released_before_the_step_paper_after():
    paper = make("bnew", mode="paper", epochs=12, phase1_epochs=0, lambda_max=0.5)  # λ = 0.5/12 in epoch 0
    fill(paper, [0.3, -0.6])
    paper.after_optimizer_step()
    assert first_weights(paper, 2) == pytest.approx([0.3, -0.6])
    paper.on_before_optimizer_step(None)
    assert first_weights(paper, 2) == pytest.approx([0.3 * (1 + 1 / 12), -0.6 * (1 + 1 / 12)])
    fair = make("bnew", epochs=12, phase1_epochs=0, lambda_max=0.5)  # λ₀·(0+1)/12
    fill(fair, [0.3, -0.6])
    fair.on_before_optimizer_step(None)
    assert first_weights(fair, 2) == pytest.approx([0.3, -0.6])
    fair.after_optimizer_step()
    assert first_weights(fair, 2) == pytest.approx([0.3 * (1 + 1 / 12), -0.6 * (1 + 1 / 12)])


def test_linear_lr_per_step_restarts_at_phase_2_as_lr_scheduler_py():
    # LRScheduler('linear'): lr of iteration t of T = lr₀·(1 − t/(T − 1)), each phase a new job
    method = make("bnew", mode="paper", epochs=4, phase1_epochs=2)
    method._steps_per_epoch = 5  # no trainer attached: 10 steps per phase
    factors = [method.lr_factor(t, "step") for t in (0, 4, 9, 10, 14, 19)]
    assert factors == pytest.approx([1.0, 5 / 9, 0.0, 1.0, 5 / 9, 0.0])  # the last step of a phase at lr_min


def test_bop_flip_rule_gamma_per_step_and_signed_phase1_weights():
    w = nn.Parameter(torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0, -1.0]))
    optimizer = Bop([{"params": [w], "binary": True}], lr=0.1, gamma=0.5, tau=0.1)
    # bop.py: m = (1 − γ)·0 + γ·g = [0.5, −0.5, −0.5, 0.05, 0, 0.2]; flip where |m| > τ and sign(m) = sign(w)
    # (larq: where w·m > τ): w₀ and w₂ flip; m = 0 and |m| ≤ τ never flip
    w.grad = torch.tensor([1.0, -1.0, -1.0, 0.1, 0.0, 0.4])
    optimizer.step()
    assert w.tolist() == [-1.0, 1.0, 1.0, -1.0, 1.0, -1.0]
    assert optimizer.state[w]["momentum"].tolist() == pytest.approx([0.5, -0.5, -0.5, 0.05, 0.0, 0.2])
    method = make("bop", mode="paper", epochs=4)  # phase 1 = 2 epochs
    method._steps_per_epoch = 5
    # bop_main.py: LRScheduler('linear', base_lr=1e-4) for γ, over phase 2's iterations 10..19
    assert [method.gamma_at(2, t) for t in (10, 14, 19)] == pytest.approx([1e-4, 1e-4 * 5 / 9, 0.0])
    groups = method.make_optimizer().param_groups
    assert [g.get("binary") for g in groups] == [False, False]  # phase 1: Adam trains the weights too
    fill(method, [0.3, -0.2, 0.0, -0.0])
    method.on_phase2_start()  # BOP.__init__: p ← p.sign() (torch.sign: [1, -1, 0, 0])
    assert first_weights(method, 4) == [1.0, -1.0, 1.0, 1.0]


# -- paper-mode defaults against the released scripts ----------------------------------------------------
def paper(method: str):
    cls = METHODS.get(method)
    return cls.default_config("paper"), cls.paper_recipe


def test_bnew_paper_defaults_follow_the_released_scripts():
    c, recipe = paper("bnew")
    # phase_1_100.py (200 epochs) + 100bnew.py (1000 epochs): --batch-size 128, model brn
    assert recipe == {"arch": "bnew_resnet20", "epochs": 1200, "batch_size": 128}
    assert phase_plan(c, 1200) == (200, 981)  # --freeze 980 …: frozen after phase-2 epoch 980
    # --opt adam --lr 0.01 --lr_mode linear (per iteration), wd 0 (cli.py default)
    assert (c.optimizer, c.lr, c.scheduler, c.lr_interval, c.lr_min, c.weight_decay) == \
        ("adam", 0.01, "linear", "step", 0.0, 0.0)
    assert c.lambda_max == 1e-4  # 100bnew.py: --reg 0.0001 for four of its five jobs (1e-3 for one)
    assert c.reg == "bnew"  # --reg-type bnew_binary: u_reg
    assert c.clamp_before_step and c.lagged_schedule  # binary_main.py: reg.post_update() before step(); _epoch
    assert c.fp_shortcuts and c.activation_quantizer == "approx_sign"  # prox.py skips 'downsample'; BinaryActivation


def test_bop_paper_defaults_follow_the_released_scripts():
    c, recipe = paper("bop")
    # reproduce/bop/phase_2_bop.py: --epochs 200 --batch-size 128 --model brn from phase_1_100.py's 200 epochs
    assert recipe == {"arch": "bnew_resnet20", "epochs": 400, "batch_size": 128}
    assert c.phase1_epochs is None and make("bop", mode="paper", epochs=400).phase1_epochs == 200
    # bop_main.py: BOP(gamma=1e-4, tau=1e-8), γ and Adam's lr 0.01 decaying linearly per iteration
    assert (c.gamma, c.tau, c.gamma_schedule, c.lr, c.scheduler, c.lr_interval) == \
        (1e-4, 1e-8, "linear", 0.01, "linear", "step")
    assert c.weight_decay == 0.0 and c.fp_shortcuts and c.clamp_before_step  # wd 0; float 'downsample'
    assert c.activation_quantizer == "approx_sign"


def test_bmd_paper_defaults_follow_the_released_scripts():
    c, recipe = paper("bmd")
    # 100bmd.py's recipe at Table 1's 200-epoch budget, after phase_1_100.py's 200 epochs
    assert recipe == {"arch": "bnew_resnet20", "epochs": 400, "batch_size": 128}
    assert c.phase1_epochs is None and c.clamp_before_step
    # --reg 1.01 (β = 1.01^epoch, lagged by adjust_reg), --opt adam --lr 0.01 --lr_mode linear
    assert (c.beta_start, c.beta_growth, c.beta_period_steps, c.lagged_schedule) == (1.0, 1.01, 0, True)
    assert (c.lr, c.scheduler, c.lr_interval, c.weight_decay) == (0.01, "linear", "step", 0.0)
    assert c.freeze_last_epochs == 19  # --freeze 980 …: epochs 981–999 frozen
    assert c.activation_quantizer == "approx_sign" and c.fp_shortcuts  # model brn; 'downsample' stays float


def test_ste_paper_defaults_follow_the_released_scripts():
    c, recipe = paper("ste")
    # 100ste.py's recipe at Table 1's 200-epoch budget, after phase_1_100.py's 200 epochs
    assert recipe == {"arch": "bnew_resnet20", "epochs": 400, "batch_size": 128}
    assert c.phase1_epochs is None and c.clamp_before_step
    # ste_binary: identity gradient at torch.sign(θ), latents clamped to [−1, 1] (pre_update)
    assert (c.backward, c.clip_latent) == ("identity", True)
    assert (c.lr, c.scheduler, c.lr_interval, c.weight_decay) == (0.01, "linear", "step", 0.0)
    assert c.activation_quantizer == "approx_sign" and c.fp_shortcuts  # BinaryActivation; 'downsample' float


def test_bnn_paper_defaults_follow_the_released_scripts():
    c, recipe = paper("bnn")
    # BNEW's STE recipe (100ste.py, phase_1_100.py) with the classic STE of models/ste.py
    assert recipe == {"arch": "bnew_resnet20", "epochs": 400, "batch_size": 128}
    assert c.phase1_epochs is None and c.clamp_before_step and c.clip_latent
    assert (c.lr, c.scheduler, c.lr_interval, c.weight_decay) == (0.01, "linear", "step", 0.0)
    assert c.fp_shortcuts


# -- the released network --------------------------------------------------------------------------------
class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d | nn.PReLU | nn.ReLU | nn.Hardtanh
                          | nn.MaxPool2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d | nn.Flatten | nn.Identity)


def _from_batchnorm(node, modules, seen) -> bool:
    """True when every path back from `node` reaches a BatchNorm through shifts, RPReLU, pools and sums only."""
    if node in seen:
        return seen[node]
    ok = False
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.BatchNorm2d):
            ok = True
        elif isinstance(module, archs.LearnableBias | archs.RPReLU | nn.MaxPool2d | nn.AvgPool2d | nn.Identity):
            ok = _from_batchnorm(node.args[0], modules, seen)
    elif node.op == "call_function" and node.target in (operator.add, torch.add):
        ok = all(_from_batchnorm(a, modules, seen) for a in node.args if isinstance(a, torch.fx.Node))
    seen[node] = ok
    return ok


def test_bnew_resnet20_matches_the_released_network_and_its_cost():
    backbone = archs.build("bnew_resnet20", 100, 3, 32)
    graph = _LeafTracer().trace(backbone)
    modules = dict(backbone.named_modules())
    convs = [n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)
             and modules[n.target].kernel_size == (3, 3) and n.target != "stem.0"]
    assert len(convs) == 18  # six one-conv blocks per stage, three stages
    seen = {}
    for node in convs:  # what each binary conv binarizes comes from a BatchNorm, never a ReLU
        assert _from_batchnorm(node.args[0], modules, seen), node.target
    assert not any(isinstance(m, nn.ReLU) for m in backbone.modules())
    assert archs.pointwise_convs(backbone) == ("layers.6.shortcut.1", "layers.12.shortcut.1")
    shortcut = backbone.layers[6].shortcut  # downsample: AvgPool2d(2, 2) → conv1x1 → BN
    assert [type(m) for m in shortcut] == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
    # birealresnet20(22, num_classes=100) has 281,636 parameters
    assert sum(p.numel() for p in backbone.parameters()) == 281_636
    skip = ("stem.0", "fc", *archs.pointwise_convs(backbone))
    binary = binarize(backbone, lambda layer: get_quantizer("ste"), lambda layer: get_quantizer("approx_sign"),
                      skip=skip)
    costs = cost.count(binary, (3, 32, 32))
    # 16·16·16·144·6 + 8·8·32·(144 + 288·5) + 4·4·64·(288 + 576·5) BOPs; stem 442,368 + shortcuts 2·32,768 + fc 6,400
    assert (costs.bops, costs.bwn_macs, costs.fp_macs) == (10_027_008, 0, 514_304)
    assert (costs.params_binary, costs.params_real) == (267_264, 14_372)


@pytest.mark.parametrize("name", FAMILY)
def test_paper_mode_keeps_the_shortcuts_full_precision_and_binarizes_the_18_block_convs(name):
    method = make(name, mode="paper", arch=None)
    layers = dict(method.model.named_modules())
    assert [n for n, m in layers.items() if isinstance(m, nn.Conv2d) and not isinstance(m, BinaryLayer)] == \
        ["stem.0", "layers.6.shortcut.1", "layers.12.shortcut.1"]
    assert not isinstance(layers["fc"], BinaryLayer)
    binary = method.binary_layers()
    assert len(binary) == 18 and all(layer.binary_input for _, layer in binary)
    assert all(isinstance(layer.weight_quantizer, Phase1Gate) for _, layer in binary)  # two-phase start


# -- the two-phase start ---------------------------------------------------------------------------------
class _PhaseRecorder(pl.Callback):
    def __init__(self):
        self.end, self.start, self.val_acc, self.lr, self.state, self.trained_on = {}, {}, {}, {}, {}, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            epoch = trainer.current_epoch
            layers = [layer for _, layer in module.binary_layers()]
            self.start[epoch] = [layer.weight.detach().clone() for layer in layers]
            self.lr[epoch] = trainer.optimizers[0].param_groups[0]["lr"]
            self.state[epoch] = len(trainer.optimizers[0].state)
            self.trained_on[epoch] = [layer.effective_weight().detach().clone() for layer in layers]

    def on_train_epoch_end(self, trainer, module):
        self.end[trainer.current_epoch] = [layer.weight.detach().clone() for _, layer in module.binary_layers()]
        self.val_acc[trainer.current_epoch] = float(trainer.callback_metrics["val/acc"])


PHASED = {"phase1_epochs": 2, "activation_quantizer": "approx_sign", "scheduler": "linear", "lr_interval": "step",
          "clamp_before_step": True, "lr": 0.05}


def test_two_phase_start_switches_at_phase1_epochs_from_the_best_phase1_weights(tracking_uri):
    recorder = _PhaseRecorder()
    result = run(RunConfig(method="ste", dataset="fake", epochs=4, tracking_uri=tracking_uri, progress="none",
                           method_overrides=PHASED), callbacks=[recorder])
    assert mlflow.MlflowClient(tracking_uri).get_run(result.run_id).info.status == "FINISHED"
    best = max(range(2), key=lambda e: (recorder.val_acc[e], -e))  # the first of equal val/acc
    for start, best_w in zip(recorder.start[2], recorder.end[best]):
        assert torch.equal(start, best_w.clamp(-1, 1))  # loaded, then clamped as ste_binary's first pre_update
    # phase 1 trains on the real weights, phase 2 on their signs
    assert any(((w.abs() < 1) & (w != 0)).any() for w in recorder.trained_on[1])
    for epoch in (2, 3):
        assert all(set(w.unique().tolist()) <= {-1.0, 1.0} for w in recorder.trained_on[epoch])
    # a fresh Adam and the LR schedule restarted: 4 steps per epoch, 8 per phase, lr₀·(1 − t/7)
    assert recorder.state[2] == 0 and recorder.state[1] > 0 and recorder.state[3] > 0
    assert [recorder.lr[e] for e in range(4)] == pytest.approx([0.05, 0.05 * 3 / 7, 0.05, 0.05 * 3 / 7])


class _SigtermAtEpoch(pl.Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the run's handler raises before this ends


def test_a_run_killed_at_the_switch_resumes_from_the_checkpointed_phase1_state(tracking_uri, tmp_path):
    """The last checkpoint before the switch carries the best phase-1 state: the resumed run switches to
    the same weights and ends with the uninterrupted run's metrics."""
    cfg = RunConfig(method="bop", dataset="fake", epochs=4, tracking_uri=tracking_uri, progress="none",
                    method_overrides={**PHASED, "gamma_schedule": "linear", "lr": 0.01})
    whole = run(cfg)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    killed = dataclasses.replace(cfg, tracking_uri=other)
    with pytest.raises(Terminated):
        run(killed, callbacks=[_SigtermAtEpoch(2)])
    (record,) = mlflow.MlflowClient(other).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(other).search_experiments()])
    checkpoint = torch.load(tmp_path / "checkpoints" / record.info.run_id / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] == 1 and checkpoint["bnnbench"]["best_phase1_state"] is not None
    resumed = run(killed, resume=record.info.run_id)
    for key in ("test/acc", "val/acc_best", "train/loss", "train/flip_rate", "train/gamma"):
        assert resumed.metrics[key] == whole.metrics[key], key
