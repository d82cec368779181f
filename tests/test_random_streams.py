"""Each loss term draws from its own random stream, keyed to each sample's place in the global
batch: adding MIC leaves the base method's draws unchanged (paired comparisons), and processes
or micro-batches that share a batch draw what one process draws for all of it."""

import pytest
import torch
from torch.utils.data import DataLoader

import mic
from mic import AdaptationLoop, ConfigError, EMATeacher, RandomStream, StrongAugmentation, UDAMethod
from mic.core.streams import stream_seed
from mic.datasets import DigitsDomain
from mic.datasets.segmentation import StreetScenes
from mic.tasks.classification import ClassificationTask, Classifier
from mic.tasks.segmentation import ClassMix, SegmentationMIC, SegmentationTask, SmallUNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("world", "micros"), [(1, 1), (2, 1), (1, 3), (2, 2)])
def test_processes_and_micro_batches_draw_the_rows_of_one_process(world, micros):
    n = 3  # samples per process and micro-batch
    one = RandomStream(seed=7)  # one process, the whole batch, three calls
    whole = torch.cat([one.rand(n * world * micros, 2, 5) for _ in range(3)])
    rows = {}
    for rank in range(world):
        for micro in range(micros):
            stream = RandomStream(7, rank, world, micro, micros)
            for call in range(3):
                draws = stream.rand(n, 2, 5)
                for i in range(n):  # ResumableSampler's order: sample i of rank r is i * W + r
                    rows[call * n * world * micros + (micro * n + i) * world + rank] = draws[i]
    assert sorted(rows) == list(range(len(whole)))
    assert torch.equal(torch.stack([rows[k] for k in sorted(rows)]), whole)


def test_per_sample_streams_follow_the_global_index_and_differ_between_samples():
    a = RandomStream(5, rank=1, world_size=2).for_sample(2, 4)
    b = RandomStream(5).for_sample(5, 8)  # sample 2 of rank 1 is sample 5 of one process
    assert torch.equal(a.rand(1, 9), b.rand(1, 9))
    c = RandomStream(5).for_sample(4, 8)
    assert not torch.equal(RandomStream(5).for_sample(5, 8).rand(1, 9), c.rand(1, 9))
    assert stream_seed(0, "mic", 3) != stream_seed(0, "mix", 3) != stream_seed(0, "mic", 4)


class Recorder:
    """Wraps a module's forward and keeps what it returned."""

    def __init__(self, module):
        self.outputs = []
        forward = module.forward
        module.forward = lambda *a, **k: self.outputs.append(forward(*a, **k)) or self.outputs[-1]


def _digits_loop(method, student_seed=0):
    task = ClassificationTask(10)
    kw = {"batch_size": 16, "shuffle": True, "drop_last": True, "collate_fn": task.collate}
    source = DataLoader(
        DigitsDomain("source", "train"), generator=torch.Generator().manual_seed(0), **kw
    )
    target = DataLoader(
        DigitsDomain("target", "train", labelled=False),
        generator=torch.Generator().manual_seed(1),
        **kw,
    )
    torch.manual_seed(student_seed)
    student = Classifier("tiny_cnn", 10, bottleneck_dim=8)
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    teacher = EMATeacher(student, 0.9)
    return AdaptationLoop(task, student, method, opt, source, target, 6, teacher=teacher, seed=3)


def _run(loop):
    while loop.step < loop.iterations:
        loop.train_step()
        loop.step += 1


def test_the_masker_s_blocks_do_not_move_when_its_augmentation_changes():
    """The blocks were drawn from the stream after the augmentation's draws: switching the
    colour operations (or the augmentation) off moved every block, so an ablation of the
    augmentation compared other masks too."""

    def draws_only(images, rng):  # an augmentation that draws and changes nothing
        mic.core.streams.uniform(rng, images.shape[0], 7, device=images.device)
        return images

    images = torch.rand(4, 3, 32, 32)
    plain = mic.BlockMasker(4, 0.7, fill=-1.0)
    drawing = mic.BlockMasker(4, 0.7, augmentation=draws_only, fill=-1.0)
    assert torch.equal(plain(images, RandomStream(3)), drawing(images, RandomStream(3)))
    # the term's own draws (Task.loss's) are not the masker's either
    term, masker = RandomStream(3), RandomStream(3)
    plain(images, masker)
    assert torch.equal(term.rand(4, 6), masker.rand(4, 6))
    # with a generator (no stream to derive from), both draw from it, as before
    blocks = plain(images, torch.Generator().manual_seed(0))
    assert not torch.equal(blocks, drawing(images, torch.Generator().manual_seed(0)))
    # two calls on one stream are two masks (two masked views), of a batch and of a list
    stream = RandomStream(5)
    assert not torch.equal(plain(images, stream), plain(images, stream))
    listed = list(images)
    first, second = plain(listed, stream), plain(listed, stream)
    assert not all(torch.equal(a, b) for a, b in zip(first, second))
    assert all(torch.equal(a, b) for a, b in zip(first, plain(listed, RandomStream(5))))
    with pytest.raises(ConfigError, match="substream takes a name"):
        stream.substream(3)


def test_adding_mic_leaves_the_mean_teachers_augmented_images_unchanged():
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    seen = []
    for with_mic in (False, True):
        augmentation = StrongAugmentation(**norm)
        recorder = Recorder(augmentation)
        method = mic.mean_teacher(augmentation)
        if with_mic:
            masker = mic.BlockMasker(4, 0.7, StrongAugmentation(**norm))
            method = method.with_terms(mic=mic.MaskedImageConsistency(masker))
        _run(_digits_loop(method))
        seen.append(recorder.outputs)
    assert len(seen[0]) == len(seen[1]) == 6
    for a, b in zip(*seen):
        assert torch.equal(a, b)


def test_adding_mic_leaves_dacs_mixed_images_unchanged():
    task = SegmentationTask(8, classes=StreetScenes.classes)
    mean, std = StreetScenes.mean, StreetScenes.std
    kw = {"batch_size": 4, "shuffle": True, "drop_last": True, "collate_fn": task.collate}
    mixes = []
    for with_mic in (False, True):
        mix = ClassMix(StrongAugmentation(mean=mean, std=std))
        recorder = Recorder(mix.augmentation)
        terms = {"source": mic.SourceSupervision(), "mix": mix}
        if with_mic:
            masker = mic.BlockMasker(8, 0.7, StrongAugmentation(mean=mean, std=std))
            terms["mic"] = SegmentationMIC(masker)
        src = StreetScenes("source", "train", count=8, size=32)
        tgt = StreetScenes("target", "train", count=8, size=32, labelled=False)
        torch.manual_seed(0)
        student = SmallUNet(8, (4, 8, 8))
        loop = AdaptationLoop(
            task,
            student,
            UDAMethod(terms),
            torch.optim.AdamW(student.parameters(), 1e-3),
            DataLoader(src, generator=torch.Generator().manual_seed(0), **kw),
            DataLoader(tgt, generator=torch.Generator().manual_seed(1), **kw),
            5,
            teacher=EMATeacher(student, 0.99),
            seed=1,
        )
        _run(loop)
        mixes.append(recorder.outputs)
    assert len(mixes[0]) == len(mixes[1]) == 5
    for a, b in zip(*mixes):
        assert torch.equal(a, b)  # the same classes pasted, the same jitter and blur


def test_a_term_draws_the_same_whatever_its_place_and_others_draw_differently():
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    outputs = {}
    for order in (("self_training", "mic"), ("mic", "self_training")):
        aug = StrongAugmentation(**norm)
        masker = mic.BlockMasker(4, 0.7, StrongAugmentation(**norm))
        recorders = {"self_training": Recorder(aug), "mic": Recorder(masker)}
        terms = {
            "self_training": mic.SelfTraining(aug),
            "mic": mic.MaskedImageConsistency(masker),
        }
        method = UDAMethod({"source": mic.SourceSupervision(), **{k: terms[k] for k in order}})
        loop = _digits_loop(method)
        loop.train_step()
        outputs[order] = {k: r.outputs[0] for k, r in recorders.items()}
    a, b = outputs.values()
    assert torch.equal(a["mic"], b["mic"]) and torch.equal(a["self_training"], b["self_training"])


def _counted_zero():
    """DetectionMIC whose loss counts 0 (a weight of 0 would switch it off, draws and all)."""
    from mic.tasks.detection import DetectionMIC

    class CountedZero(DetectionMIC):
        def forward(self, ctx):
            return 0 * super().forward(ctx)

    return CountedZero


def _detection_loop(terms, with_mic: bool, backend: str = "torchvision"):
    from mic.datasets.detection import ShapesDetection
    from mic.tasks.detection import DetectionTask
    from tests.det_helpers import SIZE, tiny_detector

    # threshold 0: the untrained teacher's boxes become pseudo-boxes, so MIC's branch runs
    task = DetectionTask(4, score_threshold=0.05)
    kw = {"batch_size": 2, "shuffle": True, "drop_last": True, "collate_fn": task.collate}
    src = ShapesDetection("source", "train", size=SIZE, length=8)
    tgt = ShapesDetection("target", "train", labelled=False, size=SIZE, length=8)
    student = tiny_detector(0, num_classes=4, backend=backend)
    if with_mic:  # MIC's loss times 0: its gradient is zero, only its draws could change the run
        masker = mic.BlockMasker(8, 0.5, StrongAugmentation(), fill=student.image_mean)
        terms = {**terms, "mic": _counted_zero()(masker)}
    method = UDAMethod(terms)
    params = [*student.parameters(), *method.parameters()]
    return AdaptationLoop(
        task,
        student,
        method,
        torch.optim.SGD(params, 0.01, momentum=0.9),
        DataLoader(src, generator=torch.Generator().manual_seed(0), **kw),
        DataLoader(tgt, generator=torch.Generator().manual_seed(1), **kw),
        4,
        teacher=EMATeacher(student, 0.9),
        seed=2,
    )


@pytest.mark.parametrize("backend", ["torchvision", "detectron2"])
@pytest.mark.parametrize("base", ["mean_teacher", "sada"])
def test_adding_mic_leaves_the_detection_base_methods_draws_unchanged(base, backend):
    from mic.tasks.detection import DomainAdversarial, SharedSourceSupervision

    runs = []
    for with_mic in (False, True):
        torch.manual_seed(0)  # the global generators: the same start in both runs
        if base == "mean_teacher":
            augmentation = StrongAugmentation()
            recorder = Recorder(augmentation)
            no_box = {"rpn_box": 0.0, "roi_box": 0.0}
            terms = {
                "source": mic.SourceSupervision(),
                "self_training": mic.SelfTraining(augmentation, "none", part_weights=no_box),
            }
        else:
            recorder = None
            terms = {
                "source": SharedSourceSupervision(),
                "adversarial": DomainAdversarial(16, 32, image_levels=5, instance_levels=4),
            }
        loop = _detection_loop(terms, with_mic, backend)
        _run(loop)
        runs.append((loop, recorder))
    (a, rec_a), (b, rec_b) = runs
    if rec_a is not None:  # the mean teacher's augmented targets
        assert len(rec_a.outputs) == len(rec_b.outputs) == 4
        assert all(torch.equal(x, y) for x, y in zip(rec_a.outputs, rec_b.outputs))
    # the detector's sampling drew the same in both runs: the same weights after 4 steps
    for (name, p), q in zip(a.student.named_parameters(), b.student.parameters()):
        assert torch.equal(p, q), name
    assert b.method.terms["mic"].statistics["boxes"] > 0  # the masked branch did run


@pytest.mark.parametrize(
    "layout", [{"rank": 3, "world_size": 2}, {"rank": -1}, {"micro": 2, "micro_batches": 2}]
)
def test_a_stream_placed_outside_its_layout_is_refused(layout):
    # rank 3 of 2 drew one row for two images, which a masker broadcast into one mask
    with pytest.raises(ConfigError, match="RandomStream: rank"):
        RandomStream(0, **layout)


def test_a_dataset_that_draws_when_built_draws_the_same_whatever_the_model(tmp_path, monkeypatch):
    """mic-train builds the model before the data (missing weights named before a data check);
    a dataset drawing at construction (a random subset) then drew after the model's initial
    weights, so its subset changed with the model's settings."""
    from mic.experiment import build_experiment, load_config

    (tmp_path / "drawing_data.py").write_text(
        "import torch\n"
        "from mic.datasets import DigitsDomain\n"
        "DRAWN = []\n"
        "class RandomSubset(torch.utils.data.Subset):\n"
        "    def __init__(self, **kwargs):\n"
        "        full = DigitsDomain(**kwargs)\n"
        "        picked = torch.randperm(len(full))[:300].tolist()\n"
        "        DRAWN.append(picked)\n"
        "        super().__init__(full, picked)\n"
        "        self.num_classes = full.num_classes\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import drawing_data

    weights = []
    for width in (64, 64, 32):
        cfg = load_config(
            [
                "dataset.source._target_=drawing_data.RandomSubset",
                f"model.bottleneck_dim={width}",
                "iterations=2",
                "adaptation_start=0",
                "checkpoint.interval=0",
            ]
        )
        weights.append(next(build_experiment(cfg, None).student.parameters()).detach().clone())
    assert drawing_data.DRAWN[0] == drawing_data.DRAWN[1] == drawing_data.DRAWN[2]
    assert torch.equal(weights[0], weights[1])  # and the model's weights follow the seed
