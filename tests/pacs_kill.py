"""A night of tests/pacs_night.py in a process of its own that kills itself with SIGKILL at a chosen place (not a
test module). Run by tests/flows/test_pacs_night.py as

    python -m tests.pacs_kill pull|push SPEC_JSON

SPEC_JSON: {"home", "cohort", "model_dir", "threshold", "env" (the OSTEO_PACS_* settings), "at"}. `pull`: the
process dies while the PACS's `at`-th in-scope file is half written to its temporary name (the files before it
whole, none of them recorded yet); `push`: it dies right after the PACS took the `at`-th push and before osteo
recorded it. No exception handler, `finally` or atexit runs, as under kill -9 or a power cut: what the next
night finds is exactly what a killed process leaves."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_half_way_through_write(at: int) -> None:
    """Files through the pull's writer; the at-th stops with half its bytes in its temporary file."""
    import tempfile

    import osteo.pacs.inbox as inbox

    real, calls = inbox.atomic_write_bytes, []

    def write(path, data):
        calls.append(path)
        if len(calls) < at:
            return real(path, data)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.", suffix=".tmp")
        os.write(fd, bytes(data[: len(data) // 2]))
        os.fsync(fd)
        die()

    inbox.atomic_write_bytes = write


def kill_after_push(at: int) -> None:
    import osteo.screening.push as push

    real, sent = push.send_objects, []

    def send_then_die(target, datasets):
        answers = real(target, datasets)
        sent.append(len(datasets))
        if len(sent) == at:
            die()
        return answers

    push.send_objects = send_then_die


def main(step: str, spec: dict) -> None:
    from osteo_model.onnx import build_classifier
    from tests.pacs_cohort import PacsCohort
    from tests.pacs_night import run_night
    from tests.screening_support import screening_model

    folder = Path(spec["model_dir"])
    classifier, _ = build_classifier(folder / "fold-0.pth", folder / "model.onnx", spec["threshold"], threads=1)
    model = screening_model(classifier, threshold=spec["threshold"])
    {"pull": kill_half_way_through_write, "push": kill_after_push}[step](int(spec["at"]))
    orthanc = SimpleNamespace(env=lambda _transport: spec["env"])  # all run_night asks of the PACS's handle
    run_night(Path(spec["home"]), PacsCohort(Path(spec["cohort"]), []), model, orthanc)
    sys.exit(3)  # not killed: the test says so


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
