"""The shared subword vocabulary (paper section 2: one ~8k-unit vocabulary for every text).

A thin wrapper around sentencepiece, trained in memory on the text of all selected tasks (the
targets and the text inputs), and stored beside the model as ``tokenizer.model``, the
serialised model proto (:meth:`Tokenizer.save_pretrained`).

Ids (docs/CONTRACTS.md): ``PAD = 0``, ``EOS = 1``, ``UNK = 2``; no BOS (the decoder's first
input is the task token). :meth:`Tokenizer.encode` returns ids without EOS; callers append
:data:`EOS`.

Exact round trips: training uses the ``identity`` normaliser (no NFKC folding, no whitespace
clean-up, so leading, trailing and repeated spaces survive) and ``character_coverage=1.0``, so
``decode(encode(t)) == t`` for every text made of characters seen in training. With
``byte_fallback=True`` unseen characters round-trip too, via 256 byte pieces that then take
up part of the vocabulary. ``hard_vocab_limit=False`` lets a small corpus yield
fewer pieces than asked, so :attr:`Tokenizer.vocab_size` may be below the requested size.

Brackets of linearised parse trees need no special symbols. Training turns off
sentencepiece's split at Unicode-script changes, so ``(NP`` can be learned as one piece
(``▁(NP``) rather than two: trees get a quarter shorter, and French/English number words too
(``▁quatre-vingt-``).

The default model type is BPE: on our corpora sentencepiece's unigram trainer leaves the
parse-tree labels in single letters (``(NP`` → ``▁( N P``: trees 45 % longer) because it seeds
its pieces from distinct words and trees have only a few dozen distinct ones; BPE counts
every occurrence and learns ``▁DT``, ``▁(NP``, ``▁NNS``. Unigram stays available.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Iterable, Sequence

import sentencepiece as spm

from multimodel.config import EOS_ID, PAD_ID, UNK_ID
from multimodel.errors import CheckpointError

log = logging.getLogger(__name__)

PAD = PAD_ID
EOS = EOS_ID
UNK = UNK_ID
_SPECIAL = (PAD, EOS)
TOKENIZER_FILE = "tokenizer.model"
"""The vocabulary's file in a saved model or checkpoint (the serialised sentencepiece model)."""


class Tokenizer:
    """A trained sentencepiece model with the project's fixed special ids.

    Args:
        model_proto: the serialised sentencepiece ``ModelProto`` (from :meth:`to_bytes`).
    """

    PAD = PAD
    EOS = EOS
    UNK = UNK

    def __init__(self, model_proto: bytes):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (PAD, EOS, UNK):
            raise ValueError(
                "sentencepiece model has special ids pad/eos/unk ="
                f" {self._sp.pad_id()}/{self._sp.eos_id()}/{self._sp.unk_id()}, expected 0/1/2"
            )

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_type: str = "bpe",
        *,
        byte_fallback: bool = False,
        seed: int = 0,
        max_sentences: int = 2_000_000,
    ) -> "Tokenizer":
        """Train on ``texts`` (each a sentence) in memory.

        Args:
            texts: the training sentences; empty ones are skipped.
            vocab_size: wanted number of pieces including the 3 specials (a soft limit: a small
                corpus may give fewer). Raised, with a warning, to hold every distinct character.
            model_type: "bpe" (default) or "unigram" (see the module docstring).
            byte_fallback: add the 256 byte pieces so unseen characters round-trip too.
            seed: sentencepiece's random seed (training is then deterministic).
            max_sentences: sentences sampled for training when the corpus is larger.
        """
        if model_type not in ("unigram", "bpe"):
            raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
        sentences = [t for t in texts if t]
        if not sentences:
            raise ValueError("cannot train a tokenizer on no text")
        n_chars = len(set("".join(sentences)))
        minimum = n_chars + 3 + (256 if byte_fallback else 0)
        if vocab_size < minimum:
            log.warning(
                "vocab_size=%d cannot hold the %d distinct characters of the text%s; using %d",
                vocab_size, n_chars, " and 256 byte pieces" if byte_fallback else "", minimum,
            )
            vocab_size = minimum
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD,
            eos_id=EOS,
            unk_id=UNK,
            bos_id=-1,
            character_coverage=1.0,
            byte_fallback=byte_fallback,
            hard_vocab_limit=False,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            split_digits=True,
            split_by_unicode_script=False,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=1,
            minloglevel=2,
        )
        return cls(model.getvalue())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Tokenizer":
        """Rebuild from :meth:`to_bytes` output (e.g. stored in a checkpoint)."""
        return cls(data)

    def to_bytes(self) -> bytes:
        """The serialised sentencepiece model (the whole vocabulary)."""
        return self._proto

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the vocabulary to ``directory/tokenizer.model`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / TOKENIZER_FILE).write_bytes(self._proto)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Tokenizer":
        """Read the vocabulary :meth:`save_pretrained` (or a training checkpoint) wrote into ``directory``.

        Raises:
            CheckpointError: the file is missing or is not a sentencepiece model with our special ids.
        """
        path = Path(directory) / TOKENIZER_FILE
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing; the checkpoint is incomplete") from None
        except Exception as err:  # sentencepiece raises RuntimeError, our check ValueError
            raise CheckpointError(f"{path}: corrupt vocabulary ({err})") from None

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Subword ids of ``text``, without EOS."""
        return self._sp.encode(text, out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; PAD and EOS ids are dropped (wherever they are)."""
        return self._sp.decode([int(i) for i in ids if int(i) not in _SPECIAL])

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and other._proto == self._proto

    def __hash__(self) -> int:
        return hash(self._proto)

    def __getstate__(self) -> bytes:  # picklable (DataLoader workers, multiprocessing)
        return self._proto

    def __setstate__(self, state: bytes) -> None:
        self.__init__(state)
