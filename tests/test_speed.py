"""`bnnbench bench-step`: every method's training step timed side by side (figures go in the README,
never into assertions: this only checks the benchmark runs and reports what it says it reports)."""

from __future__ import annotations

import json

import pytest

from bnnbench.cli import main


def test_bench_step_reports_each_method_against_fp(capsys):
    assert main(["bench-step", "--arch", "tiny", "--dataset", "fake", "--methods", "fp,ste,dra", "--steps", "2",
                 "--batch-size", "8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["fp", "ste", "dra"]
    assert rows[0]["ratio_to_fp"] == rows[0]["min_ratio_to_fp"] == 1.0
    for row in rows:
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["min_ratio_to_fp"] == pytest.approx(row["min_ms"] / rows[0]["min_ms"], abs=2e-3)
        assert row["memory_mib"] > 0  # bytes autograd saved for backward


def test_bench_step_rejects_unknown_methods_and_cuda_without_a_gpu(capsys):
    assert main(["bench-step", "--arch", "tiny", "--methods", "fp,stee"]) == 2
    assert "unknown method: 'stee'" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["bench-step", "--arch", "tiny", "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


# The hooks of a training step and epoch that a method may override (Lightning's and the base's own).
TRAINING_HOOKS = ("on_train_epoch_start", "on_train_batch_start", "training_step", "on_before_backward",
                  "on_after_backward", "on_before_zero_grad", "optimizer_zero_grad", "on_before_optimizer_step",
                  "optimizer_step", "configure_gradient_clipping", "lr_scheduler_step", "on_train_batch_end",
                  "on_train_epoch_end", "after_optimizer_step", "backward")


def test_bench_step_runs_every_training_hook_each_method_overrides(monkeypatch):
    """bench-step steps each method through Lightning's own loop, so what a run does per step — BNEW's
    proximal step in `on_before_optimizer_step`, mirror descent's β in `on_train_batch_start`, the
    clipping after the optimizer — is in its timings."""
    import lightning.pytorch as pl

    from bnnbench.registry import METHODS
    from bnnbench.speed import bench_step

    calls: dict[tuple[str, str], int] = {}
    originals = {(name, hook): getattr(METHODS.get(name), hook) for name in METHODS.names() for hook in TRAINING_HOOKS
                 if getattr(METHODS.get(name), hook, None) not in (None, getattr(pl.LightningModule, hook, None))}
    expected = set(originals)  # the hooks each method class has other than Lightning's defaults
    for (name, hook), original in originals.items():
        def counted(self, *args, _key=(name, hook), _original=original, **kwargs):
            calls[_key] = calls.get(_key, 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(METHODS.get(name), hook, counted)
    assert ("bnew", "on_before_optimizer_step") in expected and ("bmd", "on_train_batch_start") in expected
    bench_step(METHODS.names(), dataset="fake", arch="tiny", batch_size=8, steps=1, warmup=0)
    assert sorted(expected - set(calls)) == []
