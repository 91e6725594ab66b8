"""The JSON API of ``multimodel serve``: every endpoint, every kind of bad input.

A 4-step checkpoint answers noise, so answers are checked for their form: the task that
answered, its task token, a non-empty output, labels from the task's label set, a timing.
"""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from multimodel.corpora.errors import CorpusError
from multimodel.predict import Prediction, Predictor, PredictError
from multimodel.serve import app as serve_app
from multimodel.serve import create_app
from multimodel.tasks import get_task

LIMIT = 200_000  # bytes; small so oversized uploads are cheap to make


@pytest.fixture(scope="module")
def client(predictor, tiny_checkpoint):
    app = create_app(predictor, checkpoint=str(tiny_checkpoint.run_dir), max_upload_bytes=LIMIT)
    with TestClient(app) as c:
        yield c


def _image(client, data: bytes, name: str = "x.png", mime: str = "image/png"):
    return client.post("/api/image", files={"file": (name, data, mime)})


def _audio(client, data: bytes, name: str = "x.wav", mime: str = "audio/wav"):
    return client.post("/api/audio", files={"file": (name, data, mime)})


def _assert_answer(answer: dict, task: str) -> None:
    assert answer["task"] == task
    assert answer["task_token"] == get_task(task).task_token
    # A model trained for 4 steps may well emit EOS first: the output is a string, maybe empty.
    assert isinstance(answer["output"], str)
    assert isinstance(answer["seconds"], float) and 0 <= answer["seconds"] < 60


# -- the happy paths -----------------------------------------------------------------------

def test_info_lists_the_checkpoints_tasks_and_limits(client, tiny_checkpoint):
    info = client.get("/api/info").json()
    assert [t["name"] for t in info["tasks"]] == tiny_checkpoint.tasks
    assert info["image"] is True
    assert info["audio"] is ("speech_numbers" in tiny_checkpoint.tasks)
    assert info["text_targets"] == ["german", "parse-tree"]
    assert info["max_upload_bytes"] == LIMIT
    digits = next(t for t in info["tasks"] if t["name"] == "digits")
    assert digits["labels"] == [str(i) for i in range(10)] and digits["task_token"] is None


@pytest.mark.parametrize("mode,fmt,mime", [("RGB", "PNG", "image/png"), ("L", "JPEG", "image/jpeg"),
                                           ("RGBA", "PNG", "image/png")])
def test_image_gives_a_class_with_top5_and_a_caption(client, tiny_checkpoint, make_png, mode, fmt, mime):
    response = _image(client, make_png((37, 23), mode, fmt), "x." + fmt.lower(), mime)
    assert response.status_code == 200, response.text
    by_task = {p["task"]: p for p in response.json()["predictions"]}
    classes = by_task["digits"]
    _assert_answer(classes, "digits")
    labels = get_task("digits").labels
    assert classes["output"] in labels
    assert len(classes["top"]) == 5 and classes["top"][0]["label"] == classes["output"]
    assert all(t["label"] in labels and 0 <= t["probability"] <= 1 for t in classes["top"])
    assert [t["probability"] for t in classes["top"]] == sorted((t["probability"] for t in classes["top"]),
                                                                reverse=True)
    tiny_checkpoint.require("fashion_captions")
    _assert_answer(by_task["fashion_captions"], "fashion_captions")
    assert "top" not in by_task["fashion_captions"]


@pytest.mark.parametrize("rate,fmt", [(16000, "WAV"), (22050, "FLAC")])
def test_audio_gives_a_transcript(client, tiny_checkpoint, make_wav, rate, fmt):
    tiny_checkpoint.require("speech_numbers")
    response = _audio(client, make_wav(1.0, rate, fmt), "tone." + fmt.lower())
    assert response.status_code == 200, response.text
    _assert_answer(response.json(), "speech_numbers")


def test_text_translates(client):
    response = client.post("/api/text", json={"text": "twenty-one", "to": "german"})
    assert response.status_code == 200, response.text
    _assert_answer(response.json(), "numbers_en_de")
    assert response.json()["task_token"] == "To-German"


def test_text_parses_into_a_tree_or_says_why_not(client):
    response = client.post("/api/text", json={"text": "the cat saw a dog .", "to": "parse-tree"})
    assert response.status_code == 200, response.text
    answer = response.json()
    _assert_answer(answer, "grammar_parsing")
    assert "tree" in answer
    if answer["tree"] is None:  # noise from 4 steps of training is rarely a well-formed tree
        assert answer["tree_error"]
    else:
        assert answer["tree"].splitlines()[0].strip()


def test_page_and_openapi_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="image-panel"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/api/info", "/api/image", "/api/audio", "/api/text"} <= set(spec["paths"])
    assert "413" in spec["paths"]["/api/image"]["post"]["responses"]
    assert "415" in spec["paths"]["/api/audio"]["post"]["responses"]
    assert "text_targets" in spec["components"]["schemas"]["TextRequest"]["properties"]["to"]["description"]


def test_no_docs_pages_that_need_a_cdn(client):
    """Swagger UI and ReDoc load their scripts from a CDN (blank offline): not served; the schema is."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path
    assert client.get("/openapi.json").status_code == 200
    assert "/docs" not in client.get("/").text  # the page links no dead docs page


# -- bad input: clear 4xx, and the server goes on -----------------------------------------

@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_400(client, text):
    response = client.post("/api/text", json={"text": text, "to": "german"})
    assert response.status_code == 400
    assert "empty" in response.json()["detail"]


def test_text_longer_than_the_page_allows_is_400(client):
    response = client.post("/api/text", json={"text": "a" * (serve_app.MAX_TEXT_CHARS + 1), "to": "german"})
    assert response.status_code == 400
    assert "characters" in response.json()["detail"]


def test_text_longer_than_the_model_takes_is_400(client):
    response = client.post("/api/text", json={"text": "one two " * 250, "to": "german"})
    assert response.status_code == 400
    assert "too long" in response.json()["detail"]


def test_text_body_over_its_limit_is_413(client):
    response = client.post("/api/text", json={"text": "a" * (serve_app.OTHER_BODY_LIMIT + 1), "to": "german"})
    assert response.status_code == 413


@pytest.mark.parametrize("to, token", [("french", "To-French"), ("klingon", "To-Klingon")])
def test_target_the_checkpoint_lacks_is_400(client, to, token):
    response = client.post("/api/text", json={"text": "twenty-one", "to": to})
    assert response.status_code == 400
    assert token in response.json()["detail"] and "german, parse-tree" in response.json()["detail"]


@pytest.mark.parametrize("body", [{"text": "x", "to": "no such/target"}, {"to": "german"}, {"text": 3, "to": "german"}])
def test_malformed_text_request_is_422(client, body):
    assert client.post("/api/text", json=body).status_code == 422


def test_not_json_is_422(client):
    response = client.post("/api/text", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize("path", ["/api/image", "/api/audio"])
def test_upload_over_the_limit_is_413(client, path):
    response = client.post(path, files={"file": ("big.png", b"\0" * (LIMIT + serve_app.MULTIPART_SLACK + 1))})
    assert response.status_code == 413
    assert "--max-upload-mb" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/api/image", "/api/audio"])
def test_upload_just_over_the_limit_is_413(client, path):
    """Within the multipart slack the body passes; the file itself is then counted."""
    response = client.post(path, files={"file": ("big.png", b"\0" * (LIMIT + 1))})
    assert response.status_code == 413
    assert "big.png is over" in response.json()["detail"]


def test_chunked_upload_over_the_limit_is_413(client, make_png):
    boundary = "xyzzy"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():  # no Content-Length: the server must count
        yield head + make_png()
        for _ in range(40):
            yield b"\0" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/image", content=body(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413


def test_body_limit_stops_reading_at_the_limit():
    """The middleware answers 413 once the limit is passed, without pulling the rest of the body."""
    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"\0" * 1000, "more_body": pulled < 1000}

    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # reads the whole body, like a form parser
        while (await receive()).get("more_body"):
            pass

    limited = serve_app.BodyLimit(app, lambda path: (5000, "a test limit"))
    asyncio.run(limited({"type": "http", "path": "/api/image", "headers": []}, receive, send))
    assert sent[0]["status"] == 413
    assert pulled == 6


def test_declared_length_over_the_limit_is_refused_unread():
    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        await receive()

    limited = serve_app.BodyLimit(app, lambda path: (5000, "a test limit"))
    scope = {"type": "http", "path": "/api/image", "headers": [(b"content-length", b"999999")]}
    asyncio.run(limited(scope, receive, send))
    assert sent[0]["status"] == 413 and pulled == 0
    assert b"a test limit" in sent[1]["body"]


@pytest.mark.parametrize("path,word", [("/api/image", "not an image"), ("/api/audio", "not audio")])
def test_file_of_the_wrong_kind_is_415(client, make_png, make_wav, path, word):
    wrong = make_wav() if path == "/api/image" else make_png()
    for data in (wrong, b"just some text\n"):
        response = client.post(path, files={"file": ("thing.bin", data, "application/octet-stream")})
        assert response.status_code == 415
        assert word in response.json()["detail"] and "thing.bin" in response.json()["detail"]


def test_truncated_image_is_415(client, make_png):
    response = _image(client, make_png((64, 64))[:200], "cut.png")
    assert response.status_code == 415
    assert "cut.png is not an image" in response.json()["detail"]


def test_predictor_errors_name_the_uploaded_file_not_the_temporary_copy(make_png):
    class Unreadable(_FailingPredictor):
        def image(self, path):
            raise CorpusError(path, "corrupt or unreadable image")

    with TestClient(create_app(Unreadable(RuntimeError()))) as c:
        response = _image(c, make_png(), "holiday.png")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("holiday.png: corrupt or unreadable image")


@pytest.mark.parametrize("path", ["/api/image", "/api/audio"])
def test_empty_file_is_400(client, path):
    response = client.post(path, files={"file": ("empty.png", b"")})
    assert response.status_code == 400
    assert "empty" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/api/image", "/api/audio"])
def test_missing_file_field_is_422(client, path):
    assert client.post(path, data={"other": "x"}).status_code == 422


def test_image_with_too_many_pixels_is_413(client, make_png, monkeypatch):
    monkeypatch.setattr(serve_app, "MAX_IMAGE_PIXELS", 100)
    response = _image(client, make_png((20, 20)))
    assert response.status_code == 413
    assert "20×20" in response.json()["detail"]


def test_truncated_wav_is_400_and_never_transcribed(client, make_wav):
    whole = make_wav(1.0)
    response = _audio(client, whole[: len(whole) // 2])
    assert response.status_code == 400
    assert "is truncated: its RIFF header declares" in response.json()["detail"]


def test_truncated_flac_is_refused(client, make_wav):
    whole = make_wav(1.0, fmt="FLAC")
    response = _audio(client, whole[: len(whole) // 2], name="x.flac", mime="audio/flac")
    assert response.status_code in (400, 415) and "x.flac" in response.json()["detail"]


def test_audio_too_long_or_without_samples_is_400(predictor, tiny_checkpoint, make_wav):
    tiny_checkpoint.require("speech_numbers")
    with TestClient(create_app(predictor, max_audio_seconds=0.5)) as c:
        long = _audio(c, make_wav(1.0))
        assert long.status_code == 400 and "at most 0.5 s" in long.json()["detail"]
        empty = _audio(c, make_wav(0.0))
        assert empty.status_code == 400 and "no samples" in empty.json()["detail"]


def test_checkpoint_without_a_modality_answers_400(predictor, make_png, make_wav):
    text_only = Predictor(predictor.model, predictor.tokenizer,
                          [t for t in predictor.tasks if t.input_modality == "text"])
    with TestClient(create_app(text_only)) as c:
        info = c.get("/api/info").json()
        assert info["image"] is False and info["audio"] is False
        for response in (_image(c, make_png()), _audio(c, make_wav())):
            assert response.status_code == 400
            assert "has no task that reads" in response.json()["detail"]


class _FailingPredictor:
    """Raises what a real Predictor raises on inputs it cannot take."""

    def __init__(self, error: Exception):
        self.tasks = [get_task("digits"), get_task("speech_numbers"), get_task("numbers_en_de")]
        self.config = None  # no held-out examples, and no eval.json: the page says so
        self.checkpoint_dir = None
        self.error = error

    def image(self, path):
        raise self.error

    def audio(self, path):
        raise self.error

    def text(self, sentence, to):
        raise self.error


@pytest.mark.parametrize("error", [PredictError("the model cannot take this"),
                                   CorpusError("upload.wav", "corrupt or unreadable audio", "give a WAV file")])
def test_predictor_errors_become_400_with_their_message(error, make_png, make_wav):
    with TestClient(create_app(_FailingPredictor(error))) as c:
        for response in (_image(c, make_png()), _audio(c, make_wav()),
                         c.post("/api/text", json={"text": "hello", "to": "german"})):
            assert response.status_code == 400
            assert response.json()["detail"] == str(error)


def test_unexpected_error_is_500_and_the_server_goes_on(make_png):
    class Flaky(_FailingPredictor):
        def text(self, sentence, to):
            return Prediction("numbers_en_de", "To-German", "zwei", 0.01)

    with TestClient(create_app(Flaky(RuntimeError("boom"))), raise_server_exceptions=False) as c:
        assert _image(c, make_png()).status_code == 500
        answer = c.post("/api/text", json={"text": "two", "to": "german"})
        assert answer.status_code == 200 and answer.json()["output"] == "zwei"


def test_server_still_answers_after_bad_inputs(client, make_png):
    client.post("/api/image", files={"file": ("x.png", b"\0" * (LIMIT * 3))})
    client.post("/api/image", files={"file": ("x.png", b"garbage")})
    client.post("/api/text", json={"text": ""})
    assert client.get("/api/info").status_code == 200
    assert _image(client, make_png()).status_code == 200


def test_upload_limit_must_be_positive(predictor):
    with pytest.raises(ValueError, match="positive"):
        create_app(predictor, max_upload_bytes=0)
