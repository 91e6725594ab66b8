"""The web demo: a FastAPI app that puts a :class:`~multimodel.predict.Predictor` behind a page and a JSON API.

One panel per family of the paper's tasks (images, speech, text): an image
gets a class with its top-5 probabilities and a caption, an audio file gets a transcript, a
sentence gets a translation or a parse tree. Every answer names the task token that asked for
it and the decoding time. To show what the model learned, each panel also offers a few held-out
examples of its tasks (``held_out.py``: from each task's test split, run with one click and shown
beside their reference) and the checkpoint's scores on them (``scores.py``: the run's
``eval.json``, each metric beside its blind control). The same functions are a JSON API, described
by its OpenAPI schema at ``/openapi.json``. FastAPI's ``/docs`` and ``/redoc`` pages are switched
off: they load their scripts from a CDN, and the demo must work without a network.

Bad input never reaches the model and never stops the server:

* bodies are counted while they are read (:class:`BodyLimit`); past the limit the request is
  answered 413 without reading the rest;
* an upload that is not an image (or audio) Pillow (or libsndfile) can open gets 415;
* empty text, text or audio longer than the model takes, and inputs the checkpoint has no task
  for get 400, with the reason in ``detail``;
* a held-out example that is not here (a task the checkpoint lacks, an index past the few
  offered, a task whose data this machine does not have) gets 404, saying what there is.

Run it with ``multimodel serve CHECKPOINT`` (see :func:`serve`).
"""

from __future__ import annotations

import ipaddress
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Literal

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from multimodel import __version__
from multimodel.config import ConfigError
from multimodel.corpora.audio_file import wav_truncation
from multimodel.corpora.errors import CorpusError
from multimodel.predict import TARGETS, Prediction, Predictor, PredictError, target_name
from multimodel.serve.held_out import ExampleNotFound, HeldOutExamples, matches, reference_tree, references
from multimodel.serve.held_out import describe as describe_example
from multimodel.serve.scores import BLIND_EXPLANATION, Scores, read_scores

STATIC_DIR = Path(__file__).parent / "static"
UPLOAD_PATHS = ("/api/image", "/api/audio")
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file itself
OTHER_BODY_LIMIT = 64 * 1024  # JSON requests (/api/text) and anything else
MAX_TEXT_CHARS = 2000  # checked before tokenizing; the model's own subword limit is checked after
MAX_IMAGE_PIXELS = 40_000_000  # decoded size; a small PNG can expand to gigabytes
MAX_AUDIO_SECONDS = 60.0  # the built-in speech task's utterances last 0.4-4 s
CHUNK = 1 << 20


# -- request and response schemas (what /openapi.json describes) ---------------------------

class TextRequest(BaseModel):
    """A sentence and what to make of it."""

    text: str = Field(description="the sentence (plain text, at most 2,000 characters)",
                      examples=["the cat saw a dog ."])
    to: str = Field("german", pattern=r"^[A-Za-z][A-Za-z-]{0,39}$", examples=["german"],
                    description="target language (english, german, french, or the language of another"
                    " text task's token: spanish for To-Spanish), or 'parse-tree' for a constituency parse;"
                    " /api/info's text_targets lists what this checkpoint answers")


class TopLabel(BaseModel):
    label: str
    probability: float


class PredictionOut(BaseModel):
    """One answer (``Prediction.to_json()``); extras a task adds appear as more keys."""

    model_config = ConfigDict(extra="allow")

    task: str = Field(description="the task of the checkpoint that answered; when several text tasks share the"
                      " task token (the same computation), the token and their names, e.g."
                      " 'To-English (numbers_de_en, numbers_fr_en)'")
    tasks: list[str] = Field(description="every task of the checkpoint this answer stands for (one, except"
                             " for text tasks that share a task token)")
    task_token: str | None = Field(description="the decoder's task token; null for a classifier")
    output: str = Field(description="class label, caption, transcript, translation or linearised tree")
    seconds: float = Field(description="decoding time in seconds")
    top: list[TopLabel] | None = Field(None, description="classification only: the five likeliest labels")
    tree: str | None = Field(None, description="parse-tree only: the tree drawn one constituent a line,"
                             " or null when the output is not a well-formed tree")
    tree_error: str | None = Field(None, description="parse-tree only: why the output is not a tree")


class ImageOut(BaseModel):
    predictions: list[PredictionOut] = Field(description="one answer per image task (class, caption)")


class MetricOut(BaseModel):
    """One of the task's own metrics with its blind control."""

    metric: str = Field(description="the metric's name in eval.json, e.g. 'accuracy', 'item_f1', 'wer'")
    label: str = Field(description="how tables name it, e.g. 'top-1 acc %'")
    value: float
    blind: float | None = Field(description="the same metric of the blind control (the model scored on the"
                                " same examples with their content removed); null when not run")
    lower_is_better: bool = Field(description="true for error rates (WER)")


class GroupValueOut(BaseModel):
    value: str = Field(description="the meta field's value, e.g. a voice name")
    score: float = Field(description="the headline metric on this value's examples alone")
    count: int = Field(description="held-out examples with this value")


class GroupScoresOut(BaseModel):
    """The task's headline metric per value of one of its report_by meta fields (eval.json's breakdown)."""

    field: str = Field(description="the meta field, e.g. 'voice' or 'kind'")
    metric: str
    label: str
    lower_is_better: bool
    values: list[GroupValueOut]


class TaskScoresOut(BaseModel):
    """A task's record in the run's eval.json."""

    metrics: dict[str, float] = Field(description="every metric of the record, 'blind_<metric>' included")
    headline: list[MetricOut] = Field(description="the task's own metrics in order (the first is its headline)")
    groups: list[GroupScoresOut] = Field(default_factory=list, description="the headline metric per group of"
                                         " examples (e.g. speech per held-out voice); empty when the task has none")
    token_accuracy: float | None = Field(description="teacher-forced per-token accuracy %")
    log_perplexity: float | None
    num_examples: int | None = Field(description="held-out examples scored")


class TaskOut(BaseModel):
    name: str
    description: str
    input_modality: str
    target_modality: str
    task_token: str | None
    labels: list[str]
    scores: TaskScoresOut | None = Field(description="its held-out scores from eval.json; null: not evaluated")


class InfoOut(BaseModel):
    checkpoint: str
    version: str
    tasks: list[TaskOut]
    scores_file: str | None = Field(description="the eval.json the scores come from; null: not evaluated")
    scores_note: str | None = Field(description="why there are no scores, or which model they score")
    blind_control: str = Field(description="what the blind scores are, in one line")
    image: bool = Field(description="the checkpoint has an image task")
    audio: bool = Field(description="the checkpoint has an audio task")
    text_targets: list[str] = Field(description="values of 'to' that /api/text accepts for this checkpoint")
    max_upload_bytes: int
    max_text_chars: int
    max_audio_seconds: float


class ExampleOut(BaseModel):
    """A held-out example (from the task's test split, never from training data)."""

    task: str
    index: int
    input_text: str | None = Field(description="a text task's sentence; for speech without audio to play, the"
                                   " reference transcript of what is said")
    input_url: str | None = Field(description="GET it for the input as a file: image/png or audio/wav; null"
                                  " when there is no such file")
    input_description: str
    reference: str = Field(description="the reference answer (a class label, caption, transcript, translation"
                           " or linearised tree)")


class HeldOutTaskOut(BaseModel):
    task: str
    input_modality: str
    examples: list[ExampleOut]
    unavailable: str | None = Field(description="why this task has no examples here (e.g. its data is not on"
                                    " this machine); null when it has")


class ExamplesOut(BaseModel):
    split: Literal["test"] = Field(description="the split the examples come from")
    tasks: list[HeldOutTaskOut]


class ExampleRunOut(BaseModel):
    """The model's answer to a held-out example, beside the example's reference."""

    example: ExampleOut
    prediction: PredictionOut
    reference: str
    references: list[str] = Field(description="every acceptable answer (several captions), the reference first")
    reference_tree: str | None = Field(None, description="parse-tree only: the reference drawn one constituent a"
                                       " line")
    matches: bool = Field(description="the output equals one of the references (spacing aside)")


class ErrorOut(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorOut} for code in codes}


# -- the body limit ------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: refuse a request body once it passes the limit for its path.

    A declared ``Content-Length`` over the limit is refused before any byte is read; otherwise
    bytes are counted as they arrive, so a chunked or lying client is stopped at the limit too.

    Args:
        app: the wrapped application.
        limit_for: ``limit_for(path) -> (max_bytes, what)``; ``what`` names the limit in messages.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, f"the request is {_megabytes(declared)}; {what}")
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"the request is over {_megabytes(limit)}; {what}")
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except TooLarge as err:  # raised outside a route's exception handling
            if started:
                raise
            await _send_413(send, err.detail)


class TooLarge(HTTPException):
    def __init__(self, detail: str):
        super().__init__(status_code=413, detail=detail)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


# -- the app -------------------------------------------------------------------------------

def create_app(predictor: Predictor, *, checkpoint: str = "", max_upload_bytes: int = 10_000_000,
               max_audio_seconds: float = MAX_AUDIO_SECONDS, held_out: HeldOutExamples | None = None,
               scores: Scores | None = None) -> FastAPI:
    """The demo app for one loaded checkpoint.

    Args:
        predictor: the loaded checkpoint; calls into it are serialised (one at a time).
        checkpoint: how to name the checkpoint on the page.
        max_upload_bytes: largest image or audio file accepted (413 above).
        max_audio_seconds: longest audio accepted (400 above).
        held_out: the examples to offer; by default those of the predictor's config and tasks,
            loaded on first use.
        scores: the held-out scores to show; by default the ``eval.json`` of the predictor's run.
    """
    if max_upload_bytes <= 0:
        raise ValueError(f"max_upload_bytes must be positive, got {max_upload_bytes}")
    if held_out is None:
        held_out = HeldOutExamples(predictor.config, predictor.tasks)
    if scores is None:
        scores = read_scores(predictor.checkpoint_dir)
    app = FastAPI(
        title="multimodel demo",
        version=__version__,
        description="MultiModel (Kaiser et al. 2017): one network for images, speech and text. "
        "Each answer names the task token that produced it and the decoding time.",
        docs_url=None,  # Swagger UI and ReDoc fetch their JavaScript from a CDN: blank offline
        redoc_url=None,
    )
    lock = threading.Lock()  # one prediction at a time: the model is not shared across threads
    upload_limit = (f"this server accepts files up to {_megabytes(max_upload_bytes)}"
                    " (restart it with --max-upload-mb to change that)")

    def limit_for(path: str) -> tuple[int, str]:
        if path in UPLOAD_PATHS:
            return max_upload_bytes + MULTIPART_SLACK, upload_limit
        return OTHER_BODY_LIMIT, f"requests to {path} may be at most {_megabytes(OTHER_BODY_LIMIT)}"

    app.add_middleware(BodyLimit, limit_for=limit_for)

    def predict(call: Callable[[], Any], *, upload: tuple[Path, str] | None = None) -> Any:
        try:
            with lock:
                return call()
        except (PredictError, CorpusError) as err:
            detail = str(err)
            if upload is not None:  # name the user's file, not our temporary copy
                detail = detail.replace(str(upload[0]), upload[1])
            raise HTTPException(status_code=400, detail=detail) from None

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/info", response_model=InfoOut, summary="the checkpoint's tasks and the server's limits")
    def info() -> dict[str, Any]:
        tasks = predictor.tasks
        tokens = {t.task_token for t in tasks if t.input_modality == "text"}
        return {
            "checkpoint": checkpoint,
            "version": __version__,
            "tasks": [{"name": t.name, "description": t.description, "input_modality": t.input_modality,
                       "target_modality": t.target_modality, "task_token": t.task_token,
                       "labels": list(t.labels), "scores": scores.for_task(t)} for t in tasks],
            "scores_file": None if scores.path is None else str(scores.path),
            "scores_note": scores.note,
            "blind_control": BLIND_EXPLANATION,
            "image": any(t.input_modality == "image" for t in tasks),
            "audio": any(t.input_modality == "audio" for t in tasks),
            "text_targets": text_targets(tokens),
            "max_upload_bytes": max_upload_bytes,
            "max_text_chars": MAX_TEXT_CHARS,
            "max_audio_seconds": max_audio_seconds,
        }

    @app.post("/api/image", response_model=ImageOut, response_model_exclude_unset=True,
              responses=_errors(400, 413, 415),
              summary="classify and caption an image (PNG, JPEG, ... as multipart field 'file')")
    def image(file: UploadFile = File(description="an image file")) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="multimodel-serve-") as tmp:
            path = _save_upload(file, Path(tmp), max_upload_bytes, upload_limit)
            name = file.filename or "upload"
            _check_image(path, name)
            predictions: list[Prediction] = predict(lambda: predictor.image(path), upload=(path, name))
        return {"predictions": [p.to_json() for p in predictions]}

    @app.post("/api/audio", response_model=PredictionOut, response_model_exclude_unset=True,
              responses=_errors(400, 413, 415),
              summary="transcribe speech (WAV, FLAC, OGG as multipart field 'file'; any sample rate)")
    def audio(file: UploadFile = File(description="an audio file")) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="multimodel-serve-") as tmp:
            path = _save_upload(file, Path(tmp), max_upload_bytes, upload_limit)
            name = file.filename or "upload"
            _check_audio(path, name, max_audio_seconds)
            prediction: Prediction = predict(lambda: predictor.audio(path), upload=(path, name))
        return prediction.to_json()

    @app.post("/api/text", response_model=PredictionOut, response_model_exclude_unset=True,
              responses=_errors(400, 413), summary="translate a sentence, or parse it into a constituency tree")
    def text(request: TextRequest) -> dict[str, Any]:
        sentence = request.text.strip()
        if not sentence:
            raise HTTPException(status_code=400, detail="the text is empty; type a sentence")
        if len(sentence) > MAX_TEXT_CHARS:
            raise HTTPException(status_code=400, detail=f"the text is {len(sentence)} characters long;"
                                f" at most {MAX_TEXT_CHARS}")
        prediction: Prediction = predict(lambda: predictor.text(sentence, request.to))
        return prediction.to_json()

    def held_out_example(task: str, index: int) -> Any:
        try:
            return held_out.get(task, index)
        except ExampleNotFound as err:
            raise HTTPException(status_code=404, detail=str(err)) from None

    @app.get("/api/examples", response_model=ExamplesOut,
             summary="a few held-out examples of each task (from its test split), to run with one click")
    def examples() -> dict[str, Any]:
        return {"split": "test", "tasks": held_out.listing()}

    @app.post("/api/examples/{task}/{index}", response_model=ExampleRunOut, response_model_exclude_unset=True,
              responses=_errors(400, 404), summary="run the model on a held-out example; its answer and reference")
    def run_example(task: str, index: int) -> dict[str, Any]:
        found, example = held_out_example(task, index)
        prediction: Prediction = predict(lambda: predictor.run_task(found.name, example.inputs))
        refs = references(found, example)
        out = {"example": describe_example(found, index, example), "prediction": prediction.to_json(),
               "reference": refs[0], "references": refs, "matches": matches(str(prediction.output), refs)}
        tree = reference_tree(found, example)
        if tree is not None:
            out["reference_tree"] = tree
        return out

    @app.get("/api/examples/{task}/{index}/input", response_class=Response, responses={
        200: {"content": {"image/png": {}, "audio/wav": {}}, "description": "the example's image or audio"},
        **_errors(404)}, summary="a held-out example's input as a file (image/png or audio/wav)")
    def example_input(task: str, index: int) -> Response:
        try:
            data, media_type = held_out.media(task, index)
        except ExampleNotFound as err:
            raise HTTPException(status_code=404, detail=str(err)) from None
        return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def text_targets(tokens: set[str | None]) -> list[str]:
    """The ``to`` values that reach the text tasks' ``tokens``: the page's four in their order, then
    those of tokens a config added (To-Spanish → spanish)."""
    known = [name for name, token in TARGETS.items() if token in tokens]
    return known + sorted(target_name(t) for t in tokens if t and t not in TARGETS.values())


def _save_upload(file: UploadFile, folder: Path, max_bytes: int, limit_message: str) -> Path:
    """Copy an upload to ``folder`` in chunks, refusing it past ``max_bytes``; the path."""
    suffix = Path(file.filename or "").suffix.lower()
    path = folder / ("upload" + (suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""))
    size = 0
    with path.open("wb") as out:
        while chunk := file.file.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(status_code=413, detail=f"{file.filename or 'the file'} is over"
                                    f" {_megabytes(max_bytes)}; {limit_message}")
            out.write(chunk)
    if size == 0:
        raise HTTPException(status_code=400, detail=f"{file.filename or 'the upload'} is empty")
    return path


def _check_image(path: Path, name: str) -> None:
    from PIL import Image, UnidentifiedImageError

    unreadable = HTTPException(status_code=415, detail=f"{name} is not an image this server can read;"
                               " upload a PNG, JPEG, GIF, BMP or WebP file")
    try:
        with Image.open(path) as img:
            width, height = img.size  # from the header: checked before decoding the pixels
            if width * height > MAX_IMAGE_PIXELS:
                raise HTTPException(status_code=413, detail=f"{name} is {width}×{height} pixels;"
                                    f" at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            img.load()  # a truncated file fails here
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise unreadable from None


def _check_audio(path: Path, name: str, max_seconds: float) -> None:
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError, TypeError):  # soundfile's LibsndfileError is a RuntimeError
        raise HTTPException(status_code=415, detail=f"{name} is not audio this server can read;"
                            " upload a WAV, FLAC or OGG file") from None
    if info.frames <= 0:
        raise HTTPException(status_code=400, detail=f"{name} has no samples")
    cut = wav_truncation(path)
    if cut:
        raise HTTPException(status_code=400, detail=f"{name} is {cut}; upload the whole recording")
    if info.duration > max_seconds:
        raise HTTPException(status_code=400, detail=f"{name} lasts {info.duration:.1f} s;"
                            f" at most {max_seconds:g} s")


# -- running it ----------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(checkpoint: str | Path, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 10.0,
          warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
    """Load ``checkpoint`` and serve the demo until interrupted (``multimodel serve``).

    Args:
        checkpoint: a run directory or a ``checkpoints/step-*`` directory.
        host: address to bind; anything but loopback makes the model reachable from the network,
            so it is warned about.
        port: TCP port.
        max_upload_mb: largest image or audio upload in megabytes.
        warn: where warnings and the start-up line go (stderr).
    """
    import uvicorn

    if max_upload_mb <= 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    predictor = Predictor.from_checkpoint(checkpoint)
    held_out = HeldOutExamples(predictor.config, predictor.tasks)
    app = create_app(predictor, checkpoint=str(checkpoint), max_upload_bytes=int(max_upload_mb * 1e6),
                     held_out=held_out)
    # Read the test splits while the server starts, so the page's examples are ready when opened.
    threading.Thread(target=_preload, args=(held_out, warn), name="held-out-examples", daemon=True).start()
    if not is_loopback(host):
        warn(f"warning: binding {host}: anyone who can reach this machine on port {port} can use the model"
             " (there is no authentication); use --host 127.0.0.1 to keep it local")
    shown = f"[{host}]" if ":" in host else host
    warn(f"multimodel demo of {checkpoint} on http://{shown}:{port}/ (API schema at /openapi.json); Ctrl-C stops it")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _preload(held_out: HeldOutExamples, warn: Callable[[str], None]) -> None:
    loaded = held_out.load()
    missing = [f"{name} ({held.unavailable})" for name, held in loaded.items() if held.unavailable]
    if missing:
        warn(f"held-out examples not available for {'; '.join(missing)}; the rest of the page works")
