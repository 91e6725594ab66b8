"""Fixtures shared by the layer tests."""

import pytest
import torch


def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def two_threads():
    """Two intra-op threads for the test (the suite pins one), restored afterwards."""
    yield from _threads(2)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored afterwards."""
    yield from _threads(1)
