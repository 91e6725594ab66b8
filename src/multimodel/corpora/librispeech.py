"""LibriSpeech: read speech with transcripts, standing in for the paper's WSJ speech task (section 4).

Layout of one subset (e.g. ``LibriSpeech/dev-clean``), as extracted from openslr.org/12::

    <subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    <subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac

Each transcript line is ``<utterance id> <TRANSCRIPT IN UPPER CASE>``; the audio of an
utterance is ``<utterance id>.flac`` beside it. Pass one subset folder as ``root``: the reader
looks exactly two levels down, so pointing it at ``LibriSpeech/`` (all subsets) finds nothing
instead of silently mixing training and test speakers.

Audio is read with soundfile as float32 in [-1, 1], averaged to mono if it has several channels.
It is not resampled: a file whose rate is not the expected one (16 kHz) is a bad record.
Transcripts are lower-cased, whitespace-normalised; punctuation (apostrophes) is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from multimodel.corpora.audio_file import missing_frames, wav_truncation
from multimodel.corpora.errors import BadRecords, CorpusError, require_exists
from multimodel.data.example import Example, LazyExamples, Split

SAMPLE_RATE = 16_000
"""Sample rate of LibriSpeech and WSJ audio, and of every waveform the readers return."""

_UTTERANCE_ID = re.compile(r"\d+-\d+-\d+")
"""LibriSpeech utterance ids: speaker, chapter and utterance numbers joined by hyphens."""


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read one audio file into a float32 mono waveform ``(T,)`` in [-1, 1].

    Raises:
        CorpusError: the file is missing, unreadable, empty, or not at ``sample_rate`` Hz.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, "audio file not found", "restore the file or remove its transcript line")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, channels)
        declared = soundfile.info(str(path)).frames
    except (
        RuntimeError,
        OSError,
        ValueError,
        TypeError,
    ) as error:  # soundfile.LibsndfileError is a RuntimeError
        raise CorpusError(
            path,
            f"corrupt or unreadable audio ({error})",
            "re-download the file, delete it, or set data.skip_bad=true",
        ) from error
    if rate != sample_rate:
        raise CorpusError(
            path,
            f"audio is at {rate} Hz, expected {sample_rate} Hz",
            f"resample it to {sample_rate} Hz (e.g. sox in.flac -r {sample_rate} out.flac)",
        )
    if samples.shape[0] == 0:
        raise CorpusError(
            path, "audio has no samples", "re-download the file, delete it, or set data.skip_bad=true"
        )
    cut = wav_truncation(path) or missing_frames(declared, samples.shape[0])
    if cut:
        raise CorpusError(path, cut, "re-download the file, delete it, or set data.skip_bad=true")
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))  # (T,)


def audio_frames(path: str | Path) -> int:
    """Samples per channel of an audio file, read from its header (nothing is decoded).

    Raises:
        CorpusError: the file is missing or its header unreadable.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, "audio file not found", "restore the file or remove its transcript line")
    try:
        return int(soundfile.info(str(path)).frames)
    except (RuntimeError, OSError, ValueError, TypeError) as error:
        raise CorpusError(path, f"corrupt or unreadable audio ({error})",
                          "re-download the file, delete it, or set lazy=False and data.skip_bad=true") from error


def normalise_transcript(text: str) -> str:
    """Lower-case and collapse whitespace: the target form of every speech reader."""
    return " ".join(text.lower().split())


def read_librispeech(
    root: str | Path, limit: int = 0, skip_bad: bool = False, sample_rate: int = SAMPLE_RATE,
    lazy: bool = False,
) -> Split:
    """Read one LibriSpeech subset into a :class:`Split` of speech-recognition examples.

    Args:
        root: a subset folder, e.g. ``LibriSpeech/dev-clean``.
        limit: keep at most this many utterances (0 = all), in sorted speaker/chapter/line order.
        skip_bad: skip (and count) malformed transcript lines and bad audio instead of raising.
        sample_rate: the rate every file must have.
        lazy: read each file's header now (its length, for length buckets) and decode its audio
            when its example is read (:class:`~multimodel.data.example.LazyExamples`); a corrupt
            file then raises when read, whatever ``skip_bad`` says.

    Returns:
        Examples with ``inputs`` float32 waveform ``(T,)``, ``target`` = lower-cased transcript,
        ``references = [target]``, ``meta = {"sample_rate", "id", "path"}``.
    """
    root = require_exists(
        root, "LibriSpeech subset folder", "pass e.g. LibriSpeech/dev-clean (download from openslr.org/12)"
    )
    transcript_files = sorted(root.glob("*/*/*.trans.txt"))
    if not transcript_files:
        raise CorpusError(
            root,
            "no <speaker>/<chapter>/*.trans.txt files found",
            "pass one subset folder such as LibriSpeech/dev-clean, not LibriSpeech/ itself",
        )
    bad = BadRecords(skip_bad)
    examples: list[Example] = []
    lengths: list[int] = []
    for transcript_file in transcript_files:
        if limit and len(examples) >= limit:
            break
        try:
            lines = transcript_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            bad.skip(
                CorpusError(
                    transcript_file, f"cannot read the transcript file ({error})", "re-extract the subset"
                )
            )
            continue
        for number, line in enumerate(lines, start=1):
            if limit and len(examples) >= limit:
                break
            if not line.strip():
                continue  # a blank line holds no record
            try:
                parts = line.split(maxsplit=1)
                if len(parts) != 2:
                    raise CorpusError(
                        transcript_file,
                        "expected '<utterance id> <transcript>'",
                        "repair the line or set data.skip_bad=true",
                        line=number,
                    )
                utterance_id, text = parts
                if not _UTTERANCE_ID.fullmatch(utterance_id):
                    raise CorpusError(
                        transcript_file,
                        f"line starts with {utterance_id!r}, not an utterance id such as"
                        " '84-121123-0000' (<speaker>-<chapter>-<utterance>)",
                        "repair the line or set data.skip_bad=true",
                        line=number,
                    )
                audio_path = transcript_file.parent / f"{utterance_id}.flac"
                waveform = None if lazy else read_audio(audio_path, sample_rate)
                lengths.append(audio_frames(audio_path) if lazy else len(waveform))
            except CorpusError as error:
                bad.skip(error)
                continue
            target = normalise_transcript(text)
            examples.append(
                Example(
                    inputs=waveform,
                    target=target,
                    references=[target],
                    meta={"sample_rate": sample_rate, "id": utterance_id, "path": str(audio_path)},
                )
            )
    if lazy:
        return bad.split(LazyExamples.deferred(examples, lambda ex: read_audio(ex.meta["path"], sample_rate),
                                               lengths=lengths), source=root)
    return bad.split(examples, source=root)
