"""A reader for image lists: text files of ``<relative/path> <class index>`` lines."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mic.core.errors import DatasetError
from mic.datasets.files import read_text
from mic.datasets.folders import LabelledImages


def read_image_list(list_file: Path, base: Path) -> list[tuple[Path, int]]:
    """``(path, label)`` pairs of a list file; a path may contain spaces (the label is the
    last field); relative paths are taken from ``base``. Read as editors save text: with or
    without a byte-order mark, any line ends, blanks around fields and blank lines ignored."""
    samples = []
    for number, line in enumerate(read_text(list_file, "image list").split("\n"), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[-1].lstrip("-").isdigit():
            split = next((s for s in (",", ";") if s in line.strip()), None)
            hint = f" (fields separated by {split!r}: separate them by a space)" if split else ""
            raise DatasetError(
                f"{list_file}, line {number}: expected '<image path> <class index>', "
                f"got {line.strip()!r}{hint}"
            )
        path = Path(line.strip().rsplit(maxsplit=1)[0].strip())
        samples.append((path if path.is_absolute() else base / path, int(fields[-1])))
    return samples


def _missing_path_hint(path: Path, root: Path) -> str:
    """Why a listed image is not found: the list's own paths (Windows separators, another
    machine's absolute paths, a folder the root already ends in) or the root."""
    if "\\" in str(path):
        return "the list writes its paths with '\\' (Windows): write them with '/'"
    if not path.is_relative_to(root):
        return (
            "the list gives absolute paths, and this one is not here (written on another "
            f"machine?): make the list's paths relative to '{root}' or point them here"
        )
    parts = path.relative_to(root).parts
    if len(parts) > 1 and parts[0] == root.name and root.joinpath(*parts[1:]).is_file():
        return (
            f"the list's paths start with '{parts[0]}/', which the root '{root}' already ends "
            f"in: take the paths from '{root.parent}' (root='{root.parent}'), or drop that part"
        )
    return f"relative paths are taken from '{root}': check the dataset root"


class ImageList(LabelledImages):
    """Labelled images listed in a text file, one ``<path> <class index>`` per line.

    Samples are ``(transform(image), label)``, or ``transform(image)`` with
    ``labelled=False`` (a target training set). A missing list, an empty list, a bad line, a
    label outside the class list, and a first or last image that does not exist (a wrong
    root) are reported when the dataset is built; every listed image that is missing or
    unreadable by ``preflight()`` (the data check before training), or when it is loaded.
    The list is read as editors save it (``read_image_list``).

    Args:
        list_file: the list.
        root: the folder that relative paths start from (default: the list's folder).
        classes: the class names in index order.
        transform: applied to each PIL image.
        labelled: return labels.
    """

    def __init__(
        self,
        list_file: str | os.PathLike[str],
        classes: Sequence[str],
        root: str | os.PathLike[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        labelled: bool = True,
    ) -> None:
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise DatasetError(
                f"ImageList's classes are the class names in index order (a list), got {classes!r}"
            )
        self.list_file = Path(os.path.expanduser(str(list_file)))
        if not self.list_file.is_file():
            raise DatasetError(f"image list '{self.list_file}' does not exist")
        self.root = (
            Path(os.path.expanduser(str(root))) if root is not None else self.list_file.parent
        )
        samples = read_image_list(self.list_file, self.root)
        if not samples:
            raise DatasetError(f"image list '{self.list_file}' lists no image")
        bad = [y for _, y in samples if not 0 <= y < len(classes)]
        if bad:
            lines = read_text(self.list_file).splitlines()
            at = next((n for n, t in enumerate(lines, 1) if t.split()[-1:] == [str(bad[0])]), 0)
            raise DatasetError(
                f"image list '{self.list_file}' has label {bad[0]}"
                + (f" (line {at}: '{lines[at - 1].strip()}')" if at else "")
                + f", outside the {len(classes)} classes [0, {len(classes) - 1}]"
                + (  # 1..K: numbered from 1
                    "; its labels run from 1 to the class count: the list looks numbered from "
                    "1, where mic reads 0 as the first class (subtract 1 from each label)"
                    if {y for _, y in samples} <= set(range(1, len(classes) + 1))
                    and max(y for _, y in samples) == len(classes)
                    else ""
                )
            )
        for path, _ in (samples[0], samples[-1]):
            if not path.is_file():
                raise DatasetError(
                    f"image '{path}' listed in '{self.list_file}' does not exist; "
                    + _missing_path_hint(path, self.root)
                )
        super().__init__(samples, classes, transform, labelled)
