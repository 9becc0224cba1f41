"""The localiser's split (osteo/localiser/training.py): the classifier's rules, by patient, from the data."""

from __future__ import annotations

from osteo.localiser.training import BoxedImage, split_images


def _im(patient: str, year: int, sha: str) -> BoxedImage:
    return BoxedImage(path="", sha256=sha, patient=patient, year=year, laterality="L", row_direction="L", mm=None,
                      boxes={}, synthetic=False)


def test_the_test_year_is_held_out_and_no_test_patient_trains():
    images = [_im("a", 2020, "01"), _im("a", 2022, "02"), _im("b", 2019, "03"), _im("b", 2021, "04"),
              _im("c", 2023, "05"), _im("c", 2020, "06")] + [_im(f"p{i}", 2018 + i % 4, f"{i + 10:02d}")
                                                               for i in range(20)]
    parts = split_images(images, 2022, seed=0)
    by = dict(zip([(im.patient, im.year) for im in images], parts, strict=True))
    assert by[("a", 2022)] == "test" and by[("a", 2020)] == "unused"  # a test patient's earlier image: unused
    assert by[("c", 2023)] == "unused" and by[("c", 2020)] in ("train", "val")  # after the test year: unused
    assert by[("b", 2019)] == by[("b", 2021)] in ("train", "val")  # a patient's images stay together
    val = {im.patient for im, p in zip(images, parts, strict=True) if p == "val"}
    train = {im.patient for im, p in zip(images, parts, strict=True) if p == "train"}
    assert val and train and not val & train
    assert split_images(images, 2022, seed=0) == parts  # the same data and seed: the same split
    assert split_images(list(reversed(images)), 2022, seed=0) == list(reversed(parts))  # order-free


def test_negative_crops_of_a_film_show_no_neck():
    import numpy as np

    from osteo.localiser.negatives import MAX_VISIBLE, away_windows, film_negatives, visible_share

    rng = np.random.default_rng(0)
    boxes = [(60, 120, 110, 160), (330, 130, 380, 170)]  # an AP pelvis 400 wide: its two necks
    windows = away_windows(300, 400, boxes, rng, 3, pelvis=True)
    assert len(windows) == 3 and windows[0] == (110, 0, 330, 300)  # the middle (sacrum, symphysis) first
    assert all(visible_share(b, w) <= MAX_VISIBLE for w in windows for b in boxes)
    display = rng.integers(0, 255, (300, 400), dtype=np.uint8)
    views = film_negatives(display, "B", boxes, 64, [1, 2])
    assert len(views) == 3 and views[0].shape == (64, 64)
    again = film_negatives(display, "B", boxes, 64, [1, 2])
    assert all(np.array_equal(a, b) for a, b in zip(views, again, strict=True))  # seeded
    assert visible_share((0, 0, 10, 10), (5, 0, 20, 20)) == 0.5
