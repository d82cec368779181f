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

import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from functools import lru_cache
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from mic.core.errors import DatasetError
from mic.datasets.detection.targets import check_target, make_target
from mic.datasets.files import check_folder, load_image, read_header, read_text, visible
from mic.datasets.preflight import Problem, check_image, header_problem, keep_or_raise, progress

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
        check_target(
            target, self.num_classes, (image.shape[-2], image.shape[-1]), f"'{self.files[index]}'"
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
            header = check_image(path, problems, self.apply_exif_orientation)
            if header is None:
                continue
            size = (header.height, header.width)
            if stated is not None and stated[i] is not None and stated[i] != size:
                problems.append(self._size_problem(path, stated[i], header))  # type: ignore[arg-type]
            elif eager:
                try:
                    check_target(self.targets[i], self.num_classes, size, f"'{path}'")
                except DatasetError as e:
                    problems.append(Problem("images with boxes outside them", str(path), str(e)))
            problems += self.check_labels(i, header)
        if training and eager:
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
                        str(getattr(self, "root", "")),
                        f"class {names}",
                        "A model cannot learn them from the source; if that is not meant, "
                        "check the annotations and the class list.",
                        warning=True,
                    )
                )
        return problems

    def check_labels(self, index: int, header: Any) -> list[Problem]:
        """Problems of the annotation files of image ``index`` (header: the image's)."""
        return []

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


def _annotation_problem(file: Path, error: DatasetError) -> Problem:
    return Problem("images with annotations the detector cannot train on", str(file), str(error))


# ------------------------------------------------------------------------------------ COCO
class CocoDetection(DetectionDataset):
    """Images and a COCO-style json (``images``, ``annotations`` with ``bbox`` = x y w h,
    ``categories``).

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

    Raises:
        DatasetError: a json that cannot be read, or boxes the detector cannot train on (all
            of them; inside ``collecting_problems()`` kept for ``preflight()``).
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
    ) -> None:
        super().__init__(labelled, flip, apply_exif_orientation)
        self.root = check_folder(images, "image")
        path = Path(annotations)
        try:
            data = json.loads(_read_text(path, "annotation file"))
        except json.JSONDecodeError as e:
            raise DatasetError(f"annotation file '{path}' is not valid json ({e})") from e
        if not isinstance(data, dict) or not data.get("images"):
            raise DatasetError(
                f"annotation file '{path}' lists no images (a COCO json needs 'images', "
                "'annotations' and 'categories')"
            )
        categories = sorted(data.get("categories") or [], key=lambda c: c["id"])
        if not categories:
            raise DatasetError(f"annotation file '{path}' has no 'categories'")
        names = {c["id"]: c["name"] for c in categories}
        self.classes = list(classes) if classes is not None else [c["name"] for c in categories]
        unknown = sorted(set(self.classes) - set(names.values()))
        if unknown:
            raise DatasetError(
                f"classes {unknown} are not categories of '{path}'; it has {sorted(names.values())}"
            )
        index = {name: i for i, name in enumerate(self.classes)}
        images = sorted(data["images"], key=lambda im: im["id"])
        self.files = [self.root / im["file_name"] for im in images]
        sizes = {im["id"]: (im.get("height"), im.get("width")) for im in images}
        boxes: dict[int, list[list[float]]] = {im["id"]: [] for im in images}
        labels: dict[int, list[int]] = {im["id"]: [] for im in images}
        crowds: dict[int, list[int]] = {im["id"]: [] for im in images}
        for ann in data.get("annotations") or []:
            where = f"annotation {ann.get('id')} of '{path}'"
            if ann.get("image_id") not in boxes:
                raise DatasetError(f"{where} refers to image id {ann.get('image_id')}, not listed")
            if ann.get("category_id") not in names:
                raise DatasetError(
                    f"{where} has category_id {ann.get('category_id')}, not among the "
                    f"categories {sorted(names)}"
                )
            crowd = int(bool(ann.get("iscrowd")))
            if crowd and skip_crowd and not ignore_crowd:
                continue
            name = names[ann["category_id"]]
            if name not in index:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[ann["image_id"]].append([x, y, x + w, y + h])
            labels[ann["image_id"]].append(index[name])
            crowds[ann["image_id"]].append(crowd)
        self.targets, self.stated_sizes, problems = [], [], []
        for im, file in zip(images, self.files):
            flags = crowds[im["id"]] if ignore_crowd else None
            target = make_target(boxes[im["id"]], labels[im["id"]], flags)
            size = _stated_size(*sizes[im["id"]])
            try:
                check_target(target, self.num_classes, size, f"its annotation in '{path.name}'")
            except DatasetError as e:
                problems.append(_annotation_problem(file, e))
            self.targets.append(target)
            self.stated_sizes.append(size)
        self.found_problems = keep_or_raise(problems, type(self).__name__)


# ------------------------------------------------------------------------------------- VOC
def parse_voc_xml(
    path: Path, classes: Sequence[str], keep_difficult: bool = False, ignore_difficult: bool = False
) -> tuple[Target, tuple[int, int] | None]:
    """The target of one Pascal VOC annotation file and the image size it states. Difficult
    objects are left out, kept (``keep_difficult``) or kept flagged ``iscrowd`` so that
    evaluation ignores them (``ignore_difficult``, VOC's protocol)."""
    try:
        root = ET.fromstring(_read_text(path, "annotation file"))
    except ET.ParseError as e:
        raise DatasetError(f"annotation file '{path}' is not valid XML ({e})") from e
    index = {c: i for i, c in enumerate(classes)}
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise DatasetError(
                f"annotation file '{path}' has an object of class '{name}', not in the class "
                f"list {list(classes)}"
            )
        hard = int((obj.findtext("difficult") or "0").strip() == "1")
        if hard and not (keep_difficult or ignore_difficult):
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


class VOCDetection(DetectionDataset):
    """Pascal VOC layout: ``root/JPEGImages/<id>.jpg``, ``root/Annotations/<id>.xml`` and
    ``root/ImageSets/Main/<split>.txt`` (``root`` is e.g. ``VOCdevkit/VOC2007``).

    Args:
        root: the VOC year folder.
        split: the image-set file name (``train``, ``val``, ``trainval``, ``test``).
        classes: class names in id order (default: the 20 VOC classes).
        keep_difficult: also train on objects marked difficult.
        ignore_difficult: keep them flagged ``iscrowd``, so that evaluation ignores them
            (VOC's protocol; for test sets).
        labelled, flip, apply_exif_orientation: as for every reader (``DetectionDataset``).

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
    ) -> None:
        super().__init__(labelled, flip, apply_exif_orientation)
        self.root = check_folder(root, "VOC")
        self.classes = list(classes) if classes is not None else list(VOC_CLASSES)
        ids = [
            line.split()[0]
            for line in _read_text(
                self.root / "ImageSets" / "Main" / f"{split}.txt", "split file"
            ).splitlines()
            if line.strip()
        ]
        self.files = []
        annotations = []
        problems = []
        for i in ids:
            image = self.root / "JPEGImages" / f"{i}.jpg"
            if not image.exists():
                folder = self.root / "JPEGImages"
                matches = visible(sorted(folder.glob(f"{glob_escape(i)}.*")), folder)
                if not matches:
                    problems.append(
                        Problem(
                            "missing image files",
                            str(image),
                            f"listed in split '{split}'",
                            "Check the dataset root and the split file.",
                        )
                    )
                image = matches[0] if matches else image
            self.files.append(image)
            annotations.append(self.root / "Annotations" / f"{i}.xml")
        self.targets, self.stated_sizes = [], []
        for path in annotations:  # read and check every file now, naming each bad one
            try:
                target, size = parse_voc_xml(path, self.classes, keep_difficult, ignore_difficult)
            except DatasetError as e:
                problems.append(Problem("annotation files that cannot be read", str(path), str(e)))
                target, size = make_target([], []), None
            try:
                check_target(target, self.num_classes, size, "its boxes")
            except DatasetError as e:
                problems.append(_annotation_problem(path, e))
            self.targets.append(target)
            self.stated_sizes.append(size)
        self.found_problems = keep_or_raise(problems, type(self).__name__)


# ------------------------------------------------------------------------------ Cityscapes
@lru_cache(maxsize=4096)
def _instance_boxes(path: str, min_pixels: int) -> tuple[tuple[float, ...], ...]:
    """(x1, y1, x2, y2, class) of each instance of the 8 classes with at least ``min_pixels``
    pixels, from one pass over the instance-id image (not one pass per instance)."""
    from scipy.ndimage import find_objects

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


class CityscapesDetection(DetectionDataset):
    """Cityscapes for detection: boxes of the 8 instance classes (person, rider, car, truck,
    bus, train, motorcycle, bicycle) from the gtFine ``*_instanceIds.png`` files; images from
    ``leftImg8bit`` (clear) or from Foggy Cityscapes' ``leftImg8bit_foggy`` at fog density
    ``beta``.

    Layout: ``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png``,
    ``root/gtFine/<split>/<city>/<name>_gtFine_instanceIds.png`` and, for fog,
    ``foggy_root/<split>/<city>/<name>_leftImg8bit_foggy_beta_<beta>.png`` (``foggy_root``
    defaults to ``root/leftImg8bit_foggy``).

    Args:
        root: the Cityscapes folder.
        split: ``train``, ``val`` or ``test``.
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
        self.min_pixels = int(min_pixels)
        if foggy:
            base = Path(foggy_root) if foggy_root is not None else self.root / "leftImg8bit_foggy"
            folder = check_folder(base / split, "Foggy Cityscapes image")
            suffix = f"_leftImg8bit_foggy_beta_{beta}.png"
            if beta not in (0.005, 0.01, 0.02):
                raise DatasetError(
                    f"Foggy Cityscapes comes at beta 0.005, 0.01 and 0.02, got beta={beta}"
                )
        else:
            folder = check_folder(self.root / "leftImg8bit" / split, "Cityscapes image")
            suffix = "_leftImg8bit.png"
        self.files = visible(sorted(folder.glob(f"*/*{suffix}")), folder)
        if not self.files:
            raise DatasetError(f"no '*{suffix}' images found in the city folders of '{folder}'")
        self.names = [(f.parent.name, f.name[: -len(suffix)]) for f in self.files]
        if labelled:
            gt = check_folder(self.root / "gtFine" / split, "Cityscapes gtFine")
            self.instance_files = [
                gt / city / f"{name}_gtFine_instanceIds.png" for city, name in self.names
            ]
            missing = [p for p in self.instance_files if not p.exists()]
            self.found_problems = keep_or_raise(
                [
                    Problem(
                        "missing instance annotation files",
                        str(p),
                        fix="Every image needs its gtFine instanceIds file (or set "
                        "{reader}.labelled=false for unlabelled target images).",
                    )
                    for p in missing
                ],
                type(self).__name__,
            )

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
