"""Captioned Fashion-MNIST collages: the built-in stand-in for COCO image captioning.

Mirrors the paper's COCO captioning task (image in, English sentence out, several reference
captions per image). Each image is a 64×64 grayscale canvas divided into a 2×2 grid of 32×32
cells; 2-4 real Fashion-MNIST photos (28×28) are pasted into distinct random cells, each
shifted by 0-4 pixels inside its cell. Training canvases use only Fashion-MNIST training
photos, test canvases only test photos.

Every canvas gets 6-7 reference captions from different templates that name every item and,
in all but one, its position, e.g. for a sneaker top left and a bag bottom right:

* "a sneaker on the top left and a bag on the bottom right"
* "on the top left there is a sneaker and on the bottom right there is a bag"
* "two items: a sneaker at the top left and a bag at the bottom right"
* "a bag in the bottom right corner and a sneaker in the top left corner"
* "in the top row a sneaker on the left, in the bottom row a bag on the right"
* "a picture of a sneaker and a bag"
* "a sneaker at the top left and a bag diagonally opposite" (two items only: relations such as
  "to the left of", "above", "diagonally opposite")

``target`` is one reference picked at random (seeded); ``references`` all of them;
``meta["items"]`` the class, name, cell and source photo of each item.

Sizes: 0 means the natural size, 4,000 train / 400 test. Cache (pixels stored exactly as
uint8): ``DATA_DIR/builtin/captions/<split>-n<size>-s<seed>-v<version>.npz``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from multimodel.corpora import cache, fashion_mnist
from multimodel.data.example import Example, Split

CORPUS = "captions"
VERSION = 1
NATURAL_SIZES = {"train": 4000, "test": 400}
CANVAS = 64
CELL = 32
ITEM = 28
MIN_ITEMS, MAX_ITEMS = 2, 4

NOUNS = (  # (singular, plural), in Fashion-MNIST label order
    ("t-shirt", "t-shirts"),
    ("pair of trousers", "pairs of trousers"),
    ("pullover", "pullovers"),
    ("dress", "dresses"),
    ("coat", "coats"),
    ("sandal", "sandals"),
    ("shirt", "shirts"),
    ("sneaker", "sneakers"),
    ("bag", "bags"),
    ("ankle boot", "ankle boots"),
)
POSITIONS = {(0, 0): "top left", (0, 1): "top right", (1, 0): "bottom left", (1, 1): "bottom right"}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def available(data_dir: Path) -> str | None:
    """None when the Fashion-MNIST IDX files are found, else how to install them."""
    return fashion_mnist.available(data_dir)


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _join(parts: list[str], sep: str = ", ") -> str:
    return parts[0] if len(parts) == 1 else sep.join(parts[:-1]) + " and " + parts[-1]


def captions_for(items: list[tuple[int, tuple[int, int]]]) -> list[str]:
    """All reference captions of a canvas holding ``items`` = [(class, (row, col)), ...]."""
    items = sorted(items, key=lambda it: it[1])  # reading order
    named = [(_a(NOUNS[c][0]), POSITIONS[cell], cell) for c, cell in items]
    caps = [
        _join([f"{thing} on the {pos}" for thing, pos, _ in named]),
        _join([f"on the {pos} there is {thing}" for thing, pos, _ in named]),
        f"{COUNT_WORDS[len(named)]} items: " + _join([f"{thing} at the {pos}" for thing, pos, _ in named]),
        _join([f"{thing} in the {pos} corner" for thing, pos, _ in reversed(named)]),
    ]
    rows = []
    for row, row_name in ((0, "top"), (1, "bottom")):
        in_row = [(thing, "left" if cell[1] == 0 else "right") for thing, _, cell in named if cell[0] == row]
        if in_row:
            rows.append(f"in the {row_name} row " + _join([f"{thing} on the {side}" for thing, side in in_row]))
    caps.append(", ".join(rows))
    counts = Counter(c for c, _ in items)
    groups = [_a(NOUNS[c][0]) if k == 1 else f"{COUNT_WORDS[k]} {NOUNS[c][1]}" for c, k in counts.items()]
    caps.append("a picture of " + _join(groups))
    if len(named) == 2:
        (first, pos1, (r1, c1)), (second, pos2, (r2, c2)) = named
        if r1 == r2:
            caps.append(f"{first} to the left of {second}, both in the {'top' if r1 == 0 else 'bottom'} row")
        elif c1 == c2:
            caps.append(f"{first} above {second} on the {'left' if c1 == 0 else 'right'} side")
        else:
            caps.append(f"{first} at the {pos1} and {second} diagonally opposite")
    return cache.dedupe_keep_order(caps)


def compose(photos: list[np.ndarray], cells: list[tuple[int, int]], offsets: list[tuple[int, int]]) -> np.ndarray:
    """Paste uint8 (28, 28) photos into a (64, 64) uint8 canvas at cell + offset."""
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    for photo, (row, col), (dy, dx) in zip(photos, cells, offsets):
        y, x = row * CELL + dy, col * CELL + dx
        canvas[y : y + ITEM, x : x + ITEM] = photo
    return canvas


def _generate(data_dir: Path, split: str, size: int, seed: int) -> Split:
    images, labels = fashion_mnist.read_arrays(data_dir, split)
    rng = cache.make_rng(CORPUS, split, seed)
    all_cells = list(POSITIONS)
    examples = []
    for _ in range(size):
        n = int(rng.integers(MIN_ITEMS, MAX_ITEMS + 1))
        cells = [all_cells[i] for i in rng.choice(len(all_cells), n, replace=False)]
        sources = rng.integers(0, len(labels), n)
        offsets = [tuple(int(v) for v in rng.integers(0, CELL - ITEM + 1, 2)) for _ in range(n)]
        canvas = compose([images[s] for s in sources], cells, offsets)
        classes = [int(labels[s]) for s in sources]
        refs = captions_for(list(zip(classes, cells)))
        target = refs[int(rng.integers(len(refs)))]
        meta = {
            "items": [
                {"class": c, "name": NOUNS[c][0], "cell": list(cell), "source_index": int(s)}
                for c, cell, s in sorted(zip(classes, cells, sources), key=lambda t: t[1])
            ]
        }
        pixels = canvas.astype(np.float32)[None] / np.float32(255.0)  # (1, 64, 64)
        examples.append(Example(pixels, target, refs, meta))
    return Split(examples=examples)


def load(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
    """Captioning examples: inputs float32 (1, 64, 64) in [0, 1], target one caption."""
    cache.check_split(split)
    cache.check_size(size)
    size = size or NATURAL_SIZES[split]
    path = cache.cache_path(data_dir, CORPUS, split, size, seed, VERSION, "npz")
    return cache.cached_split(
        path,
        lambda: _generate(data_dir, split, size, seed),
        lambda p, ex: cache.save_arrays(p, ex, "uint8_unit", compress=True),
        cache.load_arrays,
    )
