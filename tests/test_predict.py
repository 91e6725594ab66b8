"""`predict` from a saved checkpoint, for every input modality; bad files give one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from multimodel.config import load_config
from multimodel.predict import PredictError, Predictor
from multimodel.tasks import TASKS, get_task
from multimodel.training.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    data = tmp / "data"
    tasks = ["digits", "numbers_en_de", "grammar_parsing", "numbers_de_en", "numbers_fr_en"]  # two To-English
    if TASKS["speech_numbers"].available(data) is None:
        tasks.append("speech_numbers")
    cfg = load_config("tiny", [f"data.data_dir={str(data)!r}", f"data.tasks={','.join(tasks)}",
                                                     "data.train_size=16", "data.eval_size=4", "train.steps=3"])
    train(cfg, tmp / "run", progress=False, log=lambda _m: None)
    return tmp / "run"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multimodel", "predict", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_predict_image_text_and_parse(run_dir, tmp_path):
    from PIL import Image

    png = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((20, 20)) * 255).astype(np.uint8)).save(png)
    out = _cli(str(run_dir), "--image", str(png), "--beam-size", "1")
    assert out.returncode == 0, out.stderr
    assert "[digits] class:" in out.stdout and "top-5" in out.stdout
    label = out.stdout.split("class:")[1].split()[0]
    assert label in TASKS["digits"].labels

    predictor = Predictor.from_checkpoint(run_dir)
    p = predictor.text("twenty-one", "german", beam_size=2)
    assert p.task == "numbers_en_de" and p.task_token == "To-German" and isinstance(p.output, str)
    assert p.to_json()["tasks"] == ["numbers_en_de"]
    tree = predictor.text("the cat saw a dog .", "parse-tree", beam_size=1)
    assert tree.task == "grammar_parsing" and tree.task_token == "To-Parse-Tree"
    with pytest.raises(PredictError, match="empty"):
        predictor.text("   ", "german")
    with pytest.raises(PredictError, match="To-French"):
        predictor.text("one", "french")


def test_text_tasks_sharing_a_token_are_named_together(run_dir):
    """numbers_de_en and numbers_fr_en both decode To-English from text: one computation, no one task claimed."""
    predictor = Predictor.from_checkpoint(run_dir)
    sharing = [t.name for t in predictor.tasks if t.input_modality == "text" and t.task_token == "To-English"]
    assert len(sharing) > 1
    p = predictor.text("einundzwanzig", "english", beam_size=1)
    assert p.task_token == "To-English" and p.tasks == sharing
    assert p.task.startswith("To-English") and all(name in p.task for name in sharing)
    assert p.to_json()["tasks"] == sharing and p.to_json()["task"] == p.task
    for name in sharing:  # each task's own run gives the very same answer
        assert predictor._run(get_task(name), "einundzwanzig", beam_size=1).output == p.output

    out = _cli(str(run_dir), "--text", "einundzwanzig", "--to", "english", "--beam-size", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == f"[{p.task}] {p.output}"


def test_predict_audio(run_dir, tmp_path):
    import soundfile

    predictor = Predictor.from_checkpoint(run_dir)
    if not any(t.input_modality == "audio" for t in predictor.tasks):
        pytest.skip("espeak-ng missing: no speech task in the checkpoint")
    wav = tmp_path / "tone.wav"
    t = np.arange(22050) / 22050
    soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    out = _cli(str(run_dir), "--audio", str(wav), "--beam-size", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("[speech_numbers, To-English]")


def test_unreadable_inputs_give_one_line_errors(run_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    out = _cli(str(run_dir), "--image", str(bad))
    assert out.returncode == 2 and "broken.png" in out.stderr and "Traceback" not in out.stderr
    missing = _cli(str(run_dir), "--audio", str(tmp_path / "nope.wav"))
    assert missing.returncode == 2 and "nope.wav" in missing.stderr
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEjunk")
    out = _cli(str(run_dir), "--audio", str(corrupt))
    assert out.returncode == 2 and "corrupt.wav" in out.stderr


def test_to_names_a_task_token_and_task_picks_one_task(run_dir):
    from multimodel.predict import target_name, target_token

    assert [target_token(t) for t in ("german", "parse-tree", "spanish", "To-Spanish")] == [
        "To-German", "To-Parse-Tree", "To-Spanish", "To-Spanish"]
    assert [target_name(t) for t in ("To-German", "To-Parse-Tree", "To-Spanish")] == ["german", "parse-tree", "spanish"]
    predictor = Predictor.from_checkpoint(run_dir)
    with pytest.raises(PredictError, match="no text task with token To-Spanish; --to can be english, german,"):
        predictor.text("twenty-one", "spanish")
    p = predictor.text("twenty-one", "german", task="numbers_fr_en")  # --task wins over --to
    assert (p.task, p.task_token, p.tasks) == ("numbers_fr_en", "To-English", None)
    with pytest.raises(PredictError, match="task digits reads image, not text"):
        predictor.text("twenty-one", "german", task="digits")
    with pytest.raises(PredictError, match="this checkpoint has no task nope; its tasks: digits"):
        predictor.image(np.zeros((1, 8, 8), dtype=np.float32), task="nope")
    assert [p.task for p in predictor.image(np.zeros((1, 8, 8), dtype=np.float32), task="digits")] == ["digits"]


def test_beam_search_uses_the_run_s_length_penalty(run_dir, monkeypatch):
    """Predictions decode as the run's evaluation did: with its train.length_penalty (the
    paper's 0.6 for a model saved without a config)."""
    from dataclasses import replace

    predictor = Predictor.from_checkpoint(run_dir)
    assert predictor.length_penalty == predictor.config.train.length_penalty == 0.6
    config = replace(predictor.config, train=replace(predictor.config.train, length_penalty=1.3))
    changed = Predictor(predictor.model, predictor.tokenizer, predictor.tasks, config)
    seen = []
    original = changed.model.generate
    monkeypatch.setattr(changed.model, "generate", lambda *a, **k: seen.append(k["length_penalty"]) or original(*a, **k))
    changed.from_text("twenty-one", "german", beam_size=2)
    assert seen == [1.3]
    assert Predictor(predictor.model, predictor.tokenizer, predictor.tasks).length_penalty == 0.6
