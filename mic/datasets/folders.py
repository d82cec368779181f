"""Readers for folders of images: class-per-folder (labelled) and any folder (unlabelled)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mic.core.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def is_image(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def check_folder(root: str | Path, what: str = "dataset") -> Path:
    """The folder as a Path; a clear error when it is missing or not a folder."""
    path = Path(os.path.expanduser(str(root)))
    if not path.exists():
        raise DatasetError(
            f"{what} folder '{path}' does not exist; check the path in the dataset config "
            "(relative paths are taken from the directory you run in)"
        )
    if not path.is_dir():
        raise DatasetError(f"{what} path '{path}' is a file, not a folder")
    return path


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image file fully (so a truncated file fails here, naming the file)."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(
            f"cannot read image '{path}' ({e.__class__.__name__}: {e}); remove or replace the file"
        ) from e


def list_images(root: Path, recursive: bool = True) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern) if p.is_file() and is_image(p))


class UnlabeledImageFolder:
    """Every image under ``root`` (recursively), without labels: the usual target training
    set of UDA, with no annotation files needed. Samples are ``transform(image)``.

    Args:
        root: the folder.
        transform: applied to each PIL image (e.g. ``mic.datasets.classification_transform``).
        recursive: also take images in sub-folders.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        recursive: bool = True,
    ) -> None:
        self.root = check_folder(root, "image")
        self.transform = transform
        self.files = list_images(self.root, recursive)
        if not self.files:
            raise DatasetError(
                f"no images found in '{self.root}' (looked for {', '.join(IMAGE_EXTENSIONS)}"
                f"{' in sub-folders too' if recursive else ''})"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        img = load_image(self.files[index])
        return self.transform(img) if self.transform else img


class LabelledImages:
    """Labelled image files: ``samples`` of ``(path, class index)``, each loaded as a PIL image
    and passed through ``transform``. Samples are ``(image, label)``, or the image alone with
    ``labelled=False`` (a target training set). The readers of class-per-folder trees and of
    image lists fill it.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        transform: Callable[[Any], Any] | None = None,
        labelled: bool = True,
    ) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.labelled = labelled
        self.targets = [label for _, label in self.samples]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        path, label = self.samples[index]
        img = load_image(path)
        img = self.transform(img) if self.transform else img
        return (img, label) if self.labelled else img


class ImageFolder(LabelledImages):
    """Labelled images in one sub-folder per class (``root/<class>/<image>``); class indices
    follow the sorted folder names, or the order of ``classes`` when given (so that source and
    target share one mapping even when a domain lacks a class). Samples are
    ``(transform(image), label)``.

    Args:
        root: the folder holding one sub-folder per class.
        transform: applied to each PIL image.
        classes: the class names in index order (default: the sorted sub-folder names).
        allow_empty_classes: accept a class folder without images (e.g. a small test split).
        labelled: return labels (False: the images alone).
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        classes: Sequence[str] | None = None,
        allow_empty_classes: bool = False,
        labelled: bool = True,
    ) -> None:
        self.root = check_folder(root, "class-per-folder")
        folders = sorted(
            d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        if not folders:
            loose = [p.name for p in self.root.iterdir() if p.is_file() and is_image(p)]
            layout = (
                f"found {len(loose)} images directly in it but no class sub-folders"
                if loose
                else "it is empty"
            )
            raise DatasetError(
                f"'{self.root}' must hold one sub-folder per class (root/<class>/<image>), but "
                f"{layout}. For unlabelled images use UnlabeledImageFolder."
            )
        classes = list(classes) if classes is not None else folders
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DatasetError(
                f"'{self.root}' has folders {unknown} that are not in the class list "
                f"{classes}; source and target must share the same classes"
            )
        self.class_to_idx = {c: i for i, c in enumerate(classes)}
        samples: list[tuple[Path, int]] = []
        empty = []
        for c in classes:
            files = list_images(self.root / c) if (self.root / c).is_dir() else []
            if not files:
                empty.append(c)
            samples.extend((f, self.class_to_idx[c]) for f in files)
        if not samples:
            raise DatasetError(f"no images found in the class folders of '{self.root}'")
        if empty and not allow_empty_classes:
            raise DatasetError(
                f"class folders without images in '{self.root}': {empty}; add images, or pass "
                "allow_empty_classes=true"
            )
        super().__init__(samples, classes, transform, labelled)
