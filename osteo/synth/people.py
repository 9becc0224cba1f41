"""Plausible Taiwanese patients: chart numbers and names (romanised for DICOM, Chinese for Big5 CSVs)."""

from __future__ import annotations

import numpy as np

SURNAMES = [
    ("CHEN", "陳"), ("LIN", "林"), ("HUANG", "黃"), ("CHANG", "張"), ("LI", "李"),
    ("WANG", "王"), ("WU", "吳"), ("LIU", "劉"), ("TSAI", "蔡"), ("YANG", "楊"),
    ("HSU", "許"), ("CHENG", "鄭"), ("HSIEH", "謝"), ("KUO", "郭"), ("HUNG", "洪"),
    ("TSENG", "曾"), ("CHIU", "邱"), ("LIAO", "廖"), ("LAI", "賴"), ("CHOU", "周"),
]
GIVEN_F = [
    ("MEI", "美"), ("LING", "玲"), ("HUI", "惠"), ("CHUN", "春"), ("YU", "玉"), ("HSIU", "秀"),
    ("LAN", "蘭"), ("CHU", "珠"), ("FENG", "鳳"), ("YING", "英"), ("SHU", "淑"), ("LI", "麗"),
    ("CHIN", "琴"), ("HUA", "華"), ("CHEN", "貞"),
]
GIVEN_M = [
    ("CHIH", "志"), ("MING", "明"), ("WEN", "文"), ("CHENG", "成"), ("HUNG", "宏"),
    ("CHIEN", "建"), ("KUO", "國"), ("HSIUNG", "雄"), ("TE", "德"), ("JUNG", "榮"),
]


def make_name(rng: np.random.Generator, sex: str) -> tuple[str, str]:
    """Return (DICOM PN "CHEN^MEI LING", Chinese "陳美玲")."""
    s_rom, s_zh = SURNAMES[int(rng.integers(len(SURNAMES)))]
    pool = GIVEN_F if sex == "F" else GIVEN_M
    i, j = rng.choice(len(pool), size=2, replace=False)
    g1, g2 = pool[int(i)], pool[int(j)]
    return f"{s_rom}^{g1[0]} {g2[0]}", f"{s_zh}{g1[1]}{g2[1]}"


def make_chart_numbers(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("ABCDEFGHJKMNPRST"))
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        cid = f"{letters[int(rng.integers(len(letters)))]}{int(rng.integers(1_000_000, 9_999_999)):07d}"
        if cid not in seen:
            seen.add(cid)
            out.append(cid)
    return out
