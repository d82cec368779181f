"""A minimal PNG writer for tests: 8- or 16-bit files with chosen row filters and IDAT split
over several chunks, which libraries decode but rarely write (libpng picks filters itself,
Pillow cannot write 16-bit colour at all)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def write_raw_png(
    path: str | Path, array: np.ndarray, filters: tuple[int, ...] = (0,), idat_chunks: int = 1
) -> None:
    """Write an H x W (x C) uint8 / uint16 array as a PNG; rows cycle through ``filters``
    (0 none, 1 sub, 2 up, 3 average, 4 paeth) and the compressed data is split over
    ``idat_chunks`` IDAT chunks."""
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError("write_raw_png takes uint8 or uint16 arrays")
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
    data = zlib.compress(bytes(body))
    step = -(-len(data) // idat_chunks)
    idats = [_chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step)]
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    Path(path).write_bytes(
        _SIGNATURE + _chunk(b"IHDR", ihdr) + b"".join(idats) + _chunk(b"IEND", b"")
    )
