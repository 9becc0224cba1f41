"""A window of a JPEG 2000 codestream, decoded by libopenjp2 through ctypes (screening, issue 27).

pylibjpeg-openjpeg decodes whole frames only, and holds the GIL while it does. OpenJPEG itself decodes a
window of interest (`opj_set_decode_area`, since 2.3): it reads every packet header of the codestream but
entropy-decodes and inverse-transforms only the code-blocks that the window needs. With the reversible 5/3
wavelet every step is integer arithmetic that the standard fixes (ITU-T T.800 Annex F), so the window holds
exactly the samples of a full decode at those positions, whichever OpenJPEG build decodes it; a codestream
that uses the irreversible 9/7 wavelet anywhere is not decoded here (`reversible` says no). ctypes releases
the GIL for the decode, so the classifier's thread runs meanwhile.

The library: the system's libopenjp2 (Debian's libopenjp2-7), else the copy that Pillow's wheel ships; without
either, `available()` is False and the caller decodes the whole frame as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path
from typing import Any

import numpy as np

_J2K = 0  # OPJ_CODEC_J2K: a raw codestream, as DICOM encapsulates it
_SIZ, _SOT, _SOD, _EOC, _COD, _COC = 0xFF51, 0xFF90, 0xFF93, 0xFFD9, 0xFF52, 0xFF53
_PARAMETERS_BYTES = 1 << 15  # opj_dparameters_t is about 8.3 kB in 2.x: room to spare


class OpenJpegError(Exception):
    """The window could not be decoded (the caller decodes the whole frame, which says why)."""


class _Comp(ctypes.Structure):  # opj_image_comp_t (2.x)
    _fields_ = [(n, ctypes.c_uint32) for n in ("dx", "dy", "w", "h", "x0", "y0", "prec", "bpp", "sgnd",
                                               "resno_decoded", "factor")] + [
        ("data", ctypes.POINTER(ctypes.c_int32)), ("alpha", ctypes.c_uint16)]


class _Image(ctypes.Structure):  # opj_image_t (2.x)
    _fields_ = [(n, ctypes.c_uint32) for n in ("x0", "y0", "x1", "y1", "numcomps")] + [
        ("color_space", ctypes.c_int), ("comps", ctypes.POINTER(_Comp)), ("icc_profile_buf", ctypes.c_void_p),
        ("icc_profile_len", ctypes.c_uint32)]


_READ = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_SKIP = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_SEEK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)
_P, _IMG = ctypes.c_void_p, ctypes.POINTER(_Image)
_SIGNATURES = {
    "opj_version": ([], ctypes.c_char_p),
    "opj_create_decompress": ([ctypes.c_int], _P),
    "opj_set_default_decoder_parameters": ([_P], None),
    "opj_setup_decoder": ([_P, _P], ctypes.c_int),
    "opj_stream_create": ([ctypes.c_size_t, ctypes.c_int], _P),
    "opj_stream_set_read_function": ([_P, _P], None),
    "opj_stream_set_skip_function": ([_P, _P], None),
    "opj_stream_set_seek_function": ([_P, _P], None),
    "opj_stream_set_user_data_length": ([_P, ctypes.c_uint64], None),
    "opj_read_header": ([_P, _P, ctypes.POINTER(_IMG)], ctypes.c_int),
    "opj_set_decode_area": ([_P, _IMG, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32], ctypes.c_int),
    "opj_decode": ([_P, _P, _IMG], ctypes.c_int),
    "opj_end_decompress": ([_P, _P], ctypes.c_int),
    "opj_image_destroy": ([_IMG], None),
    "opj_stream_destroy": ([_P], None),
    "opj_destroy_codec": ([_P], None),
}


def _candidates() -> list[str]:
    found = ctypes.util.find_library("openjp2")
    try:
        import PIL

        bundled = sorted(str(p) for p in (Path(PIL.__file__).parent.parent / "pillow.libs").glob("libopenjp2*.so*"))
    except ImportError:  # pragma: no cover - Pillow is a dependency
        bundled = []
    return ([found] if found else []) + bundled


@functools.cache
def _library() -> ctypes.CDLL | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            for name, (args, result) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = args, result
            if not lib.opj_version().decode("ascii", "replace").startswith("2."):
                continue
            return lib
        except (OSError, AttributeError):
            continue
    return None


def available() -> bool:
    return _library() is not None


def reversible(codestream: bytes) -> bool:
    """True when every COD and COC marker of the codestream (main header and tile-part headers) names the
    reversible 5/3 wavelet; False for the 9/7, a codestream it cannot walk, or one without a COD."""
    if codestream[:2] != b"\xff\x4f":
        return False
    pos, n, seen = 2, len(codestream), False
    while pos + 4 <= n:
        marker = int.from_bytes(codestream[pos:pos + 2], "big")
        length = int.from_bytes(codestream[pos + 2:pos + 4], "big")
        if marker == _SOT:  # a tile-part: walk its header, then jump over its data (Psot)
            psot = int.from_bytes(codestream[pos + 6:pos + 10], "big")
            end = pos + psot if psot else n
            pos += 2 + length
            while pos + 4 <= n:
                marker = int.from_bytes(codestream[pos:pos + 2], "big")
                if marker == _SOD:
                    break
                length = int.from_bytes(codestream[pos + 2:pos + 4], "big")
                if marker in (_COD, _COC) and not _names_53(codestream, pos, marker, length):
                    return False
                pos += 2 + length
            if end <= pos:
                return False
            pos = end
            continue
        if marker == _EOC:
            break
        if marker == _SIZ and int.from_bytes(codestream[pos + 38:pos + 40], "big") > 256:
            return False  # a COC's component index would take 2 bytes: not walked here
        if marker in (_COD, _COC):
            if not _names_53(codestream, pos, marker, length):
                return False
            seen = seen or marker == _COD
        if length < 2:
            return False
        pos += 2 + length
    return seen


def _names_53(codestream: bytes, pos: int, marker: int, length: int) -> bool:
    """The wavelet byte of a COD (after Scod, SGcod's 4 bytes and 4 of SPcod) or of a COC (after its
    component index of 1 byte, for fewer than 257 components, Scoc and 4 of SPcoc) is 1: 5/3 reversible."""
    at = pos + 4 + (1 + 4 + 4 if marker == _COD else 1 + 1 + 4)
    return at < pos + 2 + length and codestream[at] == 1


def decode_window(codestream: bytes, x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, int, bool, int, int]:
    """(samples int32 (y1-y0) x (x1-x0), precision, signed, image width, image height) of the first component in
    the window [x0, x1) x [y0, y1); OpenJpegError when OpenJPEG refuses the codestream or the window."""
    lib = _library()
    if lib is None:
        raise OpenJpegError("no libopenjp2")
    callbacks = _memory_callbacks(codestream)  # kept alive until the stream is destroyed
    stream = lib.opj_stream_create(1 << 20, 1)
    codec = lib.opj_create_decompress(_J2K)
    image = _IMG()
    try:
        if not stream or not codec:
            raise OpenJpegError("OpenJPEG could not start")
        for setter, cb in zip(("read", "skip", "seek"), callbacks):
            getattr(lib, f"opj_stream_set_{setter}_function")(stream, ctypes.cast(cb, ctypes.c_void_p))
        lib.opj_stream_set_user_data_length(stream, len(codestream))
        parameters = ctypes.create_string_buffer(_PARAMETERS_BYTES)
        lib.opj_set_default_decoder_parameters(parameters)
        if not lib.opj_setup_decoder(codec, parameters) or not lib.opj_read_header(stream, codec, ctypes.byref(image)):
            raise OpenJpegError("unreadable codestream header")
        head = image.contents
        width, height = head.x1 - head.x0, head.y1 - head.y0
        if head.numcomps < 1 or head.x0 or head.y0:  # an image offset on the reference grid: not ours
            raise OpenJpegError("unexpected image geometry")
        if not lib.opj_set_decode_area(codec, image, x0, y0, x1, y1):
            raise OpenJpegError("window refused")
        if not lib.opj_decode(codec, stream, image) or not lib.opj_end_decompress(codec, stream):
            raise OpenJpegError("decode failed")
        comp = image.contents.comps[0]
        if (comp.dx, comp.dy, comp.x0, comp.y0, comp.w, comp.h) != (1, 1, x0, y0, x1 - x0, y1 - y0) or not comp.data:
            raise OpenJpegError("unexpected component geometry")
        samples = np.ctypeslib.as_array(comp.data, shape=(comp.h, comp.w)).copy()
        return samples, int(comp.prec), bool(comp.sgnd), int(width), int(height)
    finally:
        if image:
            lib.opj_image_destroy(image)
        if codec:
            lib.opj_destroy_codec(codec)
        if stream:
            lib.opj_stream_destroy(stream)


def _memory_callbacks(codestream: bytes) -> tuple[Any, Any, Any]:
    """OpenJPEG's read, skip and seek over the codestream in memory (one read usually takes it all)."""
    src, pos = np.frombuffer(codestream, dtype=np.uint8), [0]
    n = src.size

    def read(dst, size, _user):
        k = min(size, n - pos[0])
        if k <= 0:
            return ctypes.c_size_t(-1).value
        ctypes.memmove(dst, src.ctypes.data + pos[0], k)  # src: the closure keeps it
        pos[0] += k
        return k

    def skip(offset, _user):
        k = max(-pos[0], min(offset, n - pos[0]))
        pos[0] += k
        return k

    def seek(offset, _user):
        if not 0 <= offset <= n:
            return 0
        pos[0] = offset
        return 1

    return _READ(read), _SKIP(skip), _SEEK(seek)
