"""`sides` in the API answer lists every side scored with a box, as the registered pyfunc does: one for a
single hip (it was empty unless a pelvis gave two), none for a crop scored whole (issue 23, item 8)."""

from __future__ import annotations

import numpy as np

from tests.osteo_service.conftest import hip_png, png_of
from tests.osteo_service.test_api import post


def test_a_single_hip_answers_its_one_side(service):
    client, *_ = service
    j = post(client, hip_png(220)).json()
    assert j["box_source"] == "model"
    assert [(s["side"], s["box"], s["probability"]) for s in j["sides"]] == [(j["side"], j["box"], j["probability"])]
    assert j["sides"][0]["box_confidence"] == j["box_confidence"] and j["sides"][0]["label"] == j["label"]


def test_a_user_box_is_one_side_and_a_crop_none(service):
    client, *_ = service
    image = png_of(np.full((100, 100), 90, np.uint8))
    user = post(client, image, box="10,10,40,40", side="R").json()
    assert [(s["side"], s["box"]) for s in user["sides"]] == [("R", [10, 10, 40, 40])]
    assert post(client, image, cropped="true").json()["sides"] == []
