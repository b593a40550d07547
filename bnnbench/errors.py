"""The exceptions a user sees: bad input, a failed run, a terminated run.

The CLI turns a `BadInput` into one line on stderr and exit code 2 (no traceback); library callers
get an ordinary `ValueError` subclass whose message names the bad value and the valid choices.
"""


class BadInput(ValueError):
    """A user-supplied value is invalid; the message says which and what would be valid."""


class RunFailed(RuntimeError):
    """Training or testing raised; the MLflow run `run_id` is marked FAILED with `reason`."""

    def __init__(self, run_id: str, reason: str):
        super().__init__(f"run {run_id} FAILED: {reason}")
        self.run_id, self.reason = run_id, reason


class Terminated(BaseException):
    """The process received SIGTERM; the run it was recording is marked KILLED and can be resumed.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it."""
