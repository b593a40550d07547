"""bnnbench: benchmark training methods for binary neural networks.

Importing the package is cheap on purpose (no torch, lightning or mlflow): the CLI's `--help` and
`list` must answer instantly. Heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
