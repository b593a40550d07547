"""`reactnet` (ReActNet): RSign's and RPReLU's forward and backward against worked values, the cost of β, the
distillation loss on a worked example, the two-step switch in a run, fair vs paper mode, and the teacher:
given by run id, trained first by the runner (and reused), and a bad run id as one line."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import mlflow
import pytest
import torch
import torch.nn.functional as F

from bnnbench import cost, tracking
from bnnbench.cli import main
from bnnbench.config import RunConfig
from bnnbench.errors import BadInput
from bnnbench.methods.reactnet import ReactnetMethod, distribution_loss
from bnnbench.runner import TEACHER_TAG, build_method, resolve, run


def make(mode: str = "fair", epochs: int = 2, **overrides):
    resolved = resolve(RunConfig(method="reactnet", dataset="fake", arch="tiny", image_size=8, epochs=epochs,
                                 mode=mode, method_overrides=overrides))
    return build_method(resolved)


def runs_of(uri: str, experiment: str = "fake") -> list:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def test_rsign_is_sign_of_the_shifted_input_with_approxsign_gradients():
    """features.3 of `tiny` is the first binary conv (32 input channels): β_0 = 0.2 on channel 0.
    x − β = (−1.7, −0.5, 0, 0.3, 1.8) → sign (−1, −1, +1, +1, +1) (sign(0) = +1); ApproxSign's factor
    max(0, 2 − 2|x − β|) = (0, 1, 2, 1.4, 0) is ∂x for ℓ' = 1, and ∂β_0 = −(0 + 1 + 2 + 1.4 + 0) = −4.4
    (the stored shift is b = −β, so ∂b_0 = +4.4); channels without input get nothing."""
    rsign = make().model.features[3]
    assert rsign.shift.bias.numel() == 32  # one β per input channel of the layer
    with torch.no_grad():
        rsign.shift.bias[0, 0] = -0.2
    x = torch.zeros(1, 32, 1, 5)
    x[0, 0, 0] = torch.tensor([-1.5, -0.3, 0.2, 0.5, 2.0])
    x.requires_grad_(True)
    out = rsign.layer.quantize_input(rsign.shift(x))
    assert out[0, 0, 0].tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    (out[:, :1] * 1.0).sum().backward()
    torch.testing.assert_close(x.grad[0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 1.4, 0.0]))
    assert float(rsign.shift.bias.grad[0, 0]) == pytest.approx(4.4)
    assert float(rsign.shift.bias.grad[0, 1:].abs().sum()) == 0.0


def test_rprelu_worked_values():
    """features.2 of `tiny` is an RPReLU of 32 channels. Channel 0: γ = 0.5, slope 0.25 (its init), ζ = −1;
    x = (−2, 0.5): x + γ = (−1.5, 1) → (−0.375, 1) → (−1.375, 0). Backward with ℓ' = 1: ∂x = (0.25, 1),
    ∂slope = Σ min(x + γ, 0) = −1.5, ∂γ = 0.25 + 1 = 1.25, ∂ζ = 2."""
    act = make().model.features[2]
    assert act.weight.shape == act.shift_in.flatten().shape == act.shift_out.flatten().shape == (32,)
    with torch.no_grad():
        act.shift_in[0, 0] = 0.5
        act.shift_out[0, 0] = -1.0
    x = torch.zeros(1, 32, 1, 2)
    x[0, 0, 0] = torch.tensor([-2.0, 0.5])
    x.requires_grad_(True)
    out = act(x)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([-1.375, 0.0]))
    out[:, :1].sum().backward()
    torch.testing.assert_close(x.grad[0, 0, 0], torch.tensor([0.25, 1.0]))
    assert float(act.weight.grad[0]) == pytest.approx(-1.5)
    assert float(act.shift_in.grad[0, 0]) == pytest.approx(1.25)
    assert float(act.shift_out.grad[0, 0]) == pytest.approx(2.0)


def test_cost_counts_the_shifts_and_rprelu_as_real_parameters():
    """`tiny` on fake (3×8×8, 4 classes): real = stem conv 864 + 3 BN 64 + 128 + 128 + 3 RPReLU 96 + 192 + 192
    + β 32 + 64 + classifier 260 = 2,020; binary = 32·64·9 + 64·64·9 = 55,296."""
    costs = cost.count(make().model, (3, 8, 8))
    assert (costs.params_real, costs.params_binary) == (2020, 55296)
    assert costs.size_kib == pytest.approx((55296 + 32 * 2020) / 8 / 1024)


def test_distillation_loss_worked_example():
    """Student s = (0, ln 3): log softmax (ln ¼, ln ¾). Teacher (0, 0): p = (½, ½), loss ½(ln 4 + ln 4/3)
    = 0.83698; teacher (ln 3, 0): p = (¾, ¼), loss ¾ ln 4 + ¼ ln 4/3 = 1.11164; the batch mean 0.97431.
    No label enters: cross-entropy with label 1 would be ln 4/3 = 0.28768."""
    student = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])
    teacher = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    assert float(distribution_loss(student[:1], teacher[:1])) == pytest.approx(0.83698, abs=1e-5)
    assert float(distribution_loss(student[1:], teacher[1:])) == pytest.approx(1.11164, abs=1e-5)
    assert float(distribution_loss(student, teacher)) == pytest.approx(0.97431, abs=1e-5)


def test_distillation_is_off_in_fair_mode_and_on_in_paper_mode():
    assert ReactnetMethod.default_config("fair").distill is False
    assert ReactnetMethod.default_config("paper").distill is True
    method = make()
    logits, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.equal(method.loss(logits, target, torch.zeros(6, 3, 8, 8)), F.cross_entropy(logits, target))


def test_a_teacher_id_without_distillation_is_refused():
    with pytest.raises(BadInput, match="teacher_run_id='abc' with distill=false"):
        make(teacher_run_id="abc")


class Record(pl.Callback):
    """Per epoch: the first binary layer's training-mode weights at the first batch, and the model state and
    val/acc after validation."""

    def __init__(self):
        self.train_weights, self.start_states, self.val_states, self.val_acc = [], [], [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            layer = module.binary_layers()[0][1]
            self.train_weights.append(layer.effective_weight().detach().clone())
            self.start_states.append({k: v.clone() for k, v in module.model.state_dict().items()})

    def on_validation_end(self, trainer, module):
        self.val_acc.append(float(trainer.callback_metrics["val/acc"]))
        self.val_states.append({k: v.clone() for k, v in module.model.state_dict().items()})


def test_step_one_trains_real_weights_and_step_two_binary_ones_from_the_best_step_one_state(tracking_uri):
    record = Record()
    run(RunConfig(method="reactnet", dataset="fake", epochs=3, method_overrides={"phase1_epochs": 2},
                  tracking_uri=tracking_uri, progress="none"), callbacks=[record])
    assert len(record.train_weights) == 3
    for epoch, w in enumerate(record.train_weights):
        magnitudes = w.flatten(1).abs()
        binary = torch.equal(magnitudes, magnitudes[:, :1].expand_as(magnitudes))  # ±α_c per output channel
        assert binary == (epoch == 2), epoch
    best = record.val_acc[:2].index(max(record.val_acc[:2]))  # the first of equal step-1 epochs
    for key, value in record.val_states[best].items():
        assert torch.equal(record.start_states[2][key], value), key


def test_a_reactnet_run_learns_from_the_teacher_run_it_names(tracking_uri, tmp_path):
    teacher = run(RunConfig(method="fp", dataset="fake", epochs=1, tracking_uri=tracking_uri, progress="none"))
    student = run(RunConfig(method="reactnet", dataset="fake", epochs=2, tracking_uri=tracking_uri, progress="none",
                            method_overrides={"distill": True, "teacher_run_id": teacher.run_id}))
    recorded = mlflow.MlflowClient(tracking_uri).get_run(student.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["teacher_run_id"] == teacher.run_id
    assert recorded.data.tags[TEACHER_TAG] == teacher.run_id
    assert len(runs_of(tracking_uri)) == 2  # no other teacher was trained
    # the student alone is costed, checkpointed and exported
    assert student.metrics["cost/params_real"] == 2020
    logged = tracking.load_model(tracking_uri, student.run_id)
    assert sum(p.numel() for p in logged.parameters()) == 2020 + 55296

    method = make(distill=True, teacher_run_id=teacher.run_id)
    method.load_teacher(tracking_uri, teacher.run_id)
    method.model.load_state_dict(logged.state_dict())
    assert not any(key.startswith("_teacher") for key in method.state_dict())
    assert sum(p.numel() for p in method.parameters()) == 2020 + 55296
    x, y = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3] * 2)
    logits = method(x)
    with torch.no_grad():
        taught = tracking.load_model(tracking_uri, teacher.run_id)(x)
    loss = method.loss(logits, y, x)
    expected = -(F.softmax(taught, 1) * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    assert float(loss.detach()) != pytest.approx(float(F.cross_entropy(logits, y).detach()), abs=1e-3)
    torch.testing.assert_close(method.loss(logits, y.flip(0), x), loss)  # the labels do not enter
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())  # frozen


def test_a_bad_teacher_run_id_is_one_line_and_records_nothing(tmp_path, capsys):
    db = tmp_path / "m.db"
    uri = f"sqlite:///{db}"
    run(RunConfig(method="fp", dataset="fake", epochs=1, tracking_uri=uri, progress="none"))
    capsys.readouterr()
    code = main(["run", "--method", "reactnet", "--dataset", "fake", "--set", "distill=true",
                 "teacher_run_id=no-such-run", "--tracking-uri", uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no-such-run" in err[0], err
    assert [r.data.params["method"] for r in runs_of(uri)] == ["fp"]


def test_without_a_teacher_id_the_runner_trains_an_fp_teacher_once_and_reuses_it(tracking_uri):
    config = RunConfig(method="reactnet", dataset="fake", epochs=2, tracking_uri=tracking_uri, progress="none",
                       method_overrides={"distill": True})
    first = run(config)
    (teacher,) = [r for r in runs_of(tracking_uri) if r.data.params["method"] == "fp"]
    assert teacher.info.status == "FINISHED"
    assert {k: teacher.data.params[k] for k in ("dataset", "arch", "epochs", "batch_size", "image_size", "seed")} == \
        {"dataset": "fake", "arch": "tiny", "epochs": "2", "batch_size": "16", "image_size": "8", "seed": "0"}
    second = run(config)
    client = mlflow.MlflowClient(tracking_uri)
    for result in (first, second):
        assert client.get_run(result.run_id).data.tags[TEACHER_TAG] == teacher.info.run_id
    assert len(runs_of(tracking_uri)) == 3  # one teacher, two students
