"""Readers for folders of images: class-per-folder (labelled) and any folder (unlabelled)."""

from __future__ import annotations

import difflib
import os
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mic.core.errors import DatasetError
from mic.datasets.files import (
    IMAGE_EXTENSIONS,
    ReaderOptionError,
    check_folder,
    check_transform,
    is_hidden_name,
    is_image,
    list_images,
    load_image,
    read_header,
)
from mic.datasets.preflight import (
    Problem,
    check_image,
    check_images,
    crop_problems,
    keep_or_raise,
    progress,
    scale_problems,
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

    Raises:
        DatasetError: no images; or the images found lie in a folder of the usual names of
            label folders (``lbl``, ``labels``, ``gt``, ``masks``...) whose files share their
            relative names with a sibling folder's colour images, and have one channel
            (``root/img/0.png`` and ``root/lbl/0.png``: ``root`` is a labelled split's root,
            not its image folder; see ``label_folder_problems``, which warns of the weaker
            signs), naming the image folder to give instead.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Any], Any] | None = None,
        recursive: bool = True,
        apply_exif_orientation: bool = True,
        label_suffix: str | None = None,
    ) -> None:
        check_transform(transform, type(self).__name__)
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
        #: label folders among the images (errors, or warnings: ``label_folder_problems``)
        self.found_problems = keep_or_raise(
            label_folder_problems(self.root, self.files, label_suffix), type(self).__name__
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
        problems = [*self.found_problems, *left_out, *unread_problems(self.unread)]
        sizes = []
        for path in progress(self.files, len(self.files), f"images in {self.root}"):
            header = check_image(path, problems, self.apply_exif_orientation)
            if header is not None:
                sizes.append((header.height, header.width))
        where = str(self.root)
        return (
            problems
            + crop_problems(self.transform, sizes, where)
            + scale_problems(self.transform, sizes, where)
        )


#: the usual names of label folders (lower case): images found in one are label masks
LABEL_FOLDER_NAMES = frozenset(
    {
        "lbl", "lbls", "label", "labels", "gt", "gtfine", "gtcoarse", "mask", "masks",
        "annotation", "annotations", "ann", "anns",
    }
)  # fmt: skip


#: how many of a folder's shared files are read to judge it label masks
MASKS_CHECKED = 5
#: the extensions of JPEG files (lossy: never label masks)
JPEG = (".jpg", ".jpeg", ".jpe", ".jfif")


def label_folder_problems(
    root: Path, files: Sequence[Path], label_suffix: str | None = None
) -> list[Problem]:
    """Signs that ``files`` (the images found under ``root``, for an unlabelled set) hold the
    label masks of a labelled split, whose root (holding ``img/`` and ``lbl/``) was given
    instead of its image folder. Two folders side by side "share" a file when they hold files
    of the same path below them, extension (and ``label_suffix``) aside: ``img/0.jpg`` and
    ``lbl/0.png``.

    - an error for a folder of the usual names of label folders (``LABEL_FOLDER_NAMES``)
      whose files have one channel (``L``, ``P``: how masks are saved) and share their names
      with the colour images of a folder beside it: a label folder beside its images, which
      nothing but that makes;
    - a warning where its files have colour (masks saved as RGB, or a class folder ``mask``
      of photographs beside others of the same file names);
    - a warning for a folder of one-channel images that shares names with colour images
      beside it, not named as a label folder: labels in a folder named otherwise, or grey
      views of the same scenes (an infrared camera), which are data; folders of colour
      images that share their names (class folders of ``frame_0001.jpg`` each, as
      Office-31's; two cameras) are no sign;
    - a warning for images under a folder named as label folders without such neighbours
      (Cityscapes' ``gtFine/``, whose files are named otherwise than the images): a folder
      of photographs may bear such a name too.
    """
    root = Path(root)
    #: (folders above, path below without extension) -> {folder: the file's path below it}
    names: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, str]] = {}
    for f in files:
        real = f.relative_to(root).parts
        name = real[-1]
        if label_suffix and name.endswith(label_suffix) and name != label_suffix:
            name = name[: -len(label_suffix)]
        else:
            name = Path(name).stem
        parts = (*real[:-1], name)
        for i in range(len(parts) - 1):  # parts[i]: a folder, parts[i + 1:]: the name in it
            below = names.setdefault((parts[:i], parts[i + 1 :]), {})
            below.setdefault(parts[i], "/".join(real[i + 1 :]))
    #: (folders above, folder) -> (files it shares, the folders it shares them with, the
    #: first few of those files)
    shared: dict[tuple[tuple[str, ...], str], tuple[int, set[str], list[str]]] = {}
    for (parent, _), folders in names.items():
        if len(folders) > 1:
            for d, path in folders.items():
                n, siblings, examples = shared.get((parent, d), (0, set(), []))
                examples = examples if len(examples) >= MASKS_CHECKED else [*examples, path]
                shared[(parent, d)] = (n + 1, siblings | (set(folders) - {d}), examples)
    modes: dict[tuple[tuple[str, ...], str], bool | None] = {}

    def labels(name: str) -> bool:
        return name.lower() in LABEL_FOLDER_NAMES

    def one_channel(parent: tuple[str, ...], d: str) -> bool | None:
        """Whether the folder's shared files look like label masks: each of the first
        ``MASKS_CHECKED`` has one channel and is stored losslessly (not JPEG, which no mask
        survives), from their headers; None if one cannot be read."""
        if (parent, d) not in modes:
            found = [_one_channel(root.joinpath(*parent, d, f)) for f in shared[(parent, d)][2]]
            lossless = all(Path(f).suffix.lower() not in JPEG for f in shared[(parent, d)][2])
            modes[(parent, d)] = None if None in found else all(found) and lossless
        return modes[(parent, d)]

    def colour(parent: tuple[str, ...], siblings: set[str]) -> str | None:
        """The first of ``siblings`` not named as a label folder whose images have colour."""
        images = (s for s in sorted(siblings) if not labels(s))
        first = lambda s: root.joinpath(*parent, s, shared[(parent, s)][2][0])  # noqa: E731
        return next((s for s in images if _one_channel(first(s)) is False), None)

    problems: list[Problem] = []
    judged: set[tuple[tuple[str, ...], str]] = set()
    for (parent, d), (n, siblings, (example, *_)) in sorted(shared.items()):
        if not labels(d) or all(labels(s) for s in siblings):
            continue
        judged |= {(parent, d), *((parent, s) for s in siblings)}
        images = colour(parent, siblings) if one_channel(parent, d) else None
        if images is None:  # no masks beside colour images: a class "mask" of photographs?
            others = ", ".join(f"'{root.joinpath(*parent, s)}'" for s in sorted(siblings))
            problems.append(
                Problem(
                    "folders named as label folders whose files are named as images beside them",
                    str(root.joinpath(*parent, d)),
                    f"{n} files, e.g. '{example}', named as those of {others}",
                    "If they are label masks, give the image folder itself as the root; if "
                    "they are images, ignore this.",
                    warning=True,
                )
            )
            continue
        folder = root.joinpath(*parent, images)
        problems.append(
            Problem(
                "label folders among the unlabelled images",
                str(root.joinpath(*parent, d)),
                f"its {n} files share their names with the images of '{folder}', e.g. "
                f"'{example}', and have one channel: they are those images' labels",
                "The labels would be trained on as target images: give the image folder "
                f"itself as the root ({{reader}}.root='{folder}'); if they are grey images of a "
                "class of that name, rename the folder (the unlabelled images' folder names "
                "are not read).",
            )
        )
    for (parent, d), (_, siblings, (example, *_)) in sorted(shared.items()):
        if (parent, d) in judged or not one_channel(parent, d):
            continue
        beside = colour(parent, siblings)
        if beside is None:  # grey images beside grey ones: no sign of masks
            continue
        judged.add((parent, d))
        problems.append(
            Problem(
                "folders of one-channel images named as the colour images beside them",
                str(root.joinpath(*parent, d)),
                f"e.g. '{example}', named as an image of '{root.joinpath(*parent, beside)}'",
                "If they are label masks, give the image folder itself as the root; if they are "
                "images (grey or infrared views of the same scenes), ignore this.",
                warning=True,
            )
        )
    flagged = {root.joinpath(*p, d) for p, d in judged}
    under: dict[Path, int] = {}
    for f in files:
        parts = f.relative_to(root).parts[:-1]
        hits = [i for i, part in enumerate(parts) if labels(part)]
        if hits and root.joinpath(*parts[: hits[0] + 1]) not in flagged:
            folder = root.joinpath(*parts[: hits[0] + 1])
            under[folder] = under.get(folder, 0) + 1
    for folder, n in sorted(under.items()):
        problems.append(
            Problem(
                "folders named as label folders among the unlabelled images",
                str(folder),
                f"{n} images taken from it",
                "If they are label masks, give the folder of the images alone as the root; if "
                "they are images, ignore this.",
                warning=True,
            )
        )
    return problems


def _one_channel(path: Path) -> bool | None:
    """Whether the image at ``path`` has one channel (modes ``1``, ``L``, ``P``, ``I``...: how
    label masks are saved), from its header; None if it cannot be read (the check of every
    image reports that)."""
    try:
        mode = read_header(path).mode
    except DatasetError:
        return None
    return mode in ("1", "L", "P", "I", "F") or mode.startswith("I;")


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
        check_transform(transform, type(self).__name__)
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
        labelled set, a warning for classes without any image (see
        ``mic.datasets.preflight``)."""
        files = [path for path, _ in self.samples]
        problems = unread_problems(getattr(self, "unread", []))
        problems += check_images(files, f"{len(files)} images")
        absent = sorted(set(range(self.num_classes)) - set(self.targets))
        if self.labelled and absent:  # (a test set is scored over the classes it holds)
            kind, why = (
                ("class lists", "A model cannot learn them from the source")
                if training
                else (
                    "test sets",
                    "Their accuracy is undefined (NaN) and the mean class accuracy averages the "
                    f"{self.num_classes - len(absent)} classes the set holds",
                )
            )
            problems.append(
                Problem(
                    f"{kind} with classes that no image has",
                    str(getattr(self, "root", files[0].parent if files else "")),
                    "class " + ", ".join(f"{c} ({self.classes[c]})" for c in absent),
                    f"{why}; if that is not meant, check the images and the class list.",
                    warning=True,
                )
            )
        return problems


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _folded(name: str) -> str:
    """A class name as compared for a rename hint: composed, lower case, '_' for ' '."""
    return _nfc(name).lower().replace(" ", "_")


def _shortened(names: list[str], total: int) -> str:
    """``names`` as a list, its first five and a count out of ``total`` when longer."""
    if len(names) <= 5:
        return str(names)
    return f"{str(names[:5])[:-1]}, ...] ({len(names)} of {total})"


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
        broken = [d for d in sorted(self.root.iterdir()) if d.is_symlink() and not d.exists()]
        if broken:  # a class folder linked to a folder that is gone was left out, silently
            raise DatasetError(
                f"{len(broken)} entr{'ies' if len(broken) > 1 else 'y'} of '{self.root}' "
                f"link to what does not exist (e.g. '{broken[0].name}' -> "
                f"'{os.readlink(broken[0])}'): a class folder among them would be left out and "
                "the class indices shift; fix or remove the links"
            )
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
            unlabelled = " For unlabelled images use UnlabeledImageFolder." if loose else ""
            raise DatasetError(
                f"'{self.root}' must hold one sub-folder per class (root/<class>/<image>), but "
                f"{layout}.{unlabelled}"
            )
        if len(folders) == 1 and classes is None:
            _refuse_wrapped_classes(self.root / folders[0])
        elif classes is None:
            _warn_of_split_folders(self.root, folders)
        classes = list(classes) if classes is not None else folders
        unknown = sorted(set(folders) - set(classes))
        for u in unknown:  # a root one level too high: the classes are below one folder
            below = {d.name for d in (self.root / u).iterdir() if d.is_dir()}
            if len(below & set(classes)) > len(below) / 2:
                raise DatasetError(
                    f"'{self.root}' holds the folder '{u}', whose sub-folders are classes "
                    f"({', '.join(sorted(below & set(classes))[:5])}, ...): the root is one "
                    f"level too high; give '{self.root / u}' as the root"
                )
        if unknown:
            by_case = {_folded(c): c for c in classes}
            close = {
                u: by_case.get(_folded(u))
                or next(iter(difflib.get_close_matches(u, classes, n=1)), None)
                for u in unknown
            }
            renames = ", ".join(f"'{u}' -> '{c}'" for u, c in close.items() if c)
            unicode = [u for u, c in close.items() if c and u != c and _nfc(u) == _nfc(c)]
            if unicode:  # macOS writes names decomposed (NFD); most tools compose them (NFC)
                renames += (
                    f"; {unicode[0]!r} and its class differ only in how Unicode composes their "
                    "accented letters (NFD, as macOS writes names, against NFC): rename the "
                    "folder by typing its name anew"
                )
            shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise DatasetError(
                f"'{self.root}' has folders {unknown} that are not among its {len(classes)} "
                f"classes ({shown}; the reader's own list, or in mic-train the source's): "
                + (f"rename them ({renames}) or remove them" if renames else "remove them")
                + ", so that every split has the same classes"
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
            missing = [c for c in empty if not (self.root / c).is_dir()]
            found = [c for c in empty if c not in missing]
            what = "; ".join(
                f"{kind} {_shortened(names, len(classes))}"
                for kind, names in (("missing", missing), ("without images", found))
                if names
            )
            unread = [f for f in self.unread if f.relative_to(self.root).parts[0] in found]
            if unread:  # only files of formats mic does not read (GIF...)
                kinds = ", ".join(sorted({f.suffix.lower() or f.name for f in unread}))
                what += f" ({len(unread)} file(s) of formats mic does not read: {kinds})"
            raise ReaderOptionError(
                f"class folders of '{self.root}' {what}; add images, remove "
                "a folder that is no class, or pass allow_empty_classes=true (an empty class "
                f"still counts: the model predicts all {len(classes)} classes, "
                "dataset.num_classes in mic-train)",
                option="allow_empty_classes=true",
            )
        super().__init__(samples, classes, transform, labelled)
        #: images directly in ``root``, in no class folder: left out, with a warning
        self.loose = list_images(self.root, recursive=False)

    def preflight(self, training: bool = True) -> list[Problem]:
        """``LabelledImages.preflight``, and a warning for the images left out because they
        lie directly in ``root``, in no class folder."""
        problems = super().preflight(training)
        if self.loose:
            problems.append(
                Problem(
                    "images directly in a class-per-folder root, in no class folder",
                    str(self.root),
                    f"{len(self.loose)} left out, e.g. '{self.loose[0].name}'",
                    "Move each into the folder of its class to "
                    f"{'train on' if training else 'score'} it.",
                    warning=True,
                )
            )
        return problems


def _warn_of_split_folders(root: Path, folders: Sequence[str]) -> None:
    """Warn when every folder of a class-per-folder ``root`` holds no image itself but the
    same sub-folders (``src/train/<class>/``, ``src/val/<class>/``): split folders read as
    classes, the root one level too high (or classes of the same sub-folders each, which
    are data: a warning, not an error)."""
    below = []
    for name in folders:
        folder = root / name
        if list_images(folder, recursive=False):
            return
        below.append(
            {d.name for d in folder.iterdir() if d.is_dir() and not is_hidden_name(d.name)}
        )
    if len(below[0]) > 1 and all(b == below[0] for b in below):
        shown = ", ".join(sorted(below[0])[:5]) + (", ..." if len(below[0]) > 5 else "")
        warnings.warn(
            f"the {len(folders)} class folders of '{root}' ({', '.join(folders[:5])}) each hold "
            f"the same sub-folders ({shown}) and no image: if those are the classes, the root "
            f"is one level too high (give '{root / folders[0]}' as the root)",
            stacklevel=3,
        )


def _refuse_wrapped_classes(folder: Path) -> None:
    """Refuse a class-per-folder root whose one folder holds no image itself but sub-folders
    of images (``source/images/<class>/``): its classes are one level down, and the split
    would be read as one class.

    Raises:
        DatasetError: naming the folder to give as the root instead.
    """
    subfolders = [d for d in folder.iterdir() if d.is_dir() and not is_hidden_name(d.name)]
    if subfolders and not list_images(folder, recursive=False):
        names = ", ".join(sorted(d.name for d in subfolders)[:5])
        raise DatasetError(
            f"'{folder.parent}' holds one folder, '{folder.name}', whose sub-folders ({names}"
            f"{', ...' if len(subfolders) > 5 else ''}) hold the images: read as it is, the "
            f"split would have the one class '{folder.name}'. If those sub-folders are the "
            f"classes, give '{folder}' as the root"
        )
