"""Read DICOM with pydicom silent: no value validation, no warnings, no log records.

pydicom warns and logs when a value breaks its VR, and for the pattern-checked VRs (UI, CS, AS,
DS, IS, ...) it quotes the value ("Invalid value for VR UI: '1.2.826.0.1.'"); it also warns and logs
about the file's structure ("Expected explicit VR, but found implicit VR"). On a hospital's files that
is noise on stderr at best and a quoted header value in the flow's console log at worst. Our own
checks (osteo/etl/values.py) decide what is bad input, so every pydicom read in osteo/etl (the header
reader, the export's parser, the later value conversions and the pixel decoding) runs inside
`quiet_reads()`. Worker processes are covered too: the block is entered inside the function a
worker runs (dicom_headers.read_one, imaging.export_roi), not around the pool.

The three settings are process-wide, so the block is counted: the first one in sets them, the last
one out restores them; blocks nest and threads share them.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_depth = 0
_saved: int | None = None

# the reader's packages and its decoder plugins, and our reading code (pydicom warns with a stacklevel
# that names its caller); numpy's warnings on hostile values in osteo.etl.imaging are the same noise
_PACKAGES = ("pydicom", "pylibjpeg", "openjpeg", "libjpeg", "rle")
_WARNINGS = ("ignore", None, Warning, re.compile(r"(?:pydicom|pylibjpeg|openjpeg|libjpeg|rle|osteo\.etl)(?:\..*)?\Z"),
             0)


class _DropWhileQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _depth == 0


_DROP = _DropWhileQuiet()
_seen_loggers = -1


def _filter_loggers() -> None:
    """The drop filter on every logger of those packages (a logger's filter does not see its children's
    records, and plugins create theirs when first imported, so new ones are looked for on each entry)."""
    global _seen_loggers
    loggers = logging.root.manager.loggerDict
    if len(loggers) == _seen_loggers:
        return
    for name in [*_PACKAGES, *list(loggers)]:
        if name.split(".", 1)[0] in _PACKAGES:
            logger = logging.getLogger(name)
            if _DROP not in logger.filters:
                logger.addFilter(_DROP)
    _seen_loggers = len(loggers)


def _filters() -> list[Any]:
    """warnings.filters, which is a list (typeshed types it Sequence; this module edits it as filterwarnings does)."""
    filters = warnings.filters
    if not isinstance(filters, list):
        raise TypeError(f"warnings.filters is a {type(filters).__name__}, not a list")
    return filters


@contextmanager
def quiet_reads() -> Iterator[None]:
    """pydicom's reading_validation_mode IGNORE, its warnings ignored and its log records dropped
    for the block (warnings and records of other packages and threads are untouched)."""
    global _depth, _saved
    from pydicom import config

    with _lock:
        if _depth == 0:
            _saved = config.settings.reading_validation_mode
            config.settings.reading_validation_mode = config.IGNORE
            _filter_loggers()
            _filters().insert(0, _WARNINGS)
            warnings._filters_mutated()  # type: ignore[attr-defined]  # what filterwarnings() calls
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _saved is not None:
                    config.settings.reading_validation_mode = _saved
                # a catch_warnings() of another thread may have swapped the list in the meantime
                while _WARNINGS in warnings.filters:
                    _filters().remove(_WARNINGS)
                warnings._filters_mutated()  # type: ignore[attr-defined]


# the name the service (osteo_service/dicom_checks.py) and older callers use
unvalidated_reads = quiet_reads
