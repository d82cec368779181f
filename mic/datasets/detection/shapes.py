"""The bundled detection benchmark: procedurally generated street-like scenes of shapes, clear
(source) -> foggy, textured and noisy (target). No download; every image is generated from
its index and a fixed seed, so any split is reproducible and costs no memory.

A scene: a sky above a horizon and a ground plane below it; 1 to 6 objects of 4 classes
(disc, square, triangle, cross) in random colours stand on the ground, nearer ones (lower in
the image) larger, as in a street scene. Each pixel has a depth (objects the depth of their
foot point; the ground from the camera geometry; the sky far away).

Target domain, after Foggy Cityscapes: fog by the standard optical model
``I = J * t + A * (1 - t)``, ``t = exp(-beta * depth)``, with a grey airlight ``A`` (depth in
metres, up to about 150; ``beta = 0.02`` by default, the middle of Foggy Cityscapes' three
densities), plus a texture on the ground and the sky (low-frequency blotches and stripes) and
Gaussian pixel noise. The texture also modulates the objects' paint.
"""

from __future__ import annotations

import math
import sys
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mic.core.errors import ConfigError, is_whole

CLASSES = ["disc", "square", "triangle", "cross"]
#: default number of images per split
SPLIT_SIZES = {"train": 1000, "test": 200}
_SPLIT_CODES = {("source", "train"): 0, ("source", "test"): 1, ("target", "train"): 2}
_SPLIT_CODES[("target", "test")] = 3


def _disc(yy: np.ndarray, xx: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _shape_mask(
    kind: int, yy: np.ndarray, xx: np.ndarray, box: tuple[float, float, float, float]
) -> np.ndarray:
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    inside = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
    if kind == 0:  # disc
        return _disc(yy + 0.5, xx + 0.5, cx, cy, w / 2)
    if kind == 1:  # square
        return inside
    if kind == 2:  # triangle, apex up
        rel = (yy + 0.5 - y1) / max(h, 1e-6)
        return inside & (np.abs(xx + 0.5 - cx) <= rel * w / 2)
    bar = max(w / 3.2, 1.0)  # cross
    return inside & ((np.abs(xx + 0.5 - cx) <= bar / 2) | (np.abs(yy + 0.5 - cy) <= bar / 2))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    coarse = torch.from_numpy(rng.random((1, 1, cells, cells)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    return fine[0, 0].clamp(0, 1).numpy()


def ground_depth(yy: np.ndarray, horizon: float, size: int) -> np.ndarray:
    """Depth in metres of each pixel of the empty scene: the ground plane seen by a camera
    1.5 m high (2 to 150 m), the sky 150 m away. ``yy``: H x W row coordinates."""
    below = np.maximum(yy - horizon, 0.5)
    return np.where(yy > horizon, np.clip(1.5 * size / below, 2.0, 150.0), 150.0).astype(np.float32)


def sky_and_ground(
    rng: np.random.Generator, yy: np.ndarray, horizon: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The empty scene (H x W x 3 in [0, 1]: a sky above ``horizon``, the ground below, both
    shaded by height) and the shading term ``yy / size`` (H x W x 1)."""
    sky = np.array([0.55, 0.7, 0.9]) + rng.uniform(-0.08, 0.08, 3)
    ground = np.array([0.45, 0.45, 0.42]) + rng.uniform(-0.1, 0.1, 3)
    shade = (yy / size)[..., None]
    img = np.where(
        (yy > horizon)[..., None], ground * (0.8 + 0.3 * shade), sky * (1.05 - 0.3 * shade)
    )
    return img, shade


def add_texture(
    rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, xx: np.ndarray, texture: float
) -> tuple[np.ndarray, np.ndarray]:
    """The target's texture (low-frequency blotches and stripes in a random tint) blended into
    ``img`` with weight ``texture``; returns the image and the grain (H x W x 1 in [0, 1]),
    which also modulates the objects' paint (``paint_objects``)."""
    s = img.shape[0]
    blotch = _smooth_noise(rng, s, int(rng.integers(4, 9)))
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.45)
    stripes = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    grain = (0.6 * blotch + 0.4 * stripes)[..., None]
    tint = rng.uniform(0.2, 0.9, 3)
    return (1 - texture) * img + texture * grain * tint, grain


def saturated_colour(rng: np.random.Generator) -> np.ndarray:
    """A random saturated (not grey) RGB colour in [0, 1]: one channel at most 0.25."""
    colour = rng.uniform(0.05, 1.0, 3)
    colour[rng.integers(3)] = rng.uniform(0.0, 0.25)
    return colour


def paint_objects(
    img: np.ndarray,
    depth: np.ndarray,
    masks: list[np.ndarray],
    feet: list[float],
    colours: list[np.ndarray],
    grain: np.ndarray | None,
    texture: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the objects (``masks``, in painting order: far ones first, so that near ones
    occlude them) in their ``colours``, modulated by ``grain`` where given (the target), and
    give their pixels the depth of their foot row (``feet``, in px)."""
    s = img.shape[0]
    for mask, foot, colour in zip(masks, feet, colours, strict=True):
        paint = colour * (1 - texture + texture * 2 * grain) if grain is not None else colour
        img = np.where(mask[..., None], paint, img)
        depth = np.where(mask, depth[min(int(foot), s - 1), 0], depth)
    return img, depth


def add_fog(
    rng: np.random.Generator,
    img: np.ndarray,
    depth: np.ndarray,
    beta: float,
    airlight: float,
    noise: float,
    blur: float = 0.0,
) -> np.ndarray:
    """Fog by the optical model ``I = J t + A (1 - t)``, ``t = exp(-beta * depth)``, then (with
    ``blur`` > 0) scattering that blurs each pixel with a Gaussian of sigma ``blur * (1 - t)``
    px (interpolated between four blur levels), then Gaussian pixel noise of std ``noise``."""
    t = np.exp(-beta * depth)[..., None]
    img = img * t + airlight * (1 - t)
    if blur > 0:
        from torchvision.transforms.functional import gaussian_blur

        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), np.float32))
        levels = [img]
        for sigma in (blur / 3, 2 * blur / 3, blur):
            kernel = 2 * int(np.ceil(3 * sigma)) + 1
            blurred = gaussian_blur(chw, [kernel, kernel], [sigma, sigma])
            levels.append(blurred.numpy().transpose(1, 2, 0))
        pos = np.clip(3 * (1 - t), 0, 3)  # position between the levels, H x W x 1
        low = np.minimum(np.floor(pos).astype(int), 2)
        frac = pos - low
        stack = np.stack(levels)  # 4 x H x W x 3
        rows, cols = np.indices(depth.shape)
        below = stack[low[..., 0], rows, cols]
        above = stack[low[..., 0] + 1, rows, cols]
        img = below * (1 - frac) + above * frac
    return img + rng.normal(0.0, noise, img.shape)


def tight_boxes(masks: list[np.ndarray]) -> np.ndarray:
    """N x 4 float32 boxes (x1 y1 x2 y2) around every pixel of each shape's mask (triangles
    and discs are not squares), as an annotator would draw them."""
    out = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(out, np.float32).reshape(-1, 4)


def make_scene(
    rng: np.random.Generator,
    size: int = 128,
    target: bool = False,
    beta: float = 0.02,
    airlight: float = 0.8,
    noise: float = 0.05,
    texture: float = 0.4,
    max_objects: int = 6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: an H x W x 3 image in [0, 1], boxes (N x 4, x1 y1 x2 y2) and class ids."""
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    horizon = s * rng.uniform(0.3, 0.42)
    depth = ground_depth(yy, horizon, s)
    img, _ = sky_and_ground(rng, yy, horizon, s)
    grain = None
    if target:  # texture: blotches and stripes on sky and ground, and on the objects
        img, grain = add_texture(rng, img, yy, xx, texture)

    boxes, labels = [], []
    n = int(rng.integers(1, max_objects + 1))
    for _ in range(20 * n):
        if len(boxes) == n:
            break
        foot = rng.uniform(horizon + 2, s - 1)
        near = (foot - horizon) / (s - horizon)  # 0 at the horizon, 1 at the bottom
        side = (0.08 + 0.3 * near) * s * rng.uniform(0.8, 1.2)
        x1 = rng.uniform(0, s - side)
        box = (x1, foot - side, x1 + side, foot)
        if box[1] < 0:
            continue
        if any(_iou(box, b) > 0.2 for b in boxes):
            continue
        boxes.append(box)
        labels.append(int(rng.integers(len(CLASSES))))
    masks = [_shape_mask(labels[i], yy, xx, boxes[i]) for i in range(len(boxes))]
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][3])
    colours = [saturated_colour(rng) for _ in order]
    img, depth = paint_objects(
        img, depth, [masks[i] for i in order], [boxes[i][3] for i in order], colours, grain, texture
    )
    if target:
        img = add_fog(rng, img, depth, beta, airlight, noise)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return img, tight_boxes(masks), np.array(labels, np.int64)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class ShapesDetection:
    """One split of one domain of the bundled detection benchmark (map-style dataset).

    Samples are ``(image, target)`` with the image a 3 x size x size tensor in [0, 1] and the
    target a dict of ``boxes`` and ``labels`` (0-based), or the image alone when
    ``labelled=False``.

    Args:
        domain: ``"source"`` (clear) or ``"target"`` (fog, texture, noise).
        split: ``"train"`` or ``"test"``.
        labelled: give targets (False: unlabelled target training images).
        size: image side in pixels.
        length: images in the split (default 1000 train, 200 test).
        beta: fog density of the target (published Foggy Cityscapes: 0.005, 0.01, 0.02).
        seed: the benchmark's seed (fixed for a benchmark; not the training seed).

    Raises:
        ConfigError: an unknown domain or split, ``size`` < 32, a ``beta`` that is negative
            or not finite, a ``length`` that is no whole number >= 1.
    """

    classes = CLASSES
    num_classes = len(CLASSES)
    #: a scene is a function of its index (its own generator): ``SeededDataset`` seeds nothing
    random_sources = ()

    def __init__(
        self,
        domain: Literal["source", "target"] = "source",
        split: Literal["train", "test"] = "train",
        labelled: bool = True,
        size: int = 128,
        length: int | None = None,
        beta: float = 0.02,
        seed: int = 0,
    ) -> None:
        if domain not in ("source", "target"):
            raise ConfigError(f"shapes domain must be 'source' or 'target', got {domain!r}")
        if split not in ("train", "test"):
            raise ConfigError(f"shapes split must be 'train' or 'test', got {split!r}")
        if size < 32:
            raise ConfigError(f"shapes images must be at least 32 px, got size={size}")
        if not (beta >= 0 and math.isfinite(beta)):  # (inf: haze without a scene)
            raise ConfigError(f"fog density beta must be a finite number >= 0, got {beta}")
        if length is not None and not (is_whole(length) and 1 <= length <= sys.maxsize):
            raise ConfigError(
                f"length is the number of scenes, a whole number >= 1 (null: "
                f"{SPLIT_SIZES[split]} for the {split} split), got {length!r}"
            )
        self.domain, self.split, self.labelled = domain, split, labelled
        self.size, self.beta, self.seed = int(size), float(beta), int(seed)
        self.length = int(length if length is not None else SPLIT_SIZES[split])

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[(self.domain, self.split)], index])
        img, boxes, labels = self.render(rng)
        image = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        return image, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One scene of this domain from ``rng``: image (H x W x 3 float32 in [0, 1]), boxes
        (N x 4 float32, x1 y1 x2 y2) and class ids (N int64)."""
        return make_scene(rng, self.size, target=self.domain == "target", beta=self.beta)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        image, target = self.scene(index)
        return (image, target) if self.labelled else image
