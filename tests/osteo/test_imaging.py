"""osteo.etl.imaging: the package's public names, and its error pickles (worker processes send it back)."""

from __future__ import annotations

import pickle

from osteo.etl import imaging as im

# --------------------------------------------------------------------------- the package


def test_public_names_are_reexported():
    """Callers import from the package (refresh, pyfunc, bench, the CLI): every public name resolves there."""
    from osteo.etl.errors import InputError
    from osteo.etl.imaging import display, export, quality, read

    assert all(getattr(im, name, None) is not None for name in im.__all__)
    assert im.export_roi is export.export_roi and im.render_png is export.render_png
    assert im.canonical_digest is export.canonical_digest and im.ALGORITHM_VERSION == export.ALGORITHM_VERSION
    assert im.read_dicom is read.read_dicom and im.load_dicom is read.load_dicom
    assert im.to_display is display.to_display and im.prepare_display is display.prepare_display
    assert im.measure_quality is quality.measure_quality
    assert im.ExportError is read.ExportError and issubclass(im.ExportError, InputError)


def test_export_error_pickles():
    err = im.ExportError("missing_tag:StudyDate", "no StudyDate")
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.detail, str(back)) == (err.reason, err.detail, str(err))
