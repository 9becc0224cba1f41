"""Read DICOM without pydicom's value validation, which quotes the values it rejects.

pydicom warns and logs "Invalid value for VR DA: '1945-03-12'" when a header value breaks its VR:
a malformed birth date or patient ID would reach stderr and, under Prefect, the console log of
the flow. Our own checks decide what is bad input, so the reads run with validation off.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_saved: int | None = None


@contextmanager
def unvalidated_reads() -> Iterator[None]:
    """pydicom reading_validation_mode = IGNORE for the block; nestable and shared by threads
    (the setting is process-wide, so it is restored when the last block ends)."""
    global _depth, _saved
    from pydicom import config

    with _lock:
        if _depth == 0:
            _saved = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.IGNORE
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                config.settings.reading_validation_mode = _saved
