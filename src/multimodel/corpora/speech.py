"""Synthetic spoken English from espeak-ng: the built-in stand-in for WSJ speech recognition.

Mirrors the paper's WSJ speech-recognition task (audio in, English transcript out). Each
utterance says either a short sentence of the parsing grammar (3-8 words, ``grammar.py``) or an
English number expression (cardinal, ordinal, year or date, ``numbers.py``), half and half,
so the transcripts share vocabulary with the parsing and translation tasks. Sentences and
numbers are held out exactly as in those corpora, so no test transcript is a training one.

Audio is synthesised with ``espeak-ng --stdout`` (22,050 Hz), trimmed of leading and
trailing silence (0.1 s kept), resampled to 16 kHz (windowed-sinc, ``audio_features.py``) and
turned into 80 log-mel features per 10 ms frame (25 ms windows). Utterances last 0.4-4 s
(mean 2 s; the shortest say one number word), so at most about 400 frames.

Speakers and speaking rates are held out: the test split uses only voices and speeds that
training never uses.

* train voices (accent + variant): en-us, en-gb, en-gb-x-rp, en-gb-x-gbclan, and en-us+f2,
  en-gb+f4, en-us+m3, en-gb-x-rp+f5, en-us+m6, en-gb-x-gbclan+m4;
* test voices: en-gb-scotland, en-029, en-us-nyc, en-gb-x-gbcwmd (accents never used in
  training), plain and with the variants f1, f3, m2, m7 (never used in training);
* train speeds (words per minute): 130, 140, 150, 160, 170, 180, 190, 200;
  test speeds: 145, 165, 185;
* pitch (0-99): uniform in 30-70 in both splits.

Examples: ``inputs`` float32 (T_frames, 80); ``target`` the lower-case transcript (number
words keep num2words' hyphens: "twenty-one"); ``meta``: voice, speed, pitch, kind
("sentence", "cardinal", "ordinal", "year", "date"), duration_s.

Sizes: 0 means the natural size, 2,000 train / 200 test. Generation runs espeak-ng in a pool
of threads (one per core, at most 4): 2,000 utterances cost about 30 s of CPU and took
63 s on a busy 2-core machine; reloading them takes half a second.
Cache (features as float16, no audio): ``DATA_DIR/builtin/speech/<split>-n<size>-s<seed>-v<version>.npz``,
the version naming those of the grammar and number generators and of espeak-ng (from
``espeak-ng --version``), so another espeak-ng release generates the audio again.
Needs the ``espeak-ng`` program (``apt-get install espeak-ng``) to generate, not to reload: without
it, a cached split made by any espeak-ng release is loaded (the newest file when there are several).
"""

from __future__ import annotations

import contextlib
import io
import hashlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from multimodel.corpora import cache, grammar, numbers
from multimodel.corpora.audio_file import missing_frames, wav_truncation
from multimodel.corpora.errors import CorpusError
from multimodel.corpora.audio_features import TARGET_SAMPLE_RATE, log_mel_spectrogram, resample
from multimodel.data.example import Example, Split

CORPUS = "speech"
VERSION = 2
NATURAL_SIZES = {"train": 2000, "test": 200}
N_MELS = 80
TRAIN_VOICES = (
    "en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan",
    "en-us+f2", "en-gb+f4", "en-us+m3", "en-gb-x-rp+f5", "en-us+m6", "en-gb-x-gbclan+m4",
)
TEST_VOICES = (
    "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbcwmd",
    "en-gb-scotland+f3", "en-029+m7", "en-us-nyc+f1", "en-gb-x-gbcwmd+m2",
)
TRAIN_SPEEDS = (130, 140, 150, 160, 170, 180, 190, 200)
TEST_SPEEDS = (145, 165, 185)
PITCH_RANGE = (30, 70)
SENTENCE_WORDS = (3, 8)
SILENCE_THRESHOLD = 1e-3
SILENCE_KEEP_S = 0.1
INSTALL_HINT = "apt-get install espeak-ng"


def _version(espeak: str | None) -> str:
    """This generator's version, those of the two text generators it draws from, and espeak-ng's."""
    return f"{VERSION}-grammar{grammar.VERSION}-numbers{numbers.cache_version()}-espeak-ng{espeak}"


def espeak_version() -> str | None:
    """The installed espeak-ng's version (e.g. "1.51"), or None when espeak-ng is not on PATH."""
    program = _espeak()
    return None if program is None else _espeak_version_of(program)


@lru_cache(maxsize=None)
def _espeak_version_of(program: str) -> str:
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise cache.GenerationError(f"cannot run {program} --version: {err}") from err
    # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data"
    found = re.search(r"text-to-speech:\s*([0-9][\w.+-]*)", out)
    if found:
        return found.group(1)
    # An unfamiliar format still names one release: key the cache by a hash of what it printed.
    return "x" + hashlib.sha1(out.strip().encode()).hexdigest()[:10]


def voices(split: str) -> tuple[str, ...]:
    cache.check_split(split)
    return TRAIN_VOICES if split == "train" else TEST_VOICES


def speeds(split: str) -> tuple[int, ...]:
    cache.check_split(split)
    return TRAIN_SPEEDS if split == "train" else TEST_SPEEDS


def _espeak() -> str | None:
    return shutil.which("espeak-ng")


def available(data_dir: Path) -> str | None:
    """None when espeak-ng and soundfile are usable, else how to install what is missing."""
    if _espeak() is None:
        return f"espeak-ng not found on PATH (needed to synthesise the speech corpus): {INSTALL_HINT}"
    try:
        import soundfile  # noqa: F401
    except ImportError:
        return "soundfile is not installed: pip install soundfile (and apt-get install libsndfile1)"
    return None


@dataclass(frozen=True)
class Utterance:
    """What to say and how: the plan of one example, fixed before any audio is made."""

    text: str
    kind: str
    voice: str
    speed: int
    pitch: int


def transcript_of_sentence(sentence: str) -> str:
    """Lower-case words of a tokenised grammar sentence, punctuation tokens dropped."""
    return " ".join(w.lower() for w in sentence.split() if any(ch.isalnum() for ch in w))


def plan(split: str, size: int, seed: int) -> list[Utterance]:
    """The utterances of one (split, size, seed): texts, voices, speeds and pitches."""
    rng = cache.make_rng(CORPUS, split, seed)
    n_sentences = size // 2
    trees = grammar.sample_trees(rng, split, n_sentences, *SENTENCE_WORDS)
    items = [(transcript_of_sentence(grammar.sentence_text(t)), "sentence") for t in trees]
    for kind, value in numbers.sample_values(rng, split, size - n_sentences):
        items.append((numbers.render(kind, value, "en").lower(), kind))
    order = rng.permutation(len(items))
    voice_pool, speed_pool = voices(split), speeds(split)
    return [
        Utterance(
            text=items[i][0],
            kind=items[i][1],
            voice=voice_pool[int(rng.integers(len(voice_pool)))],
            speed=int(speed_pool[int(rng.integers(len(speed_pool)))]),
            pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        )
        for i in order
    ]


def synthesize(utt: Utterance, espeak: str | None = None) -> tuple[np.ndarray, int]:
    """Run espeak-ng; return (float32 mono waveform, sample rate). Raises GenerationError."""
    import soundfile

    espeak = espeak or _espeak()
    if espeak is None:
        raise cache.CorpusUnavailable(f"espeak-ng not found on PATH: {INSTALL_HINT}")
    cmd = [espeak, "-v", utt.voice, "-s", str(utt.speed), "-p", str(utt.pitch), "--stdout", utt.text]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise cache.GenerationError(f"espeak-ng failed on {utt.text!r} ({utt.voice}): {err}") from err
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        message = proc.stderr.decode(errors="replace").strip()
        raise cache.GenerationError(
            f"espeak-ng produced no audio for {utt.text!r} with voice {utt.voice}: {message}"
        )
    try:
        audio, rate = soundfile.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=False)
    except RuntimeError as err:  # soundfile.LibsndfileError derives from RuntimeError
        raise cache.GenerationError(f"cannot read espeak-ng output for {utt.text!r}: {err}") from err
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    return audio, int(rate)


def trim_silence(audio: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading/trailing near-silence, keeping SILENCE_KEEP_S seconds on each side."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE_THRESHOLD)
    if loud.size == 0:
        return audio
    keep = int(SILENCE_KEEP_S * rate)
    return audio[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def features(audio: np.ndarray, rate: int) -> np.ndarray:
    """(T_frames, 80) log-mel features of a waveform, after resampling to 16 kHz."""
    return log_mel_spectrogram(resample(audio, rate, TARGET_SAMPLE_RATE), TARGET_SAMPLE_RATE, N_MELS)


@contextlib.contextmanager
def _torch_threads(n: int):
    """Our own worker threads provide the parallelism; torch's intra-op pool would only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _make_example(utt: Utterance, espeak: str) -> Example | str:
    try:
        audio, rate = synthesize(utt, espeak)
    except cache.GenerationError as err:
        return str(err)
    audio = trim_silence(audio, rate)
    meta = {"voice": utt.voice, "speed": utt.speed, "pitch": utt.pitch, "kind": utt.kind,
            "duration_s": round(len(audio) / rate, 3)}
    return Example(features(audio, rate), utt.text, None, meta)


def _generate(split: str, size: int, seed: int, skip_bad: bool) -> Split:
    espeak = _espeak()
    if espeak is None:
        raise cache.CorpusUnavailable(f"espeak-ng not found on PATH (needed to synthesise speech): {INSTALL_HINT}")
    utterances = plan(split, size, seed)
    workers = max(1, min(4, os.cpu_count() or 1))
    with _torch_threads(1), ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda u: _make_example(u, espeak), utterances))
    examples = [r for r in results if isinstance(r, Example)]
    errors = [r for r in results if isinstance(r, str)]
    if errors and not skip_bad:
        raise cache.GenerationError(
            f"{len(errors)} of {size} utterances failed; first: {errors[0]} (data.skip_bad=true skips them)"
        )
    return Split(examples=examples, skipped=len(errors), skipped_reasons=tuple(errors[:20]))


def load(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
    """Speech-recognition examples: inputs float32 (T_frames, 80) log-mel, target the transcript."""
    cache.check_split(split)
    cache.check_size(size)
    size = size or NATURAL_SIZES[split]
    espeak = espeak_version()
    path = cache.cache_path(data_dir, CORPUS, split, size, seed, _version(espeak), "npz")
    if espeak is None:  # cannot generate; reload what any espeak-ng release made, if anything
        pattern = cache.cache_path(data_dir, CORPUS, split, size, seed, _version("*"), "npz").name
        made = sorted(path.parent.glob(pattern), key=lambda p: p.stat().st_mtime_ns)
        path = made[-1] if made else path
    return cache.cached_split(
        path,
        lambda: _generate(split, size, seed, skip_bad),
        lambda p, ex: cache.save_arrays(p, ex, "float16", compress=False),
        cache.load_arrays,
    )


def read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    """A mono float32 waveform and its sample rate from any file soundfile reads (WAV, FLAC, ...).

    Raises:
        CorpusError: the file is missing, unreadable or empty.
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise CorpusError(path, "audio file not found", "check the path")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, channels)
        declared = soundfile.info(str(path)).frames
    except (RuntimeError, OSError, ValueError, TypeError) as error:
        raise CorpusError(path, f"corrupt or unreadable audio ({error})", "give a WAV or FLAC file") from error
    if samples.shape[0] == 0:
        raise CorpusError(path, "audio has no samples", "give a non-empty recording")
    cut = wav_truncation(path) or missing_frames(declared, samples.shape[0])
    if cut:
        raise CorpusError(path, cut, "give the whole recording (the file was cut short)")
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32)), int(rate)
