"""Each method against what its authors' released code computes (paper mode), or against the paper's
equations where no code was released: fixed tensors with exact zeros, ±1 and values straddling the
thresholds, expected values worked out by hand from the released rule (not by calling the same code), and
the paper-mode defaults against the released scripts' settings, each cited by file and line.

Released code read for these values (commits of the stored snapshots):
- AdaSTE: intellhave/AdaSTE @ 0d7c4a6 — `optimizers/FenBPOpt.py`, `main_cifar10.py`,
  `utils/train_utils.py`, `models/models.py`, `scripts/RESNET18_cifar10.sh`.
- XNOR-Net (PyTorch port): jiecaoyu/XNOR-Net-PyTorch @ ebccb50 — `CIFAR_10/main.py`, `CIFAR_10/util.py`,
  `CIFAR_10/models/nin.py`.
- DRA-BNN: ducanh2712/DRA-BNN @ 42fd499 — `models/binarization.py`, `models/modules.py`,
  `models/resnet.py`, `main.py`, `config.xml`, `training/train.py`, `data/transforms.py`.
- ProxConnect, BNN+, BNN++ (ProxConnect++) and fp: no released code; the paper's rule instead.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bnnbench.config import RunConfig
from bnnbench.layers import BinaryConv2d
from bnnbench.methods.adaste import AdasteMethod, FenBP, LogitBatchNorm, annealed_mu
from bnnbench.methods.bnn_plus import BnnPlusMethod
from bnnbench.methods.bnnpp import BnnppMethod
from bnnbench.methods.dra import DraMethod
from bnnbench.methods.fp import FpMethod
from bnnbench.methods.pc import PcMethod
from bnnbench.methods.xnor import XnorMethod
from bnnbench.quantizers import get_quantizer
from bnnbench.runner import build_method, resolve


def forward_backward(quantizer, theta, grad_out, shape=None):
    """(w, g): the quantizer's output and what its backward writes into θ for ℓ' = grad_out (float64)."""
    theta = torch.tensor(theta, dtype=torch.float64)
    grad_out = torch.tensor(grad_out, dtype=torch.float64)
    if shape is not None:
        theta, grad_out = theta.reshape(shape), grad_out.reshape(shape)
    theta.requires_grad_(True)
    w = quantizer(theta)
    w.backward(grad_out)
    return w.detach().flatten(), theta.grad.flatten()


def close(actual, expected, tol=1e-12):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), rtol=tol, atol=tol)


def paper(method: str, **kwargs):
    cfg = RunConfig(method=method, dataset="fake", mode="paper", **kwargs)
    return build_method(resolve(cfg))


# -- adaste: FenBPOpt.get_grad, FenBPOpt.step, the released schedules ------------------------------------

def test_adaste_released_rule_binary_regime_thresholds_and_zero():
    """μα ≥ 1 (μ = 100, α = 0.01; FenBPOpt.py:116-124): ℓ' is scaled by min(0.5, 1/|θ|) where θ > 1e-3
    and ℓ' > 1e-3 (or both < −1e-3), by 0 where their signs differ beyond the thresholds, and left
    unchanged everywhere else; the forward is hardtanh((θ + 101·torch.sign θ)/101) (FenBPOpt.py:74), so
    θ = 0 gives w = 0, as does the evaluation's torch.sign (train_utils.py:251-252)."""
    q = get_quantizer("adaste_released", mu=100.0, alpha=0.01)
    theta = [0.5, 0.5, 3.0, -4.0, 0.5, 0.5, 0.5, 0.5, 1.001e-3, 0.999e-3, 5e-4, 0.0, 1.0, -1.0, -0.5]
    grad = [0.2, -0.2, 0.6, -0.8, 1.001e-3, 1e-3, 0.999e-3, -0.999e-3, 0.2, 0.2, 0.2, 0.3, 2e-3, 0.4, 0.3]
    w, g = forward_backward(q, theta, grad)
    close(w, [1, 1, 1, -1, 1, 1, 1, 1, 1, 1, 1, 0, 1, -1, -1])
    close(g, [0.5 * 0.2,  # toward a flip: min(0.5, 1/0.5 = 2) = 0.5
              0.0,  # away from a flip
              0.6 / 3, -0.8 / 4,  # |θ| > 2: 1/|θ|
              0.5 * 1.001e-3,  # |ℓ'| just above 1e-3: the rule applies
              1e-3, 0.999e-3, -0.999e-3,  # |ℓ'| ≤ 1e-3 (1e-3 itself is not > 1e-3): ℓ' unchanged
              0.5 * 0.2,  # |θ| just above 1e-3: min(0.5, 1/1.001e-3) = 0.5
              0.2, 0.2, 0.3,  # |θ| ≤ 1e-3, θ = 0 included: ℓ' unchanged
              0.5 * 2e-3,  # θ = 1: min(0.5, 1) = 0.5
              0.0,  # θ = −1, ℓ' > 0: away, 0
              0.0])  # θ = −0.5, ℓ' > 0: away, 0
    assert q.eval()(torch.tensor([-0.3, 0.0, -0.0, 2.0])).tolist() == [-1.0, 0.0, 0.0, 1.0]


def test_adaste_released_rule_soft_regime_is_asymmetric():
    """μα < 1 (μ = 0.01, α = 0.01: the released μ₀; FenBPOpt.py:99-114). Default factor 1/(1+μ) = 1/1.01;
    with |ℓ'| > 1e-3 towards a flip: saturated |θ| > 1 − μα = 0.9999 → min(0.5, 1.0201/1.01/|θ|); the
    linear part 1e-6 < |θ| < 0.9999 → clamp((0.0202 − θ)/(1.01·|θ|), 0, 0.5), θ signed, so +θ and −θ
    differ; saturated and moving away → 0; θ = 1 − μα exactly falls in neither mask."""
    q = get_quantizer("adaste_released", mu=0.01, alpha=0.01)
    edge = 1 - 0.01 * 0.01
    theta = [4.0, 4.0, 4.0, 0.015, -0.015, 0.5, -0.5, 0.5, 0.0, 5e-7, 2e-6, edge, -2.0]
    grad = [0.3, -0.3, 5e-4, 0.3, -0.3, 0.2, -0.2, -0.2, 0.2, 0.2, 0.2, 0.2, 1e-3]
    w, g = forward_backward(q, theta, grad)
    # forward: clamp((θ + 0.0101·sign θ)/1.01, −1, 1)
    close(w, [1, 1, 1, 0.0251 / 1.01, -0.0251 / 1.01, 0.5101 / 1.01, -0.5101 / 1.01, 0.5101 / 1.01, 0.0,
              (5e-7 + 0.0101) / 1.01, (2e-6 + 0.0101) / 1.01, (edge + 0.0101) / 1.01, -1])
    d = 1 / 1.01
    close(g, [0.3 * 1.0201 / 1.01 / 4,  # saturated, towards a flip: 0.2525 < 0.5
              0.0,  # saturated, away
              5e-4 * d,  # |ℓ'| ≤ 1e-3: default
              0.3 * (0.0202 - 0.015) / 1.01 / 0.015,  # linear part, θ > 0: 0.3432
              -0.3 * 0.5,  # θ < 0: (0.0202 + 0.015)/(1.01·0.015) = 2.32, clamped to 0.5
              0.0,  # θ = 0.5: 0.0202 − 0.5 < 0, clamped to 0
              -0.2 * 0.5,  # θ = −0.5: (0.0202 + 0.5)/0.505 = 1.03, clamped to 0.5
              -0.2 * d,  # linear part, away: default
              0.2 * d, 0.2 * d,  # θ = 0 and |θ| ≤ 1e-6: default
              0.2 * 0.5,  # θ = 2e-6: (0.0202 − 2e-6)/(1.01·2e-6) ≫ 0.5
              0.2 * d,  # θ = 1 − μα exactly: in no mask, default
              1e-3 * d])  # |ℓ'| = 1e-3 is not > 1e-3: default


def test_adaste_fenbp_update_matches_the_released_step():
    """FenBPOpt.py:165-178: m ← b·m + (1 − b)·(N²·g + reweight·θ), θ ← θ − lr·m/(1 − bᵗ); here N² = 1e6,
    reweight 1, b = 0.9, lr 0.1. The non-binary group is Adam (first step moves by lr)."""
    theta = torch.nn.Parameter(torch.tensor([10.0, -10.0, 0.5], dtype=torch.float64))
    real = torch.nn.Parameter(torch.tensor([0.3], dtype=torch.float64))
    optimizer = FenBP([{"params": [real]}, {"params": [theta], "fenbp": True}], lr=0.1, momentum=0.9,
                      grad_scale=1e6, decay=1.0)
    theta.grad = torch.tensor([1e-6, -2e-6, 0.0], dtype=torch.float64)
    real.grad = torch.tensor([2.0], dtype=torch.float64)
    optimizer.step()
    # d₁ = [1 + 10, −2 − 10, 0.5]; m₁ = 0.1·d₁; m₁/(1 − 0.9) = d₁; θ₁ = θ₀ − 0.1·d₁
    close(theta.detach(), [8.9, -8.8, 0.45], tol=1e-9)
    assert real.item() == pytest.approx(0.2)
    assert theta.grad is not None  # handed back after the step
    theta.grad = torch.tensor([0.0, 0.0, 1e-6], dtype=torch.float64)
    optimizer.step()
    # d₂ = [8.9, −8.8, 1 + 0.45]; m₂ = 0.9·m₁ + 0.1·d₂ = [1.88, −1.96, 0.19]; θ₂ = θ₁ − 0.1·m₂/0.19
    close(theta.detach(), [8.9 - 0.188 / 0.19, -8.8 + 0.196 / 0.19, 0.45 - 0.019 / 0.19], tol=1e-9)
    # a resumed run continues exactly: the state (m and the step count) survives Adam's load_state_dict
    twins = torch.nn.Parameter(theta.detach().clone()), torch.nn.Parameter(real.detach().clone())
    resumed = FenBP([{"params": [twins[1]]}, {"params": [twins[0]], "fenbp": True}], lr=0.1, momentum=0.9,
                    grad_scale=1e6, decay=1.0)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as read back from a checkpoint
    for p, q in zip((theta, real), twins, strict=True):
        q.grad = p.grad.clone()
    optimizer.step()
    resumed.step()
    assert torch.equal(twins[0], theta) and torch.equal(twins[1], real)


def test_adaste_released_schedules():
    """μ ← min(1.05·μ, 1/α) before every epoch from μ = 0.01 (train_utils.py:115-116), so epoch 0 already
    trains at 0.0105 and μ = 100 from epoch 188 (0.01·1.05^188 ≈ 96.3 < 100 ≤ 0.01·1.05^189); the cosine
    schedule (T_max = 700, η_min = 1e-16; train_utils.py:94-95) is stepped before each epoch
    (train_utils.py:120), so epoch e trains at the cosine value of e + 1 and the last at 1e-16."""
    config = AdasteMethod.default_config("paper")
    assert annealed_mu(0, 700, config) == pytest.approx(0.0105)
    assert annealed_mu(1, 700, config) == pytest.approx(0.011025)
    assert annealed_mu(187, 700, config) == pytest.approx(0.01 * 1.05**188) and 0.01 * 1.05**188 < 100
    assert annealed_mu(188, 700, config) == annealed_mu(699, 700, config) == 100.0
    method = paper("adaste", arch="tiny", image_size=8, epochs=700)
    scheduler = method.configure_optimizers()["lr_scheduler"]["scheduler"]
    for epoch in range(700):
        expected = 1e-16 + (3e-4 - 1e-16) * (1 + math.cos(math.pi * (epoch + 1) / 700)) / 2
        assert scheduler.get_last_lr()[0] == pytest.approx(expected, rel=1e-9, abs=1e-20), epoch
        scheduler.optimizer.step()
        scheduler.step()


def test_adaste_paper_defaults_follow_the_released_script():
    cls = AdasteMethod
    config = cls.default_config("paper")
    # scripts/RESNET18_cifar10.sh: main_cifar10.py --model RESNET18 --optim FenBP, all else default
    assert cls.paper_recipe["arch"] == "resnet18"  # models.py:384 ResNet18, 3×3 stride-1 stem at 32 px (:311)
    assert cls.paper_recipe["epochs"] == 700  # main_cifar10.py:53 --epochs default 700
    assert cls.paper_recipe["batch_size"] == 128  # main_cifar10.py:45
    assert config.optimizer == "fenbp" and config.gradient == "released"  # main_cifar10.py:257-266
    assert config.lr == 3e-4  # main_cifar10.py:55
    assert config.momentum == 0.9  # main_cifar10.py:64, passed as betas at :263
    assert config.weight_decay == 1.0  # FenBPOpt.py:18 reweight=1, used at :169
    # main_cifar10.py:258: N = len(train sampler) × trainset_scale = 45,000 (val-split 0.1, :43) × 10 (:82);
    # FenBPOpt.py:165-166 multiply the gradient by N twice
    assert config.grad_scale == (45_000 * 10) ** 2
    assert config.scheduler == "cosine" and config.lr_min == 1e-16  # main_cifar10.py:79, train_utils.py:95
    assert config.lr_step_first  # train_utils.py:120, before the batches of every epoch
    assert config.alpha == 0.01 and config.mu_start == 0.01  # main_cifar10.py:264-265
    assert config.anneal and config.mu_growth == 1.05  # main_cifar10.py:98, train_utils.py:116
    assert config.latent_init == 10.0  # main_cifar10.py:86 (lamda 10), :89 (std 0); FenBPOpt.py:36-37
    assert not config.bn_affine  # models.py:252, 254, 260, 312, 318: affine=False
    assert config.bn_momentum == pytest.approx(1 - 0.8**2)  # momentum=0.2 (models.py:252...), twice per step
    assert config.logit_bn_momentum == pytest.approx(1 - 0.9**2)  # models.py:318, default 0.1, twice per step
    assert config.binarize_all  # FenBPOpt.py:23, 34: every parameter of the model

    method = paper("adaste", arch="resnet18", image_size=8, epochs=2)
    assert all(isinstance(m, BinaryConv2d) for m in method.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert hasattr(method.model.fc[0], "weight_quantizer") and isinstance(method.model.fc[1], LogitBatchNorm)
    norms = [m for m in method.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(m.weight is None and m.bias is None for m in norms)
    assert {m.momentum for m in norms} == {0.36, 0.19}
    latent = torch.cat([layer.weight.detach().flatten() for _, layer in method.binary_layers()])
    assert set(latent.unique().tolist()) == {-10.0, 10.0}
    groups = method.configure_optimizers()["optimizer"].param_groups
    assert sorted((g["fenbp"], len(g["params"])) for g in groups) == [(False, 1), (True, 21)]  # 1: fc bias


# -- xnor: XNOR-Net-PyTorch's BinOp and BinActive ----------------------------------------------------------

def test_xnor_released_weight_rule():
    """util.py:52-59 (forward) and :65-82 (gradient): w = α_c·torch.sign(θ), α_c = mean |θ| of the output
    channel; g = (α_c·ℓ'·1[|θ| ≤ 1] + torch.sign(θ)·(1/n)·Σ ℓ'·torch.sign(θ))·n·(1 − 1/C_in). Here C_in = n = 3,
    so the last factor is 2; θ = 0 has sign 0."""
    theta = [[0.5, -1.0, 0.0], [1.0, -0.25, 0.25], [1.5, -2.0, 0.5]]
    grad = [[1.0, 2.0, -1.0], [0.5, -1.0, 4.0], [1.0, 1.0, 1.0]]
    w, g = forward_backward(get_quantizer("xnor_released"), theta, grad, shape=(3, 3, 1, 1))
    close(w, [0.5, -0.5, 0.0, 0.5, -0.5, 0.5, 4 / 3, -4 / 3, 4 / 3])
    # row 0: α = 0.5, signs (1, −1, 0), Σ = 1 − 2 = −1: (ℓ'·0.5 + s·(−1)/3)·2
    # row 1: α = 0.5, signs (1, −1, 1), Σ = 0.5 + 1 + 4 = 5.5: (ℓ'·0.5 + s·5.5/3)·2
    # row 2: α = 4/3, |θ| > 1 for the first two (gate shut), Σ = 1 − 1 + 1 = 1: (gate·ℓ'·4/3 + s/3)·2
    close(g, [(0.5 - 1 / 3) * 2, (1.0 + 1 / 3) * 2, (-0.5 + 0.0) * 2,
              (0.25 + 5.5 / 3) * 2, (-0.5 - 5.5 / 3) * 2, (2.0 + 5.5 / 3) * 2,
              (1 / 3) * 2, (-1 / 3) * 2, (4 / 3 + 1 / 3) * 2])


def test_xnor_released_activation_rule():
    """nin.py:9-21 BinActive: forward torch.sign(x) (0 ↦ 0), gradient zeroed where x ≥ 1 or x ≤ −1."""
    w, g = forward_backward(get_quantizer("xnor_input_released"), [-2.0, -1.0, -0.5, 0.0, -0.0, 0.5, 1.0, 2.0],
                            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    close(w, [-1.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    close(g, [0.0, 0.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0])


def test_xnor_paper_mode_centres_clamps_and_relus_before_every_forward():
    """util.py:36-46: θ ← clamp(θ − mean over input channels, −1, 1) in place before each forward; nin.py:75-78:
    BatchNorm γ ≥ 0.01; nin.py:46-47: ReLU after each binary conv, whose conv has a bias (nin.py:37-38)."""
    method = paper("xnor", arch="vgg_small", image_size=8)
    layer = next(layer for _, layer in method.binary_layers())
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:, 0] = 3.0
        layer.weight[:, 1] = -1.0
        bn = method.model.features[1]
        bn.weight.fill_(-0.5)
    method.prepare_forward()
    mean = (3.0 - 1.0) / layer.in_channels
    assert layer.weight[0, 0, 0, 0].item() == 1.0  # 3 − mean, clamped
    assert layer.weight[0, 1, 0, 0].item() == -1.0  # −1 − mean, clamped
    assert layer.weight[0, 2, 0, 0].item() == pytest.approx(-mean)
    assert (bn.weight == 0.01).all()
    assert layer.bias is not None and (layer.bias == 0).all()
    out = layer(torch.randn(2, layer.in_channels, 4, 4))
    assert out.min() >= 0 and out.max() > 0


def test_xnor_paper_defaults_follow_the_released_script():
    cls = XnorMethod
    config = cls.default_config("paper")
    assert cls.paper_recipe["epochs"] == 319  # main.py:177 `for epoch in range(1, 320)`
    assert cls.paper_recipe["batch_size"] == 128  # main.py:119
    assert cls.paper_recipe["arch"] == "vgg_small"  # NIN (nin.py) is not in archs: a documented deviation
    assert config.optimizer == "adam" and config.lr == 0.01  # main.py:99 --lr '0.01' per group (:161-165)
    assert config.weight_decay == 1e-5  # main.py:163, 165
    # main.py:83-88, called at :178 before train(epoch): ×0.1 from the 1-based epochs 120/200/240/280 on
    assert config.scheduler == "multistep" and config.lr_decay_factor == 0.1
    assert config.lr_milestones == (119, 199, 239, 279)
    assert config.rule == "released" and config.mean_center and config.clip_latent  # util.py:30-46
    assert config.bn_weight_min == 0.01  # nin.py:75-78
    assert config.bn_eps == 1e-4  # nin.py:33, 55, 68
    assert config.relu_after_binary_conv and config.binary_conv_bias  # nin.py:37-39, 47
    assert config.init_std == 0.05  # main.py:141-144: normal_(0, 0.05), bias zero_()
    method = paper("xnor", arch="tiny", image_size=8, epochs=320)
    scheduler = method.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(319):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    for epoch, expected in ((0, 0.01), (118, 0.01), (119, 1e-3), (198, 1e-3), (199, 1e-4), (239, 1e-5),
                            (279, 1e-6), (318, 1e-6)):
        assert lrs[epoch] == pytest.approx(expected), epoch
    first = next(layer for _, layer in method.binary_layers())
    assert first.weight.std().item() == pytest.approx(0.05, rel=0.2)


# -- dra: DualRateAlphaFunction ------------------------------------------------------------------------------

def test_dra_rule_matches_the_released_function_except_at_zero():
    """binarization.py:6-16: w = torch.sign(θ)·α, θ receives ℓ' unchanged, α receives Σ ℓ'·torch.sign(θ).
    bnnbench maps θ = 0 to +1 (documented deviation): w = α there and ℓ' joins α's sum."""
    theta = [-2.0, -1.0, -0.3, 0.0, 0.4, 1.0, 1.5]
    grad = [0.5, -1.0, 2.0, 3.0, -4.0, 0.25, 1.0]
    q = get_quantizer("dra", alpha=0.5)
    w, g = forward_backward(q, theta, grad)
    released_w = [-0.5, -0.5, -0.5, 0.0, 0.5, 0.5, 0.5]  # torch.sign(0) = 0
    released_alpha_grad = -0.5 + 1.0 - 2.0 + 0.0 - 4.0 + 0.25 + 1.0  # = −4.25
    zero = 3
    close(torch.cat([w[:zero], w[zero + 1:]]), released_w[:zero] + released_w[zero + 1:])
    assert w[zero].item() == 0.5  # the deviation: sign(0) = +1
    close(g, grad)  # no α factor, no clipping, as released
    assert q.alpha.grad.item() == pytest.approx(released_alpha_grad + grad[zero])  # the deviation: +ℓ' at θ = 0


def test_dra_paper_defaults_follow_the_released_script():
    cls = DraMethod
    config = cls.default_config("paper")
    assert cls.paper_recipe["arch"] == "dra_resnet18"  # resnet.py:5-36, modules.py:6-46
    assert cls.paper_recipe["epochs"] == 400  # config.xml num_epochs
    assert cls.paper_recipe["batch_size"] == 8  # config.xml batch_size
    assert cls.paper_recipe["image_size"] == 224  # transforms.py Resize((224, 224))
    assert config.optimizer == "adam" and config.lr == 1e-3 and config.weight_decay == 1e-4  # main.py:171
    # main.py:172-174 ReduceLROnPlateau(mode min, factor 0.5, patience 5, min_lr = config.xml min_lr 1e-4),
    # stepped on the epoch's training loss (main.py:195)
    assert config.scheduler == "plateau" and config.monitor == "train/loss"
    assert config.plateau_factor == 0.5 and config.plateau_patience_epochs == 5 and config.lr_min == 1e-4
    # main.py:213-222 with config.xml patience 10, early_stopping_delta 0.001
    assert config.early_stopping_patience_epochs == 10 and config.early_stopping_min_delta == 0.001
    assert config.alpha_init == 0.5  # modules.py:12, 24
    assert config.alpha_lr is None and config.alpha_clamp is None  # train.py:14-19 never runs (no `alpha` attr)
    assert config.activation == "prelu"  # modules.py:11, resnet.py:11
    assert not config.binarize_activations and not config.fp_classifier and not config.mean_center  # modules.py


# -- pc, bnn_plus, bnnpp, fp: no released code; the papers' rules ---------------------------------------------

def test_pc_rule_on_zeros_and_ones():
    """No released code; ProxConnect with AdaSTE's s_μ (μ = 3, α = 0.1): (|θ| + 3.3)/4 clipped, sgn(0) = +1
    (−0 too), identity backward; evaluation sign with sign(0) = +1."""
    q = get_quantizer("pc", mu=3.0, alpha=0.1)
    w, g = forward_backward(q, [0.0, -0.0, 1.0, -1.0, 0.4], [0.3, -0.7, 0.2, 1.0, -2.0])
    close(w, [0.825, 0.825, 1.0, -1.0, 0.925])
    close(g, [0.3, -0.7, 0.2, 1.0, -2.0])
    assert q.eval()(torch.tensor([0.0, -0.0, -1.0, 1.0])).tolist() == [1.0, 1.0, -1.0, 1.0]


def test_bnn_plus_rule_on_zeros_and_ones():
    """No released code; BNN+ as a PC++ member: w = sign(θ) (sign(0) = +1),
    g = ℓ'·β(2 − βθ·tanh(βθ/2))/(1 + cosh βθ)."""
    w, g = forward_backward(get_quantizer("bnn_plus", beta=5.0), [0.0, -0.0, 1.0, -1.0], [1.0, 2.0, 3.0, 4.0])
    close(w, [1.0, 1.0, 1.0, -1.0])
    at_one = 5.0 * (2 - 5.0 * math.tanh(2.5)) / (1 + math.cosh(5.0))  # even in θ
    close(g, [5.0, 10.0, 3 * at_one, 4 * at_one], tol=1e-9)


def test_bnnpp_rule_on_zeros_and_ones():
    """No released code; BNN++: w = SS_μ(θ) = 2σ(μθ)(1 + μθ(1 − σ(μθ))) − 1, g = ℓ'·SS'_μ(θ); μ = 2. SS(0) = 0,
    SS'(0) = μ; evaluation sign(0) = +1."""
    q = get_quantizer("bnnpp", mu=2.0)
    w, g = forward_backward(q, [0.0, 1.0, -1.0], [1.0, 1.0, 2.0])
    s = 1 / (1 + math.exp(-2.0))
    ss_one = 2 * s * (1 + 2.0 * (1 - s)) - 1
    d_one = 2.0 * (2 - 2.0 * math.tanh(1.0)) / (1 + math.cosh(2.0))
    close(w, [0.0, ss_one, -ss_one], tol=1e-9)
    close(g, [2.0, d_one, 2 * d_one], tol=1e-9)
    assert q.eval()(torch.tensor([0.0, -1.0])).tolist() == [1.0, -1.0]


def test_fp_update_is_plain_adam_with_weight_decay():
    """No paper: one Adam step with L2 1e-4 moves each weight by lr·g'/(|g'| + ε), g' = g + 1e-4·θ; nothing is
    binarized, so a zero weight with zero gradient stays exactly 0."""
    method = paper("fp", arch="tiny", image_size=8)
    assert not method.binary_layers()
    weight = method.model.fc.weight
    with torch.no_grad():
        weight.zero_()
        weight[0, :3] = torch.tensor([1.0, -1.0, 0.0])
    optimizer = method.make_optimizer()
    for p in method.parameters():
        p.grad = torch.zeros_like(p)
    weight.grad[0, :3] = torch.tensor([0.5, -2.0, 0.0])
    optimizer.step()
    g = torch.tensor([0.5 + 1e-4, -2.0 - 1e-4, 0.0])
    expected = torch.tensor([1.0, -1.0, 0.0]) - 1e-3 * g / (g.abs() + 1e-8)
    torch.testing.assert_close(weight.detach()[0, :3], expected)
    assert (weight.detach()[1:] == 0).all()


@pytest.mark.parametrize("cls", [PcMethod, BnnPlusMethod, BnnppMethod, FpMethod])
def test_methods_without_released_code_have_paper_equal_to_fair(cls):
    # No released code or published recipe to follow (see each module's "Released code" part): paper mode
    # keeps the fair-mode defaults and sets no architecture, epochs or batch size of its own.
    assert cls.default_config("paper") == cls.default_config("fair")
    assert cls.paper_recipe == {} and cls.paper_config == {}
