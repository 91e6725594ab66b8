"""Saved models (``multimodel.pretrained``): round trip, integrity, old checkpoints, no trainer needed.

``tests/fixtures/format2-run`` is a training checkpoint written by the code before the
saved-model format (format 2, commit 45cca1a: the tiny preset shrunk to hidden 16 and 2
experts, trained 2 steps on digits and numbers_en_de); ``expected.json`` beside it holds the
outputs that code gave for fixed inputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multimodel.config import config_from_dict, load_config
from multimodel.data.tokenizer import Tokenizer
from multimodel.errors import CheckpointError
from multimodel.model.multimodel import MultiModel
from multimodel.predict import Predictor
from multimodel.pretrained import load_pretrained, read_meta, save_pretrained, verify

REPO = Path(__file__).resolve().parents[1]
OLD_RUN = REPO / "tests" / "fixtures" / "format2-run"
EXPECTED = json.loads((OLD_RUN / "expected.json").read_text())
DIGIT = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)  # the fixture's fixed input


def _old_outputs(model: MultiModel, tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits of the fixed digit and the teacher-forced loss of one translation."""
    logits = model.classify(torch.from_numpy(DIGIT)[None], None, input_modality="image",
                            target_modality="class_label:10")[0]
    src = torch.tensor([tokenizer.encode(EXPECTED["text_input"]) + [Tokenizer.EOS]])
    tgt = torch.tensor([tokenizer.encode(EXPECTED["text_target"]) + [Tokenizer.EOS]])
    with torch.no_grad():
        out = model(src, None, tgt, None, input_modality="text", target_modality="text", task_token="To-German")
    return logits, out.loss.loss


def _tiny_model_and_tokenizer():
    cfg = load_config("tiny", ["data.tasks=digits,numbers_en_de", "model.hidden_size=16",
                               "model.moe.num_experts=2"])
    tokenizer = Tokenizer.train(["twenty-one", "einundzwanzig", "one two three"], vocab_size=40)
    torch.manual_seed(0)
    model = MultiModel(cfg.model, tokenizer.vocab_size, ["class_label:10", "image", "text"]).eval()
    return cfg, model, tokenizer


def test_save_pretrained_round_trip_reproduces_outputs(tmp_path):
    cfg, model, tokenizer = _tiny_model_and_tokenizer()
    out = save_pretrained(tmp_path / "m", model, tokenizer, cfg)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "manifest.json", "model.safetensors", "tokenizer.model", "training_config.json"]
    loaded = load_pretrained(out)
    assert loaded.config == cfg and loaded.tasks == ["digits", "numbers_en_de"] and loaded.step is None
    assert loaded.tokenizer == tokenizer and not loaded.model.training
    assert [t.name for t in loaded.get_tasks()] == loaded.tasks
    for a, b in zip(_old_outputs(model, tokenizer), _old_outputs(loaded.model, loaded.tokenizer)):
        assert torch.equal(a, b)
    again = loaded.save_pretrained(tmp_path / "again")  # an export of what was loaded is the same model
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_damaged_or_unknown_saved_models_are_refused_naming_the_file(tmp_path):
    cfg, model, tokenizer = _tiny_model_and_tokenizer()
    out = save_pretrained(tmp_path / "m", model, tokenizer, cfg)
    weights = bytearray((out / "model.safetensors").read_bytes())
    weights[-20:] = bytes(b ^ 0xFF for b in weights[-20:])
    (out / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match=r"m/model.safetensors: its SHA-256 differs"):
        load_pretrained(out)
    save_pretrained(out, model, tokenizer, cfg)
    saved = json.loads((out / "training_config.json").read_text())
    (out / "training_config.json").write_text(json.dumps({**saved, "format_version": 7}))
    (out / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"training_config.json: format version 7, this multimodel reads"):
        load_pretrained(out)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_pretrained(tmp_path / "nothing")


def test_a_checkpoint_written_before_the_saved_model_format_loads_as_it_was():
    loaded = load_pretrained(OLD_RUN)
    assert loaded.directory == OLD_RUN / "checkpoints" / "step-0000002" and loaded.step == 2
    assert loaded.tasks == ["digits", "numbers_en_de"] and loaded.meta["format_version"] == 2
    logits, loss = _old_outputs(loaded.model, loaded.tokenizer)
    torch.testing.assert_close(logits, torch.tensor(EXPECTED["digits_logits"]))
    torch.testing.assert_close(loss.item(), EXPECTED["numbers_en_de_loss"])
    model = MultiModel.from_pretrained(loaded.directory)
    assert torch.equal(_old_outputs(model, loaded.tokenizer)[0], logits)
    predictor = Predictor.from_checkpoint(OLD_RUN)
    assert predictor.run_task("digits", DIGIT).output == EXPECTED["digits_output"]
    assert predictor.checkpoint_dir == loaded.directory and predictor.config == loaded.config


def test_a_format_1_checkpoint_loads_as_the_model_it_was(tmp_path):
    """Format 1 (before the paper's self-attention, encoder timing signal and class-label net)
    stored no such fields; its model is built as it was then, without them."""
    from dataclasses import replace

    from safetensors.torch import save_file

    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    ckpt = run / "checkpoints" / "step-0000002"
    meta = json.loads((ckpt / "meta.json").read_text())
    legacy = {"self_attention": False, "encoder_timing_signal": False, "class_label_net": "convstep"}
    saved = config_from_dict(meta["config"]).model
    torch.manual_seed(0)
    old = MultiModel(replace(saved, **legacy), meta["vocab_size"], meta["modality_specs"]).eval()
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(ckpt / "model.safetensors"))
    for key in legacy:
        del meta["config"]["model"][key]
    (ckpt / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    (ckpt / "manifest.json").unlink()  # format 1 wrote none
    loaded = load_pretrained(run)
    assert loaded.model.config == old.config and loaded.meta["format_version"] == 1
    assert torch.equal(_old_outputs(loaded.model, loaded.tokenizer)[0], _old_outputs(old, loaded.tokenizer)[0])


def test_resuming_a_format_2_checkpoint_continues_the_run_in_the_new_format(tmp_path):
    from multimodel.config import apply_overrides
    from multimodel.training.train import train

    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    saved = config_from_dict(read_meta(run / "checkpoints" / "step-0000002")["config"])
    cfg = apply_overrides(saved, [f"data.data_dir={str(tmp_path / 'data')!r}", "train.steps=4"])
    result = train(cfg, run, resume=True, progress=False, log=lambda _m: None)
    assert result.step == 4
    newest = run / "checkpoints" / "step-0000004"
    verify(newest)
    meta = read_meta(newest)
    assert meta["format_version"] == 3 and meta["step"] == 4 and sum(meta["task_steps"].values()) == 4
    assert config_from_dict(meta["config"]) == cfg and meta["tasks"] == ["digits", "numbers_en_de"]
    assert load_pretrained(run).step == 4


def test_loading_for_inference_imports_no_training_tensorboard_or_distributed_module():
    """``predict`` and ``load_pretrained`` need the model and its files, never the training loop.
    torch itself imports parts of torch.distributed and torch.nn.parallel; nothing may add to them."""
    script = f"""
import json, sys
import torch
before = set(sys.modules)
import multimodel
assert "multimodel.model" not in sys.modules, "import multimodel must stay cheap"
from multimodel.predict import Predictor
from multimodel.pretrained import load_pretrained
Predictor.from_checkpoint({str(OLD_RUN)!r}).run_task("numbers_en_de", "twenty-one", beam_size=1)
load_pretrained({str(OLD_RUN)!r})
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout.strip().splitlines()[-1])
    forbidden = ("multimodel.training", "tensorboard", "torch.utils.tensorboard", "torch.nn.parallel",
                 "torch.distributed")
    assert not [m for m in added if m.startswith(forbidden) or "distributed" in m], added
    assert "multimodel.predict" in added and "multimodel.pretrained" in added


def test_import_multimodel_exposes_the_public_api_on_first_use():
    script = """
import sys
import multimodel
assert "torch" not in sys.modules and "multimodel.config" not in sys.modules, "import multimodel must stay cheap"
from multimodel import MultiModel, Config, load_config, TASKS, get_task, Predictor, load_pretrained, save_pretrained
from multimodel.model.multimodel import MultiModel as defined
assert MultiModel is defined and load_config("tiny").model.hidden_size == 32 and get_task("digits") is TASKS["digits"]
assert set(multimodel.__all__) <= set(dir(multimodel))
assert not any(m.startswith("multimodel.training") for m in sys.modules)
try:
    multimodel.nothing_here
except AttributeError as err:
    assert "nothing_here" in str(err)
else:
    raise AssertionError("an unknown name must raise AttributeError")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
