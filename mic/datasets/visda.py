"""VisDA-2017 classification (Peng et al., 2017): 12 classes, synthetic renderings -> real
photos, read from the dataset's image lists."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mic.core.errors import DatasetError
from mic.datasets.folders import check_folder
from mic.datasets.imagelist import ImageList

VISDA_CLASSES = (
    "aeroplane",
    "bicycle",
    "bus",
    "car",
    "horse",
    "knife",
    "motorcycle",
    "person",
    "plant",
    "skateboard",
    "train",
    "truck",
)
#: domain name -> the split that holds it
VISDA_SPLITS = {"synthetic": "train", "real": "validation"}


class VisDA2017(ImageList):
    """One domain of VisDA-2017: ``"synthetic"`` (the ``train`` split, the source) or
    ``"real"`` (the ``validation`` split: the target, unlabelled for training and labelled for
    testing, as in every published result).

    Two layouts are found under ``root``:

    - the released one: ``train/image_list.txt`` and ``validation/image_list.txt``, with
      lines ``aeroplane/src_1_02691156_10151f.png 0`` relative to the list's folder;
    - the published code's: ``image_list/train.txt`` and ``image_list/validation.txt``, with
      lines ``train/aeroplane/src_1_02691156_10151f.png 0`` relative to ``root``.

    Args:
        root: the dataset folder.
        domain: ``"synthetic"`` or ``"real"`` (or the split names ``"train"``,
            ``"validation"``).
        transform: applied to each PIL image.
        labelled: return labels (False for the target training set).
        list_file: a list of your own instead (paths relative to ``root``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        domain: str = "synthetic",
        transform: Callable[[Any], Any] | None = None,
        labelled: bool = True,
        list_file: str | os.PathLike[str] | None = None,
    ) -> None:
        root_path = check_folder(root, "VisDA-2017")
        base = root_path
        if list_file is not None:
            image_list = Path(list_file)
        else:
            split = VISDA_SPLITS.get(domain.lower(), domain.lower())
            if split not in VISDA_SPLITS.values():
                raise DatasetError(
                    f"VisDA-2017 domain must be 'synthetic' or 'real' (or the split 'train' or "
                    f"'validation'), got {domain!r}"
                )
            released = root_path / split / "image_list.txt"
            image_list = root_path / "image_list" / f"{split}.txt"  # the published code's
            if released.is_file():
                image_list, base = released, released.parent
            elif not image_list.is_file():
                above = root_path.resolve().parent  # (the root given one level too low, or high)
                up = (above / split / "image_list.txt").is_file() or (above / "image_list").is_dir()
                below = [p.parent.parent for p in root_path.glob(f"*/{split}/image_list.txt")]
                below += [p.parent for p in root_path.glob("*/image_list") if p.is_dir()]
                holder = below[0] if below else above if up else None
                hint = f"; '{holder}' holds it: is that the dataset root?" if holder else ""
                raise DatasetError(
                    f"no VisDA-2017 image list for '{split}' under '{root_path}': expected "
                    f"'{Path(split) / 'image_list.txt'}' (the released layout) or "
                    f"'{Path('image_list') / (split + '.txt')}' (the published code's){hint}"
                )
        super().__init__(image_list, VISDA_CLASSES, base, transform, labelled)
        self.domain = domain
        _check_labels_follow_folders(self.samples, image_list)


def _check_labels_follow_folders(samples: list[tuple[Path, int]], image_list: Path) -> None:
    """Raise ``DatasetError`` when listed images lie in the folder of one class and carry the
    label of another (a list written in another class order): the released lists name each
    image's class folder."""
    wrong = []
    for path, label in samples:
        folder = path.parent.name
        if folder in VISDA_CLASSES and folder != VISDA_CLASSES[label]:
            wrong.append((path, label, folder))
    if wrong:
        path, label, folder = wrong[0]
        raise DatasetError(
            f"{len(wrong)} of the {len(samples)} images listed in '{image_list}' carry the "
            f"label of another class than their folder's, e.g. '{path}' in '{folder}/' with "
            f"label {label} ({VISDA_CLASSES[label]}): was the list written in another class "
            f"order? VisDA-2017's is {', '.join(f'{i} {c}' for i, c in enumerate(VISDA_CLASSES))}"
        )
