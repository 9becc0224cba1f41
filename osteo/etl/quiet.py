"""Parse DICOM without pydicom's value validation, which quotes some of the values it rejects.

pydicom warns and logs when a value breaks its VR, and for the pattern-checked VRs (UI, CS, AS,
DS, IS, ...) it quotes the value ("Invalid value for VR UI: '1.2.826.0.1.'"): noise on stderr and,
under Prefect, in the flow's console log. Our own checks decide what is bad input, so the header
reader and the export's parser run with validation off. Values converted later (the display
attributes the export reads after parsing) are validated as usual.
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
