"""The pieces of exact resume: loader positions, sampler positions, generator states."""

import random
import re
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mic import CheckpointError, ConfigError, EndlessLoader
from mic.training import ResumableSampler, rng_state, set_rng_state
from tests.helpers import changed_bytes


def _loader(sampler=None, shuffle=False):
    return DataLoader(
        list(range(10)),
        batch_size=3,
        sampler=sampler,
        shuffle=shuffle,
        drop_last=True,
        generator=torch.Generator().manual_seed(3),
    )


def _take(it, n):
    return [next(it).tolist() for _ in range(n)]


def test_forever_resumes_at_the_same_batch_with_a_resumable_sampler():
    a = EndlessLoader(_loader(ResumableSampler(10, seed=1)))
    first = _take(a, 5)  # 3 batches per epoch: ends inside the second epoch
    state = a.state_dict()
    assert state == {"epoch": 1, "batches": 2, "samples": 6}
    rest = _take(a, 4)
    b = EndlessLoader(_loader(ResumableSampler(10, seed=1)))
    b.load_state_dict(state)
    assert _take(b, 4) == rest
    assert first[:2] != first[3:5]  # each epoch is reshuffled


def test_a_resumed_loader_with_another_batch_size_continues_at_the_next_sample():
    a = EndlessLoader(_loader(ResumableSampler(10, seed=1)))
    _take(a, 4)  # the second epoch's first batch: 3 of its 9 samples drawn
    order = ResumableSampler(10, seed=1)
    order.set_epoch(1)
    b = EndlessLoader(
        DataLoader(list(range(10)), batch_size=2, sampler=ResumableSampler(10, seed=1))
    )
    b.load_state_dict(a.state_dict())
    assert _take(b, 3) == [order.indices()[3:5], order.indices()[5:7], order.indices()[7:9]]


def test_forever_resumes_with_a_plain_shuffling_loader_by_replaying():
    a = EndlessLoader(_loader(shuffle=True))
    _take(a, 4)
    state = a.state_dict()
    rest = _take(a, 5)
    b = EndlessLoader(_loader(shuffle=True))
    b.load_state_dict(state)
    assert _take(b, 5) == rest


def test_resumable_sampler_deals_disjoint_equal_shares_to_ranks():
    shares = [list(ResumableSampler(11, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 3 for s in shares)
    flat = [i for s in shares for i in s]
    assert len(set(flat)) == 9
    s = ResumableSampler(11, seed=0)
    s.set_start(4)
    assert list(s) == ResumableSampler(11, seed=0).indices()[4:]
    assert len(list(s)) == 11  # the start applies once


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    want = (torch.rand(3), np.random.rand(2), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


class _OnGPU(torch.Tensor):
    """A host tensor that refuses, as one on a GPU does, to give its values to NumPy: what
    a checkpoint read with ``map_location="cuda"`` holds."""

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor)


def test_rng_state_restores_from_a_checkpoint_read_onto_a_gpu():
    state = rng_state()
    kind, keys, *rest = state["numpy"]
    state["numpy"] = [kind, keys.as_subclass(_OnGPU), *rest]
    state["torch"] = state["torch"].as_subclass(_OnGPU)
    expected = random.random(), np.random.rand(), torch.rand(1)
    set_rng_state(state)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


class _Noisy:
    """A dataset whose items are random draws (like random crops)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.rand(()) + 10 * i


def test_seeded_dataset_makes_random_transforms_a_function_of_the_position():
    from mic.training import SeededDataset

    def batches(workers):
        sampler = ResumableSampler(8, seed=5, with_seeds=True)
        loader = DataLoader(
            SeededDataset(_Noisy()),
            batch_size=4,
            sampler=sampler,
            num_workers=workers,
            generator=torch.Generator().manual_seed(0),
        )
        return torch.cat([b for b in loader])

    a, b = batches(0), batches(0)
    assert torch.equal(a, b)
    assert torch.equal(a, batches(2))  # the same draws whichever process loads a sample
    before = torch.get_rng_state()
    batches(0)
    assert torch.equal(before, torch.get_rng_state())  # the global generator is untouched


class _Drawing:
    """Items drawn from torch's, NumPy's and Python's global generators (like albumentations
    or a reader's flip), with the sources it declares."""

    def __init__(self, random_sources=None):
        if random_sources is not None:
            self.random_sources = random_sources

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor([float(torch.rand(())), np.random.rand(), random.random()])


def _seeded_batches(dataset, workers=0):
    from mic.training import SeededDataset

    sampler = ResumableSampler(8, seed=5, with_seeds=True)
    loader = DataLoader(SeededDataset(dataset), batch_size=4, sampler=sampler, num_workers=workers)
    return torch.cat([b for b in loader])


def test_seeded_dataset_seeds_every_generator_of_an_undeclared_dataset():
    a = _seeded_batches(_Drawing())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # whatever came before
    assert torch.equal(a, _seeded_batches(_Drawing()))
    assert torch.equal(a, _seeded_batches(_Drawing(), workers=2))
    assert len(set(a[:, 1].tolist())) == 8 and len(set(a[:, 2].tolist())) == 8


def test_seeded_dataset_seeds_only_the_generators_a_dataset_declares():
    from mic.training import SeededDataset

    declared = _seeded_batches(_Drawing(("torch",)))
    assert torch.equal(declared[:, 0], _seeded_batches(_Drawing())[:, 0])  # torch's: the same
    torch_only = SeededDataset(_Drawing(("torch",)))
    random.seed(7)
    first = torch_only[(0, 123)]
    random.seed(8)
    second = torch_only[(0, 123)]
    # torch's generator seeded by the sample's seed, Python's left as it was
    assert first[0] == second[0] and first[2] != second[2]
    assert SeededDataset(_Drawing(), generators=["python"]).generators == ("python",)
    with pytest.raises(ConfigError, match=r"random_sources names \['cuda'\]"):
        SeededDataset(_Drawing(("torch", "cuda")))


@pytest.mark.parametrize("workers", [0, 1])
def test_a_dataset_s_own_error_keeps_its_traceback_and_names_the_sample(workers):
    """A dataset of one's own that fails mid-run: its error (its code's fault) with the
    sample it met, also from a loader's worker process."""
    from mic.training import SeededDataset

    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            if index == 5:
                raise ValueError("a broken sample")
            return torch.zeros(2)

    keys = [(i, 0) for i in range(8)]
    with pytest.raises(ValueError, match="a broken sample") as info:
        for _ in DataLoader(SeededDataset(Failing()), batch_size=1, sampler=keys,
                            num_workers=workers):  # fmt: skip
            pass
    said = " ".join([str(info.value), *getattr(info.value, "__notes__", [])])
    assert "raised by Failing loading sample 5: dataset[5] again" in said


def test_bundled_benchmarks_declare_what_their_samples_draw():
    from mic.datasets import DigitsDomain
    from mic.datasets.segmentation import RareClassSampling, StreetScenes
    from mic.training import SeededDataset

    digits = SeededDataset(DigitsDomain("target", "train", labelled=False))
    assert digits.generators == ()
    before = torch.get_rng_state()
    assert torch.equal(digits[(3, 11)], digits.dataset[3])
    assert torch.equal(before, torch.get_rng_state())
    streets = StreetScenes("source", "train", count=16, size=32, flip=True)
    assert SeededDataset(streets).generators == ("torch",)  # the flip
    flips = {
        bool(torch.equal(SeededDataset(streets)[(0, s)][0], streets.images[0])) for s in range(8)
    }
    assert flips == {True, False}  # the seed decides the flip
    rcs = RareClassSampling(streets, min_pixels=1, min_crop_ratio=0, cache=False)
    assert SeededDataset(rcs).generators == ("torch",)
    rcs.dataset = _Drawing()  # a wrapped dataset that declares nothing: all three
    assert SeededDataset(rcs).generators == ("torch", "numpy", "python")


def test_latest_checkpoint_skips_truncated_and_foreign_files(tmp_path):
    from mic.training import latest_checkpoint, save_checkpoint

    state = {"step": 1, "w": torch.randn(64, 64)}
    good = save_checkpoint(state, tmp_path / "iter_00000001.pt")
    data = good.read_bytes()
    (tmp_path / "iter_00000002.pt").write_bytes(data[: len(data) // 2])  # a crash mid-copy
    torch.save({"w": torch.zeros(1)}, tmp_path / "iter_00000003.pt")  # not ours: no marker
    assert latest_checkpoint(tmp_path) == good
    assert latest_checkpoint(tmp_path / "empty") is None


def test_a_checkpoint_whose_bytes_changed_is_named_and_skipped_by_resume(tmp_path):
    """A flipped bit inside a tensor leaves a file torch.load reads, with wrong values: the
    checksum stored with each part of the archive names it."""
    from mic.resume import find_resume_checkpoint
    from mic.training import latest_checkpoint, load_checkpoint, save_checkpoint
    from mic.training.checkpoint import initial_weights

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    state = {"step": 1, "student": {"w": torch.randn(64, 64)}}
    good = save_checkpoint(state, folder / "iter_00000001.pt")
    changed = save_checkpoint({**state, "step": 2}, folder / "iter_00000002.pt")
    changed.write_bytes(changed_bytes(changed))
    read = torch.load(changed, weights_only=True)  # what torch alone makes of it: wrong values
    assert read["step"] == 2 and not torch.equal(read["student"]["w"], state["student"]["w"])
    with pytest.raises(CheckpointError, match="no longer matches the checksum stored with it"):
        load_checkpoint(changed)
    assert load_checkpoint(changed, verify=False)["step"] == 2  # (a look at its iteration)
    assert latest_checkpoint(folder) == good
    assert find_resume_checkpoint("auto", tmp_path) == good  # resume=auto: the intact one
    with pytest.raises(ConfigError, match=r"is corrupt: its part .* no longer matches"):
        initial_weights(changed)  # init_from
    assert torch.equal(load_checkpoint(good)["student"]["w"], state["student"]["w"])


@pytest.mark.parametrize("flip", [0x01, 0x80])
def test_a_checkpoint_whose_part_header_changed_is_named(tmp_path, flip):
    """A changed byte in a part's name (torch reads the file still): 0x80 makes the name no
    UTF-8, which once turned the whole check off, so that a changed tensor loaded too."""
    import zipfile

    from mic.training import load_checkpoint, save_checkpoint

    path = save_checkpoint({"step": 1, "w": torch.randn(64, 64)}, tmp_path / "iter_00000001.pt")
    with zipfile.ZipFile(path) as archive:
        second = archive.infolist()[1]  # (data.pkl first)
    data = bytearray(path.read_bytes())
    data[second.header_offset + 30 + 2] ^= flip  # the third byte of its name
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["step"] == 1
    said = "no longer matches the checksum" if flip == 0x01 else "a part's header can no longer"
    with pytest.raises(CheckpointError, match=said):
        load_checkpoint(path)


def test_resume_of_a_run_folder_names_the_newer_checkpoints_it_skips(tmp_path):
    """resume=<run folder> took the newest intact checkpoint in silence; resume=auto, and a
    best.pt whose bytes changed, are judged alike."""
    from mic.resume import find_resume_checkpoint
    from mic.training import save_checkpoint
    from mic.training.checkpoint import initial_weights_file

    folder = tmp_path / "run" / "checkpoints"
    good = save_checkpoint({"step": 1, "w": torch.randn(64, 64)}, folder / "iter_00000001.pt")
    changed = save_checkpoint({"step": 2, "w": torch.randn(64, 64)}, folder / "iter_00000002.pt")
    changed.write_bytes(changed_bytes(changed))
    with pytest.warns(
        UserWarning, match=r"resume=.*run: the newer checkpoint iter_00000002\.pt"
    ) as said:
        assert find_resume_checkpoint(str(tmp_path / "run"), tmp_path / "new") == good
    assert str(said[0].message).count(str(tmp_path / "run")) == 1  # the folder named once
    with pytest.warns(UserWarning, match=r"init_from=.*: the newer checkpoint iter_00000002"):
        assert initial_weights_file(tmp_path / "run") == good  # (a run stopped before its end)
    # a best.pt whose bytes changed is no fallback for resume=auto
    good.unlink()
    changed.unlink()
    best = save_checkpoint({"step": 1, "w": torch.randn(64, 64)}, folder / "best.pt")
    best.write_bytes(changed_bytes(best))
    assert find_resume_checkpoint("auto", tmp_path / "run") is None  # nothing to resume
    # ... nor for resume=<run folder>, which says which file it could not read
    with pytest.raises(CheckpointError, match=r"in it \(best\.pt: corrupt, cut off, or changed"):
        find_resume_checkpoint(str(tmp_path / "run"), tmp_path / "new")


def _evaluation_record(step=1, models=("student", "teacher")):
    """A record as ``mic.Evaluation`` emits it."""
    record = {"step": step}
    for i, model in enumerate(models):
        record[f"eval/{model}/protocol"] = "plain"
        record[f"eval/{model}/accuracy"] = 0.5 + 0.1 * i
        record[f"eval/{model}/per_class_accuracy"] = [0.5, 0.5]
    record["summary"] = "[iteration 1] target ..."
    return record


def test_checkpointer_refuses_a_best_metric_the_evaluation_records_lack(tmp_path):
    from mic.training import Checkpointer

    with pytest.raises(ConfigError, match=r"give eval/<model>/<metric>"):
        Checkpointer(tmp_path, best_metric="teacher/accuracy")
    typo = Checkpointer(tmp_path, best_metric="eval/teacher/acuracy")
    typo.on_record(None, {"step": 1, "lr": 0.1})  # not an evaluation record: nothing to check
    with pytest.raises(ConfigError) as info:
        typo.on_record(None, _evaluation_record())
    message = str(info.value)
    assert "best.pt would never be written. Did you mean: eval/teacher/accuracy" in message
    assert "per_class_accuracy" not in message  # not a score best.pt can follow
    # a model the evaluation does not score (a teacher in a run without one): a warning
    unscored = Checkpointer(tmp_path, best_metric="eval/teacher/accuracy")
    with pytest.warns(UserWarning, match=r"does not score the teacher .*eval/student/accuracy"):
        unscored.on_record(None, _evaluation_record(models=("student",)))
    assert not (tmp_path / "best.pt").exists()


def test_a_new_python_run_into_a_folder_of_checkpoints_moves_the_earlier_runs_aside(tmp_path):
    """mic-train refuses such a folder. A Checkpointer of one's own pruned the new run's
    checkpoints and kept the earlier run's later iteration, which latest_checkpoint (and so a
    resume) then took, beside the earlier run's best.pt."""
    import warnings
    from types import SimpleNamespace

    from mic.training import Checkpointer, latest_checkpoint, save_checkpoint

    for name in ("iter_00000030.pt", "best.pt"):  # run A: 30 iterations, keep=1
        save_checkpoint({"step": 30}, tmp_path / name)
    (tmp_path / "student.pt").write_bytes(b"A")
    run_b = Checkpointer(tmp_path, keep=1)
    with pytest.warns(UserWarning, match=r"held checkpoints \(iter_00000030.pt\) of another"):
        run_b.before_run(SimpleNamespace(step=0, hooks=[]))
    aside = tmp_path / "previous_run"
    assert sorted(p.name for p in aside.iterdir()) == [
        "best.pt",
        "iter_00000030.pt",
        "student.pt",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous_run"]
    for step in (2, 4):  # run B's checkpoints are pruned among themselves
        run_b.save(SimpleNamespace(step=step, state_dict=lambda s=step: {"step": s}))
    assert latest_checkpoint(tmp_path) == tmp_path / "iter_00000004.pt"
    assert not (tmp_path / "iter_00000002.pt").exists()
    with warnings.catch_warnings():  # a resumed run continues its own
        warnings.simplefilter("error")
        Checkpointer(tmp_path).before_run(SimpleNamespace(step=4, hooks=[]))
        Checkpointer(tmp_path / "new").before_run(SimpleNamespace(step=0, hooks=[]))
    assert latest_checkpoint(tmp_path) == tmp_path / "iter_00000004.pt"
    save_checkpoint({"step": 9}, tmp_path / "best.pt")  # a third run replaces previous_run/
    with pytest.warns(UserWarning, match=r"\(iter_00000004.pt\) .*\(the run before it, there, rem"):
        Checkpointer(tmp_path).before_run(SimpleNamespace(step=0, hooks=[]))
    assert sorted(p.name for p in aside.iterdir()) == ["best.pt", "iter_00000004.pt"]
    # a finished run's final weights alone (its iter_*.pt deleted) are an earlier run too
    shutil.rmtree(aside)
    for name in ("student.pt", "teacher.pt"):
        (tmp_path / name).write_bytes(b"final")
    with pytest.warns(UserWarning, match=r"held checkpoints \(student.pt, teacher.pt\)"):
        Checkpointer(tmp_path).before_run(SimpleNamespace(step=0, hooks=[]))
    assert sorted(p.name for p in aside.iterdir()) == ["student.pt", "teacher.pt"]


def test_resume_auto_into_final_weights_alone_is_refused_without_announcing_a_new_run(
    tmp_path, caplog
):
    import logging

    from mic.core import ConfigError
    from mic.experiment import refuse_held_folder
    from mic.resume import find_resume_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    with caplog.at_level(logging.INFO, logger="mic"):
        assert find_resume_checkpoint("auto", tmp_path) is None  # an empty folder: a new run
    assert "starting a new run" in caplog.text
    caplog.clear()
    for name in ("student.pt", "teacher.pt"):
        (folder / name).write_bytes(b"final")
    with caplog.at_level(logging.INFO, logger="mic"):
        assert find_resume_checkpoint("auto", tmp_path) is None
    assert "starting a new run" not in caplog.text  # the refusal follows, not a new run
    with pytest.raises(ConfigError, match="holds the final weights of a finished run"):
        refuse_held_folder(tmp_path)


def test_resume_auto_falls_back_to_best_pt_where_no_periodic_checkpoint_can_be_read(tmp_path):
    from mic.resume import find_resume_checkpoint
    from mic.training import save_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert find_resume_checkpoint("auto", tmp_path) is None  # nothing: a new run
    best = save_checkpoint({"step": 100}, folder / "best.pt")
    assert find_resume_checkpoint("auto", tmp_path) == best  # killed before iter_*.pt
    (folder / "iter_00000150.pt").write_bytes(b"cut off")
    assert find_resume_checkpoint("auto", tmp_path) == best  # the only one is corrupt
    good = save_checkpoint({"step": 120}, folder / "iter_00000120.pt")
    assert find_resume_checkpoint("auto", tmp_path) == good  # a periodic one comes first


def test_save_checkpoint_refuses_objects_that_load_checkpoint_could_not_read(tmp_path):
    """A model saved in a checkpoint was written without a word, and its file was then
    called corrupt by load_checkpoint (weights_only)."""
    from torch import nn

    from mic import load_checkpoint, save_checkpoint

    model = nn.Linear(3, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for state, where in (
        ({"model": model}, "state['model'] is a torch.nn.modules.linear.Linear"),
        ({"hooks": [{"best": 1.0}, {"f": len}]}, "state['hooks'][1]['f'] is a builtins."),
        ({"optimizer": optimizer}, "state['optimizer'] is a torch.optim.sgd.SGD"),
    ):
        with pytest.raises(ConfigError, match=re.escape(f"save_checkpoint: {where}")):
            save_checkpoint(state, tmp_path / "x.pt")
        assert not (tmp_path / "x.pt").exists()
    plain = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "n": [1, 2.0]}
    save_checkpoint(plain, tmp_path / "x.pt")
    assert load_checkpoint(tmp_path / "x.pt")["n"] == [1, 2.0]


def test_resume_auto_takes_a_best_pt_newer_than_the_last_periodic_checkpoint(tmp_path):
    """A run with periodic checkpoints every 1000 iterations killed after its best evaluation
    at 1500 resumed from iter_1000 and trained 500 iterations again, best.pt beside it."""
    from mic.resume import find_resume_checkpoint
    from mic.training import save_checkpoint

    folder = tmp_path / "run" / "checkpoints"
    periodic = save_checkpoint({"step": 1000, "w": torch.ones(2)}, folder / "iter_00001000.pt")
    best = save_checkpoint({"step": 1500, "w": torch.ones(2)}, folder / "best.pt")
    assert find_resume_checkpoint("auto", tmp_path / "run") == best
    assert find_resume_checkpoint(str(tmp_path / "run"), tmp_path / "new") == best  # (alike)
    save_checkpoint({"step": 500, "w": torch.ones(2)}, best)  # an older best: the periodic one
    assert find_resume_checkpoint("auto", tmp_path / "run") == periodic
    best.write_bytes(b"cut")  # a best.pt that cannot be read is no newer checkpoint
    assert find_resume_checkpoint("auto", tmp_path / "run") == periodic
