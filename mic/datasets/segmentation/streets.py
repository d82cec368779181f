"""The bundled segmentation benchmark: procedurally generated street scenes, no download.

Eight classes (road, sidewalk, building, vegetation, sky, car, person, pole) laid out with a
one-point perspective: a horizon, a road narrowing towards a vanishing point, sidewalks along
it, facades of buildings and trees beyond, sky above, cars on the road, people on the
sidewalks and thin poles at the kerb.

Where context decides:
- road vs. sidewalk: in the target, half of the sidewalk tiles get exactly the road's
  appearance (colour and texture); in the source, the whole sidewalk of ``source_lookalike``
  of the scenes is painted like the road. Only the geometry (the kerb lines, the facades
  behind) tells them apart.
- person vs. pole: both draw their colour from one distribution in both domains; only the
  shape (a short body with a head vs. a tall thin post) and the place tell them apart.

Domains: the "source" is synthetic, with one clean, distinctive colour per class and a little
noise; the "target" is "real": colours pulled halfway towards realistic ones, every region
textured with crops of the photos scikit-image ships, a lighting gradient, blur and noise.
Everything is generated in memory from a fixed seed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mic.core.errors import ConfigError, is_whole
from mic.datasets.segmentation.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole")
PALETTE = tuple(CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(c)] for c in CLASSES)
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR, PERSON, POLE = range(8)
#: pairs that look alike locally (the benchmark reports their IoU)
CONFUSABLE = ("road", "sidewalk", "person", "pole")
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

# source: clean, distinctive colours (person and pole share one distribution)
_SOURCE_COLOURS = np.array(
    [
        [0.50, 0.25, 0.50],  # road
        [0.95, 0.15, 0.90],  # sidewalk
        [0.30, 0.30, 0.30],  # building
        [0.40, 0.60, 0.10],  # vegetation
        [0.30, 0.55, 0.75],  # sky
        [0.05, 0.05, 0.60],  # car
        [0.85, 0.10, 0.20],  # person
        [0.85, 0.10, 0.20],  # pole
    ],
    np.float32,
)
# what "real" surfaces look like; the target's colours lie halfway between
_REAL_COLOURS = np.array(
    [
        [0.35, 0.35, 0.37],  # asphalt
        [0.55, 0.53, 0.50],  # paving
        [0.55, 0.45, 0.38],  # brick and plaster
        [0.20, 0.38, 0.15],  # foliage
        [0.70, 0.80, 0.90],  # haze
        [0.30, 0.30, 0.45],  # paint
        [0.45, 0.40, 0.35],  # clothes
        [0.45, 0.40, 0.35],  # metal
    ],
    np.float32,
)
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel")


@lru_cache(maxsize=2)
def _textures(side: int = 128) -> tuple[np.ndarray, ...]:
    """Grey-level photos (mean 1) whose crops texture the target's regions."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import rescale

    out = []
    for name in _PHOTOS:
        img = getattr(skimage.data, name)()
        img = rgb2gray(img) if img.ndim == 3 else img.astype(np.float32) / 255.0
        img = rescale(img.astype(np.float32), side / min(img.shape), anti_aliasing=True)
        out.append((img / max(float(img.mean()), 1e-3)).astype(np.float32))
    return tuple(out)


def _layout(rng: np.random.Generator, size: int) -> np.ndarray:
    """The label map of one scene."""
    h = w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = rng.uniform(0.34, 0.47) * h
    vx = rng.uniform(0.35, 0.65) * w
    depth = np.clip((y - horizon) / (h - horizon), 0, None)  # 0 at the horizon, 1 at the bottom
    road_half = rng.uniform(0.18, 0.36) * w * depth
    walk = rng.uniform(0.15, 0.3) * w * depth
    dx = x - vx
    label = np.full((h, w), SKY, np.uint8)
    # facades: blocks of buildings or trees along both sides, taller away from the centre
    slope = rng.uniform(0.5, 1.3)
    top = horizon - slope * np.abs(dx) - rng.uniform(1, 5)
    edges = np.sort(rng.uniform(0, w, rng.integers(2, 6)))
    block = np.searchsorted(edges, x)
    kinds = rng.choice([BUILDING, VEGETATION], size=len(edges) + 1, p=[0.6, 0.4])
    jitter = rng.uniform(-6, 2, len(edges) + 1)[block]
    facade = y >= top + jitter
    label[facade] = kinds[block][facade]
    ground = y >= horizon
    outer = road_half + walk
    sides = rng.choice(["both", "left", "right"], p=[0.7, 0.15, 0.15])
    walk_mask = ground & (np.abs(dx) >= road_half) & (np.abs(dx) < outer)
    if sides == "left":
        walk_mask &= dx < 0
    elif sides == "right":
        walk_mask &= dx > 0
    label[ground & (np.abs(dx) < road_half)] = ROAD
    label[walk_mask] = SIDEWALK
    # beyond a missing sidewalk the road goes on to the facade
    label[ground & ~walk_mask & (np.abs(dx) >= road_half) & (np.abs(dx) < outer)] = ROAD

    def scale_at(row: float) -> float:
        return max((row - horizon) / (h - horizon), 0.05)

    # cars on the road
    for _ in range(rng.integers(0, 4)):
        row = rng.uniform(horizon + 3, h - 1)
        s = scale_at(row)
        cw, chh = 4 + 22 * s, 2 + 11 * s
        cx = vx + rng.uniform(-0.8, 0.8) * max(road_half[int(min(row, h - 1)), 0], 2)
        car = (np.abs(x - cx) < cw / 2) & (y <= row) & (y > row - chh)
        label[car] = CAR
    # people on the sidewalks, poles at the kerb
    for kind in [PERSON] * int(rng.integers(0, 4)) + [POLE] * int(rng.integers(0, 3)):
        row = rng.uniform(horizon + 2, h - 1)
        s = scale_at(row)
        r = int(min(row, h - 1))
        side = rng.choice([-1, 1])
        rh, wk = road_half[r, 0], walk[r, 0]
        if kind == PERSON:
            px = vx + side * (rh + rng.uniform(0.2, 0.8) * wk)
            height, width = 6 + 14 * s, 1.5 + 2.5 * s
            body = (np.abs(x - px) < width / 2) & (y <= row) & (y > row - height * 0.8)
            head = (np.abs(x - px) < width * 0.35 + 0.5) & (y <= row - height * 0.8)
            head &= y > row - height
            label[body | head] = PERSON
        else:
            px = vx + side * (rh + wk * rng.uniform(0.85, 1.0))
            height, width = 16 + 30 * s, 1.0 + 1.0 * s
            post = (np.abs(x - px) < width / 2) & (y <= row) & (y > row - height)
            label[post] = POLE
    return label


def _render(
    label: np.ndarray, domain: str, rng: np.random.Generator, source_lookalike: float
) -> np.ndarray:
    h, w = label.shape
    if domain == "source":
        colours = _SOURCE_COLOURS + rng.normal(0, 0.03, _SOURCE_COLOURS.shape).astype(np.float32)
        if rng.uniform() < source_lookalike:
            colours[SIDEWALK] = colours[ROAD]
        image = colours[label]
        image = image + rng.normal(0, 0.02, image.shape).astype(np.float32)
        return np.clip(image, 0, 1)
    colours = 0.5 * _SOURCE_COLOURS + 0.5 * _REAL_COLOURS
    colours = colours + rng.normal(0, 0.04, colours.shape).astype(np.float32)
    colours[POLE] = colours[PERSON] + rng.normal(0, 0.03, 3).astype(np.float32)
    textures = _textures(max(128, 2 * max(h, w)))
    tex = np.empty((8, h, w), np.float32)
    for c in range(8):
        t = textures[rng.integers(len(textures))]
        r0, c0 = rng.integers(t.shape[0] - h), rng.integers(t.shape[1] - w)
        tex[c] = 1 + 0.35 * (t[r0 : r0 + h, c0 : c0 + w] - 1)
    tex[[CAR, PERSON, POLE]] = 1 + 0.5 * (tex[[CAR, PERSON, POLE]] - 1)
    appearance = label.astype(np.int64).copy()
    # half of the sidewalk tiles look exactly like the road
    tile = rng.integers(4, 9)
    yy, xx = np.mgrid[0:h, 0:w]
    tiles = (yy // tile) * 97 + (xx // tile)
    flip = rng.uniform(size=tiles.max() + 1) < 0.5
    appearance[(label == SIDEWALK) & flip[tiles]] = ROAD
    image = colours[appearance] * tex[appearance, yy, xx][..., None]
    return _camera(image, rng, max_blur=0.9)


def _camera(image: np.ndarray, rng: np.random.Generator, max_blur: float) -> np.ndarray:
    """What the target's camera adds to an H x W x 3 image: a linear lighting gradient, a
    Gaussian blur (sigma drawn from [0.3, max_blur] px) and noise; clipped to [0, 1]."""
    from scipy.ndimage import gaussian_filter

    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    light = 1 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    image = image * light[..., None].astype(np.float32)
    sigma = rng.uniform(0.3, max_blur)
    image = gaussian_filter(image, sigma=(sigma, sigma, 0))
    image = image + rng.normal(0, 0.03, image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


@lru_cache(maxsize=8)
def make_streets(
    domain: str,
    split: str,
    count: int,
    size: int = 64,
    seed: int = 0,
    source_lookalike: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Images in [0, 1] (N x 3 x size x size) and labels (N x size x size) of one split."""
    stream = {"source": 1, "target": 2}[domain] * 10 + {"train": 1, "test": 2}[split]
    rng = np.random.default_rng([seed, stream])
    images = np.empty((count, size, size, 3), np.float32)
    labels = np.empty((count, size, size), np.uint8)
    for i in range(count):
        labels[i] = _layout(rng, size)
        images[i] = _render(labels[i], domain, rng, source_lookalike)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(labels.astype(np.int64))


class StreetScenes:
    """One split of one domain of the bundled street-scene benchmark (map-style dataset).

    Args:
        domain: ``"source"`` (synthetic) or ``"target"`` ("real").
        split: ``"train"`` or ``"test"``.
        labelled: samples are ``(image, label)``; False: the image alone.
        count: number of scenes (default 2000 for train, 500 for test).
        size: image side in pixels.
        flip: random horizontal flips (training augmentation).
        source_lookalike: share of source scenes whose sidewalk is painted like the road.
        seed: the scenes (fixed for a benchmark, not the training seed).
    """

    classes = CLASSES
    num_classes = len(CLASSES)
    palette = PALETTE
    mean = MEAN
    std = STD
    #: the global generators a sample draws from (its flip): what ``SeededDataset`` seeds
    random_sources = ("torch",)

    def __init__(
        self,
        domain: Literal["source", "target"] = "source",
        split: Literal["train", "test"] = "train",
        labelled: bool = True,
        count: int | None = None,
        size: int = 64,
        flip: bool = False,
        source_lookalike: float = 0.5,
        seed: int = 0,
    ) -> None:
        if domain not in ("source", "target"):
            raise ConfigError(f"streets domain must be 'source' or 'target', got {domain!r}")
        if split not in ("train", "test"):
            raise ConfigError(f"streets split must be 'train' or 'test', got {split!r}")
        size = int(size) if is_whole(size) else size  # 64.0 from YAML
        if isinstance(size, int) and size < 16:  # the objects' sizes are drawn in pixels
            raise ConfigError(
                f"dataset.size={size}: the street scenes are drawn at least 16 px wide (their "
                "persons, poles and kerbs have sizes in pixels); give 16 or more"
            )
        count = count if count is not None else (2000 if split == "train" else 500)
        self.labelled, self.flip = labelled, flip
        images, self.labels = self._generate(domain, split, count, size, seed, source_lookalike)
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        self.images = (images - mean) / std
        #: every image's (height, width), uncropped: the training crop of a run on them
        self.image_size = tuple(self.images.shape[-2:])
        self.ignore_index = 255

    def _generate(
        self, domain: str, split: str, count: int, size: int, seed: int, source_lookalike: float
    ) -> tuple[Tensor, Tensor]:
        """Images in [0, 1] (N, 3, size, size) and labels (N, size, size) of the split."""
        return make_streets(domain, split, count, size, seed, source_lookalike)

    def __len__(self) -> int:
        return len(self.labels)

    def class_pixel_counts(self, index: int) -> np.ndarray:
        return np.bincount(self.labels[index].numpy().ravel(), minlength=self.num_classes)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        x, y = self.images[index], self.labels[index]
        if self.flip and bool(torch.rand(()) < 0.5):
            x, y = x.flip(-1), y.flip(-1)
        return (x, y) if self.labelled else x
