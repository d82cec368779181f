"""Label spaces: the Cityscapes classes, palette and id tables, and the GTA5 / SYNTHIA mappings.

Every reader maps the ids stored in its label files to the 19 Cityscapes training ids
(0..18, 255 = ignored) through a ``LabelMap``; an id that the mapping does not know is a
``DatasetError`` naming the file, never a silent 255.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from mic.core.errors import DatasetError

IGNORE_INDEX = 255

#: the 19 evaluated Cityscapes classes, in training-id order
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

#: the Cityscapes colour of each training id
CITYSCAPES_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

#: Cityscapes label id (0..33, what ``*_labelIds.png`` and GTA5's labels store) -> training id.
#: Ids 0..33 that are not evaluated map to 255; anything else is not a Cityscapes id.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
CITYSCAPES_LABEL_IDS = range(34)

#: SYNTHIA RAND-CITYSCAPES class id (0..22, the README of the release) -> Cityscapes training
#: id. terrain (9), truck (14) and train (16) do not occur in SYNTHIA; lane marking (22),
#: parking slot (13), road work (14) and void (0) are ignored, as published.
SYNTHIA_ID_TO_TRAIN_ID = {
    3: 0,
    4: 1,
    2: 2,
    21: 3,
    5: 4,
    7: 5,
    15: 6,
    9: 7,
    6: 8,
    16: 9,
    1: 10,
    10: 11,
    17: 12,
    8: 13,
    18: 14,
    19: 15,
    20: 16,
    12: 17,
    11: 18,
}
SYNTHIA_LABEL_IDS = range(23)

#: training ids that the SYNTHIA -> Cityscapes protocols average over (16 and 13 classes)
SYNTHIA16 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA13 = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
#: named evaluation protocols over the 19 Cityscapes classes
PROTOCOLS = {
    "cityscapes19": tuple(range(19)),
    "synthia16": SYNTHIA16,
    "synthia13": SYNTHIA13,
}
#: the "thing" classes of DAFormer's ImageNet feature distance
CITYSCAPES_THING_CLASSES = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


class LabelMap:
    """Maps the ids stored in label files to training ids (255 = ignored), with a clear
    error for ids outside the mapping.

    Args:
        mapping: stored id -> training id; ids in ``known`` but not in ``mapping`` map to 255.
        known: every id that may occur in the files (default: the keys of ``mapping``).
        name: the label format, for error messages.
        ignore_ids: stored ids that mean "ignore" (kept as 255).
    """

    def __init__(
        self,
        mapping: Mapping[int, int],
        known: Iterable[int] | None = None,
        name: str = "label",
        ignore_ids: Iterable[int] = (IGNORE_INDEX,),
    ) -> None:
        known = set(known if known is not None else mapping) | set(mapping)
        ignored = set(ignore_ids)
        size = 1 << 16 if max(known | ignored | {0}) > 255 else 256
        lut = np.full(size, -1, np.int16)
        for i in known | ignored:
            lut[i] = IGNORE_INDEX
        for src, dst in mapping.items():
            lut[src] = dst
        self.lut = lut
        self.name = name
        self.known = sorted(known)

    @classmethod
    def train_ids(cls, num_classes: int) -> LabelMap:
        """Files that already hold training ids 0..num_classes-1 (and 255)."""
        return cls({i: i for i in range(num_classes)}, name=f"training-id (0..{num_classes - 1})")

    def check(self, ids: np.ndarray) -> str | None:
        """None when every id in ``ids`` is known to the mapping, else what is wrong."""
        if ids.dtype.kind not in "iu":
            return f"{ids.dtype} values, not integer ids"
        outside = (ids < 0) | (ids >= len(self.lut))  # of the table, then of the mapping
        unknown = outside.copy()
        unknown[~outside] = self.lut[ids[~outside]] < 0
        if not unknown.any():
            return None
        bad = np.unique(ids[unknown])[:8]
        return (
            f"ids {bad.tolist()} outside the {self.name} mapping (known ids: {_ranges(self.known)})"
        )

    def __call__(self, ids: np.ndarray, file: object = "") -> np.ndarray:
        inside = not ids.size or (int(ids.max()) < len(self.lut) and int(ids.min()) >= 0)
        if ids.dtype.kind in "iu" and inside:
            out = self.lut[ids]
            if not out.size or int(out.min()) >= 0:
                return out.astype(np.uint8)
        reason = self.check(ids)
        count = ", a class count (num_classes) too small" * self.name.startswith("training-id")
        error = DatasetError(
            f"label file '{file}' holds {reason}; is it the right label format (label ids vs. "
            f"training ids){count} or a corrupt file?"
        )
        error.reason = reason  # type: ignore[attr-defined]  (for lists of problems)
        raise error


def default_class_names(num_classes: int) -> list[str]:
    """Cityscapes' names for 19 classes (the usual target), the class indices otherwise."""
    return list(CITYSCAPES_CLASSES) if num_classes == 19 else [str(i) for i in range(num_classes)]


def _ranges(ids: list[int]) -> str:
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids))


CITYSCAPES_IDS = LabelMap(CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_LABEL_IDS, "Cityscapes label-id")
SYNTHIA_IDS = LabelMap(SYNTHIA_ID_TO_TRAIN_ID, SYNTHIA_LABEL_IDS, "SYNTHIA label-id")
CITYSCAPES_TRAIN_IDS = LabelMap.train_ids(19)


def colorize(
    labels: np.ndarray, palette: Iterable[Iterable[int]] = CITYSCAPES_PALETTE
) -> np.ndarray:
    """H x W training ids -> H x W x 3 uint8 colours (ignored pixels black)."""
    table = np.zeros((256, 3), np.uint8)
    colours = np.asarray(list(palette), np.uint8)
    table[: len(colours)] = colours
    return table[np.asarray(labels, np.int64).clip(0, 255)]
