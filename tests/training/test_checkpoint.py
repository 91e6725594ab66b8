"""Checkpoints: atomic write, keep-last-N, exact round trip, clear errors on damage."""

import json
from dataclasses import replace

import pytest
import torch

from multimodel.config import config_from_dict, load_config, to_dict
from multimodel.model.multimodel import MultiModel
from multimodel.pretrained import load_pretrained
from multimodel.training import checkpoint as ckpt
from multimodel.training.optim import noam_factor

CONFIG = load_config("tiny", ["data.tasks=numbers_en_de", "model.hidden_size=8"])


def _model(seed: int = 0, **changes) -> MultiModel:
    torch.manual_seed(seed)
    return MultiModel(replace(CONFIG.model, **changes), 20, ["text"])


def _meta(**trainer) -> dict:
    """What the trainer passes: the run's config and tasks, and its own state."""
    return {"config": to_dict(CONFIG), "tasks": ["numbers_en_de"], "modality_specs": ["text"], "vocab_size": 20,
            **trainer}


@pytest.fixture(scope="module")
def tokenizer_bytes() -> bytes:
    from multimodel.data.tokenizer import Tokenizer

    return Tokenizer.train(["eins zwei drei", "one two three"], vocab_size=20).to_bytes()


def _outputs(model: MultiModel) -> torch.Tensor:
    ids = torch.tensor([[3, 4, 5, 1]])
    return model.eval()(ids, None, ids, None, input_modality="text", target_modality="text",
                        task_token="To-German").logits


def test_round_trip_and_keep_last(tmp_path):
    model = _model()
    for step in (10, 20, 30):
        ckpt.save_checkpoint(tmp_path, step, model=model, meta=_meta(x=step), tokenizer_bytes=b"tok",
                             training_state={"rng": ckpt.rng_state()}, keep=2)
    found = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in found] == ["step-0000020", "step-0000030"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    latest = ckpt.resolve_checkpoint(tmp_path)
    meta = ckpt.read_meta(latest)
    assert meta["x"] == 30 and meta["step"] == 30 and meta["tasks"] == ["numbers_en_de"]
    assert config_from_dict(meta["config"]) == CONFIG
    assert meta["vocab_size"] == 20 and meta["modality_specs"] == ["text"]
    other = _model(seed=1)
    ckpt.load_weights(latest, other)
    assert torch.equal(_outputs(model), _outputs(other))


def test_a_checkpoint_is_a_saved_model_plus_the_trainers_files(tmp_path, tokenizer_bytes):
    """The saved model's files, which inference loads without the trainer, and the trainer's beside them."""
    model = _model()
    path = ckpt.save_checkpoint(tmp_path, 5, model=model, meta=_meta(streams={}, task_steps={"numbers_en_de": 5}),
                                tokenizer_bytes=tokenizer_bytes, training_state={"rng": ckpt.rng_state()})
    assert sorted(p.name for p in path.iterdir()) == [
        "README.md", "config.json", "manifest.json", "meta.json", "model.safetensors", "tokenizer.model",
        "training.pt", "training_config.json"]
    assert json.loads((path / "meta.json").read_text()) == {
        "format_version": 3, "step": 5, "streams": {}, "task_steps": {"numbers_en_de": 5}}
    loaded = load_pretrained(tmp_path)
    assert loaded.directory == path and loaded.step == 5 and loaded.config == CONFIG
    assert loaded.tasks == ["numbers_en_de"] and loaded.tokenizer.to_bytes() == tokenizer_bytes
    assert torch.equal(_outputs(model), _outputs(loaded.model))


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    a = torch.rand(3)
    ckpt.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))


def test_damaged_checkpoints_give_clear_errors(tmp_path):
    model = _model()
    path = ckpt.save_checkpoint(tmp_path, 1, model=model, meta=_meta(), tokenizer_bytes=b"", training_state={})
    (path / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors.*corrupt"):
        ckpt.load_weights(path, model)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 999}))
    with pytest.raises(ckpt.CheckpointError, match="format version 999"):
        ckpt.read_meta(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="corrupt JSON"):
        ckpt.read_meta(path)
    (path / "training.pt").write_bytes(b"\x00\x01")
    with pytest.raises(ckpt.CheckpointError, match="training.pt"):
        ckpt.load_training_state(path)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "empty")


def _flip_bytes(path, offset: int = 200, count: int = 16) -> None:
    """Flip ``count`` bytes in the middle of a file: same size, a still-parsable file, other numbers."""
    data = bytearray(path.read_bytes())
    offset = min(offset, len(data) - count)
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "training.pt", "meta.json", "tokenizer.model", "config.json",
                                  "training_config.json"])
def test_flipped_bytes_in_any_file_are_named(tmp_path, name):
    path = ckpt.save_checkpoint(tmp_path, 1, model=_model(), meta=_meta(x=1), tokenizer_bytes=b"t" * 300,
                                training_state={"rng": ckpt.rng_state()})
    ckpt.verify(path)
    _flip_bytes(path / name)
    with pytest.raises(ckpt.CheckpointError, match=rf"{name}: its SHA-256 differs .*checkpoint step-0000001 is damaged"):
        ckpt.verify(path)
    (path / name).write_bytes(b"short")
    with pytest.raises(ckpt.CheckpointError, match=rf"{name}: 5 bytes where the manifest says"):
        ckpt.verify(path)
    (path / name).unlink()
    with pytest.raises(ckpt.CheckpointError, match=rf"{name}: missing"):
        ckpt.verify(path)


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_keeps_it(tmp_path):
    for step in (10, 20, 30):
        ckpt.save_checkpoint(tmp_path, step, model=_model(), meta=_meta(x=step), tokenizer_bytes=b"tok",
                             training_state={}, keep=2)
    _flip_bytes(tmp_path / "step-0000030" / "model.safetensors")
    warnings: list[str] = []
    intact = ckpt.newest_intact(tmp_path, warn=warnings.append)
    assert intact == tmp_path / "step-0000020" and ckpt.read_meta(intact)["x"] == 20
    assert "step-0000030" in warnings[0] and "damaged-step-0000030" in warnings[0]
    assert [p.name for p in ckpt.damaged_checkpoints(tmp_path)] == ["damaged-step-0000030"]
    # The next save must not delete the intact checkpoint in favour of the damaged one.
    ckpt.save_checkpoint(tmp_path, 30, model=_model(), meta=_meta(x=30), tokenizer_bytes=b"tok", keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000020", "step-0000030"]
    _flip_bytes(tmp_path / "step-0000020" / "meta.json")
    _flip_bytes(tmp_path / "step-0000030" / "meta.json")
    assert ckpt.newest_intact(tmp_path, warn=warnings.append) is None


def test_checkpoints_without_a_manifest_still_load(tmp_path):
    """Written before manifests existed: no hash to check, the loaders' own checks remain."""
    path = ckpt.save_checkpoint(tmp_path, 1, model=_model(), meta=_meta(), tokenizer_bytes=b"")
    (path / ckpt.MANIFEST).unlink()
    ckpt.verify(path)
    other = _model()
    ckpt.load_weights(path, other)


def test_stale_temporary_folders_are_removed(tmp_path):
    (tmp_path / ".tmp-step-0000040-1234").mkdir()
    (tmp_path / ".tmp-step-0000040-1234" / "model.safetensors").write_bytes(b"half")
    ckpt.save_checkpoint(tmp_path, 10, model=_model(), meta=_meta(), tokenizer_bytes=b"")
    removed = ckpt.remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".tmp-step-0000040-1234"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000010"]


def test_weights_that_do_not_fit_the_model(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, model=_model(), meta=_meta(), tokenizer_bytes=b"")
    with pytest.raises(ckpt.CheckpointError, match="does not fit"):
        ckpt.load_weights(path, _model(use_moe=False))


def test_noam_schedule_peaks_at_warmup():
    w = 100
    values = [noam_factor(s, w) for s in range(1000)]
    assert max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == w - 1
    assert values[0] == pytest.approx(1 / w)
    assert values[399] == pytest.approx(0.5)  # sqrt(100/400)
