"""Fashion-MNIST (Xiao et al. 2017) from its IDX files: the built-in stand-in for ImageNet.

Mirrors the paper's ImageNet classification task (image in, class label out) at laptop
scale: 28×28 grayscale photos of 10 kinds of clothing, 60,000 train / 10,000 test.
Nothing is generated: the four IDX files are read from ``DATA_DIR/fashion-mnist/`` if they
are there (the ``--data-dir`` route), else from ``/usr/share/datasets/fashion-mnist/`` (the
Debian package ``dataset-fashion-mnist``). Files may be gzipped (``.gz``) or plain.

``load_digits_split`` gives scikit-learn's 8×8 handwritten digits (1,797 images) with the same
interface, for tests that must run in a second.

Examples: ``inputs`` float32 (1, 28, 28) in [0, 1]; ``target`` the class index;
``meta["index"]`` the row in the IDX file.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np

from multimodel.corpora.cache import CorpusUnavailable, check_size, check_split, make_rng
from multimodel.corpora.errors import CorpusError
from multimodel.data.example import Example, Split

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Class names in label order (as published with the dataset)."""

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC = 0x00000803  # unsigned byte data, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte data, 1 dimension
INSTALL_HINT = "apt-get install dataset-fashion-mnist, or put the four IDX files in DATA_DIR/fashion-mnist/"
REFETCH = "reinstall dataset-fashion-mnist or replace the file with an intact copy"


def _find(name: str, data_dir: Path | None) -> Path | None:
    dirs = ([Path(data_dir) / "fashion-mnist"] if data_dir is not None else []) + [SYSTEM_DIR]
    for directory in dirs:
        for candidate in (directory / (name + ".gz"), directory / name):
            if candidate.is_file():
                return candidate
    return None


def find_files(data_dir: Path | None, split: str) -> tuple[Path, Path]:
    """Paths of the (images, labels) IDX files of ``split``; raise CorpusUnavailable if absent."""
    check_split(split)
    found = [_find(name, data_dir) for name in FILES[split]]
    missing = [name for name, path in zip(FILES[split], found) if path is None]
    if missing:
        where = f"{Path(data_dir) / 'fashion-mnist'} or {SYSTEM_DIR}" if data_dir is not None else str(SYSTEM_DIR)
        names = ", ".join(missing)
        raise CorpusUnavailable(f"Fashion-MNIST file(s) {names}[.gz] not found in {where}: {INSTALL_HINT}")
    return found[0], found[1]


def available(data_dir: Path) -> str | None:
    """None when all four IDX files are found, else what is missing and how to install it."""
    try:
        for split in FILES:
            find_files(data_dir, split)
    except CorpusUnavailable as err:
        return str(err)
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise CorpusError(path, f"cannot read IDX file ({err})", REFETCH) from err


def read_idx(path: Path, expected_magic: int, skip_bad: bool = False) -> tuple[np.ndarray, int]:
    """Read an IDX file of unsigned bytes; return (array (N, *dims), number of records dropped).

    The header is a big-endian magic number (0x0000 08 D: unsigned bytes, D dimensions) and D
    big-endian int32 sizes. A wrong magic number is always an error. A file shorter than its
    header says is an error too, unless ``skip_bad``: then the complete records are kept and
    the incomplete ones counted as dropped.
    """
    raw = _read_bytes(Path(path))
    if len(raw) < 8:
        raise CorpusError(path, f"not an IDX file (only {len(raw)} bytes)", REFETCH)
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise CorpusError(
            path, f"bad IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x}): the file is corrupt"
            " or not the file its name says", REFETCH
        )
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise CorpusError(path, "IDX header truncated", REFETCH)
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    record = int(np.prod(dims[1:])) if ndim > 1 else 1
    body = len(raw) - header_len
    expected = dims[0] * record
    if body != expected:
        if body < expected and skip_bad:
            complete = body // record
            array = np.frombuffer(raw, np.uint8, complete * record, header_len).reshape([complete, *dims[1:]])
            return array, dims[0] - complete
        raise CorpusError(
            path, f"IDX header promises {dims} = {expected} bytes of data but the file holds {body}:"
            " the file is truncated or corrupt", REFETCH + ", or set data.skip_bad=true to keep the complete records"
        )
    return np.frombuffer(raw, np.uint8, expected, header_len).reshape(dims), 0


def _read_split(images_path: Path, labels_path: Path, skip_bad: bool):
    """(images, labels, skipped, reasons, file row of each kept example), memoised per file state."""
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (images_path, labels_path))
    return _read_split_cached(images_path, labels_path, skip_bad, stamp)


@functools.lru_cache(maxsize=4)
def _read_split_cached(images_path: Path, labels_path: Path, skip_bad: bool, stamp: tuple):
    images, dropped_images = read_idx(images_path, IMAGE_MAGIC, skip_bad)
    labels, dropped_labels = read_idx(labels_path, LABEL_MAGIC, skip_bad)
    reasons = []
    if dropped_images:
        reasons.append(f"{images_path}: {dropped_images} truncated image record(s)")
    if dropped_labels:
        reasons.append(f"{labels_path}: {dropped_labels} truncated label record(s)")
    if images.shape[1:] != (28, 28):
        raise CorpusError(images_path, f"images are {images.shape[1:]}, Fashion-MNIST images are (28, 28)", REFETCH)
    n = min(len(images), len(labels))
    if len(images) != len(labels) and not skip_bad:
        raise CorpusError(images_path, f"{len(images)} images but {labels_path} holds {len(labels)} labels",
                          REFETCH + ", or set data.skip_bad=true")
    if len(images) != len(labels):
        reasons.append(f"{abs(len(images) - len(labels))} image(s) without a label or label(s) without an image")
    keep = labels[:n] < len(CLASS_NAMES)
    if not keep.all():
        if not skip_bad:
            bad = int(np.flatnonzero(~keep)[0])
            raise CorpusError(labels_path, f"label {labels[bad]} at record {bad} is not a class 0-9",
                              REFETCH + ", or set data.skip_bad=true")
        reasons.append(f"{labels_path}: {int((~keep).sum())} label(s) outside 0-9")
    index = np.flatnonzero(keep)
    skipped = max(len(images) + dropped_images, len(labels) + dropped_labels) - len(index)  # examples lost
    return images[index], labels[index], skipped, tuple(reasons), index


def read_arrays(data_dir: Path | None, split: str, skip_bad: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, 28, 28) uint8 and labels (N,) uint8 of one split (used by captions)."""
    images, labels, _, _, _ = _read_split(*find_files(data_dir, split), skip_bad)
    return images, labels


def load(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
    """Fashion-MNIST ``split``: ``size`` examples drawn at random with ``seed`` (0 = all, in file order).

    A ``size`` larger than the split gives the whole split (shuffled).
    """
    check_split(split)
    check_size(size)
    images, labels, skipped, reasons, index = _read_split(*find_files(data_dir, split), skip_bad)
    order = np.arange(len(labels))
    if size:
        order = make_rng("fashion_mnist", split, seed).permutation(len(labels))[:size]
    pixels = images[order].astype(np.float32)[:, None] / np.float32(255.0)  # (N, 1, 28, 28)
    examples = [Example(pixels[i], int(labels[j]), None, {"index": int(index[j])}) for i, j in enumerate(order)]
    return Split(examples=examples, skipped=skipped, skipped_reasons=reasons)


# ----------------------------------------------------------------------------------------
# scikit-learn's 8×8 digits: the same interface, instant, for fast tests.

DIGITS_TEST_PERCENT = 20


def digits_available(data_dir: Path) -> str | None:
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return "scikit-learn is not installed: pip install 'multimodel[digits]'"
    return None


def load_digits_split(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
    """scikit-learn's 1,797 handwritten digits, inputs float32 (1, 8, 8) in [0, 1], target 0-9.

    The split is fixed (every fifth image of a seed-0 shuffle is test: 360 test, 1,437 train);
    ``size`` examples are drawn from it with ``seed`` (0 = all).
    """
    check_split(split)
    check_size(size)
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    is_test = np.zeros(len(order), bool)
    is_test[order[:: 100 // DIGITS_TEST_PERCENT]] = True
    index = np.flatnonzero(is_test if split == "test" else ~is_test)
    if size:
        index = make_rng("digits", split, seed).permutation(index)[:size]
    images = (digits.images[index] / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8), raw values 0-16
    examples = [Example(images[i], int(digits.target[j]), None, {"index": int(j)}) for i, j in enumerate(index)]
    return Split(examples=examples)
