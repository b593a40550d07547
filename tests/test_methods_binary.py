"""The W1A1 methods `bnn`, `xnor`, `bop` and `bnew`: their update rules against hand-computed values,
and one learning run on real data that a wrong gradient would fail."""

from __future__ import annotations

import lightning.pytorch as pl
import mlflow
import pytest
import torch

from bnnbench.config import RunConfig
from bnnbench.errors import BadInput
from bnnbench.methods.bnew import phase_plan
from bnnbench.methods.bop import Bop
from bnnbench.quantizers import get_quantizer
from bnnbench.runner import build_method, resolve, run


def make(method: str, epochs: int = 2, **overrides):
    resolved = resolve(RunConfig(method=method, dataset="fake", arch="tiny", image_size=8, epochs=epochs,
                                 method_overrides=overrides))
    return build_method(resolved)


# -- xnor -------------------------------------------------------------------------------------------------
def test_xnor_quantizer_forward_and_backward_match_the_formula():
    # two output channels of n = 3 elements: α = mean |θ| per channel = 0.8 and 0.75
    theta = torch.tensor([[0.5, -1.5, 0.4], [-0.25, 0.0, 2.0]]).reshape(2, 3, 1, 1).requires_grad_(True)
    grad = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 4.0]]).reshape(2, 3, 1, 1)
    w = get_quantizer("xnor")(theta)
    assert w.flatten().tolist() == pytest.approx([0.8, -0.8, 0.8, -0.75, 0.75, 0.75])  # sign(0) = +1
    w.backward(grad)
    # ℓ'·α·1[|θ| ≤ 1] + (1/n)·sign(θ)·Σ_c ℓ'·sign(θ); Σ_c = 1 − 2 − 1 = −2 and −0.5 − 1 + 4 = 2.5
    # (θ = −1.5 and θ = 2 lie outside the gate: only their α term remains)
    expected = [0.8 - 2 / 3, 0.0 + 2 / 3, -0.8 - 2 / 3,
                0.5 * 0.75 - 2.5 / 3, -0.75 + 2.5 / 3, 0.0 + 2.5 / 3]
    assert theta.grad.flatten().tolist() == pytest.approx(expected)


def test_xnor_binarizes_weights_per_channel_and_activations():
    method = make("xnor")
    for _, layer in method.binary_layers():
        assert layer.binary_input
        w = layer.effective_weight().detach().flatten(1)
        alpha = layer.weight.detach().flatten(1).abs().mean(dim=1, keepdim=True)
        assert torch.allclose(w.abs(), alpha.expand_as(w))


# -- bnn --------------------------------------------------------------------------------------------------
def test_bnn_clips_latent_weights_after_each_step():
    method = make("bnn", lr=2.0)  # an Adam step of ~2 moves every weight with a gradient out of [−1, 1]
    optimizer = method.make_optimizer()
    x = torch.randn(8, 3, 8, 8)
    method(x).square().sum().backward()
    optimizer.step()
    latent = torch.cat([layer.weight.detach().flatten() for _, layer in method.binary_layers()])
    assert latent.abs().max() > 1  # the step alone leaves [−1, 1]
    method.after_optimizer_step()
    latent = torch.cat([layer.weight.detach().flatten() for _, layer in method.binary_layers()])
    assert latent.abs().max() <= 1
    for _, layer in method.binary_layers():
        assert layer.binary_input and set(layer.effective_weight().unique().tolist()) <= {-1.0, 1.0}


# -- bop --------------------------------------------------------------------------------------------------
def test_bop_flips_where_the_gradient_average_agrees_with_the_weight_beyond_tau():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0, -1.0, -1.0]))
    real = torch.nn.Parameter(torch.tensor([0.5]))
    optimizer = Bop([{"params": [real]}, {"params": [w], "binary": True}], lr=0.1, gamma=0.5, tau=0.2)
    # step 1: m = 0.5·ℓ' = [0.5, −0.5, 0.5, −0.1]: only w₀ agrees in sign beyond τ (w₃ agrees, |m| < τ)
    w.grad, real.grad = torch.tensor([1.0, -1.0, 1.0, -0.2]), torch.tensor([1.0])
    optimizer.step()
    assert w.tolist() == [-1.0, 1.0, -1.0, -1.0]
    assert optimizer.state[w]["momentum"].tolist() == pytest.approx([0.5, -0.5, 0.5, -0.1])
    assert real.item() == pytest.approx(0.4)  # Adam's first step moves by lr; the ±1 weights never see Adam
    assert w.grad is not None  # the gradient hidden from Adam is handed back
    # step 2: m = 0.5·m + 0.5·ℓ' = [0.75, −0.25, −0.25, −0.55]: w₂ and w₃ now agree beyond τ and flip
    w.grad = torch.tensor([1.0, 0.0, -1.0, -1.0])
    optimizer.step()
    assert w.tolist() == [-1.0, 1.0, 1.0, 1.0]
    assert optimizer.state[w]["momentum"].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.55])


def test_bop_stores_binary_weights_and_decays_gamma():
    method = make("bop", epochs=300)
    for _, layer in method.binary_layers():
        assert set(layer.weight.detach().unique().tolist()) == {-1.0, 1.0}
        assert torch.equal(layer.effective_weight(), layer.weight)  # no latent weight: w is used as stored
    groups = method.make_optimizer().param_groups
    binary = {id(layer.weight) for _, layer in method.binary_layers()}
    assert [{id(p) for p in g["params"]} == binary for g in groups] == [False, True]
    assert [method.gamma_at(e) for e in (0, 99, 100, 250)] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-6])
    linear = make("bop", epochs=300, gamma_schedule="linear")
    assert [linear.gamma_at(e) for e in (0, 150)] == pytest.approx([1e-4, 5e-5])


# -- bnew -------------------------------------------------------------------------------------------------
def test_bnew_phase_plan_defaults_follow_the_paper_and_reject_bad_values():
    paper = make("bnew").Config()
    assert phase_plan(paper, 1200) == (200, 981)  # 200 + 1000 epochs, frozen after epoch 980 of 1000
    assert phase_plan(paper, 30) == (5, 24)  # at least the last phase-2 epoch runs frozen
    with pytest.raises(BadInput, match=r"bad phase1_epochs 30: must be 0\.\.29"):
        make("bnew", epochs=30, phase1_epochs=30)
    with pytest.raises(BadInput, match=r"bad freeze_epoch 25: must be a phase-2 epoch, 0\.\.24"):
        make("bnew", epochs=30, phase1_epochs=5, freeze_epoch=25)


def test_bnew_lambda_ramps_over_phase_2():
    method = make("bnew", epochs=10, phase1_epochs=2, lambda_max=0.08)
    assert [method.lambda_at(e) for e in (0, 1, 2, 5, 9)] == pytest.approx([0, 0, 0.01, 0.04, 0.08])


@pytest.mark.parametrize(("reg", "expected"), [
    ("bnew", [0.75, -1.0, 0.0, 1.0]),  # clamp((1 + 2λ)·w)
    ("l1", [0.75, -1.0, 0.25, 1.0]),  # clamp(w + λ·sign w), sign(0) = +1
    ("l2", [0.6, -0.92, 0.2, 1.0]),  # clamp((w + λ·sign w)/(1 + λ))
])
def test_bnew_prox_step(reg, expected):
    method = make("bnew", reg=reg)
    values = torch.tensor([0.5, -0.9, 0.0, 1.0])
    for w in method.binary_weights():
        w.data.copy_(values.repeat(w.numel() // 4 + 1)[: w.numel()].reshape(w.shape))
    method.prox(0.25)
    for w in method.binary_weights():
        assert w.detach().flatten()[:4].tolist() == pytest.approx(expected)


class _Recorder(pl.Callback):
    """Binary weights at the end of every training epoch, val/acc of every epoch, weights at the first
    batch of every epoch (after the method's epoch-start hook has run)."""

    def __init__(self):
        self.end, self.start, self.val_acc = {}, {}, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            self.start[trainer.current_epoch] = [w.detach().clone() for w in module.binary_weights()]

    def on_train_epoch_end(self, trainer, module):
        self.end[trainer.current_epoch] = [w.detach().clone() for w in module.binary_weights()]
        self.val_acc[trainer.current_epoch] = float(trainer.callback_metrics["val/acc"])


def test_bnew_two_phases_in_one_run_then_sign_and_freeze(tracking_uri):
    recorder = _Recorder()
    result = run(RunConfig(method="bnew", dataset="fake", epochs=6, tracking_uri=tracking_uri, progress="none",
                           method_overrides={"phase1_epochs": 3, "freeze_epoch": 1, "lambda_max": 0.01}),
                 callbacks=[recorder])
    assert mlflow.MlflowClient(tracking_uri).get_run(result.run_id).info.status == "FINISHED"
    # phase 2 (epoch 3) starts from the best phase-1 epoch (the first of equal val/acc)
    best = max(range(3), key=lambda e: (recorder.val_acc[e], -e))
    for start, best_w in zip(recorder.start[3], recorder.end[best], strict=True):
        assert torch.equal(start, best_w)
    assert any(((w.abs() < 1) & (w != 0)).any() for w in recorder.end[3])  # phase 2 before the freeze: soft
    for epoch in (4, 5):  # frozen from phase-2 epoch 1 = run epoch 4: exactly ±1 and unchanged
        for w, first in zip(recorder.end[epoch], recorder.end[4], strict=True):
            assert set(w.unique().tolist()) <= {-1.0, 1.0}
            assert torch.equal(w, first)


# -- learning on real data --------------------------------------------------------------------------------
def test_bnn_learns_digits(tracking_uri):
    """W1A1 BinaryNet on 8×8 digits, 8 epochs: measured test accuracy 0.93 (chance 0.1). With the sign's
    gradient negated it measured 0.09, with no gradient through the sign (only the real first conv,
    BNs and classifier learn around random binary layers) 0.37."""
    result = run(RunConfig(method="bnn", dataset="digits", epochs=8, tracking_uri=tracking_uri, progress="none"))
    assert result.metrics["test/acc"] > 0.75


@pytest.mark.parametrize("name", ["bop", "bnew"])
def test_fp_shortcuts_keep_the_1x1_shortcut_convs_full_precision(name):
    """Paper mode (the BNEW comparison's network) keeps the downsampling 1×1 convs real; fair mode binarizes them."""
    def shortcut_convs(method):
        return [type(m).__name__ for n, m in method.model.named_modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]

    resolved = resolve(RunConfig(method=name, dataset="fake", arch="resnet20", image_size=8, epochs=2))
    assert shortcut_convs(build_method(resolved)) == ["BinaryConv2d", "BinaryConv2d"]
    resolved = resolve(RunConfig(method=name, dataset="fake", arch="resnet20", image_size=8, epochs=2,
                                 method_overrides={"fp_shortcuts": True}))
    assert shortcut_convs(build_method(resolved)) == ["Conv2d", "Conv2d"]
