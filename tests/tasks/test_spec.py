"""Tasks declared in a config: every worked example of src/multimodel/configs/examples/ on fixture
data written here in its reader's format (a Hugging Face dataset saved with ``save_to_disk``
included), loaded through ``load_task_data`` beside a built-in task; and the one-line errors
of a spec that cannot work."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from multimodel.config import (
    TASK_INPUT_MODALITIES,
    TASK_METRICS,
    TASK_READERS,
    Config,
    ConfigError,
    DataConfig,
    TaskSpec,
    config_from_dict,
    load_config,
    to_dict,
)
from multimodel.data.batching import TaskStream, example_lengths
from multimodel.data.example import LazyExamples
from multimodel.tasks import TASKS, UnknownTaskError, get_task
from multimodel.tasks.readers import READERS
from multimodel.tasks.spec import all_tasks, complete_declared_tasks, resolve_task, task_specs, tasks_from_specs
from multimodel.tasks.task_data import attach_collators, build_tokenizer, load_task_data

from declared_data import FIXTURES, write_image_folder  # tests/ is on sys.path (conftest.py)

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "multimodel" / "configs" / "examples"


def quiet(_message: str) -> None:
    pass


def example(name: str, data_dir: Path, *overrides: str) -> Config:
    return load_config(EXAMPLES / f"{name}.py", [f"data.data_dir={str(data_dir)!r}", *overrides])


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_every_example_config_has_a_fixture_and_every_reader_an_example():
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(FIXTURES)
    readers = {load_config(EXAMPLES / f"{name}.py").data.declared_tasks[0].reader for name in FIXTURES}
    assert readers == set(TASK_READERS) == set(READERS)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_example_config_reads_its_fixture_beside_a_builtin_task(name, tmp_path):
    cfg = example(name, tmp_path)
    (spec,) = cfg.data.declared_tasks
    builtin = [t for t in cfg.data.tasks if t != spec.name]
    assert spec.name in cfg.data.tasks and builtin and all(t in TASKS for t in builtin)
    expect = FIXTURES[name](tmp_path)

    task = resolve_task(spec.name, cfg)
    assert get_task(spec.name, cfg).spec == task.spec and set(all_tasks(cfg)) == set(TASKS) | {spec.name}
    assert task.input_modality == expect["input"] and task.spec is not None
    if "labels" in expect:
        assert task.labels == expect["labels"] and task.target_modality == f"class_label:{len(expect['labels'])}"
    else:
        assert task.target_modality == "text" and task.task_token in cfg.model.task_tokens

    td = load_task_data(cfg, names=[spec.name], log=quiet)[spec.name]
    assert (len(td.train), len(td.test)) == (expect["train"], expect["test"])
    first = td.train[0]
    expected_input, expected_target = expect["first"]
    assert first.target == expected_target and first.references[0] == expected_target
    if task.input_modality == "text":
        assert first.inputs == expected_input
    elif task.input_modality == "image":
        assert first.inputs.shape == (3, *spec.image_size) == task.input_shape and first.inputs.dtype == np.float32
        assert 0.0 <= first.inputs.min() <= first.inputs.max() <= 1.0
    else:  # a mono waveform at model.audio_sample_rate
        assert first.inputs.shape == (expected_input,) and first.inputs.dtype == np.float32

    # The examples batch like a built-in task's (the modality's input contract).
    tokenizer = build_tokenizer(cfg, {spec.name: td})
    attach_collators(cfg, {spec.name: td}, tokenizer, log=quiet)
    batch = td.collate([td.train[i] for i in range(2)])
    rank = {"text": 2, "image": 4, "audio": 2}[task.input_modality]
    assert batch.inputs.dim() == rank and batch.inputs.shape[0] == 2
    assert batch.targets.shape[0] == 2 and (batch.targets.dim() == 1) == task.is_classification


def test_declared_and_builtin_tasks_load_together(tmp_path):
    write_image_folder(tmp_path)
    cfg = example("image_folder", tmp_path, "data.tasks=my_images,digits", "data.train_size=16",
                  "data.eval_size=4", "data.task_sizes={'my_images': 0}")
    data = load_task_data(cfg, log=quiet)
    assert list(data) == ["my_images", "digits"]
    assert len(data["my_images"].train) == 6 and len(data["digits"].train) == 16


# ----------------------------------------------------------------------------------------
# large corpora: nothing decoded before a batch needs it


@pytest.mark.parametrize("name", ["image_folder", "coco_captions", "librispeech", "audio_manifest", "hf_images",
                                  "hf_speech"])
def test_media_is_decoded_only_when_a_batch_needs_it(name, tmp_path, monkeypatch):
    cfg = example(name, tmp_path)
    FIXTURES[name](tmp_path)
    (spec,) = cfg.data.declared_tasks
    td = load_task_data(cfg, names=[spec.name], log=quiet)[spec.name]
    assert isinstance(td.train, LazyExamples)
    reads = []
    original = td.train._read
    monkeypatch.setattr(td.train, "_read", lambda i: reads.append(i) or original(i))
    tokenizer = build_tokenizer(cfg, {spec.name: td})
    attach_collators(cfg, {spec.name: td}, tokenizer, log=quiet)
    stream = TaskStream(spec.name, td.train, td.collate, batch_size=2, seed=0)
    assert reads == []  # vocabulary, length checks and length buckets read no image or audio
    stream.next_batch()
    assert len(reads) == 2
    decoded = [td.train[i] for i in range(len(td.train))]
    expected = [0 if x.inputs.ndim == 3 else len(x.inputs) for x in decoded]
    assert example_lengths(td.train).tolist() == expected


@pytest.mark.parametrize("name", ["image_folder", "coco_captions", "librispeech", "audio_manifest"])
def test_lazy_and_eager_reading_give_the_same_examples(name, tmp_path):
    cfg = example(name, tmp_path)
    FIXTURES[name](tmp_path)
    (spec,) = cfg.data.declared_tasks
    eager_spec = dataclasses.replace(spec, lazy=False)
    eager_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, declared_tasks=(eager_spec,)))
    lazy = load_task_data(cfg, names=[spec.name], log=quiet)[spec.name]
    eager = load_task_data(eager_cfg, names=[spec.name], log=quiet)[spec.name]
    assert isinstance(eager.train, list) and len(eager.train) == len(lazy.train)
    for a, b in zip(eager.train, lazy.train):
        assert a.target == b.target and np.array_equal(a.inputs, b.inputs)


def test_lazy_examples_slice_and_subset_without_decoding():
    reads = []
    examples = LazyExamples(5, lambda i: reads.append(i) or i, lengths=[5, 4, 3, 2, 1])
    view = examples[1:4]
    assert isinstance(view, LazyExamples) and len(view) == 3 and reads == []
    assert view.lengths.tolist() == [4, 3, 2] and view.subset([2, 0]).lengths.tolist() == [2, 4]
    assert [view[i] for i in range(3)] == [1, 2, 3] and view[-1] == 3 and list(view) == [1, 2, 3]


# ----------------------------------------------------------------------------------------
# Hugging Face datasets: formats, columns, offline


def _hf_spec(paths, **fields) -> Config:
    spec = TaskSpec(name="mine", reader="hf_dataset", paths=paths, **fields)
    return Config(data=DataConfig(tasks=("mine",), declared_tasks=(spec,)))


def _with_dir(cfg: Config, data_dir: Path) -> Config:
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(data_dir)))


def test_hf_jsonl_with_string_labels_and_a_bare_arrow_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    for split, rows in (("train", [("good film", "pos"), ("bad film", "neg"), ("fine", "pos")]),
                        ("test", [("awful", "neg")])):
        with open(tmp_path / f"{split}.jsonl", "w") as out:
            out.writelines(json.dumps({"sentence": s, "sentiment": y}) + "\n" for s, y in rows)
    cfg = _with_dir(_hf_spec({"train": "train.jsonl", "test": "test.jsonl"}, columns={"input": "sentence",
                    "target": "sentiment"}, input_modality="text", target_modality="class_label"), tmp_path)
    task = resolve_task("mine", cfg)
    assert task.labels == ("neg", "pos") and task.target_modality == "class_label:2" and task.task_token is None
    td = load_task_data(cfg, log=quiet)["mine"]
    assert [(e.inputs, e.target) for e in td.train] == [("good film", 1), ("bad film", 0), ("fine", 1)]
    assert (tmp_path / "hf_cache").is_dir()  # the Arrow form is kept under data.data_dir

    datasets.Dataset.from_dict({"en": ["one", "two"], "de": ["eins", "zwei"]}).save_to_disk(str(tmp_path / "saved"))
    (arrow,) = (tmp_path / "saved").glob("*.arrow")
    cfg = _with_dir(_hf_spec({"train": str(arrow), "test": str(arrow)}, columns={"input": "en", "target": "de"},
                             input_modality="text", target_modality="text", task_token="To-German"), tmp_path)
    assert [(e.inputs, e.target) for e in load_task_data(cfg, log=quiet)["mine"].test] == [("one", "eins"),
                                                                                          ("two", "zwei")]


def test_hf_hub_name_says_to_fetch_it_beforehand(tmp_path):
    cfg = _with_dir(_hf_spec({"train": "librispeech_asr", "test": "librispeech_asr"},
                             columns={"input": "audio", "target": "text"}, input_modality="audio",
                             target_modality="text", task_token="To-English"), tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_task_data(cfg, log=quiet)
    message = one_line(error)
    assert "data.declared_tasks.mine.paths.train" in message and "fetched beforehand" in message
    assert "save_to_disk" in message


def test_hf_without_datasets_names_the_extra(tmp_path, monkeypatch):
    from multimodel.corpora.hf_dataset import import_datasets
    from multimodel.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"multimodel\[hf\]"):
        import_datasets()


def test_hf_reading_is_offline():
    import os

    from multimodel.corpora.hf_dataset import import_datasets

    datasets = pytest.importorskip("datasets")
    assert import_datasets() is datasets
    assert os.environ["HF_DATASETS_OFFLINE"] == "1" and datasets.config.HF_DATASETS_OFFLINE


# ----------------------------------------------------------------------------------------
# specs in the config, and rebuilding declared tasks without their data


def test_declared_tasks_round_trip_through_the_config_dict(tmp_path):
    cfg = example("hf_images", tmp_path)
    data = json.loads(json.dumps(to_dict(cfg)))  # as a checkpoint stores it
    assert config_from_dict(data) == cfg


def test_completed_specs_rebuild_the_task_without_its_data(tmp_path):
    write_image_folder(tmp_path / "data")
    cfg = example("image_folder", tmp_path / "data")
    task = resolve_task("my_images", cfg)
    saved = json.loads(json.dumps(task_specs([task, TASKS["digits"]])))
    assert list(saved) == ["my_images"] and saved["my_images"]["labels"] == ["cat", "dog", "fox"]
    completed = complete_declared_tasks(cfg)
    assert completed.data.declared_tasks[0].target_modality == "class_label:3"

    elsewhere = _with_dir(cfg, tmp_path / "nothing-here")
    rebuilt = tasks_from_specs(saved, elsewhere)["my_images"]
    assert (rebuilt.labels, rebuilt.target_modality, rebuilt.input_shape) == (task.labels, "class_label:3",
                                                                               (3, 64, 64))
    assert resolve_task("my_images", _with_dir(completed, tmp_path / "nothing-here")).labels == task.labels
    assert rebuilt.available(tmp_path / "nothing-here") is not None


def test_config_constants_match_the_catalogues():
    from multimodel.evaluation import evaluate
    from multimodel.modalities import MODALITIES

    assert set(TASK_INPUT_MODALITIES) | {"class_label"} <= set(MODALITIES)
    for metric in TASK_METRICS["text"]:
        assert metric in evaluate._score(metric, ["(S NN )"], [["(S NN )"]])


# ----------------------------------------------------------------------------------------
# one-line errors naming the field


def test_mistyped_spec_field_names_it(tmp_path):
    data = to_dict(example("coco_captions", tmp_path))
    data["data"]["declared_tasks"][0]["colums"] = {"input": "image"}
    with pytest.raises(ConfigError) as error:
        config_from_dict(data)
    assert one_line(error).startswith("unknown config key data.declared_tasks[0].colums;")

    preset = tmp_path / "mine.py"
    preset.write_text("from multimodel.config import Config, DataConfig, TaskSpec\n"
                      "CONFIG = Config(data=DataConfig(declared_tasks=(TaskSpec(name='x', reader='ptb',"
                      " paths={'train': 'a', 'test': 'a'}, colums={}),)))\n")
    with pytest.raises(ConfigError) as error:
        load_config(preset)
    message = one_line(error)
    assert message.startswith(f"{preset}, line 2: TaskSpec() got an unexpected keyword argument 'colums'")
    assert "did you mean 'columns'?" in message and "the fields of TaskSpec are: name, reader, paths" in message


def test_other_errors_of_a_preset_stay_as_they_are(tmp_path):
    preset = tmp_path / "mine.py"
    preset.write_text("CONFIG = len(3)\n")
    with pytest.raises(TypeError, match="has no len"):
        load_config(preset)


def test_missing_path_names_the_field(tmp_path):
    cfg = example("image_folder", tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_task_data(cfg, names=["my_images"], log=quiet)
    message = one_line(error)
    assert message.startswith("task my_images: data.declared_tasks.my_images.paths.train:")
    assert str(tmp_path / "my_images" / "train") in message


@pytest.mark.parametrize("name, role, wrong", [("hf_images", "target", "label"), ("hf_speech", "input", "sound"),
                                               ("hf_parquet_text", "target", "translation.fr"),
                                               ("audio_manifest", "input", "wav")])
def test_missing_column_names_the_field(name, role, wrong, tmp_path):
    FIXTURES[name](tmp_path)
    cfg = example(name, tmp_path)
    (spec,) = cfg.data.declared_tasks
    bad = dataclasses.replace(spec, columns={**spec.columns, role: wrong})
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, declared_tasks=(bad,)))
    with pytest.raises(ConfigError) as error:
        load_task_data(cfg, names=[spec.name], log=quiet)
    assert one_line(error).startswith(f"data.declared_tasks.{spec.name}.columns.{role}:")
    assert repr(wrong) in str(error.value)


SPEC = {"name": "mine", "reader": "coco_captions", "paths": {"train": "coco", "test": "coco"}}


@pytest.mark.parametrize("change, field, needle", [
    ({"reader": "cocoo"}, "reader", "must be one of parallel_text"),
    ({"paths": {"train": "coco"}}, "paths", "keys 'train' and 'test'"),
    ({"target_modality": "class_label", "task_token": "To-English"}, "task_token", "None for a classification"),
    ({"target_modality": "class_label:3", "labels": ("a", "b")}, "labels", "3 names"),
    ({"input_modality": "video"}, "input_modality", "one of text, image, audio"),
    ({"metrics": ("accuracy",), "target_modality": "text", "task_token": "To-English"}, "metrics", "one of bleu"),
    ({"image_size": (0, 64)}, "image_size", "values >= 1"),
])
def test_spec_errors_at_config_time(change, field, needle):
    with pytest.raises(ConfigError) as error:
        config_from_dict({"data": {"declared_tasks": [{**SPEC, **change}]}})
    message = one_line(error)
    assert message.startswith(f"data.declared_tasks.mine.{field} must be") and needle in message


@pytest.mark.parametrize("change, field, needle", [
    ({"name": "digits"}, "digits.name", "built-in task's name"),
    ({"target_modality": "class_label", "labels": ("a", "b")}, "mine.target_modality",
     "must be 'text' for reader coco_captions"),
    ({"input_modality": "audio", "task_token": "To-English"}, "mine.input_modality", "must be 'image'"),
    ({"columns": {"input": "image"}}, "mine.columns.input", "takes no columns"),
    ({"reader": "image_folder", "task_token": "To-English"}, "mine.task_token", "None for a classification target"),
    ({"reader": "parallel_text", "task_token": "To-German"}, "mine.paths.train", "2 paths"),
    ({"reader": "parallel_text", "paths": {"train": ("a", "b"), "test": ("c", "d")}}, "mine.task_token",
     "must be set for a text target"),
    ({"reader": "hf_dataset", "input_modality": "text", "target_modality": "text", "task_token": "To-German"},
     "mine.columns", "must name the 'input' column"),
    ({"reader": "hf_dataset", "columns": {"input": "a", "target": "b"}}, "mine.input_modality", "must be set"),
])
def test_spec_errors_when_the_task_is_resolved(change, field, needle):
    cfg = config_from_dict({"data": {"declared_tasks": [{**SPEC, **change}], "tasks": [change.get("name", "mine")]}})
    with pytest.raises(ConfigError) as error:
        load_task_data(cfg, log=quiet)
    message = one_line(error)
    assert message.startswith(f"data.declared_tasks.{field} ") and needle in message


def test_task_token_outside_the_model_and_unknown_task_names(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_from_dict({"data": {"declared_tasks": [{**SPEC, "task_token": "To-Klingon"}]}})
    assert "data.declared_tasks.mine.task_token must be one of model.task_tokens" in one_line(error)
    cfg = example("coco_captions", tmp_path)
    with pytest.raises(UnknownTaskError, match="known tasks: .*digits.*my_coco"):
        resolve_task("my_cocoo", cfg)
    with pytest.raises(ValueError, match=r"data.task_sizes names unknown tasks \['my_cocoo'\]"):
        load_task_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task_sizes={"my_cocoo": 1})),
                       log=quiet)
