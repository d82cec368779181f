"""The pieces of exact resume: loader positions, sampler positions, generator states."""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from mic import EndlessLoader
from mic.training import ResumableSampler, rng_state, set_rng_state


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


def test_latest_checkpoint_skips_truncated_and_foreign_files(tmp_path):
    from mic.training import latest_checkpoint, save_checkpoint

    state = {"step": 1, "w": torch.randn(64, 64)}
    good = save_checkpoint(state, tmp_path / "iter_00000001.pt")
    data = good.read_bytes()
    (tmp_path / "iter_00000002.pt").write_bytes(data[: len(data) // 2])  # a crash mid-copy
    torch.save({"w": torch.zeros(1)}, tmp_path / "iter_00000003.pt")  # not ours: no marker
    assert latest_checkpoint(tmp_path) == good
    assert latest_checkpoint(tmp_path / "empty") is None
