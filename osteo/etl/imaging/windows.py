"""Only what a screening reads of a frame, decoded (issue 27).

The screening's boxes are known before the file is read, and the quality check and the neck crop read only the
pixels of the crop window around each box (the box lies inside it). When the file's own VOI LUT or window sets the
grey levels (the look-up tables then depend on the header only), only those windows are decoded: a native
little-endian frame is cut from the file's bytes (no whole-frame copy and bit shift), a JPEG 2000 frame with the
reversible wavelet is decoded a window at a time by OpenJPEG (osteo.etl.imaging.openjp2) for a fraction of the
whole frame's work. The codes are the whole frame's decode at those positions (pydicom's: the same container, the
bits above BitsStored shifted out) in a frame of zeros. A frame whose grey levels need every pixel (the
percentiles) is decoded whole the same way: once, without pydicom's decoder, and for JPEG 2000 by OpenJPEG, which,
unlike pylibjpeg-openjpeg, lets the classifier's thread run meanwhile. Anything else (RLE, big endian, deflate,
lossy JPEG 2000, several frames) goes to prepare_display, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.decoders.base import DecodeRunner, get_decoder
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless

from osteo.etl.imaging import openjp2
from osteo.etl.imaging.display import DisplayMap, display_map
from osteo.etl.imaging.export import _neck_window
from osteo.etl.imaging.read import ExportError, _check_pixel_module, _frames
from osteo.etl.quiet import quiet_reads

Window = tuple[slice, slice]
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_J2K = (JPEG2000Lossless, JPEG2000)


@quiet_reads()
def prepare_windows(ds: Dataset, boxes: list[Any], margin: float) -> DisplayMap | None:
    """prepare_display's DisplayMap for less: of the crop windows of `boxes` only (its codes zero elsewhere: only
    those windows may be read from it), or, when the grey levels need every pixel (no VOI of the file's own) or
    there is no box, of the whole frame. None where the frame is not cut here (prepare_display decodes it): not
    one frame of native little-endian or reversible JPEG 2000 pixels, no libopenjp2, a box that does not crop,
    pixels that pydicom or OpenJPEG refuses (prepare_display then says what is wrong)."""
    _check_pixel_module(ds)  # what prepare_display checks first, and raises alike
    cut = _cutter(ds)
    if cut is None:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        windows = [_neck_window(box, (rows, cols), margin) for box in boxes]
    except ExportError:  # a box outside the image: the caller's whole-frame path reports it where it did
        return None
    container = np.uint8 if int(ds.BitsAllocated) == 8 else np.uint16
    dm = display_map(ds, np.zeros((rows, cols), dtype=container), whole_frame=False) if windows else None
    if dm is None:  # the percentiles of the whole frame decide the grey levels, or there is nothing to crop
        codes = cut((slice(0, rows), slice(0, cols)))
        return None if codes is None else display_map(ds, codes)
    for window in windows:
        codes = cut(window)
        if codes is None:
            return None
        dm.codes[window] = codes
    dm.windows = tuple(windows)
    return dm


def _cutter(ds: Dataset) -> Callable[[Window], np.ndarray | None] | None:
    """What decodes one window of the first frame (or the whole of it) as prepare_display's codes; None for
    pixels that cannot be cut so. Only files that pydicom's decoder accepts (its own validation) are cut."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or (ts not in _NATIVE and (ts not in _J2K or not openjp2.available())):
        return None
    try:
        if not get_decoder(ts).is_available or _frames(ds) != 1 or "ExtendedOffsetTable" in ds:
            return None
        runner = DecodeRunner(ts)
        runner.set_source(ds)
        runner.validate()
    except Exception:  # noqa: BLE001 - whatever pydicom refuses, its whole-frame decode reports
        return None
    rows, cols, ba = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    signed = int(ds.PixelRepresentation) == 1
    if ts in _NATIVE:
        return _native_cutter(ds.PixelData, rows, cols, ba, int(ds.BitsStored), signed)
    try:
        frame = get_frame(ds.PixelData, 0, number_of_frames=1)
    except Exception:  # noqa: BLE001 - a damaged encapsulation: the whole-frame decode reports it
        return None
    if not openjp2.reversible(frame):
        return None
    return lambda window: _j2k_window(frame, window, rows, cols, ba, signed)


def _native_cutter(pixels: bytes, rows: int, cols: int, bits_allocated: int, bits_stored: int,
                   signed: bool) -> Callable[[Window], np.ndarray] | None:
    """pydicom's native decode of frame 0 (little endian), a window at a time: the container's values with the
    bits above BitsStored shifted out (sign-extended when signed), viewed unsigned."""
    if len(pixels) < rows * cols * (bits_allocated // 8):  # _decode_first_frame's check: it reports it
        return None
    dtype = {(8, False): "<u1", (8, True): "<i1", (16, False): "<u2", (16, True): "<i2"}[(bits_allocated, signed)]
    frame = np.frombuffer(pixels, dtype=dtype, count=rows * cols).reshape(rows, cols)
    shift = bits_allocated - bits_stored

    def cut(window: Window) -> np.ndarray:
        values = frame[window].copy()
        if shift:
            np.left_shift(values, shift, out=values)
            np.right_shift(values, shift, out=values)
        return values.view(np.uint8 if bits_allocated == 8 else np.uint16)

    return cut


def _j2k_window(frame: bytes, window: Window, rows: int, cols: int, bits_allocated: int,
                signed: bool) -> np.ndarray | None:
    """The window's codes as prepare_display has them (pylibjpeg-openjpeg's container for the J2K precision, put
    in the BitsAllocated container by pydicom, viewed unsigned); None when pydicom would correct the values
    (precision above BitsAllocated, signedness unlike PixelRepresentation) or OpenJPEG fails."""
    ys, xs = window
    try:
        samples, precision, j2k_signed, width, height = openjp2.decode_window(frame, xs.start, ys.start, xs.stop,
                                                                              ys.stop)
    except openjp2.OpenJpegError:
        return None
    if (width, height) != (cols, rows) or precision > bits_allocated or j2k_signed != signed:
        return None
    if bits_allocated == 8:
        return samples.astype(np.int8).view(np.uint8) if signed else samples.astype(np.uint8)
    return samples.astype(np.int16).view(np.uint16) if signed else samples.astype(np.uint16)
