"""How a synthetic film marks itself, and how the pipeline tells (docs/synthetic.md).

`osteo synth` writes every radiograph with Manufacturer ``OSTEO SYNTHETIC`` and a private block
(creator ``OSTEO SYNTHETIC`` in group 0009) whose first element says ``SYNTHETIC`` and whose second
names the simulator. Either mark makes a file synthetic: a real film carries neither, and a
synthetic film whose private block a tool stripped still says so in Manufacturer. The refresh
records the fact per image, so that every model trained on such images says what it learned from.
"""

from __future__ import annotations

MANUFACTURER = "OSTEO SYNTHETIC"
PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "OSTEO SYNTHETIC"
PRIVATE_BLOCK = 0x10  # (0009,0010) holds the creator; the block's elements are (0009,10xx)
ELEMENT_FLAG = 0x01  # (0009,1001) LO "SYNTHETIC"
ELEMENT_SIMULATOR = 0x02  # (0009,1002) LO the simulator and its version
FLAG = "SYNTHETIC"
SIMULATOR = "osteo anatomical simulator 2"

#: the fact as every user reads it (model card, page banner, API field)
DEMO_NOTICE = "demonstration model: trained on synthetic images, not for clinical use"
DEMO_NOTICE_ZH = "示範模型：以合成影像訓練，不可用於臨床"


def is_synthetic(manufacturer: str | None, flag: str | None) -> bool:
    """True when either mark says synthetic (values compared trimmed, in any case)."""
    m = (manufacturer or "").strip().upper()
    f = (flag or "").strip().upper()
    return m == MANUFACTURER or f == FLAG


#: what a model learned from (the `trained_on` tag of a registered version): every image synthetic, none, or some
SYNTHETIC, REAL, MIXED = "synthetic", "real", "mixed"


def trained_on(synthetic_images: int, images: int) -> str:
    """`synthetic` when every image is synthetic, `real` when none is, else `mixed`."""
    if synthetic_images <= 0:
        return REAL
    return SYNTHETIC if synthetic_images >= images else MIXED


def synthetic_training(*sources: str | None) -> bool | None:
    """Whether an answer rests on synthetic images, from the `trained_on` of each model that made it
    (classifier, localiser): True when any learned from a synthetic image, False when every one says
    `real`, None (unknown, never "real") when one of them does not say."""
    if any(s in (SYNTHETIC, MIXED) for s in sources):
        return True
    if sources and all(s == REAL for s in sources):
        return False
    return None
