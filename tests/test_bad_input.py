"""Bad input to a run, the way a user meets it: every case runs ``mic-train`` in a subprocess,
stops with one clear paragraph (``mic: error: ...``, status 2, no traceback), and leaves an
existing run folder (its checkpoints and logs) exactly as it was. docs/errors.md lists each case
with the message it gives: regenerate the table with ``python -m tests.test_bad_input``."""

from __future__ import annotations

import errno
import hashlib
import importlib.resources
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mic
from mic import SourceSupervision
from mic.experiment import load_config, run_experiment
from mic.tasks.classification import ClassificationTask
from mic.training import per_process_batch_size
from tests.cli import run_mic_train
from tests.det_helpers import TINY_DET, need
from tests.helpers import (
    TINY_RUN,
    changed_bytes,
    class_folders,
    folder_overrides,
    seg_folder_overrides,
    seg_tree,
    two_class_label,
    write_label,
    write_png,
)

ROOT = Path(__file__).parent.parent
TINY = [*TINY_RUN, "log.tensorboard=false"]
DOCS = ROOT / "docs" / "errors.md"


def _unreadable(tmp):
    tgt = class_folders(tmp / "bad_tgt", ["x"], n=3)
    (tgt / "x" / "broken.png").write_bytes(b"garbage")
    # without the check before training: found when the worker loads it
    return [*folder_overrides(tmp, target=tgt), "loader.num_workers=1", "preflight=false"]


def _flat(tmp):
    for i in range(2):
        write_png(tmp / "flat" / f"{i}.png")
    return folder_overrides(tmp, source=tmp / "flat")


def _foreign_weights(tmp):
    """A weights file that is no resnet's (another model's keys)."""
    path = tmp / "foreign.pth"
    torch.save({"stem.weight": torch.zeros(8, 3, 3, 3), "head.bias": torch.zeros(10)}, path)
    return path


def _own_experiment(tmp, package=True, method=None):
    """A config folder of one's own with ``experiment/mine.yaml`` (with ``# @package
    _global_`` as its first line, or without; with a defaults list choosing ``method``)."""
    folder = tmp / "conf"
    (folder / "experiment").mkdir(parents=True)
    head = "# @package _global_\n" if package else ""
    defaults = f"defaults:\n  - override /method: {method}\n" if method else ""
    (folder / "experiment" / "mine.yaml").write_text(f"{head}{defaults}iterations: 2\n")
    return folder


def _own_method(tmp, text, name="mine", group="method"):
    """A config folder of one's own holding ``<group>/<name>.yaml`` with ``text``."""
    folder = tmp / "conf"
    (folder / group).mkdir(parents=True)
    (folder / group / f"{name}.yaml").write_text(text)
    return str(folder)


#: the bundled digits dataset's config, for a dataset file of one's own
_DIGITS_NAMED = (importlib.resources.files("mic.conf") / "dataset" / "digits.yaml").read_text()
#: an experiment of one's own that gives the model its own class but keeps the model option
_OWN_MODEL_KEPT_OPTION = (
    "# @package _global_\nmodel:\n  _target_: torch.nn.Linear\n  in_features: 3\n"
    "  out_features: 3\n"
)
#: a method file of one's own whose terms sit beside terms: (never trained)
_TERMS_BESIDE = "name: mine\nsource:\n  _target_: mic.SourceSupervision\n"
#: a method file whose term is named mic (replaced by the mic option's MIC)
_TERM_NAMED_MIC = (
    "name: mine\nterms:\n  source:\n    _target_: mic.SourceSupervision\n"
    "  mic:\n    _target_: mic.SourceSupervision\n    weight: 0.1\n"
)


def _empty(tmp):
    (tmp / "empty").mkdir()
    return folder_overrides(tmp, target=tmp / "empty")


def _broken_target(tmp):
    tgt = class_folders(tmp / "bad_tgt", ["x"], n=3)
    (tgt / "x" / "broken.png").write_bytes(b"garbage")
    return folder_overrides(tmp, target=tgt)


def _huge_target(tmp):
    """A 200-megapixel scan (45 kB as a 1-bit PNG) beside small images."""
    from PIL import Image

    tgt = class_folders(tmp / "huge_tgt", ["x"], n=3)
    Image.new("1", (20000, 10000), 1).save(tgt / "x" / "scan.png")
    return folder_overrides(tmp, target=tgt)


def _label_size(tmp):
    src = seg_tree(tmp / "src")
    write_label(src / "lbl" / "1.png", two_class_label((20, 10)))
    return seg_folder_overrides(tmp, source=src)


def _labels_renamed(root: Path, suffix: str) -> Path:
    """``root`` with each label ``lbl/<i>.png`` renamed ``lbl/<i><suffix>``."""
    for label in (root / "lbl").iterdir():
        label.rename(label.with_name(label.stem + suffix))
    return root


def _test_of_two_sizes(tmp):
    """A test split whose second image (and label) is 20 x 10 where the first is 16 x 12."""
    tst = seg_tree(tmp / "tst", n=2)
    Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8)).save(tst / "img" / "1.png")
    write_label(tst / "lbl" / "1.png", two_class_label((20, 10)))
    return seg_folder_overrides(tmp, test=tst)


def _test_labels_of_two_sizes(tmp, preflight=True):
    """A test split whose second image (and label) is 32 x 24 where the first is 16 x 12; the
    test transform resizes the images to 16 x 12 and keeps the labels at full size."""
    tst = seg_tree(tmp / "tst", n=2)
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(tst / "img" / "1.png")
    write_label(tst / "lbl" / "1.png", two_class_label((32, 24)))
    scale = "++dataset.test.transform.scale=[16,12]"
    return [*seg_folder_overrides(tmp, test=tst), scale, f"preflight={str(preflight).lower()}"]


def _missing_label(tmp):
    src = seg_tree(tmp / "src")
    (src / "lbl" / "2.png").unlink()
    return seg_folder_overrides(tmp, source=src)


def _swapped_folders(tmp):
    """The source's label folder given as its images, its JPEG photos as its labels."""
    src = seg_tree(tmp / "src")
    for png in (src / "img").glob("*.png"):
        Image.open(png).save(png.with_suffix(".jpg"))
        png.unlink()
    overrides = seg_folder_overrides(tmp, source=src)
    swap = {"dataset.source_images=": "lbl", "dataset.source_labels=": "img"}
    return [
        next((f"{k}{src / v}" for k, v in swap.items() if o.startswith(k)), o) for o in overrides
    ]


def _split_root_as_target(tmp):
    """dataset.target_images given a labelled split's root (img/ and lbl/), not its images."""
    seg_tree(tmp / "tgt" / "img")  # seg_folder_overrides names tgt/img: it holds img/, lbl/
    return seg_folder_overrides(tmp, target=tmp / "tgt")


def _rcs_label_ids(tmp):
    src = seg_tree(tmp / "src")
    write_label(src / "lbl" / "3.png", two_class_label(right=5))
    return [
        *seg_folder_overrides(tmp, source=src),
        "method=daformer",
        "+dataset.thing_classes=[1]",  # (else the feature distance's, named before the data)
        "++dataset.source.min_pixels=8",
    ]


def _cityscapes_label_ids(tmp):
    """GTA5 -> Cityscapes where Cityscapes holds only the released *_gtFine_labelIds.png."""
    gta = tmp / "gta"
    write_png(gta / "images" / "00001.png", size=(16, 12))
    write_label(gta / "labels" / "00001.png", two_class_label(right=26) + 7)  # road, car
    city = tmp / "cityscapes"
    name = "aachen_000000_000019"
    for split in ("train", "val"):
        write_png(city / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png")
    write_label(
        city / "gtFine" / "val" / "aachen" / f"{name}_gtFine_labelIds.png",
        7 + 0 * two_class_label((10, 10)),
    )
    return [
        "experiment=streets",
        "dataset=gta2cityscapes",
        f"dataset.root_source={gta}",
        f"dataset.root_target={city}",
    ]


def _without(overrides: list[str], folder: Path) -> list[str]:
    """``overrides``, once ``folder`` (written by what made them) is removed."""
    shutil.rmtree(folder)
    return overrides


def _cityscapes_instances(tmp, ids: np.ndarray):
    """Cityscapes -> Foggy Cityscapes detection whose gtFine instanceIds files hold ``ids``
    (saved 8-bit when its values fit, else 16-bit)."""
    root = tmp / "cityscapes"
    name = "aachen_000000_000019"
    for split in ("train", "val"):
        write_png(
            root / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png", size=(24, 16)
        )
        foggy = root / "leftImg8bit_foggy" / split / "aachen"
        write_png(foggy / f"{name}_leftImg8bit_foggy_beta_0.02.png", size=(24, 16))
        gt = root / "gtFine" / split / "aachen" / f"{name}_gtFine_instanceIds.png"
        gt.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids.astype(np.uint8 if ids.max() < 256 else np.uint16)).save(gt)
    return [
        "experiment=det_shapes",
        "dataset=cityscapes_foggy",
        f"dataset.root={root}",
        "++dataset.mic_block_size=4",
    ]


def _coco_run(tmp, width: int, annotations: list, categories: list, *extra: str) -> list[str]:
    """``mic-train`` on a source and a test COCO json of one 30 x 20 image each (``width``:
    the width the jsons state; ``annotations``: (category id, bbox) pairs)."""
    import json

    for name in ("src", "tst"):
        write_png(tmp / name / "a.png", size=(30, 20))
        data = {
            "images": [{"id": 1, "file_name": "a.png", "width": width, "height": 20}],
            "annotations": [
                {"id": i, "image_id": 1, "category_id": c, "bbox": box}
                for i, (c, box) in enumerate(annotations, start=1)
            ],
            "categories": [{"id": i, "name": n} for i, n in enumerate(categories, start=1)],
        }
        (tmp / f"{name}.json").write_text(json.dumps(data))
    class_folders(tmp / "tgt", ["x"])
    return [
        "experiment=det_shapes",
        "dataset=det_coco",
        f"dataset.num_classes={len(categories)}",
        f"dataset.source_images={tmp / 'src'}",
        f"dataset.source_annotations={tmp / 'src.json'}",
        f"dataset.target_images={tmp / 'tgt'}",
        f"dataset.test_images={tmp / 'tst'}",
        f"dataset.test_annotations={tmp / 'tst.json'}",
        *extra,
    ]


def _coco_size(tmp):
    """A COCO json whose stated image size is not the file's."""
    return _coco_run(tmp, 40, [(1, [1, 1, 5, 5])], ["car"])


def _coco_test_reordered(tmp):
    """Two categories (car, bus), the test split given them in the other order."""
    boxes = [(1, [1, 1, 5, 5]), (2, [10, 5, 8, 6])]
    return _coco_run(tmp, 30, boxes, ["car", "bus"], "++dataset.test.classes=[bus,car]")


def _class_folders(tmp, name):
    """A folder of three class folders (cat, dog, fox) and a hidden one, holding nothing."""
    for c in ("cat", "dog", "fox", ".ipynb_checkpoints"):
        (tmp / name / c).mkdir(parents=True, exist_ok=True)
    return tmp / name


def _hrda_pretrained(tmp):
    """HRDA around DAFormer with ImageNet weights (a small MiT) on a few street-scene folders."""
    folders = [a for a in seg_folder_overrides(tmp) if not a.startswith("experiment=")]
    return [
        "experiment=streets_hrda",
        *folders,
        "model=hrda_daformer_mitb5",
        "model.segmenter.encoder=mit_b0",
        "model.segmenter.embed_dim=16",
        "model.detail_crop=[8,8]",  # within the 8 px crops (the config check names it first)
        "++dataset.source.min_pixels=8",  # rare class sampling on 16 x 12 images
    ]


def _write(tmp, name, data: bytes):
    path = tmp / name
    path.write_bytes(data)
    return path


def _other_run(tmp, checkpoint):
    """A copy of ``checkpoint`` in another run folder's checkpoints."""
    (tmp / "other" / "checkpoints").mkdir(parents=True)
    return _write(tmp / "other" / "checkpoints", checkpoint.name, checkpoint.read_bytes())


def _final_weights_only(checkpoint) -> list[str]:
    """Deletes the checkpoints beside ``checkpoint`` (``iter_*.pt``, ``best.pt``) and keeps
    the finished run's student.pt and teacher.pt, as a clean-up of large files leaves it;
    the command runs again as it was (a new run, resume=null)."""
    for path in [*checkpoint.parent.glob("iter_*.pt"), *checkpoint.parent.glob("best*.pt")]:
        path.unlink()
    assert (checkpoint.parent / "student.pt").is_file()
    return ["resume=null"]


def _diverged(checkpoint, copy_to=None):
    """``checkpoint`` with a NaN in its student's first weight, written over it (or to a copy
    in ``copy_to``), as a run that diverged under nan_policy=ignore leaves it."""
    state = torch.load(checkpoint, weights_only=True)
    first = next(k for k, v in state["student"].items() if v.is_floating_point())
    state["student"][first].view(-1)[0] = float("nan")
    path = checkpoint if copy_to is None else copy_to / checkpoint.name
    torch.save(state, path)
    return path


def shifted_digits(**kwargs):
    """The digits source with labels shifted by 3 and no declared class count."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [(x, int(y) + 3) for x, y in (ds[i] for i in range(len(ds)))]


def uint8_digits(**kwargs):
    """The digits source as uint8 images (a dataset without ToTensor)."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    return [((ds[i][0] * 100).to(torch.uint8), ds[i][1]) for i in range(len(ds))]


class RaisingDigits:
    """A dataset of one's own whose __getitem__ fails (its code's fault)."""

    num_classes = 10

    def __init__(self, **kwargs):
        pass

    def __len__(self):
        return 64

    def __getitem__(self, index):
        raise ValueError(f"broken sample {index}")


class EmptyDigits(RaisingDigits):
    """A dataset of one's own that holds no samples."""

    def __len__(self):
        return 0


def two_sizes(**kwargs):
    """Unlabelled digits, every other one a pixel wider."""
    from mic.datasets import DigitsDomain

    ds = DigitsDomain(**kwargs)
    pad = torch.nn.functional.pad
    return [ds[i] if i % 2 else pad(ds[i], (0, 1)) for i in range(len(ds))]


class NoClassCount(ClassificationTask):
    """A task of one's own that never sets num_classes."""

    def __init__(self, **config) -> None:  # takes the config's keys, keeps none
        pass


class TakesNoSettings(ClassificationTask):
    """A task of one's own that takes no arguments (the kept task option's keys are refused)."""

    def __init__(self) -> None:
        super().__init__(10)


class TakesADomain(torch.nn.Module):
    """A model of one's own whose forward needs the domain besides the images."""

    def __init__(self, num_classes: int = 10, **config) -> None:
        super().__init__()
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, num_classes)
        )

    def forward(self, images, domain):
        return self.head(images)


class LongerThanItsData(torch.utils.data.Dataset):
    """A dataset of one's own whose __len__ counts more samples than it holds."""

    def __init__(self, **config) -> None:
        self.images = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int):
        return self.images[index], index % 10


class FiveClasses(ClassificationTask):
    """A task of one's own with its class count fixed (the config's is not read)."""

    def __init__(self, **config) -> None:
        super().__init__(5)

    def check_datasets(self, datasets) -> None:  # its own data check, without class counts
        pass


class LowerAccuracyIsBetter(ClassificationTask):
    """A task of one's own that ranks its accuracy the wrong way round."""

    higher_is_better = False

    def metric(self):
        from torchmetrics.classification import MulticlassAccuracy

        return MulticlassAccuracy(self.num_classes)


class DetachedSource(SourceSupervision):
    """A loss term of one's own that detaches its loss (as ``.item()`` or ``no_grad`` would)."""

    def forward(self, ctx):
        return super().forward(ctx).detach()


class WeightKept(SourceSupervision):
    """A loss term of one's own whose ``__init__`` takes a weight but does not pass it on."""

    def __init__(self, weight: float = 1.0):
        super().__init__()


class WithoutWeight(SourceSupervision):
    """A loss term of one's own whose ``__init__`` takes no weight."""

    def __init__(self):
        super().__init__()


class PixelMasker(mic.Masker):
    """A masker of one's own that takes no settings (it withholds every other pixel)."""

    def forward(self, images, rng=None):
        return images * (torch.arange(images.shape[-1], device=images.device) % 2)


class HistogramStatistic(SourceSupervision):
    """A loss term of one's own that reports a statistic of four values."""

    def forward(self, ctx):
        self.statistics = {"histogram": torch.histc(ctx.source_images, 4)}
        return super().forward(ctx)


#: a few tiny street scenes for the segmentation cases that fail in the first iteration
SCENES = [
    "dataset.size=32",
    "dataset.train_count=8",
    "dataset.test_count=2",
    "loader.source_batch_size=2",
    "loader.target_batch_size=2",
]

#: a short detection run on the fog shapes
SHAPES = [
    "experiment=det_shapes",
    "iterations=2",
    "adaptation_start=0",
    "dataset.source.length=8",
    "dataset.target.length=8",
    "dataset.test.length=8",
    "loader.source_batch_size=2",
    "loader.target_batch_size=2",
]

# (id, what is wrong, overrides(tmp, run) -> list, a fragment of the message)
CASES = [
    # ------------------------------------------------------------------ config
    (
        "config-unknown-key",
        "a key that does not exist",
        lambda t, r: ["learning_rate=0.1"],
        "mic-train has no setting 'learning_rate'",
    ),
    (
        "config-unread-key",
        "a key added with + that nothing reads (a typo of iterations)",
        lambda t, r: ["+iteration=4"],
        "iteration: mic-train reads no such setting; it would change nothing. Did you mean: "
        "iterations?",
    ),
    (
        "config-unread-section-key",
        "a key added with + under a section mic-train reads (a typo of eval.interval)",
        lambda t, r: ["+eval.intervall=1"],
        "eval.intervall: mic-train reads no such setting; it would change nothing. Did you "
        "mean: interval?",
    ),
    (
        "config-unread-dataset-key",
        "a key added with + to the data set that nothing reads (a typo of mic_block_size)",
        lambda t, r: ["+dataset.mic_block=8"],
        "dataset.mic_block: mic-train reads no such setting of the data set, and no "
        "interpolation (${dataset.mic_block}) reads it; it would change nothing. Did you mean: "
        "mic_block_size?",
    ),
    (
        "config-part-group",
        "a config group that holds parts of other configs, chosen as an option",
        lambda t, r: ["augmentation=strong"],
        "augmentation/ holds parts of other configs (the strong augmentation of the mic "
        "options' masker and of self-training), not an option of mic-train: set their keys",
    ),
    (
        "config-mic-key",
        "a MIC setting under the name of its config group",
        lambda t, r: ["mic.masker.ratio=0.5"],
        "MIC's settings live under method.terms.mic (method.terms.mic.masker.ratio=...",
    ),
    (
        "config-method-of-another-task",
        "a segmentation method on the classification task",
        lambda t, r: ["method=dacs"],
        "method: loss terms of another task than classification: mix "
        "(mic.tasks.segmentation.ClassMix, segmentation); choose a classification method",
    ),
    (
        "config-model-of-another-task",
        "a segmentation model on the classification task",
        lambda t, r: ["model=small_unet"],
        "model: mic.tasks.segmentation.SmallUNet is a segmentation model but the task is "
        "classification; choose a classification model",
    ),
    (
        "config-data-of-another-task",
        "a classification data set on the segmentation task (with a segmentation model)",
        lambda t, r: ["task=segmentation", "model=small_unet"],
        "dataset: digits is a classification data set but the task is segmentation; choose a "
        "segmentation data set (dataset=cityscapes2acdc, ",
    ),
    (
        "model-weights-file-missing",
        "a pretrained weights file that does not exist",
        lambda t, r: ["model=resnet50", f"+model.pretrained_cfg_overlay={{file:{t}/none.pth}}"],
        "could not load the pretrained weights of backbone 'resnet50': "
        "pretrained_cfg_overlay.file ",
    ),
    (
        "config-reads-a-setting-the-chosen-group-lacks",
        "a method that reads a model setting the chosen model does not have (DANN's width)",
        lambda t, r: ["method=dann", "~model.bottleneck_dim"],
        "a setting of the config reads ${model.bottleneck_dim}, which this config does not "
        "have: the model chosen sets no bottleneck_dim. Set method.terms.dann.features_dim=...",
    ),
    (
        "model-weights-file-of-another-model",
        "a pretrained weights file of another architecture (it would leave the backbone random)",
        lambda t, r: [
            "model=resnet50",
            "model.backbone=resnet18",
            f"+model.pretrained_cfg_overlay={{file:{_foreign_weights(t)}}}",
        ],
        "the pretrained weights of backbone 'resnet18' (",
    ),
    (
        "model-weights-file-not-pretrained",
        "a weights file given to a backbone told not to load pretrained weights",
        lambda t, r: [
            "model=resnet50",
            "model.pretrained=false",
            f"+model.pretrained_cfg_overlay={{file:{t}/none.pth}}",
        ],
        "pretrained=false, so the file would not be read and the backbone would start from "
        "random weights; set pretrained=true (mic-train: model.pretrained=true)",
    ),
    (
        "config-missing-value",
        "mandatory values not given (every one named where it is set)",
        lambda t, r: ["dataset=folders"],
        "4 mandatory values are not given: dataset.num_classes, dataset.root_source, "
        "dataset.root_target, dataset.root_test",
    ),
    (
        "config-null-folder",
        "a dataset's folder set to null (dataset.root_test=null) to leave out the test set",
        lambda t, r: [
            "dataset=folders",
            *(f"dataset.root_{k}={_class_folders(t, k)}" for k in ("source", "target")),
            "dataset.root_test=null",
            "dataset.num_classes=3",
        ],
        "dataset.test: class-per-folder folder is null: give its path (mic-train: a test set "
        "is left out with dataset.test=null, not with a null folder)",
    ),
    (
        "config-missing-num-classes-folders",
        "dataset=folders without dataset.num_classes: the source's class folders counted",
        lambda t, r: [
            "dataset=folders",
            *(f"dataset.root_{k}={_class_folders(t, k)}" for k in ("source", "target", "test")),
        ],
        "source' holds 3 class folders (dataset.num_classes=3)",
    ),
    (
        "config-deleted-section",
        "a dataset deleted (~key) and not replaced",
        lambda t, r: ["~dataset.target"],
        "dataset.target is not set, but every run builds it: give one on the command line, "
        "e.g. +dataset.target=",
    ),
    (
        "config-deleted-group",
        "a config group deleted whole (~mic: said there is no 'mic'; ~dataset: a traceback)",
        lambda t, r: ["~mic"],
        "~mic deletes the config group mic, which every run composes: choose one of its options "
        "instead (mic=none switches MIC off): block, ",
    ),
    (
        "config-deleted-setting",
        "a setting every run reads deleted (~seed: the message held the whole config)",
        lambda t, r: ["~seed"],
        "~seed deletes the setting seed, which every run reads: set it instead (seed=...)",
    ),
    (
        "config-unknown-argument",
        "an argument the class does not take",
        lambda t, r: ["+model.colour=red"],
        "backbone 'small_cnn' takes no argument colour (mic-train: model.colour;",
    ),
    (
        "config-precision",
        "an unknown precision",
        lambda t, r: ["precision=fp8"],
        "precision: Input should be 'fp32', 'bf16' or 'fp16'",
    ),
    (
        "config-augmentation-jitter",
        "unknown colour operations for the strong augmentations (kornia's name for them)",
        lambda t, r: ["augmentation_jitter=kornia"],
        "augmentation_jitter: Input should be 'torchvision' or 'published' (got 'kornia')",
    ),
    (
        "config-nan-policy",
        "an unknown NaN policy",
        lambda t, r: ["nan_policy=maybe"],
        "nan_policy: Input should be 'skip', 'stop' or 'ignore'",
    ),
    (
        "config-accumulate",
        "gradient accumulation of 0",
        lambda t, r: ["accumulate=0"],
        "accumulate: Input should be greater than or equal to 1",
    ),
    (
        "config-flag-as-text",
        "a true / false argument of a method term given as text",
        lambda t, r: ["method=cdan", 'method.terms.cdan.detach_prediction="false"'],
        "method.terms.cdan.detach_prediction: must be true or false (got 'false')",
    ),
    (
        "config-iterations",
        "no iterations",
        lambda t, r: ["iterations=0"],
        "iterations: Input should be greater than or equal to 1",
    ),
    (
        "config-adaptation-start",
        "adaptation after the end",
        lambda t, r: ["adaptation_start=5"],
        "adaptation_start: must lie in [0, iterations=4]",
    ),
    (
        "config-not-a-number",
        "a number that is not one",
        lambda t, r: ["iterations=abc"],
        "iterations: Input should be a valid integer",
    ),
    (
        "config-fractional-count",
        "a fractional count",
        lambda t, r: ["accumulate=2.5"],
        "accumulate: Input should be a valid integer, got a number with a fractional part",
    ),
    (
        "config-device",
        "a device that does not exist",
        lambda t, r: ["device=tpu"],
        "device: must be auto, cpu, cuda, cuda:<index> or mps",
    ),
    (
        "config-device-index-leading-zero",
        "a CUDA device index written with a leading zero (torch refuses cuda:01)",
        lambda t, r: ["device=cuda:01"],
        "device: must be auto, cpu, cuda, cuda:<index> or mps (got 'cuda:01')",
    ),
    (
        "config-negative-lr",
        "a negative learning rate",
        lambda t, r: ["optimizer.lr=-0.001"],
        "optimizer.lr: Input should be greater than 0",
    ),
    (
        "config-huge-lr",
        "a learning rate of 1e39",
        lambda t, r: ["optimizer.lr=1e39"],
        "optimizer.lr: Input should be less than or equal to 10",
    ),
    (
        "config-batch-size-zero",
        "a batch size of 0",
        lambda t, r: ["loader.source_batch_size=0"],
        "loader.source_batch_size: Input should be greater than or equal to 1",
    ),
    (
        "config-negative-workers",
        "a negative number of loader workers",
        lambda t, r: ["loader.num_workers=-1"],
        "loader.num_workers: Input should be greater than or equal to 0",
    ),
    (
        "config-init-model-without-init-from",
        "init_model=teacher without init_from (it would be ignored)",
        lambda t, r: ["init_model=teacher"],
        "init_model: chooses the model of init_from to start from, but init_from is not set",
    ),
    (
        "method-own-term-given-the-settings-of-the-one-it-replaces",
        "a loss term of one's own swapped in by _target_, which keeps the other term's settings",
        lambda t, r: ["method.terms.self_training._target_=tests.test_core_inputs.NoLoss"],
        "drop them (~method.terms.self_training.weighting), or add yours as a term of its own",
    ),
    (
        "config-hydra-chdir",
        "hydra.job.chdir=true (the job would read relative paths from its run folder)",
        lambda t, r: ["hydra.job.chdir=true"],
        "hydra.job.chdir=true runs the job in its run folder, where the relative paths",
    ),
    (
        "config-checkpoint-keep",
        "keeping -3 checkpoints (once treated as 1)",
        lambda t, r: ["checkpoint.keep=-3"],
        "checkpoint.keep: Input should be greater than or equal to 1",
    ),
    (
        "config-several",
        "several bad values at once",
        lambda t, r: ["iterations=0", "loader.num_workers=-2"],
        "2 config values are not valid",
    ),
    (
        "config-batchnorm-batch-of-one",
        "classification with a batch of 1 sample (BatchNorm1d cannot train)",
        lambda t, r: ["loader.source_batch_size=1"],
        "BatchNorm1d",
    ),
    (
        "config-changed-on-resume",
        "resume with a changed learning rate and batch size",
        lambda t, r: ["optimizer.lr=0.01", "loader.source_batch_size=8"],
        "resume_allow_changes=[loader.source_batch_size,optimizer.lr]",
    ),
    (
        "config-fp16-sam",
        "fp16 with SDAT's SAM",
        lambda t, r: ["method=sdat", "precision=fp16"],
        "precision: SharpnessAwareMinimization (method.step) cannot run in fp16 (its loss "
        "scaling would have to unscale twice per iteration); use bf16",
    ),
    (
        "config-lr-mult",
        "a learning-rate multiplier for no parameter",
        lambda t, r: ["lr_mult={model.decoder: 10}"],
        "matches no trainable parameter",
    ),
    (
        "config-lr-mult-text",
        "a learning-rate multiplier given as text",
        lambda t, r: ["lr_mult={model.backbone: abc}"],
        "lr_mult.model.backbone: a learning-rate multiplier must be a finite number >= 0 (got "
        "'abc'): it is no number",
    ),
    (
        "config-lr-mult-negative",
        "a negative learning-rate multiplier (gradient ascent)",
        lambda t, r: ["lr_mult={model.backbone: -1}"],
        "lr_mult.model.backbone: a learning-rate multiplier must be a finite number >= 0 (got "
        "-1): a negative one makes those parameters climb their loss",
    ),
    (
        "config-bias-lr-factor",
        "a learning-rate factor of the biases of 0 (they would not train)",
        lambda t, r: ["bias_lr_factor=0"],
        "bias_lr_factor: Input should be greater than 0 (got 0)",
    ),
    (
        "config-lr-mult-merged",
        "a mapping of multipliers that Hydra would merge into the experiment's (Hydra's 'Could "
        "not override ... not in struct')",
        lambda t, r: ["experiment=gta2cs_daformer_mic", "lr_mult={model.backbone: 0.1}"],
        "lr_mult={model.backbone: 0.1}: Hydra merges a mapping into lr_mult (which holds "
        "model.decode_head) and cannot add model.backbone to it: add to it with ++lr_mult=",
    ),
    (
        "config-empty-mapping",
        "an empty mapping given to a section, which Hydra merges: it changed nothing (every "
        "term trained)",
        lambda t, r: ["method.terms={}"],
        "method.terms={} changes nothing: Hydra merges a mapping into method.terms, which keeps "
        "what it holds (source, self_training, mic)",
    ),
    (
        "config-experiment-over-option",
        "a model option chosen with an experiment that sets its backbone (a small CNN asked "
        "for, a ViT-B/16 built)",
        lambda t, r: ["experiment=visda2017_sdat_mic_vit", "model=small_cnn"],
        "experiment=visda2017_sdat_mic_vit sets model.backbone='vit_base_patch16_224.augreg_in21k"
        "_ft_in1k' (the option's: 'small_cnn')",
    ),
    (
        "config-env-unset",
        "a value read from an environment variable that is not set",
        lambda t, r: ["seed=${oc.env:MIC_TEST_UNSET_VARIABLE}"],
        "seed=${oc.env:MIC_TEST_UNSET_VARIABLE} reads the environment variable "
        "MIC_TEST_UNSET_VARIABLE, which is not set",
    ),
    (
        "config-env-number-checked",
        "a number read from the environment (a string there) is checked as a number",
        lambda t, r: ["seed=${oc.env:MIC_TEST_UNSET_VARIABLE,-1}"],
        "seed: Input should be greater than or equal to 0 (got -1)",
    ),
    (
        "config-override-unclosed",
        "an override whose list bracket is left open (Hydra's parser words, exit status 1)",
        lambda t, r: ["iterations=[1,2"],
        "iterations=[1,2: Hydra's override grammar cannot read it (no viable alternative at "
        "input '[1,2'): brackets, braces and quotes must pair up",
    ),
    (
        "config-seed-too-large",
        "a seed beyond 32 bits (torch's seeding overflowed)",
        lambda t, r: ["seed=99999999999999999999"],
        "seed: Input should be less than or equal to 4294967295",
    ),
    (
        "config-boolean-for-a-count",
        "true given where a whole number is meant (it ran 1 iteration and recorded true)",
        lambda t, r: ["iterations=true"],
        "iterations: Input should be a valid integer, not true or false (got True)",
    ),
    (
        "config-group-null",
        "a config group set to null (Hydra's traceback; mic=none switches MIC off)",
        lambda t, r: ["mic=null"],
        "mic=null: choose one of its options (mic=none switches MIC off): block,",
    ),
    (
        "config-init-from-empty",
        "an empty init_from (an unset shell variable: it trained from scratch without a word)",
        lambda t, r: ["init_from="],
        "init_from: is empty (an unset shell variable?)",
    ),
    (
        "config-best-by-empty",
        "an empty checkpoint.best_by (an unset shell variable: best.pt followed the target "
        "labels without a word)",
        lambda t, r: ["checkpoint.best_by="],
        "checkpoint.best_by: is empty (an unset shell variable?); give a label-free validator",
    ),
    (
        "config-eval-models-twice",
        "a model listed twice for evaluation (scored twice under one name)",
        lambda t, r: ["eval.models=[student,student]"],
        "eval.models: names a model twice",
    ),
    (
        "config-mic-setting-with-mic-off",
        "a MIC setting beside mic=none",
        lambda t, r: ["mic=none", "method.terms.mic.masker.ratio=0.5"],
        "MIC is switched off (mic=none), so it has no settings",
    ),
    (
        "config-setting-below-null",
        "a setting of a section the recipe sets to null (its MIC masker's augmentation)",
        lambda t, r: [
            "experiment=cs2acdc_hrda_mic",
            f"dataset.root_source={t}/cs",
            f"dataset.root_target={t}/acdc",
            "method.terms.mic.masker.augmentation.jitter=published",
        ],
        "no setting method.terms.mic.masker.augmentation.jitter: "
        "method.terms.mic.masker.augmentation is null in this config (none is used), so it has "
        "no settings; to use one, set method.terms.mic.masker.augmentation itself",
    ),
    (
        "config-adabn-batches-runaway",
        "AdaBN batches far beyond the target data (an evaluation no signal could stop)",
        lambda t, r: [*folder_overrides(t), "eval.adabn_batches=1000000"],
        "eval.adabn_batches=1000000 would pass over the target loader (",
    ),
    (
        "config-env-not-a-number",
        "a learning rate read from the environment that is no number",
        lambda t, r: ["optimizer.lr=${oc.env:MIC_TEST_UNSET_VARIABLE,abc}"],
        "optimizer.lr: Input should be a valid number, not text (got 'abc')",
    ),
    (
        "config-dataset-mean-length",
        "a normalisation mean of 2 values for RGB images",
        lambda t, r: ["dataset.mean=[0.5,0.5]"],
        "dataset.mean: gives 2 values (got [0.5, 0.5]), but it needs one per image channel",
    ),
    (
        "config-label-mapping-quoted-inside",
        "a label mapping whose quotes reached Hydra (\"dataset.label_mapping='{255: 1}'\" "
        "typed in double quotes: read as text; the advice repeated what was typed)",
        lambda t, r: [
            "experiment=streets",
            "dataset=seg_folders",
            "dataset.num_classes=2",
            *(f"dataset.{k}=/x" for k in ("source_images", "source_labels", "target_images")),
            *(f"dataset.{k}=/x" for k in ("test_images", "test_labels")),
            "dataset.label_mapping='{255: 1}'",
        ],
        "got the text '{255: 1}', a quoted value: on the command line the quotes inside the "
        "override reached Hydra, which reads a quoted value as text (quote the whole override "
        "for the shell instead: 'dataset.label_mapping={255: 1}')",
    ),
    (
        "config-dataset-std-zero",
        "a normalisation standard deviation of 0",
        lambda t, r: ["dataset.std=[0.5,0.5,0]"],
        "dataset.std: every value must be above 0 (got [0.5, 0.5, 0])",
    ),
    (
        "config-dir-unknown-experiment",
        "a misspelled experiment of one's own config folder (--config-dir)",
        lambda t, r: ["--config-dir", str(_own_experiment(t)), "experiment=mien"],
        "unknown experiment 'mien'. Did you mean: mine?",
    ),
    (
        "config-dir-experiment-misspelt-dataset-key",
        "a misspelt key of dataset in an experiment file of one's own (the same key on the "
        "command line was refused; in the file it changed nothing)",
        lambda t, r: [
            "--config-dir",
            _own_method(
                t, "# @package _global_\ndataset:\n  mic_block_sise: 4\n", "mine", "experiment"
            ),
            "experiment=mine",
        ],
        "dataset.mic_block_sise (set in experiment/mine.yaml): mic-train reads no such setting "
        "of the data set",
    ),
    (
        "model-channels-other-than-data",
        "a model built for grey images on RGB data (torch's conv error, with its traceback)",
        lambda t, r: ["+model.in_chans=1"],
        "the model's first layer takes 1-channel images, but the data's have 3 (torch: Given "
        "groups=1",
    ),
    (
        "model-channels-zero",
        "a model built for 0-channel images (named only at the first batch, with advice on "
        "making the images 0-channel)",
        lambda t, r: ["+model.in_chans=0"],
        "backbone 'small_cnn' takes images of in_chans channels (mic-train: model.in_chans), a "
        "whole number >= 1 (3 for RGB), got 0",
    ),
    (
        "model-size-beyond-memory",
        "a model setting so large that building the model cannot allocate it (Hydra's "
        "wrapped RuntimeError, naming no setting)",
        lambda t, r: ["model.bottleneck_dim=10000000000000"],
        "cannot build model: it asks for more memory than this machine has",
    ),
    (
        "model-argument-of-another-backbone",
        "a ViT's img_size kept with a ResNet backbone (timm's TypeError through Hydra's wrap)",
        lambda t, r: ["model.backbone=resnet18", "+model.img_size=32"],
        "backbone 'resnet18' takes no argument img_size (mic-train: model.img_size; one of "
        "another architecture",
    ),
    (
        "model-forward-needs-more",
        "a model of one's own whose forward needs an argument besides the images (a traceback)",
        lambda t, r: ["~model", "+model={_target_: tests.test_bad_input.TakesADomain}"],
        "TakesADomain.forward needs 'domain' besides the images, but mic calls model(images)",
    ),
    (
        "data-length-over-samples",
        "a dataset of one's own whose __len__ counts more samples than it holds (an IndexError "
        "mid-run, with its traceback)",
        lambda t, r: [
            "~dataset.source",
            "+dataset.source={_target_: tests.test_bad_input.LongerThanItsData}",
        ],
        "Datasets whose last sample raises an IndexError or KeyError (1): 'sample 23' (__len__ "
        "gives 24, but dataset[23] raises IndexError",
    ),
    (
        "method-features-width",
        "an adversarial term built for another feature width than the model's (met only when "
        "adaptation started)",
        lambda t, r: ["method=dann", "method.terms.dann.features_dim=64"],
        "DomainAdversarial was built for 64 features (its features_dim) but the model gives 256; "
        "set the term's features_dim to the model's feature width (model.bottleneck_dim, or the "
        "backbone's width without one): method.terms.dann.features_dim=256",
    ),
    (
        "task-without-num-classes",
        "a task of one's own without num_classes",
        lambda t, r: ["task._target_=tests.test_bad_input.NoClassCount"],
        "NoClassCount does not set num_classes: a Task says how many classes its model predicts",
    ),
    (
        "task-own-target-over-kept-option",
        "a task of one's own given as task._target_ on the command line, the task option's keys "
        "kept (no ~task +task={...} way out there: the root config reads the task's name)",
        lambda t, r: ["task._target_=tests.test_bad_input.TakesNoSettings"],
        "or a task option of one's own (task/<name>.yaml in a --config-dir folder, chosen with "
        "task=<name>), docs/new_task.md)",
    ),
    (
        "task-module-not-found",
        "a task of one's own whose module is not importable from where mic-train runs",
        lambda t, r: ["task._target_=my_tasks.Regression"],
        "(No module named 'my_tasks': mic-train imports a _target_ from the current folder, ",
    ),
    (
        "task-class-not-found",
        "a task of one's own whose class its module does not have (a typo)",
        lambda t, r: ["task._target_=tests.test_bad_input.NoClassCounts"],
        "(module 'tests.test_bad_input' has no 'NoClassCounts')",
    ),
    (
        "task-module-import-fails",
        "a task of one's own whose module imports a package that is not installed",
        lambda t, r: ["task._target_=tests.faults.broken_import.MyTask"],
        "(No module named 'nonexistent_dependency_of_mic_tests')",
    ),
    (
        "task-own-class-count",
        "a task of one's own whose class count is not the dataset's (the model follows the data)",
        lambda t, r: ["task._target_=tests.test_bad_input.FiveClasses"],
        "the model predicts 10 classes but the task has 5; set model.num_classes to 5",
    ),
    (
        "task-metric-ranked-the-other-way",
        "a task of one's own whose higher_is_better contradicts its torchmetrics metric",
        lambda t, r: ["task._target_=tests.test_bad_input.LowerAccuracyIsBetter"],
        "LowerAccuracyIsBetter.metric() returns MulticlassAccuracy, by which higher is better, "
        "but LowerAccuracyIsBetter.higher_is_better is False",
    ),
    (
        "term-loss-without-gradient",
        "a loss term of one's own whose loss is detached (nothing would train)",
        lambda t, r: [
            "method=source_only",
            "method.terms.source._target_=tests.test_bad_input.DetachedSource",
        ],
        "no loss of iteration 1 that is not 0 has a gradient (['source']): nothing trains",
    ),
    (
        "term-weight-not-passed-on",
        "a loss term of one's own that takes a weight and does not pass it on (it trained at 1)",
        lambda t, r: [
            "method=source_only",
            "mic=none",
            "method.terms.source._target_=tests.test_bad_input.WeightKept",
            "+method.terms.source.weight=0.5",
        ],
        "method.terms.source.weight is 0.5, but the term built holds weight 1.0: WeightKept."
        "__init__ takes weight and does not pass it on; call super().__init__(weight)",
    ),
    (
        "term-without-weight",
        "a loss term of one's own that takes no weight",
        lambda t, r: [
            "method=source_only",
            "mic=none",
            "method.terms.source._target_=tests.test_bad_input.WithoutWeight",
            "+method.terms.source.weight=0.5",
        ],
        "A loss term takes its weight (lambda): give WithoutWeight.__init__ a weight argument "
        "and pass it on, super().__init__(weight) (mic.LossTerm)",
    ),
    (
        "config-own-masker-given-the-others-keys",
        "a masker of one's own put in place of MIC's (its _target_ alone): it is given the "
        "block masker's settings (the advice named the term's key, which does not exist)",
        lambda t, r: ["method.terms.mic.masker._target_=tests.test_bad_input.PixelMasker"],
        "A _target_ of your own under method.terms.mic.masker is given the other keys of its "
        "config too (method.terms.mic.masker.",
    ),
    (
        "term-statistic-not-a-scalar",
        "a loss term of one's own that reports a statistic of several values (a traceback)",
        lambda t, r: [
            "method=source_only",
            "mic=none",
            "method.terms.source._target_=tests.test_bad_input.HistogramStatistic",
            "log.interval=1",
        ],
        "loss term 'source' reports statistics['histogram'] as a tensor of shape (4,): a "
        "statistic is a 0-d tensor (or a number)",
    ),
    (
        "config-searchpath-added",
        "a search path given with + (Hydra ignores it)",
        lambda t, r: [
            f"+hydra.searchpath=[file://{_own_experiment(t)}]",
            "experiment=mine",
        ],
        "+hydra.searchpath is ignored by Hydra, which reads the config search path from "
        "hydra.searchpath= alone: write hydra.searchpath=[file://",
    ),
    (
        "config-non-ascii-path",
        "paths with characters beyond ASCII, unquoted (Hydra's lexer refuses them), named at once",
        lambda t, r: [
            "dataset=folders",
            "dataset.root_source=/data/Bilder/Straße",
            "dataset.root_target=/data/Bilder/Köln",
        ],
        "dataset.root_source=/data/Bilder/Straße, dataset.root_target=/data/Bilder/Köln: Hydra's "
        "override grammar reads characters beyond ASCII (such as ü or é) only in a quoted value: "
        "write 'dataset.root_source=\"/data/Bilder/Straße\"' "
        "'dataset.root_target=\"/data/Bilder/Köln\"'",
    ),
    (
        "config-path-with-brackets",
        "a path holding brackets or a comma, unquoted (Hydra's parse error, or its 'Ambiguous "
        "value'), named with the quoted form",
        lambda t, r: [
            "dataset=folders",
            "dataset.root_source=/data/Photos (1)/src",
            "dataset.root_target=/data/a,b/tgt",
        ],
        "dataset.root_source=/data/Photos (1)/src, dataset.root_target=/data/a,b/tgt: Hydra's "
        "override grammar reads a path holding a bracket, a comma, '=', a quote, '#' or '&' only "
        "in a quoted value: write 'dataset.root_source=\"/data/Photos (1)/src\"' "
        "'dataset.root_target=\"/data/a,b/tgt\"'",
    ),
    (
        "config-run-name-with-slash",
        "a method name that cannot name the run folder and log (Hydra's logging traceback)",
        lambda t, r: ["method.name=my/method"],
        "method.name=my/method: method.name names the run folder and log: give it without '/'",
    ),
    (
        "config-job-name-with-slash",
        "Hydra's job name, which names the log, with a '/' (Hydra's logging traceback)",
        lambda t, r: ["hydra.job.name=a/b"],
        "hydra.job.name=a/b: hydra.job.name names the run folder and log: give it without '/'",
    ),
    (
        "config-file-run-name-with-slash",
        "a dataset file of one's own whose name has a '/' (Hydra's logging traceback)",
        lambda t, r: [
            "--config-dir",
            _own_method(
                t, _DIGITS_NAMED.replace("name: digits", "name: my/digits"), group="dataset"
            ),
            "dataset=mine",
        ],
        "name: 'my/digits' names the run folder and log: give it without '/'",
    ),
    (
        "config-file-list-for-mapping",
        "an experiment file of one's own that gives a section as a list (Hydra's 'Cannot merge "
        "DictConfig with ListConfig', exit 1, naming no key)",
        lambda t, r: [
            "--config-dir",
            _own_method(t, "# @package _global_\noptimizer:\n  - lr: 0.1\n", "mine", "experiment"),
            "experiment=mine",
        ],
        "gives a list where the config holds a mapping (optimizer: a mapping in mic's config)",
    ),
    (
        "config-experiment-run-name-with-slash",
        "an experiment file of one's own that names the method with a '/' (Hydra's logging "
        "traceback)",
        lambda t, r: [
            "--config-dir",
            _own_method(
                t, "# @package _global_\nmethod:\n  name: my/method\n", "mine", "experiment"
            ),
            "experiment=mine",
        ],
        "method.name is 'my/method': method.name names the run folder and log: give it without '/'",
    ),
    (
        "config-run-name-from-unset-variable",
        "a run name read from an environment variable that is not set (Hydra's traceback)",
        lambda t, r: ["method.name=${oc.env:MIC_TEST_UNSET_VARIABLE}"],
        "method.name=${oc.env:MIC_TEST_UNSET_VARIABLE} reads the environment variable "
        "MIC_TEST_UNSET_VARIABLE, which is not set",
    ),
    (
        "config-home-path",
        "a path written with ~ after key= (the shell leaves it unexpanded)",
        lambda t, r: ["dataset=folders", "dataset.root_source=~/source"],
        "dataset.root_source=~/source: a value starting with ~ is not read by Hydra's override "
        "grammar (and the shell expands ~ after = only where the key is a plain name): write "
        "the path in full, dataset.root_source=/",
    ),
    (
        "config-part-option",
        "a config file that holds parts of others chosen as an option (another option's "
        "message: the digits data set with a segmentation task)",
        lambda t, r: ["experiment=_segmentation"],
        "experiment=_segmentation: experiment/_segmentation.yaml holds parts of other experiment "
        "configs, not an option of its own: choose one of cityscapes_foggy, ",
    ),
    (
        "config-capitalised-key",
        "a root setting spelt with a capital letter (Hydra's 'Could not override', advising +)",
        lambda t, r: ["Seed=3"],
        "mic-train has no setting 'Seed'. Did you mean: seed?",
    ),
    (
        "config-stray-word",
        "a word that is no key=value, as a path with an unquoted space leaves (Hydra's 'missing "
        "EQUAL at <EOF>')",
        lambda t, r: ["hydra.run.dir=/tmp/my", "runs/a"],
        "'runs/a': not key=value (a part of a path with a space, unquoted?); quote a value with "
        "spaces for the shell ('hydra.run.dir=/runs/my run'), and give each setting as key=value",
    ),
    (
        "config-sweep-and-cfg",
        "a sweep (-m) asked to print its config (--cfg job): two of Hydra's modes",
        lambda t, r: ["-m", "iterations=2,3", "--cfg", "job"],
        "--multirun and --cfg cannot be combined: Hydra runs one of --run, --multirun (-m), "
        "--cfg, --info, --shell-completion; to see one job of a sweep, give --cfg job without "
        "-m and one value per setting",
    ),
    (
        "config-cfg-hydra-resolve",
        "Hydra's config alone asked resolved (a traceback: its job name reads the job's config)",
        lambda t, r: ["--cfg", "hydra", "--resolve"],
        "--cfg hydra --resolve: Hydra's config alone cannot be resolved (its job name reads "
        "the job's settings); give --cfg all --resolve",
    ),
    (
        "config-cfg-job-resolve-missing-key",
        "the job's config shown resolved, with an interpolation of a key it lacks (a traceback)",
        lambda t, r: ["--cfg", "job", "--resolve", "eval.interval=${intervall}"],
        "eval.interval reads ${intervall}, which this config does not have",
    ),
    (
        "config-cfg-job-resolve-unset-variable",
        "the job's config shown resolved, reading an unset environment variable (a traceback)",
        lambda t, r: ["--cfg", "job", "--resolve", "seed=${oc.env:MIC_TEST_UNSET}"],
        "seed=${oc.env:MIC_TEST_UNSET} reads the environment variable MIC_TEST_UNSET, which is "
        "not set",
    ),
    (
        "config-experiment-without-package",
        "an experiment file of one's own without '# @package _global_'",
        lambda t, r: [
            f"hydra.searchpath=[file://{_own_experiment(t, package=False)}]",
            "experiment=mine",
        ],
        "experiment: the experiment file's settings (iterations) were placed under "
        "experiment.<key>, where nothing reads them, because the file does not start with the "
        "line '# @package _global_'",
    ),
    (
        "config-experiment-defaults-without-package",
        "an experiment file of one's own with a defaults list, without '# @package _global_'",
        lambda t, r: [
            "--config-dir",
            str(_own_experiment(t, package=False, method="source_only")),
            "experiment=mine",
        ],
        "has a defaults list but does not start with the line '# @package _global_'",
    ),
    (
        "config-experiment-unknown-default",
        "an experiment file of one's own whose defaults list chooses a misspelled option",
        lambda t, r: [
            "--config-dir",
            str(_own_experiment(t, method="sourceonly")),
            "experiment=mine",
        ],
        "defaults list: unknown method 'sourceonly'. Did you mean: source_only?",
    ),
    (
        "config-own-method-terms-beside",
        "a method file of one's own whose terms are not under terms: (MIC alone trained)",
        lambda t, r: ["--config-dir", _own_method(t, _TERMS_BESIDE), "method=mine"],
        "source (a _target_ each) beside terms:, where no loss term is read, and no "
        "interpolation reads them: a loss term goes under terms:",
    ),
    (
        "config-own-method-term-named-mic",
        "a method file of one's own with a term named mic (replaced by MIC without a word)",
        lambda t, r: ["--config-dir", _own_method(t, _TERM_NAMED_MIC), "method=mine"],
        "a term named 'mic' is replaced by MIC's (the mic option writes method.terms.mic; "
        "mic=none removes it): give your term another name",
    ),
    (
        "config-own-model-over-kept-option",
        "an experiment of one's own giving the model a _target_ of its own but keeping the "
        "model option (its keys passed to the new class; no word of the way out)",
        lambda t, r: [
            "--config-dir",
            _own_method(t, _OWN_MODEL_KEPT_OPTION, group="experiment"),
            "experiment=mine",
        ],
        "model.backbone comes from the model option 'small_cnn', which the config keeps under "
        "another _target_: a model of one's own replaces the group, with `override /model: "
        "null` in an experiment's defaults",
    ),
    (
        "config-null-for-a-flag",
        "null for a true / false setting of an object that has no null (read as false: "
        "the streets' target flips off without a word)",
        lambda t, r: ["experiment=streets", "dataset.target.flip=null"],
        "dataset.target.flip: must be true or false, not null",
    ),
    (
        "config-no-weight-decay-empty",
        "an empty no_weight_decay entry (part of every name: no parameter decayed)",
        lambda t, r: ["no_weight_decay=['']"],
        "an empty one is part of every name, so no parameter would decay",
    ),
    (
        "config-validators-a-number",
        "eval.validators given a number (a TypeError)",
        lambda t, r: ["eval.validators=5"],
        "eval.validators: lists label-free validators by name",
    ),
    (
        "config-sweep-interval",
        "a sweep over interval() (Hydra's basic sweeper's traceback)",
        lambda t, r: ["-m", "seed=interval(0,5)"],
        "interval() is a range of real numbers that a sampling sweeper draws from",
    ),
    (
        "config-sweep-of-no-value",
        "a sweep of no value (Hydra launched 0 jobs and exited 0)",
        lambda t, r: ["-m", "seed=range(0,-1)"],
        "seed=range(0,-1) sweeps no value, so the sweep would run no job",
    ),
    (
        "config-sweep-glob-of-no-option",
        "a sweep over a glob that matches no option (Hydra launched 0 jobs and exited 0)",
        lambda t, r: ["-m", "model=glob(nope*)"],
        "model=glob(nope*) matches no option of model, so the sweep would run no job; its "
        "options: context_unet,",
    ),
    (
        "config-key-of-another-option",
        "a setting of another option of the group (momentum of SGD, the default optimizer Adam)",
        lambda t, r: ["optimizer.momentum=0.9"],
        "no setting optimizer.momentum: optimizer has no 'momentum'. Its settings: lr. The "
        "optimizer options that set it: optimizer=sgd",
    ),
    (
        "config-unlisted-argument",
        "an argument the model class takes but its config does not list, set without +",
        lambda t, r: ["experiment=det_shapes", "model.rpn_nms_thresh=0.6"],
        "no setting model.rpn_nms_thresh: model has no 'rpn_nms_thresh'. "
        "mic.tasks.detection.FasterRCNN takes rpn_nms_thresh, but the config does not list it: "
        "add it with +model.rpn_nms_thresh=...",
    ),
    (
        "config-nested-group",
        "a part chosen inside a model config, swapped as a group (Hydra's 'Could not override')",
        lambda t, r: ["experiment=streets_hrda", "model/segmenter=smp"],
        "model/segmenter=smp: model/segmenter is no config group of its own: the model configs "
        "that have a segmenter (hrda_daformer_mitb5, hrda_small_unet) choose it in their own "
        "defaults list",
    ),
    (
        "config-sweep-unknown-key",
        "a sweep with a key that does not exist, not swept itself (Hydra's advice: add it with +)",
        lambda t, r: ["-m", "seed=0,1", "model.colour=red"],
        "the sweep's first job (seed=0) would stop: no setting model.colour: model has no "
        "'colour'. Its settings: backbone,",
    ),
    (
        "config-run-name-too-long",
        "a method name longer than a file name may be (Hydra's traceback setting up the log)",
        lambda t, r: ["method.name=" + "m" * 300],
        "more than a file name may hold (255): shorten method.name or dataset.name",
    ),
    (
        "config-run-name-interpolation-missing",
        "the run's name reading a setting that does not exist (Hydra's traceback setting up "
        "the log)",
        lambda t, r: ["method.name=${dataset.nme}_x"],
        "${dataset.nme} names no setting of the run's config, which Hydra reads to name the run "
        "(its folder or log). Did you mean: dataset.name,",
    ),
    (
        "config-own-run-name-too-long",
        "an experiment of one's own giving the method a name longer than a log file's may be "
        "(Hydra's traceback setting up the log)",
        lambda t, r: [
            "--config-dir",
            _own_method(
                t, "# @package _global_\nmethod:\n  name: " + "m" * 300, group="experiment"
            ),
            "experiment=mine",
        ],
        "more than a file name may hold (255): shorten method.name or dataset.name",
    ),
    (
        "config-run-name-removed",
        "the method's name deleted (Hydra's interpolation traceback)",
        lambda t, r: ["~method.name"],
        "method.name names the run's log file (and, with the default folders, its folder) and "
        "cannot be removed",
    ),
    (
        "config-own-method-without-name",
        "a method file of one's own without name: (Hydra's traceback on the log file's name)",
        lambda t, r: ["--config-dir", _own_method(t, "terms: {}\n"), "method=mine"],
        "has no name: (it names the run folder and log): add name: mine",
    ),
    (
        "config-own-file-yaml-error",
        "a config file of one's own that YAML cannot read (an 89-line traceback)",
        lambda t, r: ["--config-dir", _own_method(t, "name: a\n\tterms: {}\n"), "method=mine"],
        "mine.yaml, line 2, column 1: YAML cannot read it (found character '\\t' that cannot "
        "start any token)",
    ),
    (
        "config-own-file-shadowed",
        "a config file of one's own named as one of mic's (mic's taken, the edit ignored)",
        lambda t, r: [
            "--config-dir",
            _own_method(t, "name: mean_teacher\n", name="mean_teacher"),
            "method=mean_teacher",
        ],
        "have the name of one of mic's (",
    ),
    (
        "config-unknown-option",
        "a misspelled option of a config group",
        lambda t, r: ["experiment=det_shapez"],
        "unknown experiment 'det_shapez'. Did you mean: det_shapes?",
    ),
    (
        "config-backbone",
        "an unknown backbone",
        lambda t, r: ["model.backbone=resnet5"],
        "unknown backbone 'resnet5'",
    ),
    (
        "config-backbone-null",
        "no backbone (`model.backbone=null`)",
        lambda t, r: ["model.backbone=null"],
        "model.backbone must be a timm model name (e.g. resnet50) or a module with num_features",
    ),
    (
        "config-task-classes",
        "a task class count set apart from the data's, which the model follows (the advice was "
        "to change the model)",
        lambda t, r: ["task.num_classes=7"],
        "task.num_classes=7, but dataset.num_classes=10 and the model predicts as many: leave "
        "task.num_classes out (by default it follows dataset.num_classes; if the data has 7 "
        "classes, set dataset.num_classes=7)",
    ),
    (
        "config-model-classes",
        "model and dataset class counts differ",
        lambda t, r: ["model.num_classes=7"],
        "the model predicts 7 classes",
    ),
    (
        "config-teacher-alpha",
        "an EMA decay outside [0, 1]",
        lambda t, r: ["teacher.alpha=1.5"],
        "teacher.alpha: Input should be less than or equal to 1",
    ),
    (
        "config-mask-ratio",
        "a mask ratio outside [0, 1)",
        lambda t, r: ["method.terms.mic.masker.ratio=1.5"],
        "method.terms.mic.masker.ratio: the share of withheld blocks must lie in [0, 1): at 1 "
        "every block is withheld and the student sees no image (published 0.7) (got 1.5)",
    ),
    (
        "config-mask-ratio-one",
        "a mask ratio of 1 (every block withheld: the student trained on the fill colour "
        "alone, or its gradients were NaN)",
        lambda t, r: ["method.terms.mic.masker.ratio=1.0"],
        "masker.ratio: the share of withheld blocks must lie in [0, 1): at 1 every block is "
        "withheld and the student sees no image (published 0.7) (got 1.0)",
    ),
    (
        "config-mask-ratio-text",
        "a mask ratio given as text",
        lambda t, r: ["method.terms.mic.masker.ratio=abc"],
        "method.terms.mic.masker.ratio: Input should be a number (got 'abc')",
    ),
    (
        "config-mask-block-fraction",
        "a fractional mask block size",
        lambda t, r: ["method.terms.mic.masker.block_size=2.5"],
        "method.terms.mic.masker.block_size: Input should be a valid integer, got a number "
        "with a fractional part (got 2.5)",
    ),
    (
        "config-negative-loss-weight",
        "a negative loss weight (gradient ascent)",
        lambda t, r: ["method.terms.self_training.weight=-5"],
        "method.terms.self_training.weight: a loss weight must be a finite number >= 0 (got -5)",
    ),
    (
        "config-mic-of-another-task",
        "MIC for segmentation on the classification task",
        lambda t, r: ["mic=segmentation"],
        "mic: this mic option's term (mic.tasks.segmentation.SegmentationMIC) is a "
        "segmentation term but the task is classification; choose a classification MIC "
        "option (mic=block, mic=block_resnet, mic=block_vit, mic=none)",
    ),
    (
        "config-mic-classification-recipe-on-detection",
        "a classification recipe's MIC option on detection (it trained the generic term "
        "without detection's fill, weighting and parts, without a word)",
        lambda t, r: ["experiment=det_shapes", "mic=block_vit"],
        "mic: this mic option is a classification recipe's (the generic "
        "mic.MaskedImageConsistency), which has no detection form; choose a detection MIC "
        "option (mic=block, mic=none)",
    ),
    (
        "config-scheduler-not-a-number",
        "a schedule's power given as text",
        lambda t, r: ["scheduler=poly", "scheduler.power=abc"],
        "scheduler.power: must be a number >= 0 (got 'abc')",
    ),
    (
        "config-scheduler-negative-gamma",
        "a negative gamma of the inverse decay (a division by zero before)",
        lambda t, r: ["scheduler=inverse", "scheduler.gamma=-1"],
        "scheduler.gamma: must be a number >= 0 (got -1)",
    ),
    (
        "config-scheduler-negative-warmup",
        "a negative warm-up",
        lambda t, r: ["scheduler=poly", "scheduler.warmup_iters=-5"],
        "scheduler.warmup_iters: must be a whole number >= 0 (got -5)",
    ),
    (
        "config-resume-false",
        "resume=false (off is null)",
        lambda t, r: ["resume=false"],
        "resume: null (or leaving it out) turns it off; the other values are auto, a "
        "checkpoint file or a run folder (got False)",
    ),
    (
        "config-eval-models-teacher",
        "eval.models led by a teacher that the method does not have",
        lambda t, r: ["mic=none", "method=source_only", "eval.models=[teacher]"],
        "eval.models=[teacher] starts with teacher, but method=source_only",
    ),
    (
        "config-optimizer-argument",
        "an argument the optimizer does not take",
        lambda t, r: ["+optimizer.momentum=0.9"],
        "cannot build the optimizer torch.optim.Adam from the config",
    ),
    (
        "config-optimizer-nesterov",
        "SGD's Nesterov momentum with the momentum turned off",
        lambda t, r: ["optimizer=sgd", "optimizer.momentum=0"],
        "set optimizer.nesterov=false too",
    ),
    (
        "config-resume-allow-typo",
        "a typo in resume_allow_changes",
        lambda t, r: ["resume_allow_changes=[iteratons]"],
        "Did you mean: iterations?",
    ),
    (
        "config-weighting",
        "an unknown pseudo-label weighting",
        lambda t, r: ["method.terms.mic.weighting=soft"],
        "pseudo-label weighting must be one of",
    ),
    (
        "config-ignore-threshold",
        "a detection ignore threshold at or above the pseudo-label threshold",
        lambda t, r: [*TINY_DET, "task.ignore_threshold=0.9"],
        "task.ignore_threshold must be null or lie in [0, task.score_threshold = 0.8)",
    ),
    (
        "config-ignore-threshold-false",
        "a detection ignore threshold of false (off is null)",
        lambda t, r: [*TINY_DET, "task.ignore_threshold=false"],
        "task.ignore_threshold: Input should be a number or null (got False)",
    ),
    (
        "dataset-shared-setting-out-of-range",
        "a fog density below 0, given where the data set's domains read it (dataset.beta)",
        lambda t, r: [*TINY_DET, "dataset.beta=-0.5"],
        "got -0.5 (its beta reads dataset.beta: set it there)",
    ),
    (
        "model-d2-timm-backbone-group-norm",
        "detectron2 with a timm backbone and model.norm=GN, which sets detectron2's own ResNet "
        "(the timm backbone's BatchNorm trained without a word)",
        lambda t, r: [*TINY_DET, "model=d2_faster_rcnn_small", "model.norm=GN"],
        "keeps its BatchNorm, frozen or trained: give model.norm=frozen, batch or auto, or "
        "model.backbone=null for detectron2's ResNet",
    ),
    (
        "model-d2-opts-trainer-key",
        "detectron2 trainer keys under model.opts, which the backend does not read (the run "
        "trained on with mic's learning rate and sizes)",
        lambda t, r: [
            *TINY_DET,
            "model=d2_faster_rcnn_small",
            "+model.opts.SOLVER.BASE_LR=0.5",
            "+model.opts.INPUT.MIN_SIZE_TRAIN=[64]",
        ],
        "model.opts sets detectron2 config keys that the detectron2 backend does not read, so "
        "they would change nothing: SOLVER.BASE_LR (the optimiser, its schedule and the "
        "iterations are mic's",
    ),
    (
        "model-d2-opts-weights-not-loaded",
        "MODEL.WEIGHTS under model.opts without model.pretrained (never loaded, no word)",
        lambda t, r: [
            *TINY_DET,
            "model=d2_faster_rcnn_small",
            "model.backbone=null",
            "+model.opts.MODEL.RESNETS.DEPTH=18",
            "+model.opts.MODEL.RESNETS.RES2_OUT_CHANNELS=64",
            f"+model.opts.MODEL.WEIGHTS={t / 'r18.pth'}",
        ],
        "MODEL.WEIGHTS (loaded only as detectron2's ResNet's ImageNet weights, with "
        "model.pretrained=true and model.backbone=null; a detectron2 checkpoint of the whole "
        "model is model.weights=<file>)",
    ),
    (
        "model-d2-build-refused",
        "detectron2's ResNet-18 without the RES2_OUT_CHANNELS it needs (detectron2's assert "
        "through Hydra's error)",
        lambda t, r: [
            *TINY_DET,
            "model=d2_faster_rcnn_small",
            "model.backbone=null",
            "+model.opts.MODEL.RESNETS.DEPTH=18",
        ],
        "detectron2 cannot build the backbone of model.config='COCO-Detection/faster_rcnn_R_50_"
        "FPN_1x.yaml' with these settings (model.opts, model.*): Must set MODEL.RESNETS.RES2_"
        "OUT_CHANNELS = 64 for R18/R34",
    ),
    (
        "model-d2-config-without-fpn",
        "a detectron2 config without an FPN (DC5) under SADA (model.fpn_channels ignored, "
        "refused only once adaptation began)",
        lambda t, r: [
            *TINY_DET,
            "model=d2_faster_rcnn_small",
            "model.backbone=null",
            "model.config=COCO-Detection/faster_rcnn_R_50_DC5_1x.yaml",
        ],
        "model.fpn_channels=16 sets the width of an FPN, but model.config='COCO-Detection/"
        "faster_rcnn_R_50_DC5_1x.yaml' builds none (its backbone: build_resnet_backbone, "
        "features res5)",
    ),
    (
        "method-sada-widths-not-the-detector-s",
        "SADA's classifiers given another width than the detector's FPN (refused only once "
        "adaptation began, after the source stage)",
        lambda t, r: [*TINY_DET, "method.terms.adversarial.channels=32"],
        "DomainAdversarial(channels=32) but the detector's fpn_channels is 16: give channels=16 "
        "(mic-train: the method's channels follows model.fpn_channels)",
    ),
    (
        "config-own-keys-without-plus",
        "a detectron2 key under model.opts (a mapping of one's own keys) without the + that "
        "adds it",
        lambda t, r: [
            *TINY_DET,
            "model=d2_faster_rcnn_small",
            "model.opts.MODEL.ROI_HEADS.POSITIVE_FRACTION=0.5",
        ],
        "model.opts has no 'MODEL'. Its settings: none. It holds keys of one's own: add one "
        "with +model.opts.MODEL.ROI_HEADS.POSITIVE_FRACTION=...",
    ),
    (
        "loader-batch-of-one-with-batchnorm",
        "batches of one image into trainable BatchNorm whose features shrink to one pixel "
        "(torch's ValueError through Hydra's traceback)",
        lambda t, r: [
            *TINY_DET,
            "loader.source_batch_size=1",
            "loader.target_batch_size=1",
            "dataset.size=32",
            "dataset.mic_block_size=4",
        ],
        "give batches of 2 or more images (loader.source_batch_size, loader.target_batch_size)",
    ),
    (
        "config-validator",
        "an unknown label-free validator",
        lambda t, r: ["eval.validators=[entropy,accuracy]"],
        "unknown validator 'accuracy'",
    ),
    (
        "config-best-by",
        "checkpoint selection by a validator that does not exist",
        lambda t, r: ["checkpoint.best_by=accurracy"],
        "names no validator",
    ),
    (
        "config-best-by-in-capitals",
        "checkpoint selection by a validator written in capitals (IM)",
        lambda t, r: ["checkpoint.best_by=IM"],
        "for the labelled target metric. Did you mean: im?",
    ),
    (
        "config-no-test-set-without-a-validator",
        "no labelled target (dataset.test=null) and best.pt left to the labelled metric",
        lambda t, r: ["dataset.test=null"],
        "dataset.test=null: without a labelled target there is no accuracy to choose best.pt by",
    ),
    (
        "config-no-test-set-and-no-validator",
        "no labelled target (dataset.test=null) and no validator (the advice then failed in turn)",
        lambda t, r: ["dataset.test=null", "eval.validators=[]"],
        "dataset.test=null with eval.validators=[]: the evaluations have nothing to score",
    ),
    (
        "config-best-by-not-computed",
        "checkpoint selection by a validator that is not computed",
        lambda t, r: ["eval.validators=[entropy]", "checkpoint.best_by=snd"],
        "does not compute it",
    ),
    (
        "config-validation-batches",
        "label-free validation on no target batch",
        lambda t, r: ["eval.validation.batches=0"],
        "at least 1 target batch",
    ),
    (
        "config-validation-not-a-number",
        "a label-free validation seed that is no number",
        lambda t, r: ["eval.validation.seed=abc"],
        "eval.validation.seed: Input should be a valid integer, not text (got 'abc')",
    ),
    (
        "config-validation-fractional-batches",
        "a fractional count of label-free validation batches",
        lambda t, r: ["eval.validation.batches=2.5"],
        "eval.validation.batches: Input should be a valid integer, got a number with a "
        "fractional part (got 2.5)",
    ),
    (
        "config-validation-negative-seed",
        "a negative label-free validation seed (the root seed refuses one too)",
        lambda t, r: ["eval.validation.seed=-3"],
        "eval.validation.seed: Input should be greater than or equal to 0 (got -3)",
    ),
    (
        "config-mic-block-size-not-a-number",
        "a MIC block size that is no number",
        lambda t, r: ["dataset.mic_block_size=abc"],
        "dataset.mic_block_size: Input should be a valid integer (got 'abc'); MIC's block side "
        "is a whole number of pixels >= 1",
    ),
    (
        "config-margins-cover-target",
        "pseudo-label margins that cover the target images (a Cityscapes recipe's on small "
        "images): named at the data check, not at the first adapting iteration",
        lambda t, r: [
            "experiment=streets",
            "dataset.train_count=8",
            "dataset.test_count=2",
            "task.pseudo_label_margins=[15,120,0,0]",
        ],
        "task.pseudo_label_margins [15, 120, 0, 0] (top, bottom, left, right) cover every "
        "pixel of the 64 x 64 target images",
    ),
    (
        "config-interpolation-typo",
        "an interpolation of a root setting that does not exist (a typo's)",
        lambda t, r: ["optimizer.lr=${seeed}"],
        "optimizer.lr reads ${seeed}, which this config does not have. Did you mean: seed?",
    ),
    (
        "config-image-size-zero",
        "an image side of 0 px (empty images; a fraction is refused as well)",
        lambda t, r: ["experiment=streets", "dataset.size=0"],
        "dataset.size: the images' side must be a whole number of pixels >= 1 (got 0)",
    ),
    (
        "task-model-other-with-its-setting",
        "a model of another task, with a setting of the right one (the setting is not the cause)",
        lambda t, r: ["model=small_unet", "model.bottleneck_dim=8"],
        "SmallUNet is a segmentation model but the task is classification; choose a "
        "classification model",
    ),
    (
        "config-append-existing",
        "a setting the config has, added with + (Hydra's 'could not append', exit status 1)",
        lambda t, r: ["+eval.interval=5"],
        "+eval.interval=... adds a setting, but eval.interval is already set (to 250); set it "
        "without +: eval.interval=5",
    ),
    (
        "config-append-existing-root",
        "a root setting the config has, added with + (Hydra's 'could not append', exit 1)",
        lambda t, r: ["+iterations=5"],
        "+iterations=... adds a setting, but iterations is already set (to 4); set it without +: "
        "iterations=5",
    ),
    (
        "config-append-group",
        "a config group's option added with + where the defaults choose one (Hydra's 'Multiple "
        "values for model', exit 1)",
        lambda t, r: ["+model=resnet50"],
        "+model=... adds a second model choice, but the config's defaults hold one already: "
        "choose it without +: model=resnet50",
    ),
    (
        "config-group-list",
        "several options of one config group in a list (Hydra merged them into one config, "
        "or failed on an interpolation)",
        lambda t, r: ["method=[dacs,mean_teacher]"],
        "method=[dacs,mean_teacher] chooses several method options at once, which Hydra would "
        "merge into one config: choose one (method=dacs), or run each in turn (a sweep: "
        "mic-train -m method=dacs,mean_teacher)",
    ),
    (
        "config-num-classes-text",
        "a class count given as text (it was blamed on the task, which reads it)",
        lambda t, r: ["dataset.num_classes=abc"],
        "dataset.num_classes: the number of classes must be a whole number >= 1 (got 'abc')",
    ),
    (
        "classification-joint-forward-sizes",
        "a joint forward pass (SDAT) over source and target images of different sizes",
        lambda t, r: [
            "method=sdat",
            "+dataset.target.size=24",
            "iterations=2",
            "adaptation_start=0",
        ],
        "their images differ in shape (C, H, W): source (3, 32, 32), target (3, 24, 24)",
    ),
    (
        "classification-vit-of-another-image-size",
        "classification: a vision transformer of 224 px on the 32 px digits",
        lambda t, r: [
            "model=vit_b16",
            "model.pretrained=false",
            "model.backbone=vit_tiny_patch16_224",
        ],
        "the backbone VisionTransformer takes 224 x 224 px images (its img_size), these are "
        "32 x 32: set model.img_size=32",
    ),
    (
        "classification-vit-partial-patches",
        "classification: a vision transformer of an img_size its patch size does not divide",
        lambda t, r: [
            "model=vit_b16",
            "model.pretrained=false",
            "model.backbone=vit_tiny_patch16_224",
            "model.img_size=40",
        ],
        "its img_size 40 is no multiple of that: it would read 2 x 2 patches and never see the "
        "last 8 px rows and 8 px columns of every image",
    ),
    (
        "classification-vit-dynamic-partial-patches",
        "classification: a vision transformer of dynamic_img_size on images of partial patches",
        lambda t, r: [
            "model=vit_b16",
            "model.pretrained=false",
            "model.backbone=vit_tiny_patch16_224",
            "model.img_size=32",
            "+model.dynamic_img_size=true",
            "+dataset.source.size=40",
            "+dataset.target.size=40",
            "+dataset.test.size=40",
        ],
        "made of whole 16 x 16 px patches, these are 40 x 40: give images of a multiple of 16 px",
    ),
    (
        "classification-negative-bottleneck",
        "a negative bottleneck width, read by DANN's discriminator as its input width",
        lambda t, r: ["dataset=digits", "method=dann", "model.bottleneck_dim=-1"],
        "DomainAdversarial: features_dim must be a positive whole number (the model's feature "
        "width: model.bottleneck_dim",
    ),
    (
        "segmentation-context-grid",
        "segmentation: a context U-Net whose position embedding has no side",
        lambda t, r: ["experiment=streets", *SCENES, "model=context_unet", "model.grid=0"],
        "model.grid must be a positive whole number (the side of its position embedding), got 0",
    ),
    (
        "segmentation-smp-side-not-a-multiple-of-its-stride",
        "segmentation: an smp model on images whose side its encoder's stride does not divide",
        lambda t, r: [
            "experiment=streets",
            *SCENES,
            "dataset.size=33",
            "model=smp",
            "model.encoder=resnet18",
            "model.arch=PSPNet",
        ],
        "SmpModel takes image sides that are multiples of its encoder's output stride 8, got "
        "33 x 33",
    ),
    (
        "segmentation-smp-misspelt-setting",
        "segmentation: an smp model given a setting of a misspelt name (smp dropped it unread)",
        lambda t, r: [
            "experiment=streets",
            *SCENES,
            "model=smp",
            "model.encoder=resnet18",
            "+model.decoder_channel=[64,32,16,8,4]",
        ],
        "'decoder_channel' is no setting of smp's Unet with smp's own encoder 'resnet18', which "
        "would drop it unread. Did you mean: decoder_channels,",
    ),
    (
        "segmentation-daformer-no-dilations",
        "segmentation: DAFormer's ASPP fusion given no dilations (a head of no branches)",
        lambda t, r: [
            "experiment=streets",
            *SCENES,
            "model=daformer_mitb5",
            "model.encoder=mit_b0",
            "model.pretrained=false",
            "model.dilations=[]",
        ],
        "model.dilations must be a non-empty list of dilations",
    ),
    (
        "segmentation-daformer-dropout-above-one",
        "segmentation: a dropout probability above 1",
        lambda t, r: [
            "experiment=streets",
            *SCENES,
            "model=daformer_mitb5",
            "model.encoder=mit_b0",
            "model.pretrained=false",
            "model.dropout=2",
        ],
        "model.dropout must be a probability in [0, 1) (0: none), got 2",
    ),
    (
        "segmentation-deeplabv2-encoder-that-cannot-be-dilated",
        "segmentation: DeepLabV2 (output stride 8) on a VGG encoder, which cannot be dilated",
        lambda t, r: [
            "experiment=streets",
            *SCENES,
            "model=deeplabv2_r101",
            "model.encoder=vgg11",
            "model.pretrained=false",
        ],
        "encoder 'vgg11' cannot replace its last strides by dilations (output stride 8",
    ),
    (
        "segmentation-scheduler-settings-of-another",
        "segmentation: scheduler=constant beside the experiment's warm-up (a TypeError)",
        lambda t, r: ["experiment=streets", *SCENES, "scheduler=constant"],
        "experiment=streets sets scheduler.warmup_iters=150 (the option's: no such setting) over "
        "scheduler=constant, so the run would not build scheduler=constant as chosen: set or "
        "remove them on the command line (~scheduler.warmup_iters)",
    ),
    (
        "segmentation-rare-class-sampling-text",
        "segmentation: rare_class_sampling=no (text, which switched it on)",
        lambda t, r: ["experiment=streets", *SCENES, "method.rare_class_sampling=no"],
        "method.rare_class_sampling: must be true or false (got 'no')",
    ),
    (
        "segmentation-negative-width",
        "segmentation: a negative U-Net stage width",
        lambda t, r: ["experiment=streets", *SCENES, "model.widths=[8,-16,32]"],
        "model.widths must list each stage's channels as positive whole numbers",
    ),
    (
        "segmentation-hrda-negative-width",
        "segmentation: a negative stage width of the U-Net that HRDA wraps (model.segmenter)",
        lambda t, r: ["experiment=streets_hrda", *SCENES, "model.segmenter.widths=[8,-16,32]"],
        "model.segmenter.widths must list each stage's channels as positive whole numbers",
    ),
    (
        "segmentation-config-mask",
        "segmentation: a zero mask block",
        lambda t, r: ["experiment=streets", "iterations=2", "method.terms.mic.masker.block_size=0"],
        "method.terms.mic.masker.block_size: a block's side must be a whole number of pixels "
        ">= 1 (got 0)",
    ),
    (
        "segmentation-hrda-plain-task",
        "segmentation: an HRDA model with the plain segmentation task",
        lambda t, r: ["experiment=streets", *SCENES, "model=hrda_small_unet"],
        "set task=segmentation_hrda",
    ),
    (
        "segmentation-hrda-plain-model",
        "segmentation: HRDA's task with a single-scale model",
        lambda t, r: ["experiment=streets", *SCENES, "task=segmentation_hrda"],
        "HRDASegmentationTask trains HRDA models",
    ),
    (
        "segmentation-hrda-detail-crop-the-inner-model-cannot-take",
        "segmentation: an HRDA detail crop smaller than its inner model takes (MiT: 32 px)",
        lambda t, r: [
            "experiment=streets_hrda",
            *SCENES,
            "model=hrda_daformer_mitb5",
            "model.segmenter.encoder=mit_b0",
            "model.segmenter.pretrained=false",
            "model.detail_crop=[16,16]",
        ],
        "model.detail_crop [16, 16]: the inner model takes sides that are at least 32 px: give "
        "e.g. model.detail_crop=[32, 32]",
    ),
    (
        "segmentation-hrda-context-scale-off-the-pixels",
        "segmentation: an HRDA context scale that gives the training crops no whole context side",
        lambda t, r: ["experiment=streets_hrda", *SCENES, "model.context_scale=0.3"],
        "model.context_scale: 0.3 of the 32 x 32 training images gives a 9.6 x 9.6 px context",
    ),
    (
        "segmentation-hrda-large-crop",
        "segmentation: an HRDA detail crop larger than the training crop",
        lambda t, r: ["experiment=streets_hrda", *SCENES, "model.detail_crop=[64,64]"],
        "larger than the training images",
    ),
    (
        "detection-config-classes",
        "detection: model and dataset class counts differ",
        lambda t, r: [*SHAPES, "model.num_classes=9"],
        "classes",
    ),
    (
        "detection-task-classes",
        "detection: task.num_classes set apart from the dataset's class names",
        lambda t, r: [*SHAPES, "task.num_classes=6"],
        "list 4 classes but task.num_classes is 6; give both one count: 4 classes "
        "(dataset.num_classes=4, task.num_classes left to follow it), or 6 names",
    ),
    (
        "detection-image-mean",
        "detection: a normalisation mean of 2 values for RGB images",
        lambda t, r: [*SHAPES, "model.image_mean=[0.5,0.5]"],
        "model.image_mean must give 3 numbers, one per RGB channel of images in [0, 1]",
    ),
    (
        "config-nested-typo",
        "a misspelled nested setting (Hydra would advise adding it with +)",
        lambda t, r: ["experiment=streets", "dataset.sourc.length=8"],
        "no setting dataset.sourc.length: dataset has no 'sourc'. Did you mean: source?",
    ),
    (
        "config-section-given-a-value",
        "a list given to a section of settings (Hydra: cannot merge DictConfig with ListConfig)",
        lambda t, r: ["eval.validation=[snd]"],
        "eval.validation is a section of settings (batches, samples_per_image, seed), not one "
        "value; set one of them (eval.validation.batches=...). Did you mean: eval.validators?",
    ),
    (
        "detection-anchor-sizes-number",
        "detection: model.anchor_sizes given as one number, not one per FPN level",
        lambda t, r: [*TINY_DET, "model.anchor_sizes=16"],
        "model.anchor_sizes must list, for every FPN level, a positive size in pixels",
    ),
    (
        "detection-vit-backbone",
        "detection: a plain ViT as the backbone of a feature pyramid (every map at stride 16)",
        lambda t, r: [*TINY_DET, "model.backbone=vit_tiny_patch16_224"],
        "backbone 'vit_tiny_patch16_224' gives its feature maps at strides 16, 16, 16, 16",
    ),
    (
        "detection-min-size-zero",
        "detection: an image resize to 0 pixels",
        lambda t, r: [*TINY_DET, "model.min_size=0"],
        "model.min_size must be a positive whole number, got 0",
    ),
    (
        "detection-null-for-a-whole-number",
        "detection: null for a detector setting that has no null (a TypeError in torchvision)",
        lambda t, r: [*TINY_DET, "model.rpn_batch_size_per_image=null"],
        "model.rpn_batch_size_per_image: must be an integer, not null",
    ),
    (
        "detection-shapes-length-negative",
        "detection: a negative number of bundled scenes (torch's ValueError from __len__)",
        lambda t, r: [*TINY_DET, "dataset.source.length=-1"],
        "dataset.source: length is the number of scenes, a whole number >= 1",
    ),
    (
        "detection-shapes-length-fractional",
        "detection: a fractional number of bundled scenes (read as 2)",
        lambda t, r: [*TINY_DET, "dataset.source.length=2.5"],
        "dataset.source.length: Input should be a valid integer, got a number with a "
        "fractional part",
    ),
    (
        "detection-fog-infinite",
        "detection: an infinite fog density (every target image haze without a scene)",
        lambda t, r: [*TINY_DET, "dataset.beta=inf"],
        "fog density beta must be a finite number >= 0, got inf",
    ),
    (
        "detection-mic-part-weight-text",
        "detection: a MIC loss part weight given as text or null (met at the first pseudo-boxes, "
        "after iteration 2000 of det_shapes, blaming a negative weight)",
        lambda t, r: [*TINY_DET, "method.terms.mic.part_weights.roi_box=abc"],
        "method.terms.mic.part_weights.roi_box: a loss part's weight must be a finite number "
        ">= 0 (got 'abc'",
    ),
    # ------------------------------------------------------------------ data
    (
        "data-missing-folder",
        "a dataset folder that does not exist",
        lambda t, r: folder_overrides(t, target=t / "nowhere"),
        "does not exist",
    ),
    (
        "data-missing-folders",
        "two dataset folders that do not exist",
        lambda t, r: folder_overrides(t, source=t / "no_source", target=t / "no_target"),
        "2 datasets could not be built: dataset.source (root: dataset.root_source): class-per",
    ),
    (
        "data-empty-folder",
        "an empty image folder",
        lambda t, r: _empty(t),
        "dataset.target (root: dataset.root_target): no images found",  # (which setting)
    ),
    (
        "data-wrong-layout",
        "images where class folders should be",
        lambda t, r: _flat(t),
        "no class sub-folders",
    ),
    (
        "data-unreadable-image",
        "an image file that cannot be read (in a worker)",
        lambda t, r: _unreadable(t),
        "cannot read image",
    ),
    (
        "data-preflight-unreadable-image",
        "an image file that cannot be read (found before training)",
        lambda t, r: _broken_target(t),
        "Unreadable image files (1): '",
    ),
    (
        "data-image-too-large",
        "an image of more pixels than Pillow opens (a 200-megapixel scan)",
        lambda t, r: _huge_target(t),
        "Image files of more pixels than Pillow opens (1): '",
    ),
    (
        "data-label-size",
        "segmentation: a label whose size differs from its image (GTA5's known quirk)",
        lambda t, r: _label_size(t),
        "set ++dataset.source.dataset.label_size_mismatch=resize",
    ),
    (
        "data-images-and-labels-swapped",
        "segmentation: the image and label folders swapped (the advice was to save the "
        "labels as PNG files from the original masks)",
        lambda t, r: _swapped_folders(t),
        "are single-channel, as label maps are, and the label folder holds JPEG photos "
        "('0.jpg'): the image and label folders look swapped",
    ),
    (
        "data-labels-as-target-images",
        "segmentation: a labelled split's root (img/ and lbl/) given as the target image "
        "folder, whose label masks would be trained on as target images",
        lambda t, r: _split_root_as_target(t),
        "Label folders among the unlabelled images (1): '",
    ),
    (
        "data-missing-label",
        "segmentation: an image without its label file",
        lambda t, r: _missing_label(t),
        "Every image of a labelled set (source, test) needs its label file: add the missing",
    ),
    (
        "data-label-format",
        "segmentation: Cityscapes with only the released *_gtFine_labelIds.png",
        lambda t, r: _cityscapes_label_ids(t),
        # the dataset's own key, which the test split reads (++dataset.test.label_format
        # set the test's alone, and was named where the config gives the dataset's)
        "set dataset.target_label_format=labelIds to read them",
    ),
    (
        "data-binary-masks",
        "segmentation: binary masks saved as 0/255 with num_classes=2",
        lambda t, r: seg_folder_overrides(t, right=255),
        "with dataset.label_mapping='{255: 1}' (read by source and test; this split's alone: "
        "++dataset.source.dataset.label_mapping='{255: 1}'), or save the masks as 0/1",
    ),
    (
        "data-rare-class-statistics",
        "segmentation: rare class sampling's statistics meet a label id outside the classes",
        lambda t, r: _rcs_label_ids(t),
        "Label files with ids outside the mapping (1): '",
    ),
    (
        "data-cityscapes-test-split-labelled",
        "segmentation: Cityscapes' test split (its labels withheld) as the labelled test set",
        lambda t, r: [*_cityscapes_label_ids(t), "dataset.test.split=test"],
        "Cityscapes' test split withholds its labels (its gtFine files are placeholders",
    ),
    (
        "data-foggy-cityscapes-elsewhere",
        "detection: Foggy Cityscapes unpacked outside the Cityscapes root, dataset.foggy_root "
        "not given",
        lambda t, r: _without(
            _cityscapes_instances(t, np.full((16, 24), 26001, np.uint16)),
            t / "cityscapes" / "leftImg8bit_foggy",
        ),
        "is a download of its own: where it is not under the Cityscapes root, give its folder "
        "as foggy_root (mic-train: dataset.foggy_root=<folder that holds train/ and val/>)",
    ),
    (
        "data-instance-ids-8bit",
        "detection: Foggy Cityscapes whose instanceIds files are 8-bit (labelIds renamed)",
        lambda t, r: _cityscapes_instances(t, np.full((16, 24), 26, np.uint8)),
        "Instance annotations that are not 16-bit (1):",
    ),
    (
        "data-instance-ids-no-box",
        "detection: Foggy Cityscapes whose instanceIds files hold no instance of the 8 classes",
        lambda t, r: _cityscapes_instances(t, np.full((16, 24), 7000, np.int32)),
        "none of its 1 images has a box that counts",
    ),
    (
        "data-stated-image-size",
        "detection: a COCO json whose stated width / height is not the image file's",
        lambda t, r: _coco_size(t),
        "Images whose size differs from the annotation's (1)",
    ),
    (
        "data-test-class-order",
        "a detection test split given the source's classes in another order",
        lambda t, r: _coco_test_reordered(t),
        "the test set names the classes of source in another order ('bus' is its class 0, "
        "source's class 1",
    ),
    (
        "data-label-range",
        "a label outside the class range",
        lambda t, r: ["dataset.source._target_=tests.test_bad_input.shifted_digits"],
        "outside the class range",
    ),
    (
        "data-own-dataset-raises",
        "a dataset of one's own whose __getitem__ raises (the data check loads its first sample)",
        lambda t, r: ["dataset.source._target_=tests.test_bad_input.RaisingDigits"],
        "Datasets whose first sample raises an error (1): 'sample 0' (ValueError: broken sample "
        "0). Mend the dataset's __getitem__ (dataset[0] in Python shows the traceback)",
    ),
    (
        "data-own-dataset-empty",
        "a dataset of one's own that holds no samples (no batch size would help)",
        lambda t, r: ["dataset.source._target_=tests.test_bad_input.EmptyDigits"],
        "the source dataset is empty (EmptyDigits holds no samples); give the empty dataset its "
        "samples",
    ),
    (
        "data-uint8-images",
        "a dataset yielding uint8 images",
        lambda t, r: ["dataset.source._target_=tests.test_bad_input.uint8_digits"],
        "the dataset yields torch.uint8 images",
    ),
    (
        "data-grey-target",
        "a target dataset of one's own yielding 1-channel (grey) images",
        lambda t, r: ["dataset.target._target_=tests.test_data_faults.grey_digits"],
        "Images with other channels than the source's (1): 'sample 0' (1 channel, the source's "
        "images have 3)",
    ),
    (
        "data-pil-target",
        "a target dataset of one's own yielding PIL images (no ToTensor)",
        lambda t, r: ["dataset.target._target_=tests.test_data_faults.pil_digits"],
        "Images that are not tensors (1): 'sample 0' (a PIL image",
    ),
    (
        "data-reader-without-transform",
        "mic's target reader given in the config without a transform (it yields PIL images)",
        lambda t, r: [
            *folder_overrides(t),
            "~dataset.target.transform",
        ],
        "UnlabeledImageFolder was given no transform, so it yields the images as it reads them",
    ),
    (
        "data-float64-target",
        "a target dataset of one's own yielding float64 images",
        lambda t, r: ["dataset.target._target_=tests.test_data_faults.float64_digits"],
        "the dataset yields torch.float64 images",
    ),
    (
        "data-mic-block-size",
        "a MIC block as large as the target images (100 px blocks on the 32 px digits)",
        lambda t, r: ["dataset.mic_block_size=100"],
        "MIC masking blocks that make one block of the target images (1): "
        "'method.terms.mic.masker.block_size'",
    ),
    (
        "data-validator-block-size",
        "without MIC, a block as large as the target images for the masked_agreement "
        "validator (it scored a grid of 1 x 1 block without a word)",
        lambda t, r: ["mic=none", "dataset.mic_block_size=100"],
        "The masked_agreement validator's masking blocks that make one block of the target "
        "images (1): 'dataset.mic_block_size'",
    ),
    (
        "data-two-sizes",
        "images of two sizes in one batch",
        lambda t, r: ["dataset.target._target_=tests.test_bad_input.two_sizes"],
        "one batch holds images of different sizes",
    ),
    (
        "data-test-sizes",
        "segmentation: test images of two sizes, evaluated two at a time",
        lambda t, r: _test_of_two_sizes(t),
        "the test set's images come in 2 sizes (16 x 12, 20 x 10), which batches of "
        "loader.test_batch_size=2 cannot stack: evaluate them one at a time with "
        "loader.test_batch_size=1",
    ),
    (
        "data-test-label-sizes",
        "segmentation: test images resized to one size, their labels (kept at full size) of "
        "two, evaluated two at a time",
        lambda t, r: _test_labels_of_two_sizes(t),
        "the test set's label maps come in 2 sizes (16 x 12, 32 x 24, kept at full size while "
        "the images become 16 x 12), which batches of loader.test_batch_size=2 cannot stack",
    ),
    (
        "data-test-label-sizes-unchecked",
        "the same without the data check (preflight=false): found at the first evaluation",
        lambda t, r: _test_labels_of_two_sizes(t, preflight=False),
        "the test set holds images (or labels) of different sizes ([((3, 12, 16), (12, 16)), "
        "((3, 12, 16), (24, 32))] in one batch); evaluate them one at a time with "
        "loader.test_batch_size=1",
    ),
    (
        "config-feature-distance-classes",
        "DAFormer's feature distance on a 2-class dataset without thing classes",
        lambda t, r: [*seg_folder_overrides(t), "method=daformer", "dataset.source.min_pixels=4"],
        "outside the task's 2 classes",
    ),
    (
        "data-rare-class-sampling-labels",
        "rare class sampling over source labels saved under other names (0_label.png)",
        lambda t, r: [
            *seg_folder_overrides(t, source=_labels_renamed(seg_tree(t / "src"), "_label.png")),
            "method=daformer",
            "+dataset.thing_classes=[1]",
            "dataset.source.min_pixels=4",
        ],
        "set dataset.label_suffix=_label.png (read by source, target and test; this split's "
        "alone: ++dataset.source.dataset.label_suffix=_label.png) to read them",
    ),
    (
        "data-class-names",
        "a test class folder that the source does not have (a, b, d against a, b, c)",
        lambda t, r: folder_overrides(t, test=class_folders(t / "tst2", ["a", "b", "d"])),
        "has folders ['d'] that are not among its 3 classes (a, b, c; the reader's own list, "
        "or in mic-train the source's): remove them, so that every split has the same classes",
    ),
    (
        "data-empty-class-folder",
        "a source class folder without images",
        lambda t, r: folder_overrides(t, source=_with_empty_folder(t / "src3", ["a", "b"], "c")),
        "; add images, remove a folder that is no class, or set "
        "++dataset.source.allow_empty_classes=true",
    ),
    (
        "data-source-root-above-target",
        "a source root one level too high: the folder holding the target's folder",
        lambda t, r: folder_overrides(t / "data", source=t / "data"),
        "holds the target's, '",
    ),
    (
        "data-batch-size",
        "batches larger than the source and the target data (both named at once)",
        lambda t, r: [
            *folder_overrides(t),
            "loader.source_batch_size=50",
            "loader.target_batch_size=40",
        ],
        "fewer than one batch of 50; the target dataset holds",
    ),
    # ------------------------------------------------------------------ checkpoint
    (
        "checkpoint-missing",
        "resume from a file that does not exist",
        lambda t, r: [f"resume={t / 'none.pt'}"],
        "no such checkpoint file",
    ),
    (
        "checkpoint-foreign",
        "resume from a file that is not a mic checkpoint",
        lambda t, r: [f"resume={_write(t, 'w.pt', _torch_bytes())}"],
        "is not a mic checkpoint",
    ),
    (
        "checkpoint-weights-file",
        "resume from a weights-only file (student.pt) instead of starting from it",
        lambda t, r: [f"resume={_write(t, 'student.pt', _torch_bytes())}"],
        "student.pt to mic-train (without resume)",
    ),
    (
        "classmix-batch-sizes",
        "DACS with source and target batches of two sizes, found before training",
        lambda t, r: [
            "experiment=streets",
            "adaptation_start=2",
            "loader.source_batch_size=4",
            "loader.target_batch_size=2",
        ],
        "got loader.source_batch_size=4 and loader.target_batch_size=2",
    ),
    (
        "checkpoint-corrupt",
        "resume from a corrupt file",
        lambda t, r: [f"resume={_write(t, 'c.pt', b'PK broken')}"],
        "corrupt or not a mic checkpoint",
    ),
    (
        "checkpoint-bytes-changed",
        "resume from a checkpoint whose bytes changed on disk (it still loads, with wrong values)",
        lambda t, r: [f"resume={_write(t, 'changed.pt', changed_bytes(r))}"],
        "no longer matches the checksum stored with it (bytes changed on disk or in a copy)",
    ),
    (
        "run-folder-final-weights-only",
        "a new run into the folder of a finished run whose iter_*.pt were deleted (its final "
        "student.pt and teacher.pt kept)",
        lambda t, r: _final_weights_only(r),
        "holds the final weights of a finished run (checkpoints/student.pt and teacher.pt; its "
        "iter_*.pt are gone, so it cannot be resumed), which a new run would overwrite",
    ),
    (
        "checkpoint-other-model",
        "resume with a different model",
        lambda t, r: [f"resume={r}", "model.bottleneck_dim=32"],
        "differs from the checkpoint's in what the run trains with (model.bottleneck_dim",
    ),
    (
        "init-model-teacher-of-a-weights-file",
        "the teacher asked of a weights file (student.pt), which holds one model",
        lambda t, r: [f"init_from={r.parent / 'student.pt'}", "init_model=teacher"],
        "init_model=teacher chooses a model of a mic checkpoint or run folder, but",
    ),
    (
        "init-missing",
        "start from weights (init_from) that do not exist",
        lambda t, r: [f"init_from={t / 'none.pt'}"],
        "init_from: '",
    ),
    (
        "init-other-model",
        "start from the weights of another model",
        lambda t, r: [f"init_from={r}", "model.bottleneck_dim=32"],
        "do not fit the model (",
    ),
    (
        "resume-another-run-into-this-one",
        "resume another run's checkpoint into a folder that holds a run",
        lambda t, r: [f"resume={_other_run(t, r)}"],
        "continues another run: their checkpoints would mix",
    ),
    (
        "checkpoint-nan-weights",
        "resume from a checkpoint whose weights hold NaN (a run that diverged)",
        lambda t, r: [] if _diverged(r) else ["unreachable"],
        "hold NaN or Inf values (1 tensor: student.",
    ),
    (
        "init-nan-weights",
        "start from weights (init_from) that hold NaN",
        lambda t, r: [f"init_from={_diverged(r, t)}"],
        "hold NaN or Inf values (1 tensor: ",
    ),
    (
        "checkpoint-empty-folder",
        "resume from a folder without checkpoints",
        lambda t, r: [f"resume={t}"],
        "no readable checkpoint",
    ),
    # ------------------------------------------------------------------ environment
    (
        "env-run-folder-below-a-file",
        "a run folder below a file",
        lambda t, r: [],
        "which is a file, not a folder",
    ),
    (
        "env-run-folder-name-too-long",
        "a run folder whose name is longer than the file system takes (an OSError)",
        lambda t, r: [],
        "is too long a path (300 bytes in one name): a folder's name holds at most 255 bytes",
    ),
    (
        "env-run-folder-inside-the-data",
        "a run folder inside the target images' folder (its prediction images were read as "
        "target images by the next run, and a resume called the data changed)",
        lambda t, r: folder_overrides(t),
        "lies inside dataset.root_target=",
    ),
    (
        "env-read-only-run-folder",
        "resuming a run on a read-only mount",
        lambda t, r: [],
        "cannot be written (Read-only file system)",
    ),
    (
        "env-full-disk",
        "a full disk before the start",
        lambda t, r: [],
        "MiB free, less than the 5 MiB a run asks for its logs and checkpoints (room for two "
        "of its checkpoints",
    ),
    (
        "env-disk-fills-while-saving",
        "the disk fills while torch writes a checkpoint",
        lambda t, r: ["checkpoint.interval=1", "iterations=6"],
        "PytorchStreamWriter failed writing file",
    ),
    (
        "env-no-cuda",
        "device=cuda on a machine without CUDA",
        lambda t, r: ["device=cuda"],
        "CUDA is not available",
    ),
    (
        "env-offline-no-cached-weights",
        "pretrained weights (an HRDA model's encoder, `model.segmenter.pretrained`) where the "
        "Hugging Face hub cannot be reached and they are not in its local cache",
        lambda t, r: _hrda_pretrained(t),
        "could not load the pretrained weights of encoder 'mit_b0': the Hugging Face hub cannot "
        "be reached and smp-hub/mit_b0.imagenet is not in the local Hugging Face cache",
    ),
    (
        "env-offline-weights-before-data",
        "pretrained weights that cannot be loaded offline, in a run whose data folders are "
        "missing too: the weights are named first, not after a data check that can take minutes",
        lambda t, r: [
            "model=resnet50",
            "dataset=folders",
            "dataset.num_classes=3",
            *(f"dataset.root_{k}={t}/missing/{k}" for k in ("source", "target", "test")),
        ],
        "could not load the pretrained weights of backbone 'resnet50': the Hugging Face hub "
        "cannot be reached and timm/resnet50.a1_in1k is not in the local Hugging Face cache",
    ),
    (
        "env-no-detectron2",
        "the detectron2 backend (`model=d2_faster_rcnn_small`) where detectron2 is not installed",
        lambda t, r: [*TINY_DET, "model=d2_faster_rcnn_small"],
        "needs detectron2, which this Python environment does not have",
    ),
]


#: environment cases: id -> (the run folder, from the case's folder and a copy of the existing
#: run; the fault the subprocess meets, see tests/faults/environment.py)
#: cases that start a run of their own although no option above says so (a model whose error
#: comes when training starts, after the check of a resumed run's config)
NEW_RUN = {
    "classification-vit-of-another-image-size",
    "classification-vit-partial-patches",
    "model-weights-file-of-another-model",
    "model-channels-other-than-data",
    "model-forward-needs-more",
    "data-length-over-samples",
    "method-features-width",
}

ENVIRONMENT = {
    "env-run-folder-below-a-file": (lambda t, run: _write(t, "a_file", b"x") / "run", ""),
    "env-run-folder-name-too-long": (lambda t, run: t / ("r" * 300), ""),
    "env-run-folder-inside-the-data": (lambda t, run: t / "tgt" / "run", ""),
    "env-read-only-run-folder": (lambda t, run: run, "read-only:{run}"),
    "env-full-disk": (lambda t, run: run, "full-disk"),
    "env-disk-fills-while-saving": (lambda t, run: run, "save-fails"),
    "env-no-detectron2": (lambda t, run: t / "fresh", "no-detectron2"),
    "env-no-cuda": (lambda t, run: run, "no-cuda"),
    "env-offline-no-cached-weights": (lambda t, run: t / "fresh", "hub-offline:{run}/no-cache"),
    "env-offline-weights-before-data": (
        lambda t, run: t / "fresh",
        "hub-offline:{run}/no-cache",
    ),
}


def _torch_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"weight": torch.ones(2)}, buf)
    return buf.getvalue()


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and not p.name.endswith(".log")
    }


def _with_empty_folder(root: Path, classes: list[str], empty: str) -> Path:
    """Class folders ``classes`` with images, and ``empty`` without."""
    (class_folders(root, classes) / empty).mkdir()
    return root


def _existing_run(folder: Path) -> Path:
    """A finished run folder (two iterations, a checkpoint at each)."""
    run_experiment(load_config([*TINY, "iterations=2", "checkpoint.interval=1"]), folder)
    return folder


def run_case(case, root: Path, existing: Path) -> dict:
    """Run one case through ``mic-train`` (tests/cli.py): its output and the run folder's files
    before and after (the run folder is a copy of ``existing`` unless the case starts one)."""
    name, _, overrides, _ = case
    tmp = root / name
    tmp.mkdir(parents=True)
    run = tmp / "run"
    shutil.copytree(existing, run)
    args = overrides(tmp, run / "checkpoints" / "iter_00000002.pt")
    # other data, other starting weights, code of one's own or another model: a run of its own
    fresh = name in NEW_RUN or any(
        a.lstrip("+").startswith(("dataset", "init_from")) or "_target_=tests." in a for a in args
    )
    if name in ENVIRONMENT:
        where, fault = ENVIRONMENT[name]
        run_dir = where(tmp, run)
    else:
        run_dir, fault = (tmp / "fresh" if fresh else run), ""
    env = {"MIC_TEST_FAULT": fault.format(run=run_dir)} if fault else {}
    resume = "null" if fresh else "auto"
    before = _snapshot(run) if run.is_dir() else {}
    out = run_mic_train([*TINY, f"resume={resume}", *args, f"hydra.run.dir={run_dir}"], env=env)
    after = _snapshot(run) if run.is_dir() else {}
    return {"out": out, "before": before, "after": after, "run_dir": run_dir, "fresh": fresh}


def run_cases(cases, root: Path) -> dict[str, dict]:
    """Every case, two processes at a time."""
    existing = _existing_run(root / "existing")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda c: run_case(c, root, existing), cases)
    return {case[0]: result for case, result in zip(cases, results)}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return run_cases(CASES, tmp_path_factory.mktemp("bad_input"))


def message(result: dict) -> str:
    """The one line a user reads: ``mic: error: ...`` (or Hydra's own message)."""
    lines = [line for line in result["out"].stderr.splitlines() if line.strip()]
    mic = [line for line in lines if line.startswith("mic: error: ")]
    return mic[-1][len("mic: error: ") :] if mic else " ".join(lines[:2])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_paragraph_and_leaves_the_run_folder_intact(case, outcomes):
    name, _, _, fragment = case
    if name.startswith("model-d2-"):  # (detectron2's own refusals: skipped where it is absent)
        need("detectron2")
    result = outcomes[name]
    out = result["out"]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert fragment in message(result), out.stderr[-3000:]
    assert out.returncode == 2, out.stderr[-3000:]
    assert "mic: error: " in out.stderr
    # every file of the existing run is there, byte for byte (a failed resume may add its
    # config_resumed.yaml)
    assert {k: result["after"].get(k) for k in result["before"]} == result["before"]
    try:
        saved = list(Path(result["run_dir"]).glob("checkpoints/*.pt"))
    except OSError:  # (a run folder whose name is too long to exist: nothing saved there)
        saved = []
    if result["fresh"] and "resume=auto" in message(result):  # a bad file met mid-run
        assert saved, "the run's state before the bad batch must be saved"
    elif result["fresh"]:  # a new run stopped before training leaves no checkpoint
        assert not saved


def test_a_refused_resume_does_not_say_it_resumes(outcomes):
    out = outcomes["resume-another-run-into-this-one"]["out"]
    assert "resuming from" not in out.stdout + out.stderr, out.stdout[-2000:]


def test_an_unimportable_target_is_told_once_in_mic_s_words(outcomes):
    err = outcomes["task-module-not-found"]["out"].stderr
    assert "Are you sure that module" not in err and "HYDRA_FULL_ERROR" not in err, err
    assert err.count("No module named 'my_tasks'") == 1, err


def test_a_new_run_into_a_folder_that_holds_one(outcomes, tmp_path):
    run = shutil.copytree(outcomes["config-unknown-key"]["run_dir"], tmp_path / "run")
    before = _snapshot(run)
    out = run_mic_train([*TINY, f"hydra.run.dir={run}"])
    assert out.returncode == 2 and "already holds a run" in out.stderr
    assert _snapshot(run) == before
    # a run that stopped before its first periodic checkpoint left its best model alone
    for path in (run / "checkpoints").glob("iter_*.pt"):
        path.rename(run / "checkpoints" / "best.pt")
    before = _snapshot(run)
    out = run_mic_train([*TINY, f"hydra.run.dir={run}"])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "holds checkpoints/best.pt, the best model of a run that stopped" in out.stderr
    assert "continue that run from it with resume=auto" in out.stderr
    assert _snapshot(run) == before
    # ... which resume=<its folder> continues from in a new folder (it was refused: "no
    # readable checkpoint (iter_*.pt) in it", where resume=auto took it) ...
    out = run_mic_train([*TINY, f"resume={run}", f"hydra.run.dir={tmp_path / 'on'}"])
    assert out.returncode == 0, out.stderr[-2000:]
    said = f"mic: warning: resume={run}: no readable periodic checkpoint (iter_*.pt);"
    assert said in out.stderr and "resuming from best.pt, the checkpoint of its best" in out.stderr
    assert _snapshot(run) == before
    # ... and so does resume=auto, in its own folder
    out = run_mic_train([*TINY, "resume=auto", f"hydra.run.dir={run}"])
    assert out.returncode == 0, out.stderr[-2000:]
    said = "mic: warning: resume=auto: no readable periodic checkpoint (iter_*.pt)"
    assert said in out.stderr and "resuming from best.pt, the checkpoint of its best" in out.stderr


def test_a_run_resumed_in_place_asks_for_room_for_two_of_its_checkpoints(tmp_path, monkeypatch):
    """After a disk-full stop, 61.8 MiB free refused the resume of a run of 2 MB checkpoints
    (a new run still asks for 64 MiB)."""
    import shutil
    from collections import namedtuple

    from mic import ConfigError
    from mic.experiment import check_writable

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**40, 0, 10 * 2**20))
    new = tmp_path / "new"
    with pytest.raises(ConfigError, match=r"10\.0 MiB free, less than the 64 MiB"):
        check_writable(new, option="hydra.run.dir")
    held = tmp_path / "held"
    (held / "checkpoints").mkdir(parents=True)
    (held / "checkpoints" / "iter_00000020.pt").write_bytes(b"x" * 2 * 2**20)
    check_writable(held, option="hydra.run.dir")  # 5 MiB is room enough
    (held / "checkpoints" / "best.pt").write_bytes(b"x" * 5 * 2**20)
    with pytest.raises(ConfigError, match=r"10\.0 MiB free, less than the 11 MiB"):
        check_writable(held, option="hydra.run.dir")


def test_a_failed_save_leaves_no_temporary_file_and_a_new_run_sweeps_old_ones(
    tmp_path, monkeypatch
):
    from mic.core import CheckpointError
    from mic.training import Checkpointer, save_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / ".iter_00000003.pt.abc.tmp"  # what a killed save leaves behind
    stale.write_bytes(b"partial")

    def failing(obj, f):  # torch's writer on a full disk
        f.write(b"partial")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(torch, "save", failing)
    # checkpoint.interval=0: nothing earlier to resume from ("the previous one is intact")
    with pytest.raises(CheckpointError, match="no earlier checkpoint was written, so the run"):
        save_checkpoint({"x": torch.ones(1)}, folder / "iter_00000004.pt")
    assert {p.name for p in folder.iterdir()} == {stale.name}  # its own temporary file: gone
    (folder / "best.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"already there \(best.pt\) are intact"):
        save_checkpoint({"x": torch.ones(1)}, folder / "iter_00000004.pt")
    (folder / "best.pt").unlink()
    Checkpointer(folder).before_run(loop=None)  # type: ignore[arg-type]
    assert not stale.exists()


def test_checkpoints_follow_the_umask(tmp_path):
    from mic.training import save_checkpoint

    old = os.umask(0o022)
    try:
        path = save_checkpoint({"x": torch.ones(1)}, tmp_path / "iter_00000001.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux's /proc")
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_the_umask_is_read_without_being_changed(tmp_path, monkeypatch, mask):
    """Setting the umask to 0 to read it left, for that moment, files that other threads
    create (TensorBoard's writer) without one."""
    import mic.training.checkpoint as ckpt

    old = os.umask(mask)
    try:
        monkeypatch.setattr(ckpt.os, "umask", lambda m: pytest.fail(f"umask set to {m:o}"))
        path = ckpt.save_checkpoint({"x": torch.ones(1)}, tmp_path / "iter_00000001.pt")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import mic.training.checkpoint as ckpt
    from mic.core import CheckpointError

    path = ckpt.save_checkpoint({"x": torch.ones(1)}, tmp_path / "iter_00000001.pt")
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(CheckpointError, match="No space left on device"):
        ckpt.save_checkpoint({"x": torch.zeros(1)}, path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_second_ctrl_c_inside_torch_s_writer_is_a_stop_not_a_full_disk(tmp_path, monkeypatch):
    """The second SIGINT's StoppedAtOnce, raised by the guard while torch's C++ writer was in
    a write, came out as torch's RuntimeError ('unexpected pos'), and mic-train reported a full
    disk (exit 2) rather than a stop at once (130)."""
    import os

    import mic.training.checkpoint as ckpt
    from mic.training import StoppedAtOnce

    path = ckpt.save_checkpoint({"x": torch.ones(1)}, tmp_path / "iter_00000001.pt")
    before = path.read_bytes()

    class Interrupted:  # the file torch writes to, a signal arriving at its third write
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise StoppedAtOnce(1)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    fdopen = os.fdopen
    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: Interrupted(fdopen(fd, mode)))
    with pytest.raises(StoppedAtOnce):
        ckpt.save_checkpoint({"x": torch.zeros(10_000), "y": torch.zeros(10)}, path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_global_batch_that_does_not_divide_among_processes():
    from mic.core import ConfigError

    with pytest.raises(ConfigError, match="does not divide among 3 processes"):
        per_process_batch_size(16, 3, "source")


def test_config_group_options_are_checked_where_mics_own_configs_decide(tmp_path):
    from mic.train import unknown_option

    (tmp_path / "method").mkdir()  # --config-dir given one level too deep
    (tmp_path / "method" / "entmin.yaml").write_text("name: entmin\n")
    said = unknown_option(["--config-dir", str(tmp_path / "method"), "method=entmin"])
    assert (
        f"holds entmin.yaml itself; give the folder that holds method/ (--config-dir {tmp_path})"
        in said
    )

    assert unknown_option(["experiment=det_shapes", "mic=none", "seed=3", "model.norm=x"]) is None
    assert "Did you mean: dacs?" in unknown_option(["+method=dacs_mic"])
    assert "The model options: " in unknown_option(["model=detectron2_rcnn"])
    assert "unknown method 'SDAT'. Did you mean: sdat?" in unknown_option(["method=SDAT"])
    mine = unknown_option(["experiment=tiny_digits"])  # of one's own, without --config-dir
    assert mine.endswith(
        " (a file of your own: give the folder that holds experiment/tiny_digits.yaml with "
        "--config-dir)"
    )
    assert "--config-dir)" not in unknown_option(["--config-dir", "/tmp", "method=mine"])
    # config folders of one's own and sweeps: Hydra judges
    assert unknown_option(["experiment=mine", "hydra.searchpath=[pkg://my.configs]"]) is None
    assert "config folder /x (--config-dir / hydra.searchpath): no such folder" in unknown_option(
        ["--config-dir", "/x"]
    )
    assert "config folder /x " in unknown_option(
        ["experiment=mine", "hydra.searchpath=[file:///x]"]
    )
    # a sweep's unknown option (Hydra's "Could not find 'experiment/streetz'" and its path)
    said = unknown_option(["-m", "experiment=det_shapes,streetz"])
    assert said.startswith("experiment=det_shapes,streetz: unknown experiment 'streetz'.")
    assert "Did you mean: streets, streets_hrda?" in said
    # null (Hydra: "Config group override must be a string or a list", with its traceback)
    assert "model=null: choose one of its options: context_unet," in unknown_option(["model=null"])
    assert "mic=null: choose one" in unknown_option(["-m", "mic=none,null"])  # a sweep's too
    said = unknown_option(["-m", "experiment=null,digits_oracle"])
    assert "(leave experiment= out for none, the default; a sweep names it none)" in said
    from mic.experiment import load_config

    assert load_config(["experiment=none"]) == load_config([])  # the sweep's plain arm


def test_nested_settings_are_checked_against_the_composed_config(tmp_path):
    from mic.train import unknown_option, unknown_setting

    ok = ["experiment=streets", "dataset.source.min_pixels=3", "method.terms.mic.weight=0.5"]
    assert unknown_setting(ok) is None
    said = unknown_setting(["experiment=streets", "dataset.sourc.length=3"])
    assert said.startswith("no setting dataset.sourc.length: dataset has no 'sourc'.")
    assert "Did you mean: source?" in said
    # a section given one value; a dict of its settings, an interpolation or null is fine
    said = unknown_setting(["experiment=streets", "dataset.source=3"])
    assert said.startswith("dataset.source=3: dataset.source is a section of settings (")
    for fine in ("{min_pixels: 8}", "${dataset.target}", "null"):
        assert unknown_setting(["experiment=streets", f"dataset.source={fine}"]) is None
    # a dict of a setting it lacks: Hydra's "Key 'count' is not in struct" before
    said = unknown_setting(["experiment=streets", "dataset.source={count: 8}"])
    assert said.startswith("no setting dataset.source.count: dataset.source has no 'count'.")
    # a key the chosen experiment brings (streets' thing_classes), an addition (+), a group
    assert unknown_setting(["experiment=streets", "dataset.thing_classes=[1]"]) is None
    assert unknown_setting(["experiment=streets", "+model.extra=1", "model.extra=2"]) is None
    said = unknown_setting(["experiment=streets", "+method.rare_class_sampling=true"])
    assert "method.rare_class_sampling is already set (to False); set it without +" in said
    said = unknown_setting(
        ["experiment=streets", "dataset=seg_folders", "dataset.thing_classes=[1]"]
    )
    assert "dataset has no 'thing_classes'" in said
    said = unknown_setting(["experiment=streets", "model.zz=3"])
    assert "no setting model.zz" in said and "+model.zz" not in said  # SmallUNet takes no zz
    said = unknown_setting(["model.zz=3"])  # (Classifier passes **backbone_kwargs to timm)
    assert "added with +model.zz=..." in said  # no close name: an argument of the _target_
    # a key the config lacks but an interpolation reads where set (${oc.select:...})
    said = unknown_setting(["experiment=gta2cs_daformer_mic", "dataset.thing_classes=[6]"])
    assert "an interpolation reads it where it is set: add it with +dataset.thing_classes" in said
    # a config folder of one's own is composed with mic's
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - streets\nmine_key: 1\n"
    )
    own = ["--config-dir", str(tmp_path), "experiment=mine"]
    assert unknown_setting([*own, "dataset.source.min_pixels=3"]) is None
    # a model of one's own as a mapping: merged into the chosen model's config (refused,
    # with how to replace it); taken as it is where replaced or set to null by an experiment
    mine = "+model={_target_: mine.Net, width: 3}"
    assert "merges its settings into the model config" in unknown_setting([mine])
    assert unknown_setting(["~model", mine]) is None
    (tmp_path / "experiment" / "nomodel.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: null\n"
    )
    assert unknown_setting(["--config-dir", str(tmp_path), "experiment=nomodel", mine]) is None
    # settings of a group given anew are the mapping's (model.width was "no setting")
    assert unknown_setting(["~model", mine, "model.width=4"]) is None
    said = unknown_setting(["~model", mine, "model.depth=4"])
    assert "the model given anew (+model={...}) has no 'depth'" in said
    # a key below one added with + on the same line ('model.opts has no MODEL' before)
    d2 = ["experiment=det_shapes", "model=d2_faster_rcnn_small", "+model.opts.MODEL.A=1"]
    said = unknown_setting([*d2, "model.opts.MODEL.B=2"])
    assert "model.opts.MODEL is added on this command line (with +), so a key below it" in said
    assert said.endswith("+model.opts.MODEL.B=...") and "has no" not in said
    assert unknown_setting([*d2, "+model.opts.MODEL.B=2"]) is None
    # task and method: the root's defaults read their names (Hydra: an interpolation error)
    said = unknown_option(["~task", "+task={_target_: mine.Task}"])
    assert "the task config cannot be replaced on the command line" in said
    assert "override /task: null" in said
    said = unknown_setting(["+method={name: x}"])
    assert "the method config cannot be replaced on the command line" in said
    assert "no setting dataset.sourcee" in unknown_setting([*own, "dataset.sourcee.x=1"])
    # what cannot be composed here (a sweep, an unknown option): the run judges
    assert unknown_setting(["-m", "experiment=streets,det_shapes", "dataset.x.y=1"]) is None


def test_every_case_is_documented():
    text = DOCS.read_text()
    missing = [c[0] for c in CASES if f"`{c[0]}`" not in text]
    assert not missing, f"add to docs/errors.md (python -m tests.test_bad_input): {missing}"


if __name__ == "__main__":  # print docs/errors.md's table
    import contextlib
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        # the runs made in this process print their scores: not into the table
        with contextlib.redirect_stdout(sys.stderr):
            results = run_cases(CASES, Path(d))
        print("| case | what is wrong | message |\n|---|---|---|")
        for name, what, _, _ in CASES:
            text = message(results[name]).replace(d, "/tmp/x").replace("|", "\\|")
            print(f"| `{name}` | {what} | {text} |")


def test_an_experiment_s_settings_over_a_chosen_option_are_named_and_other_pairs_pass(tmp_path):
    """experiment=visda2017_sdat_mic_resnet101 method=cdan trained CDAN with SAM's step and an
    MCC temperature; the recipe's own settings of a data set, a null term or a run's name are
    no such case, nor a setting given on the command line too."""
    from mic.train import experiment_over_choice, unknown_option, unknown_setting

    cdan = ["experiment=visda2017_sdat_mic_resnet101", "method=cdan", "~method.step"]
    said = experiment_over_choice(cdan)
    assert "sets method.terms.mcc.temperature=3.0 (the option's: no such setting)" in said
    assert "remove them on the command line (~method.terms.mcc), or leave method= out" in said
    assert experiment_over_choice([*cdan, "~method.terms.mcc"]) is None
    small = ["experiment=officehome_sdat_mic_vit", "model=small_cnn", "model.backbone=small_cnn"]
    assert experiment_over_choice(small) is None  # (pretrained: the recipe's, named at build)
    said = experiment_over_choice(small[:2])  # named with the backbone, as both need setting
    assert "model.pretrained=True (the option's: False)" in said
    assert "(model.backbone=... model.pretrained=...)" in said
    vit = ["experiment=visda2017_sdat_mic_vit"]  # an option quoted, or a sweep function's
    for model in ("model='resnet50'", "model=choice(resnet50,small_cnn)", "model=glob(res*)"):
        assert "over model=resnet" in experiment_over_choice(["-m", *vit, model]), model
    adam = experiment_over_choice(["experiment=det_shapes", "optimizer=adam"])
    assert "optimizer.momentum=0.9 (the option's: no such setting)" in adam
    assert "weight_decay" not in adam  # (an argument Adam takes: the recipe's value)
    sweep = ["-m", "experiment=det_shapes,streets", "optimizer=sgd,adam"]  # each job judged
    assert "experiment=det_shapes sets optimizer.momentum" in experiment_over_choice(sweep)
    assert "over model=small_cnn" in experiment_over_choice(
        ["-m", "experiment=visda2017_sdat_mic_vit", "model=small_cnn,resnet50"]
    )
    # a setting of the user's that the option routes where the experiment sets its own
    scale = experiment_over_choice(["experiment=gta2cs_hrda_mic", "dataset=seg_folders"])
    assert "dataset.target.transform.scale=[2048, 1024] (the option's: '${dataset.scale}')" in scale
    assert "dataset.test.transform.scale='${dataset.scale}'" in scale
    # a mapping given on the command line sets its keys
    given = [*small, "model={backbone: small_cnn, pretrained: false}"]
    assert experiment_over_choice(given) is None
    for fine in (
        [*small, "model.pretrained=false"],
        ["experiment=streets", "optimizer=adamw"],  # the experiment's own options, named
        ["experiment=visda2017_sdat_mic_vit", "model=vit_b16", "method=sdat"],
        ["experiment=streets", "optimizer=sgd"],  # the recipe's learning rate: its own
        ["experiment=streets", "scheduler=poly"],
        ["experiment=streets_hrda", "method=dacs"],  # (feature_distance: null, which dacs lacks)
        ["experiment=digits_oracle", "method=source_only"],  # (method.name: oracle)
        ["experiment=streets_hrda", "dataset=seg_folders"],  # (HRDA's crops: its recipe)
        ["experiment=streets", "method=daformer", "mic=segmentation"],
        ["model=small_cnn"],  # no experiment
    ):
        assert experiment_over_choice(fine) is None, fine
    # an experiment of one's own that keeps the root's model: choosing it again is no change
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  bottleneck_dim: 128\n"
    )
    mine = ["--config-dir", str(tmp_path), "experiment=mine", "model=small_cnn"]
    assert experiment_over_choice(mine) is None
    assert experiment_over_choice([*mine[:3], "model=resnet50"]) is None  # a tuned width
    # a value an experiment tunes where its own option reads it as the chosen one does
    (tmp_path / "experiment" / "tau.yaml").write_text(
        "# @package _global_\nmethod:\n  terms:\n    mic: {tau: 0.9, masker: {block_size: 16}}\n"
    )
    assert experiment_over_choice([*mine[:2], "experiment=tau", "mic=block_vit"]) is None
    # a file without the header puts its keys under experiment.*: check_config names it
    (tmp_path / "experiment" / "bare.yaml").write_text("model: {backbone: resnet18}\n")
    assert experiment_over_choice([*mine[:2], "experiment=bare", "model=resnet50"]) is None
    # an experiment building on another by its absolute name is followed
    (tmp_path / "experiment" / "child.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /experiment/visda2017_sdat_mic_vit\n  - _self_\n"
    )
    said = experiment_over_choice([*mine[:2], "experiment=child", "model=resnet50"])
    assert "sets model.backbone='vit_base_patch16_224" in said
    # a mapping replaced whole: ~key +key={...} (~key alone is refused)
    replace = ["experiment=gta2cs_daformer_mic", "~lr_mult", "+lr_mult={model.backbone: 0.1}"]
    assert unknown_option(replace) is None
    assert "deletes the setting lr_mult" in unknown_option(replace[:2])
    null = unknown_setting(["~lr_mult", "++lr_mult={model.fc: 2.0}"])  # (Hydra's "does not exist")
    assert (
        null == "~lr_mult: lr_mult is null here (nothing set), which Hydra cannot delete; "
        "set it directly (lr_mult=...)"
    )


def test_method_files_of_one_s_own_that_compose_are_not_refused(tmp_path):
    """The checks of one's own method files refused files that ran: a name inherited from the
    defaults list, a name from an interpolation, an object beside terms: that a term reads
    through ${method.<key>}, a file of another layout (# @package)."""
    from mic.train import unknown_option, usage_problem

    files = {
        "inherit": "defaults:\n  - mean_teacher\n  - _self_\nterms:\n  self_training:\n"
        "    weight: 0.5\n",
        "interp": "name: mt_s${seed}\nterms:\n  source:\n    _target_: mic.SourceSupervision\n",
        "shared": "name: shared\nshared_aug:\n  _target_: mic.StrongAugmentation\nterms:\n"
        "  source:\n    _target_: mic.SourceSupervision\n    extra: ${method.shared_aug}\n",
        "glob": "# @package _global_\nmethod:\n  name: glob\n",
    }
    (tmp_path / "method").mkdir()
    for name, text in files.items():
        (tmp_path / "method" / f"{name}.yaml").write_text(text)
        assert unknown_option(["--config-dir", str(tmp_path), f"method={name}"]) is None, name
    (tmp_path / "method" / "noname.yaml").write_text("terms: {}\n")  # a sweep's are judged too
    swept = unknown_option(["--config-dir", str(tmp_path), "-m", "method=interp,noname"])
    assert swept.endswith(
        "noname.yaml has no name: (it names the run folder and log): add name: noname"
    )
    assert unknown_option(["--config-dir", str(tmp_path), "-m", "method=interp,shared"]) is None
    for fine in ("method.name=mt_s${seed}", "method.name=mt+v2", "method.name=my run"):
        assert usage_problem([fine]) is None
    assert "give it without '/'" in usage_problem(["method.name=a/${seed}"])


def test_the_quoted_form_of_an_unread_path_keeps_its_interpolations_and_sweeps_pass():
    """The advice escaped a typed ${seed} (the run folder named literally '${seed}'); a sweep
    set by hydra.mode=MULTIRUN or a sweep function was told to quote its comma."""
    from mic.train import usage_problem

    said = usage_problem(["hydra.run.dir=/tmp/r_${seed},x"])
    assert said.endswith(
        "write 'hydra.run.dir=\"/tmp/r_${seed},x\"' (the single quotes for the shell, the "
        "double ones for Hydra)"
    )
    assert usage_problem(["dataset.root=/a,/b", "hydra.mode=MULTIRUN"]) is None
    assert usage_problem(["-m", "dataset.root=choice(/a,/b)"]) is None
    assert usage_problem(["dataset.root=choice(/a,/b)"]) is None  # Hydra names it
    assert "write 'hydra.run.dir=\"runs(1)/x\"'" in usage_problem(["hydra.run.dir=runs(1)/x"])


def test_an_interpolation_beside_its_key_is_named_as_written_and_experiment_takes_a_file(
    tmp_path,
):
    """${.lrr} was said as ${lrr}, with the advice +lrr=...; +experiment={...} was told to
    drop the +, then that the (absent) file lacked its package header."""
    from mic.experiment import load_config
    from mic.train import unknown_setting, user_error

    cfg = load_config(["optimizer.lr=${.lrr}"])
    with pytest.raises(Exception) as info:
        cfg.optimizer.lr  # noqa: B018 (resolved)
    said = user_error(info.value, cfg)
    assert said.startswith("optimizer.lr reads ${.lrr}, a relative interpolation (a key beside it")
    for form in ("+experiment", "++experiment", "experiment"):
        said = unknown_setting([f"{form}={{iterations: 5}}"])
        assert said.startswith(f"{form}={{iterations: 5}}: experiment= chooses an experiment file")
    # ~task +task=<option>: the option chosen directly; a group deleted and given anew again
    # with one of its settings deleted composes
    from mic.train import _group_hint, unknown_option

    said = unknown_option(["~task", "+task=classification"])
    assert said.endswith("choose the option directly: task=classification")
    mine = "+model={_target_: torch.nn.Linear, in_features: 2, out_features: 3, bias: true}"
    assert unknown_setting(["~model", mine, "~model.bias"]) is None
    # what a class takes is listed where its own call refused the key, not a call inside it
    said = "Error in call to target 'torch.nn.Linear': TypeError(\"{}.__init__() got an "
    said += "unexpected keyword argument 'width'\") full_key: model"
    assert "Linear takes ['bias'," in _group_hint(said.format("Linear"))
    assert "takes [" not in _group_hint(said.format("Conv2d"))
    # an own group file's list under a mapping names its key
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "bad.yaml").write_text(
        "defaults:\n  - digits\n  - _self_\nname: bad\nsource:\n  - _target_: x.Y\n"
    )
    from mic.train import own_config_problem

    said = own_config_problem(["--config-dir", str(tmp_path), "dataset=bad"])
    assert "(dataset.source: a mapping in mic's config)" in said
