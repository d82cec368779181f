"""Faster R-CNN on detectron2, behind the same interface as mic's torchvision ``FasterRCNN``.

The detector is a detectron2 ``GeneralizedRCNN`` built from a detectron2 config (a model-zoo
name or a YAML file) plus mic's overrides (classes, input size, norm, head sizes), with
detectron2's backbone (ResNet-FPN) or any timm backbone under detectron2's FPN. Its RPN and
ROI heads are detectron2's with their losses re-done for per-box weights
(``mic.tasks.detection.detectron2_parts``). So the Task, the loop, the teacher, MIC and the
adversarial terms drive it unchanged:

- images in [0, 1] (B x 3 x H x W or a list), resized inside (shorter side ``min_size``, longer
  at most ``max_size``) and normalised inside with the config's pixel mean and std;
- training mode returns the named losses (``LOSS_PARTS``; empty without targets), eval mode
  per-image dicts of ``boxes``, ``labels`` (0-based) and ``scores`` in input pixels (detectron2's
  ``Instances``, rescaled by ``detector_postprocess``);
- ``capture()`` records the FPN maps, the proposals, their ROI features and levels.

detectron2 is an optional dependency: this module imports it only when a model is built.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mic.core.errors import ConfigError
from mic.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from mic.tasks.common import check_whole
from mic.tasks.detection.model import (
    Capture,
    check_detector_images,
    check_detector_settings,
    confidence_weighted,
    warn_of_random_frozen,
    warn_of_random_frozen_norm,
    warn_of_shrinking,
)

log = logging.getLogger(__name__)

#: the paragraph a missing detectron2 gives
INSTALL_DETECTRON2 = (
    "the detectron2 backend (mic.tasks.detection.Detectron2RCNN, model=d2_faster_rcnn_*) needs "
    "detectron2, which this Python environment does not have. detectron2 publishes no wheels. "
    "On a CPU: pip install -e '.[detectron2]' and then bash scripts/install_detectron2_cpu.sh "
    "in mic's repository (mic installed from a wheel or sdist: pip install "
    "'<that file>[detectron2]', then the script from the sdist or the repository), detectron2 "
    "0.6 as pure Python; Faster R-CNN takes ROIAlign and NMS from torchvision. On "
    "a GPU machine, build it with its CUDA ops against the installed torch: pip install "
    "--no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git' "
    "(docs/detection.md, 'detectron2 on a GPU'). Or use the torchvision backend "
    "(model=faster_rcnn_r50 or faster_rcnn_small)."
)

#: mic's norm names and detectron2's (``MODEL.RESNETS.NORM``)
_NORMS = {"frozen": "FrozenBN", "batch": "BN", "FrozenBN": "FrozenBN", "BN": "BN", "GN": "GN"}
_NORMS["SyncBN"] = "SyncBN"

#: the detectron2 config keys that ``Detectron2RCNN`` sets from its arguments or always, and
#: what to use instead of setting them through ``opts``, which would override mic's value
#: behind its back (a class count other than the task's, say)
MIC_KEYS = {
    "MODEL.ROI_HEADS.NUM_CLASSES": "use model.num_classes, by default dataset.num_classes",
    "MODEL.RESNETS.NORM": "use model.norm",
    "MODEL.BACKBONE.FREEZE_AT": "use model.trainable_layers, 5 - FREEZE_AT",
    "MODEL.PIXEL_MEAN": "use model.image_mean, RGB in [0, 1]",
    "MODEL.PIXEL_STD": "use model.image_std, RGB in [0, 1]",
    "INPUT.FORMAT": (
        "the channel order is model.config's, so give a detectron2 YAML file of your own as "
        "model.config; a timm backbone always reads RGB"
    ),
    "MODEL.FPN.OUT_CHANNELS": "use model.fpn_channels",
    "MODEL.ROI_BOX_HEAD.FC_DIM": "use model.representation_size",
    "INPUT.MIN_SIZE_TEST": "use model.min_size",
    "INPUT.MAX_SIZE_TEST": "use model.max_size",
    "MODEL.ANCHOR_GENERATOR.SIZES": "use model.anchor_sizes",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": "use model.aspect_ratios",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": "use model.rpn_pre_nms_top_n_train",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": "use model.rpn_post_nms_top_n_train",
    "MODEL.RPN.PRE_NMS_TOPK_TEST": "use model.rpn_pre_nms_top_n_test",
    "MODEL.RPN.POST_NMS_TOPK_TEST": "use model.rpn_post_nms_top_n_test",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": "use model.rpn_batch_size_per_image",
    "MODEL.RPN.NMS_THRESH": "use model.rpn_nms_thresh",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "use model.box_batch_size_per_image",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": "use model.box_score_thresh",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": "use model.box_nms_thresh",
    "TEST.DETECTIONS_PER_IMAGE": "use model.box_detections_per_img",
    "MODEL.DEVICE": "use device; the training loop moves the model",
    "MODEL.MASK_ON": "always off: the detectron2 backend builds Faster R-CNN only",
    "MODEL.KEYPOINT_ON": "always off: the detectron2 backend builds Faster R-CNN only",
}
#: the keys of ``MIC_KEYS`` that mic sets (or reads before ``opts`` apply) in every build;
#: the others are mic's only where the argument that sets them is given
ALWAYS_MIC_KEYS = (
    "MODEL.ROI_HEADS.NUM_CLASSES",
    "MODEL.RESNETS.NORM",
    "INPUT.FORMAT",
    "MODEL.DEVICE",
    "MODEL.MASK_ON",
    "MODEL.KEYPOINT_ON",
)


def detectron2_build() -> str | None:
    """Which detectron2 this environment has: ``"compiled"`` (with its C++/CUDA ops, built
    from source), ``"python"`` (without them, as ``scripts/install_detectron2_cpu.sh``
    installs it), or None (not installed)."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return None
    return "compiled" if importlib.util.find_spec("detectron2._C") is not None else "python"


def require_detectron2() -> str:
    """Import detectron2 and mic's parts on it; the build (see ``detectron2_build``), logged
    once per process.

    Raises:
        ConfigError: detectron2 is not installed (one paragraph with the install steps), or is
            installed but cannot be imported.
    """
    try:
        import detectron2
    except ImportError as e:
        raise ConfigError(f"{INSTALL_DETECTRON2} (import detectron2: {e})") from e
    with warnings.catch_warnings():  # detectron2 0.6 scripts a few functions at import
        warnings.filterwarnings("ignore", ".*torch.jit.script.*", FutureWarning)
        warnings.filterwarnings("ignore", ".*torch.jit.script.*", DeprecationWarning)
        try:
            import detectron2.modeling
        except ImportError as e:
            raise ConfigError(
                f"detectron2 {getattr(detectron2, '__version__', '')} is installed but cannot be "
                f"imported ({e.__class__.__name__}: {e}); reinstall it (docs/detection.md, 'The "
                "detectron2 backend')"
            ) from e
        import mic.tasks.detection.detectron2_parts  # noqa: F401
    build = detectron2_build()
    if not getattr(require_detectron2, "said", False):
        require_detectron2.said = True  # type: ignore[attr-defined]
        if build == "compiled":
            log.info("detectron2 %s, compiled with its C++/CUDA ops", detectron2.__version__)
        else:
            log.info(
                "detectron2 %s without its C++/CUDA ops (scripts/install_detectron2_cpu.sh): "
                "Faster R-CNN runs, with ROIAlign and NMS from torchvision; deformable "
                "convolution and rotated boxes are missing",
                detectron2.__version__,
            )
    return build or "python"


def _flatten(opts: Mapping[str, Any] | Sequence[Any] | None, prefix: str = "") -> list[Any]:
    """detectron2's ``merge_from_list`` form of ``opts``: a flat ``[KEY, value, ...]`` list,
    or a mapping (dotted keys or nested, as Hydra gives them)."""
    if opts is None:
        return []
    if not isinstance(opts, Mapping):
        return [_plain(v) for v in opts]
    flat: list[Any] = []
    for key, value in opts.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat += _flatten(value, f"{name}.")
        else:
            flat += [name, _plain(value)]
    return flat


def refuse_mic_keys(opts: Mapping[str, Any] | Sequence[Any] | None, mine: Iterable[str]) -> None:
    """Refuse ``opts`` that set a detectron2 config key mic sets itself in this build
    (``mine``, of ``MIC_KEYS``), or a node above one (``MODEL.ROI_HEADS`` as a whole).

    Args:
        opts: ``Detectron2RCNN``'s ``opts``: a mapping (dotted keys or nested) or a flat
            ``[KEY, value, ...]`` list.
        mine: the keys mic sets: ``ALWAYS_MIC_KEYS`` and those of the arguments given.

    Raises:
        ConfigError: naming each such key and the setting of mic to use instead.
    """
    keys = [str(k) for k in _flatten(opts)[0::2]]
    mine = set(mine)
    found = [
        (name, MIC_KEYS[name])
        for key in keys
        for name in sorted(mine)
        if name == key or name.startswith(f"{key}.")
    ]
    if not found:
        return
    said = ", ".join(f"{name} ({hint})" for name, hint in found)
    raise ConfigError(
        f"model.opts sets detectron2 config keys that mic sets itself from its own settings, "
        f"so they would override mic's values behind its back: {said}. Remove them from "
        "model.opts and use mic's settings instead (in Python: Detectron2RCNN's arguments of "
        "the same names without 'model.')"
    )


#: the detectron2 config keys outside ``MODEL`` that the backend reads (the others are those of
#: detectron2's trainer, whose work the loop does)
READ_OUTSIDE_MODEL = (
    "INPUT.FORMAT",
    "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST",
    "TEST.DETECTIONS_PER_IMAGE",
)
#: what sets, under mic, what detectron2's trainer reads from these sections
_TRAINER_SECTIONS = {
    "SOLVER": "the optimiser, its schedule and the iterations are mic's: optimizer.*, "
    "scheduler.*, iterations",
    "DATASETS": "the data is mic's: dataset.*",
    "DATALOADER": "the loading is mic's: loader.*",
    "INPUT": "the model resizes by model.min_size and model.max_size in training and in "
    "evaluation alike; the augmentation is the method's",
    "TEST": "the evaluation is mic's: eval.*",
}
#: parts of detectron2 models other than Faster R-CNN, which the backend never builds
_OTHER_MODELS = (
    "MODEL.RETINANET.",
    "MODEL.ROI_MASK_HEAD.",
    "MODEL.ROI_KEYPOINT_HEAD.",
    "MODEL.SEM_SEG_HEAD.",
    "MODEL.PANOPTIC_FPN.",
)


def refuse_unread_keys(
    opts: Mapping[str, Any] | Sequence[Any] | None,
    backbone: str | None,
    pretrained: bool,
    weights: str | None,
) -> None:
    """Refuse ``opts`` that set detectron2 config keys the backend does not read, which
    would change nothing: those of detectron2's trainer (``SOLVER.*``, ``DATASETS.*``,
    ``DATALOADER.*``, ``INPUT.*`` but the test sizes and format, ``TEST.*`` but the
    detections per image), of models other than Faster R-CNN, detectron2's own ResNet under a
    timm ``backbone``, and ``MODEL.WEIGHTS`` where it is not loaded (without ``pretrained``,
    with a timm backbone, or beside ``weights``).

    Raises:
        ConfigError: naming each such key and what sets it under mic.
    """
    found = []
    for key in (str(k) for k in _flatten(opts)[0::2]):
        top = key.split(".")[0]
        if top != "MODEL" and key not in READ_OUTSIDE_MODEL:
            found.append(f"{key} ({_TRAINER_SECTIONS.get(top, 'no setting of the model')})")
        elif key.startswith(_OTHER_MODELS):
            found.append(f"{key} (of another detectron2 model: the backend builds Faster R-CNN)")
        elif key == "MODEL.WEIGHTS" and (weights or not pretrained or backbone is not None):
            found.append(
                f"{key} (loaded only as detectron2's ResNet's ImageNet weights, with "
                "model.pretrained=true and model.backbone=null; a detectron2 checkpoint of "
                "the whole model is model.weights=<file>)"
            )
        elif backbone is not None and key.startswith(
            ("MODEL.RESNETS.", "MODEL.BACKBONE.NAME", "MODEL.FPN.IN_FEATURES")
        ):
            found.append(
                f"{key} (detectron2's own ResNet and its FPN's inputs, which the timm backbone "
                f"model.backbone={backbone!r} replaces: model.backbone=null builds it)"
            )
    if found:
        raise ConfigError(
            "model.opts sets detectron2 config keys that the detectron2 backend does not "
            f"read, so they would change nothing: {'; '.join(found)}. Remove them from "
            "model.opts"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return value
    return [_plain(v) for v in value]


def config_file(config: str) -> str:
    """A detectron2 config: a YAML file, or a model-zoo name such as
    ``COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml`` (found in detectron2's package)."""
    if Path(config).is_file():
        return str(config)
    from detectron2 import model_zoo

    zoo = Path(model_zoo.__file__).parent / "configs"
    if (zoo / config).is_file():
        return str(zoo / config)
    near = sorted(p.relative_to(zoo).as_posix() for p in zoo.glob("*/faster_rcnn_*FPN*.yaml"))
    raise ConfigError(
        f"model.config={config!r} is neither a file nor a detectron2 model-zoo config; "
        f"Faster R-CNN configs of the zoo with an FPN: {', '.join(near)}"
    )


def _mic_weights(path: str) -> bool:
    """Whether ``path`` is a mic model's own weights file (a run's ``student.pt``: a state
    dict of the whole Detectron2RCNN, ``rcnn.*``, or of the torchvision detector), which
    detectron2's loader would take leniently, logging each of its hundreds of names first."""
    if "://" in path or not Path(path).expanduser().is_file():
        return False
    try:
        weights = torch.load(Path(path).expanduser(), "cpu", weights_only=True, mmap=True)
    except Exception:  # a pickle (.pkl) or another format: detectron2's to read
        return False
    names = [k for k in weights if isinstance(k, str)] if isinstance(weights, dict) else []
    ours = ("rcnn.", "backbone.body.", "rpn.head.", "roi_heads.box_predictor.")
    return bool(names) and sum(k.startswith(ours) for k in names) > len(names) / 2


class Detectron2RCNN(nn.Module):
    """Faster R-CNN on detectron2's parts (``GeneralizedRCNN``, ``RPN``, ``StandardROIHeads``,
    ``FPN``, its config system), with the interface of ``mic.tasks.detection.FasterRCNN``.

    Input: images in [0, 1], a B x 3 x H x W batch or a list of 3 x H x W images; targets: a
    list of dicts with ``boxes`` (N x 4, x1 y1 x2 y2 in pixels), ``labels`` (N, 0-based class
    ids) and optionally ``weights`` (N). Training mode returns the dict of named losses
    (``rpn_objectness``, ``rpn_box``, ``roi_classifier``, ``roi_box``: detectron2's
    ``loss_rpn_cls``, ``loss_rpn_loc``, ``loss_cls``, ``loss_box_reg``; empty without targets);
    eval mode returns per-image dicts of ``boxes``, ``labels`` (0-based) and ``scores`` in the
    input's pixel coordinates.

    Every argument left None keeps the detectron2 config's value.

    Args:
        config: a detectron2 model-zoo name (default: Faster R-CNN R50-FPN, as published for
            SADA) or a YAML path; a Faster R-CNN (``GeneralizedRCNN`` with ``RPN`` and
            ``StandardROIHeads``); masks and keypoints are switched off.
        num_classes: foreground classes (``MODEL.ROI_HEADS.NUM_CLASSES``).
        backbone: None: the config's (detectron2's ResNet, ``MODEL.RESNETS.DEPTH``); a timm
            name: that model (``mic.backbones``) under detectron2's FPN.
        pretrained: ImageNet weights for the backbone: the config's ``MODEL.WEIGHTS``
            (detectron2's MSRA ResNet for the zoo's configs) or timm's.
        weights: a detectron2 checkpoint loaded into the whole model (a path, a URL or a
            ``detectron2://`` name; classes that differ are left out); overrides
            ``pretrained``'s ``MODEL.WEIGHTS``.
        norm: ``auto`` (frozen BatchNorm with pretrained weights, trainable BatchNorm
            without: frozen statistics of a random network make training diverge),
            ``frozen`` / ``FrozenBN``, ``batch`` / ``BN``, ``GN``, ``SyncBN``
            (``MODEL.RESNETS.NORM``; a timm backbone is frozen or not: ``GN`` and ``SyncBN``
            are refused there).
        trainable_layers: backbone stages that train, torchvision's meaning (5 - ``FREEZE_AT``;
            None: the config's with pretrained weights, all without): of detectron2's ResNet,
            or of a timm backbone's (stem, level 1, ..., level 4).
        fpn_channels: ``MODEL.FPN.OUT_CHANNELS``.
        representation_size: ``MODEL.ROI_BOX_HEAD.FC_DIM``.
        min_size, max_size: the resize of the shorter / longer side, in training and in eval
            (``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST``; published 800 / 1600 for
            Cityscapes).
        image_mean, image_std: normalisation inside the model, RGB in [0, 1] units (None: the
            config's ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``; ImageNet's for a timm backbone).
        anchor_sizes: per FPN level, a size or a list (``MODEL.ANCHOR_GENERATOR.SIZES``).
        aspect_ratios: ``MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS``.
        rpn_*, box_*: the settings of mic's ``FasterRCNN`` of the same names
            (``MODEL.RPN.*_NMS_TOPK_*``, ``BATCH_SIZE_PER_IMAGE``, ``NMS_THRESH``;
            ``MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE``, ``SCORE_THRESH_TEST``,
            ``NMS_THRESH_TEST``; ``TEST.DETECTIONS_PER_IMAGE``).
        opts: any other detectron2 config keys, applied last: a mapping
            (``{"MODEL.RESNETS.DEPTH": 18}`` or nested) or a flat ``[KEY, value, ...]`` list;
            not the keys that the arguments given above set, nor those mic always sets
            (``MIC_KEYS``, ``ALWAYS_MIC_KEYS``).

    Raises:
        ConfigError: detectron2 is missing, an unknown config or config key, ``opts`` that set
            a key of ``MIC_KEYS`` or one the backend does not read (``refuse_unread_keys``), a
            config that is no Faster R-CNN, or that detectron2 cannot build with these
            settings, ``fpn_channels`` for a config without an FPN, weights that cannot be
            loaded.
        TypeError, ValueError: (when called) images that are not floating point, or not
            3 x H x W (of no pixels, or none at all), as torchvision's detector refuses them.
    """

    def __init__(
        self,
        config: str = "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
        num_classes: int = 8,
        backbone: str | None = None,
        pretrained: bool = False,
        weights: str | None = None,
        norm: str = "auto",
        trainable_layers: int | None = None,
        fpn_channels: int | None = None,
        representation_size: int | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        anchor_sizes: Sequence[int | Sequence[int]] | None = None,
        aspect_ratios: Sequence[float] | None = None,
        rpn_pre_nms_top_n_train: int | None = None,
        rpn_post_nms_top_n_train: int | None = None,
        rpn_pre_nms_top_n_test: int | None = None,
        rpn_post_nms_top_n_test: int | None = None,
        rpn_batch_size_per_image: int | None = None,
        rpn_nms_thresh: float | None = None,
        box_batch_size_per_image: int | None = None,
        box_score_thresh: float | None = None,
        box_nms_thresh: float | None = None,
        box_detections_per_img: int | None = None,
        opts: Mapping[str, Any] | Sequence[Any] | None = None,
    ) -> None:
        super().__init__()
        check_whole("num_classes", num_classes, 1, "detection needs at least 1 class")
        check_detector_settings(locals())
        self.build = require_detectron2()
        from detectron2.config import get_cfg
        from detectron2.modeling import GeneralizedRCNN, build_backbone

        from mic.tasks.detection.detectron2_parts import WeightedROIHeads, WeightedRPN, timm_fpn

        cfg = get_cfg()
        try:
            cfg.merge_from_file(config_file(config))
        except (KeyError, ValueError, AssertionError, OSError) as e:
            reason = e.args[0] if e.args else e
            raise ConfigError(f"model.config={config!r} cannot be read: {reason}") from e
        if norm not in ("auto", *_NORMS):
            raise ConfigError(
                f"model.norm must be 'auto', 'frozen', 'batch', 'FrozenBN', 'BN', 'GN' or "
                f"'SyncBN', got {norm!r}"
            )
        if backbone is not None and norm != "auto" and _NORMS[norm] not in ("FrozenBN", "BN"):
            raise ConfigError(  # (it trained a timm backbone's own BatchNorm without a word)
                f"model.norm={norm!r} sets the normalisation of detectron2's own ResNet "
                f"(MODEL.RESNETS.NORM); the timm backbone model.backbone={backbone!r} keeps its "
                "BatchNorm, frozen or trained: give model.norm=frozen, batch or auto, or "
                "model.backbone=null for detectron2's ResNet"
            )
        initialised = bool(pretrained or weights)
        if norm in ("frozen", "FrozenBN"):
            warn_of_random_frozen_norm(initialised, norm, stacklevel=3)
        model = cfg.MODEL
        model.DEVICE = "cpu"  # the loop moves the model
        model.MASK_ON = model.KEYPOINT_ON = False
        model.ROI_HEADS.NUM_CLASSES = int(num_classes)
        model.RESNETS.NORM = _NORMS[norm] if norm != "auto" else "FrozenBN" if initialised else "BN"
        if trainable_layers is not None:
            if not 0 <= int(trainable_layers) <= 5:
                raise ConfigError(
                    f"model.trainable_layers must lie in [0, 5], got {trainable_layers}"
                )
            warn_of_random_frozen(int(trainable_layers), initialised)
            model.BACKBONE.FREEZE_AT = 5 - int(trainable_layers)
        elif not initialised:
            model.BACKBONE.FREEZE_AT = 0
        if backbone is not None:  # timm's normalisation, in RGB
            cfg.INPUT.FORMAT = "RGB"
            model.PIXEL_MEAN = [255 * v for v in IMAGENET_MEAN]
            model.PIXEL_STD = [255 * v for v in IMAGENET_STD]
        rgb = cfg.INPUT.FORMAT == "RGB"
        for key, value in (("PIXEL_MEAN", image_mean), ("PIXEL_STD", image_std)):
            if value is not None:
                pixels = [255 * float(v) for v in value]
                model[key] = pixels if rgb else pixels[::-1]
        counts = {
            "MODEL.FPN.OUT_CHANNELS": fpn_channels,
            "MODEL.ROI_BOX_HEAD.FC_DIM": representation_size,
            "INPUT.MIN_SIZE_TEST": min_size,
            "INPUT.MAX_SIZE_TEST": max_size,
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN": rpn_pre_nms_top_n_train,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN": rpn_post_nms_top_n_train,
            "MODEL.RPN.PRE_NMS_TOPK_TEST": rpn_pre_nms_top_n_test,
            "MODEL.RPN.POST_NMS_TOPK_TEST": rpn_post_nms_top_n_test,
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE": rpn_batch_size_per_image,
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": box_batch_size_per_image,
            "TEST.DETECTIONS_PER_IMAGE": box_detections_per_img,
        }
        fractions = {
            "MODEL.RPN.NMS_THRESH": rpn_nms_thresh,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": box_score_thresh,
            "MODEL.ROI_HEADS.NMS_THRESH_TEST": box_nms_thresh,
        }
        flat = [x for k, v in counts.items() if v is not None for x in (k, int(v))]
        flat += [x for k, v in fractions.items() if v is not None for x in (k, float(v))]
        if anchor_sizes is not None:
            sizes = [[s] if isinstance(s, (int, float)) else list(s) for s in anchor_sizes]
            flat += ["MODEL.ANCHOR_GENERATOR.SIZES", [[int(v) for v in s] for s in sizes]]
        if aspect_ratios is not None:
            ratios = [[float(a) for a in aspect_ratios]]
            flat += ["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", ratios]
        mine = {*ALWAYS_MIC_KEYS, *flat[0::2]}
        if trainable_layers is not None or not initialised:
            mine.add("MODEL.BACKBONE.FREEZE_AT")
        for key, value in (("MODEL.PIXEL_MEAN", image_mean), ("MODEL.PIXEL_STD", image_std)):
            if value is not None or backbone is not None:
                mine.add(key)
        refuse_mic_keys(opts, mine)
        refuse_unread_keys(opts, backbone, bool(pretrained), weights)
        try:
            cfg.merge_from_list(flat + _flatten(opts))
        except (KeyError, ValueError, AssertionError) as e:
            reason = e.args[0] if e.args else e
            raise ConfigError(
                f"model.opts: {reason} (the keys and types of detectron2's config: "
                "detectron2.config.get_cfg())"
            ) from e
        kinds = (model.META_ARCHITECTURE, model.PROPOSAL_GENERATOR.NAME, model.ROI_HEADS.NAME)
        if kinds != ("GeneralizedRCNN", "RPN", "StandardROIHeads"):
            raise ConfigError(
                f"the detectron2 backend builds Faster R-CNN (GeneralizedRCNN, RPN, "
                f"StandardROIHeads); model.config={config!r} gives {', '.join(kinds)}"
            )
        has_fpn = "fpn" in model.BACKBONE.NAME.lower()
        if backbone is None and fpn_channels is not None and not has_fpn:
            raise ConfigError(  # (ignored, and SADA's classifiers read an FPN's maps)
                f"model.fpn_channels={fpn_channels} sets the width of an FPN, but "
                f"model.config={config!r} builds none (its backbone: {model.BACKBONE.NAME}, "
                f"features {', '.join(model.RPN.IN_FEATURES)}): choose a config with an FPN "
                "(COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml), or model.fpn_channels=null "
                "(under SADA also method.terms.adversarial.channels=<its features' width>, which "
                "reads model.fpn_channels)"
            )
        levels, sizes = len(model.RPN.IN_FEATURES), len(model.ANCHOR_GENERATOR.SIZES)
        if sizes not in (1, levels):
            raise ConfigError(
                f"model.anchor_sizes has {sizes} sizes but the RPN reads {levels} feature levels "
                f"({', '.join(model.RPN.IN_FEATURES)}); give one anchor size per level"
            )
        if pretrained and backbone is None and not (weights or model.WEIGHTS):
            raise ConfigError(
                f"model.pretrained=true but model.config={config!r} names no MODEL.WEIGHTS; "
                "give the weights with model.weights=..."
            )
        cfg.freeze()
        self.cfg, self.config = cfg, config
        self.num_classes = int(num_classes)
        self.box_score_thresh = float(model.ROI_HEADS.SCORE_THRESH_TEST)  # (its lowest score)
        if backbone is None:
            body = self._built("the backbone", config, lambda: build_backbone(cfg))
        else:
            frozen = model.RESNETS.NORM == "FrozenBN"
            fpn = model.FPN
            trainable = 5 - min(max(int(model.BACKBONE.FREEZE_AT), 0), 5)
            body = timm_fpn(
                backbone,
                bool(pretrained),
                frozen,
                fpn.OUT_CHANNELS,
                fpn.NORM,
                fpn.FUSE_TYPE,
                trainable,
            )
        shapes = body.output_shape()
        self.rcnn = self._built(
            "the heads",
            config,
            lambda: GeneralizedRCNN(
                backbone=body,
                proposal_generator=WeightedRPN(cfg, shapes),
                roi_heads=WeightedROIHeads(cfg, shapes),
                pixel_mean=model.PIXEL_MEAN,
                pixel_std=model.PIXEL_STD,
                input_format=cfg.INPUT.FORMAT,
            ),
        )
        self.fpn_channels = int(next(iter(shapes.values())).channels)
        self.representation_size = int(self.rcnn.roi_heads.box_head.output_shape.channels)
        mean, std = list(model.PIXEL_MEAN), list(model.PIXEL_STD)
        if not rgb:
            mean, std = mean[::-1], std[::-1]
        self.image_mean = [v / 255 for v in mean]
        self.image_std = [v / 255 for v in std]
        self.min_size, self.max_size = int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST)
        checkpoint = weights or (model.WEIGHTS if pretrained and backbone is None else None)
        if checkpoint:
            self.load_detectron2(checkpoint)
        self._capture: Capture | None = None
        self._shrink_warned = False

    @staticmethod
    def _built(part: str, config: str, build: Any) -> Any:
        """``build()``, with detectron2's own refusal of the config's values (its asserts:
        ``RES2_OUT_CHANNELS`` of a ResNet-18) said as a ``ConfigError``."""
        try:
            return build()
        except (AssertionError, KeyError, ValueError) as e:
            reason = e.args[0] if e.args else type(e).__name__
            if isinstance(e, KeyError):  # (a name of a registry or table: 'XX')
                reason = f"{reason!r} is no name detectron2 knows there"
            raise ConfigError(
                f"detectron2 cannot build {part} of model.config={config!r} with these "
                f"settings (model.opts, model.*): {reason}"
            ) from e

    def load_detectron2(self, checkpoint: str) -> None:
        """Load a detectron2 checkpoint (path, URL or ``detectron2://`` name) into the model
        with detectron2's ``DetectionCheckpointer``; parameters whose shape differs (another
        number of classes) are left as they are. The file may hold the whole model or, as
        ImageNet weights do, its backbone alone; detectron2 loads leniently (it logs what it
        left out), so a file that fills the backbone only in part is refused here.

        Raises:
            ConfigError: the file cannot be found, fetched or read; it leaves more than 5 % of
                the backbone's tensors out, or holds more than 5 % more tensors than the model
                has (another depth or architecture: the model would train from random weights
                there).
        """
        from detectron2.checkpoint import DetectionCheckpointer

        from mic.backbones.factory import weight_loads
        from mic.training.checkpoint import is_readable_checkpoint

        mine = "a mic file of the whole model (a run's student.pt, or a checkpoint)"
        init = "start a run from it with init_from=<file> (leave model.weights out)"
        if is_readable_checkpoint(checkpoint) or _mic_weights(checkpoint):  # (a URL is none)
            raise ConfigError(f"model.weights={checkpoint} is {mine}, not detectron2's: {init}")
        if "://" not in checkpoint:  # a path: advice to download would be beside the point
            if not Path(checkpoint).expanduser().is_file():
                raise ConfigError(
                    f"model.weights={checkpoint}: no such file (from {Path.cwd()}); give the "
                    "path of a detectron2 weights file (.pkl or .pth), a detectron2:// or "
                    "https:// address, or model.weights=null (no weights)"
                )
            checkpoint = str(Path(checkpoint).expanduser())
        try:
            with weight_loads() as loads:
                DetectionCheckpointer(self.rcnn).load(checkpoint)
        except Exception as e:
            raise ConfigError(
                f"could not load the detectron2 weights {checkpoint!r} ({e.__class__.__name__}: "
                f"{e}). Without internet, fetch the file elsewhere (detectron2:// stands for "
                "https://dl.fbaipublicfiles.com/detectron2/) and set model.weights to its "
                "path, or use model.pretrained=false"
            ) from e
        body = "backbone.bottom_up." if hasattr(self.rcnn.backbone, "bottom_up") else "backbone."
        # frozen BatchNorm fills missing statistics itself: count the other tensors
        stats = ("num_batches_tracked", "running_mean", "running_var")
        own = [k for k in self.rcnn.state_dict() if k.startswith(body) and not k.endswith(stats)]
        for whole, missing, unexpected in loads:
            if unexpected and all(k.startswith("rcnn.") for k in unexpected):
                raise ConfigError(f"model.weights={checkpoint} is {mine}: {init}")
            left = [k for k in missing if k.startswith(body) and not k.endswith(stats)]
            short = len(left) > len(own) / 20  # 5 %: another depth, or no model of ours
            if short or len(unexpected) > whole / 20:
                held = (
                    f"fill {len(own) - len(left)} of the backbone's {len(own)} tensors"
                    if short
                    else f"hold {len(unexpected)} tensors this model does not have"
                )
                example = ", ".join((left if short else unexpected)[:3])
                raise ConfigError(
                    f"the detectron2 weights {checkpoint!r} {held} (e.g. {example}): they are "
                    "another model's (another depth or backbone than this one: model.config="
                    f"{self.config!r} with model.backbone and model.opts), so it would train "
                    "from random weights there; give weights of this model, or choose the "
                    "config they belong to"
                )

    # ------------------------------------------------------------------------------ seams
    @contextmanager
    def capture(self) -> Iterator[Capture]:
        """Within the block, forward passes record their FPN and ROI features (the last
        forward's are kept) for alignment losses."""
        captured = Capture()
        self._capture = self.rcnn.roi_heads.captured = captured
        try:
            yield captured
        finally:
            self._capture = self.rcnn.roi_heads.captured = None

    def student_confidence_weights(self) -> AbstractContextManager[None]:
        """Within the block, the training losses weight each sample by the model's own
        confidence on it (``FasterRCNN.student_confidence_weights``, the published masked
        branch's ``PSEUDO_LABEL_WEIGHT='prob'``): a sampled anchor by its objectness
        probability (``rpn_objectness``), a sampled proposal by its highest class probability
        (``roi_classifier``), both detached; the box-regression losses are unchanged."""
        return confidence_weighted(self.rcnn.proposal_generator, self.rcnn.roi_heads)

    def pool_regions(
        self,
        maps: Mapping[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> Tensor:
        """The box head's ROI pooling of ``maps`` (named as the FPN's) over ``proposals``
        (per image, N_i x 4 in the resized image's pixels): N x C x 7 x 7 (detectron2's
        ``ROIPooler``)."""
        from detectron2.structures import Boxes

        heads = self.rcnn.roi_heads
        return heads.box_pooler(
            [maps[f] for f in heads.box_in_features], [Boxes(p) for p in proposals]
        )

    # ---------------------------------------------------------------------------- forward
    def resize(self, image: Tensor) -> Tensor:
        """Shorter side to ``min_size``, longer at most ``max_size`` (bilinear; detectron2's
        ``ResizeShortestEdge`` rule), each side at least 1 px (the rule rounds the shorter side
        of an image whose sides' ratio exceeds twice ``max_size`` to 0 px)."""
        from detectron2.data.transforms import ResizeShortestEdge

        h, w = int(image.shape[-2]), int(image.shape[-1])
        size = ResizeShortestEdge.get_output_shape(h, w, self.min_size, self.max_size)
        size = (max(1, size[0]), max(1, size[1]))
        if size == (h, w):
            return image
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        from detectron2.utils.events import EventStorage

        check_detector_images(images)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        resized = [self.resize(img) for img in images]
        if self.training and not self._shrink_warned:  # once, as the torchvision detector
            self._shrink_warned = warn_of_shrinking(
                sizes,
                [x.shape[-2:] for x in resized],
                f"model.min_size={self.min_size}, model.max_size={self.max_size}",
                "model.min_size=800 model.max_size=1333 (detectron2's sizes)",
            )
        rgb = self.cfg.INPUT.FORMAT == "RGB"
        batch = self.rcnn.preprocess_image(
            [{"image": 255 * (x if rgb else x.flip(0))} for x in resized]
        )
        gt = None
        if self.training and targets is not None:
            gt = [self._instances(t, s, x) for t, s, x in zip(targets, sizes, resized, strict=True)]
        # detectron2's ROI sampling logs its counts to an event storage
        with EventStorage(0) if self.training else nullcontext():
            features = self.rcnn.backbone(batch.tensor)
            if self._capture is not None:
                self._capture.features = features
                self._capture.image_sizes = list(batch.image_sizes)
            proposals, rpn = self.rcnn.proposal_generator(batch, features, gt)
            detections, roi = self.rcnn.roi_heads(batch, features, proposals, gt)
        if self.training:
            if gt is None:
                return {}
            return {
                "rpn_objectness": rpn["loss_rpn_cls"],
                "rpn_box": rpn["loss_rpn_loc"],
                "roi_classifier": roi["loss_cls"],
                "roi_box": roi["loss_box_reg"],
            }
        return self.postprocess(detections, sizes)

    def _instances(self, target: dict[str, Tensor], size: tuple[int, int], image: Tensor) -> Any:
        from detectron2.structures import Boxes, Instances

        h, w = int(image.shape[-2]), int(image.shape[-1])
        scale = torch.tensor([w / size[1], h / size[0]] * 2, device=target["boxes"].device)
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(target["boxes"].to(torch.float32) * scale)
        instances.gt_classes = target["labels"].to(torch.int64)
        if target.get("weights") is not None:
            instances.gt_weights = target["weights"].to(torch.float32)
        if target.get("ignore_boxes") is not None:  # not one per box: a plain attribute
            instances._ignore_boxes = target["ignore_boxes"].to(torch.float32) * scale
        return instances

    @staticmethod
    def postprocess(
        instances: Sequence[Any], original_sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """detectron2's raw detections (``Instances`` with ``pred_boxes``, ``scores``,
        ``pred_classes`` in the resized image) as mic's: dicts of ``boxes`` (in the original
        image's pixels, through detectron2's ``detector_postprocess``), ``labels`` (0-based)
        and ``scores``."""
        from detectron2.modeling.postprocessing import detector_postprocess

        out = []
        for inst, (h, w) in zip(instances, original_sizes, strict=True):
            r = detector_postprocess(inst, h, w)
            out.append({"boxes": r.pred_boxes.tensor, "labels": r.pred_classes, "scores": r.scores})
        return out
