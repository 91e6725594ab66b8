"""Shared plumbing of the built-in corpora: seeded RNGs, stable hashes, the on-disk cache.

Every built-in corpus is a pure function of ``(split, size, seed, generator version)``. The
first call generates the split and writes it under ``DATA_DIR/builtin/<corpus>/``; later calls
read the file back. File names spell the key out (the version may name the versions of
libraries or generators the output depends on), e.g.::

    data/builtin/grammar/test-n300-s1234-v2.jsonl
    data/builtin/captions/train-n4000-s1234-v1.npz
    data/builtin/numbers/train-n5000-s1234-v1-num2words0.5.14.jsonl
    data/builtin/speech/train-n2000-s1234-v2-grammar2-numbers1-num2words0.5.14-espeak-ng1.51.npz

Bumping a corpus's ``VERSION`` (whenever its output would change) makes old files unused.
Writes are atomic (temporary file, then rename), so two processes generating the same split
at once both end up with one complete file.

Array-valued examples (images, audio features) are stored as one ``.npz``: a flat ``data``
array holding every example's inputs back to back (``uint8`` pixels or ``float16`` features)
and a JSON ``header`` string (the codec, and each example's shape, target, references and
meta). Text-only corpora use JSON lines, one example per line. When generation skipped
examples (``skip_bad``), ``<file>.skipped.json`` keeps the count and reasons.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from multimodel.corpora.errors import CorpusError  # re-exported: the readers' error for bad files
from multimodel.data.example import Example, Split
from multimodel.errors import UserError

SPLITS = ("train", "test")


class CorpusUnavailable(UserError, FileNotFoundError):
    """A corpus needs files or a program that are not installed; the message says how to get them."""


class GenerationError(UserError, RuntimeError):
    """A generator's external tool failed (e.g. espeak-ng produced no audio)."""


def check_split(split: str) -> None:
    """Raise ValueError unless ``split`` is "train" or "test"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 0:
        raise ValueError(f"size must be an integer >= 0 (0 = the corpus's natural size), got {size!r}")


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process and Python version."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def in_test_split(key: str, test_percent: int) -> bool:
    """Whether the item named ``key`` belongs to the held-out split (seed independent).

    The assignment depends only on ``key``, so test items never appear in any training split,
    whatever seeds and sizes are used.
    """
    return stable_hash("heldout:" + key) % 100 < test_percent


def make_rng(corpus: str, split: str, seed: int) -> np.random.Generator:
    """The generator's random stream for one (corpus, split, seed)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(corpus.encode()), SPLITS.index(split)])


def cache_path(
    data_dir: Path | str, corpus: str, split: str, size: int, seed: int, version: int | str, ext: str
) -> Path:
    """``DATA_DIR/builtin/<corpus>/<split>-n<size>-s<seed>-v<version>.<ext>``."""
    return Path(data_dir) / "builtin" / corpus / f"{split}-n{size}-s{seed}-v{version}.{ext}"


def write_atomically(path: Path, write) -> None:
    """Write ``path`` whole or not at all: ``write(handle)`` fills a temporary file (binary) beside
    it, which then replaces ``path``; a reader never sees a partial file, a failure leaves none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a shared data dir wants them readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------
# Text examples: JSON lines.


def save_jsonl(path: Path, examples: Sequence[Example]) -> None:
    """Write text examples (``inputs`` and ``target`` are JSON values) one per line."""

    def write(handle) -> None:
        for ex in examples:
            record = {"inputs": ex.inputs, "target": ex.target, "references": ex.references, "meta": ex.meta}
            handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    write_atomically(path, write)


def load_jsonl(path: Path) -> list[Example]:
    examples = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            try:
                r = json.loads(line)
                examples.append(Example(r["inputs"], r["target"], r["references"], r["meta"]))
            except (ValueError, KeyError) as err:
                raise CorpusError(path, f"unreadable cache record ({err})", "delete the file to regenerate it",
                                  line=line_no) from err
    return examples


# ----------------------------------------------------------------------------------------
# Array examples: one npz with a flat data array and JSON records.

_ARRAY_CODECS = ("uint8_unit", "float16")


def _encode(array: np.ndarray, codec: str) -> np.ndarray:
    if codec == "uint8_unit":  # values k/255 for integer k (pixels) are stored exactly
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return array.astype(np.float16)


def _decode(stored: np.ndarray, codec: str) -> np.ndarray:
    if codec == "uint8_unit":
        return stored.astype(np.float32) / np.float32(255.0)
    return stored.astype(np.float32)


def save_arrays(path: Path, examples: Sequence[Example], codec: str, compress: bool) -> None:
    """Write examples whose ``inputs`` are float arrays (targets/meta must be JSON values).

    ``codec``: "uint8_unit" (values in [0, 1] stored as k/255, exact for 8-bit pixels) or
    "float16" (features).
    """
    if codec not in _ARRAY_CODECS:
        raise ValueError(f"codec must be one of {_ARRAY_CODECS}")
    flat = [_encode(np.asarray(ex.inputs), codec).ravel() for ex in examples]
    data = np.concatenate(flat) if flat else np.zeros(0, np.uint8 if codec == "uint8_unit" else np.float16)
    records = [
        {"shape": list(np.shape(ex.inputs)), "target": ex.target, "references": ex.references, "meta": ex.meta}
        for ex in examples
    ]
    header = json.dumps({"codec": codec, "records": records}, ensure_ascii=False)
    save = np.savez_compressed if compress else np.savez

    write_atomically(path, lambda handle: save(handle, data=data, header=np.array(header)))


def load_arrays(path: Path) -> list[Example]:
    """Read a file written by :func:`save_arrays`; inputs come back as float32 arrays."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = npz["data"]
            header = json.loads(str(npz["header"]))
    except (OSError, ValueError, KeyError) as err:
        raise CorpusError(path, f"unreadable cache file ({err})", "delete it to regenerate it") from err
    codec = header["codec"]
    examples, offset = [], 0
    for r in header["records"]:
        n = int(np.prod(r["shape"])) if r["shape"] else 1
        inputs = _decode(data[offset : offset + n], codec).reshape(r["shape"])
        offset += n
        examples.append(Example(inputs, r["target"], r["references"], r["meta"]))
    if offset != data.size:
        raise CorpusError(path, f"cache file holds {data.size} values, its records need {offset}",
                          "delete it to regenerate it")
    return examples


def cached_split(path: Path, generate, save, load) -> Split:
    """Load ``path`` if present, else ``generate() -> Split``, save its examples, reload them.

    Reloading after saving makes a fresh split bit-identical to a cached one (features are
    quantised to their storage type either way). What generation skipped is kept beside the
    file (``<file>.skipped.json``) and reported again on reload.
    """
    skipped_path = path.with_name(path.name + ".skipped.json")
    if path.is_file():
        skipped, reasons = 0, ()
        if skipped_path.is_file():
            info = json.loads(skipped_path.read_text(encoding="utf-8"))
            skipped, reasons = int(info["skipped"]), tuple(info["reasons"])
        return Split(examples=load(path), skipped=skipped, skipped_reasons=reasons)
    split = generate()
    if split.skipped:
        info = json.dumps({"skipped": split.skipped, "reasons": list(split.skipped_reasons)}, ensure_ascii=False)
        write_atomically(skipped_path, lambda handle: handle.write(info.encode("utf-8")))
    save(path, split.examples)
    return Split(examples=load(path), skipped=split.skipped, skipped_reasons=split.skipped_reasons)


def dedupe_keep_order(items: Iterable[Any]) -> list[Any]:
    """``items`` without repeats, first occurrences in order."""
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
