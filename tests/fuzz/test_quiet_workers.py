"""pydicom's warnings stay out of the console in the refresh's worker processes too (osteo/etl/pool.py).

The workers are forkserver children: they print to the console the refresh was started from and
configure no logging, so a warning they let through lands on stderr. A subprocess runs the header
reader and the export on a pool of two workers with PYTHONWARNINGS=always::UserWarning (inherited
by the workers: each pydicom warning they do not silence is printed) and must write nothing; then,
as the control, a bare pydicom read in the same workers must print its warning.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import io, sys, warnings
    from pathlib import Path
    import pydicom
    from pydicom import config
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from osteo.etl.dicom_headers import read_headers
    from osteo.etl.imaging import ExportJob
    from osteo.etl.pool import shared_pool
    from osteo.ingest.refresh import _export_one
    from tests.dicom_factory import make_dicom
    from tests.fuzz.support import claim

    root = Path(sys.argv[1])
    config.settings.writing_validation_mode = config.IGNORE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test's own writer
        make_dicom(root / "seed.dcm")
        ds = pydicom.dcmread(root / "seed.dcm")
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.\\u00cc"  # quoted by pydicom's validation
        paths = []
        for i in range(70):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.544.{i}"
            buf = io.BytesIO()
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
            # the meta then claims explicit VR: "Expected explicit VR, but found implicit VR"
            (root / f"{i}.dcm").write_bytes(claim(buf.getvalue(), ExplicitVRLittleEndian))
            paths.append(str(root / f"{i}.dcm"))
    results = read_headers(paths, b"key", workers=2)
    assert len(results) == 70 and all(r.record is not None or r.error is not None for r in results), results[:2]
    jobs = [ExportJob(annotation_id=i, image_id=i, side="L", path=p, sha256="", box=(8, 8, 40, 40), digest="",
                      out_png=str(root / f"{i}.png"), size=64, margin=0.1, metal_threshold=1.0, blur_threshold=0.0)
            for i, p in enumerate(paths)]
    done = list(shared_pool(2).map(_export_one, jobs[:16]))
    assert len(done) == 16, done
    sys.stderr.write("--- control ---\\n")
    sys.stderr.flush()
    list(shared_pool(2).map(pydicom.dcmread, paths[:4]))  # unguarded: the workers print
""")


def test_worker_processes_print_no_pydicom_warning(tmp_path):
    root = Path(__file__).resolve().parents[2]
    # pydicom warns with UserWarning; other categories keep Python's defaults (no import-time noise)
    env = dict(os.environ, PYTHONWARNINGS="always::UserWarning", PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    quiet, _, control = done.stderr.partition("--- control ---")
    assert not quiet.strip(), quiet[-3000:]
    assert "implicit VR" in control or "Invalid value" in control, control[-3000:]  # the check can see a warning
