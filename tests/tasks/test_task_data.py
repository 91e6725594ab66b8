"""Which held-out examples each task is evaluated on: data.eval_size, data.eval_sizes, the
official Fashion-MNIST test set, and the cheap evaluation during training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multimodel.config import load_config
from multimodel.corpora import fashion_mnist
from multimodel.tasks.task_data import attach_collators, build_tokenizer, load_task_data, modality_specs

HAVE_FASHION = fashion_mnist.available(Path("/nonexistent-data-dir")) is None


def tiny(tmp_path: Path, *overrides: str):
    return load_config("tiny", [f"data.data_dir={str(tmp_path / 'data')!r}", *overrides])


def quiet(_message: str) -> None:
    pass


def test_eval_sizes_override_eval_size_per_task(tmp_path):
    cfg = tiny(tmp_path, "data.tasks=digits", "data.eval_size=8")
    assert len(load_task_data(cfg, splits=("test",), log=quiet)["digits"].test) == 8
    cfg = tiny(tmp_path, "data.tasks=digits", "data.eval_size=8", "data.eval_sizes={'digits': 0}")
    assert len(load_task_data(cfg, splits=("test",), log=quiet)["digits"].test) == 360  # 0 = the whole split
    # A preset's size for a task this run does not select is ignored (`data.tasks=` picks a subset).
    cfg = tiny(tmp_path, "data.tasks=digits", "data.eval_size=8", "data.eval_sizes={'fashion_mnist': 0}",
               "data.task_sizes={'speech_numbers': 5}")
    assert len(load_task_data(cfg, splits=("test",), log=quiet)["digits"].test) == 8
    for key in ("eval_sizes", "task_sizes"):
        cfg = tiny(tmp_path, "data.tasks=digits", f"data.{key}={{'digit': 0}}")
        with pytest.raises(ValueError, match=rf"data.{key} names unknown tasks \['digit'\]; known tasks: .*digits"):
            load_task_data(cfg, splits=("test",), log=quiet)


def test_demo_scores_fashion_mnist_on_its_whole_test_set():
    cfg = load_config("demo")
    assert cfg.data.eval_sizes == {"fashion_mnist": 0} and cfg.data.eval_size == 200


@pytest.mark.skipif(not HAVE_FASHION, reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_eval_is_the_official_10k_test_split_and_no_training_image(tmp_path):
    images_path, labels_path = fashion_mnist.find_files(tmp_path, "test")
    assert images_path.name.startswith("t10k-images") and labels_path.name.startswith("t10k-labels")
    cfg = tiny(tmp_path, "data.tasks=fashion_mnist", "data.eval_sizes={'fashion_mnist': 0}")
    test = load_task_data(cfg, splits=("test",), log=quiet)["fashion_mnist"].test
    assert len(test) == 10_000 and [e.meta["index"] for e in test] == list(range(10_000))
    train_images, _ = fashion_mnist.read_arrays(tmp_path, "train")
    seen = {image.tobytes() for image in train_images}
    pixels = np.rint(np.stack([e.inputs[0] for e in test]) * 255).astype(np.uint8)  # (10000, 28, 28)
    assert not any(image.tobytes() in seen for image in pixels)


def test_evaluation_during_training_keeps_to_eval_size_without_blind_control(tmp_path):
    import torch

    from multimodel.model.multimodel import MultiModel
    from multimodel.evaluation.evaluate import evaluate_all
    from multimodel.training.train import evaluate_during_training

    cfg = tiny(tmp_path, "data.tasks=digits", "data.train_size=16", "data.eval_size=6",
               "data.eval_sizes={'digits': 40}")
    task_data = load_task_data(cfg, log=quiet)
    tokenizer = build_tokenizer(cfg, task_data)
    attach_collators(cfg, task_data, tokenizer)
    torch.manual_seed(0)
    model = MultiModel(cfg.model, tokenizer.vocab_size, modality_specs([td.task for td in task_data.values()]))
    final = evaluate_all(model, task_data, tokenizer, cfg, log=quiet, blind_control=True)[0]
    assert final.num_examples == 40 and {"blind_accuracy", "blind_top5"} <= set(final.metrics)
    first = evaluate_all(model, task_data, tokenizer, cfg, log=quiet, limit=6)[0]
    assert first.num_examples == 6
    record = evaluate_during_training(model, task_data, tokenizer, cfg, step=3, say=quiet)
    assert record["eval/digits/accuracy"] == first.metrics["accuracy"]
    assert not any("blind" in key for key in record)


def test_task_weights_of_unselected_tasks_are_dropped_and_unknown_names_raise(tmp_path):
    from multimodel.tasks.task_data import task_weights

    cfg = tiny(tmp_path, "data.tasks=digits", "train.mixing='weights'",
               "train.task_weights={'digits': 2.0, 'speech_numbers': 1.5}")
    assert task_weights(cfg) == {"digits": 2.0}
    cfg = tiny(tmp_path, "data.tasks=digits", "train.task_weights={'digit': 1.0}")
    with pytest.raises(ValueError, match=r"train.task_weights names unknown tasks \['digit'\]"):
        task_weights(cfg)


def test_loss_multipliers_cover_every_selected_task_and_unknown_names_raise(tmp_path):
    from multimodel.tasks.task_data import loss_multipliers

    cfg = tiny(tmp_path, "data.tasks=digits,numbers_fr_en",
               "train.loss_multipliers={'digits': 0.5, 'speech_numbers': 2.0}")
    assert loss_multipliers(cfg) == {"digits": 0.5, "numbers_fr_en": 1.0}
    cfg = tiny(tmp_path, "data.tasks=digits", "train.loss_multipliers={'digit': 0.5}")
    with pytest.raises(ValueError, match=r"train.loss_multipliers names unknown tasks \['digit'\]"):
        loss_multipliers(cfg)
    with pytest.raises(ValueError, match=r"train.loss_multipliers.digits"):
        tiny(tmp_path, "data.tasks=digits", "train.loss_multipliers={'digits': 0.0}")


def test_task_batch_sizes_cover_every_selected_task_and_bad_entries_raise(tmp_path):
    from multimodel.tasks.task_data import describe_batch_sizes, task_batch_sizes

    cfg = tiny(tmp_path, "data.tasks=digits,numbers_fr_en", "data.batch_size=8",
               "data.task_batch_sizes={'digits': 24, 'speech_numbers': 4}")
    assert task_batch_sizes(cfg) == {"digits": 24, "numbers_fr_en": 8}
    assert describe_batch_sizes(task_batch_sizes(cfg)) == "batches digits 24, numbers_fr_en 8"
    assert describe_batch_sizes({"digits": 8, "numbers_fr_en": 8}) == "batch 8"
    cfg = tiny(tmp_path, "data.tasks=digits", "data.task_batch_sizes={'digit': 24}")
    with pytest.raises(ValueError, match=r"data.task_batch_sizes names unknown tasks \['digit'\]"):
        task_batch_sizes(cfg)
    for bad, says in (("0", "must be >= 1, got 0"), ("2.5", "expected an integer, got 2.5")):
        with pytest.raises(ValueError, match=f"data.task_batch_sizes.digits:? {says}"):
            tiny(tmp_path, "data.tasks=digits", f"data.task_batch_sizes={{'digits': {bad}}}")


def test_inputs_longer_than_max_input_length_are_refused_or_left_out_and_counted(tmp_path):
    from multimodel.tasks.task_data import attach_collators, build_tokenizer

    cfg = tiny(tmp_path, "data.tasks=numbers_en_de", "data.train_size=40", "data.eval_size=10")
    task_data = load_task_data(cfg, log=quiet)
    tokenizer = build_tokenizer(cfg, task_data)
    lengths = sorted(len(tokenizer.encode(ex.inputs)) for ex in task_data["numbers_en_de"].train)
    limit = lengths[len(lengths) // 2]  # about half the training inputs are longer
    longer = sum(n > limit for n in lengths)
    assert 0 < longer < len(lengths)
    messages: list[str] = []
    limited = tiny(tmp_path, "data.tasks=numbers_en_de", "data.train_size=40", "data.eval_size=10",
                   f"data.max_input_length={limit}")
    with pytest.raises(ValueError, match=rf"task numbers_en_de train: example \d+ has an input of length \d+ .*"
                                         rf"longer than data.max_input_length={limit}; .*data.skip_bad=true"):
        attach_collators(limited, task_data, tokenizer, log=messages.append)
    limited = tiny(tmp_path, "data.tasks=numbers_en_de", "data.train_size=40", "data.eval_size=10",
                   f"data.max_input_length={limit}", "data.skip_bad=true")
    attach_collators(limited, task_data, tokenizer, log=messages.append)
    td = task_data["numbers_en_de"]
    assert len(td.train) == len(lengths) - longer and td.skipped["train"] == longer
    assert all(len(tokenizer.encode(ex.inputs)) <= limit for ex in td.train + td.test)
    assert any(f"left out {longer} inputs longer than data.max_input_length={limit}" in m for m in messages)
    # Nothing longer: nothing left out, nothing said.
    again = load_task_data(cfg, log=quiet)
    attach_collators(cfg, again, tokenizer, log=messages.append)
    assert len(again["numbers_en_de"].train) == len(lengths) and not again["numbers_en_de"].skipped
