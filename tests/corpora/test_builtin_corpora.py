"""Built-in offline corpora: deterministic, cached, held out, and saying what they claim.

Splits are tiny (tens of examples) so the file runs in seconds. Fashion-MNIST-based tests use a
synthetic four-file IDX set written into ``DATA_DIR/fashion-mnist/`` (the ``--data-dir`` route),
so they run without the Debian package; tests of the real files skip when it is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from multimodel.corpora import captions, fashion_mnist, grammar, numbers, speech
from multimodel.corpora.cache import CorpusUnavailable
from multimodel.corpora.errors import CorpusError
from multimodel.corpora.trees import attach_words, delinearize, linearize, parse_bracketed, strip_words

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_SYSTEM_FASHION = fashion_mnist.available(Path("/nonexistent-data-dir")) is None
needs_espeak = pytest.mark.skipif(
    not HAVE_ESPEAK, reason="espeak-ng not installed (apt-get install espeak-ng)"
)
needs_fashion = pytest.mark.skipif(not HAVE_SYSTEM_FASHION, reason="apt-get install dataset-fashion-mnist")


# ----------------------------------------------------------------------------------------
# Helpers


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """An IDX file of unsigned bytes: magic 0x0000080D, D big-endian sizes, the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def make_fashion_dir(data_dir: Path, n_train: int = 30, n_test: int = 20) -> Path:
    """Synthetic Fashion-MNIST files: every photo has visible (non-zero) pixels."""
    rng = np.random.default_rng(0)
    root = data_dir / "fashion-mnist"
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(1, 256, (n, 28, 28))
        labels = np.arange(n) % 10
        image_name, label_name = fashion_mnist.FILES[split]
        write_idx(root / (image_name + ".gz"), images)
        write_idx(root / label_name, labels, compress=False)  # plain files work too
    return data_dir


def fingerprint(value) -> str:
    if isinstance(value, np.ndarray):
        return hashlib.sha1(value.tobytes() + str(value.shape).encode()).hexdigest()
    return hashlib.sha1(repr(value).encode()).hexdigest()


def assert_same_split(a, b) -> None:
    assert len(a.examples) == len(b.examples)
    for x, y in zip(a.examples, b.examples):
        assert fingerprint(x.inputs) == fingerprint(y.inputs)
        assert x.target == y.target and x.references == y.references and x.meta == y.meta


def corpus_loaders():
    """(id, load, corpus dir name, train size, test size, needs) of every generated corpus."""
    out = [("grammar", grammar.load, "grammar", 40, 20, None)]
    for src, tgt in numbers.DIRECTIONS:
        out.append((f"numbers_{src}_{tgt}", numbers.load_pair(src, tgt), "numbers", 40, 20, None))
    out.append(("captions", captions.load, "captions", 12, 6, "fashion_dir"))
    out.append(("speech", speech.load, "speech", 6, 4, "espeak"))
    return out


LOADERS = [
    pytest.param(*row[1:], id=row[0], marks=[needs_espeak] if row[-1] == "espeak" else [])
    for row in corpus_loaders()
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return make_fashion_dir(tmp_path / "data")


# ----------------------------------------------------------------------------------------
# Every generated corpus


@pytest.mark.parametrize("load, corpus, n_train, n_test, needs", LOADERS)
def test_generates_caches_and_reloads_identically(load, corpus, n_train, n_test, needs, data_dir, tmp_path):
    first = load(data_dir, "train", n_train, 7)
    assert len(first.examples) == n_train
    files = list((data_dir / "builtin" / corpus).glob(f"train-n{n_train}-s7-v*"))
    assert len(files) == 1, files
    stamp = files[0].stat().st_mtime_ns
    again = load(data_dir, "train", n_train, 7)  # from the cache
    assert files[0].stat().st_mtime_ns == stamp
    assert_same_split(first, again)
    elsewhere = load(make_fashion_dir(tmp_path / "other"), "train", n_train, 7)  # regenerated from scratch
    assert_same_split(first, elsewhere)
    other_seed = load(data_dir, "train", n_train, 8)
    assert [e.target for e in other_seed.examples] != [e.target for e in first.examples]
    test = load(data_dir, "test", n_test, 7)
    assert len(test.examples) == n_test


@pytest.mark.parametrize("load, corpus, n_train, n_test, needs", LOADERS)
def test_train_and_test_do_not_overlap(load, corpus, n_train, n_test, needs, data_dir):
    train = load(data_dir, "train", n_train * 2, 1).examples
    test = load(data_dir, "test", n_test * 2, 1).examples
    assert not {fingerprint(e.inputs) for e in train} & {fingerprint(e.inputs) for e in test}
    if corpus in ("numbers", "speech"):  # outputs held out too (parse trees and captions repeat by nature)
        assert not {e.target for e in train} & {e.target for e in test}


def test_size_zero_means_natural_size(data_dir, monkeypatch):
    monkeypatch.setitem(grammar.NATURAL_SIZES, "test", 17)
    assert len(grammar.load(data_dir, "test", 0, 1).examples) == 17


def test_bad_split_and_size_are_rejected(data_dir):
    with pytest.raises(ValueError, match="split"):
        grammar.load(data_dir, "valid", 10, 1)
    with pytest.raises(ValueError, match="size"):
        numbers.load(data_dir, "train", -1, 1)


# ----------------------------------------------------------------------------------------
# Fashion-MNIST and digits


def test_idx_reader_reads_synthetic_files(data_dir):
    split = fashion_mnist.load(data_dir, "train", 0, 0)
    assert len(split.examples) == 30
    ex = split.examples[3]
    assert ex.inputs.shape == (1, 28, 28) and ex.inputs.dtype == np.float32
    assert 0.0 <= ex.inputs.min() and ex.inputs.max() <= 1.0
    assert ex.target == 3
    sub = fashion_mnist.load(data_dir, "train", 5, 1)
    assert len(sub.examples) == 5
    other = fashion_mnist.load(data_dir, "train", 5, 2)
    assert [e.meta["index"] for e in sub.examples] != [e.meta["index"] for e in other.examples]


def test_idx_reader_rejects_corrupt_files_naming_them(data_dir):
    root = data_dir / "fashion-mnist"
    bad = root / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[3] = 0x01  # wrong magic number
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(CorpusError, match=re.escape(str(bad)) + ".*magic"):
        fashion_mnist.load(data_dir, "train", 0, 0)
    raw[3] = 0x03
    bad.write_bytes(gzip.compress(bytes(raw[:-100])))  # truncated: last image incomplete
    with pytest.raises(CorpusError, match=re.escape(str(bad)) + ".*truncated"):
        fashion_mnist.load(data_dir, "train", 0, 0)
    partial = fashion_mnist.load(data_dir, "train", 0, 0, skip_bad=True)
    assert len(partial.examples) == 29 and partial.skipped == 1  # the cut image (its label is orphaned)
    assert any(str(bad) in reason for reason in partial.skipped_reasons)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match=re.escape(str(bad))):
        fashion_mnist.load(data_dir, "train", 0, 0)


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "nowhere")
    message = fashion_mnist.available(tmp_path)
    assert message is not None and "apt-get install dataset-fashion-mnist" in message
    assert "fashion-mnist/" in message
    assert captions.available(tmp_path) == message
    with pytest.raises(CorpusUnavailable, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load(tmp_path, "test", 10, 0)


@needs_fashion
def test_real_fashion_mnist(tmp_path):
    train = fashion_mnist.load(tmp_path, "train", 300, 0).examples
    test = fashion_mnist.load(tmp_path, "test", 300, 0).examples
    assert train[0].inputs.shape == (1, 28, 28) and train[0].inputs.dtype == np.float32
    assert {e.target for e in train} == set(range(10)) and len(fashion_mnist.CLASS_NAMES) == 10
    assert not {fingerprint(e.inputs) for e in train} & {fingerprint(e.inputs) for e in test}


def test_digits_split():
    train = fashion_mnist.load_digits_split(Path("."), "train", 0, 0).examples
    test = fashion_mnist.load_digits_split(Path("."), "test", 0, 0).examples
    assert len(train) + len(test) == 1797
    assert train[0].inputs.shape == (1, 8, 8) and train[0].inputs.max() <= 1.0
    assert not {e.meta["index"] for e in train} & {e.meta["index"] for e in test}
    assert len(fashion_mnist.load_digits_split(Path("."), "train", 50, 3).examples) == 50


# ----------------------------------------------------------------------------------------
# Captions


def test_captions_name_every_item_and_match_the_canvas(data_dir):
    for ex in captions.load(data_dir, "train", 30, 2).examples:
        assert ex.inputs.shape == (1, captions.CANVAS, captions.CANVAS)
        assert len(ex.references) >= 3 and ex.target in ex.references
        items = ex.meta["items"]
        assert captions.MIN_ITEMS <= len(items) <= captions.MAX_ITEMS
        for ref in ex.references:
            for item in items:
                singular, plural = captions.NOUNS[item["class"]]
                assert re.search(rf"(?<![\w-])({re.escape(singular)}|{re.escape(plural)})\b", ref), (
                    ref,
                    item,
                )
        occupied = {tuple(item["cell"]) for item in items}
        for row in range(2):
            for col in range(2):
                cell = ex.inputs[0, row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32]
                assert (cell.max() > 0) == ((row, col) in occupied)
        positional = [r for r in ex.references if any(p in r for p in ("left", "right"))]
        assert len(positional) >= len(ex.references) - 1


def test_caption_templates_for_a_known_canvas():
    refs = captions.captions_for([(7, (0, 0)), (8, (0, 1))])
    assert "a sneaker on the top left and a bag on the top right" in refs
    assert "on the top left there is a sneaker and on the top right there is a bag" in refs
    assert "a sneaker to the left of a bag, both in the top row" in refs
    assert captions.captions_for([(9, (1, 1)), (9, (0, 1))])[5] == "a picture of two ankle boots"


# ----------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize(
    "kind, value, lang, text",
    [
        ("cardinal", 21, "en", "twenty-one"),
        ("cardinal", 21, "de", "einundzwanzig"),
        ("cardinal", 21, "fr", "vingt et un"),
        ("cardinal", 97, "fr", "quatre-vingt-dix-sept"),
        ("cardinal", 80, "fr", "quatre-vingts"),
        ("cardinal", 1999, "en", "one thousand nine hundred and ninety-nine"),
        ("cardinal", 1999, "de", "eintausendneunhundertneunundneunzig"),
        ("ordinal", 21, "en", "twenty-first"),
        ("ordinal", 3, "de", "dritte"),
        ("ordinal", 1, "fr", "premier"),
        ("year", 1999, "en", "the year nineteen ninety-nine"),
        ("year", 1999, "de", "das Jahr neunzehnhundertneunundneunzig"),
        ("date", (2005, 3, 21), "en", "the twenty-first of March two thousand and five"),
        ("date", (2005, 3, 21), "de", "der einundzwanzigste März zweitausendfünf"),
        ("date", (2005, 3, 21), "fr", "le vingt et un mars deux mille cinq"),
        ("date", (1999, 7, 1), "fr", "le premier juillet mille neuf cent quatre-vingt-dix-neuf"),
    ],
)
def test_number_renderings(kind, value, lang, text):
    assert numbers.render(kind, value, lang) == text


def test_translation_directions_share_one_set_of_expressions(data_dir):
    en_de = numbers.load_pair("en", "de")(data_dir, "train", 30, 5).examples
    de_en = numbers.load_pair("de", "en")(data_dir, "train", 30, 5).examples
    en_fr = numbers.load_pair("en", "fr")(data_dir, "train", 30, 5).examples
    assert [e.inputs for e in en_de] == [e.target for e in de_en] == [e.inputs for e in en_fr]
    assert [e.target for e in en_de] == [e.inputs for e in de_en]
    assert {e.meta["kind"] for e in en_de} == set(numbers.KINDS)


def test_number_test_items_never_in_training_in_any_language(data_dir):
    train = numbers.load_expressions(data_dir, "train", 400, 3) + numbers.load_expressions(
        data_dir, "train", 400, 4
    )
    test = numbers.load_expressions(data_dir, "test", 200, 9)
    for lang in numbers.LANGUAGES:
        train_hashes = {fingerprint(it.texts[lang]) for it in train}
        assert not train_hashes & {fingerprint(it.texts[lang]) for it in test}
    assert all(numbers.in_test_split(it.kind, it.value) for it in test)


# ----------------------------------------------------------------------------------------
# Grammar


def test_grammar_trees_round_trip_and_cover_the_constituents(data_dir):
    split = grammar.load(data_dir, "train", 150, 0)
    labels, has_number = set(), False
    for ex in split.examples:
        tree = parse_bracketed(ex.meta["tree"])
        assert linearize(tree) == ex.target
        assert linearize(delinearize(ex.target)) == ex.target
        assert delinearize(ex.target) == strip_words(tree)
        assert attach_words(delinearize(ex.target), ex.inputs.split()) == tree
        assert ex.inputs[0].isupper() and ex.inputs.endswith(" .")
        labels |= set(re.findall(r"\((\S+)", ex.target))
        has_number |= " CD " in ex.target
    assert {"S", "NP", "VP", "PP", "SBAR", "ADJP"} <= labels
    assert has_number


def test_grammar_sentences_are_distinct(data_dir):
    sentences = [e.inputs for e in grammar.load(data_dir, "train", 200, 0).examples]
    assert len(set(sentences)) == len(sentences)


# ----------------------------------------------------------------------------------------
# Speech


def test_speech_voices_and_speeds_are_held_out():
    assert not set(speech.TRAIN_VOICES) & set(speech.TEST_VOICES)
    assert not set(speech.TRAIN_SPEEDS) & set(speech.TEST_SPEEDS)
    accent = lambda v: v.split("+")[0]  # noqa: E731
    variant = lambda v: v.split("+")[1] if "+" in v else None  # noqa: E731
    assert not {accent(v) for v in speech.TRAIN_VOICES} & {accent(v) for v in speech.TEST_VOICES}
    assert not ({variant(v) for v in speech.TRAIN_VOICES} & {variant(v) for v in speech.TEST_VOICES}) - {None}
    train, test = speech.plan("train", 150, 0), speech.plan("test", 60, 0)
    assert {u.voice for u in train} == set(speech.TRAIN_VOICES)
    assert {u.voice for u in test} == set(speech.TEST_VOICES)
    assert {u.speed for u in test} == set(speech.TEST_SPEEDS)
    assert not {u.text for u in train} & {u.text for u in test}
    assert all(u.text == u.text.lower() and "." not in u.text and "," not in u.text for u in train)


@needs_espeak
def test_speech_examples_and_meta(data_dir):
    train = speech.load(data_dir, "train", 6, 0).examples
    test = speech.load(data_dir, "test", 4, 0).examples
    for ex in train + test:
        assert ex.inputs.dtype == np.float32 and ex.inputs.ndim == 2 and ex.inputs.shape[1] == 80
        assert 0.2 < ex.meta["duration_s"] < 5.0
        assert abs(ex.inputs.shape[0] - 100 * ex.meta["duration_s"]) <= 2  # 10 ms frames
        assert np.isfinite(ex.inputs).all()
    assert {e.meta["voice"] for e in train} <= set(speech.TRAIN_VOICES)
    assert {e.meta["speed"] for e in train} <= set(speech.TRAIN_SPEEDS)
    assert {e.meta["voice"] for e in test} <= set(speech.TEST_VOICES)
    assert {e.meta["speed"] for e in test} <= set(speech.TEST_SPEEDS)


def test_missing_espeak_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    message = speech.available(tmp_path)
    assert message is not None and "apt-get install espeak-ng" in message
    with pytest.raises(CorpusUnavailable, match="apt-get install espeak-ng"):
        speech.load(tmp_path, "train", 2, 0)


def test_speech_cache_is_keyed_by_the_espeak_version(tmp_path, monkeypatch):
    """Another espeak-ng release makes the audio again; without espeak-ng, any cached split reloads."""
    from multimodel.data.example import Example, Split

    generated: list[str | None] = []

    def fake_generate(split, size, seed, skip_bad):
        generated.append(speech.espeak_version())
        fill = float(len(generated))  # each generation's features differ from the last one's
        return Split(examples=[Example(np.full((3, speech.N_MELS), fill, np.float32), "one", None, {})
                               for _ in range(size)])

    monkeypatch.setattr(speech, "_generate", fake_generate)
    monkeypatch.setattr(speech, "espeak_version", lambda: "1.50")
    first = speech.load(tmp_path, "train", 2, 0)
    assert_same_split(speech.load(tmp_path, "train", 2, 0), first)
    assert generated == ["1.50"]

    monkeypatch.setattr(speech, "espeak_version", lambda: "1.51")
    upgraded = speech.load(tmp_path, "train", 2, 0)
    assert generated == ["1.50", "1.51"]
    assert fingerprint(upgraded.examples[0].inputs) != fingerprint(first.examples[0].inputs)
    names = sorted(p.name for p in (tmp_path / "builtin" / "speech").glob("train-*.npz"))
    assert len(names) == 2 and "1.50" in names[0] and "1.51" in names[1]

    monkeypatch.setattr(speech, "espeak_version", lambda: None)  # espeak-ng uninstalled: reload, don't generate
    assert_same_split(speech.load(tmp_path, "train", 2, 0), upgraded)
    assert generated == ["1.50", "1.51"]


def test_espeak_version_is_parsed_from_its_banner(tmp_path):
    program = tmp_path / "espeak-ng"
    program.write_text("#!/bin/sh\necho 'eSpeak NG text-to-speech: 1.52-dev  Data at: /usr/share/espeak-ng-data'\n")
    program.chmod(0o755)
    assert speech._espeak_version_of(str(program)) == "1.52-dev"
    odd = tmp_path / "odd"
    odd.write_text("#!/bin/sh\necho 'speaker 7'\n")
    odd.chmod(0o755)
    version = speech._espeak_version_of(str(odd))
    assert re.fullmatch(r"[\w.+-]+", version) and version != speech._espeak_version_of(str(program))
