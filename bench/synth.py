"""The simulator's cost: synthetic films per second (one process), against writing the same films'
pixels as DICOM (the part of `osteo synth` that is not simulation)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import row


def run(scratch: Path, n: int = 12) -> list[dict[str, Any]]:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    from osteo.synth.film import render_film

    films, t0 = [], time.perf_counter()
    for k in range(n):
        rng = np.random.default_rng([7, k])
        view = "pelvis" if k % 3 == 0 else "hip"
        rows, cols, spacing = (640, 640, 0.67) if view == "pelvis" else (640, 520, 0.48)
        films.append(render_film(rng, view=view, laterality="B" if view == "pelvis" else "LR"[k % 2], rows=rows,
                                 cols=cols, spacing=spacing, bmd=0.5 + 0.04 * k).frac)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k, frac in enumerate(films):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage  # CR image
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = *frac.shape, 16, 12, 11
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
        ds.PixelData = np.rint(frac * 4095).astype("<u2").tobytes()
        ds.save_as(scratch / f"film{k}.dcm", enforce_file_format=True)
    write_s = time.perf_counter() - t0
    work = f"{n} films (1/3 AP pelvis 640 x 640, 2/3 AP hip 640 x 520), one process"
    return [row("synth: films per second", stage="synth", ours=n / render_s, baseline=n / write_s, unit="films/s",
                work=work, note="ours: the anatomical simulator (3D model, projection, exposure, processing); "
                                "baseline: writing the same pixels as DICOM")]
