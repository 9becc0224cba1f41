"""DICOM pixels -> display values, femoral-neck ROI export and image-quality checks.

Plain functions (no Prefect, MLflow or database): the export task calls them from a
process pool with an ExportJob and gets an ExportResult back (frozen dataclasses: they
pickle). One module per job:

* ``read``     bytes -> dataset -> first-frame pixel codes; ExportError (bad input);
* ``display``  grey-level mapping (modality LUT / rescale, MONOCHROME1, VOI LUT, window, percentiles);
* ``quality``  metal and blur measures of a crop;
* ``export``   export_roi, render_png (ExportJob, ExportResult, RenderResult), the metadata-free PNG encoding,
               canonical_digest, ALGORITHM_VERSION;
* ``windows``  prepare_windows: only the crop windows of a frame decoded (screening), equal there to prepare_display;
* ``openjp2``  a window of a JPEG 2000 codestream decoded by libopenjp2 (ctypes).

Hot path, so:

* the file is read once (bytes -> hash -> pydicom), only the first frame is decoded;
* every grey-level mapping (modality LUT / rescale, MONOCHROME1 inversion, VOI LUT or
  window, robust percentiles) is evaluated once on the 2**BitsAllocated possible stored
  codes (<= 65536 values) and then applied to pixels by a single table look-up, so no
  float64 image is ever built and an ROI export only maps the pixels of its crop;
* percentiles come from a histogram of the codes (np.bincount), not a sort of the image.

Conventions
-----------
``unit``    modality (rescale / Modality LUT) values in display polarity, scaled to [0, 1]
            over the whole stored range [smin, smax] (signed PixelRepresentation handled)
            mapped through the modality transform; MONOCHROME1 is inverted. float32.
``display`` the VOI LUT Sequence (first item) when present, else the first Window
            Center/Width (VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID), else the
            0.5/99.5 percentiles of the frame's modality values; [0, 1] float32, bright = dense.
Boxes are (xmin, ymin, xmax, ymax) in 0-based pixel coordinates, max exclusive (numpy slices).
"""

from __future__ import annotations

from osteo.etl.imaging.display import HISTOGRAM_SAMPLES, PERCENTILES, DisplayMap, prepare_display, to_display
from osteo.etl.imaging.export import (
    ALGORITHM_VERSION,
    PNG_COMPRESS_LEVEL,
    RENDER_COMPRESS_LEVEL,
    ExportJob,
    ExportResult,
    RenderResult,
    box_quality,
    canonical_digest,
    export_roi,
    neck_crop,
    render_png,
)
from osteo.etl.imaging.quality import METAL_LEVEL, exclusion_of, measure_quality
from osteo.etl.imaging.read import ExportError, load_dicom, read_dicom
from osteo_common.files import atomic_write_bytes, sha256_file

__all__ = [
    "ALGORITHM_VERSION",
    "HISTOGRAM_SAMPLES",
    "METAL_LEVEL",
    "PERCENTILES",
    "PNG_COMPRESS_LEVEL",
    "RENDER_COMPRESS_LEVEL",
    "DisplayMap",
    "ExportError",
    "ExportJob",
    "ExportResult",
    "RenderResult",
    "atomic_write_bytes",
    "box_quality",
    "canonical_digest",
    "exclusion_of",
    "export_roi",
    "neck_crop",
    "load_dicom",
    "measure_quality",
    "prepare_display",
    "read_dicom",
    "render_png",
    "sha256_file",
    "to_display",
]
