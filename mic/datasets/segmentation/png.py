"""16-bit PNG files (SYNTHIA's label format), which Pillow reads only as 8-bit.

SYNTHIA RAND-CITYSCAPES stores labels as 16-bit RGB PNGs with the class id in the red
channel. Pillow truncates 16-bit colour PNGs to their high byte (which is 0 for every class
id), so they are decoded here: with OpenCV when it is installed (fast), otherwise with a small
NumPy decoder of the PNG format (non-interlaced, any filter; slower, no extra dependency).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from mic.core.errors import DatasetError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def read_png(path: str | Path) -> np.ndarray:
    """The raw samples of a PNG file: H x W (grey) or H x W x C, uint8 or uint16, RGB order."""
    try:
        import cv2  # type: ignore[import-not-found]
    except ImportError:
        return decode_png(Path(path).read_bytes(), path)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DatasetError(f"cannot read PNG file '{path}'; remove or replace the file")
    if array.ndim == 3 and array.shape[2] >= 3:  # OpenCV gives BGR(A)
        array = array[..., [2, 1, 0, *range(3, array.shape[2])]]
    return array


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter_row(kind: int, row: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    """Undo one row's None, Sub or Up filter (``row`` and ``prior`` as int32 byte arrays);
    images with Average or Paeth rows go through ``_unfilter_wavefront``."""
    if kind == 0:
        return row
    if kind == 2:
        return (row + prior) & 0xFF
    if kind == 1:  # Sub: a running sum over the bytes of the same sample position
        lanes = row.reshape(-1, bpp)
        return (np.cumsum(lanes, axis=0) & 0xFF).reshape(-1)
    raise ValueError(f"unknown PNG filter type {kind}")


def _unfilter_wavefront(filtered: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """Undo the filters of all rows at once, one anti-diagonal of pixels at a time: a pixel
    depends only on its left, upper and upper-left neighbours, which lie on earlier
    diagonals, so H + W vectorised steps replace H x W scalar ones."""
    height, width, bpp = filtered.shape
    out = np.zeros((height + 1, width + 1, bpp), np.int32)  # a zero row above, column left
    for d in range(height + width - 1):
        ys = np.arange(max(0, d - width + 1), min(height, d + 1))
        xs = d - ys
        a, b, c = out[ys + 1, xs], out[ys, xs + 1], out[ys, xs]
        k = kinds[ys][:, None]
        pred = np.where(
            k == 1,
            a,
            np.where(
                k == 2, b, np.where(k == 3, (a + b) >> 1, np.where(k == 4, _paeth(a, b, c), 0))
            ),
        )
        out[ys + 1, xs + 1] = (filtered[ys, xs] + pred) & 0xFF
    return out[1:, 1:]


def decode_png(data: bytes, name: object = "<bytes>") -> np.ndarray:
    """Decode a non-interlaced 8- or 16-bit grey / grey-alpha / RGB / RGBA PNG with NumPy."""
    try:
        if data[:8] != _SIGNATURE:
            raise ValueError("not a PNG file")
        pos, idat, header = 8, [], None
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
            pos += 12 + length
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat.append(body)
            elif kind == b"IEND":
                break
        if header is None:
            raise ValueError("no IHDR chunk")
        width, height, depth, colour, _, _, interlace = header
        if colour not in _CHANNELS or depth not in (8, 16) or interlace:
            raise ValueError(f"unsupported PNG (colour type {colour}, depth {depth}, interlaced)")
        channels = _CHANNELS[colour]
        bpp = channels * depth // 8
        stride = width * bpp
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
        raw = raw[: height * (stride + 1)].reshape(height, stride + 1)
        kinds = raw[:, 0].astype(np.int32)
        if int(kinds.max(initial=0)) > 4:
            raise ValueError(f"unknown PNG filter type {int(kinds.max())}")
        filtered = raw[:, 1:].astype(np.int32)
        if np.isin(kinds, (3, 4)).any():
            out = _unfilter_wavefront(filtered.reshape(height, width, bpp), kinds)
            out = out.reshape(height, stride).astype(np.uint8)
        else:
            out = np.empty((height, stride), np.uint8)
            prior = np.zeros(stride, np.int32)
            for y in range(height):
                row = _unfilter_row(int(kinds[y]), filtered[y], prior, bpp)
                out[y] = row
                prior = row
    except (ValueError, zlib.error, struct.error) as e:
        raise DatasetError(
            f"cannot read PNG file '{name}' ({e}); remove or replace the file"
        ) from e
    samples = out.view(">u2").astype(np.uint16) if depth == 16 else out
    samples = samples.reshape(height, width, channels)
    return samples[..., 0] if channels == 1 else samples


def write_png(path: str | Path, array: np.ndarray, filters: tuple[int, ...] = (0,)) -> None:
    """Write an H x W (x C) uint8 / uint16 array as a PNG; rows cycle through ``filters``
    (0 none, 1 sub, 2 up, 3 average, 4 paeth), which lets tests exercise every decoder path."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError("write_png takes uint8 or uint16 arrays")
    grid = array[..., None] if array.ndim == 2 else array
    height, width, channels = grid.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    depth = 16 if array.dtype == np.uint16 else 8
    rows = grid.astype(">u2").view(np.uint8) if depth == 16 else grid
    rows = np.ascontiguousarray(rows).reshape(height, -1).astype(np.int32)
    bpp = channels * depth // 8
    body = bytearray()
    prior = np.zeros(rows.shape[1], np.int32)
    for y in range(height):
        kind = filters[y % len(filters)]
        row = rows[y]
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), prior[:-bpp]])
        predictor = {
            0: np.zeros_like(row),
            1: left,
            2: prior,
            3: (left + prior) >> 1,
            4: _paeth(left, prior, up_left),
        }[kind]
        body.append(kind)
        body.extend(((row - predictor) & 0xFF).astype(np.uint8).tobytes())
        prior = row

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    Path(path).write_bytes(
        _SIGNATURE
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(body)))
        + chunk(b"IEND", b"")
    )
