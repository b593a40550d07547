"""Learning, not just running: a method with a broken gradient would fail these bounds.

Measured on 2 CPU cores (seed 0, 10 epochs on digits): dra test/acc 0.983. With the quantizer's
backward replaced by zeros it stays at chance (0.109); with the sign of the gradient flipped, 0.0.
"""

from __future__ import annotations

from bnnbench.config import RunConfig
from bnnbench.runner import run


def test_dra_learns_digits_far_above_chance(tracking_uri):
    result = run(RunConfig(method="dra", dataset="digits", epochs=10, tracking_uri=tracking_uri, progress="none"))
    assert result.metrics["test/acc"] >= 0.90  # chance is 0.10
