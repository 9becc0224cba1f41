"""A user's mistake (a missing folder, nothing exported yet, a bad option) is not a bug.

It carries a short `reason` code and a `detail` that says what to do; the command line prints it
as one line (or one JSON object) and exits with 2. Bad *input data* is quarantined instead
(osteo.etl.errors.InputError); anything else is our bug and fails loudly.
"""

from __future__ import annotations


class UserError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
