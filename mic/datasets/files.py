"""Files as users bring them: image listing that skips hidden files, image loading that
converts every image mode to 8-bit RGB (or refuses it, naming the file) and applies the EXIF
orientation, image sizes read from file headers, and text files as editors save them.

Shared by every reader in ``mic.datasets``.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mic.core.errors import ConfigError, DatasetError

#: the image files that readers list (JPEG under its four extensions, read by Pillow)
IMAGE_EXTENSIONS = (
    *(".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp"),
    *(".ppm", ".pgm", ".tif", ".tiff", ".webp"),
)
#: image formats that mic does not read: left out of folder listings, with a warning
UNREAD_IMAGE_EXTENSIONS = (
    *(".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".ico"),
    *(".tga", ".pbm", ".pnm", ".psd", ".svg", ".dng", ".exr", ".hdr", ".dds", ".pcx"),
)
#: the EXIF tag that says how the stored pixels are turned to show the image upright
EXIF_ORIENTATION = 0x0112
#: folders that archivers and tools write beside the data (macOS zips' resource forks)
HIDDEN_FOLDERS = ("__MACOSX",)
#: image modes that load as RGB: converted by Pillow, or scaled to 8 bits here (16- and 32-bit
#: greyscale, float greyscale in [0, 1])
RGB_CONVERTIBLE = frozenset(
    {"1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB"}
    | {"HSV", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
)


class ReaderOptionError(DatasetError):
    """A reader's data that one of its arguments would accept as they are.

    Args:
        message: what is wrong, advising to "pass <option>".
        option: that argument, e.g. ``allow_empty_classes=true``: ``mic-train`` names it as
            the override of the reader's config key instead
            (``++dataset.source.allow_empty_classes=true``).
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


def is_image(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def is_hidden_name(name: str) -> bool:
    """Hidden files and folders (``.name``: ``.ipynb_checkpoints``, ``.DS_Store``, macOS's
    AppleDouble ``._name.png``) and archivers' side folders (``__MACOSX``)."""
    return name.startswith(".") or name in HIDDEN_FOLDERS


def is_hidden(path: str | Path, root: str | Path | None = None) -> bool:
    """Whether ``path`` or one of its folders below ``root`` is hidden (``is_hidden_name``)."""
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(is_hidden_name(p) for p in parts)


def path_order(path: Path) -> list[str]:
    """A sort key giving pathlib's order of paths (part by part), without its slow compare."""
    return str(path).split(os.sep)


def visible(paths: list[Path], root: Path) -> list[Path]:
    """``paths`` (found under ``root``, e.g. by its ``glob``) without the hidden ones."""
    start = len(str(root).rstrip(os.sep)) + 1  # string slices: pathlib's parsing is slow
    return [p for p in paths if not any(map(is_hidden_name, str(p)[start:].split(os.sep)))]


def check_transform(transform: object, reader: str) -> None:
    """Raise ``ConfigError`` for a ``transform`` that is neither None nor callable (a number
    given in its place, as the class count).

    Args:
        transform: a reader's ``transform`` argument.
        reader: the reader's class name, for the message.
    """
    if transform is None or callable(transform):
        return
    count = " (the class count is num_classes=...)" * isinstance(transform, int)
    raise ConfigError(
        f"{reader}: transform must be callable (a function or a torchvision transform) or "
        f"None, got {type(transform).__name__} {transform!r}{count}"
    )


#: Cityscapes' test split read with labels (placeholders: the benchmark server holds them)
CITYSCAPES_TEST_WITHHELD = (
    "Cityscapes' test split withholds its labels (its gtFine files are placeholders; the "
    "benchmark server scores test predictions): score on split='val' (mic-train: "
    "dataset.test.split=val), or read the test images without labels (labelled=false)"
)


def check_folder(
    root: str | Path, what: str = "dataset", dataset_root: str | Path | None = None
) -> Path:
    """The folder as a Path; a clear error when it is missing or not a folder (for a
    folder of ``dataset_root``, naming a folder one level below or above that holds it)."""
    if root is None:  # (a config's root set to null: was "folder 'None' does not exist")
        raise DatasetError(
            f"{what} folder is null: give its path (mic-train: a test set is left out with "
            "dataset.test=null, not with a null folder)"
        )
    path = Path(os.path.expanduser(str(root)))
    if not path.exists():
        hint = root_hint(path, Path(dataset_root)) if dataset_root is not None else ""
        raise DatasetError(
            f"{what} folder '{path}' does not exist; check the path in the dataset config "
            f"(relative paths are taken from the directory you run in){hint}"
        )
    if not path.is_dir():
        raise DatasetError(f"{what} path '{path}' is a file, not a folder")
    return path


def root_hint(path: Path, root: Path) -> str:
    """``; '<folder>' holds '<name>/': is that the dataset root?`` when a folder one level
    below ``root``, or one or two above it, holds the first folder of ``path`` (a folder of
    the dataset ``root``) that ``root`` lacks; where ``root`` holds it, which folder of
    ``path`` is missing and what its parent holds (a split not downloaded); empty otherwise."""
    try:
        parts = path.relative_to(root).parts
        first = parts[0]
    except (ValueError, IndexError):
        return ""
    if (root / first).is_dir():  # the root is right: a folder further down is missing
        parent = root / first
        for part in parts[1:]:
            if not (parent / part).is_dir():
                break
            parent = parent / part
        held = sorted(p.name + "/" for p in parent.iterdir() if p.is_dir())[:6]
        return (
            f"; '{parent}' holds {', '.join(held) or 'no folder'} but not '{part}/' (a split "
            "or folder of the published layout that is not there: the run reads it)"
            if parent != path
            else ""
        )
    below = sorted(p.parent for p in root.glob(f"*/{glob.escape(first)}") if p.is_dir())
    above = [up for up in list(root.resolve().parents)[:2] if (up / first).is_dir()]

    def held(folder: Path) -> int:  # how much of the path it holds (ACDC's rgb_anon/ beside
        n = 0  # Dark Zurich's, without its val/night/)
        while n < len(parts) and (folder.joinpath(*parts[: n + 1])).is_dir():
            n += 1
        return -n

    found = sorted(below, key=held) or sorted(above, key=held)
    if not found:
        return ""
    where = "" if below else " (the folder given lies inside it)"
    return f"; '{found[0]}' holds '{first}/': is that the dataset root{where}?"


def is_unread_image(path: str | Path) -> bool:
    """A file of an image format that mic does not read (GIF, HEIC...): left out of the
    listings, which say how many were."""
    return str(path).lower().endswith(UNREAD_IMAGE_EXTENSIONS)


def list_images(
    root: Path, recursive: bool = True, left_out: list[Path] | None = None
) -> list[Path]:
    """The image files under ``root`` (sorted), hidden files and folders left out.

    Each real folder is walked once, so that a symbolic link to a folder above it (a loop)
    or beside it does not list the same images twice. Files of image formats that mic does
    not read (``UNREAD_IMAGE_EXTENSIONS``: GIF...) are appended to ``left_out`` when given.
    """
    if not recursive:
        files = [p for p in root.iterdir() if p.is_file() and not is_hidden_name(p.name)]
        if left_out is not None:
            left_out += sorted(p for p in files if is_unread_image(p))
        return sorted(p for p in files if is_image(p))
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:  # walked already (a link loop, or two links)
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not is_hidden_name(d)]  # never walk into them
        found += [Path(folder, f) for f in files if is_image(f) and not is_hidden_name(f)]
        if left_out is not None:
            left_out += [
                Path(folder, f) for f in files if is_unread_image(f) and not is_hidden_name(f)
            ]
    if left_out is not None:
        left_out.sort(key=path_order)
    return sorted(found, key=path_order)


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8; 1: upright) known from the header, without decoding."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1  # a PNG's getexif() would decode the whole image to look past its pixels
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION, 1))
    except (TypeError, ValueError, OSError, SyntaxError):  # a malformed EXIF block
        return 1
    return value if 1 <= value <= 8 else 1


_LOW_BITS_SAID: list[str] = []  # the first file warned of, once per process


def _warn_low_bits(path: str | Path, mode: str, hi: float) -> None:
    """Warn, once per process, of an integer image whose values fill 12 bits or fewer of the
    16 that ``to_rgb`` scales from (a 12-bit camera's or an 8-bit image saved as 16-bit)."""
    if _LOW_BITS_SAID:
        return
    _LOW_BITS_SAID.append(str(path))
    warnings.warn(
        f"image '{path}' (16-bit, {mode}) has values that reach only {hi:g} of the 65535 "
        f"that 16-bit images are scaled from (v * 255 / 65535): it loads as a near-black 8-bit "
        "image with few grey levels (12-bit data, or 8-bit data stored in 16 bits, does so); "
        "rescale such images to the full 16 bits or save them as 8-bit images (each process, "
        "a data-loading worker too, names the first such file it reads)",
        stacklevel=3,
    )


def to_rgb(img: Image.Image, path: str | Path = "") -> Image.Image:
    """An 8-bit RGB copy of a loaded image of any mode in ``RGB_CONVERTIBLE``.

    16-bit greyscale (``I;16*``, and ``I`` with values in 0..65535, as Pillow opens 16-bit
    PNGs and TIFFs) is scaled to 8 bits (v * 255 / 65535, rounded), where Pillow's own
    conversion saturates to white; float greyscale (``F``) in [0, 1] is scaled by 255; alpha
    is dropped; palette, CMYK, YCbCr, LAB and HSV images convert with Pillow.

    Raises:
        DatasetError: for ``I`` outside 0..65535, ``F`` outside [0, 1], or a mode Pillow
            cannot convert, naming the file.
    """
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I") or mode == "F":
        values = np.asarray(img)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if mode == "F":
            if lo < 0 or hi > 1 or not np.isfinite(values).all():
                raise DatasetError(
                    f"image '{path}' holds floating-point values in [{lo:g}, {hi:g}]; mic reads "
                    "float images with values in [0, 1]: save it as an 8- or 16-bit image"
                )
            grey = np.rint(values * 255.0)
        else:
            if lo < 0 or hi > 65535:
                raise DatasetError(
                    f"image '{path}' is a {mode} image with values in [{lo:g}, {hi:g}]; mic "
                    "reads integer images as 16-bit (0..65535): save it as an 8- or 16-bit image"
                )
            grey = (values.astype(np.uint32) * 255 + 32767) // 65535
            if 0 < hi < 4096:
                _warn_low_bits(path, mode, hi)
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    try:
        if mode == "La":  # premultiplied: Pillow converts it to LA, not to L or RGB
            img = img.convert("LA")
        return img.convert("RGB")
    except ValueError as e:
        raise DatasetError(
            f"image '{path}' is a {mode} image, which cannot be converted to RGB ({e}); save it "
            "as an 8-bit RGB or greyscale image"
        ) from e


#: what Pillow raises for a file it cannot read (a decompression bomb: more pixels than
#: ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 Mpx, is no OSError)
UNREADABLE = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


#: what to do with an image of more pixels than Pillow opens, after "store a downscaled or
#: tiled copy" (here and in the data check's problem)
PILLOW_LIMIT_FIX = (
    "(mic reads every image whole), or, running from Python, lift Pillow's limit before the "
    "run (PIL.Image.MAX_IMAGE_PIXELS = None)"
)


def unreadable(path: str | Path, e: Exception, what: str = "image") -> DatasetError:
    """The message of a file Pillow could not read (``UNREADABLE``)."""
    if isinstance(e, Image.DecompressionBombError):
        return DatasetError(
            f"{what} '{path}' has more pixels than Pillow opens ({e}); store a downscaled or "
            f"tiled copy {PILLOW_LIMIT_FIX}"
        )
    return DatasetError(
        f"cannot read {what} '{path}' ({e.__class__.__name__}: {e}); remove or replace the file"
    )


def load_image(
    path: str | Path, mode: str = "RGB", apply_exif_orientation: bool = True
) -> Image.Image:
    """Open an image file fully (so a truncated file fails here, naming the file).

    Args:
        path: the file.
        mode: ``"RGB"`` (every mode converted as ``to_rgb`` says) or another Pillow mode
            (e.g. ``"I"`` for instance-id maps), converted by Pillow.
        apply_exif_orientation: turn the pixels as the EXIF orientation tag says (what image
            viewers show, and what annotation tools draw boxes on; PIL's
            ``ImageOps.exif_transpose``); False: the stored pixels.

    Raises:
        DatasetError: an unreadable file, or a mode that cannot be converted.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if apply_exif_orientation and _orientation(img) != 1:
                img = ImageOps.exif_transpose(img)
            return to_rgb(img, path) if mode == "RGB" else img.convert(mode)
    except UNREADABLE as e:
        if isinstance(e, DatasetError):
            raise
        raise unreadable(path, e) from e


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding its pixels."""

    width: int  #: as loaded: after the EXIF orientation, when it is applied
    height: int
    mode: str  #: Pillow's mode of the stored pixels
    stored_size: tuple[int, int]  #: (width, height) of the stored pixels
    orientation: int  #: the EXIF orientation (1: upright)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def read_header(path: str | Path, apply_exif_orientation: bool = True) -> ImageHeader:
    """Size, mode and EXIF orientation of an image from its header (Pillow reads the size
    without decoding the pixels: tens of microseconds a file).

    Raises:
        DatasetError: the file is missing or is not an image Pillow can identify.
    """
    try:
        with Image.open(path) as img:
            stored = img.size
            orientation = _orientation(img)
            mode = img.mode
    except FileNotFoundError as e:
        raise DatasetError(f"image '{path}' does not exist") from e
    except UNREADABLE as e:
        raise unreadable(path, e) from e
    turned = apply_exif_orientation and orientation in (5, 6, 7, 8)  # a quarter turn
    w, h = (stored[1], stored[0]) if turned else stored
    return ImageHeader(w, h, mode, stored, orientation)


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


#: the endings of the text files a reader takes (COCO json, VOC split lists, XML), named
#: when a folder is given in place of one
TEXTS = (".json", ".txt", ".xml")


def read_text(path: str | Path, what: str = "text file") -> str:
    """A text file as editors save it: UTF-8, with or without a byte-order mark (UTF-16 and
    UTF-32 with one, as some Windows editors save), any line ends (``\\n``, ``\\r\\n``,
    ``\\r``; all become ``\\n``).

    Raises:
        DatasetError: the file is missing, is a folder, or is not text in one of these
            encodings.
    """
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in TEXTS)
        hint = f" (it holds {', '.join(inside[:3])})" if inside else ""
        raise DatasetError(
            f"{what} '{path}' is a folder, not a file{hint}: give the path of the file itself"
        )
    if not path.is_file():
        raise DatasetError(f"{what} '{path}' does not exist; check the dataset paths")
    data = path.read_bytes()
    encoding = "utf-8"
    for bom, name in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom) :], name
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{what} '{path}' is not {encoding.upper()} text (byte {e.start}: {e.reason}); save "
            "it as UTF-8"
        ) from e
    return text.replace("\r\n", "\n").replace("\r", "\n")
