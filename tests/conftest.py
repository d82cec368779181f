import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # README's command: two processes on two cores, each
    os.environ["OMP_NUM_THREADS"] = "1"  # with one thread, and so the mic-train runs they start:
    torch.set_num_threads(1)  # two each oversubscribed the cores (0.2 s iterations took 2 s)


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster, and immune to a busy machine's other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
