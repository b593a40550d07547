"""`bnnbench bench-step`: every method's training step timed side by side (figures go in the README,
never into assertions: this only checks the benchmark runs and reports what it says it reports)."""

from __future__ import annotations

import json

from bnnbench.cli import main


def test_bench_step_reports_each_method_against_fp(capsys):
    assert main(["bench-step", "--arch", "tiny", "--dataset", "fake", "--methods", "fp,ste,dra", "--steps", "2",
                 "--batch-size", "8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["fp", "ste", "dra"]
    assert rows[0]["ratio_to_fp"] == 1.0
    for row in rows:
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["memory_mib"] > 0  # bytes autograd saved for backward


def test_bench_step_rejects_unknown_methods_and_cuda_without_a_gpu(capsys):
    assert main(["bench-step", "--arch", "tiny", "--methods", "fp,stee"]) == 2
    assert "unknown method: 'stee'" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["bench-step", "--arch", "tiny", "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
