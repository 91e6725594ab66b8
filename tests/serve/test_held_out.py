"""Held-out examples on the page: from each task's test split, run with one click, shown beside
their reference; what is not here gets a 404 saying what there is, and the page goes on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient

from multimodel.serve import create_app
from multimodel.serve import held_out as held_out_module
from multimodel.serve.held_out import EXAMPLES_PER_TASK, HeldOutExamples
from multimodel.tasks.task_data import load_task_data


@pytest.fixture(scope="module")
def client(predictor, tiny_checkpoint):
    with TestClient(create_app(predictor, checkpoint=str(tiny_checkpoint.run_dir))) as c:
        yield c


@pytest.fixture(scope="module")
def splits(predictor, tiny_checkpoint):
    """Each trained task's train and test split, loaded as the trainer loads them."""
    return load_task_data(predictor.config, tiny_checkpoint.tasks, log=lambda m: None)


def _listing(client) -> dict[str, dict]:
    response = client.get("/api/examples")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["split"] == "test"
    return {t["task"]: t for t in body["tasks"]}


def _key(inputs) -> bytes | str:
    return inputs if isinstance(inputs, str) else np.asarray(inputs, dtype=np.float32).tobytes()


def test_examples_are_the_first_of_each_test_split_and_never_training_data(client, splits, tiny_checkpoint):
    listing = _listing(client)
    assert list(listing) == tiny_checkpoint.tasks
    for name, data in splits.items():
        entry = listing[name]
        assert entry["unavailable"] is None
        expected = list(data.test[:EXAMPLES_PER_TASK])
        assert [e["index"] for e in entry["examples"]] == list(range(len(expected)))
        train = {_key(ex.inputs) for ex in data.train}
        for shown, ex in zip(entry["examples"], expected):
            if isinstance(ex.inputs, str):
                assert shown["input_text"] == ex.inputs
            assert _key(ex.inputs) not in train, f"{name}: a held-out example is in the training split"
        if data.task.is_classification:
            assert [e["reference"] for e in entry["examples"]] == [data.task.labels[ex.target] for ex in expected]
        else:
            assert [e["reference"] for e in entry["examples"]] == [ex.target for ex in expected]


@pytest.mark.parametrize("task", ["digits", "fashion_captions", "speech_numbers", "grammar_parsing",
                                  "numbers_en_de"])
def test_running_an_example_gives_the_prediction_beside_its_reference(client, splits, tiny_checkpoint, task):
    tiny_checkpoint.require(task)
    response = client.post(f"/api/examples/{task}/1")
    assert response.status_code == 200, response.text
    body = response.json()
    example = splits[task].test[1]
    prediction = body["prediction"]
    assert prediction["task"] == task and prediction["tasks"] == [task]
    assert isinstance(prediction["output"], str) and 0 <= prediction["seconds"] < 60
    assert body["example"] == _listing(client)[task]["examples"][1]
    assert body["reference"] == body["references"][0] == body["example"]["reference"]
    assert body["matches"] == any(prediction["output"].split() == r.split() for r in body["references"])
    if task == "digits":
        assert body["reference"] == str(example.target) and len(prediction["top"]) == 5
    elif task == "fashion_captions":
        assert set(body["references"]) == {example.target, *example.references}
    elif task == "grammar_parsing":
        assert body["reference"] == example.target
        assert "tree" in prediction and body["reference_tree"].splitlines()[0] == "S"
        assert example.inputs.split()[0] in body["reference_tree"]  # drawn with the sentence's words
    else:
        assert body["reference"] == example.target and "reference_tree" not in body


def test_the_example_runs_the_same_as_the_model_on_its_input(client, predictor, splits):
    """The endpoint only looks the example up: its answer is the predictor's on the stored input."""
    example = splits["numbers_en_de"].test[2]
    body = client.post("/api/examples/numbers_en_de/2").json()
    assert body["prediction"]["output"] == predictor.run_task("numbers_en_de", example.inputs).output
    assert body["prediction"]["output"] == predictor.text(example.inputs, "german").output


def test_an_image_examples_input_is_its_pixels_as_png(client, splits):
    from PIL import Image

    listing = _listing(client)
    for task in ("digits", "fashion_captions"):
        if task not in splits:
            continue
        shown = listing[task]["examples"][0]
        response = client.get(shown["input_url"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        pixels = np.asarray(Image.open(io.BytesIO(response.content)), dtype=np.float32) / 255.0  # (H, W)
        stored = splits[task].test[0].inputs  # (1, H, W)
        assert pixels.shape == stored.shape[1:]
        assert np.abs(pixels - stored[0]).max() <= 0.5 / 255 + 1e-6


def test_a_speech_examples_audio_is_what_the_model_hears(client, splits, tiny_checkpoint):
    """espeak-ng says the held-out utterance again; its features are the stored ones."""
    import soundfile

    from multimodel.corpora import speech

    tiny_checkpoint.require("speech_numbers")
    shown = _listing(client)["speech_numbers"]["examples"][1]
    assert shown["input_url"] and "voice" in shown["input_description"]
    response = client.get(shown["input_url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    wave, rate = soundfile.read(io.BytesIO(response.content), dtype="float32")
    stored = splits["speech_numbers"].test[1].inputs
    heard = speech.features(wave, rate)  # from 16-bit samples: close to, not bit-equal with, the stored ones
    assert heard.shape == stored.shape
    assert np.median(np.abs(heard - stored)) < 0.05


def test_speech_without_espeak_is_offered_with_its_transcript_and_no_audio(predictor, splits, tiny_checkpoint,
                                                                        monkeypatch):
    tiny_checkpoint.require("speech_numbers")
    monkeypatch.setattr(held_out_module.speech, "espeak_version", lambda: None)
    with TestClient(create_app(predictor)) as c:
        shown = _listing(c)["speech_numbers"]["examples"][0]
        assert shown["input_url"] is None
        assert shown["input_text"] == splits["speech_numbers"].test[0].target  # what it says
        assert "no audio" in shown["input_description"]
        missing = c.get("/api/examples/speech_numbers/0/input")
        assert missing.status_code == 404 and "espeak-ng" in missing.json()["detail"]
        assert c.post("/api/examples/speech_numbers/0").status_code == 200  # runs all the same


@pytest.mark.parametrize("path,words", [
    ("/api/examples/klingon/0", ["no task 'klingon'", "digits"]),
    ("/api/examples/fashion_mnist/0", ["no task 'fashion_mnist'"]),  # a real task, not this checkpoint's
    (f"/api/examples/digits/{EXAMPLES_PER_TASK}", [f"index 0 to {EXAMPLES_PER_TASK - 1}",
                                                   f"no example {EXAMPLES_PER_TASK}"]),
    ("/api/examples/digits/-1", ["no example -1"]),
])
def test_an_example_that_is_not_here_is_404_saying_what_is(client, path, words):
    for response in (client.post(path), client.get(path + "/input")):
        assert response.status_code == 404, response.text
        assert all(w in response.json()["detail"] for w in words), response.json()["detail"]


def test_a_text_example_has_no_input_file_and_a_bad_index_is_422(client):
    response = client.get("/api/examples/numbers_en_de/0/input")
    assert response.status_code == 404 and "sentence itself" in response.json()["detail"]
    assert client.post("/api/examples/digits/first").status_code == 422


def test_missing_data_is_said_and_the_rest_works(predictor, tiny_checkpoint, make_png, monkeypatch):
    """A task whose test split cannot be had (no dataset on this machine) is listed with the reason."""
    real = held_out_module.load_task_data

    def no_digits(cfg, names, **kwargs):
        if names == ["digits"]:
            raise FileNotFoundError("task digits: scikit-learn is not installed: pip install scikit-learn")
        return real(cfg, names, **kwargs)

    monkeypatch.setattr(held_out_module, "load_task_data", no_digits)
    with TestClient(create_app(predictor)) as c:
        listing = _listing(c)
        assert listing["digits"]["examples"] == []
        assert "scikit-learn is not installed" in listing["digits"]["unavailable"]
        response = c.post("/api/examples/digits/0")
        assert response.status_code == 404
        assert response.json()["detail"].startswith("no held-out examples of digits on this server")
        assert listing["numbers_en_de"]["unavailable"] is None
        assert c.post("/api/examples/numbers_en_de/0").status_code == 200
        assert c.post("/api/image", files={"file": ("x.png", make_png(), "image/png")}).status_code == 200
        assert c.get("/api/info").status_code == 200 and c.get("/").status_code == 200


def test_without_a_config_every_task_says_why_it_has_no_examples(predictor):
    held = HeldOutExamples(None, predictor.tasks)
    with TestClient(create_app(predictor, held_out=held)) as c:
        listing = _listing(c)
        assert all(t["examples"] == [] and "config is not known" in t["unavailable"] for t in listing.values())
        assert c.post("/api/examples/digits/0").status_code == 404


def test_examples_are_read_once(predictor, monkeypatch):
    calls = []
    real = held_out_module.load_task_data
    monkeypatch.setattr(held_out_module, "load_task_data", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    held = HeldOutExamples(predictor.config, predictor.tasks)
    with TestClient(create_app(predictor, held_out=held)) as c:
        c.get("/api/examples")
        c.post("/api/examples/numbers_en_de/0")
        c.get("/api/examples")
    assert sorted(calls) == sorted([t.name] for t in predictor.tasks)


def test_the_schema_describes_the_example_endpoints(client):
    spec = client.get("/openapi.json").json()
    paths = {"/api/examples", "/api/examples/{task}/{index}", "/api/examples/{task}/{index}/input"}
    assert paths <= set(spec["paths"])
    run = spec["paths"]["/api/examples/{task}/{index}"]["post"]
    assert {"200", "404"} <= set(run["responses"])
    assert set(spec["paths"]["/api/examples/{task}/{index}/input"]["get"]["responses"]["200"]["content"]) == {
        "image/png", "audio/wav"}
    assert {"ExampleOut", "ExampleRunOut", "ExamplesOut", "HeldOutTaskOut"} <= set(spec["components"]["schemas"])


def test_serve_says_which_tasks_have_no_examples(predictor):
    from multimodel.serve.app import _preload

    said = []
    _preload(HeldOutExamples(None, predictor.tasks[:2]), said.append)
    assert len(said) == 1 and all(t.name in said[0] for t in predictor.tasks[:2])
    said.clear()
    _preload(HeldOutExamples(predictor.config, [t for t in predictor.tasks if t.name == "numbers_en_de"]),
             said.append)
    assert said == []


def test_run_task_names_what_the_checkpoint_has(predictor):
    from multimodel.predict import PredictError

    with pytest.raises(PredictError, match="no task fashion_mnist; its tasks: digits"):
        predictor.run_task("fashion_mnist", np.zeros((1, 28, 28), np.float32))
    with pytest.raises(PredictError, match="too long"):
        predictor.run_task("numbers_en_de", "one two " * 250)
