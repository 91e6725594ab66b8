"""The shared subword vocabulary: fixed special ids, exact round trips, serialisation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multimodel.corpora import captions, grammar, numbers, speech
from multimodel.data.tokenizer import EOS, PAD, UNK, Tokenizer


def builtin_texts(data_dir: Path) -> list[str]:
    """A sample of the text of every built-in corpus (no audio or images are generated)."""
    texts: list[str] = []
    for split in ("train", "test"):
        for ex in grammar.load(data_dir, split, 120, 0).examples:
            texts += [ex.inputs, ex.target]
        for it in numbers.load_expressions(data_dir, split, 150, 0):
            texts += list(it.texts.values())
        texts += [u.text for u in speech.plan(split, 60, 0)]
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(2, 5))
        cells = [list(captions.POSITIONS)[i] for i in rng.choice(4, n, replace=False)]
        texts += captions.captions_for([(int(rng.integers(10)), cell) for cell in cells])
    return texts


@pytest.fixture(scope="module")
def corpus_texts(tmp_path_factory) -> list[str]:
    return builtin_texts(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tokenizer(corpus_texts) -> Tokenizer:
    return Tokenizer.train(_seen(corpus_texts), vocab_size=600)


def _seen(texts: list[str]) -> list[str]:
    return [t for i, t in enumerate(texts) if i % 3]  # two thirds; every third text stays unseen


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_every_builtin_text_round_trips_exactly(corpus_texts, model_type):
    tok = Tokenizer.train(corpus_texts, vocab_size=600, model_type=model_type)
    for text in corpus_texts:
        ids = tok.encode(text)
        assert UNK not in ids and EOS not in ids and PAD not in ids
        assert tok.decode(ids) == text


def test_unseen_texts_of_seen_characters_round_trip(tokenizer, corpus_texts):
    seen_chars = set("".join(_seen(corpus_texts)))
    unseen = [t for i, t in enumerate(corpus_texts) if i % 3 == 0 and set(t) <= seen_chars]
    assert len(unseen) > len(corpus_texts) // 4
    for text in unseen:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_parse_trees_get_compact_pieces(tokenizer):
    target = "(S (NP DT JJ NN ) (VP VBD (NP DT NN ) ) . )"
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode(target)]
    assert tokenizer.decode(tokenizer.encode(target)) == target
    assert len(pieces) <= len(target.split()) + 2, pieces  # about one piece per tree token


def test_special_ids_and_decode_skips_pad_and_eos(tokenizer):
    assert (Tokenizer.PAD, Tokenizer.EOS, Tokenizer.UNK) == (PAD, EOS, UNK) == (0, 1, 2)
    assert [tokenizer.id_to_piece(i) for i in (PAD, EOS, UNK)] == ["<pad>", "</s>", "<unk>"]
    ids = tokenizer.encode("the year nineteen ninety-nine")
    assert tokenizer.decode(ids + [EOS, PAD, PAD]) == "the year nineteen ninety-nine"
    assert tokenizer.decode([PAD] + ids) == "the year nineteen ninety-nine"
    assert 100 < tokenizer.vocab_size <= 600 and len(tokenizer) == tokenizer.vocab_size


def test_serialisation_and_determinism(tokenizer, corpus_texts):
    again = Tokenizer.from_bytes(tokenizer.to_bytes())
    assert again == tokenizer and again.vocab_size == tokenizer.vocab_size
    assert all(again.encode(t) == tokenizer.encode(t) for t in corpus_texts[:50])
    assert pickle.loads(pickle.dumps(tokenizer)) == tokenizer
    assert Tokenizer.train(_seen(corpus_texts), vocab_size=600) == tokenizer  # same text, same vocabulary


def test_small_vocab_is_raised_to_hold_every_character():
    tok = Tokenizer.train(["abc déf", "ghi"], vocab_size=5)
    assert tok.decode(tok.encode("déf abc")) == "déf abc"
    assert tok.vocab_size >= len(set("abc déf ghi")) + 3


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        Tokenizer.train([], vocab_size=100)
    with pytest.raises(ValueError):
        Tokenizer.train(["x"], vocab_size=100, model_type="word")


@pytest.fixture(scope="module")
def byte_tokenizer(corpus_texts) -> Tokenizer:
    return Tokenizer.train(corpus_texts, vocab_size=800, byte_fallback=True)


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581\x00"), max_size=40))
def test_byte_fallback_round_trips_any_text(byte_tokenizer, text):
    assert byte_tokenizer.decode(byte_tokenizer.encode(text)) == text
