"""Test settings of the modality tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors run faster on one thread, and two pytest-xdist workers on a 2-core machine
    then do not oversubscribe it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
