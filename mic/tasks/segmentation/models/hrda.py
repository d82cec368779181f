"""HRDA: context-aware high-resolution segmentation, as a wrapper around any ``Segmenter``.

Hoyer, Dai and Van Gool, "HRDA: Context-Aware High-Resolution Domain-Adaptive Semantic
Segmentation", ECCV 2022, the base of MIC's headline results (CVPR 2023). One encoder and one
decode head see two crops of each training image: the whole crop downscaled (the low-resolution
*context*, published: 1024 x 1024 at scale 0.5) and a random crop of it at full resolution
(the *detail*, 512 x 512). A separate scale-attention head on the context features weighs, per
pixel and class, the upsampled detail prediction against the upsampled context prediction;
outside the detail crop the attention is 0. At inference the detail prediction comes from
overlapping sliding windows over the whole input (stride half the crop).

The defaults are the published configs' (github.com/lhoyer/HRDA ``configs/hrda/
gtaHR2csHR_hrda.py`` and github.com/lhoyer/MIC ``seg/configs/mic/gtaHR2csHR_mic_hrda.py``:
``scales=[1, 0.5]``, ``hr_crop_size=(512, 512)``, ``crop_coord_divisible=8``,
``attention_classwise=True``, ``hr_slide_inference=True`` with overlapping windows,
``feature_scale=0.5``; ``mmseg/models/decode_heads/hrda_head.py`` for the fusion).

The module keeps no state between calls: the detail crop's box is an argument of ``forward``
(the published code keeps the last box on the model). The random box is drawn by the Task
(``HRDASegmentationTask``) from the calling loss term's random stream, one box per image
(``detail_crop_boxes``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core.errors import ConfigError
from mic.core.streams import Random, uniform
from mic.tasks.segmentation.models.base import Segmenter


class HRDAOutput(NamedTuple):
    """What ``HRDA.forward`` returns in training (with a detail crop box).

    Attributes:
        fused: (B, K, H / s, W / s) float, the fused logits over the whole input, s the output
            stride of the decode head (context and detail joined by the attention).
        context: (B, K, h_c, w_c) the context logits (of the downscaled input).
        detail: (B, K, h_d / s, w_d / s) the detail logits (of the full-resolution crop).
        attention: (B, K or 1, h_c, w_c) the scale attention in [0, 1] on the context grid,
            0 outside the detail crop.
        crop_box: (B, 4) int64 on the CPU, each row (y1, y2, x1, x2): the detail crop in pixels
            of the input.
    """

    fused: Tensor
    context: Tensor
    detail: Tensor
    attention: Tensor
    crop_box: Tensor


def detail_crop_boxes(
    rng: Random,
    n: int,
    image_size: Sequence[int],
    crop_size: Sequence[int],
    divisible: int = 8,
) -> Tensor:
    """One random detail crop per image, its offsets on a grid of ``divisible`` pixels.

    Every offset in ``{0, d, 2d, ...}`` that keeps the crop inside the image is equally likely
    (the published ``get_crop_bbox`` draws ``randint(0, (margin + 1) // d) * d``, which never
    draws the last position when ``d`` divides the margin).

    Args:
        rng: the calling term's random stream (or a ``torch.Generator``, or None); draws on
            the CPU, one row per image, so the boxes need no host synchronisation.
        n: the number of images.
        image_size: (H, W) of the images.
        crop_size: (h, w) of the detail crop (published 512 x 512).
        divisible: the offsets' grid in pixels (published 8: the output stride 4 of DAFormer
            divided by the context scale 0.5, so that the crop lies on the context logits'
            grid).

    Returns:
        (n, 4) int64 on the CPU, each row (y1, y2, x1, x2).

    Raises:
        ConfigError: the crop is larger than the images, or ``divisible`` < 1.
    """
    (h, w), (ch, cw) = (int(s) for s in image_size), (int(s) for s in crop_size)
    if ch > h or cw > w:
        raise ConfigError(
            f"the HRDA detail crop {[ch, cw]} is larger than the training images {[h, w]}; "
            "set model.detail_crop to at most the training images' size"
        )
    if int(divisible) < 1:
        raise ConfigError(f"model.crop_divisible must be at least 1, got {divisible}")
    positions = torch.tensor([(h - ch) // divisible + 1, (w - cw) // divisible + 1])
    draws = uniform(rng, n, 2, device="cpu")
    offsets = (draws * positions).long().clamp_max(positions - 1) * int(divisible)
    y1, x1 = offsets[:, 0], offsets[:, 1]
    return torch.stack([y1, y1 + ch, x1, x1 + cw], dim=1)


def crop_per_image(x: Tensor, boxes: Tensor, scale: float = 1.0) -> Tensor:
    """Each image's own crop of ``x``.

    Args:
        x: (B, ...) with the two last dimensions spatial (images, label maps, weights).
        boxes: (B, 4) int64 rows (y1, y2, x1, x2) in pixels of the input.
        scale: the size of ``x`` relative to the input the boxes refer to (e.g. 1 / 4 for
            logits at output stride 4); the scaled boxes must be whole numbers.

    Returns:
        (B, ..., h, w), the crops stacked (all boxes have one size).
    """
    rows = _scaled_boxes(boxes, scale)
    return torch.stack([x[i, ..., y1:y2, x1:x2] for i, (y1, y2, x1, x2) in enumerate(rows)])


def _scaled_boxes(boxes: Tensor, scale: float) -> list[list[int]]:
    scaled = boxes.double() * scale
    if not torch.equal(scaled, scaled.round()):
        raise ConfigError(
            f"the detail crop boxes {boxes.tolist()} do not lie on the grid of a map at "
            f"{scale:g} x the input's resolution; draw crop offsets divisible by the output "
            "stride divided by the context scale (model.crop_divisible, published 8 for "
            "DAFormer's output stride 4 at scale 0.5)"
        )
    return scaled.long().tolist()


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class HRDA(Segmenter):
    """HRDA around a single-scale ``Segmenter``: its encoder and decode head serve both the
    low-resolution context and the high-resolution detail; a separate scale-attention head
    (on the context features, a sigmoid per class) fuses them.

    ``forward(x, crop_box)`` (training) returns an ``HRDAOutput``; with ``crop_box=None``
    (prediction) it returns the fused logits (B, K, H / s, W / s) of multi-resolution
    inference: the context from the whole downscaled input, the detail from sliding windows of
    ``detail_crop`` every ``detail_stride`` pixels over the full-resolution input (logits
    averaged where windows overlap), the attention everywhere.

    The fusion follows the published head: with ``a`` the attention on the context grid (set
    to 0 outside the detail crop), ``fused = up(a) * detail + up((1 - a) * context)``, ``up``
    the bilinear upsampling to the detail's grid, the detail logits placed in their crop and 0
    elsewhere. Outside the crop the fused logits are the upsampled context logits, except a
    rim of half a context cell around it, where the bilinear upsampling blends in the
    attention of the crop's border cells (as published).

    State-dict keys: ``encoder.*`` and ``decode_head.*`` (the wrapped model's, so that its
    weights load into HRDA, e.g. ``init_from`` a single-scale source model's run, and
    ``lr_mult`` finds the decode head), ``scale_attention.*`` (which such weights lack: they
    keep their initialisation, ``weights_may_lack``).

    Args:
        segmenter: the single-scale model (``DAFormer`` as published, ``DeepLabV2``,
            ``SmpModel``, ``SmallUNet``, ...); HRDA takes over its ``encoder`` and
            ``decode_head``.
        context_scale: the context's resolution relative to the input (published 0.5).
        detail_crop: (h, w) of the detail crop in input pixels (published 512 x 512 of
            1024 x 1024 training crops).
        crop_divisible: the detail crop offsets' grid in pixels (published 8); the output
            stride of the decode head divided by ``context_scale`` must divide it.
        detail_stride: the stride of the detail windows at inference (None: half of
            ``detail_crop``, the published overlapping windows).
        classwise_attention: one attention per class (published) or one for all.
        attention_head: the scale-attention head (None: ``segmenter.scale_attention_head``,
            the published choice for DAFormer and DeepLabV2).

    Raises:
        ConfigError: a scale outside (0, 1], a crop or stride that is not positive.
    """

    #: what weights of the wrapped single-scale model lack: ``init_from`` keeps it as
    #: initialised (``mic.training.load_initial_weights``)
    weights_may_lack: tuple[str, ...] = ("scale_attention.",)

    def __init__(
        self,
        segmenter: Segmenter,
        context_scale: float = 0.5,
        detail_crop: Sequence[int] = (512, 512),
        crop_divisible: int = 8,
        detail_stride: Sequence[int] | None = None,
        classwise_attention: bool = True,
        attention_head: nn.Module | None = None,
    ) -> None:
        if not 0 < float(context_scale) <= 1:
            raise ConfigError(f"model.context_scale must lie in (0, 1], got {context_scale}")
        for key, pair in (("detail_crop", detail_crop), ("detail_stride", detail_stride)):
            if pair is None and key == "detail_stride":  # null: half the crop
                continue
            listed = isinstance(pair, Sequence) and not isinstance(pair, str)
            whole = listed and all(isinstance(s, int) and not isinstance(s, bool) for s in pair)
            if not (whole and len(pair) == 2 and min(pair) >= 1):
                raise ConfigError(
                    f"model.{key} must be two positive whole pixel counts [height, width], got "
                    f"{pair!r}"
                )
        crop = tuple(int(s) for s in detail_crop)
        stride = (
            tuple(int(s) for s in detail_stride) if detail_stride else (crop[0] // 2, crop[1] // 2)
        )
        if min(stride) < 1:  # half of a 1 px crop
            raise ConfigError(
                f"model.detail_stride (null: half of model.detail_crop {list(crop)}) comes to "
                f"{list(stride)}; give model.detail_stride=[1, 1] or a larger crop"
            )
        if any(s > c for s, c in zip(stride, crop, strict=True)):
            raise ConfigError(
                f"model.detail_stride {list(stride)} must be at most model.detail_crop "
                f"{list(crop)}: a larger stride leaves pixels that no detail window covers"
            )
        if int(crop_divisible) < 1:
            raise ConfigError(f"model.crop_divisible must be at least 1, got {crop_divisible}")
        if any(c % int(crop_divisible) for c in crop):  # else a box ends off the grid
            raise ConfigError(
                f"model.detail_crop {list(crop)} must be a multiple of model.crop_divisible="
                f"{crop_divisible}, e.g. "
                f"{[max(1, round(c / int(crop_divisible))) * int(crop_divisible) for c in crop]}"
                "; crop_divisible is the model's output stride over the context scale (published "
                "8: DAFormer's stride 4 at scale 0.5), which the first forward checks"
            )
        parts = ("encoder", "decode_head", "num_classes")
        if isinstance(segmenter, type) or not all(hasattr(segmenter, a) for a in parts):
            got = (
                f"the class {segmenter.__name__}"
                if isinstance(segmenter, type)
                else type(segmenter)
            )
            raise ConfigError(
                f"HRDA wraps a segmenter instance with an encoder and a decode head (e.g. "
                f"DAFormer(...), SmallUNet(...)), got {got}"
            )
        super().__init__(segmenter.encoder, segmenter.decode_head, segmenter.num_classes)
        outputs = self.num_classes if classwise_attention else 1
        if attention_head is None:
            attention_head = segmenter.scale_attention_head(outputs)
        self.scale_attention = attention_head
        if isinstance(segmenter, Segmenter):  # the sides its encoder takes
            self.min_side, self.side_multiple = segmenter.min_side, segmenter.side_multiple
            step = self.side_multiple
            if any(c % step or c < self.min_side for c in crop):
                fit = [max(self.min_side, step * math.ceil(c / step)) for c in crop]
                raise ConfigError(
                    f"model.detail_crop {list(crop)}: the inner model takes sides that are "
                    f"{self._sides_taken()}: give e.g. model.detail_crop={fit}"
                )
        self.context_scale = float(context_scale)
        self.detail_crop = crop
        self.detail_stride = stride
        self.crop_divisible = int(crop_divisible)
        self._warned_off_grid = False

    # ----------------------------------------------------------------------------- parts
    def feature_input(self, x: Tensor) -> Tensor:
        """The context image (B, 3, H * s, W * s), whose features ``forward`` returns with
        ``return_features`` (published ``feature_scale=0.5``: the feature distance compares
        the context features)."""
        if self.context_scale == 1:
            return x
        h, w = x.shape[-2:]
        size = (int(h * self.context_scale), int(w * self.context_scale))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def context(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The context branch on the whole input.

        Args:
            x: images (B, 3, H, W).

        Returns:
            context logits (B, K, h_c, w_c), the attention in [0, 1] (B, K or 1, h_c, w_c)
            and the encoder's features of the context image.
        """
        features = self.forward_features(self.feature_input(x))
        logits = self.decode(features)
        attention = torch.sigmoid(self.scale_attention(features))
        return logits, _resize(attention, logits.shape[-2:]), features

    def detail_logits(self, x: Tensor) -> Tensor:
        """Detail logits over the whole input from sliding windows of ``detail_crop`` every
        ``detail_stride`` pixels (all windows in one batch, as published), averaged where
        windows overlap.

        Args:
            x: images (B, 3, H, W), H and W multiples of the output stride for an exact
                placement of the windows.

        Returns:
            logits (B, K, H / s, W / s), s the decode head's output stride.
        """
        b, _, h, w = x.shape
        ch, cw = min(self.detail_crop[0], h), min(self.detail_crop[1], w)
        sh, sw = self.detail_stride
        boxes = []
        for r in range(max(h - ch + sh - 1, 0) // sh + 1):
            for c in range(max(w - cw + sw - 1, 0) // sw + 1):
                y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
                boxes.append((y2 - ch, y2, x2 - cw, x2))
        windows = torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
        logits = self.decode(self.forward_features(windows))
        lh, lw = logits.shape[-2:]
        sy, sx = ch / lh, cw / lw  # (each side's: a window cut to a short side has its own)
        places = [(round(y1 / sy), round(x1 / sx)) for y1, _, x1, _ in boxes]
        offsets = [(y1, sy) for y1, _, _, _ in boxes] + [(x1, sx) for _, _, x1, _ in boxes]
        off = max(abs(round(s / step) * step - s) for s, step in offsets)
        stride = sx if ch < self.detail_crop[0] else sy
        if off and not self._warned_off_grid:
            self._warned_off_grid = True
            sides = all(float(side / stride).is_integer() for side in (h, w))  # (the stride's)
            warnings.warn(
                f"HRDA's detail windows of a {h} x {w} input lie off the grid of its "
                f"{stride:g} px logits: their logits are placed up to {off:g} px from where "
                "they belong; "
                + (
                    f"give model.detail_stride (now {list(self.detail_stride)}) multiples of "
                    f"the output stride {stride:g}"
                    if sides
                    else "its sides are no multiples of the output stride: give a sliding "
                    "window (task.crop_size) or, with task.inference=whole, test images whose "
                    f"sides are multiples of {stride:g}"
                ),
                stacklevel=2,
            )
        grid = (max(t for t, _ in places) + lh, max(left for _, left in places) + lw)
        total = logits.new_zeros((b, logits.shape[1], *grid))
        count = logits.new_zeros((1, 1, *grid))
        for i, (top, left) in enumerate(places):
            total[:, :, top : top + lh, left : left + lw] += logits[i * b : (i + 1) * b]
            count[:, :, top : top + lh, left : left + lw] += 1
        return total / count

    # ----------------------------------------------------------------------------- forward
    def forward(  # type: ignore[override]
        self, x: Tensor, crop_box: Tensor | None = None, return_features: bool = False
    ) -> Any:
        """Training (with ``crop_box``) or multi-resolution prediction (without).

        Args:
            x: images (B, 3, H, W), float.
            crop_box: (B, 4) int64 rows (y1, y2, x1, x2), each image's detail crop in pixels
                of ``x`` (``detail_crop_boxes``); all of one size. None: prediction.
            return_features: also return the encoder's features of the context image.

        Returns:
            with ``crop_box``, an ``HRDAOutput``; without, the fused logits
            (B, K, H / s, W / s); with ``return_features``, a pair (that, context features).

        Raises:
            ConfigError: crop boxes of different sizes, or off the logits' grids.
        """
        if crop_box is None:
            out, features = self.predict_fused(x)
        else:
            out, features = self.train_fused(x, crop_box)
        return (out, features) if return_features else out

    def predict_fused(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Fused logits of multi-resolution inference and the context features."""
        self._check_context(x.shape[-2:], training=False)
        context, attention, features = self.context(x)
        detail = self.detail_logits(x)
        return self.fuse(context, attention, detail), features

    def train_fused(self, x: Tensor, crop_box: Tensor) -> tuple[HRDAOutput, list[Tensor]]:
        """The training forward pass on ``x`` with each image's detail crop ``crop_box``."""
        boxes = crop_box.detach().to("cpu", torch.long)
        sizes = torch.stack([boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]], 1)
        if boxes.shape != (x.shape[0], 4) or not (sizes == sizes[0]).all():
            raise ConfigError(
                f"HRDA needs one detail crop box (y1, y2, x1, x2) per image, all of one size; "
                f"got {boxes.tolist()} for {x.shape[0]} images"
            )
        self._check_context(x.shape[-2:])
        context, attention, features = self.context(x)
        self._check_grid(x.shape[-2:], context.shape[-2:])
        detail = self.decode(self.forward_features(crop_per_image(x, boxes)))
        stride = int(sizes[0, 0]) / detail.shape[-2]
        inside = torch.zeros_like(attention[:, :1])
        scale = context.shape[-2] / x.shape[-2]
        for i, (y1, y2, x1, x2) in enumerate(_scaled_boxes(boxes, scale)):
            inside[i, :, y1:y2, x1:x2] = 1
        attention = attention * inside
        grid = (round(x.shape[-2] / stride), round(x.shape[-1] / stride))
        placed = detail.new_zeros((*detail.shape[:2], *grid))
        for i, (y1, y2, x1, x2) in enumerate(_scaled_boxes(boxes, 1 / stride)):
            placed[i, :, y1:y2, x1:x2] = detail[i]
        fused = self.fuse(context, attention, placed)
        return HRDAOutput(fused, context, detail, attention, boxes), features

    def _check_context(self, image: Sequence[int], training: bool = True) -> None:
        """Refuse a context scale that gives training crops of size ``image`` no whole
        context side, or images (crops, test images or windows) one the inner model cannot
        take (before the context pass, whose error would name the images' size, not the
        scale). In prediction the context side is the whole part (``feature_input``).

        Raises:
            ConfigError: naming the scale and the crop sizes that work.
        """
        sides = [side * self.context_scale for side in image]
        if not training:
            sides = [float(int(side)) for side in sides]
        elif not all(float(side).is_integer() for side in sides):
            step = Fraction(self.context_scale).limit_denominator(1000).denominator
            raise ConfigError(
                f"model.context_scale={self.context_scale:g} of the {image[0]} x {image[1]} "
                f"training images gives a {sides[0]:g} x {sides[1]:g} px context image, not a "
                f"whole number of pixels: {_crops_of(step, image)}, or another scale"
            )
        if any(int(side) % self.side_multiple or side < self.min_side for side in sides):
            raise ConfigError(
                f"model.context_scale={self.context_scale:g} of {image[0]} x {image[1]} images "
                f"gives a {sides[0]:g} x {sides[1]:g} px context image, which the inner model "
                f"cannot take (it takes sides that are {self._sides_taken()}): give larger "
                "images or crops (dataset.size, dataset.crop_size"
                + ("" if training else "; in prediction the sliding window, task.crop_size")
                + ") or a larger model.context_scale"
            )

    def _sides_taken(self) -> str:
        """The image sides the inner model takes, in words."""
        least = f"at least {self.min_side} px" if self.min_side > 1 else ""
        step = f"multiples of its encoder's output stride {self.side_multiple}"
        said = ", ".join(s for s in (step if self.side_multiple > 1 else "", least) if s)
        return said or "at least 1 px"

    def _check_grid(self, image: Sequence[int], logits: Sequence[int]) -> None:
        """Refuse a ``crop_divisible`` off the grid of the context logits (``logits``: their
        H, W for images of ``image``), which would fail only when an off-grid box is drawn.

        Raises:
            ConfigError: naming the ``crop_divisible`` that works, or, where the inner model's
                output stride does not divide the context image (its logits then lie on no
                grid of the input), the training crop sides that work.
        """
        grids = [Fraction(n, side).denominator for n, side in zip(logits, image, strict=True)]
        needed = math.lcm(*grids)  # px of the input per cell of the context logits' grid
        if self.crop_divisible % needed or any(c % needed for c in self.detail_crop):
            context = [side * self.context_scale for side in image]
            strides = [_output_stride(c, n) for c, n in zip(context, logits, strict=True)]
            if any(s * n != c for s, n, c in zip(strides, logits, context, strict=True)):
                scale = Fraction(self.context_scale).limit_denominator(1000)
                step = math.lcm(*((Fraction(s) / scale).numerator for s in strides))
                raise ConfigError(
                    f"model.context_scale={self.context_scale:g} of the {image[0]} x {image[1]} "
                    f"training images gives a {context[0]:g} x {context[1]:g} px context image, "
                    f"which the inner model's output stride {max(strides)} does not divide (its "
                    f"{logits[0]} x {logits[1]} logits lie on no pixel grid): "
                    f"{_crops_of(step, image)}"
                )
            raise ConfigError(
                f"the context logits are {logits[0]} x {logits[1]} for {image[0]} x {image[1]} "
                f"images, one cell every {needed} px, so the detail crop's offsets and size "
                f"must be multiples of {needed} (the output stride over the context scale): set "
                f"model.crop_divisible={needed} (now {self.crop_divisible}) with model."
                f"detail_crop a multiple of it (now {list(self.detail_crop)})"
            )

    @staticmethod
    def fuse(context: Tensor, attention: Tensor, detail: Tensor) -> Tensor:
        """``up(a) * detail + up((1 - a) * context)``, ``up`` the bilinear upsampling to the
        detail's grid (the published ``HRDAHead.forward``).

        Args:
            context: (B, K, h_c, w_c) context logits.
            attention: (B, K or 1, h_c, w_c) attention in [0, 1].
            detail: (B, K, h, w) detail logits on the grid of the whole input.

        Returns:
            the fused logits (B, K, h, w).
        """
        size = detail.shape[-2:]
        return _resize(attention, size) * detail + _resize((1 - attention) * context, size)


def _crops_of(step: int, image: Sequence[int]) -> str:
    """The advice of training crops whose sides are multiples of ``step`` px."""
    fit = [step * math.ceil(side / step) for side in image]
    return (
        f"give training crops whose sides are multiples of {step} (e.g. {fit}: "
        "dataset.crop_size, or dataset.size for the bundled street scenes)"
    )


def _output_stride(side: float, cells: int) -> int:
    """The output stride of a model that makes ``cells`` logits of a ``side`` px image: the
    largest power of two that rounds it so, up (a padded convolution's) before down (a
    pooling's), as encoders halve the resolution; else the nearest whole ratio."""
    powers = [2**k for k in range(int(math.log2(max(side, 1))) + 2)]
    for rounding in (math.ceil, math.floor):
        fits = [p for p in powers if rounding(side / p) == cells]
        if fits:
            return max(fits)
    return max(1, round(side / cells))


__all__ = ["HRDA", "HRDAOutput", "crop_per_image", "detail_crop_boxes"]
