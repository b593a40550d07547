"""The one exception type for bad user input.

The CLI turns a `BadInput` into one line on stderr and exit code 2 (no traceback); library callers
get an ordinary `ValueError` subclass whose message names the bad value and the valid choices.
"""


class BadInput(ValueError):
    """A user-supplied value is invalid; the message says which and what would be valid."""
