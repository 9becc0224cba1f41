"""The champion gate: a version is served only when it beats chance and its own mean-intensity baseline on
its test year, and a challenger takes the champion alias only when it is better than the champion there."""

from __future__ import annotations

import math

CHANCE = 0.5


def clears_the_bar(auc: float | None, ci: tuple[float, float] | None, baseline_auc: float | None) -> str | None:
    """None when the test-year AUC is above chance with its 95 % interval (lower bound > 0.5) and above the
    mean-intensity baseline's AUC (a model that sees only the exposure); else why not, in one line.

    Every version must clear it, the first one too: a worse-than-chance model must never be served
    (issue 23: version 1 with test AUC 0.250 became champion because the first version always did).
    """
    auc = math.nan if auc is None else float(auc)
    lo, hi = (math.nan, math.nan) if ci is None else (float(ci[0]), float(ci[1]))
    if math.isnan(auc):
        return "not promoted: no test-year AUC (the test year needs images of both classes)"
    shown = f"test-year AUC {auc:.3f} (95% CI {lo:.2f}-{hi:.2f})"
    if math.isnan(lo) or lo <= CHANCE:
        return f"not promoted: {shown} does not clear {CHANCE}"
    if baseline_auc is None or math.isnan(float(baseline_auc)):
        return f"not promoted: {shown}, but its mean-intensity baseline could not be measured to compare with"
    if auc <= float(baseline_auc):
        return f"not promoted: {shown} is not above its mean-intensity baseline {float(baseline_auc):.3f}"
    return None


def should_promote(challenger: dict, champion: dict | None, *, min_test_images: int = 0) -> tuple[bool, str]:
    """Higher test ROC AUC wins; an equal AUC is decided by osteoporosis recall (for a challenger that
    cleared the bar, `clears_the_bar`).

    Both dicts hold `roc_auc` and `recall_1` (osteoporosis recall) measured on the same (the challenger's) test set,
    and `n` (its size): a test set under `min_test_images` images (OSTEO_MIN_TEST_IMAGES) never replaces a
    champion, nor does a comparison with a champion that could not be scored on it. With no champion, one that
    cleared the bar becomes champion whatever its size, and the decision says when its test set was small.
    """
    n = challenger.get("n")
    small = f"test set of {int(n)} images" if n is not None and n < min_test_images else ""  # "": not small
    if champion is None:  # served until one beats it on enough images
        return True, "no champion yet" + (f" (its {small} is under the {min_test_images} "
                                          "a later challenger needs to replace it)" if small else "")
    if small:
        return False, (f"{small} is under the {min_test_images} a promotion needs "
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
