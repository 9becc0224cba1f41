"""The bench's screening stage on a tiny cohort: its one row comes out with finite rates over images that were
screened (ratios are never asserted: these machines are shared and noisy)."""

from __future__ import annotations

import math


def test_screening_stage_yields_its_row(tmp_path):
    from bench import screening
    from osteo.synth import generate_cohort

    generate_cohort(tmp_path / "cohort", patients=6, seed=0, workers=1)
    (r,) = screening.run(tmp_path / "cohort", tmp_path, repeats=1)
    assert r["stage"] == "screening" and r["unit"] == "images/s" and r["target"] == "ratio >= 0.8", r
    for key in ("ours", "baseline", "ratio"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, r
    assert r["status"] in ("PASS", "MISS")
    images = int(r["work"].split()[0])
    assert images > 0, r["work"]
