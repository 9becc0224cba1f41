import hashlib

import numpy as np
import pandas as pd
import torch
from model_toy import toy_image, write_png
from PIL import Image

from osteo_model.augment import (
    SeededAugment,
    apply_params,
    copy_seed,
    draw_params,
    encode_png,
    materialize_copies,
)


def test_param_ranges():
    rng = np.random.default_rng(0)
    ps = [draw_params(rng) for _ in range(3000)]
    angles = np.array([p["angle"] for p in ps])
    bright = np.array([p["brightness"] for p in ps])
    assert angles.min() >= -20 and angles.max() <= 20
    assert angles.min() < -19 and angles.max() > 19
    changed = bright != 1.0
    assert 0.27 < changed.mean() < 0.33
    assert bright[changed].min() >= 0.7 and bright[changed].max() <= 1.3


def test_apply_is_deterministic():
    img = Image.fromarray(toy_image(0, np.random.default_rng(1)))
    p = draw_params(np.random.default_rng(5))
    a, b = encode_png(apply_params(img, p)), encode_png(apply_params(img, p))
    assert a == b and b"tEXt" not in a and b"tIME" not in a
    assert apply_params(img, {"angle": 0.0, "brightness": 1.0}).tobytes() == img.tobytes()
    brighter = np.asarray(apply_params(img, {"angle": 0.0, "brightness": 1.2}), dtype=float)
    assert brighter.mean() > np.asarray(img, dtype=float).mean()
    assert apply_params(img, p).mode == "L" and apply_params(img, p).size == img.size


def _train_df(tmp_path, n=6):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = write_png(tmp_path / "src" / f"{i}.png", toy_image(i % 2, rng))
        rows.append(dict(member_id=100 + i, path=str(path), label=i % 2,
                         patient_key=f"P{i}", laterality="L", study_year=2020,
                         split="train", fold=i % 3))
    return pd.DataFrame(rows)


def test_materialize_copies_seeded_and_idempotent(tmp_path):
    df = _train_df(tmp_path)
    calls = []
    out = materialize_copies(df, tmp_path / "aug", seed=11,
                             progress=lambda d, t: calls.append((d, t)))
    assert len(out) == len(df) and out.written.all()
    assert calls[-1] == (len(df), len(df))
    assert out.source_member_id.tolist() == df.member_id.tolist()
    for col in ("label", "patient_key", "fold", "split", "laterality"):
        assert out[col].tolist() == df[col].tolist()
    assert "member_id" not in out.columns
    for _, r in out.iterrows():
        data = open(r.path, "rb").read()
        assert hashlib.sha256(data).hexdigest() == r.sha256
        assert set(r.params) == {"angle", "brightness"}
        assert r.seed == copy_seed(11, r.source_member_id, 0)
    # second run: same bytes, nothing rewritten
    again = materialize_copies(df, tmp_path / "aug", seed=11)
    assert again.sha256.tolist() == out.sha256.tolist() and not again.written.any()
    # a tampered file is rewritten
    open(out.path[0], "wb").write(b"junk")
    fixed = materialize_copies(df, tmp_path / "aug", seed=11)
    assert fixed.written.tolist() == [True] + [False] * (len(df) - 1)
    # stable when the set grows: the copy of a member depends on (seed, member, copy) only
    sub = materialize_copies(df.iloc[2:4], tmp_path / "aug2", seed=11)
    assert sub.sha256.tolist() == out.sha256.tolist()[2:4]
    other = materialize_copies(df, tmp_path / "aug3", seed=12)
    assert other.sha256.tolist() != out.sha256.tolist()
    two = materialize_copies(df, tmp_path / "aug4", seed=11, copies=2)
    assert len(two) == 2 * len(df) and sorted(set(two.copy_index)) == [0, 1]
    assert not list((tmp_path / "aug").glob("*.tmp"))


def test_online_augment_seeded():
    img = Image.fromarray(toy_image(1, np.random.default_rng(2)))
    aug = SeededAugment()
    torch.manual_seed(3)
    a = [aug(img).tobytes() for _ in range(3)]
    torch.manual_seed(3)
    b = [aug(img).tobytes() for _ in range(3)]
    assert a == b and a[0] != a[1]
    assert aug(img, np.random.default_rng(4)).tobytes() == aug(img, np.random.default_rng(4)).tobytes()
