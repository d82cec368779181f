"""Readers of the segmentation datasets in their published on-disk layouts.

Each sample is ``transform(image, label)`` (labelled) or ``transform(image)`` (unlabelled),
with labels mapped to the 19 Cityscapes training ids (255 = ignored). Layouts (``root`` is
the folder the release unpacks into):

GTA5                   images/00001.png, labels/00001.png (palette PNGs of Cityscapes label
                       ids; or labels/00001_labelTrainIds.png after DAFormer's conversion)
SYNTHIA RAND-CITYSCAPES RGB/0000000.png, GT/LABELS/0000000.png (16-bit RGB, class id in red)
Cityscapes             leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png,
                       gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
                       (or _gtFine_labelTrainIds.png from cityscapesScripts)
ACDC                   rgb_anon/<condition>/<split>/<sequence>/<name>_rgb_anon.png,
                       gt/<condition>/<split>/<sequence>/<name>_gt_labelTrainIds.png
                       (also the flattened rgb_anon/<split>/... used by the published code)
Dark Zurich            rgb_anon/<split>/<condition>/<sequence>/<name>_rgb_anon.png,
                       gt/<split>/<condition>/<sequence>/<name>_gt_labelTrainIds.png
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Mapping, Sequence
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision.io import ImageReadMode, decode_png, read_file

from mic.core.errors import ConfigError, DatasetError
from mic.datasets.files import (
    CITYSCAPES_TEST_WITHHELD,
    UNREADABLE,
    ImageHeader,
    ReaderOptionError,
    check_folder,
    check_transform,
    is_hidden_name,
    is_image,
    list_images,
    load_image,
    path_order,
    read_header,
    root_hint,
    unreadable,
    visible,
)
from mic.datasets.preflight import (
    LABEL_SAMPLE,
    Problem,
    case_twin,
    check_image,
    class_presence,
    crop_problems,
    header_problem,
    keep_or_raise,
    orientation_problem,
    progress,
    sample_indices,
    scale_problems,
    unread_problems,
)
from mic.datasets.segmentation.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_IDS,
    CITYSCAPES_TRAIN_IDS,
    IGNORE_INDEX,
    SYNTHIA_IDS,
    LabelMap,
    default_class_names,
)
from mic.datasets.segmentation.transforms import SegmentationTransform

Transform = Callable[..., Any]


#: file endings of JPEG files, never read as labels (lossy: ids change along every edge)
JPEG_ENDINGS = (".jpg", ".jpeg", ".jpe", ".jfif")


def is_jpeg_name(name: str) -> bool:
    """Whether a file name ends as a JPEG file's does (any case)."""
    return name.lower().endswith(JPEG_ENDINGS)


#: why labels are never read from JPEG files, and how to mend them, for messages
JPEG_LABELS = (
    "JPEG is lossy (decoding changes the class ids along every edge between classes, to "
    "other ids that can look valid), so training and scores would use wrong labels"
)
FROM_MASKS = (
    "written from the original masks (not converted from the JPEG files, whose ids have "
    "already changed)"
)


#: modes of grey ids saved in colour: read when the colour channels are equal and any alpha
#: is opaque everywhere (image editors' exports)
GREY_IN_COLOUR = ("RGB", "RGBA", "LA")


def _grey_of_colour(pixels: np.ndarray, mode: str) -> np.ndarray | str:
    """The grey ids of H x W x C ``pixels`` of ``mode`` (``GREY_IN_COLOUR``), or why they are
    not ids: colour channels that differ, or transparent pixels."""
    channels = 1 if mode == "LA" else 3  # colour channels; a channel after them is alpha
    colour = pixels[..., :channels]
    alpha = pixels[..., channels] if pixels.shape[-1] > channels else None
    if alpha is not None and (alpha != 255).any():
        n = int((alpha != 255).sum())
        return (
            f"an {mode} image with {n} transparent pixel{'s' * (n != 1)} (transparency is not "
            "read as ignore: store ignored pixels as 255)"
        )
    first = colour[..., 0]
    if all(np.array_equal(first, colour[..., c]) for c in range(1, colour.shape[-1])):
        return np.ascontiguousarray(first)
    return f"an {mode} image whose three channels differ (a colour rendering of the labels?)"


#: label files saved in colour that the data check decodes (evenly spread; a colour one it
#: does not read is named where training reads it): 34 ms each at 2048 x 1024
COLOUR_SAMPLE = 1000


def _not_grey(path: str | Path) -> str | None:
    """Why a label file saved in colour holds no grey ids (None: it does)."""
    try:
        with Image.open(path) as img:
            grey = _grey_of_colour(np.asarray(img), img.mode)
    except (OSError, ValueError):
        return "its pixels cannot be decoded"
    return grey if isinstance(grey, str) else None


def read_label(path: Path) -> np.ndarray:
    """The ids stored in an 8-bit label PNG (palette indices for palette images; 0/1 for
    1-bit images; the grey value of an RGB, RGBA or LA image whose colour channels are equal
    and whose alpha is opaque everywhere: grey labels saved in colour).

    Raises:
        DatasetError: an unreadable file, a JPEG file (lossy: never a label), or a mode that
            does not hold one id per pixel (an RGB image whose channels differ, transparent
            pixels).
    """
    try:
        with Image.open(path) as img:
            if img.format == "JPEG" or is_jpeg_name(Path(path).name):
                raise DatasetError(
                    f"label file '{path}' is a JPEG file; {JPEG_LABELS}. Save the labels as PNG "
                    f"files, {FROM_MASKS}"
                )
            img.load()
            if img.mode == "1":  # 1-bit masks: Pillow gives booleans
                return np.asarray(img).astype(np.uint8)
            if img.mode in GREY_IN_COLOUR:
                grey = _grey_of_colour(np.asarray(img), img.mode)
                if not isinstance(grey, str):
                    return grey
                raise DatasetError(
                    f"label file '{path}' is {grey}; a label map must be a single-channel (grey "
                    "or palette) PNG of class ids"
                )
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise DatasetError(
                    f"label file '{path}' is a {img.mode} image; a label map must be a "
                    "single-channel (grey or palette) PNG of class ids"
                )
            return np.asarray(img)
    except UNREADABLE as e:
        if isinstance(e, DatasetError):
            raise
        if isinstance(e, Image.DecompressionBombError):
            raise unreadable(path, e, "label file") from e
        raise DatasetError(f"cannot read label file '{path}' ({e}); remove or replace it") from e


def read_png_unchanged(path: Path) -> np.ndarray:
    """The samples of a PNG at their stored depth: H x W (grey) or H x W x C (RGB(A) order),
    uint8 or uint16. Pillow truncates 16-bit colour PNGs (SYNTHIA's labels) to 8 bits;
    torchvision's libpng decoder keeps all 16."""
    try:
        samples = decode_png(read_file(str(path)), ImageReadMode.UNCHANGED)
    except RuntimeError as e:  # torchvision prefixes "<function>, <file>.cpp:<line>, "
        reason = re.sub(r"^.*?\.cpp:\d+, ", "", str(e))
        raise DatasetError(
            f"cannot read PNG file '{path}' ({reason}); remove or replace the file"
        ) from e
    array = samples.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def _path(path: str | Path) -> Path:
    return path if isinstance(path, Path) else Path(path)


class SegmentationDataset:
    """Pairs of image and label files (or images alone) with a label mapping.

    Args:
        samples: ``(image_file, label_file or None)`` pairs.
        label_map: maps stored ids to training ids.
        transform: a ``SegmentationTransform`` (or any callable of ``(image, label)``).
        labelled: return labels (False: images only, e.g. target training images).
        classes: the class names (training-id order).
        root: the dataset folder (rare-class statistics are cached there).
        label_size_mismatch: a label whose size differs from its image is an ``"error"``
            (naming both files), or is ``"resize"``d to the image with nearest neighbour
            (the remedy of the published pipelines, which resize image and label to one
            scale; a few GTA5 frames need it).
        label_formats: the other label formats of the reader: option (e.g.
            ``"label_format=labelIds"``) -> (the ending of this format's label file names,
            that format's: ``"_gtFine_labelTrainIds.png"``, ``"_gtFine_labelIds.png"``), so
            that missing label files name the option that reads the files that are there.
        apply_exif_orientation: turn each image as its EXIF orientation tag says (what image
            viewers show; photos from phones carry it); False: the stored pixels, for labels
            drawn on them. Labels are always read as stored.

    Raises:
        DatasetError: images without their label file (inside
            ``mic.datasets.preflight.collecting_problems()``: kept for ``preflight()``).
    """

    #: Pillow modes a label file may have (single channel: grey, palette, 16-bit)
    label_modes: tuple[str, ...] = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")
    #: the advice for label files of another mode than ``label_modes``
    mode_fix = (
        "A label file of this reader holds one class id per pixel; is it the right file (or a "
        "colour rendering of the labels)?"
    )
    #: classes the dataset is known to lack (no warning when they never occur)
    expected_absent: tuple[int, ...] = ()
    #: the reader takes ``label_mapping`` (stored value -> class), named in messages
    takes_label_mapping = False
    #: the argument that makes the reader read images alone, named in messages
    unlabelled_option = "labelled=false"
    #: for a reader of released ids: how to read converted training-id files instead; set,
    #: the data check refuses a set whose values are all training ids (0..C-1, 255) and
    #: mostly map to ignore
    converted_fix = ""

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path | None]],
        label_map: LabelMap = CITYSCAPES_TRAIN_IDS,
        transform: Transform | None = None,
        labelled: bool = True,
        classes: Sequence[str] = CITYSCAPES_CLASSES,
        root: str | Path | None = None,
        label_size_mismatch: str = "error",
        label_formats: Mapping[str, tuple[str, str]] | None = None,
        apply_exif_orientation: bool = True,
    ) -> None:
        if not samples:
            raise DatasetError("no images found" + (f" in '{root}'" if root else ""))
        if label_size_mismatch not in ("error", "resize"):
            raise ConfigError(
                f"label_size_mismatch must be 'error' or 'resize', got {label_size_mismatch!r}"
            )
        check_transform(transform, type(self).__name__)
        self.samples = [(_path(i), _path(lab) if lab is not None else None) for i, lab in samples]
        self.label_map = label_map
        self.transform = transform
        self.labelled = labelled
        self.classes = list(classes)
        self.root = Path(root) if root is not None else None
        self.ignore_index = IGNORE_INDEX
        self.label_size_mismatch = label_size_mismatch
        self.label_formats = dict(label_formats or {})
        self.apply_exif_orientation = apply_exif_orientation
        self.found_problems = keep_or_raise(self.missing_labels(), type(self).__name__)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def missing_labels(self) -> list[Problem]:
        """Images without their label file; the fix names the option that reads the label
        files that are there, when another format's are."""
        if not self.labelled:
            return []
        missing = [(i, lab) for i, lab in self.samples if lab is None or not lab.is_file()]
        if not missing:
            return []
        fix = plain = (
            "Every image of a labelled set (source, test) needs its label file: add the "
            "missing ones, or move their images out of the image folder. Only a target "
            f"training set may go without labels (its reader's {self.unlabelled_option})."
        )
        image, first = missing[0]
        cased = case_twin(first) if first is not None else None
        if cased is not None:
            fix = (
                f"'{cased}' is there: file names are read case-sensitively; rename the label "
                f"files to end in '{first.suffix}'."  # type: ignore[union-attr]
            )
        elif first is not None and 2 * len(missing) <= len(self.samples):
            # most labels are read as named: another format or suffix would miss them
            there = self.label_near_miss(first)
            if there is not None and there[0].startswith("label_format="):  # other ids
                fix = (
                    f"The other {len(self.samples) - len(missing)} label files are read as "
                    f"named; for '{first.name}' there is '{there[1].name}', a label file of "
                    f"another format ({there[0]}), whose ids differ: add the missing files in "
                    "this format (not by renaming those), or move their images out of the "
                    "image folder."
                )
            elif there is not None:  # another suffix of the same ids
                fix = (
                    f"The other {len(self.samples) - len(missing)} label files are read as "
                    f"named: name the missing ones alike (e.g. rename '{there[1]}' to "
                    f"'{first.name}'), or add them."
                )
            elif jpeg := _jpeg_beside(first, image):
                fix = (
                    f"The other {len(self.samples) - len(missing)} label files are read as "
                    f"named; '{jpeg}' is there, but JPEG files are never read as labels: "
                    f"{JPEG_LABELS}. Save the missing ones as PNG files named as the others, "
                    f"{FROM_MASKS}."
                )
        elif first is not None:
            jpeg = _jpeg_beside(first, image)
            swapped = jpeg is not None and _single_channel(image) and _colour(jpeg)
            fix = plain if swapped else self.near_miss_fix(image, first) or fix
            jpeg = None if fix != plain else jpeg
            if jpeg and swapped:  # label maps as the images, photos as the labels
                fix = (
                    f"The images read ('{image.name}' and the others in '{image.parent}') are "
                    f"single-channel, as label maps are, and the label folder holds JPEG "
                    f"photos ('{jpeg.name}'): the image and label folders look swapped; give "
                    "each the other's path."
                )
            elif jpeg:  # every label saved as JPEG
                fix = (
                    f"'{jpeg}' is there, but JPEG files are never read as labels: "
                    f"{JPEG_LABELS}. Save the labels as PNG files named '{first.name}' and "
                    f"alike, {FROM_MASKS}."
                )
        return [Problem("missing label files", str(lab), "", fix) for _, lab in missing]

    def near_miss_fix(self, image: Path, label: Path) -> str | None:
        """What to do about the missing ``label`` of ``image`` when files there suggest it
        (``{reader}`` standing for the reader's key), else None."""
        there = self.label_near_miss(label)
        if there is None:
            return None
        option, found = there
        return f"Files such as '{found}' are there: set {{reader}}.{option} to read them."

    def label_near_miss(self, label: Path) -> tuple[str, Path] | None:
        """``(option, file)``: the option that would read ``file``, a label of the same image
        in another format that exists where ``label`` does not."""
        for option, (ending, other) in self.label_formats.items():
            if not label.name.endswith(ending):
                continue
            candidate = label.with_name(label.name[: -len(ending)] + other)
            if candidate.is_file():
                return option, candidate
        return None

    def read_label_ids(self, path: Path) -> np.ndarray:
        """The ids stored in one label file (override for other encodings)."""
        return read_label(path)

    def load_label(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """The label of sample ``index`` in training ids, at full resolution; ``size``
        (width, height) is the image's, checked against the label's (or the label resized
        to it, with ``label_size_mismatch="resize"``)."""
        image_file, label_file = self.samples[index]
        label = self.label_map(self.read_label_ids(label_file), label_file)  # type: ignore[arg-type]
        if size is not None and (label.shape[1], label.shape[0]) != size:
            if self.label_size_mismatch == "resize":
                return np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
            try:
                header = read_header(image_file, self.apply_exif_orientation)
            except DatasetError:
                header = None
            label_size = (label.shape[1], label.shape[0])
            turned = header is not None and header.size == size
            fix = self.size_mismatch_fix(header, label_size) if turned else None
            fix = (fix or "").replace("{reader}.", f"the {type(self).__name__} reader's ")
            raise DatasetError(
                f"image '{image_file}' is {size[0]} x {size[1]} but its label '{label_file}' is "
                f"{label_size[0]} x {label_size[1]}; image and label must have one size"
                + (
                    f". {fix}"
                    if fix
                    else f" (or set label_size_mismatch=resize on the {type(self).__name__} "
                    "reader: the label is then resized to its image with nearest neighbour)"
                )
            )
        return label

    def size_mismatch_fix(
        self, image: ImageHeader | None, label_size: tuple[int, int]
    ) -> str | None:
        """What to do about a label of ``label_size`` (width, height) that is its image turned a
        quarter (width and height swapped), where resizing it would stretch it; else None.

        Args:
            image: the image's header, read with the reader's ``apply_exif_orientation``.
            label_size: the label's (width, height).
        """
        if image is None or image.width == image.height:
            return None
        stretch = (
            " (resizing it, label_size_mismatch=resize, would stretch it across the turned image)."
        )
        quarter = image.orientation in (5, 6, 7, 8)
        if quarter and self.apply_exif_orientation and label_size == image.stored_size:
            return (
                "Such a label has the size of its image's stored pixels: the image carries EXIF "
                f"orientation {image.orientation} (a quarter turn), which mic applies as image "
                "viewers do, and the label, drawn on the stored pixels, does not. To read the "
                "images as stored, set {reader}.apply_exif_orientation=false" + stretch
            )
        if quarter and not self.apply_exif_orientation and label_size == image.stored_size[::-1]:
            return (
                "Such a label fits its image upright, after the image's EXIF orientation "
                f"{image.orientation} (a quarter turn), which is not applied: set "
                "{reader}.apply_exif_orientation=true" + stretch
            )
        if label_size == (image.height, image.width):
            return (
                "Such a label is its image turned a quarter (width and height swapped), and the "
                "image carries no EXIF orientation that would explain it: turn the labels (or "
                "the images) to match" + stretch
            )
        return None

    def class_pixel_counts(self, index: int) -> np.ndarray:
        """Pixels of each class in sample ``index`` at full resolution (rare class sampling)."""
        label = self.load_label(index)
        counts = np.bincount(label.ravel(), minlength=256)
        return counts[: self.num_classes]

    def load(self, index: int) -> Any:
        """Sample ``index`` as read from disk, before ``transform``: the image, or the image
        and its label in training ids."""
        image_file, _ = self.samples[index]
        image = load_image(image_file, "RGB", self.apply_exif_orientation)
        return (image, self.load_label(index, image.size)) if self.labelled else image

    def __getitem__(self, index: int) -> Any:
        sample = self.load(index)
        if self.transform is None:
            return sample
        return self.transform(*sample) if self.labelled else self.transform(sample)

    def preflight(self, training: bool = True, label_sample: int = LABEL_SAMPLE) -> list[Problem]:
        """The data check before training (see ``mic.datasets.preflight``): images without
        labels; from the headers of every image and label file, that each is readable, of a
        usable mode (label files saved in colour decoded, up to ``COLOUR_SAMPLE`` evenly
        spread: grey ids saved so are read),
        and that image and label have one size; the values of ``label_sample``
        label files evenly spread over the set (ids outside the mapping; in a training set,
        fewer than two classes occurring, and, when every file was read, classes that never
        occur).

        Returns:
            The problems found, each naming its file.
        """
        problems = list(self.found_problems)
        missing = {p.file for p in problems}
        labels = self.labelled
        problems += unread_problems(getattr(self, "unread", []))
        problems += _shared_label_problems(self.samples)
        sizes = []
        plain: list[tuple[str, str]] = []  # labels of a wrong mode: (file, what it is)
        coloured: list[tuple[str, str]] = []  # saved in colour: grey ids in them are read
        for image_file, label_file in progress(self.samples, len(self), self._what()):
            image = check_image(image_file, problems, self.apply_exif_orientation)
            if image is not None:
                sizes.append((image.height, image.width))
            if not labels or label_file is None or str(label_file) in missing:
                continue
            if image is not None:
                turned = orientation_problem(
                    image_file, image, self.apply_exif_orientation, "label maps"
                )
                problems += [turned] if turned else []
            try:
                label = read_header(label_file, apply_exif_orientation=False)
            except DatasetError as e:
                problems.append(header_problem(label_file, e, "label"))
                continue
            if label.mode not in self.label_modes:  # (grey ids saved in colour: decoded below)
                wrong = (str(label_file), f"{label.mode}, not one of {', '.join(self.label_modes)}")
                (coloured if self._grey_rgb_readable(label.mode) else plain).append(wrong)
            mismatch = image is not None and label.size != image.size
            if mismatch and self.label_size_mismatch == "error":
                fix = self.size_mismatch_fix(image, label.size) or (
                    "To resize each such label to its image with nearest neighbour (the "
                    "published pipelines' remedy), set {reader}.label_size_mismatch=resize."
                )
                problems.append(
                    Problem(
                        "labels whose size differs from their image",
                        str(label_file),
                        f"{label.width} x {label.height}, its image '{image_file}' "
                        f"{image.width} x {image.height}" + self._orientation_note(image),  # type: ignore[union-attr]
                        fix if fix.endswith(".") else fix + ".",
                    )
                )
        decoded = [coloured[i] for i in sample_indices(len(coloured), COLOUR_SAMPLE)]
        wrong = plain + [(f, f"{what}: {why}") for f, what in decoded if (why := _not_grey(f))]
        problems += [Problem("label files of the wrong mode", *w, self.mode_fix) for w in wrong]
        if labels and label_sample > 0:
            problems += self._label_values(training, label_sample, {p.file for p in problems})
        self.checked_sizes = sizes
        where = str(getattr(self, "image_root", "") or (self.samples or [("", None)])[0][0])
        return (
            problems
            + crop_problems(self.transform, sizes, where)
            + scale_problems(self.transform, sizes, where)
        )

    def batched_sizes(self) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
        """The distinct ``((H, W) image, (H, W) label)`` sizes that the transform gives the
        samples, from the image headers that ``preflight`` read (samples of one size stack
        into a batch); None before ``preflight``, or with a transform of one's own."""
        sizes = getattr(self, "checked_sizes", None)
        if sizes is None or not isinstance(self.transform, SegmentationTransform):
            return None
        return sorted({self.transform.output_sizes(h, w) for h, w in sizes})

    def _orientation_note(self, image: ImageHeader) -> str:
        if self.apply_exif_orientation and image.orientation != 1:
            return f" after its EXIF orientation {image.orientation}"
        return ""

    def _grey_rgb_readable(self, mode: str) -> bool:
        """Whether labels of ``mode`` are read when their colour channels are equal and any
        alpha opaque (``read_label`` reads grey ids saved in colour)."""
        reads = type(self).read_label_ids is SegmentationDataset.read_label_ids
        return mode in GREY_IN_COLOUR and reads

    def label_folder(self) -> Path:
        """The folder of the label files, named in messages about them as a whole."""
        label_root = getattr(self, "label_root", None)
        return Path(label_root or self.root or self.samples[0][1].parent)  # type: ignore[union-attr]

    def _what(self) -> str:
        return f"{type(self).__name__} {'pairs' if self.labelled else 'images'}"

    def _label_values(self, training: bool, k: int, bad: set[str]) -> list[Problem]:
        """Ids outside the mapping in ``k`` label files evenly spread; class presence."""
        problems = []
        pixels = np.zeros(256, np.int64)
        read = 0
        outside: list[tuple[str, str]] = []
        trainid_like, stored, ignored = True, 0, 0  # converted training ids read as ids?
        released = self.label_map is CITYSCAPES_TRAIN_IDS  # released ids read as training ids?
        listed: dict[int, int] = getattr(self, "listed", {})
        seen: set[int] = set()  # the stored ids, where a mapping lists ids of its own
        colours: dict[int, tuple[tuple[int, ...], str]] = {}  # palette labels: index's colour
        clash: tuple[str, str, int, tuple[int, ...], tuple[int, ...]] | None = None
        sampled = sample_indices(len(self), k)
        for i in sampled:
            label_file = self.samples[i][1]
            if str(label_file) in bad:
                continue
            try:
                ids = self.read_label_ids(label_file)  # type: ignore[arg-type]
            except DatasetError as e:
                detail, fix = getattr(e, "detail", str(e)), getattr(e, "fix", "")  # (said once)
                problems.append(Problem("unreadable label files", str(label_file), detail, fix))
                continue
            reason = self.label_map.check(ids)
            if reason is not None:
                outside.append((str(label_file), reason))
                released &= bool(ids[ids != 255].max() <= 33)  # (Cityscapes' released 0..33)
                continue
            mapped = self.label_map(ids)
            pixels += np.bincount(mapped.ravel(), minlength=256)
            clash = clash or _palette_clash(label_file, ids, colours)
            if listed:
                seen.update(np.unique(ids).tolist())
            if self.converted_fix:
                kept = ids != 255
                trainid_like &= bool((ids[kept] < self.num_classes).all())
                stored += int(kept.sum())
                ignored += int((mapped[kept] == 255).sum())
            read += 1
        of = (
            f"{len(outside)} of the {len(sampled)} label files read (evenly spread over "
            f"{len(self)}) hold them: others may too. "
            if len(sampled) < len(self)
            else ""
        )
        problems += [
            Problem(
                "label files with ids outside the mapping",
                file,
                reason,
                f"{of}{RELEASED_AS_TRAINING_IDS}"
                if released
                else f"{of}Is it the right label format? They are read as {self.label_map.name} "
                + (
                    "values; otherwise the class count (num_classes) or the label mapping must "
                    "cover them ({reader}.label_mapping='{<stored id>: <class>, ...}'; ids it "
                    "does not list are read as the classes of their numbers, so list every "
                    "stored id of another scheme, 255 to ignore one)."
                    if self.takes_label_mapping
                    else "values (the reader's label_format); labels of another scheme are read "
                    "by SegmentationFolder with a label mapping (mic-train: dataset=seg_folders; "
                    "docs/own_dataset.md)."
                ),
            )
            for file, reason in outside
        ]
        if read and self.converted_fix and trainid_like and ignored > stored / 2:
            problems.append(
                Problem(
                    "label sets that hold training ids where released ids are read",
                    str(self.label_folder()),
                    f"the {read} label files read hold only values 0..{self.num_classes - 1} "
                    f"and 255; read with the {self.label_map.name} mapping, "
                    f"{100 * ignored // max(stored, 1)} % of their labelled pixels would be "
                    "ignored",
                    f"{self.converted_fix} (If they truly are released ids, preflight=false "
                    "skips this check.)",
                )
            )
        labelled = int(pixels[: self.num_classes].sum())
        sign, person = int(pixels[7]), int(pixels[11])  # released ids: road and building
        if labelled and self.label_map is CITYSCAPES_TRAIN_IDS and sign + person >= labelled / 5:
            problems.append(
                Problem(
                    "label sets that look like released ids where training ids are read",
                    str(self.label_folder()),
                    f"the {read} label files read give {100 * sign // labelled} % of their "
                    f"labelled pixels to traffic sign (training id 7) and "
                    f"{100 * person // labelled} % to person (11): in released ids (0..33) "
                    "7 and 11 are road and building, a street scene's largest classes, while "
                    "signs and persons cover about 1 % each of Cityscapes' pixels",
                    RELEASED_AS_TRAINING_IDS,
                )
            )
        if read and not problems:
            problems += class_presence(
                pixels[: self.num_classes],
                self.classes,
                str(self.label_folder()),
                read,
                len(self),
                self.expected_absent,
                self.takes_label_mapping,
                warn_absent=training,
            )
        if clash is not None:  # an editor's export "as indexed", its palette per file
            first, other, index, was, now = clash
            problems.append(
                Problem(
                    "palette label sets whose files give an index different colours",
                    other,
                    f"index {index} is colour {now} here and {was} in '{first}'; palette "
                    "labels are read by index, so one colour is not one class across files",
                    "Save the labels as grey PNGs of class ids, or with one palette for all files.",
                    warning=True,
                )
            )
        # an id the mapping leaves out, read as a class that a listed id maps to: two stored
        # ids become one class (Cityscapes' labelIds with only the ids above 18 mapped)
        merged = {
            u: sorted(k for k, v in listed.items() if v == u and k != u)
            for u in sorted(seen - set(listed))
            if u < self.num_classes
        }
        merged = {u: ks for u, ks in merged.items() if ks}
        if merged:
            said = "; ".join(
                f"{u} (not listed) and {', '.join(map(str, ks))} are both read as class "
                f"{u} ({self.classes[u]!r})"
                for u, ks in list(merged.items())[:4]
            )
            problems.append(
                Problem(
                    "label sets in which label_mapping makes two stored ids one class",
                    str(self.label_folder()),
                    f"the {read} label files read hold ids that label_mapping does not list "
                    f"and that are read as the classes of their numbers: {said}",
                    "If the labels use ids of another scheme (e.g. Cityscapes' labelIds), list "
                    "every id they hold in {reader}.label_mapping (an id it does not list is "
                    "read as the class of its number); if the merge is meant, list it too.",
                    warning=True,
                )
            )
        return problems


def _jpeg_beside(label: Path, image: Path) -> Path | None:
    """A JPEG file named as the missing ``label`` but for its extension (not ``image``)."""
    if not label.parent.is_dir():
        return None
    stem = label.name[: -len(label.suffix)] if label.suffix else label.name
    found = sorted(label.parent.glob(f"{glob_escape(stem)}.*"))
    return next((f for f in found if is_jpeg_name(f.name) and f != image), None)


def _single_channel(path: Path) -> bool:
    """Whether ``path`` is a PNG of one channel (grey, palette, 1-bit, 16-bit): a label map's
    look."""
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.mode in ("L", "P", "1", "I", "I;16")
    except (OSError, ValueError):
        return False


def _colour(path: Path) -> bool:
    """Whether ``path`` is an image of colour (a photo's look, not a grey label map's)."""
    try:
        with Image.open(path) as img:
            return img.mode in ("RGB", "RGBA", "CMYK", "YCbCr")
    except (OSError, ValueError):
        return False


def _label_like(path: Path) -> bool:
    """Whether a file could be a label map, as the hints name them: an image, not JPEG."""
    return is_image(path) and not is_jpeg_name(path.name)


def _palette_clash(
    path: Path, ids: np.ndarray, colours: dict[int, tuple[tuple[int, ...], str]]
) -> tuple[str, str, int, tuple[int, ...], tuple[int, ...]] | None:
    """For a palette label file: the first index it uses whose colour differs from the one an
    earlier file gave it, as (earlier file, this file, index, earlier colour, this colour);
    None when they agree (or the file has no palette). Records this file's colours."""
    with Image.open(path) as img:
        if img.mode != "P":
            return None
        header = img.palette  # read with the header: unlike getpalette(), no pixels decoded
        if header is not None and header.rawmode is None and header.mode in ("RGB", "RGBA"):
            raw, width = bytes(header.palette), len(header.mode)
            palette = [v for i in range(0, len(raw), width) for v in raw[i : i + 3]]
        else:
            palette = img.getpalette()
    if not palette:
        return None
    for index in np.unique(ids).tolist():
        if index == IGNORE_INDEX or 3 * index + 3 > len(palette):
            continue
        colour = tuple(palette[3 * index : 3 * index + 3])
        was = colours.setdefault(index, (colour, str(path)))
        if was[0] != colour:
            return was[1], str(path), index, was[0], colour
    return None


def _pairs(
    images: list[Path], label_of: Callable[[Path], Path], labelled: bool
) -> list[tuple[Path, Path | None]]:
    return [(p, label_of(p) if labelled else None) for p in images]


def _glob(folder: Path, pattern: str, what: str) -> list[Path]:
    """The files of ``folder`` matching ``pattern``, sorted.

    Raises:
        DatasetError: none; the message says whether the folder is missing (and names a
            root one level below or above that has it) or holds images of another format.
    """
    base, suffix = pattern.rsplit(".", 1)
    # one walk: the files of the pattern, and those of its names with another extension (of
    # another case, or format)
    listed = visible(sorted(folder.glob(f"{base}.*"), key=path_order), folder)
    name = Path(pattern).name  # as glob matches it, case-sensitively
    files = [p for p in listed if fnmatch.fnmatchcase(p.name, name)]
    near = [p for p in listed if not fnmatch.fnmatchcase(p.name, name)]
    cased = [p for p in near if p.suffix.lower() == f".{suffix}"]
    if cased:  # (they would be left out without a word)
        raise DatasetError(
            f"{len(cased)} {what} in '{folder}' end in '{cased[0].suffix}' (e.g. '{cased[0]}'), "
            f"and the reader reads {pattern}: file names are read case-sensitively, so they "
            f"would be left out; rename them to end in '.{suffix}'"
        )
    read = {p.with_suffix("") for p in files}
    other = [p for p in near if is_image(p) and p.with_suffix("") not in read]
    if files and other:  # (left out without a word, and their labels with them)
        formats = ", ".join(sorted({p.suffix.lower() for p in other}))
        raise DatasetError(
            f"{len(other)} {what} in '{folder}' are {formats} files (e.g. '{other[0]}') beside "
            f"{len(files)} of the reader's format ({pattern}): they would be left out (and their "
            f"labels with them); save them as .{suffix} (as the dataset is released), or move "
            "them out of the folder"
        )
    if files:
        return files
    root = folder.parent
    if not folder.is_dir():
        hint = root_hint(folder, root)
        raise DatasetError(
            f"no {what} found: the folder '{folder}' does not exist (the dataset root "
            f"'{root}' must hold '{folder.name}/'){hint}"
        )
    other = sorted({p.suffix.lower() for p in near if is_image(p)})
    found = f"; it holds {', '.join(other)} images, and the reader reads {pattern}" if other else ""
    raise DatasetError(f"no {what} found in '{folder}' (looked for {pattern}){found}")


#: the same label format in the other family's words (GTA5 and SYNTHIA, Cityscapes-style)
_FORMAT_TWINS = {
    "labelids": "ids", "labeltrainids": "trainids", "ids": "labelIds", "trainids": "labelTrainIds"
}  # fmt: skip


def _label_format(label_format: str, choices: Sequence[str], reader: str = "") -> str:
    """``label_format`` if it is one of ``choices``, else a ConfigError naming ``reader``
    and, for the other family's name of a format (GTA5's ``ids`` for Cityscapes'
    ``labelIds``), this reader's."""
    if label_format not in choices:
        twin = _FORMAT_TWINS.get(str(label_format).lower())
        hint = (
            f"; {reader} calls {label_format!r} {twin!r} (GTA5 and SYNTHIA say ids and trainids, "
            "Cityscapes, ACDC and Dark Zurich labelIds and labelTrainIds)"
            if twin in choices
            else ""
        )
        raise ConfigError(
            f"{reader + ' ' if reader else ''}label_format must be one of {list(choices)}, got "
            f"{label_format!r}{hint}"
        )
    return label_format


#: for a reader of training ids given released ids (under the training-id file name)
RELEASED_AS_TRAINING_IDS = (
    "Are they released ids (*_labelIds.png) saved under the training-id name? Convert them to "
    "training ids (cityscapesScripts' createTrainIdLabelImgs), or read them as released ids "
    "under their released names ({reader}.label_format=labelIds for Cityscapes-style folders, "
    "ids for GTA5). (If they truly are training ids, preflight=false skips this check.)"
)

#: for a Cityscapes-style reader of labelIds: how to read files of training ids instead
CITYSCAPES_CONVERTED = (
    "Released *_labelIds.png files hold the ids 0..33; training ids (0..18) are read from "
    "*_labelTrainIds.png files (cityscapesScripts' createTrainIdLabelImgs) with "
    "{reader}.label_format=labelTrainIds: take the released files, or save the training ids "
    "under that name."
)


def _cityscapes_format(label_format: str, reader: str) -> tuple[str, LabelMap]:
    """A Cityscapes-style label format (``labelTrainIds`` or ``labelIds``) and its map."""
    maps = {"labelTrainIds": CITYSCAPES_TRAIN_IDS, "labelIds": CITYSCAPES_IDS}
    return _label_format(label_format, list(maps), reader), maps[label_format]


def _other_formats(fmt: str, endings: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``label_format=<other>`` -> (``fmt``'s ending, the other's), for every format but
    ``fmt`` (``endings``: format -> the ending of its label file names)."""
    return {
        f"label_format={other}": (endings[fmt], ending)
        for other, ending in endings.items()
        if other != fmt
    }


def _options(
    root: Path, label_size_mismatch: str, fmt: str, endings: Mapping[str, str]
) -> dict[str, Any]:
    """The keyword arguments every reader of a published layout passes on."""
    return {
        "root": root,
        "label_size_mismatch": label_size_mismatch,
        "label_formats": _other_formats(fmt, endings),
    }


def _cityscapes_endings(prefix: str) -> dict[str, str]:
    return {f: f"{prefix}{f}.png" for f in ("labelTrainIds", "labelIds")}


#: GTA5's and SYNTHIA's label formats: as released, and DAFormer's converted training ids
_CONVERTED_ENDINGS = {"ids": ".png", "trainids": "_labelTrainIds.png"}


def _anon_samples(
    image_root: Path, label_root: Path, fmt: str, pattern: str, labelled: bool, what: str
) -> list[tuple[Path, Path | None]]:
    """ACDC / Dark Zurich pairs: ``<image_root>/<rel>/<stem>_rgb_anon.png`` with the label
    ``<label_root>/<rel>/<stem>_gt_<fmt>.png``."""

    def label_of(p: Path) -> Path:
        stem = p.name[: -len("_rgb_anon.png")]
        return label_root / p.parent.relative_to(image_root) / f"{stem}_gt_{fmt}.png"

    return _pairs(_glob(image_root, pattern, what), label_of, labelled)


class GTA5(SegmentationDataset):
    """GTA5 (Richter et al. 2016): 24,966 frames, 1914 x 1052, labels in Cityscapes ids.

    Args:
        root: the folder holding ``images/`` and ``labels/``.
        label_format: ``"ids"`` (the released palette PNGs, mapped here) or ``"trainids"``
            (``<name>_labelTrainIds.png`` written by DAFormer's conversion script).
        label_size_mismatch: ``"error"`` or ``"resize"`` (see ``SegmentationDataset``; a few
            GTA5 frames have labels of another size than their image).
    """

    mode_fix = (
        "GTA5's labels/ hold palette PNGs of Cityscapes ids (or 8-bit ids); a colour (RGB) "
        "rendering holds no ids: take the files of the release's labels/ folder, or converted "
        "*_labelTrainIds.png with label_format=trainids (mic-train: "
        "dataset.source_label_format=trainids)."
    )

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        labelled: bool = True,
        label_format: str = "ids",
        label_size_mismatch: str = "error",
    ) -> None:
        root = check_folder(root, "GTA5")
        fmt = _label_format(label_format, ("ids", "trainids"), "GTA5")
        images = _glob(root / "images", "*.png", "GTA5 images")
        suffix = _CONVERTED_ENDINGS[fmt]
        samples = _pairs(images, lambda p: root / "labels" / (p.stem + suffix), labelled)
        label_map = CITYSCAPES_IDS if fmt == "ids" else CITYSCAPES_TRAIN_IDS
        if fmt == "ids":
            self.converted_fix = (
                "Converted labels (DAFormer's <name>_labelTrainIds.png) are read with "
                "label_format=trainids (mic-train: dataset.source_label_format=trainids), from "
                "files of that name: take the release's labels, or save the training ids under "
                "that name (labels/00001.png as labels/00001_labelTrainIds.png)."
            )
        options = _options(root, label_size_mismatch, fmt, _CONVERTED_ENDINGS)
        super().__init__(samples, label_map, transform, labelled, **options)


#: how to read SYNTHIA's converted labels instead of the released ones
SYNTHIA_CONVERTED = (
    "Converted labels are read from <name>_labelTrainIds.png files with "
    "label_format=trainids (mic-train: dataset.source_label_format=trainids): take the "
    "release's labels, or save the training ids under that name (0000000.png as "
    "0000000_labelTrainIds.png)."
)


class SynthiaRandCityscapes(SegmentationDataset):
    """SYNTHIA RAND-CITYSCAPES: 9,400 frames, 1280 x 760, 16-bit labels mapped to the 19
    Cityscapes training ids (terrain, truck and train never occur: the 16- and 13-class
    protocols leave them out).

    Args:
        root: the folder holding ``RGB/`` and ``GT/LABELS/``.
        label_format: ``"ids"`` (the released 16-bit PNGs) or ``"trainids"``
            (``GT/LABELS/<name>_labelTrainIds.png`` from DAFormer's conversion script).
        label_size_mismatch: ``"error"`` or ``"resize"`` (see ``SegmentationDataset``).
    """

    expected_absent = (9, 14, 16)  # terrain, truck, train

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        labelled: bool = True,
        label_format: str = "ids",
        label_size_mismatch: str = "error",
    ) -> None:
        root = check_folder(root, "SYNTHIA")
        self.label_format = _label_format(label_format, ("ids", "trainids"), "SYNTHIA")
        if self.label_format == "ids":  # 16-bit colour, which Pillow's header calls RGB
            self.label_modes = ("RGB", "RGBA")
            self.mode_fix = (
                "SYNTHIA's GT/LABELS hold 16-bit colour PNGs, the class id in the red channel; "
                f"is it the right file? {SYNTHIA_CONVERTED}"
            )
        images = _glob(root / "RGB", "*.png", "SYNTHIA images")
        suffix = _CONVERTED_ENDINGS[self.label_format]
        samples = _pairs(images, lambda p: root / "GT" / "LABELS" / (p.stem + suffix), labelled)
        label_map = SYNTHIA_IDS if self.label_format == "ids" else CITYSCAPES_TRAIN_IDS
        options = _options(root, label_size_mismatch, self.label_format, _CONVERTED_ENDINGS)
        super().__init__(samples, label_map, transform, labelled, **options)

    def read_label_ids(self, path: Path) -> np.ndarray:
        if self.label_format == "trainids":
            return read_label(path)
        ids = read_png_unchanged(path)
        if ids.ndim != 3 or ids.dtype != np.uint16:
            detail = f"not a 16-bit colour PNG (got {ids.dtype} with shape {ids.shape})"
            fix = (
                "The release stores the class id in the red channel of a 16-bit PNG. "
                + SYNTHIA_CONVERTED
            )
            error = DatasetError(f"SYNTHIA label '{path}' is {detail}; {fix}")
            error.detail, error.fix = detail, fix  # type: ignore[attr-defined]
            raise error
        return ids[..., 0]


class Cityscapes(SegmentationDataset):
    """Cityscapes (fine annotations): 2975 train / 500 val images, 2048 x 1024.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"`` or ``"test"`` (its labels are withheld: unlabelled only).
        label_format: ``"labelTrainIds"`` (from cityscapesScripts' createTrainIdLabelImgs)
            or ``"labelIds"`` (as released, mapped here).
        label_size_mismatch: ``"error"`` or ``"resize"`` (see ``SegmentationDataset``).

    Raises:
        DatasetError: a missing folder or file; the ``test`` split read with labels.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        labelled: bool = True,
        label_format: str = "labelTrainIds",
        label_size_mismatch: str = "error",
    ) -> None:
        root = check_folder(root, "Cityscapes")
        if split == "test" and labelled:
            raise DatasetError(CITYSCAPES_TEST_WITHHELD)
        fmt, label_map = _cityscapes_format(label_format, type(self).__name__)
        folder = check_folder(root / "leftImg8bit" / split, f"Cityscapes {split} image", root)
        images = _glob(folder, "*/*_leftImg8bit.png", "Cityscapes images")

        def label_of(p: Path) -> Path:
            stem = p.name[: -len("_leftImg8bit.png")]
            return root / "gtFine" / split / p.parent.name / f"{stem}_gtFine_{fmt}.png"

        options = _options(root, label_size_mismatch, fmt, _cityscapes_endings("_gtFine_"))
        super().__init__(
            _pairs(images, label_of, labelled), label_map, transform, labelled, **options
        )
        self.converted_fix = CITYSCAPES_CONVERTED if fmt == "labelIds" else ""


class ACDC(SegmentationDataset):
    """ACDC (adverse conditions): fog, night, rain and snow, 1920 x 1080.

    Args:
        root: the folder holding ``rgb_anon/`` and ``gt/``.
        split: ``"train"``, ``"val"`` or ``"test"`` (test labels are withheld).
        conditions: which conditions to read (published: all four), e.g. ``["night"]``; a
            text ``"fog,night"`` is read as that list.
        label_format: ``"labelTrainIds"`` or ``"labelIds"``.
        label_size_mismatch: ``"error"`` or ``"resize"`` (see ``SegmentationDataset``).

    Reads the released layout ``rgb_anon/<condition>/<split>/<sequence>/``; when that is
    absent it reads the flattened ``rgb_anon/<split>/<sequence>/`` the published code uses.
    """

    CONDITIONS = ("fog", "night", "rain", "snow")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        labelled: bool = True,
        conditions: Sequence[str] = CONDITIONS,
        label_format: str = "labelTrainIds",
        label_size_mismatch: str = "error",
    ) -> None:
        root = check_folder(root, "ACDC")
        fmt, label_map = _cityscapes_format(label_format, type(self).__name__)
        if isinstance(conditions, str):  # "night", or "fog,night": not its letters
            conditions = [c.strip() for c in conditions.split(",") if c.strip()]
        unknown = set(conditions) - set(self.CONDITIONS)
        if unknown or not conditions:
            raise ConfigError(
                f"ACDC conditions are {list(self.CONDITIONS)} (a list of some), got "
                f"{sorted(unknown) if unknown else list(conditions)}"
            )
        samples: list[tuple[Path, Path | None]] = []
        released = [root / "rgb_anon" / c / split for c in conditions]
        absent = [c for c, f in zip(conditions, released, strict=True) if not f.is_dir()]
        if absent and len(absent) < len(released):  # the released layout, some conditions
            present = [c for c in conditions if c not in absent]
            raise ReaderOptionError(
                f"ACDC has no {split} folder of the condition(s) {absent} under "
                f"'{root / 'rgb_anon'}' (it has {present}): to read only those, pass "
                f"conditions=[{','.join(present)}]",
                f"conditions=[{','.join(present)}]",
            )
        if len(absent) < len(released):
            for cond in conditions:
                folder = check_folder(root / "rgb_anon" / cond / split, f"ACDC {cond} {split}")
                gt = root / "gt" / cond / split
                samples += _anon_samples(
                    folder, gt, fmt, "*/*_rgb_anon.png", labelled, f"ACDC {cond} images"
                )
        else:
            folder = check_folder(root / "rgb_anon" / split, f"ACDC {split} image", root)
            gt = root / "gt" / split
            samples = _anon_samples(folder, gt, fmt, "**/*_rgb_anon.png", labelled, "ACDC images")
        options = _options(root, label_size_mismatch, fmt, _cityscapes_endings("_gt_"))
        super().__init__(samples, label_map, transform, labelled, **options)
        self.converted_fix = CITYSCAPES_CONVERTED if fmt == "labelIds" else ""


class DarkZurich(SegmentationDataset):
    """Dark Zurich: 2416 unlabelled night training images and 50 labelled night validation
    images, 1920 x 1080.

    Args:
        root: the folder holding ``rgb_anon/`` and ``gt/``.
        split: ``"train"`` (unlabelled), ``"val"`` or ``"test"``.
        condition: ``"night"`` (the target domain), ``"twilight"`` or ``"day"``.
        label_format: ``"labelTrainIds"`` or ``"labelIds"``.
        label_size_mismatch: ``"error"`` or ``"resize"`` (see ``SegmentationDataset``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        labelled: bool = False,
        condition: str = "night",
        label_format: str = "labelTrainIds",
        label_size_mismatch: str = "error",
    ) -> None:
        root = check_folder(root, "Dark Zurich")
        fmt, label_map = _cityscapes_format(label_format, type(self).__name__)
        if split == "train" and labelled:
            raise ConfigError(
                "Dark Zurich's training split has no labels: use labelled=false (the labelled "
                "split is val)"
            )
        folder = check_folder(root / "rgb_anon" / split / condition, f"Dark Zurich {split}", root)
        gt = root / "gt" / split / condition
        samples = _anon_samples(folder, gt, fmt, "*/*_rgb_anon.png", labelled, "Dark Zurich images")
        options = _options(root, label_size_mismatch, fmt, _cityscapes_endings("_gt_"))
        super().__init__(samples, label_map, transform, labelled, **options)
        self.converted_fix = CITYSCAPES_CONVERTED if fmt == "labelIds" else ""


class SegmentationFolder(SegmentationDataset):
    """Your own data: images in one folder (searched recursively, hidden files and folders
    left out) and, for a labelled set, label PNGs of the same relative path and stem plus
    ``label_suffix`` in another (or the same) folder.

    Images and labels may share a folder (``000.jpg`` with ``000.png``, or ``000.png`` with
    ``000_mask.png`` and ``label_suffix="_mask.png"``): a file that is the label of an image of
    the set, or its own label, is not an image of it.

    Args:
        images: the image folder.
        labels: the label folder (None: unlabelled, e.g. target training images).
        label_suffix: appended to an image's stem to name its label file (never a JPEG
            file: JPEG is lossy, and changes the ids along every edge between classes).
        num_classes: the labels hold training ids 0..num_classes-1 and 255 (ignored).
        classes: class names (default: Cityscapes' when num_classes is 19, else numbers).
        label_mapping: stored value -> training id, for values that are not training ids
            already, e.g. ``{255: 1}`` for binary masks saved as 0/255 (255 is otherwise the
            ignore value).
        label_size_mismatch: ``"error"`` or ``"resize"`` (see ``SegmentationDataset``).
        apply_exif_orientation: turn the images as their EXIF orientation tag says (False:
            the stored pixels, for labels drawn on them; see ``SegmentationDataset``).

    Raises:
        DatasetError: ``label_suffix`` names JPEG files, or every image is its own label file.
    """

    takes_label_mapping = True
    unlabelled_option = "labels=null"

    def __init__(
        self,
        images: str | Path,
        labels: str | Path | None = None,
        transform: Transform | None = None,
        label_suffix: str = ".png",
        num_classes: int = 19,
        classes: Sequence[str] | None = None,
        label_mapping: Mapping[int, int] | None = None,
        label_size_mismatch: str = "error",
        apply_exif_orientation: bool = True,
    ) -> None:
        image_root = check_folder(images, "image")
        self.image_root = image_root
        #: files of image formats mic does not read (GIF...), left out with a warning
        self.unread: list[Path] = []
        files = list_images(image_root, left_out=self.unread)
        label_root = check_folder(labels, "label") if labels is not None else None
        self.label_root = label_root
        self.label_suffix = label_suffix
        if label_root is not None and is_jpeg_name(label_suffix):
            raise DatasetError(
                f"label_suffix={label_suffix} names JPEG label files; {JPEG_LABELS}. Save the "
                f"labels as PNG files, {FROM_MASKS}, and set label_suffix=.png (the default) or "
                "the ending of their names (mic-train: dataset.label_suffix)"
            )

        def label_of(p: Path) -> Path:
            rel = p.relative_to(image_root)
            return label_root / rel.parent / (p.stem + label_suffix)  # type: ignore[operator]

        #: images left out as their own label file, the label of no other image (images and
        #: labels in one folder, ``label_suffix`` naming the images)
        self.own_labels: list[Path] = []
        if label_root is not None and files:
            files, self.own_labels = _without_labels(files, image_root, label_root, label_suffix)
            if not files:
                raise self._all_own_labels(image_root)

        if classes is None:
            classes = default_class_names(num_classes)
        if len(classes) != num_classes:
            raise ConfigError(f"{len(classes)} class names given for num_classes={num_classes}")
        mapping = {i: i for i in range(num_classes)}
        #: ``label_mapping`` as given, stored id -> class (the others below num_classes: read
        #: as the classes of their numbers)
        self.listed = {int(k): int(v) for k, v in (label_mapping or {}).items()}
        for stored, train_id in (label_mapping or {}).items():
            if not (0 <= int(train_id) < num_classes or int(train_id) == IGNORE_INDEX):
                raise ConfigError(
                    f"label_mapping maps {stored} to {train_id}, which is neither a class of "
                    f"num_classes={num_classes} nor the ignore value {IGNORE_INDEX}"
                )
            if not 0 <= int(stored) < 1 << 16:
                raise ConfigError(f"label_mapping's stored value {stored} is not in 0..65535")
            mapping[int(stored)] = int(train_id)
        name = f"training-id (0..{num_classes - 1})"
        name += " with label_mapping" if label_mapping else ""
        super().__init__(
            _pairs(files, label_of, label_root is not None),
            LabelMap(mapping, name=name),
            transform,
            labelled=label_root is not None,
            classes=classes,
            root=image_root,
            label_size_mismatch=label_size_mismatch,
            apply_exif_orientation=apply_exif_orientation,
        )

    def _all_own_labels(self, image_root: Path) -> DatasetError:
        """The error when every image is its own label file."""
        if not self.own_labels:  # not reached: some image is the label of none
            return DatasetError(f"no images found in '{image_root}' that are not label files")
        first = self.own_labels[0]
        message = (
            f"every image in '{image_root}' is its own label file: the labels folder holds the "
            f"images, and label_suffix={self.label_suffix} names each image ('{first.name}') "
            "as its label. Point labels at the folder of the label files"
        )
        there = self._siblings(first, exclude=first)
        labels = next((f for f in there if _label_like(f)), None)
        if labels is None:
            return DatasetError(message + ", or set label_suffix to the ending of their names")
        option = f"label_suffix={labels.name[len(first.stem) :]}"
        return ReaderOptionError(
            f"{message}; files such as '{labels}' are there: to read them as the labels, "
            f"pass {option}",
            option=option,
        )

    @staticmethod
    def _siblings(file: Path, stem: str | None = None, exclude: Path | None = None) -> list[Path]:
        """Visible files beside ``file`` named ``stem`` (default: its stem) and then ``.``,
        ``_`` or ``-``, sorted, ``exclude`` left out."""
        stem = file.stem if stem is None else stem
        if not stem or not file.parent.is_dir():
            return []
        found = []
        for other in sorted(file.parent.glob(f"{glob_escape(stem)}*")):
            rest = other.name[len(stem) :]
            visible = rest[:1] in "._-" and not is_hidden_name(other.name)
            same = exclude is not None and os.path.realpath(other) == os.path.realpath(exclude)
            if visible and not same and other.is_file():
                found.append(other)
        return found

    def label_near_miss(self, label: Path) -> tuple[str, Path] | None:
        """A file of the label's stem with another ending (``label_suffix``), not JPEG."""
        if not label.name.endswith(self.label_suffix):
            return None
        stem = label.name[: -len(self.label_suffix)]
        for other in self._siblings(label, stem):
            if _label_like(other):
                return f"label_suffix={other.name[len(stem) :]}", other
        return None

    def near_miss_fix(self, image: Path, label: Path) -> str | None:
        """The ``label_suffix`` that reads the label files there (naming ``dataset=seg_folders``'
        key too); that JPEG files there are not labels; or, when images were left out as their
        own label file, the suffix of the files beside them."""
        if label.name.endswith(self.label_suffix):
            stem = label.name[: -len(self.label_suffix)]
            there = self._siblings(label, stem, exclude=image)
            found = next((f for f in there if _label_like(f)), None)
            if found is not None:
                option = f"label_suffix={found.name[len(stem) :]}"
                return f"Files such as '{found}' are there: set {{reader}}.{option} to read them."
            other = next((f for f in there if not is_image(f)), None)
            if other is not None:  # LabelMe's or a tool's own annotation files
                return (
                    f"The files '{other}' are there, but they are no images: labels are PNG maps "
                    f"of class ids (one per image, named <image stem>{self.label_suffix}); "
                    "draw or export them as such (polygons in JSON files are not read)."
                )
            if there:
                return (
                    f"The files '{there[0]}' are there, but they are JPEG files, never read as "
                    f"labels: {JPEG_LABELS}. Save the labels as PNG files named "
                    f"<image stem>{self.label_suffix}, {FROM_MASKS}."
                )
        if self.own_labels:
            own = self.own_labels[0]
            beside = [f for f in self._siblings(own, exclude=own) if _label_like(f)]
            if beside:
                option = f"label_suffix={beside[0].name[len(own.stem) :]}"
                return (
                    f"Images and labels share a folder, and label_suffix={self.label_suffix} "
                    f"makes '{own}' its own label (it was left out); the files '{beside[0]}' "
                    f"are there: set {{reader}}.{option} to read them as the labels."
                )
        return self._elsewhere_fix(image, label)

    def _elsewhere_fix(self, image: Path, label: Path) -> str | None:
        """That a file named as ``label`` sits at another place in the label folder's tree
        (images in sub-folders, labels flat, or the other way round), else None."""
        if self.label_root is None:
            return None
        found = next(
            (
                f
                for f in sorted(self.label_root.rglob(glob_escape(label.name)))
                if f.is_file() and f != image
            ),
            None,
        )
        if found is None:
            return None
        return (
            "An image's label is looked for at the image's path inside the label folder (for "
            f"'{image}': '{label}'), but '{found}' is there: lay the image and label folders "
            "out alike (the same sub-folders in both, or none)."
        )


def _without_labels(
    files: list[Path], image_root: Path, label_root: Path, label_suffix: str
) -> tuple[list[Path], list[Path]]:
    """``files`` (images found under ``image_root``) without the label files of the others
    and without those that are their own label file (labels in ``image_root`` or a folder
    inside it); and those left out as their own label only (the label of no other image:
    ``label_suffix`` is then likely wrong)."""
    try:
        inside = Path(os.path.realpath(label_root)).relative_to(os.path.realpath(image_root))
    except ValueError:  # labels elsewhere: no image can be a label
        return files, []
    listed = {str(p) for p in files}
    labels: set[str] = set()
    own: list[Path] = []
    for p in files:
        rel = p.relative_to(image_root)
        label = str(image_root / inside / rel.parent / (p.stem + label_suffix))
        if label == str(p):
            own.append(p)
        elif label in listed:
            labels.add(label)
    if not labels and not own:
        taken = [p for p in files if inside.parts and p.is_relative_to(image_root / inside)]
        rest = [p for p in files if p not in taken]
        tops = {p.relative_to(image_root).parts[0] for p in rest}
        if taken and len(tops) == 1 and all(len(p.relative_to(image_root).parts) > 1 for p in rest):
            # one folder of images beside the label folder, whose labels lie in the label
            # folder as named from it (img/a.png, lbl/a.png): the labels were read as images
            top = image_root / tops.pop()
            fits = [
                p
                for p in rest
                if (label_root / p.relative_to(top)).with_name(p.stem + label_suffix).is_file()
            ]
            if 2 * len(fits) > len(rest):
                raise DatasetError(
                    f"the label folder '{label_root}' lies inside the image folder "
                    f"'{image_root}', and its {len(taken)} files (e.g. '{taken[0]}') would be "
                    f"read as images: give the folder of the images alone as the image folder "
                    f"('{top}'), whose images' labels are in '{label_root}'"
                )
        return files, []
    mine = {str(p) for p in own}
    kept = [p for p in files if str(p) not in labels and str(p) not in mine]
    return kept, [p for p in own if str(p) not in labels]


def _shared_label_problems(samples: Sequence[tuple[Path, Path | None]]) -> list[Problem]:
    """A warning for each label file that several images share (``a.png`` and ``a.jpg`` of one
    stem: one image saved in two formats, two samples of one label)."""
    images: dict[Path, list[Path]] = {}
    for image_file, label_file in samples:
        if label_file is not None:
            images.setdefault(label_file, []).append(image_file)
    return [
        Problem(
            "label files that several images share",
            str(label),
            f"the label of {', '.join(repr(p.name) for p in shared)}",
            "Each image is a sample of its own, so one image saved in two formats trains twice: "
            "remove the copies (or name each image's label apart).",
            warning=True,
        )
        for label, shared in images.items()
        if len(shared) > 1
    ]
