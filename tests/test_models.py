"""Where users look: a run's dataset input and model in MLflow, and `bnnbench export`.

Real short runs on digits (`bnn`: ±1 weights, binary activations; `dra`: ±α weights), read back with
MLflow's own client and `mlflow.pytorch.load_model`, as a user would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import mlflow.pytorch
import pytest
import torch

from bnnbench import cost, export, tracking
from bnnbench.cli import main
from bnnbench.config import RunConfig, resolve
from bnnbench.data.digits import DigitsDataModule
from bnnbench.errors import RunFailed, Terminated
from bnnbench.layers import binary_layers
from bnnbench.registry import METHODS as REGISTERED
from bnnbench.runner import build_method, run

METHODS = ("bnn", "dra")
METHODS_ALL = REGISTERED.names()
ONNX_MISSING = export.onnx_missing()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One FINISHED 2-epoch run per method on digits, in one store: {method: RunResult}, and the store."""
    folder = tmp_path_factory.mktemp("models")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            results = {method: run(RunConfig(method=method, dataset="digits", epochs=2, tracking_uri=uri,
                                              progress="none")) for method in METHODS}
    finally:
        torch.set_num_threads(threads)
    return uri, results


@pytest.fixture
def store(runs, monkeypatch):
    """The runs' store as the process-wide MLflow URI, as `mlflow.pytorch.load_model` users set it."""
    uri, results = runs
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)  # (Lightning's MLFlowLogger sets it too, to the store of the last run)
    yield uri, results
    mlflow.set_tracking_uri(None)


def digits_test_split(batch_size: int = 64):
    """The test split of the runs (seed 0) as the datamodule feeds it: normalised batches and labels."""
    datamodule = DigitsDataModule(seed=0, batch_size=batch_size)
    datamodule.setup()
    images, labels = datamodule.splits["test"]
    batches = [datamodule.on_after_batch_transfer((images[i:i + batch_size], labels[i:i + batch_size]), 0)
               for i in range(0, len(labels), batch_size)]
    return batches, labels


def accuracy(network, batches, labels) -> float:
    """Accuracy as torchmetrics computes it (float32 correct / total)."""
    with torch.no_grad():
        predictions = torch.cat([network(x).argmax(dim=1) for x, _ in batches])
    return float((predictions == labels).sum().float() / torch.tensor(float(len(labels))))


def only_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- the dataset input ------------------------------------------------------------------------------------
def test_a_run_records_its_dataset_as_an_mlflow_input(runs):
    uri, results = runs
    recorded = mlflow.MlflowClient(uri).get_run(results["bnn"].run_id)
    (data,) = recorded.inputs.dataset_inputs  # once, not per epoch
    expected = DigitsDataModule(seed=0).describe()
    assert data.dataset.name == "digits"
    assert data.dataset.digest == expected["digest"] == expected["sha1"][:16]
    assert data.dataset.source_type == "code" and "sklearn.datasets.load_digits" in data.dataset.source
    assert {tag.key: tag.value for tag in data.tags} == {"mlflow.data.context": "training"}
    profile = json.loads(data.dataset.profile)
    assert profile["splits"] == {"train": 1258, "val": 180, "test": 359} and profile["sha1"] == expected["sha1"]
    assert "uint8" in data.dataset.schema and "[-1, 1, 8, 8]" in data.dataset.schema
    assert DigitsDataModule(seed=1).describe()["digest"] != expected["digest"]  # another split, other data


def test_a_dataset_read_from_files_names_its_folder_as_a_local_source(tmp_path):
    from bnnbench.data.cifar10 import Cifar10DataModule
    from tests.datafiles import write_cifar10

    write_cifar10(tmp_path / "data", per_class_train=10, per_class_test=1)
    datamodule = Cifar10DataModule(data_dir=tmp_path / "data")
    datamodule.prepare_data()
    description = datamodule.describe()
    assert description["source"] == str((tmp_path / "data").resolve())
    entity = tracking.dataset_input(description).dataset
    assert (entity.name, entity.source_type) == ("cifar10", "local")
    assert json.loads(entity.source) == {"uri": str((tmp_path / "data").resolve())}


def test_fashion_mnist_names_the_folder_its_files_were_found_in(tmp_path, monkeypatch):
    from bnnbench.data.fashion_mnist import FashionMnistDataModule

    system = tmp_path / "usr-share-datasets-fashion-mnist"  # where Debian's package puts them
    system.mkdir()
    for pair in FashionMnistDataModule.files.values():
        for name in pair:
            (system / f"{name}.gz").write_bytes(b"")
    monkeypatch.setattr(FashionMnistDataModule, "system_dir", system)
    assert FashionMnistDataModule(data_dir=tmp_path / "data").data_source() == str(system.resolve())


# -- the model --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_the_logged_model_reproduces_test_acc_on_hard_binary_weights(store, method):
    uri, results = store
    result = results[method]
    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model").eval()
    batches, labels = digits_test_split()
    assert accuracy(model, batches, labels) == result.metrics["test/acc"]  # exactly

    layers = binary_layers(model)
    assert len(layers) == 2  # tiny: the two inner convs; the stem and the classifier stay full precision
    with torch.no_grad():
        for name, layer in layers:
            weight = layer.effective_weight()
            if method == "dra":  # α·sign(θ), one learned α per layer
                magnitude = layer.weight_quantizer.alpha.abs()
                assert torch.equal(weight.abs(), magnitude.expand_as(weight)), name
            else:
                assert torch.equal(weight.abs(), torch.ones_like(weight)), name
    assert all(layer.binary_input == (method == "bnn") for _, layer in layers)

    client = mlflow.MlflowClient(uri)
    (output,) = client.get_run(result.run_id).outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert (logged.name, logged.source_run_id, str(logged.status)) == ("model", result.run_id, "READY")
    info = mlflow.models.get_model_info(f"runs:/{result.run_id}/model")
    (images,), (logits,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (str(images.type), images.shape, str(logits.type), logits.shape) == ("float32", (-1, 1, 8, 8), "float32",
                                                                              (-1, 10))


def test_the_logged_model_loads_in_a_fresh_process(store):
    uri, results = store
    run_id = results["dra"].run_id
    code = ("import sys, torch, mlflow.pytorch\n"
            f"model = mlflow.pytorch.load_model('runs:/{run_id}/model').eval()\n"
            "x = torch.linspace(-2, 2, 4 * 64).view(4, 1, 8, 8)\n"
            "print(type(model.features[3]).__name__, repr(model(x).sum().item()))\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    kind, value = out.stdout.split()
    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model").eval()
    with torch.no_grad():
        assert float(value) == model(torch.linspace(-2, 2, 4 * 64).view(4, 1, 8, 8)).sum().item()
    assert kind == "BinaryConv2d"


def test_a_failure_while_logging_the_model_fails_the_run(tracking_uri, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("artifact store full")

    monkeypatch.setattr(tracking, "_log_pytorch_model", broken)
    with pytest.raises(RunFailed, match="artifact store full"):
        run(RunConfig(method="bnn", dataset="fake", epochs=1, tracking_uri=tracking_uri, progress="none"))
    client = mlflow.MlflowClient(tracking_uri)
    (recorded,) = client.search_runs([client.get_experiment_by_name("fake").experiment_id])
    assert recorded.info.status == "FAILED" and "artifact store full" in recorded.data.tags["failure_reason"]


def test_sigterm_while_logging_the_model_kills_the_run_and_the_resumed_run_logs_it_once(tracking_uri, monkeypatch):
    real = tracking._log_pytorch_model

    def terminate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends

    monkeypatch.setattr(tracking, "_log_pytorch_model", terminate)
    cfg = RunConfig(method="dra", dataset="fake", epochs=1, tracking_uri=tracking_uri, progress="none")
    with pytest.raises(Terminated):
        run(cfg)
    client = mlflow.MlflowClient(tracking_uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("fake").experiment_id])
    assert killed.info.status == "KILLED"

    monkeypatch.setattr(tracking, "_log_pytorch_model", real)
    result = run(cfg, resume=killed.info.run_id)
    recorded = client.get_run(result.run_id)
    assert recorded.info.status == "FINISHED"
    assert len(recorded.inputs.dataset_inputs) == 1  # logged when the run started, not again on resume
    (model,) = tracking._logged_models(tracking_uri, result.run_id, recorded.info.experiment_id)
    assert str(model.status) == "READY"  # the attempt the SIGTERM stopped is gone
    model = tracking.load_model(tracking_uri, result.run_id)  # what `bnnbench export` loads
    assert binary_layers(model) and not model.training


# -- bnnbench export ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_export_packs_one_bit_per_weight_to_the_promised_size_and_unpacks_exactly(store, method, tmp_path, capsys):
    uri, results = store
    result = results[method]
    out = tmp_path / "net.bnn"
    assert main(["export", result.run_id, "--out", str(out), "--no-onnx", "--tracking-uri", uri]) == 0
    assert str(out) in capsys.readouterr().out
    assert not out.with_suffix(".onnx").exists()

    promised = result.metrics["cost/size_kib"] * 1024  # (params_binary + 32 · params_real) / 8 bytes
    size = out.stat().st_size
    assert promised <= size <= promised + 400 and size / promised < 1.04, (size, promised)  # + the header

    model = mlflow.pytorch.load_model(f"runs:/{result.run_id}/model").eval()
    network = export.load_packed(out)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # folded
    batches, labels = digits_test_split()
    with torch.no_grad():
        for x, _ in batches:
            torch.testing.assert_close(network(x), model(x), rtol=1e-4, atol=1e-4)
    assert accuracy(network, batches, labels) == result.metrics["test/acc"]
    assert network.normalisation == {"mean": [0.3057], "std": [0.3764]}
    weights = [m.weight for m in network.modules() if isinstance(m, export.InferenceConv2d)]
    assert len(weights) == 2 and all(len(w.abs().unique()) == 1 for w in weights)  # ±1 or ±α


@pytest.mark.skipif(ONNX_MISSING is not None, reason=f"{ONNX_MISSING}")
def test_export_writes_an_onnx_file_that_computes_the_same_outputs(store, tmp_path):
    import onnx

    uri, results = store
    out = tmp_path / "net.bnn"
    assert main(["export", results["bnn"].run_id, "--out", str(out), "--tracking-uri", uri]) == 0
    onnx_file = tmp_path / "net.onnx"
    onnx.checker.check_model(onnx.load(onnx_file))
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed: the ONNX file was only checked with onnx.checker")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    batches, _ = digits_test_split()
    network = export.load_packed(out)
    with torch.no_grad():
        for x, _ in batches:  # batches of 64 and the last of 39: the batch dimension is dynamic
            (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            torch.testing.assert_close(torch.from_numpy(logits), network(x), rtol=1e-4, atol=1e-4)


def test_export_refuses_to_overwrite_without_force(store, tmp_path, capsys):
    uri, results = store
    out = tmp_path / "net.bnn"
    out.write_bytes(b"mine")
    assert main(["export", results["dra"].run_id, "--out", str(out), "--no-onnx", "--tracking-uri", uri]) == 2
    assert "exists; give --force" in only_line(capsys.readouterr().err)
    assert out.read_bytes() == b"mine"
    assert main(["export", results["dra"].run_id, "--out", str(out), "--no-onnx", "--force",
                 "--tracking-uri", uri]) == 0
    assert export.load_packed(out) is not None


def _run_without_model(uri: str, status: str) -> str:
    client = mlflow.MlflowClient(uri)
    created = client.create_run(client.get_experiment_by_name("digits").experiment_id)
    if status != "RUNNING":
        client.set_terminated(created.info.run_id, status)
    return created.info.run_id


@pytest.mark.parametrize("case, message", [
    ("unknown", "no run '0123456789abcdef0123456789abcdef'"),
    ("KILLED", "is KILLED: only a FINISHED run has a trained network to export"),
    ("RUNNING", "is RUNNING: only a FINISHED run"),
    ("FINISHED", "has no MLflow model 'model'"),
    ("no store", "no MLflow store at"),
    ("no folder", "does not exist"),
    ("onnx out", "the ONNX file goes beside FILE"),
])
def test_bad_export_input_is_one_line_exit_2(store, tmp_path, capsys, case, message):
    uri, results = store
    run_id = {"unknown": "0123456789abcdef0123456789abcdef", "KILLED": None, "RUNNING": None,
              "FINISHED": None}.get(case, results["bnn"].run_id)
    if run_id is None:
        run_id = _run_without_model(uri, case)
    where = {"no store": f"sqlite:///{tmp_path / 'none.db'}"}.get(case, uri)
    out = {"no folder": tmp_path / "missing" / "net.bnn", "onnx out": tmp_path / "net.onnx"}.get(case,
                                                                                               tmp_path / "net.bnn")
    assert main(["export", run_id, "--out", str(out), "--no-onnx", "--tracking-uri", where]) == 2
    assert message in only_line(capsys.readouterr().err)
    assert not out.exists() and not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("method", METHODS_ALL)
@pytest.mark.parametrize("mode", ["fair", "paper"])
def test_every_method_packs_and_unpacks_to_the_network_it_evaluates(method, mode):
    """No training: a freshly built network with random BatchNorm statistics, in eval mode."""
    resolved = resolve(RunConfig(method=method, dataset="fake", mode=mode, arch="tiny", image_size=8))
    model = build_method(resolved).model
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1, generator=generator)
                module.running_var.uniform_(0.5, 2, generator=generator)
    model.eval()
    network = export.inference_network(model)
    header = {"method": method, "dataset": "fake", "mode": mode, "arch": "tiny", "image_size": 8, "set": {}}
    data = export.pack(network, header)
    x = torch.randn(6, 3, 8, 8, generator=generator)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(network(x), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
        assert torch.equal(export.unpack(data)(x), network(x))
    costs = cost.count(model, (3, 8, 8))
    # Beyond the counted parameters: α_c per output channel where it is computed from θ (XNOR; ReCU's is a
    # learned parameter, counted already) and the folded scale and shift of a BatchNorm without affine
    # parameters (AdaSTE's paper mode).
    layers, trained = dict(network.named_modules()), dict(model.named_modules())
    extra = 4 * sum(layers[name].weight.shape[0] for name, _, kind in export.read_header(data)[0]["binary"]
                    if kind == "c" and not list(trained[name].weight_quantizer.parameters()))
    extra += 8 * sum(m.num_features for m in model.modules()
                     if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.affine)
    assert 0 <= len(data) - costs.size_kib * 1024 - extra <= 400


def test_export_without_the_onnx_packages_says_what_to_install(store, tmp_path, capsys, monkeypatch):
    uri, results = store
    missing = "the ONNX file needs onnxscript: pip install 'bnnbench[export]'"
    monkeypatch.setattr(export, "onnx_missing", lambda: missing)
    out = tmp_path / "net.bnn"
    assert main(["export", results["bnn"].run_id, "--out", str(out), "--tracking-uri", uri]) == 2
    assert "pip install 'bnnbench[export]', or give --no-onnx" in only_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_damaged_packed_file_is_one_line(tmp_path):
    path = tmp_path / "net.bnn"
    path.write_bytes(b"not a network")
    with pytest.raises(Exception, match="is not a packed bnnbench network"):
        export.load_packed(path)
