"""Readers for folders of images: class-per-folder (labelled) and any folder (unlabelled)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mic.core.errors import DatasetError
from mic.datasets.files import (
    IMAGE_EXTENSIONS,
    ReaderOptionError,
    check_folder,
    is_hidden_name,
    is_image,
    list_images,
    load_image,
)
from mic.datasets.preflight import (
    Problem,
    check_image,
    check_images,
    crop_problems,
    progress,
    unread_problems,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "LabelledImages",
    "UnlabeledImageFolder",
    "check_folder",
    "is_image",
    "list_images",
    "load_image",
]


class UnlabeledImageFolder:
    """Every image under ``root`` (recursively), without labels: the usual target training
    set of UDA, with no annotation files needed. Samples are ``transform(image)``.

    Args:
        root: the folder.
        transform: applied to each PIL image (e.g. ``mic.datasets.classification_transform``).
        recursive: also take images in sub-folders.
        apply_exif_orientation: turn each image as its EXIF orientation tag says (False: the
            stored pixels, as the labelled splits may read them).
        label_suffix: the ending of label files named after their image (``".png"``,
            ``"_mask.png"``); a file so named after another image in its folder (``a.png``
            beside ``a.jpg``) is left out as that image's label, and the data check warns of
            it. None (the default): every image is taken.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        recursive: bool = True,
        apply_exif_orientation: bool = True,
        label_suffix: str | None = None,
    ) -> None:
        self.root = check_folder(root, "image")
        self.transform = transform
        self.apply_exif_orientation = apply_exif_orientation
        #: files of image formats mic does not read (GIF...), left out with a warning
        self.unread: list[Path] = []
        self.files = list_images(self.root, recursive, self.unread)
        #: ``(label file, its image)`` for the files left out as labels (``label_suffix``)
        self.labels_left_out: list[tuple[Path, Path]] = []
        if label_suffix:
            self.labels_left_out = _labels_beside(self.files, label_suffix)
            left_out = {label for label, _ in self.labels_left_out}
            self.files = [f for f in self.files if f not in left_out]
        if not self.files:
            raise DatasetError(
                f"no images found in '{self.root}' (looked for {', '.join(IMAGE_EXTENSIONS)}"
                f"{' in sub-folders too' if recursive else ''})"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        img = load_image(self.files[index], "RGB", self.apply_exif_orientation)
        return self.transform(img) if self.transform else img

    def preflight(self, training: bool = True) -> list[Problem]:
        """Every image's header readable and its mode convertible to RGB (see
        ``mic.datasets.preflight``); a warning for the label files left out."""
        left_out = [
            Problem(
                "files left out of the unlabelled images as the label of an image beside them",
                str(label),
                f"named after '{image.name}'",
                "Keep label files out of the target image folder to silence this.",
                warning=True,
            )
            for label, image in self.labels_left_out
        ]
        problems = left_out + unread_problems(self.unread)
        sizes = []
        for path in progress(self.files, len(self.files), f"images in {self.root}"):
            header = check_image(path, problems, self.apply_exif_orientation)
            if header is not None:
                sizes.append((header.height, header.width))
        return problems + crop_problems(self.transform, sizes, str(self.root))


def _labels_beside(files: Sequence[Path], label_suffix: str) -> list[tuple[Path, Path]]:
    """``(label, image)`` for each of ``files`` named ``<stem of another one><label_suffix>``
    in the same folder (an image named after itself, ``a.png`` with ``.png``, is no label)."""
    listed = set(files)
    found = []
    for image in files:
        label = image.with_name(image.stem + label_suffix)
        if label != image and label in listed:
            found.append((label, image))
    return found


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

    def preflight(self, training: bool = True) -> list[Problem]:
        """Every image present, its header readable and its mode convertible to RGB; for a
        labelled training set, a warning for classes without any image (see
        ``mic.datasets.preflight``)."""
        files = [path for path, _ in self.samples]
        problems = unread_problems(getattr(self, "unread", []))
        problems += check_images(files, f"{len(files)} images")
        absent = sorted(set(range(self.num_classes)) - set(self.targets))
        if training and self.labelled and absent:
            names = ", ".join(f"{c} ({self.classes[c]})" for c in absent)
            problems.append(
                Problem(
                    "class lists with classes that no image has",
                    str(getattr(self, "root", files[0].parent)),
                    f"class {names}",
                    "A model cannot learn them from the source; if that is not meant, check the "
                    "images and the class list.",
                    warning=True,
                )
            )
        return problems


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
            d.name for d in self.root.iterdir() if d.is_dir() and not is_hidden_name(d.name)
        )
        if not folders:
            loose = list_images(self.root, recursive=False)
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
        #: files of image formats mic does not read (GIF...), left out with a warning
        self.unread: list[Path] = []
        for c in classes:
            folder = self.root / c
            files = list_images(folder, left_out=self.unread) if folder.is_dir() else []
            if not files:
                empty.append(c)
            samples.extend((f, self.class_to_idx[c]) for f in files)
        if not samples:
            raise DatasetError(f"no images found in the class folders of '{self.root}'")
        if empty and not allow_empty_classes:
            raise ReaderOptionError(
                f"class folders without images in '{self.root}': {empty}; add images, or pass "
                "allow_empty_classes=true",
                option="allow_empty_classes=true",
            )
        super().__init__(samples, classes, transform, labelled)
