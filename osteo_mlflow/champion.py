"""The champion gate: a challenger takes the champion alias only when it is better on the test year."""

from __future__ import annotations

import math


def should_promote(challenger: dict, champion: dict | None, *, min_test_images: int = 0) -> tuple[bool, str]:
    """Higher test ROC AUC wins; an equal AUC is decided by osteoporosis recall.

    Both dicts hold `roc_auc` and `recall_1` (osteoporosis recall) measured on the same (the challenger's) test set,
    and `n` (its size): a test set under `min_test_images` images (OSTEO_MIN_TEST_IMAGES) never replaces a
    champion, nor does a comparison with a champion that could not be scored on it. The first version becomes
    champion whatever its size (the service needs one), and the decision says when its test set was small.
    """
    n = challenger.get("n")
    small = n is not None and n < min_test_images
    if champion is None:  # the first version is served until one beats it on enough images
        return True, "no champion yet" + (f" (its test set of {int(n)} images is under the {min_test_images} "
                                          "a later challenger needs to replace it)" if small else "")
    if small:
        return False, (f"test set of {int(n)} images is under the {min_test_images} a promotion needs "
                       "(OSTEO_MIN_TEST_IMAGES): registered as challenger only")
    if champion.get("error"):
        return False, f"the champion could not be scored on this test set ({champion['error']}): no promotion"
    new_auc, old_auc = challenger.get("roc_auc", math.nan), champion.get("roc_auc", math.nan)
    if math.isnan(new_auc):
        return False, "challenger has no test AUC"
    if math.isnan(old_auc) or new_auc > old_auc + 1e-9:
        return True, f"test AUC {new_auc:.4f} > champion's {old_auc:.4f}"
    if abs(new_auc - old_auc) <= 1e-9 and challenger.get("recall_1", 0.0) > champion.get("recall_1", 0.0):
        return True, f"equal test AUC, recall {challenger['recall_1']:.4f} > {champion['recall_1']:.4f}"
    return False, f"test AUC {new_auc:.4f} does not beat the champion's {old_auc:.4f}"
