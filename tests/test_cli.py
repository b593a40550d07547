"""`bnnbench run` and `bnnbench list` as a user runs them, read back with MLflow's own client."""

from __future__ import annotations

import signal
import subprocess
import sys

import mlflow
import pytest
import yaml

from bnnbench.cli import main
from bnnbench.config import RunConfig
from bnnbench.runner import RunFailed, run


def only_run(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_run_on_digits_is_recorded_in_mlflow(tracking_uri, capsys):
    code = main(["run", "--method", "dra", "--dataset", "digits", "--epochs", "3", "--tracking-uri", tracking_uri])
    out = capsys.readouterr().out
    assert code == 0
    client, recorded = only_run(tracking_uri, "digits")  # one experiment per dataset, named after it
    run_id = recorded.info.run_id
    assert run_id in out and "val/acc_best" in out and "test/acc" in out
    assert recorded.info.status == "FINISHED"

    params = recorded.data.params
    assert {k: params[k] for k in ("method", "dataset", "arch", "mode", "seed", "epochs", "batch_size",
                                   "image_size")} == {
        "method": "dra", "dataset": "digits", "arch": "tiny", "mode": "fair", "seed": "0", "epochs": "3",
        "batch_size": "64", "image_size": "8"}
    for field in ("lr", "weight_decay", "alpha_init", "alpha_lr", "alpha_clamp", "activation", "fp_classifier"):
        assert field in params
    sizes = (params["data/train_size"], params["data/val_size"], params["data/test_size"])
    assert sizes == ("1258", "180", "359")  # 70/10/20 of 1,797

    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert len(client.get_metric_history(run_id, key)) == 3, key  # one point per epoch
    metrics = recorded.data.metrics
    best = max(m.value for m in client.get_metric_history(run_id, "val/acc"))
    assert metrics["val/acc_best"] == pytest.approx(best)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert f"test/acc      {metrics['test/acc']:.4f}" in out

    tags = recorded.data.tags
    assert len(tags["git_commit"]) in (40, 7) or tags["git_commit"] == "unknown"
    assert tags["git_dirty"] in ("true", "false", "unknown")
    for key in ("version.bnnbench", "version.torch", "version.lightning", "device"):
        assert tags[key]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "confusion_matrix.png", "curves.png"} <= artifacts
    config = yaml.safe_load(open(client.download_artifacts(run_id, "config.yaml")))
    assert config["method"] == "dra" and config["epochs"] == 3 and config["set"]["alpha_init"] == 0.5


def test_default_tracking_uri_is_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    assert main(["run", "--method", "fp", "--dataset", "fake"]) == 0
    assert (tmp_path / "mlflow.db").is_file()
    only_run("sqlite:///mlflow.db", "fake")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert main(["run", "--method", "fp", "--dataset", "fake", "--experiment", "mine"]) == 0
    only_run(f"sqlite:///{tmp_path / 'env.db'}", "mine")


def test_recipe_then_flags_then_set(tmp_path, tracking_uri):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: ste\ndataset: fake\nepochs: 1\nseed: 7\nset:\n  lr: 0.01\n  backward: clip\n")
    assert main(["run", "--recipe", str(recipe), "--epochs", "2", "--set", "lr=0.002",
                 "--tracking-uri", tracking_uri]) == 0
    _, recorded = only_run(tracking_uri, "fake")
    params = recorded.data.params
    assert (params["epochs"], params["seed"], params["lr"], params["backward"]) == ("2", "7", "0.002", "clip")


@pytest.mark.parametrize("argv, message", [
    (["--method", "dre", "--dataset", "digits"], "unknown method: 'dre' (did you mean 'dra'?); valid: "),
    (["--method", "dra", "--dataset", "digit"], "unknown dataset: 'digit' (did you mean 'digits'?); valid: "),
    (["--method", "dra", "--dataset", "digits", "--arch", "resnet19"], "unknown architecture: 'resnet19'"),
    (["--method", "dra", "--dataset", "digits", "--set", "alpha_lrr=1"], "'alpha_lrr' (did you mean 'alpha_lr'?)"),
    (["--method", "dra", "--dataset", "digits", "--set", "alpha_lr=fast"], "bad value 'fast' for 'alpha_lr'"),
    (["--method", "dra", "--dataset", "digits", "--set", "activation=tanh"], "valid: prelu, relu"),
    (["--method", "dra", "--dataset", "digits", "--set", "alpha_clamp=0.1"], "expected 2 comma-separated"),
    (["--method", "dra", "--dataset", "digits", "--set", "lr"], "expected key=value"),
    (["--method", "dra", "--dataset", "digits", "--epochs", "0"], "--epochs: '0' must be a positive integer"),
    (["--method", "dra", "--dataset", "digits", "--batch-size", "-8"], "--batch-size: '-8' must be a positive"),
    (["--method", "dra", "--dataset", "digits", "--image-size", "x"], "--image-size: 'x' is not an integer"),
    (["--method", "dra", "--dataset", "garbage", "--data-dir", "nowhere"], "nowhere"),
    (["--dataset", "digits"], "--method is required"),
])
def test_bad_input_is_one_line_exit_2_and_records_nothing(argv, message, capsys, tracking_uri):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(["run", *argv, "--tracking-uri", tracking_uri]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    client = mlflow.MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_nan_loss_marks_the_run_failed_with_the_reason(tracking_uri, capsys):
    assert main(["run", "--method", "fp", "--dataset", "fake", "--set", "lr=1e30", "--set", "scheduler=none",
                 "--tracking-uri", tracking_uri]) == 1
    err = capsys.readouterr().err
    _, recorded = only_run(tracking_uri, "fake")
    assert recorded.info.status == "FAILED"
    assert "train/loss is nan" in recorded.data.tags["failure_reason"]
    assert f"run {recorded.info.run_id} FAILED" in err and "Traceback" not in err


def test_ctrl_c_marks_the_run_killed(tracking_uri):
    import lightning.pytorch as pl

    class CtrlC(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            raise KeyboardInterrupt

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(RunConfig(method="ste", dataset="fake", tracking_uri=tracking_uri, progress="none"),
                callbacks=[CtrlC()])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after a Ctrl-C
    _, recorded = only_run(tracking_uri, "fake")
    assert recorded.info.status == "KILLED"


def test_an_exception_in_training_marks_the_run_failed(tracking_uri):
    import lightning.pytorch as pl

    class Boom(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            raise RuntimeError("disk on fire")

    with pytest.raises(RunFailed, match="disk on fire"):
        run(RunConfig(method="dra", dataset="fake", tracking_uri=tracking_uri, progress="none"), callbacks=[Boom()])
    _, recorded = only_run(tracking_uri, "fake")
    assert recorded.info.status == "FAILED" and "disk on fire" in recorded.data.tags["failure_reason"]


def test_list_and_help_are_instant_they_import_neither_lightning_nor_mlflow():
    code = ("import sys\nfrom bnnbench.cli import main\n"
            "for argv in (['list', 'methods'], ['list', 'datasets'], ['list', 'archs']): main(argv)\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'lightning' not in sys.modules and 'mlflow' not in sys.modules, 'heavy import'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "dra" in out and "digits" in out and "resnet18" in out and "usage: bnnbench" in out


def test_python_dash_m_is_the_same_program():
    import bnnbench

    out = subprocess.run([sys.executable, "-m", "bnnbench", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"bnnbench {bnnbench.__version__}"


def test_progress_goes_to_stderr_one_line_per_epoch_and_stdout_keeps_the_results(tracking_uri, capsys):
    assert main(["run", "--method", "fp", "--dataset", "fake", "--epochs", "2", "--tracking-uri", tracking_uri]) == 0
    captured = capsys.readouterr()
    assert [line.split()[0] for line in captured.out.splitlines()] == ["val/acc_best", "test/acc", "MLflow"]
    epochs = [line for line in captured.err.splitlines() if " epoch " in line]
    assert len(epochs) == 2 and "epoch 2/2" in epochs[1] and "ETA" in epochs[0] and "val/acc" in epochs[0]
    assert "\r" not in captured.err and "v_num" not in captured.err
    assert main(["run", "--method", "fp", "--dataset", "fake", "--no-progress", "--tracking-uri", tracking_uri]) == 0
    assert " epoch " not in capsys.readouterr().err


def test_a_configuration_far_heavier_than_its_dataset_default_gets_one_warning(caplog):
    from bnnbench import cost
    from bnnbench.config import resolve
    from bnnbench.runner import build_method, warn_if_heavy

    heavy = resolve(RunConfig(method="fp", dataset="digits", arch="resnet18", image_size=32))
    model = build_method(heavy).model
    with caplog.at_level("WARNING", logger="bnnbench"):
        warn_if_heavy(heavy, model, cost.count(model, (1, 32, 32)), 1258)
    (record,) = caplog.records
    assert "resnet18 at 32 px is 0.554 G MACs per image, 310× the default of digits (tiny at 8 px)" in record.message
    assert "min here (from one timed forward pass)" in record.message
    caplog.clear()
    default = resolve(RunConfig(method="fp", dataset="digits"))
    model = build_method(default).model
    warn_if_heavy(default, model, cost.count(model, (1, 8, 8)), 1258)
    assert not caplog.records


def test_the_progress_bar_on_a_terminal_draws_on_stderr(capsys):
    """On a terminal `run` shows Lightning's bar; it must draw on stderr so that stdout keeps the results."""
    import lightning.pytorch as pl

    from bnnbench.callbacks import StderrProgressBar

    bar = StderrProgressBar()
    bar.setup(pl.Trainer(callbacks=[bar], logger=False, enable_checkpointing=False), None, stage="fit")
    for make in (bar.init_train_tqdm, bar.init_validation_tqdm, bar.init_test_tqdm):
        tqdm = make()
        tqdm.disable = False
        tqdm.total = 3
        tqdm.update(3)
        tqdm.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "Training: 100%" in captured.err and "Testing: 100%" in captured.err
