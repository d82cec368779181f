import pytest
import torch


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster, and immune to a busy machine's other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
