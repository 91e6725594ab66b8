"""multimodel: MultiModel ("One Model To Learn Them All", Kaiser et al. 2017) in PyTorch.

The public API, each name imported from its module on first use (so ``import multimodel`` stays
cheap, and using one part does not load the others)::

    from multimodel import Config, load_config          # typed configs and the shipped presets
    from multimodel import MultiModel                   # the network
    from multimodel import TASKS, get_task              # the task catalogue
    from multimodel import load_pretrained, save_pretrained, Predictor   # saved models, inference
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "Config": "multimodel.config",
    "load_config": "multimodel.config",
    "MultiModel": "multimodel.model.multimodel",
    "Tokenizer": "multimodel.data.tokenizer",
    "TASKS": "multimodel.tasks",
    "Task": "multimodel.tasks",
    "get_task": "multimodel.tasks",
    "Pretrained": "multimodel.pretrained",
    "load_pretrained": "multimodel.pretrained",
    "save_pretrained": "multimodel.pretrained",
    "Predictor": "multimodel.predict",
    "UserError": "multimodel.errors",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from multimodel.config import Config, load_config
    from multimodel.data.tokenizer import Tokenizer
    from multimodel.errors import UserError
    from multimodel.model.multimodel import MultiModel
    from multimodel.predict import Predictor
    from multimodel.pretrained import Pretrained, load_pretrained, save_pretrained
    from multimodel.tasks import TASKS, Task, get_task


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'multimodel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
