"""Readers for detection data in their published layouts: COCO json, Pascal VOC, Cityscapes
(with Foggy Cityscapes images). Samples are ``(image, target)``: the image a 3 x H x W float
tensor in [0, 1] (the detector resizes and normalises it), the target a dict of ``boxes``
(N x 4, x1 y1 x2 y2 pixels) and ``labels`` (N, 0-based class ids); ``labelled=False`` gives the
image alone. For any folder of unlabelled target images use
``mic.datasets.UnlabeledImageFolder`` with ``transform=torchvision.transforms.ToTensor()``.

Every annotation is checked when it is read, and a bad one names its file: degenerate boxes,
boxes outside the image, unknown classes. An image without objects is a valid sample.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from mic.core.errors import DatasetError
from mic.datasets.detection.targets import BORDER_TOLERANCE, box_faults, check_target, make_target
from mic.datasets.files import (
    CITYSCAPES_TEST_WITHHELD,
    IMAGE_EXTENSIONS,
    check_folder,
    load_image,
    read_header,
    read_text,
    visible,
)
from mic.datasets.preflight import (
    Problem,
    check_image,
    header_problem,
    keep_or_raise,
    orientation_problem,
    progress,
)
from mic.schema import did_you_mean, spelled_alike

Target = dict[str, Tensor]

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip
#: the 8 Cityscapes instance classes of the Cityscapes -> Foggy Cityscapes benchmark
CITYSCAPES_CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
#: their label ids in Cityscapes' ``*_instanceIds.png`` (instance id = label id * 1000 + n)
CITYSCAPES_LABEL_IDS = [24, 25, 26, 27, 28, 31, 32, 33]
#: the problem kind of an annotation file that cannot be read (its boxes then unknown)
UNREAD_ANNOTATIONS = "annotation files that cannot be read"
#: the kind of problem of an annotation file that names a class outside the class list
UNLISTED_CLASS = "annotation files with objects of classes outside the class list"
#: what to do about a VOC set whose every object is marked difficult
DIFFICULT_FIX = (
    "Difficult objects count only with both {reader}.keep_difficult=true and "
    "{reader}.ignore_difficult=false (VOC's protocol leaves them out of training and of the "
    "mAP); or give the set objects that are not marked difficult."
)


def to_tensor(image: Any) -> Tensor:
    """A PIL image as a 3 x H x W float tensor in [0, 1]."""
    return pil_to_tensor(image).float().div_(255.0)


def hflip(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Mirror an image and its boxes left-right."""
    w = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes}


def _read_text(path: Path, what: str) -> str:
    text = read_text(path, what)  # a byte-order mark, CRLF line ends
    if not text.strip():
        raise DatasetError(f"{what} '{path}' is empty; re-export or remove it")
    return text


def _stated_size(height: Any, width: Any) -> tuple[int, int] | None:
    """The (H, W) an annotation file states; None when it states none (missing or 0, as some
    exporters write), so that boxes are then checked against the image itself."""
    try:
        h, w = int(float(height)), int(float(width))
    except (TypeError, ValueError):
        return None
    return (h, w) if h > 0 and w > 0 else None


def _num(v: float) -> str:
    return f"{v:g}"


def _shown(value: Any) -> str:
    """A json value as the message shows it: ``3``, or ``'3' (a string)``, ``3.0 (a float)``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kind = {str: "a string", float: "a float", bool: "a boolean"}.get(type(value))
    return f"{value!r} ({kind or type(value).__name__})"


def _distinct(classes: Sequence[str], what: str) -> list[str]:
    """``classes`` as a list, with a ``DatasetError`` when a name comes twice."""
    names = [str(c) for c in classes]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise DatasetError(
            f"{what} {names} name {twice} more than once: class ids follow the names, so each "
            "must be distinct; list each class once (dataset.classes=[...])"
        )
    return names


class DetectionDataset:
    """Common behaviour of the readers: image loading, checks, optional flip, unlabelled use.

    Subclasses fill ``self.files`` (image paths) and ``self.targets`` (one per file, read and
    checked up front), or override ``target(index)`` to read targets lazily; and
    ``self.stated_sizes``, the (H, W) that the annotations state for each image (None: not
    stated), checked against the image files by ``preflight()``.

    Args:
        labelled: give targets; False: images only.
        flip: random horizontal flips (training).
        apply_exif_orientation: turn each image as its EXIF orientation tag says (what
            viewers show and annotation tools draw boxes on; photos from phones carry it);
            False: the stored pixels, for boxes drawn on them.
    """

    classes: list[str]
    files: list[Path]
    targets: list[Target]
    stated_sizes: list[tuple[int, int] | None] = []  # noqa: RUF012 (replaced, never mutated)
    found_problems: list[Problem] = []  # noqa: RUF012
    #: indices whose image (``missing``) or boxes (``flagged``) are among ``found_problems``,
    #: so that ``preflight()`` does not report them a second time
    missing: frozenset[int] = frozenset()
    flagged: frozenset[int] = frozenset()

    def __init__(
        self, labelled: bool = True, flip: bool = False, apply_exif_orientation: bool = True
    ) -> None:
        self.labelled = labelled
        self.flip = flip
        self.apply_exif_orientation = apply_exif_orientation

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def target(self, index: int) -> Target:
        return self.targets[index]

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Target]:
        image = to_tensor(load_image(self.files[index], "RGB", self.apply_exif_orientation))
        if not self.labelled:
            return image.flip(-1) if self.flip and random.random() < 0.5 else image
        target = self.target(index)
        size = (image.shape[-2], image.shape[-1])  # (a set of normalised boxes: preflight's)
        check_target(
            target, self.num_classes, size, f"'{self.files[index]}'", warn_normalised=False
        )
        if self.flip and random.random() < 0.5:
            image, target = hflip(image, target)
        return image, target

    def preflight(self, training: bool = True) -> list[Problem]:
        """The data check before training (see ``mic.datasets.preflight``): every image
        present, its header readable and its mode usable; the size its annotation states
        against the file's (after the EXIF orientation); boxes inside the image; in a
        labelled training set, a warning for classes without any box.

        Returns:
            The problems found, each naming its file.
        """
        problems = list(self.found_problems)
        eager = self.labelled and len(getattr(self, "targets", ())) == len(self.files)
        stated = self.stated_sizes if len(self.stated_sizes) == len(self.files) else None
        for i in progress(range(len(self.files)), len(self.files), type(self).__name__):
            path = self.files[i]
            if i in self.missing:  # reported while the reader was built
                continue
            header = check_image(path, problems, self.apply_exif_orientation)
            if header is None:
                continue
            said = stated[i] if stated is not None else None
            unsized = stated is not None and said is None  # the annotation states no size
            if unsized and eager and header.orientation in (5, 6, 7, 8):  # boxes may settle it
                boxes, (w, h) = self.targets[i]["boxes"], header.stored_size
                beyond = (boxes[:, 2] > w + BORDER_TOLERANCE) | (boxes[:, 3] > h + BORDER_TOLERANCE)
                unsized = not bool(beyond.any())  # past the stored pixels: drawn on the turned
            applied = self.apply_exif_orientation
            turned = orientation_problem(path, header, applied, "boxes", not unsized)
            problems += [turned] if turned and self.labelled else []
            size = (header.height, header.width)
            if said is not None and said != size:
                problems.append(self._size_problem(path, said, header))
            elif eager and said is None and i not in self.flagged:  # else checked when built
                found = self.box_problem(i, size)
                if found is not None:
                    problems.append(found)
            problems += self.check_labels(i, header)
        # files not read (or not all of their boxes): their boxes are unknown
        unread = any(p.kind in (UNREAD_ANNOTATIONS, UNLISTED_CLASS) for p in problems)
        countable = eager and self._countable_boxes() == 0 and not unread
        if self.labelled and not eager and not any(p.kind in LABEL_FILE_KINDS for p in problems):
            countable = not self._a_lazy_box()  # read until the first box
        if countable:
            problems.append(self._no_box_problem(training))
        if training and eager and not countable and not unread:
            counts = np.bincount(
                np.concatenate([t["labels"].numpy() for t in self.targets] + [np.zeros(0, int)]),
                minlength=self.num_classes,
            )
            absent = [i for i in range(self.num_classes) if counts[i] == 0]
            if absent:
                names = ", ".join(f"{c} ({self.classes[c]})" for c in absent)
                problems.append(
                    Problem(
                        "annotation sets in which declared classes have no box",
                        str(getattr(self, "annotation_file", None) or getattr(self, "root", "")),
                        f"class {names}",
                        "A model cannot learn them from the source; if that is not meant, "
                        "check the annotations and the class list.",
                        warning=True,
                    )
                )
        return problems

    def _a_lazy_box(self) -> bool:
        """Whether a reader that reads its targets lazily (``target(index)``) has one box: its
        files read until the first box (one file, in a set with boxes)."""
        return any(len(self.target(i)["labels"]) for i in range(len(self.files)))

    def _countable_boxes(self) -> int:
        """The boxes of the set that training learns from and evaluation counts (not
        ``iscrowd``)."""
        total = 0
        for t in self.targets:
            crowd = t.get("iscrowd")
            total += len(t["labels"]) - (int(crowd.sum()) if crowd is not None else 0)
        return total

    def _no_box_problem(self, training: bool) -> Problem:
        """The error of a labelled set without a countable box: nothing to learn from, or a
        test set whose mAP is undefined."""
        boxes = sum(len(t["labels"]) for t in getattr(self, "targets", ()))
        skipped = getattr(self, "crowd_skipped", 0)
        difficult = getattr(self, "difficult_skipped", 0)
        fix = (
            "Give the set annotations of (non-crowd) objects, or point it at the right "
            "annotation file."
        )
        if boxes and getattr(self, "ignore_difficult", False):
            why = f"all {boxes} objects are marked difficult (kept to be ignored, ignore_difficult)"
            fix = DIFFICULT_FIX
        elif boxes:
            why = f"all {boxes} boxes are iscrowd (kept to be ignored, ignore_crowd)"
        elif skipped:
            why = f"all {skipped} annotations are iscrowd, and skip_crowd left them out"
        elif difficult:
            why = f"all {difficult} objects are marked difficult, and are left out"
            fix = DIFFICULT_FIX
        else:
            why = "the annotations hold no box"
        use = "nothing to learn from" if training else "its mAP would be undefined"
        return Problem(
            "annotation sets without a box",
            str(getattr(self, "annotation_file", None) or getattr(self, "root", "")),
            f"none of its {len(self.files)} images has a box that counts: {why}; {use}",
            fix,
        )

    def check_labels(self, index: int, header: Any) -> list[Problem]:
        """Problems of the annotation files of image ``index`` (header: the image's)."""
        return []

    def box_problem(self, index: int, size: tuple[int, int] | None) -> Problem | None:
        """The problem of the boxes of image ``index`` (the first bad one), if any.

        Args:
            index: the image.
            size: its (H, W), as its annotation states it or as its file has it; None: the
                boxes are checked without it.

        Returns:
            None, or the problem naming the image.
        """
        try:
            check_target(
                self.targets[index], self.num_classes, size, "its boxes", warn_normalised=False
            )
        except DatasetError as e:
            return _annotation_problem(self.files[index], e)
        return None

    def _check_boxes(self, problems: list[Problem]) -> None:
        """Every image's boxes against its stated size, each bad image once in ``problems``
        (and in ``flagged``)."""
        flagged = set()
        for i, size in enumerate(self.stated_sizes):
            found = self.box_problem(i, size)
            if found is not None:
                problems.append(found)
                flagged.add(i)
        self.flagged = frozenset(flagged)

    def _size_problem(self, path: Path, stated: tuple[int, int], header: Any) -> Problem:
        h, w = stated
        applied = self.apply_exif_orientation and header.orientation != 1
        detail = f"stated {w} x {h}, the file is {header.width} x {header.height}" + (
            f" after its EXIF orientation {header.orientation}" if applied else ""
        )
        fix = "Fix the stated sizes (or replace the images): boxes are checked against them."
        if header.orientation in (5, 6, 7, 8):  # a quarter turn: the other reading fits
            stored = header.stored_size
            if self.apply_exif_orientation and (w, h) == stored:
                fix = (
                    "The annotations state the size of the stored pixels, before the EXIF "
                    "orientation: if their boxes were drawn on the stored pixels, set "
                    "{reader}.apply_exif_orientation=false; else fix the stated sizes."
                )
            elif not self.apply_exif_orientation and (w, h) == (stored[1], stored[0]):
                fix = (
                    "The annotations state the size of the upright image, after the EXIF "
                    "orientation: set {reader}.apply_exif_orientation=true."
                )
        return Problem("images whose size differs from the annotation's", str(path), detail, fix)


BAD_ANNOTATIONS = "images with annotations the detector cannot train on"


def _annotation_problem(file: Path, error: DatasetError | str, fix: str = "") -> Problem:
    return Problem(BAD_ANNOTATIONS, str(file), str(error), fix)


# ------------------------------------------------------------------------------------ COCO
COCO_BOX_FIX = (
    "A COCO bbox is [x, y, width, height] in pixels, width and height above 0, inside the "
    "image (the size its json entry states, else the file's); fix or drop these annotations "
    "(a bbox written as [x1, y1, x2, y2] instead reaches too far right or down)."
)
#: images with a side of at most this many pixels may have boxes within [0, 1] x [0, 1]
NORMALISED_UP_TO = 4


def _coco_box_errors(
    written: Sequence[tuple[Any, Any]], size: tuple[int, int] | None
) -> list[tuple[Any, str]]:
    """``(annotation id, what is wrong)`` for each bad COCO ``bbox`` among one image's
    ``(annotation id, bbox)``, in order, as the json writes it ([x, y, width, height] pixels)
    in an image of ``size`` (H, W; None: unknown); the faults are ``box_faults``'."""
    found: dict[int, str] = {}
    read: dict[int, tuple[float, float, float, float]] = {}
    for n, (_, bbox) in enumerate(written):
        try:
            x, y, w, h = (float(v) for v in bbox)
            read[n] = (x, y, w, h)
        except (TypeError, ValueError):
            found[n] = f"bbox {bbox!r} is not 4 numbers [x, y, width, height]"
    if read:
        xywh = torch.tensor(list(read.values()), dtype=torch.float64)
        faults = box_faults(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1), size)
        for i, (n, bbox) in enumerate(read.items()):
            kind = next((k for k, mask in faults.items() if mask[i]), None)
            if kind is not None:
                found[n] = _coco_box_error(bbox, kind, size)
    return [(written[n][0], found[n]) for n in sorted(found)]


def _coco_box_error(
    bbox: tuple[float, float, float, float], fault: str, size: tuple[int, int] | None
) -> str:
    """One COCO ``bbox`` with a fault of ``box_faults``, as the json writes it."""
    x, y, w, h = bbox
    shown = f"[{', '.join(_num(v) for v in bbox)}] (x, y, width, height)"
    if fault == "non-finite":
        return f"bbox {shown} has a non-finite value"
    if fault == "degenerate":
        flat = [
            f"{'zero' if v == 0 else 'negative'} {side}"
            for v, side in ((w, "width"), (h, "height"))
            if v <= 0
        ]
        return f"bbox {shown} is a degenerate box, of {' and '.join(flat)}"
    height, width = size  # type: ignore[misc]  (no box is outside without a size)
    t = BORDER_TOLERANCE
    beyond = [
        text
        for bad, text in (
            (x < -t, f"x = {_num(x)} < 0"),
            (y < -t, f"y = {_num(y)} < 0"),
            (x + w > width + t, f"x + width = {_num(x + w)} > {width}"),
            (y + h > height + t, f"y + height = {_num(y + h)} > {height}"),
        )
        if bad
    ]
    return (
        f"bbox {shown} reaches outside the {width} x {height} (W x H) image ({', '.join(beyond)})"
    )


def _case_twins(names: Sequence[str], known: Sequence[str]) -> str:
    """`` ('Box' differs from 'box' only in case, spaces or dashes)`` for each of ``names``
    that matches one of ``known`` but for its spelling (empty if none)."""
    twins = [(n, spelled_alike(n, known)) for n in names]
    shown = [f"{n!r} differs from {k!r}" for n, k in twins if k is not None]
    return f" ({'; '.join(shown)} only in case, spaces or dashes)" if shown else ""


def _listed_twice(images: list[dict[str, Any]], files: list[Path]) -> list[Problem]:
    """Image files that a COCO json lists under several ids (one Problem per file)."""
    ids: dict[Path, list[Any]] = {}
    for im, file in zip(images, files, strict=True):
        ids.setdefault(file, []).append(im["id"])
    return [
        Problem(
            "image files listed under several ids",
            str(file),
            f"ids {', '.join(_shown(i) for i in shared)}",
            "List each file once in 'images' and give its boxes that one image_id: a copy "
            "without them trains its objects as background, and in a test set every detection "
            "on a copy is scored against the other's boxes.",
        )
        for file, shared in ids.items()
        if len(shared) > 1
    ]


class CocoDetection(DetectionDataset):
    """Images and a COCO-style json (``images``, ``annotations`` with ``bbox`` = x y w h,
    ``categories``).

    Class ids follow category names: a name is one class, however the json numbers its
    category. Two categories of one name are an error.

    Args:
        images: the image folder (``file_name`` is relative to it).
        annotations: the json file.
        classes: category names to use, in class-id order (default: every category, sorted
            by category id); annotations of other categories are left out.
        labelled: give targets; False for unlabelled target training.
        flip: random horizontal flips (training).
        skip_crowd: leave out ``iscrowd`` annotations.
        ignore_crowd: keep them, flagged ``iscrowd`` so that evaluation ignores them (COCO's
            protocol; for test sets, where it takes precedence over ``skip_crowd``).
        apply_exif_orientation: turn images as their EXIF orientation says (see
            ``DetectionDataset``); the json's ``width`` / ``height`` are checked against
            the turned image by ``preflight()``.
        source_classes: the class names of the source, in class-id order, for a test (or
            other) split (``mic-train`` passes it). With ``classes`` None its categories map
            to them by name, whatever ids and order the json gives them, and a category the
            source lacks is an error; either way a source class without a category here is
            fine (a test json written with the categories its objects have).

    Raises:
        DatasetError: a json that cannot be read; categories sharing a name, or (with
            ``source_classes``) named otherwise than the source's classes; annotations of
            unknown images or categories; boxes the detector cannot train on, or boxes that
            look normalised to [0, 1] (all of them; inside ``collecting_problems()`` kept
            for ``preflight()``).
    """

    def __init__(
        self,
        images: str | Path,
        annotations: str | Path,
        classes: Sequence[str] | None = None,
        labelled: bool = True,
        flip: bool = False,
        skip_crowd: bool = True,
        ignore_crowd: bool = False,
        apply_exif_orientation: bool = True,
        source_classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__(labelled, flip, apply_exif_orientation)
        self.root = check_folder(images, "image")
        path = Path(annotations)
        self.annotation_file = path
        try:
            data = json.loads(_read_text(path, "annotation file"))
        except json.JSONDecodeError as e:
            raise DatasetError(f"annotation file '{path}' is not valid json ({e})") from e
        if not isinstance(data, dict) or not data.get("images"):
            raise DatasetError(
                f"annotation file '{path}' lists no images (a COCO json needs 'images', "
                "'annotations' and 'categories')"
            )
        _check_coco_lists(data, path)
        names = _category_names(data.get("categories"), path)
        ids = [a.get("category_id") for a in data.get("annotations") or []]
        used = {i for i in ids if isinstance(i, (int, float, str))}  # (others: named below)
        boxed = [name for i, name in names.items() if i in used]  # categories with a box
        self.classes = self._pick_classes(names, classes, source_classes, path, boxed)
        index = {name: i for i, name in enumerate(self.classes)}
        try:
            images = sorted(data["images"], key=lambda im: im["id"])
        except TypeError:  # numbers and strings mixed: their order is the file's
            images = list(data["images"])
        ids = [im["id"] for im in images]
        twice = [a for a, b in itertools.pairwise(ids) if a == b]
        if twice:
            shared = [im.get("file_name") for im in images if im["id"] == twice[0]]
            raise DatasetError(
                f"annotation file '{path}' gives several images the same id: id "
                f"{_shown(twice[0])} is that of {shared}. Give every image its own id "
                "(an annotation's image_id says which image its box belongs to)"
            )
        self.files = [self.root / _posix_name(self.root, im["file_name"]) for im in images]
        sizes = {im["id"]: (im.get("height"), im.get("width")) for im in images}
        boxes: dict[Any, list[list[float]]] = {im["id"]: [] for im in images}
        labels: dict[Any, list[int]] = {im["id"]: [] for im in images}
        crowds: dict[Any, list[int]] = {im["id"]: [] for im in images}
        written: dict[Any, list[tuple[Any, Any]]] = {im["id"]: [] for im in images}
        #: ``iscrowd`` annotations left out (``skip_crowd``)
        self.crowd_skipped = 0
        problems: list[Problem] = []
        left_out: dict[str, int] = {}  # annotations of categories outside ``classes``
        for ann in data.get("annotations") or []:
            where = f"annotation {_shown(ann.get('id'))}"
            image_id, category_id = ann.get("image_id"), ann.get("category_id")
            if image_id not in boxes:
                problems.append(
                    Problem(
                        "annotations whose image_id is the id of none of the json's images",
                        str(path),
                        f"{where}: image_id {_shown(image_id)}{_id_hint(image_id, boxes)}",
                        "Give each annotation the id of its image (the images' ids are their "
                        "'id' fields), or remove it.",
                    )
                )
                continue
            if category_id not in names:
                problems.append(
                    Problem(
                        "annotations whose category_id is the id of none of the json's categories",
                        str(path),
                        f"{where}: category_id {_shown(category_id)}, the categories' ids "
                        f"being {sorted(names, key=str)}{_id_hint(category_id, names)}",
                        "Give each annotation the id of its category (add the category to "
                        "'categories' if it is missing), or remove it.",
                    )
                )
                continue
            crowd = ann.get("iscrowd") or 0  # (missing, null, false: a box of its own)
            if crowd not in (0, 1) and self.labelled:  # (True and 1.0 are 1)
                problems.append(  # ("0", written as text, is true to Python: a crowd)
                    Problem(
                        "annotations whose iscrowd is not 0 or 1",
                        str(path),
                        f"{where}: iscrowd {_shown(crowd)}",
                        "Write iscrowd as the number 0 (one object) or 1 (a crowd region), "
                        "as COCO does.",
                    )
                )
                continue
            crowd = int(crowd in (1, True))
            if crowd and skip_crowd and not ignore_crowd:
                self.crowd_skipped += 1
                continue
            name = names[category_id]
            if name not in index:
                left_out[name] = left_out.get(name, 0) + 1
                continue
            written[image_id].append((ann.get("id"), ann.get("bbox")))
            if not _numbers(ann.get("bbox")):
                continue  # reported by box_problem; no box to make
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[image_id].append([x, y, x + w, y + h])
            labels[image_id].append(index[name])
            crowds[image_id].append(crowd)
        self.written = [written[im["id"]] for im in images]
        self.targets, self.stated_sizes = [], []
        for im in images:
            flags = crowds[im["id"]] if ignore_crowd else None
            self.targets.append(make_target(boxes[im["id"]], labels[im["id"]], flags))
            self.stated_sizes.append(_stated_size(*sizes[im["id"]]))
        if left_out and self.labelled:  # as asked, but said: a class list's typo drops a class
            said = ", ".join(f"{n} ({k})" for n, k in sorted(left_out.items()))
            problems.append(
                Problem(
                    "annotation files with categories outside the class list, left out",
                    str(path),
                    f"{(n := sum(left_out.values()))} annotation{'s' * (n != 1)} of {said}",
                    "The class list ({reader}.classes) leaves them out; to train on them, add "
                    "their names to it.",
                    warning=True,
                )
            )
        problems += self._normalised(path)
        problems += _listed_twice(images, self.files)
        if len(self.files) > 1 and not any(f.exists() for f in self.files):  # (stops early)
            problems.append(
                Problem(
                    "annotation files none of whose images is in the image folder",
                    str(path),
                    f"none of its {len(self.files)} images (e.g. '{images[0]['file_name']}') "
                    f"is in '{self.root}'",
                    "Is it the right image folder, or the annotation file of another split "
                    "(train, val, test)? Give the folder its file names are relative to.",
                )
            )
        self._check_boxes(problems)
        self.found_problems = keep_or_raise(problems, type(self).__name__)

    def _pick_classes(
        self,
        names: dict[Any, str],
        classes: Sequence[str] | None,
        source_classes: Sequence[str] | None,
        path: Path,
        boxed: Sequence[str] = (),
    ) -> list[str]:
        """The class names in class-id order: ``classes``, else the source's (every category
        with a box, ``boxed``, named among them: a category listed without one is left out, as
        a split's json may list them all), else every category by id."""
        have = list(names.values())
        if classes is None and source_classes is not None:
            chosen = _distinct(source_classes, "the source's classes")
            extra = [n for n in have if n not in chosen and n in boxed]
            if extra and self.labelled:
                shared = [n for n in chosen if n in have]
                subset = (
                    ", or train and test on the classes both have with "
                    f"dataset.classes=[{','.join(shared)}] (annotations of other categories "
                    "are then left out)"
                    if shared
                    else " (the two share no category name)"
                )
                raise DatasetError(
                    f"annotation file '{path}' has categories {extra} that the source does not "
                    f"have (the source's classes: {chosen}){_case_twins(extra, chosen)}: class "
                    "ids follow the source's category names, so a category here must carry "
                    "the name of the source's category for the same class. Rename it or drop "
                    f"it with its annotations{subset}"
                )
            return chosen
        if classes is None:
            return have
        chosen = _distinct(classes, "the classes")
        unknown = [c for c in chosen if c not in have]
        if source_classes is not None:  # a split of a source that has them: a test json may
            unknown = [c for c in unknown if c not in source_classes]  # lack a category
        if unknown:
            near = did_you_mean(unknown[0], have, 3)  # (a typo of one: dgo for dog)
            raise DatasetError(
                f"classes {unknown} are not categories of '{path}'; it has {have} "
                f"(dataset.classes=[...] names categories of the source and test jsons).{near}"
            )
        return chosen

    def _normalised(self, path: Path) -> list[Problem]:
        """A problem when every box lies within [0, 1] x [0, 1] in images larger than
        ``NORMALISED_UP_TO`` pixels: boxes normalised to the image size, not COCO's pixels."""
        used = [i for i, t in enumerate(self.targets) if len(t["boxes"])]
        if not used:
            return []
        boxes = np.concatenate([self.targets[i]["boxes"].numpy() for i in used])
        boxes = boxes[np.isfinite(boxes).all(1)]  # a NaN box is a problem of its own
        if not len(boxes) or boxes.min() < 0 or boxes.max() > 1:
            return []
        sizes = {i: self.stated_sizes[i] for i in used}
        if any(s is not None and min(s) <= NORMALISED_UP_TO for s in sizes.values()):
            return []
        known = next((i for i, s in sizes.items() if s is not None), None)
        on = "its images"
        if known is not None:
            h, w = sizes[known]  # type: ignore[misc]
            on = f"images such as '{self.files[known].name}' of {w} x {h} pixels"
        return [
            Problem(
                "annotation files whose boxes look normalised to [0, 1]",
                str(path),
                f"all its {len(boxes)} boxes lie within [0, 1] x [0, 1], on {on}",
                "COCO boxes are [x, y, width, height] in pixels: multiply x and width by the "
                "image's width, y and height by its height (boxes as fractions of the image "
                "size, as YOLO writes them, are not COCO's).",
            )
        ]

    def box_problem(self, index: int, size: tuple[int, int] | None) -> Problem | None:
        """The first bad bbox of image ``index`` as its json writes it (see
        ``DetectionDataset.box_problem``), and how many more it has."""
        errors = _coco_box_errors(self.written[index], size)
        if not errors:
            return super().box_problem(index, size)
        ann_id, error = errors[0]
        more = f"; and {len(errors) - 1} more of its annotations" if len(errors) > 1 else ""
        detail = f"annotation {ann_id} in '{self.annotation_file.name}': {error}{more}"
        return _annotation_problem(self.files[index], detail, COCO_BOX_FIX)


def _numbers(bbox: Any) -> bool:
    try:
        return len([float(v) for v in bbox]) == 4
    except (TypeError, ValueError):
        return False


def _id_hint(value: Any, ids: Any) -> str:
    """Advice when ``value`` is a listed id written as a string (or the other way round)."""
    same = [i for i in ids if str(i) == str(value) and i != value]
    if not same:
        return ""
    return f": the listed id is {_shown(same[0])}; write the reference the same way"


def _check_coco_lists(data: dict[str, Any], path: Path) -> None:
    """Refuse a COCO json whose ``images`` or ``annotations`` are not what COCO writes: a
    list of objects, each image with an ``id`` (a number or a string) and a ``file_name``
    (a string), each annotation an object (its fields are checked where it is read).

    Raises:
        DatasetError: naming the file, the list, the entry's position and what it lacks.
    """
    for key in ("images", "annotations"):
        entries = data.get(key)
        if key == "annotations" and entries is None:
            continue
        if not isinstance(entries, list):
            raise DatasetError(
                f"annotation file '{path}' gives '{key}' as {type(entries).__name__}; COCO "
                f'lists them: "{key}": [{{...}}, ...]'
            )
        for i, entry in enumerate(entries):
            lacks = None
            if not isinstance(entry, dict):
                lacks = f"is {entry!r}, not an object"
            elif key == "images" and (
                not isinstance(entry.get("id"), (int, str)) or isinstance(entry["id"], bool)
            ):
                lacks = (
                    f"has no 'id' (a number or a string): {entry!r}"
                    if entry.get("id") is None
                    else f"has an 'id' of {entry['id']!r}, where COCO's are whole numbers (or "
                    f"strings): write them as such (0, not 0.0, as a table export may): {entry!r}"
                )
            elif key == "images" and not isinstance(entry.get("file_name"), str):
                lacks = f"has no 'file_name' (the image's path in the image folder): {entry!r}"
            if lacks:
                raise DatasetError(f"annotation file '{path}': entry {i} of '{key}' {lacks}"[:600])


def _posix_name(root: Path, name: str) -> str:
    """A ``file_name`` written on Windows (``sub\\a.png``) with '/' where no file of that
    very name exists (a name with a backslash in it is legal on Linux, but rare)."""
    if "\\" in name and os.sep == "/" and not (root / name).exists():
        return name.replace("\\", "/")
    return name


def _category_names(categories: Any, path: Path) -> dict[Any, str]:
    """Category id -> name, sorted by id.

    Raises:
        DatasetError: no categories, one without ``id`` or ``name``, or two of one name.
    """
    if not categories or not isinstance(categories, list):
        raise DatasetError(f"annotation file '{path}' has no 'categories'")
    for c in categories:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DatasetError(
                f"annotation file '{path}' has a category {c!r} without 'id' and 'name'; "
                "every category needs both"
            )
    try:
        ordered = sorted(categories, key=lambda c: c["id"])
    except TypeError:  # numbers and strings mixed: their order is the file's
        ordered = list(categories)
    names = {c["id"]: str(c["name"]) for c in ordered}
    ids: dict[str, list[Any]] = {}
    for i, name in names.items():
        ids.setdefault(name, []).append(i)
    shared = {name: i for name, i in ids.items() if len(i) > 1}
    if shared:
        listing = "; ".join(
            f"'{name}' (ids {', '.join(str(i) for i in same)})" for name, same in shared.items()
        )
        raise DatasetError(
            f"annotation file '{path}' has several categories of one name: {listing}. Class ids "
            "follow category names, so a name must be one category: give their annotations one "
            "category_id and drop the other categories, or rename them apart"
        )
    return names


# ------------------------------------------------------------------------------------- VOC
class UnknownClassError(DatasetError):
    """An annotation's object of a class not in the reader's class list (``name``)."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


def parse_voc_xml(
    path: Path,
    classes: Sequence[str],
    keep_difficult: bool = False,
    ignore_difficult: bool = False,
    counts: dict[str, int] | None = None,
    skip_unlisted: bool = False,
) -> tuple[Target, tuple[int, int] | None]:
    """The target of one Pascal VOC annotation file and the image size it states. Difficult
    objects are left out (counted in ``counts["difficult_skipped"]`` when given), kept
    (``keep_difficult``) or kept flagged ``iscrowd`` so that evaluation ignores them
    (``ignore_difficult``, VOC's protocol). With ``skip_unlisted``, objects of classes not
    in ``classes`` are left out (counted in ``counts["unlisted:<name>"]``).

    Raises:
        UnknownClassError: an object of a class not in ``classes`` (not ``skip_unlisted``).
        DatasetError: a file that is no XML, an object without a box or of a non-numeric one,
            a ``<difficult>`` that is neither a number nor true / false.
    """
    try:
        root = ET.fromstring(_read_text(path, "annotation file"))
    except ET.ParseError as e:
        raise DatasetError(f"annotation file '{path}' is not valid XML ({e})") from e
    index = {c: i for i, c in enumerate(classes)}
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index and skip_unlisted:
            if counts is not None:
                counts[f"unlisted:{name}"] = counts.get(f"unlisted:{name}", 0) + 1
            continue
        if name not in index:
            raise UnknownClassError(
                f"annotation file '{path}' has an object of class '{name}', not in the class "
                f"list {list(classes)}",
                name,
            )
        hard = _voc_flag(obj.findtext("difficult"), path, name)
        if hard and not (keep_difficult or ignore_difficult):
            if counts is not None:
                counts["difficult_skipped"] = counts.get("difficult_skipped", 0) + 1
            continue
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"annotation file '{path}' has an object without <bndbox>")
        try:
            x1, y1, x2, y2 = (
                float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as e:
            raise DatasetError(f"annotation file '{path}' has a non-numeric box ({e})") from e
        boxes.append([x1 - 1, y1 - 1, x2, y2])  # VOC pixel indices are 1-based, inclusive
        labels.append(index[name])
        difficult.append(hard)
    size = root.find("size")
    hw = None if size is None else _stated_size(size.findtext("height"), size.findtext("width"))
    return make_target(boxes, labels, difficult if ignore_difficult else None), hw


def _voc_flag(text: str | None, path: Path, name: str) -> int:
    """A VOC ``<difficult>`` as 0 / 1: absent, a number (``1``, ``1.0``: set when not 0) or
    true / false (any case); tools write ``1.0`` as well as ``1``."""
    word = (text or "0").strip().lower()
    if word in ("true", "false"):
        return int(word == "true")
    try:
        return int(float(word) != 0)
    except ValueError:
        raise DatasetError(
            f"annotation file '{path}' has an object '{name}' whose <difficult> is {text!r}: "
            "give 0 or 1"
        ) from None


VOC_BOX_FIX = (
    "A VOC <bndbox> holds 1-based, inclusive pixel indices: xmin <= xmax within 1..width, "
    "ymin <= ymax within 1..height of the image (its <size>, else the file's); fix or drop "
    "these objects."
)


def _voc_box_error(target: Target, classes: Sequence[str], size: tuple[int, int] | None) -> str:
    """What is wrong with the boxes of one VOC target (``box_faults``), in the xml's terms
    (xmin ymin xmax ymax, 1-based): the first bad object and how many more; '' when none is."""
    faults = box_faults(target["boxes"], size)
    bad = [(i, kind) for kind, mask in faults.items() for i in mask.nonzero().flatten().tolist()]
    if not bad:
        return ""
    i, kind = min(bad)
    x1, y1, x2, y2 = target["boxes"][i].tolist()
    c = int(target["labels"][i])
    name = classes[c] if 0 <= c < len(classes) else str(c)
    shown = f"its object '{name}' has <bndbox> xmin {_num(x1 + 1)}, ymin {_num(y1 + 1)}, "
    shown += f"xmax {_num(x2)}, ymax {_num(y2)}"  # back to the xml's 1-based indices
    if kind == "non-finite":
        error = f"{shown}: a value is missing or not finite"
    elif kind == "degenerate":
        axis = "x" if x2 <= x1 else "y"
        error = f"{shown}, a degenerate box: {axis}max is below {axis}min"
    else:
        h, w = size  # type: ignore[misc]  (no box is outside without a size)
        error = f"{shown}, outside the {w} x {h} (W x H) image"
    return error + (f"; and {len(bad) - 1} more of its objects" if len(bad) > 1 else "")


class VOCDetection(DetectionDataset):
    """Pascal VOC layout: ``root/JPEGImages/<id>.jpg``, ``root/Annotations/<id>.xml`` and
    ``root/ImageSets/Main/<split>.txt`` (``root`` is e.g. ``VOCdevkit/VOC2007``). The split
    file lists ids without extension; an id written with an image extension
    (``000001.jpg``) is read without it, with a warning, when only that reading names an
    annotation file.

    Args:
        root: the VOC year folder.
        split: the image-set file name (``train``, ``val``, ``trainval``, ``test``).
        classes: class names in id order (default: the 20 VOC classes).
        keep_difficult: also train on objects marked difficult.
        labelled, flip, apply_exif_orientation: as for every reader (``DetectionDataset``).
        ignore_difficult: keep them flagged ``iscrowd``, so that evaluation ignores them
            (VOC's protocol; for test sets).
        source_classes: the class names of the source, used when ``classes`` is None (as
            ``mic-train`` passes them to a test split whose config names no classes): class
            ids follow them by name; an object of another class is an error.
        skip_unlisted: leave out the objects of classes not in ``classes`` (a subset of
            VOC's, as VOC -> Watercolor's six), with a warning that counts them; False: such
            an object is an error (a misspelt class list would drop a class).

    Raises:
        DatasetError: a missing split file; missing images, annotation files that cannot be
            read and boxes the detector cannot train on (all of them; inside
            ``collecting_problems()`` kept for ``preflight()``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        classes: Sequence[str] | None = None,
        keep_difficult: bool = False,
        labelled: bool = True,
        flip: bool = False,
        ignore_difficult: bool = False,
        apply_exif_orientation: bool = True,
        source_classes: Sequence[str] | None = None,
        skip_unlisted: bool = False,
    ) -> None:
        super().__init__(labelled, flip, apply_exif_orientation)
        self.root = check_folder(root, "VOC")
        chosen = classes if classes is not None else source_classes
        self.classes = _distinct(chosen, "the classes") if chosen is not None else VOC_CLASSES[:]
        split_file = (
            check_folder(self.root / "ImageSets" / "Main", "VOC split", root) / f"{split}.txt"
        )
        try:
            lines = _read_text(split_file, "split file").splitlines()
        except DatasetError as e:  # (missing or empty: the splits there named)
            stems = sorted(p.stem for p in split_file.parent.glob("*.txt") if "_" not in p.stem)
            splits = ", ".join(o for o in stems if o != split) or "no other split"
            said = str(e).replace("; re-export or remove it", " (it lists no image id)")
            raise DatasetError(
                f"{said} (the split files of ImageSets/Main: {splits}; choose the split with "
                "split=, in mic-train dataset.source_split or dataset.test_split)"
            ) from None
        problems = []
        ids, stripped = self._without_extensions(
            [line.split()[0] for line in lines if line.strip()], split_file
        )
        if stripped:
            problems.append(stripped)
        twice = [i for i, n in Counter(ids).items() if n > 1]
        if twice:  # (as a COCO image under several ids)
            problems.append(
                Problem(
                    "split files listing an image id more than once",
                    str(split_file),
                    f"{len(twice)} id{'s' * (len(twice) != 1)} listed twice or more, e.g. "
                    f"{', '.join(twice[:3])}",
                    "A copy trains its image twice as often (oversampling, if meant), and in a "
                    "test set scores every detection on it twice: list each id once there.",
                    warning=True,
                )
            )
        self.files = []
        self.annotation_files = []
        missing = set()
        for n, i in enumerate(ids):
            image = self.root / "JPEGImages" / f"{i}.jpg"
            if not image.exists():
                folder = self.root / "JPEGImages"
                matches = visible(sorted(folder.glob(f"{glob_escape(i)}.*")), folder)
                if not matches:
                    missing.add(n)
                    problems.append(
                        Problem(
                            "missing image files",
                            str(image),
                            f"listed in split '{split}'",
                            f"Check the dataset root and the split file '{split_file.name}' "
                            "(it lists ids without extension: 000001, not 000001.jpg).",
                        )
                    )
                image = matches[0] if matches else image
            self.files.append(image)
            self.annotation_files.append(self.root / "Annotations" / f"{i}.xml")
        self.missing = frozenset(missing)
        self.targets, self.stated_sizes = [], []
        self.ignore_difficult = ignore_difficult
        counts: dict[str, int] = {}
        unknown: list[tuple[Path, str]] = []
        for path in self.annotation_files:  # read and check every file now, naming each bad one
            try:
                target, size = parse_voc_xml(
                    path, self.classes, keep_difficult, ignore_difficult, counts, skip_unlisted
                )
            except UnknownClassError as e:
                unknown.append((path, e.name))
                target, size = make_target([], []), None
            except DatasetError as e:
                problems.append(Problem(UNREAD_ANNOTATIONS, str(path), str(e)))
                target, size = make_target([], []), None
            self.targets.append(target)
            self.stated_sizes.append(size)
        #: objects marked difficult and left out (neither keep_difficult nor ignore_difficult)
        self.difficult_skipped = counts.get("difficult_skipped", 0)
        names = list(dict.fromkeys(name for _, name in unknown))
        default = " (the default: VOC's 20 classes)" if classes is None else ""
        problems += [
            Problem(
                UNLISTED_CLASS,
                str(path),
                f"an object of class '{name}'",
                f"The class list{default} lacks {names}"
                f"{_case_twins(names, self.classes)}: give the reader the classes the "
                "annotations name, in index order ({reader}.classes=[...]; with dataset=det_voc "
                "dataset.classes=[...] and dataset.num_classes to match); to train on a subset "
                "of them, {reader}.skip_unlisted=true leaves the others out.",
            )
            for path, name in unknown
        ]
        unlisted = {k.split(":", 1)[1]: n for k, n in counts.items() if k.startswith("unlisted:")}
        if unlisted and labelled:  # as asked, but said: a class list's typo drops a class
            said = ", ".join(f"{name} ({n})" for name, n in sorted(unlisted.items()))
            problems.append(
                Problem(
                    "annotation files with objects of classes outside the class list, left out",
                    str(self.root / "Annotations"),
                    f"{(n := sum(unlisted.values()))} object{'s' * (n != 1)} of {said}"
                    f"{_case_twins(list(unlisted), self.classes)}",
                    "skip_unlisted leaves them out; to train on them, add their names to the "
                    "class list ({reader}.classes).",
                    warning=True,
                )
            )
        self._check_boxes(problems)
        self.found_problems = keep_or_raise(problems, type(self).__name__)

    def _without_extensions(self, ids: list[str], split_file: Path) -> tuple[list[str], Any]:
        """The ids, each written with an image extension read without it where only that
        reading has an annotation file; and a warning problem if any was."""
        folder = self.root / "Annotations"
        out, stripped = [], []
        for i in ids:
            stem, dot, ext = i.rpartition(".")
            if (
                dot
                and f".{ext.lower()}" in IMAGE_EXTENSIONS
                and not (folder / f"{i}.xml").exists()
                and (folder / f"{stem}.xml").exists()
            ):
                stripped.append(i)
                i = stem
            out.append(i)
        if not stripped:
            return out, None
        return out, Problem(
            "split files whose ids carry an image extension",
            str(split_file),
            f"{len(stripped)} of its {len(ids)} ids, such as '{stripped[0]}', read as "
            f"'{stripped[0].rpartition('.')[0]}'",
            "The ids in ImageSets/Main/<split>.txt are file names without extension (000001 "
            "for JPEGImages/000001.jpg and Annotations/000001.xml); remove the extensions.",
            warning=True,
        )

    def box_problem(self, index: int, size: tuple[int, int] | None) -> Problem | None:
        """The first bad box of image ``index`` in the xml's terms (see
        ``DetectionDataset.box_problem``), naming its annotation file."""
        path = self.annotation_files[index]
        error = _voc_box_error(self.targets[index], self.classes, size)
        if error:
            return _annotation_problem(path, error, VOC_BOX_FIX)
        try:
            check_target(
                self.targets[index], self.num_classes, size, "its boxes", warn_normalised=False
            )
        except DatasetError as e:
            return _annotation_problem(path, e)
        return None


# ------------------------------------------------------------------------------ Cityscapes
#: the kind of problem of an instance-id file that is not 16-bit, and its fix
INSTANCE_MODE = "instance annotations that are not 16-bit"
INSTANCE_FIX = (
    "gtFine's *_instanceIds.png hold class id x 1000 + instance, 16-bit; an 8-bit or colour "
    "file cannot (is it a labelIds or colour file renamed?). Replace them with the gtFine "
    "instanceIds files."
)


@lru_cache(maxsize=4096)
def _instance_boxes(path: str, min_pixels: int) -> tuple[tuple[float, ...], ...]:
    """(x1, y1, x2, y2, class) of each instance of the 8 classes with at least ``min_pixels``
    pixels, from one pass over the instance-id image (not one pass per instance).

    Raises:
        DatasetError: an unreadable file, or one that is not 16-bit (the data check's
            ``INSTANCE_MODE``; read as ids, such a file gave no box, without a word).
    """
    from scipy.ndimage import find_objects

    stored = read_header(path, apply_exif_orientation=False).mode
    if not stored.startswith("I"):  # 16-bit (I;16) or 32-bit (I) integers
        raise DatasetError(f"instance annotation file '{path}' is {stored}: {INSTANCE_FIX}")
    ids = np.asarray(load_image(path, mode="I"), dtype=np.int64)
    instances = np.where(ids >= 1000, ids, 0)  # below 1000: a class without instances
    pixels = np.bincount(instances.ravel())
    extents = find_objects(instances)  # extents[i - 1]: the bounding slices of value i
    out = []
    for inst in np.flatnonzero(pixels[1000:]) + 1000:
        label = int(inst) // 1000
        if label not in CITYSCAPES_LABEL_IDS or pixels[inst] < min_pixels:
            continue
        ys, xs = extents[inst - 1]
        box = (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))
        out.append((*box, float(CITYSCAPES_LABEL_IDS.index(label))))
    return tuple(out)


#: kinds of problem after which a lazy reader's boxes are not read (their files are bad)
LABEL_FILE_KINDS = frozenset(
    {
        INSTANCE_MODE,
        "missing instance annotation files",
        "unreadable instance annotation files",
        "instance annotations whose size differs from their image",
    }
)


class CityscapesDetection(DetectionDataset):
    """Cityscapes for detection: boxes of the 8 instance classes (person, rider, car, truck,
    bus, train, motorcycle, bicycle) from the gtFine ``*_instanceIds.png`` files, one per
    instance (ids >= 1000); group regions (ids below 1000, e.g. 26: a group of cars) are left
    out, as Detectron's instance-only converter, whose jsons the published Cityscapes -> Foggy
    Cityscapes results read, leaves them out. Images from ``leftImg8bit`` (clear) or from
    Foggy Cityscapes' ``leftImg8bit_foggy`` at fog density ``beta``.

    Layout: ``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png``,
    ``root/gtFine/<split>/<city>/<name>_gtFine_instanceIds.png`` and, for fog,
    ``foggy_root/<split>/<city>/<name>_leftImg8bit_foggy_beta_<beta>.png`` (``foggy_root``
    defaults to ``root/leftImg8bit_foggy``).

    Args:
        root: the Cityscapes folder.
        split: ``train``, ``val`` or ``test`` (its labels are withheld: unlabelled only).
        foggy: read the foggy images.
        beta: the fog density (0.005, 0.01 or 0.02; published 0.02).
        foggy_root: where the foggy images are, if not under ``root``.
        min_pixels: instances with fewer pixels are left out (tiny fragments).
        labelled: give targets (needs gtFine); False: images only, no gtFine needed.
        flip: random horizontal flips (training).
    """

    classes = CITYSCAPES_CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        foggy: bool = False,
        beta: float = 0.02,
        foggy_root: str | Path | None = None,
        min_pixels: int = 10,
        labelled: bool = True,
        flip: bool = False,
    ) -> None:
        super().__init__(labelled, flip)
        self.root = check_folder(root, "Cityscapes")
        if split == "test" and labelled:
            raise DatasetError(CITYSCAPES_TEST_WITHHELD)
        self.min_pixels = int(min_pixels)
        if foggy:
            base = Path(foggy_root) if foggy_root is not None else self.root / "leftImg8bit_foggy"
            try:
                folder = check_folder(base / split, "Foggy Cityscapes image", self.root)
            except DatasetError as e:
                here = (self.root / "leftImg8bit").is_dir()  # (the root is right; fog is not there)
                if foggy_root is not None or (self.root / "leftImg8bit_foggy").exists() or not here:
                    raise
                raise DatasetError(  # (a download of its own, often unpacked elsewhere)
                    f"{e}; Foggy Cityscapes (leftImg8bit_foggy) is a download of its own: where "
                    "it is not under the Cityscapes root, give its folder as foggy_root "
                    "(mic-train: dataset.foggy_root=<folder that holds train/ and val/>)"
                ) from None
            with contextlib.suppress(TypeError, ValueError):  # also "0.02" from a YAML file
                beta = float(beta)
            suffix = f"_leftImg8bit_foggy_beta_{beta}.png"
            if beta not in (0.005, 0.01, 0.02):
                raise DatasetError(
                    f"Foggy Cityscapes comes at beta 0.005, 0.01 and 0.02, got beta={beta!r}"
                )
        else:
            folder = check_folder(self.root / "leftImg8bit" / split, "Cityscapes image", self.root)
            suffix = "_leftImg8bit.png"
        self.files = visible(sorted(folder.glob(f"*/*{suffix}")), folder)
        if not self.files:
            found = sorted(
                {p.name.rsplit("_beta_", 1)[-1][:-4] for p in folder.glob("*/*_beta_*.png")}
            )
            held = f" (it holds beta {', '.join(found)}: set beta, dataset.beta in mic-train)"
            raise DatasetError(
                f"no '*{suffix}' images found in the city folders of '{folder}'"
                + (held if foggy and found else "")
            )
        self.names = [(f.parent.name, f.name[: -len(suffix)]) for f in self.files]
        problems = self._without_fog(folder, split, suffix) if foggy else []
        if labelled:
            gt = check_folder(self.root / "gtFine" / split, "Cityscapes gtFine", self.root)
            self.instance_files = [
                gt / city / f"{name}_gtFine_instanceIds.png" for city, name in self.names
            ]
            problems += [
                Problem(
                    "missing instance annotation files",
                    str(p),
                    "no such file",
                    fix="Every image of a labelled set (source, test) needs its gtFine "
                    "instanceIds file: add the missing ones. Only a target training set may go "
                    "without labels (its reader's labelled=false).",
                )
                for p in self.instance_files
                if not p.exists()
            ]
        self.found_problems = keep_or_raise(problems, type(self).__name__)

    def _without_fog(self, folder: Path, split: str, suffix: str) -> list[Problem]:
        """Warnings for the Cityscapes images of ``split`` (where ``leftImg8bit`` is there)
        that have no foggy copy in ``folder``: the foggy set is read without them."""
        clear = self.root / "leftImg8bit" / split
        if not clear.is_dir():
            return []
        held = set(self.names)
        end = "_leftImg8bit.png"
        names = [
            (p.parent.name, p.name[: -len(end)])
            for p in visible(sorted(clear.glob(f"*/*{end}")), clear)
        ]
        return [
            Problem(
                "Cityscapes images without a foggy copy",
                str(folder / city / f"{name}{suffix}"),
                "not there",
                fix="The foggy set is read without them. Foggy Cityscapes holds a copy of every "
                "Cityscapes image at each fog density (beta): a partial download or unpacking "
                "leaves some out; complete it, unless the subset is meant.",
                warning=True,
            )
            for city, name in names
            if (city, name) not in held
        ]

    def check_labels(self, index: int, header: Any) -> list[Problem]:
        """The instance-id file present and of its image's size."""
        if not self.labelled:
            return []
        path = self.instance_files[index]
        if not path.exists():  # reported with the missing files
            return []
        try:
            label = read_header(path, apply_exif_orientation=False)
        except DatasetError as e:
            return [header_problem(path, e, "instance annotation")]
        if not label.mode.startswith("I"):  # 16-bit (I;16) or 32-bit (I) integers
            return [
                Problem(
                    INSTANCE_MODE,
                    str(path),
                    f"{label.mode}, not 16-bit",
                    INSTANCE_FIX,
                )
            ]
        if label.size == header.size:
            return []
        return [
            Problem(
                "instance annotations whose size differs from their image",
                str(path),
                f"{label.width} x {label.height}, its image {header.width} x {header.height}",
                "Replace them with the gtFine files of these images.",
            )
        ]

    def target(self, index: int) -> Target:
        rows = _instance_boxes(str(self.instance_files[index]), self.min_pixels)
        return make_target([r[:4] for r in rows], [int(r[4]) for r in rows])
