"""A detection benchmark where context decides: on the target, look-alike classes differ only
by where they stand and what stands beside them. No download; every scene is generated from
its index and a fixed seed (the scenes of ``ShapesDetection``, with a road and new classes).

A scene: a sky above a horizon, the ground below it, and a road on the ground, a dark band
narrowing in perspective to a vanishing point on the horizon (half as wide as the image at
most, near the camera). Objects stand on the ground, nearer ones (lower in the image) larger,
one to five groups of them. Five classes:

- ``car`` and ``kiosk``: one outline (a square). A car stands on the road (the centre of its
  foot on the road surface); a kiosk stands beside it (its whole foot off the road).
- ``rider`` and ``ball``: one outline (a disc). A rider always has a bike beside it (same
  foot row, about its size, a gap of at most 15 % of its side, left or right); no bike ever
  stands beside a ball (none within one ball width to either side).
- ``bike``: a cross, only ever beside a rider.

Each group draws its foot row and size before its class, and a row and size where a kiosk
would not fit beside the road are drawn again for every class, so the look-alikes of a pair
share the distributions of depth and size; riders and balls share their placement too.

Source domain (clear): in a share ``source_lookalike`` of the scenes (0.5 by default) every
car, kiosk, rider and ball is painted in a random saturated colour; in the others each of
them takes a colour family of its own (cars red, kiosks blue, riders green, balls yellow): the
source labels teach both the appearance cue and the context.

Target domain (fog): every object in a random saturated colour, so the look-alikes of a pair
share outline, size, depth and colour distribution, and only the context (road or verge, bike
or none) tells them apart. Fog by the optical model of Foggy Cityscapes, ``I = J t + A (1 -
t)``, ``t = exp(-beta * depth)`` (beta 0.02, depth from the scene geometry: higher in the
image is farther), plus scattering: each pixel is blurred with sigma ``blur * (1 - t)``
(``blur`` = 2.5 px at 128 px), so a far object is a faint blob whose outline is gone, while
the road near the camera, which shows where the road runs in the distance, stays sharp. The
texture and noise of ``ShapesDetection``'s target domain come on top.

The context that decides spans several of MIC's 8 px blocks at 128 px: the road is 25 to 50
px wide near the camera; a rider's bike stands within 15 % of its side.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mic.core.errors import ConfigError
from mic.datasets.detection.shapes import (
    ShapesDetection,
    _iou,
    _shape_mask,
    add_fog,
    add_texture,
    ground_depth,
    paint_objects,
    saturated_colour,
    sky_and_ground,
    tight_boxes,
)

CONTEXT_CLASSES = ["car", "kiosk", "rider", "ball", "bike"]
CAR, KIOSK, RIDER, BALL, BIKE = range(len(CONTEXT_CLASSES))
#: each class's outline (``shapes._shape_mask``'s kinds: 0 disc, 1 square, 3 cross)
OUTLINES = {CAR: 1, KIOSK: 1, RIDER: 0, BALL: 0, BIKE: 3}
#: the look-alike pairs: one outline and, on the target, one colour distribution
LOOKALIKES = ((CAR, KIOSK), (RIDER, BALL))
#: the source's colour family of each look-alike class (low, high per RGB channel)
SOURCE_COLOURS = {
    CAR: ((0.7, 1.0), (0.0, 0.2), (0.0, 0.2)),
    KIOSK: ((0.0, 0.2), (0.2, 0.5), (0.7, 1.0)),
    RIDER: ((0.0, 0.25), (0.6, 1.0), (0.0, 0.25)),
    BALL: ((0.8, 1.0), (0.7, 1.0), (0.0, 0.2)),
}
#: the road's colour before shading
_ASPHALT = np.array([0.24, 0.24, 0.26])


def make_context_scene(
    rng: np.random.Generator,
    size: int = 128,
    target: bool = False,
    beta: float = 0.02,
    blur: float = 2.5,
    source_lookalike: float = 0.5,
    airlight: float = 0.8,
    noise: float = 0.05,
    texture: float = 0.4,
    max_groups: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One scene (see the module's documentation).

    Args:
        rng: the scene's generator (the scene is a function of it).
        size: image side in px.
        target: render the target domain (fog, blur, texture, noise, shared colours).
        beta: fog density (1 / m).
        blur: the scattering blur's largest sigma at 128 px (scaled with ``size``).
        source_lookalike: share of source scenes without the colour cue.
        airlight, noise, texture: as in ``shapes.make_scene``.
        max_groups: at most this many groups (a rider and its bike are one group).

    Returns:
        The image (H x W x 3 float32 in [0, 1]), boxes (N x 4 float32, x1 y1 x2 y2), class ids
        (N int64) and the road (H x W bool).
    """
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    horizon = s * rng.uniform(0.3, 0.42)
    depth = ground_depth(yy, horizon, s)
    img, shade = sky_and_ground(rng, yy, horizon, s)
    vanish = s * rng.uniform(0.35, 0.65)
    spread = s * rng.uniform(0.1, 0.2) / (s - horizon)  # road half-width per row below horizon

    def half(row: np.ndarray | float) -> np.ndarray | float:  # at least 1 px below the horizon
        return np.maximum(spread * (row - horizon), 1.0)

    road = (yy > horizon) & (np.abs(xx + 0.5 - vanish) < half(yy))
    asphalt = _ASPHALT + rng.uniform(-0.04, 0.04, 3)
    img = np.where(road[..., None], asphalt * (0.8 + 0.3 * shade), img)
    lookalike = target or rng.random() < source_lookalike
    grain = None
    if target:
        img, grain = add_texture(rng, img, yy, xx, texture)

    boxes: list[tuple[float, float, float, float]] = []
    labels: list[int] = []
    groups = int(rng.integers(1, max_groups + 1))
    placed = 0
    for _ in range(30 * groups):
        if placed == groups:
            break
        foot = rng.uniform(horizon + 2, s - 1)
        near = (foot - horizon) / (s - horizon)  # 0 at the horizon, 1 at the bottom
        side = (0.06 + 0.18 * near) * s * rng.uniform(0.8, 1.2)
        left_room, right_room = vanish - half(foot), s - vanish - half(foot)
        if foot - side < 0 or max(left_room, right_room) < side:
            continue  # a kiosk would not fit beside the road: drawn again for every class
        kind = int(rng.integers(4))
        if kind == CAR:  # the foot's centre on the road
            reach = max(half(foot) - side / 2, 0.0)
            cx = np.clip(rng.uniform(vanish - reach, vanish + reach), side / 2, s - side / 2)
            group = [(CAR, cx - side / 2, side)]
        elif kind == KIOSK:  # the whole foot beside the road
            if left_room >= side and (right_room < side or rng.random() < 0.5):
                x1 = rng.uniform(0, left_room - side)
            else:
                x1 = rng.uniform(vanish + half(foot), s - side)
            group = [(KIOSK, x1, side)]
        elif kind == RIDER:  # a bike beside it
            bike = side * rng.uniform(0.9, 1.1)
            gap = side * rng.uniform(0.0, 0.15)
            if rng.random() < 0.5:  # bike on the right
                x1 = rng.uniform(0, max(s - side - gap - bike, 0.0))
                group = [(RIDER, x1, side), (BIKE, x1 + side + gap, bike)]
            else:
                x1 = rng.uniform(bike + gap, max(s - side, bike + gap))
                group = [(RIDER, x1, side), (BIKE, x1 - gap - bike, bike)]
        else:
            group = [(BALL, rng.uniform(0, s - side), side)]
        new = [(x1, foot - w, x1 + w, foot) for _, x1, w in group]
        if any(b[0] < 0 or b[2] > s or b[1] < 0 for b in new):
            continue
        if any(_iou(b, old) > 0.2 for b in new for old in boxes):
            continue
        kinds = [k for k, _, _ in group]
        if _bike_beside_ball(new, kinds, boxes, labels):
            continue
        boxes += new
        labels += kinds
        placed += 1

    masks = [_shape_mask(OUTLINES[k], yy, xx, b) for k, b in zip(labels, boxes, strict=True)]
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][3])
    colours = [
        saturated_colour(rng)
        if lookalike or labels[i] == BIKE
        else np.array([rng.uniform(lo, hi) for lo, hi in SOURCE_COLOURS[labels[i]]])
        for i in order
    ]
    img, depth = paint_objects(
        img, depth, [masks[i] for i in order], [boxes[i][3] for i in order], colours, grain, texture
    )
    if target:
        img = add_fog(rng, img, depth, beta, airlight, noise, blur * s / 128)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return img, tight_boxes(masks), np.array(labels, np.int64), road


def _beside(a: tuple[float, ...], b: tuple[float, ...], margin: float = 0.0) -> bool:
    """Whether box ``b`` lies within one width (plus ``margin`` px) of box ``a`` to either
    side, their rows overlapping."""
    w = a[2] - a[0] + margin
    rows = min(a[3], b[3]) + margin > max(a[1], b[1])
    return rows and b[2] > a[0] - w and b[0] < a[2] + w


def _bike_beside_ball(
    new: list[tuple[float, ...]], kinds: list[int], boxes: list[tuple], labels: list[int]
) -> bool:
    """Whether adding the group would put a bike within a ball's width of a ball (with 2 px
    to spare, for the tight boxes drawn around the pixels)."""
    all_boxes, all_kinds = [*boxes, *new], [*labels, *kinds]
    balls = [b for b, k in zip(all_boxes, all_kinds, strict=True) if k == BALL]
    bikes = [b for b, k in zip(all_boxes, all_kinds, strict=True) if k == BIKE]
    return any(_beside(ball, bike, 2.0) for ball in balls for bike in bikes)


class ContextShapes(ShapesDetection):
    """One split of one domain of the context shapes benchmark (map-style dataset): road
    scenes where, on the target, car / kiosk and rider / ball are told apart by context alone
    (see the module's documentation for the rule).

    Samples are ``(image, target)`` with the image a 3 x size x size float32 tensor in [0, 1]
    and the target a dict of ``boxes`` (N x 4, x1 y1 x2 y2, px) and ``labels`` (N, 0-based),
    or the image alone when ``labelled=False``.

    Args:
        domain: ``"source"`` (clear, colour cues in part of the scenes) or ``"target"`` (fog
            and scattering blur growing with distance, texture, noise; no colour cue).
        split: ``"train"`` or ``"test"``.
        labelled: give targets (False: unlabelled target training images).
        size: image side in pixels.
        length: images in the split (default 1000 train, 200 test).
        beta: fog density of the target (published Foggy Cityscapes: 0.005, 0.01, 0.02).
        blur: the target's largest scattering blur, sigma in px at 128 px.
        source_lookalike: share of source scenes painted without the colour cue.
        seed: the benchmark's seed (fixed for a benchmark; not the training seed).

    Raises:
        ConfigError: an unknown domain or split, ``size`` < 32, a ``beta`` that is negative
            or not finite, a ``length`` that is no whole number >= 1, a negative ``blur``,
            ``source_lookalike`` outside [0, 1].
    """

    classes = CONTEXT_CLASSES
    num_classes = len(CONTEXT_CLASSES)

    def __init__(
        self,
        domain: Literal["source", "target"] = "source",
        split: Literal["train", "test"] = "train",
        labelled: bool = True,
        size: int = 128,
        length: int | None = None,
        beta: float = 0.02,
        blur: float = 2.5,
        source_lookalike: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(domain, split, labelled, size, length, beta, seed)
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        if not (number(blur) and blur >= 0):
            raise ConfigError(f"the scattering blur must be a number >= 0, got blur={blur!r}")
        if not (number(source_lookalike) and 0.0 <= source_lookalike <= 1.0):
            raise ConfigError(f"source_lookalike must lie in [0, 1], got {source_lookalike!r}")
        self.blur, self.source_lookalike = float(blur), float(source_lookalike)

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, boxes, labels, _ = make_context_scene(
            rng,
            self.size,
            target=self.domain == "target",
            beta=self.beta,
            blur=self.blur,
            source_lookalike=self.source_lookalike,
        )
        return img, boxes, labels
