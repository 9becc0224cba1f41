"""Property-based fuzzing of the ingest and export entry points with hostile files (hypothesis).

Short run (part of `make test`; derandomized, the same examples every time, well under a minute):

    .venv/bin/python -m pytest tests/fuzz -q

Long run (fresh random examples, 2000 per test; OSTEO_FUZZ_EXAMPLES=N for another number):

    OSTEO_FUZZ=long .venv/bin/python -m pytest tests/fuzz -q

Both print the counts at the end: inputs tried, processed, quarantined, out of scope, crashes and
DEXA rows lost, per kind of input. A crash is any exception that is not an InputError (osteo/etl
turns bad input into one): the test fails with the shrunk input that raised it.
test_fuzz_dicom_fast.py adds one line: inputs given to both DICOM header readers (ours and pydicom's),
how many ours read itself, and disagreements (the goal: 0).
"""

from __future__ import annotations

from tests.fuzz.support import PROFILE, summary_lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = summary_lines()
    if not lines:
        return
    terminalreporter.section(f"osteo fuzz counts (profile {PROFILE})")
    for line in lines:
        terminalreporter.write_line(line)
