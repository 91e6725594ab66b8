"""JSONL speech manifests: the generic way in for WSJ-like corpora (MultiModel section 4).

A manifest is a UTF-8 text file with one JSON object a line::

    {"audio": "wav/011c0201.wav", "text": "THE SALE OF THE HOTELS ..."}

``audio`` is a path relative to the manifest's folder (an absolute path is used as is);
``text`` is the transcript. Other keys (speaker, duration, ...) are kept in ``meta``. Blank lines
are ignored; a line that is not a JSON object, lacks a key or has an empty text is a bad record
(error naming the line). Audio is read as in :mod:`multimodel.corpora.librispeech` (mono float32,
no resampling) and the transcript is lower-cased and whitespace-normalised the same way, so
WSJ and LibriSpeech targets look alike.
"""

from __future__ import annotations

import json
from pathlib import Path

from multimodel.corpora.errors import BadRecords, CorpusError, require_exists
from multimodel.corpora.librispeech import SAMPLE_RATE, audio_frames, normalise_transcript, read_audio
from multimodel.data.example import Example, LazyExamples, Split

REQUIRED_KEYS = ("audio", "text")
"""The keys every line needs by default (``audio_key`` and ``text_key`` name others)."""


def read_manifest(
    path: str | Path, limit: int = 0, skip_bad: bool = False, sample_rate: int = SAMPLE_RATE,
    lazy: bool = False, audio_key: str = "audio", text_key: str = "text",
) -> Split:
    """Read a JSONL speech manifest into a :class:`Split`.

    Args:
        path: the manifest file.
        limit: keep at most this many utterances (0 = all), in file order.
        skip_bad: skip (and count) bad lines and bad audio instead of raising.
        sample_rate: the rate every audio file must have.
        lazy: read each audio file's header now (its length, for length buckets) and decode it
            when its example is read (:class:`~multimodel.data.example.LazyExamples`); a corrupt
            file then raises when read, whatever ``skip_bad`` says.
        audio_key: the key of the audio path (default ``"audio"``).
        text_key: the key of the transcript (default ``"text"``).

    Returns:
        Examples with ``inputs`` float32 waveform ``(T,)``, ``target`` = normalised transcript,
        ``references = [target]``, ``meta`` = the line's other keys plus ``sample_rate``, ``path``
        and ``line``.
    """
    path = require_exists(path, "manifest", 'pass a JSONL file of {"audio": ..., "text": ...} lines')
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(path, f"cannot read the manifest ({error})", "save it as UTF-8 text") from error
    bad = BadRecords(skip_bad)
    examples: list[Example] = []
    lengths: list[int] = []
    keys = (audio_key, text_key)
    for number, line in enumerate(lines, start=1):
        if limit and len(examples) >= limit:
            break
        if not line.strip():
            continue
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(
                    path,
                    f"not valid JSON ({error.msg})",
                    "repair the line or set data.skip_bad=true",
                    line=number,
                ) from error
            if not isinstance(record, dict):
                raise CorpusError(
                    path, "a line must be a JSON object", 'write {"audio": ..., "text": ...}', line=number
                )
            missing = [key for key in keys if key not in record]
            if missing:
                raise CorpusError(
                    path,
                    f"missing key(s) {', '.join(repr(k) for k in missing)}",
                    f"every line needs {audio_key!r} (path relative to the manifest) and {text_key!r}",
                    line=number,
                )
            target = normalise_transcript(str(record[text_key]))
            if not target:
                raise CorpusError(
                    path, "empty transcript", "repair the line or set data.skip_bad=true", line=number
                )
            audio_path = path.parent / str(record[audio_key])
            try:
                waveform = None if lazy else read_audio(audio_path, sample_rate)
                length = audio_frames(audio_path) if lazy else len(waveform)
            except CorpusError as error:  # name the manifest line as well as the audio file
                raise CorpusError(
                    error.path, f"{error.problem} (from {path.name} line {number})", error.fix
                ) from error
        except CorpusError as error:
            bad.skip(error)
            continue
        meta = {k: v for k, v in record.items() if k not in keys}
        meta.update(sample_rate=sample_rate, path=str(audio_path), line=number)
        examples.append(Example(inputs=waveform, target=target, references=[target], meta=meta))
        lengths.append(length)
    if lazy:
        return bad.split(LazyExamples.deferred(examples, lambda ex: read_audio(ex.meta["path"], sample_rate),
                                               lengths=lengths), source=path)
    return bad.split(examples, source=path)
