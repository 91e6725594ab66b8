"""Shared tiny model for the body and decoding tests."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from multimodel.config import ModelConfig, load_config
from multimodel.modalities import EXAMPLE_SPECS
from multimodel.model.multimodel import MultiModel

TINY: ModelConfig = load_config("tiny").model
VOCAB = 100
SPECS = list(EXAMPLE_SPECS.values())


def make_model(**overrides) -> MultiModel:
    torch.manual_seed(0)
    return MultiModel(replace(TINY, **overrides), VOCAB, SPECS)


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors run faster on one thread, and two pytest-xdist workers on a 2-core machine
    then do not oversubscribe it (which slowed these tests down ~8×)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> MultiModel:
    return make_model().eval()
