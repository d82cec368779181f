"""Office-Home (Venkateswara et al., 2017) and Office-31 (Saenko et al., 2010), read from the
class-per-folder layouts in which they are distributed."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from mic.core.errors import DatasetError
from mic.datasets.files import root_hint
from mic.datasets.folders import ImageFolder, check_folder

#: Office-Home's 65 classes, in the index order of the image lists that the published
#: classification code (TLlib, SDAT, MIC) trains with, so labels and checkpoints agree
OFFICE_HOME_CLASSES = (
    "Drill", "Exit_Sign", "Bottle", "Glasses", "Computer", "File_Cabinet", "Shelf", "Toys",
    "Sink", "Laptop", "Kettle", "Folder", "Keyboard", "Flipflops", "Pencil", "Bed", "Hammer",
    "ToothBrush", "Couch", "Bike", "Postit_Notes", "Mug", "Webcam", "Desk_Lamp", "Telephone",
    "Helmet", "Mouse", "Pen", "Monitor", "Mop", "Sneakers", "Notebook", "Backpack",
    "Alarm_Clock", "Push_Pin", "Paper_Clip", "Batteries", "Radio", "Fan", "Ruler", "Pan",
    "Screwdriver", "Trash_Can", "Printer", "Speaker", "Eraser", "Bucket", "Chair", "Calendar",
    "Calculator", "Flowers", "Lamp_Shade", "Spoon", "Candles", "Clipboards", "Scissors", "TV",
    "Curtains", "Fork", "Soda", "Table", "Knives", "Oven", "Refrigerator", "Marker",
)  # fmt: skip
#: short name -> the domain's folder names (the release spells "Real World" with a space)
OFFICE_HOME_DOMAINS = {
    "Ar": ("Art",),
    "Cl": ("Clipart",),
    "Pr": ("Product",),
    "Rw": ("Real_World", "Real World", "RealWorld"),
}

OFFICE31_CLASSES = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair",
    "desk_lamp", "desktop_computer", "file_cabinet", "headphones", "keyboard",
    "laptop_computer", "letter_tray", "mobile_phone", "monitor", "mouse", "mug",
    "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder",
    "ruler", "scissors", "speaker", "stapler", "tape_dispenser", "trash_can",
)  # fmt: skip
OFFICE31_DOMAINS = {"A": ("amazon",), "D": ("dslr",), "W": ("webcam",)}


def domain_pair(pair: str, side: str) -> str:
    """``"Ar"`` from ``domain_pair("Ar2Cl", "source")``, ``"Cl"`` for ``"target"``: lets one
    config key (``dataset.pair``) name both domains of a transfer task, for sweeps."""
    if side not in ("source", "target"):
        raise DatasetError(f"side must be 'source' or 'target', got {side!r}")
    parts = pair.split("2") if isinstance(pair, str) else []
    if len(parts) != 2 or not all(parts):
        raise DatasetError(
            f"a domain pair is written <source>2<target> (e.g. Ar2Cl, A2W), got {pair!r} "
            "(dataset.pair)"
        )
    if side == "target" and parts[0].lower() == parts[1].lower():
        warnings.warn(
            f"dataset.pair={pair} adapts a domain to itself: its 'target' scores are on the "
            "source domain (a typo for another pair?)",
            stacklevel=2,
        )
    return parts[0] if side == "source" else parts[1]


class _DomainFolder(ImageFolder):
    """One domain of a multi-domain class-per-folder dataset, with a fixed class order
    (``dataset_root`` is the dataset's folder; ``root`` and ``folder`` the domain's
    class-per-folder tree, which messages and the split checks name)."""

    name = ""
    classes: Sequence[str] = ()
    domains: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(
        self,
        root: str | os.PathLike[str],
        domain: str,
        transform: Callable[[Any], Any] | None = None,
        labelled: bool = True,
        allow_empty_classes: bool = False,
    ) -> None:
        self.dataset_root = check_folder(root, self.name)
        self.domain = self.short_name(domain)
        self.folder = self.find_domain(self.dataset_root, self.domain)
        super().__init__(self.folder, transform, self.classes, allow_empty_classes, labelled)

    @classmethod
    def short_name(cls, domain: str) -> str:
        for short, folders in cls.domains.items():
            if domain.lower() in (short.lower(), *(f.lower() for f in folders)):
                return short
        names = ", ".join(f"{s} ({f[0]})" for s, f in cls.domains.items())
        raise DatasetError(f"{cls.name} has the domains {names}; got {domain!r}")

    def find_domain(self, root: Path, short: str) -> Path:
        """The domain's folder under ``root``, its name in any case (``art`` for ``Art``); of
        several (``Real World`` and ``Real_World``), one that holds folders before an empty
        one, then in the order of ``domains``.

        Raises:
            DatasetError: no such folder, naming a folder one level below or above ``root``
                that holds it.
        """
        names = [f.lower() for f in self.domains[short]]
        found = [d for d in root.iterdir() if d.is_dir() and d.name.lower() in names]
        found.sort(
            key=lambda d: (not any(x.is_dir() for x in d.iterdir()), names.index(d.name.lower()))
        )
        if found:
            return self.class_root(found[0])
        expected = " or ".join(f"'{root / f}'" for f in self.domains[short])
        hint = root_hint(root / self.domains[short][0], root)
        raise DatasetError(f"{self.name} domain {short}: no folder {expected}{hint}")

    def class_root(self, folder: Path) -> Path:
        """The folder holding the class folders of a domain."""
        return folder


class OfficeHome(_DomainFolder):
    """One domain of Office-Home: ``root/<Art|Clipart|Product|Real_World>/<class>/<image>``
    (the release's ``Real World`` is found too). Class indices follow the published image
    lists (``OFFICE_HOME_CLASSES``).

    Args:
        root: the dataset folder.
        domain: ``"Ar"``, ``"Cl"``, ``"Pr"``, ``"Rw"`` (or the folder name).
        transform: applied to each PIL image.
        labelled: return labels (False for the target training set).
        allow_empty_classes: accept class folders without images (e.g. a subset).
    """

    name = "Office-Home"
    classes = OFFICE_HOME_CLASSES
    domains = OFFICE_HOME_DOMAINS


class Office31(_DomainFolder):
    """One domain of Office-31: ``root/<amazon|dslr|webcam>/images/<class>/<image>`` (the
    release's layout) or ``root/<domain>/<class>/<image>``. Class indices follow the sorted
    class names (``OFFICE31_CLASSES``), as in the published image lists.

    Args:
        root: the dataset folder.
        domain: ``"A"``, ``"D"``, ``"W"`` (or ``"amazon"``, ``"dslr"``, ``"webcam"``).
        transform, labelled, allow_empty_classes: as ``OfficeHome``.
    """

    name = "Office-31"
    classes = OFFICE31_CLASSES
    domains = OFFICE31_DOMAINS

    def class_root(self, folder: Path) -> Path:
        return folder / "images" if (folder / "images").is_dir() else folder
