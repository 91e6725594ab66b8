"""Fixture data for tasks declared in a config: one writer per worked example of
src/multimodel/configs/examples/, writing tiny data in its reader's format at the paths the
example names (under the folder given, the run's ``data.data_dir``). Each returns what its
reader should find there.

Shared by tests/tasks/test_spec.py (the readers) and tests/tasks/test_declared_cli.py (train,
eval, predict and serve through the command line)."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest



def save_image(path: Path, size=(20, 14), color=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def png_bytes(size=(20, 14), color=(30, 200, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def tone(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def write_audio(path: Path, seconds: float) -> Path:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(seconds), 16_000)
    return path


def wav_bytes(seconds: float) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, tone(seconds), 16_000, format="WAV")
    return buffer.getvalue()


def write_parallel(root: Path) -> dict:
    folder = root / "my_parallel"
    folder.mkdir(parents=True)
    for name, text in (("train.en.gz", "the house\na red car\nthree dogs\n"),
                       ("train.es.gz", "la casa\nun coche rojo\ntres perros\n")):
        with gzip.open(folder / name, "wt", encoding="utf-8") as handle:
            handle.write(text)
    (folder / "test.en").write_text("the car\n")
    (folder / "test.es").write_text("el coche\n")
    return {"train": 3, "test": 1, "input": "text", "first": ("the house", "la casa")}


MRG = """\
( (S
    (NP-SBJ (DT The) (NN cat) )
    (VP (VBD sat) )
    (. .) ))
"""


def write_ptb(root: Path) -> dict:
    (root / "treebank_sample").mkdir(parents=True)
    with zipfile.ZipFile(root / "treebank_sample" / "treebank.zip", "w") as archive:
        archive.writestr("treebank/combined/wsj_0001.mrg", MRG + MRG)
        archive.writestr("treebank/combined/wsj_0175.mrg", MRG)
    return {"train": 2, "test": 1, "input": "text", "first": ("The cat sat .", "(S (NP DT NN ) (VP VBD ) . )")}


def write_coco(root: Path) -> dict:
    for split, count in (("train", 2), ("val", 1)):
        images = [{"id": i + 1, "file_name": f"{split}_{i}.jpg"} for i in range(count)]
        for image in images:
            save_image(root / "coco" / f"{split}2017" / image["file_name"])
        captions = [{"id": 10 * i + j, "image_id": i + 1, "caption": f"A red square  number {i} view {j}."}
                    for i in range(count) for j in range(2)]
        path = root / "coco" / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": captions}))
    # per_caption=True: one training example per caption; the test split one per image
    return {"train": 4, "test": 1, "input": "image", "first": (None, "A red square number 0 view 0.")}


def write_image_folder(root: Path) -> dict:
    for split, per_class in (("train", 2), ("val", 1)):
        for name, color in (("cat", (200, 0, 0)), ("dog", (0, 0, 200)), ("fox", (0, 200, 0))):
            for i in range(per_class):
                save_image(root / "my_images" / split / name / f"{i}.png", color=color)
    return {"train": 6, "test": 3, "input": "image", "first": (None, 0), "labels": ("cat", "dog", "fox")}


def write_librispeech(root: Path) -> dict:
    for subset, lines in (("train-clean-100", ("19-198-0000 NORTHANGER ABBEY", "19-198-0001 THIS LITTLE WORK")),
                          ("dev-clean", ("84-121-0000 GO DO YOU HEAR",))):
        speaker, chapter = lines[0].split("-")[:2]
        folder = root / "LibriSpeech" / subset / speaker / chapter
        for i, line in enumerate(lines):
            write_audio(folder / f"{line.split()[0]}.flac", seconds=0.1 + 0.05 * i)
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return {"train": 2, "test": 1, "input": "audio", "first": (1600, "northanger abbey")}


def write_manifest(root: Path) -> dict:
    folder = _mkdir(root / "my_speech")
    for split, texts in (("train", ("Hello World", "Good  Morning")), ("test", ("Good night",))):
        lines = []
        for i, text in enumerate(texts):
            write_audio(folder / "wav" / f"{split}{i}.wav", seconds=0.1 + 0.05 * i)
            lines.append(json.dumps({"path": f"wav/{split}{i}.wav", "transcript": text, "speaker": "me"}) + "\n")
        (folder / f"{split}.jsonl").write_text("".join(lines))
    return {"train": 2, "test": 1, "input": "audio", "first": (1600, "hello world")}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_hf_images(root: Path) -> dict:
    datasets = pytest.importorskip("datasets")
    splits = {}
    for split, labels in (("train", [0, 1, 2, 1]), ("validation", [0]), ("test", [2, 0])):
        table = datasets.Dataset.from_dict({"image": [{"bytes": png_bytes(), "path": None} for _ in labels],
                                            "labels": labels})
        splits[split] = (table.cast_column("image", datasets.Image())
                         .cast_column("labels", datasets.ClassLabel(names=["angular", "bean_rust", "healthy"])))
    datasets.DatasetDict(splits).save_to_disk(str(root / "beans"))
    return {"train": 4, "test": 2, "input": "image", "first": (None, 0),
            "labels": ("angular", "bean_rust", "healthy")}


def write_hf_speech(root: Path) -> dict:
    datasets = pytest.importorskip("datasets")
    splits = {}
    for split, texts in (("train.100", ["CHAPTER ONE", "MISSUS RACHEL"]), ("validation", ["THE END"])):
        table = datasets.Dataset.from_dict({
            "audio": [{"bytes": wav_bytes(0.1 + 0.05 * i), "path": None} for i in range(len(texts))],
            "text": texts, "speaker_id": list(range(len(texts)))})
        splits[split] = table.cast_column("audio", datasets.Audio(sampling_rate=16_000))
    datasets.DatasetDict(splits).save_to_disk(str(root / "librispeech_asr"))
    return {"train": 2, "test": 1, "input": "audio", "first": (1600, "chapter one")}


def write_hf_parquet_text(root: Path) -> dict:
    datasets = pytest.importorskip("datasets")
    folder = _mkdir(root / "wmt14" / "de-en")
    shards = {"train-00000-of-00002": [("a house", "ein Haus")], "train-00001-of-00002": [("two cats", "zwei Katzen")],
              "test-00000-of-00001": [("a cat", "eine Katze")]}
    for name, pairs in shards.items():
        datasets.Dataset.from_dict({"translation": [{"en": en, "de": de} for en, de in pairs]}).to_parquet(
            str(folder / f"{name}.parquet"))
    return {"train": 2, "test": 1, "input": "text", "first": ("a house", "ein Haus")}


FIXTURES = {
    "parallel_text": write_parallel,
    "ptb_treebank": write_ptb,
    "coco_captions": write_coco,
    "image_folder": write_image_folder,
    "librispeech": write_librispeech,
    "audio_manifest": write_manifest,
    "hf_images": write_hf_images,
    "hf_speech": write_hf_speech,
    "hf_parquet_text": write_hf_parquet_text,
}
