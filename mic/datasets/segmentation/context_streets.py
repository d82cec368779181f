"""A street-scene benchmark where context decides: on the target, the look-alike classes
differ only by their surroundings. No download; generated in memory from a fixed seed.

The eight classes of ``StreetScenes`` (road, sidewalk, building, vegetation, sky, car, person,
pole) in a one-point perspective street: a road narrowing to a vanishing point, a sidewalk
along each side, separated from the road by a kerb (a one-pixel light line, labelled sidewalk,
that looks the same from both sides), walls of buildings and trees rising from the sidewalks'
outer edges, sky above, cars on the road.

Where context decides, on the target ("real") domain:

- road vs. sidewalk: one surface, the same colour and texture distribution. What tells them
  apart is where a pixel lies: between the kerbs (with the cars) or between a kerb and a wall.
- person vs. pole: the same shape (a vertical bar; height and width set by the distance) and
  the same colour distribution. Poles stand on the kerb; people stand on the sidewalk near the
  wall, between half and nine tenths of the way from the kerb to the wall.

The context that decides spans several MIC blocks (4 px blocks at the 64 px default, 1/16 of
the side as published): a road is 15 to 40 px wide near the camera, a sidewalk 8 to 16 px.

The "source" (synthetic) paints every class in a clean colour of its own, except that in
``source_lookalike`` of the scenes the sidewalk takes the road's colour and in as many (drawn
independently) the poles take the people's: the source labels teach both appearance and
context. The target pulls colours halfway towards realistic ones, textures every region with
crops of the photos scikit-image ships, and adds a lighting gradient, blur and noise.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from mic.core.errors import ConfigError
from mic.datasets.segmentation.streets import (
    _REAL_COLOURS,
    _SOURCE_COLOURS,
    BUILDING,
    CAR,
    CLASSES,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SKY,
    VEGETATION,
    StreetScenes,
    _camera,
    _textures,
)

#: the kerb's colour in both domains (before texture and lighting)
_KERB = np.array([0.80, 0.80, 0.76], np.float32)
#: the colour of the shared surface of road and sidewalk on the target
_SURFACE = 0.5 * (_SOURCE_COLOURS[ROAD] + _REAL_COLOURS[ROAD])
#: people and poles on the target: one colour distribution (mean, spread per channel)
_FIGURE = (0.5 * (_SOURCE_COLOURS[PERSON] + _REAL_COLOURS[PERSON]), 0.08)


def context_layout(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One scene's label map (size x size, uint8) and an id map of its parts (int32): 1 for
    the kerbs, 2 + k for the k-th person or pole (so that each gets its own colour), 0
    elsewhere."""
    h = w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    horizon = rng.uniform(0.30, 0.40) * h
    vx = rng.uniform(0.4, 0.6) * w
    depth = np.clip((y - horizon) / (h - horizon), 0, None)  # 0 at the horizon, 1 at the bottom
    road_half = rng.uniform(0.12, 0.30) * w * depth
    walk = rng.uniform(0.13, 0.25) * w * depth
    kerb_width = 0.6 + 0.9 * depth
    dx = np.abs(x - vx)
    label = np.full((h, w), SKY, np.uint8)
    parts = np.zeros((h, w), np.int32)
    # walls of buildings or trees, rising from the sidewalks' outer edges to a skyline
    slope = rng.uniform(0.6, 1.4)
    top = horizon - slope * dx - rng.uniform(2, 6)
    edges = np.sort(rng.uniform(0, w, rng.integers(2, 6)))
    block = np.searchsorted(edges, x)
    kinds = rng.choice([BUILDING, VEGETATION], size=len(edges) + 1, p=[0.65, 0.35])
    jitter = rng.uniform(-5, 2, len(edges) + 1)[block]
    wall = y >= top + jitter
    label[wall] = kinds[block][wall]
    ground = y >= horizon
    road = ground & (dx < road_half)
    walk_mask = ground & (dx >= road_half) & (dx < road_half + walk)
    label[road] = ROAD
    label[walk_mask] = SIDEWALK
    kerb = ground & (dx >= road_half) & (dx < road_half + kerb_width) & (depth > 0.05)
    parts[kerb] = 1

    def row_of(base: float) -> int:
        return int(min(max(base, 0), h - 1))

    # cars on the road
    for _ in range(rng.integers(0, 4)):
        base = rng.uniform(horizon + 3, h - 1)
        s = max((base - horizon) / (h - horizon), 0.05)
        cw, ch = 4 + 20 * s, 2 + 10 * s
        cx = vx + rng.uniform(-0.7, 0.7) * max(road_half[row_of(base), 0], 2)
        car = (np.abs(x - cx) < cw / 2) & (y <= base) & (y > base - ch)
        label[car] = CAR
    # people and poles: one shape, placed by class
    figures = [PERSON] * int(rng.integers(0, 4)) + [POLE] * int(rng.integers(0, 4))
    for k, kind in enumerate(figures):
        base = rng.uniform(horizon + 0.25 * (h - horizon), h - 1)
        s = (base - horizon) / (h - horizon)
        r = row_of(base)
        side = rng.choice([-1, 1])
        if kind == POLE:  # on the kerb
            offset = road_half[r, 0] + 0.5 * kerb_width[r, 0]
        else:  # on the sidewalk, towards the wall
            offset = road_half[r, 0] + rng.uniform(0.5, 0.9) * walk[r, 0]
        px = vx + side * offset
        height, width = (6 + 16 * s) * rng.uniform(0.9, 1.1), 1.6 + 2.4 * s
        bar = (np.abs(x - px) < width / 2) & (y <= base + 0.5) & (y > base - height)
        label[bar] = kind
        parts[bar] = 2 + k
    # the kerb is sidewalk: drop what a car covers or what lies beyond a thin far sidewalk
    parts[(parts == 1) & (label != SIDEWALK)] = 0
    return label, parts


def _texture(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    textures = _textures(max(128, 2 * max(h, w)))
    t = textures[rng.integers(len(textures))]
    r0, c0 = rng.integers(t.shape[0] - h), rng.integers(t.shape[1] - w)
    return 1 + strength * (t[r0 : r0 + h, c0 : c0 + w] - 1)


def render_context(
    label: np.ndarray,
    parts: np.ndarray,
    domain: str,
    rng: np.random.Generator,
    source_lookalike: float = 0.5,
) -> np.ndarray:
    """The H x W x 3 image in [0, 1] of a scene (``context_layout``) in ``domain``."""
    h, w = label.shape
    figures = np.unique(parts[parts >= 2])
    if domain == "source":
        colours = _SOURCE_COLOURS + rng.normal(0, 0.03, _SOURCE_COLOURS.shape).astype(np.float32)
        colours[POLE] = np.array([0.95, 0.75, 0.10], np.float32)  # its own, unlike the people's
        if rng.uniform() < source_lookalike:
            colours[SIDEWALK] = colours[ROAD]
        if rng.uniform() < source_lookalike:
            colours[POLE] = colours[PERSON]
        image = colours[label]
        image[parts == 1] = _KERB
        image = image + rng.normal(0, 0.02, image.shape).astype(np.float32)
        return np.clip(image, 0, 1)
    colours = 0.5 * _SOURCE_COLOURS + 0.5 * _REAL_COLOURS
    colours = colours + rng.normal(0, 0.04, colours.shape).astype(np.float32)
    surface = _SURFACE + rng.normal(0, 0.04, 3).astype(np.float32)
    colours[ROAD] = colours[SIDEWALK] = surface
    image = colours[label]
    tex = np.empty((h, w), np.float32)
    for c in range(len(CLASSES)):  # each region its own crop (road and sidewalk alike)
        where = label == c
        if where.any():
            tex[where] = _texture(rng, h, w, 0.35 if c not in (CAR,) else 0.2)[where]
    for part in figures:  # each person and pole its own colour from one distribution
        where = parts == part
        mean, spread = _FIGURE
        image[where] = mean + rng.normal(0, spread, 3).astype(np.float32)
        tex[where] = _texture(rng, h, w, 0.2)[where]
    kerb = parts == 1
    image[kerb] = _KERB
    return _camera(image * tex[..., None], rng, max_blur=0.7)


@lru_cache(maxsize=8)
def make_context_streets(
    domain: str,
    split: str,
    count: int,
    size: int = 64,
    seed: int = 0,
    source_lookalike: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor]:
    """Images in [0, 1] (N x 3 x size x size), labels (N x size x size, int64) and part ids
    (N x size x size, int32; see ``context_layout``) of one split."""
    stream = {"source": 1, "target": 2}[domain] * 10 + {"train": 1, "test": 2}[split]
    rng = np.random.default_rng([seed, stream, 7])
    images = np.empty((count, size, size, 3), np.float32)
    labels = np.empty((count, size, size), np.uint8)
    parts = np.empty((count, size, size), np.int32)
    for i in range(count):
        labels[i], parts[i] = context_layout(rng, size)
        images[i] = render_context(labels[i], parts[i], domain, rng, source_lookalike)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(parts)


class ContextStreets(StreetScenes):
    """One split of one domain of the context street-scene benchmark (map-style dataset).

    Samples are those of ``StreetScenes``: a normalised image (3, size, size), float32, and
    with ``labelled`` its label map (size, size), int64 in [0, 8). ``parts`` holds the part
    ids of every scene (N, size, size), int32 (see ``context_layout``).

    Args:
        domain: ``"source"`` (synthetic) or ``"target"`` ("real").
        split: ``"train"`` or ``"test"``.
        labelled: samples are ``(image, label)``; False: the image alone.
        count: number of scenes (default 2000 for train, 500 for test).
        size: image side in pixels (64 by default; MIC's blocks are 1/16 of it).
        flip: random horizontal flips (training augmentation).
        source_lookalike: share of source scenes whose sidewalk is painted like the road
            (and, drawn apart, whose poles are painted like the people).
        seed: the scenes (fixed for a benchmark, not the training seed).

    Raises:
        ConfigError: an unknown domain or split, or a size below 32 px.
    """

    def _generate(
        self, domain: str, split: str, count: int, size: int, seed: int, source_lookalike: float
    ) -> tuple[Tensor, Tensor]:
        """Images in [0, 1] (N, 3, size, size) and labels (N, size, size) of the split; its
        part ids kept as ``self.parts``."""
        if size < 32:
            raise ConfigError(
                f"context street scenes need images of at least 32 px (dataset.size), got "
                f"size={size}; use 64, the benchmark's default"
            )
        images, labels, self.parts = make_context_streets(
            domain, split, count, size, seed, source_lookalike
        )
        return images, labels
