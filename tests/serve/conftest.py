"""A tiny checkpoint covering every panel of the web demo, and inputs to send it.

The checkpoint is the tiny preset trained for 4 steps on one task per panel (class and
caption for images, speech, parsing, translation), so its outputs are noise: the tests check
the plumbing, not the answers. Under pytest-xdist the workers share one checkpoint (a file
lock guards the training). A task whose data cannot be had here (no espeak-ng, no
Fashion-MNIST) is left out, and the tests of its panel skip with the reason.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

PANEL_TASKS = ("digits", "fashion_captions", "speech_numbers", "grammar_parsing", "numbers_en_de")


@dataclass
class TinyCheckpoint:
    run_dir: Path
    tasks: list[str]  # trained
    missing: dict[str, str]  # task → why its data is missing

    def require(self, task: str) -> None:
        if task in self.missing:
            pytest.skip(f"{task} not trained: {self.missing[task]}")


@pytest.fixture(scope="session")
def tiny_checkpoint(shared_tmp_dir: Path) -> TinyCheckpoint:
    from filelock import FileLock

    from multimodel.config import load_config
    from multimodel.tasks import get_task
    from multimodel.training.train import train

    root = shared_tmp_dir / "serve-checkpoint"
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        summary = root / "summary.json"
        if not summary.exists():
            data_dir = root / "data"
            missing = {name: msg for name in PANEL_TASKS if (msg := get_task(name).available(data_dir))}
            tasks = [name for name in PANEL_TASKS if name not in missing]
            cfg = load_config("tiny", [
                f"data.tasks={','.join(tasks)}", "data.train_size=16", "data.eval_size=4", "train.steps=4",
                f"data.data_dir='{data_dir}'"])
            train(cfg, root / "run", progress=False, log=lambda m: None)
            summary.write_text(json.dumps({"tasks": tasks, "missing": missing}))
        saved = json.loads(summary.read_text())
    return TinyCheckpoint(root / "run", saved["tasks"], saved["missing"])


@pytest.fixture(scope="session")
def predictor(tiny_checkpoint: TinyCheckpoint):
    from multimodel.predict import Predictor

    return Predictor.from_checkpoint(tiny_checkpoint.run_dir)


def png_bytes(size: tuple[int, int] = (40, 30), mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """An image of random pixels, encoded as ``fmt``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(out, fmt)
    return out.getvalue()


def wav_bytes(seconds: float = 1.0, rate: int = 16000, fmt: str = "WAV") -> bytes:
    """A 440 Hz tone."""
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    soundfile.write(out, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="session")
def make_png():
    return png_bytes


@pytest.fixture(scope="session")
def make_wav():
    return wav_bytes
