"""Number expressions in English, German and French: the built-in stand-in for WMT translation.

Mirrors the paper's four WMT translation tasks (EN→DE, DE→EN, EN→FR, FR→EN). Each underlying
item is a number-like value of one of four kinds, rendered in the three languages with
``num2words`` plus month names and articles written here:

* cardinal, 0-9999: "twenty-one" / "einundzwanzig" / "vingt et un";
* ordinal, 1-1000: "twenty-first" / "einundzwanzigste" / "vingt et unième";
* year, 1000-2099: "the year nineteen ninety-nine" / "das Jahr neunzehnhundertneunundneunzig" /
  "l'année mille neuf cent quatre-vingt-dix-neuf";
* date, 1 January 1900 - 31 December 2099: "the twenty-first of March two thousand and five" /
  "der einundzwanzigste März zweitausendfünf" / "le vingt et un mars deux mille cinq"
  ("le premier mars ..." on the first of a month).

Years and dates carry words ("the year", "of", articles) so that no text of one kind equals a
text of another (French writes the year 1999 and the number 1999 alike). English thousands are
written without num2words' comma ("one thousand nine hundred and ninety-nine").

The four directions share one underlying sample per (split, size, seed): DE→EN shows the same
items as EN→DE, reversed. Whether an item is held out depends only on its (kind, value)
(:func:`in_test_split`, 10 %), so no test expression ever appears in any training split.
Cardinals are drawn with a uniform number of digits (1-4), so small numbers are common.

Sizes: 0 means the natural size, 5,000 train / 500 test; about 76,000 train items exist.
Cache: ``DATA_DIR/builtin/numbers/<split>-n<size>-s<seed>-v<version>.jsonl`` holds each item in
all three languages.
"""

from __future__ import annotations

import calendar
import functools
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from multimodel.config import ConfigError
from multimodel.corpora import cache
from multimodel.data.example import Example, Split

CORPUS = "numbers"
VERSION = 1
LANGUAGES = ("en", "de", "fr")
DIRECTIONS = (("en", "de"), ("de", "en"), ("en", "fr"), ("fr", "en"))
KINDS = ("cardinal", "ordinal", "year", "date")
KIND_WEIGHTS = (0.35, 0.15, 0.15, 0.35)
TEST_PERCENT = 10
NATURAL_SIZES = {"train": 5000, "test": 500}

MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"),
}
YEAR_RANGE = (1000, 2099)
DATE_YEAR_RANGE = (1900, 2099)
ORDINAL_RANGE = (1, 1000)


def cache_version() -> str:
    """The version in cache file names: this generator's and num2words' (its wording may change)."""
    try:
        n2w = importlib.metadata.version("num2words")
    except importlib.metadata.PackageNotFoundError:
        n2w = "unknown"
    return f"{VERSION}-num2words{n2w}"


def available(data_dir: Path) -> str | None:
    """None when num2words is importable, else how to install it."""
    try:
        import num2words  # noqa: F401
    except ImportError:
        return "num2words is not installed: pip install num2words"
    return None


@functools.lru_cache(maxsize=None)
def _n2w(value: int, lang: str, to: str) -> str:
    from num2words import num2words

    text = num2words(value, lang=lang, to=to)
    return text.replace(",", "") if lang == "en" else text


@dataclass(frozen=True)
class Expression:
    """One underlying item: its kind, its value and its text in each language."""

    kind: str
    value: int | tuple[int, int, int]
    texts: dict[str, str]

    @property
    def key(self) -> str:
        return expression_key(self.kind, self.value)


def expression_key(kind: str, value: int | tuple[int, int, int]) -> str:
    """``"cardinal:21"``, ``"date:2005-03-21"``: the identity used for the train/test split."""
    if kind == "date":
        y, m, d = value  # type: ignore[misc]
        return f"date:{y:04d}-{m:02d}-{d:02d}"
    return f"{kind}:{value}"


def in_test_split(kind: str, value: int | tuple[int, int, int]) -> bool:
    """Whether this item is held out (fixed, seed-independent, about 10 % of items)."""
    return cache.in_test_split(expression_key(kind, value), TEST_PERCENT)


def render(kind: str, value: int | tuple[int, int, int], lang: str) -> str:
    """The expression of ``value`` (an int, or (year, month, day) for dates) in ``lang``."""
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    if kind == "cardinal":
        return _n2w(int(value), lang, "cardinal")  # type: ignore[arg-type]
    if kind == "ordinal":
        return _n2w(int(value), lang, "ordinal")  # type: ignore[arg-type]
    if kind == "year":
        words = _n2w(int(value), lang, "year")  # type: ignore[arg-type]
        return {"en": "the year ", "de": "das Jahr ", "fr": "l'année "}[lang] + words
    if kind == "date":
        year, month, day = value  # type: ignore[misc]
        month_name = MONTHS[lang][month - 1]
        year_words = _n2w(year, lang, "year")
        if lang == "en":
            return f"the {_n2w(day, 'en', 'ordinal')} of {month_name} {year_words}"
        if lang == "de":
            return f"der {_n2w(day, 'de', 'ordinal')} {month_name} {year_words}"
        day_words = "premier" if day == 1 else _n2w(day, "fr", "cardinal")  # French dates: cardinals, but "le premier"
        return f"le {day_words} {month_name} {year_words}"
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def expression(kind: str, value: int | tuple[int, int, int]) -> Expression:
    return Expression(kind, value, {lang: render(kind, value, lang) for lang in LANGUAGES})


def _draw_value(rng: np.random.Generator, kind: str) -> int | tuple[int, int, int]:
    if kind == "cardinal":
        digits = int(rng.integers(1, 5))
        low = 0 if digits == 1 else 10 ** (digits - 1)
        return int(rng.integers(low, 10**digits))
    if kind == "ordinal":
        return int(rng.integers(ORDINAL_RANGE[0], ORDINAL_RANGE[1] + 1))
    if kind == "year":
        return int(rng.integers(YEAR_RANGE[0], YEAR_RANGE[1] + 1))
    year = int(rng.integers(DATE_YEAR_RANGE[0], DATE_YEAR_RANGE[1] + 1))
    month = int(rng.integers(1, 13))
    day = int(rng.integers(1, calendar.monthrange(year, month)[1] + 1))
    return (year, month, day)


def sample_values(
    rng: np.random.Generator, split: str, count: int, kinds: tuple[str, ...] = KINDS,
    weights: tuple[float, ...] = KIND_WEIGHTS, exclude: set[str] | None = None,
) -> list[tuple[str, int | tuple[int, int, int]]]:
    """``count`` distinct (kind, value) pairs of ``split``, drawn with ``rng``.

    Used by this corpus and by the speech corpus (which says English number expressions), so
    both hold out the same items. Raises ValueError when ``count`` exceeds what can be found.
    """
    cache.check_split(split)
    probs = np.asarray(weights, float) / np.sum(weights)
    chosen: list[tuple[str, int | tuple[int, int, int]]] = []
    seen = set(exclude or ())
    attempts = 0
    while len(chosen) < count:
        attempts += 1
        if attempts > 100 * count + 10_000:
            raise ConfigError(f"{CORPUS}: could not draw {count} distinct {split} items; ask for fewer")
        kind = kinds[int(rng.choice(len(kinds), p=probs))]
        value = _draw_value(rng, kind)
        key = expression_key(kind, value)
        if key in seen or in_test_split(kind, value) != (split == "test"):
            continue
        seen.add(key)
        chosen.append((kind, value))
    return chosen


def _generate(split: str, size: int, seed: int) -> Split:
    rng = cache.make_rng(CORPUS, split, seed)
    items = [expression(kind, value) for kind, value in sample_values(rng, split, size)]
    examples = [
        Example(it.texts, it.key, None, {"kind": it.kind, "value": list(it.value) if it.kind == "date" else it.value})
        for it in items
    ]
    return Split(examples=examples)


def load_expressions(data_dir: Path, split: str, size: int, seed: int) -> list[Expression]:
    """The shared underlying items of one (split, size, seed), generated once and cached."""
    cache.check_split(split)
    cache.check_size(size)
    size = size or NATURAL_SIZES[split]
    path = cache.cache_path(data_dir, CORPUS, split, size, seed, cache_version(), "jsonl")
    stored = cache.cached_split(path, lambda: _generate(split, size, seed), cache.save_jsonl, cache.load_jsonl)
    out = []
    for ex in stored.examples:
        kind, value = ex.meta["kind"], ex.meta["value"]
        out.append(Expression(kind, tuple(value) if kind == "date" else value, dict(ex.inputs)))
    return out


def load(
    data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False, *, src: str = "en", tgt: str = "de"
) -> Split:
    """Translation examples ``src`` → ``tgt`` (inputs: source text; target: translation).

    ``references`` lists every translation of the same source text within the split (one, as
    the renderings are unambiguous); ``meta`` has kind, value and key of the item.
    """
    if (src, tgt) not in DIRECTIONS and not (src in LANGUAGES and tgt in LANGUAGES and src != tgt):
        raise ValueError(f"unsupported direction {src}->{tgt}; languages are {LANGUAGES}")
    items = load_expressions(data_dir, split, size, seed)
    refs: dict[str, list[str]] = {}
    for it in items:
        refs.setdefault(it.texts[src], [])
        if it.texts[tgt] not in refs[it.texts[src]]:
            refs[it.texts[src]].append(it.texts[tgt])
    examples = [
        Example(it.texts[src], it.texts[tgt], list(refs[it.texts[src]]), {"kind": it.kind, "key": it.key})
        for it in items
    ]
    return Split(examples=examples)


def load_pair(src: str, tgt: str) -> Callable[..., Split]:
    """A ``load(data_dir, split, size, seed, skip_bad=False)`` for one direction (for Task.load)."""
    if src not in LANGUAGES or tgt not in LANGUAGES or src == tgt:
        raise ValueError(f"unsupported direction {src}->{tgt}; languages are {LANGUAGES}")

    def load_direction(data_dir: Path, split: str, size: int, seed: int, skip_bad: bool = False) -> Split:
        return load(data_dir, split, size, seed, skip_bad, src=src, tgt=tgt)

    load_direction.__name__ = f"load_{src}_{tgt}"
    load_direction.__doc__ = f"Number expressions {src} → {tgt} (see multimodel.corpora.numbers)."
    return load_direction
