"""Readers of real corpus formats: tiny fixtures written in the exact on-disk format, bad-input
errors that name the file and line, and (when ``<repo>/../shared/corpora`` exists) the real
Multi30k and Penn Treebank sample files."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from multimodel.corpora.coco import read_coco_captions
from multimodel.corpora.errors import BadRecords, CorpusError
from multimodel.corpora.image_folder import class_names, load_image, read_image_folder
from multimodel.corpora.librispeech import read_audio, read_librispeech
from multimodel.corpora.manifest import read_manifest
from multimodel.corpora.parallel_text import multi30k_split, read_parallel
from multimodel.corpora.ptb import ptb_split_of, read_ptb
from multimodel.corpora.trees import delinearize, linearize, parse_bracketed, strip_words

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real corpora not found at {SHARED}")


def write_gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


# ----------------------------------------------------------------------------------------
# errors


def test_corpus_error_message_names_file_line_and_fix(tmp_path):
    error = CorpusError(tmp_path / "a.txt", "empty line", "remove it", line=7)
    assert str(error) == f"{tmp_path / 'a.txt'}:7: empty line. remove it."
    assert isinstance(error, ValueError) and error.line == 7 and error.path == tmp_path / "a.txt"
    assert str(CorpusError("b.txt", "missing")) == "b.txt: missing."


def test_bad_records_raises_unless_skipping_and_reports_reasons():
    error = CorpusError("f", "bad", line=1)
    with pytest.raises(CorpusError):
        BadRecords(skip_bad=False).skip(error)
    bad = BadRecords(skip_bad=True, max_reasons=2)
    for _ in range(3):
        bad.skip(error)
    split = bad.split(["x"])
    assert split.skipped == 3 and split.skipped_reasons == ("f:1: bad.", "f:1: bad.")


# ----------------------------------------------------------------------------------------
# parallel text


def test_read_parallel_plain_and_gzip(tmp_path):
    src = write_gz(tmp_path / "train.en.gz", "A dog runs.\nTwo cats.\r\n")
    tgt = tmp_path / "train.de"
    tgt.write_text("Ein Hund rennt.\nZwei Katzen.\n", encoding="utf-8")
    split = read_parallel(src, tgt)
    assert [(e.inputs, e.target) for e in split.examples] == [
        ("A dog runs.", "Ein Hund rennt."),
        ("Two cats.", "Zwei Katzen."),
    ]
    assert split.examples[1].references == ["Zwei Katzen."] and split.skipped == 0
    assert len(read_parallel(src, tgt, limit=1).examples) == 1


def test_read_parallel_misaligned_names_both_files_and_counts(tmp_path):
    src, tgt = tmp_path / "a.en", tmp_path / "a.de"
    src.write_text("one\ntwo\nthree\n")
    tgt.write_text("eins\nzwei\n")
    for skip_bad in (False, True):
        with pytest.raises(CorpusError) as info:
            read_parallel(src, tgt, skip_bad=skip_bad)
        message = str(info.value)
        assert str(src) in message and str(tgt) in message and "3 lines" in message and "has 2" in message


def test_read_parallel_finds_a_misalignment_past_the_pairs_it_keeps(tmp_path):
    """An extra source line in the middle shifts every later pair; a small ``limit`` must not hide it."""
    src, tgt = tmp_path / "b.en", tmp_path / "b.de"
    src.write_text("".join(f"s{i}\n" for i in range(10)) + "extra\n" + "".join(f"s{i}\n" for i in range(10, 20)))
    tgt.write_text("".join(f"t{i}\n" for i in range(20)))
    with pytest.raises(CorpusError, match="has 21 lines but .* has 20"):
        read_parallel(src, tgt, limit=3)
    src.write_text("".join(f"s{i}\n" for i in range(20)))
    assert len(read_parallel(src, tgt, limit=3).examples) == 3


def test_read_parallel_empty_line_and_bad_utf8(tmp_path):
    src, tgt = tmp_path / "a.en", tmp_path / "a.de"
    src.write_text("one\n\nthree\nfour\n")
    tgt.write_bytes(b"eins\nzwei\ndrei\n\xff\xfe\n")
    with pytest.raises(CorpusError, match=rf"{src}:2: empty line"):
        read_parallel(src, tgt)
    split = read_parallel(src, tgt, skip_bad=True)
    assert [e.inputs for e in split.examples] == ["one", "three"]
    assert split.skipped == 2
    assert split.skipped_reasons[0].startswith(f"{src}:2:") and split.skipped_reasons[1].startswith(
        f"{tgt}:4:"
    )


def test_read_parallel_missing_file(tmp_path):
    (tmp_path / "a.en").write_text("x\n")
    with pytest.raises(CorpusError, match="target file not found"):
        read_parallel(tmp_path / "a.en", tmp_path / "nope.de")


def test_multi30k_split_maps_split_names_to_files(tmp_path):
    for prefix, lines in (("train", 3), ("val", 2), ("test_2016_flickr", 1)):
        write_gz(tmp_path / f"{prefix}.en.gz", "".join(f"{prefix} en {i}\n" for i in range(lines)))
        (tmp_path / f"{prefix}.fr").write_text("".join(f"{prefix} fr {i}\n" for i in range(lines)))
    assert len(multi30k_split(tmp_path, "en", "fr", "train").examples) == 3
    assert multi30k_split(tmp_path, "fr", "en", "valid").examples[1].target == "val en 1"
    assert multi30k_split(tmp_path, "en", "fr", "test").examples[0].inputs == "test_2016_flickr en 0"
    with pytest.raises(CorpusError, match="'de' not found"):
        multi30k_split(tmp_path, "en", "de", "train")
    with pytest.raises(CorpusError, match="Multi30k folder not found"):
        multi30k_split(tmp_path / "missing", "en", "de", "train")


@needs_shared
def test_real_multi30k_counts():
    root = SHARED / "multi30k"
    counts = {
        split: len(multi30k_split(root, "en", "de", split).examples) for split in ("train", "valid", "test")
    }
    print(f"Multi30k en-de pairs: {counts}")
    assert counts == {"train": 29_000, "valid": 1_014, "test": 1_000}
    assert len(multi30k_split(root, "fr", "en", "test").examples) == 1_000


# ----------------------------------------------------------------------------------------
# Penn Treebank

# Written as the .mrg files are, trailing spaces included.
MRG = """\
( (S 
    (NP-SBJ-1 (DT The) (NN cat) )
    (VP (VBD sat) 
      (NP (-NONE- *-1) )
      (PP-LOC=2 (IN on) 
        (NP (DT the) (NN mat) )))
    (. .) ))
( (S 
    (NP-SBJ (PRP It) )
    (VP (VBD purred) 
      (ADVP|PRT (RB loudly) ))
    (. .) ))
"""


def test_read_ptb_cleans_and_linearises(tmp_path):
    (tmp_path / "wsj_0001.mrg").write_text(MRG)
    split = read_ptb(tmp_path)
    first, second = split.examples
    assert first.inputs == "The cat sat on the mat ."
    assert first.target == "(S (NP DT NN ) (VP VBD (PP IN (NP DT NN ) ) ) . )"
    assert first.references == [first.target] and first.meta["line"] == 1
    assert second.target == "(S (NP PRP ) (VP VBD (ADVP RB ) ) . )" and second.meta["line"] == 8
    closing = read_ptb(tmp_path / "wsj_0001.mrg", label_closing=True).examples[0].target
    assert closing == "(S (NP DT NN )NP (VP VBD (PP IN (NP DT NN )NP )PP )VP . )S"
    assert delinearize(closing) == delinearize(first.target)


def test_read_ptb_from_zip(tmp_path):
    archive = tmp_path / "treebank.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("treebank/combined/wsj_0002.mrg", MRG)
        handle.writestr("treebank/combined/wsj_0175.mrg", MRG)
        handle.writestr("treebank/combined/README", "not a tree")
    assert len(read_ptb(archive).examples) == 4
    assert {e.meta["file"] for e in read_ptb(archive, split="test").examples} == {"wsj_0175.mrg"}
    assert len(read_ptb(archive, split="train").examples) == 2


def test_ptb_split_rules():
    assert ptb_split_of("wsj_0169.mrg", sample=True) == "train"
    assert ptb_split_of("wsj_0170.mrg", sample=True) == "test"
    assert ptb_split_of("wsj_0200.mrg", sample=False) == "train"
    assert ptb_split_of("wsj_2201.mrg", sample=False) == "valid"
    assert ptb_split_of("wsj_2399.mrg", sample=False) == "test"
    assert ptb_split_of("wsj_0050.mrg", sample=False) is None
    assert (
        ptb_split_of("mine.mrg", sample=False) == ptb_split_of("mine.mrg", sample=False) in ("train", "test")
    )


@pytest.mark.parametrize(
    "broken, line, words, kept",
    [
        ("( (S (NP (NN a) ) (VP (VBD b) )\n", 1, "never closed", 2),  # missing ')' at end of file
        ("( (S (NP (NN a)) (VP (VBD b) ))))\n", 1, "no open", 3),  # a complete tree, then a stray ')'
    ],
)
def test_read_ptb_unbalanced_names_file_and_line(tmp_path, broken, line, words, kept):
    path = tmp_path / "wsj_0003.mrg"
    path.write_text(MRG + broken)
    with pytest.raises(CorpusError, match=words) as info:
        read_ptb(path)
    assert str(info.value).startswith(f"{path}:{line + MRG.count(chr(10))}:")
    split = read_ptb(path, skip_bad=True)
    assert len(split.examples) == kept and split.skipped == 1


def test_read_ptb_missing_bracket_mid_file_resumes_at_next_tree(tmp_path):
    path = tmp_path / "wsj_0004.mrg"
    path.write_text("( (S (NP (NN a) ) (VP (VBD b) )\n" + MRG)  # first tree lacks one ')'
    with pytest.raises(CorpusError) as info:
        read_ptb(path)
    assert str(info.value).startswith(f"{path}:1: unbalanced brackets")
    split = read_ptb(path, skip_bad=True)
    assert [e.meta["line"] for e in split.examples] == [2, 9] and split.skipped == 1


def test_read_ptb_missing_path_and_no_trees(tmp_path):
    with pytest.raises(CorpusError, match="Penn Treebank path not found"):
        read_ptb(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no .mrg files"):
        read_ptb(tmp_path)
    (tmp_path / "wsj_0005.mrg").write_text("( (-NONE- *T*-1) )\n")
    with pytest.raises(CorpusError, match=r"wsj_0005.mrg:1: malformed tree \(tree has no words"):
        read_ptb(tmp_path)


@pytest.fixture(scope="module")
def real_ptb():
    return read_ptb(SHARED / "ptb_sample" / "treebank.zip")


@needs_shared
def test_real_ptb_counts_and_splits(real_ptb):
    test = read_ptb(SHARED / "ptb_sample" / "treebank.zip", split="test")
    splits = [ptb_split_of(e.meta["file"], sample=True) for e in real_ptb.examples]
    train, test_count = splits.count("train"), splits.count("test")
    print(f"PTB sample trees: {len(real_ptb.examples)} (train {train}, test {test_count})")
    assert 3_800 <= len(real_ptb.examples) <= 4_000 and real_ptb.skipped == 0
    assert [e.target for e in test.examples] == [
        e.target for e, s in zip(real_ptb.examples, splits) if s == "test"
    ]
    assert splits.count("train") + splits.count("test") == len(real_ptb.examples)
    assert real_ptb.examples[0].inputs.startswith("Pierre Vinken , 61 years old")
    assert all("-NONE-" not in e.target and "*T*" not in e.inputs for e in real_ptb.examples)


@needs_shared
def test_real_ptb_linearise_delinearise_is_identity_on_every_tree(real_ptb):
    for example in real_ptb.examples:
        kept = parse_bracketed(example.meta["tree"])  # the cleaned tree, with words
        assert delinearize(example.target) == strip_words(kept), example.meta
        assert linearize(delinearize(example.target)) == example.target
        assert delinearize(linearize(kept, label_closing=True)) == strip_words(kept)
        leaves = [t for t in example.target.split() if not t.startswith(("(", ")"))]
        assert len(leaves) == len(example.inputs.split())


# ----------------------------------------------------------------------------------------
# images


def save_image(path: Path, size=(12, 8), color=(255, 0, 0), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path)
    return path


def test_read_image_folder(tmp_path):
    save_image(tmp_path / "zebra" / "a.png", color=(0, 0, 255))
    save_image(tmp_path / "ant" / "b.jpg", size=(30, 10))
    save_image(tmp_path / "ant" / "c.PNG", mode="L", color=(128,))
    (tmp_path / "ant" / "notes.txt").write_text("ignored")
    split = read_image_folder(tmp_path, size=(6, 5))
    assert class_names(tmp_path) == ["ant", "zebra"]
    assert [(e.target, Path(e.meta["path"]).name) for e in split.examples] == [
        (0, "b.jpg"),
        (0, "c.PNG"),
        (1, "a.png"),
    ]
    for example in split.examples:
        assert example.inputs.shape == (3, 6, 5) and example.inputs.dtype == np.float32
        assert 0.0 <= example.inputs.min() and example.inputs.max() <= 1.0
    np.testing.assert_allclose(split.examples[2].inputs[:, 2, 2], [0, 0, 1], atol=0.02)
    np.testing.assert_allclose(split.examples[1].inputs[:, 0, 0], [128 / 255] * 3, atol=0.01)
    assert len(read_image_folder(tmp_path, size=4, limit=1).examples) == 1


def test_image_folder_corrupt_image_names_file(tmp_path):
    good = save_image(tmp_path / "cat" / "good.png")
    bad = tmp_path / "cat" / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    truncated = tmp_path / "dog" / "cut.png"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CorpusError, match="corrupt or unreadable image") as info:
        read_image_folder(tmp_path, size=4)
    assert str(info.value).startswith(f"{bad}:")
    with pytest.raises(CorpusError) as info:
        load_image(truncated, 4)
    assert str(info.value).startswith(f"{truncated}:")
    split = read_image_folder(tmp_path, size=4, skip_bad=True)
    assert len(split.examples) == 1 and split.skipped == 2


def test_image_folder_missing_or_empty(tmp_path):
    with pytest.raises(CorpusError, match="image folder not found") as info:
        read_image_folder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    with pytest.raises(CorpusError, match="no class sub-folders"):
        read_image_folder(tmp_path)
    (tmp_path / "cls").mkdir()
    with pytest.raises(CorpusError, match="no image files"):
        read_image_folder(tmp_path)


# ----------------------------------------------------------------------------------------
# COCO captions


def write_coco(root: Path, year: int = 2014) -> Path:
    images = root / f"val{year}"
    save_image(images / "img1.jpg", color=(0, 255, 0))
    save_image(images / "img2.jpg")
    annotations = {
        "images": [{"id": 2, "file_name": "img2.jpg"}, {"id": 1, "file_name": "img1.jpg"}],
        "annotations": [
            {"id": 11, "image_id": 1, "caption": "A green  square.\n"},
            {"id": 10, "image_id": 1, "caption": "Green."},
            {"id": 12, "image_id": 2, "caption": "Red."},
        ],
    }
    path = root / "annotations" / f"captions_val{year}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(annotations))
    return path


def test_read_coco_captions(tmp_path):
    write_coco(tmp_path)
    split = read_coco_captions(tmp_path, "val", size=4)
    assert [e.meta["image_id"] for e in split.examples] == [1, 2]
    first = split.examples[0]
    assert first.target == "Green." and first.references == ["Green.", "A green square."]
    assert first.inputs.shape == (3, 4, 4)
    per_caption = read_coco_captions(tmp_path, "val", year=2014, size=4, per_caption=True)
    assert [e.target for e in per_caption.examples] == ["Green.", "A green square.", "Red."]
    assert per_caption.examples[0].inputs is per_caption.examples[1].inputs


def test_coco_missing_image_names_file(tmp_path):
    write_coco(tmp_path)
    missing = tmp_path / "val2014" / "img2.jpg"
    missing.unlink()
    with pytest.raises(CorpusError, match="not found") as info:
        read_coco_captions(tmp_path, "val", size=4)
    assert str(info.value).startswith(f"{missing}:")
    split = read_coco_captions(tmp_path, "val", size=4, skip_bad=True)
    assert len(split.examples) == 1 and split.skipped == 1


def test_coco_duplicate_annotation_id_is_a_bad_record(tmp_path):
    path = write_coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 10, "image_id": 2, "caption": "Also red."})
    path.write_text(json.dumps(data))
    with pytest.raises(CorpusError, match=r"annotations\[3\] .*duplicate annotation id 10 \(first at annotations\[1\]\)"):
        read_coco_captions(tmp_path, "val", size=4)
    split = read_coco_captions(tmp_path, "val", size=4, skip_bad=True)
    assert split.skipped == 1 and [e.references for e in split.examples] == [["Green.", "A green square."], ["Red."]]


def test_coco_bad_json_and_missing_annotations(tmp_path):
    with pytest.raises(CorpusError, match="captions file not found"):
        read_coco_captions(tmp_path, "train")
    path = write_coco(tmp_path)
    path.write_text('{"images": [\n  {"id": 1,}\n')
    with pytest.raises(CorpusError, match="invalid JSON") as info:
        read_coco_captions(tmp_path, "val")
    assert str(info.value).startswith(f"{path}:2:")


# ----------------------------------------------------------------------------------------
# speech


def write_audio(path: Path, seconds: float = 0.05, rate: int = 16_000, channels: int = 1) -> Path:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)
    return path


def write_librispeech(root: Path) -> Path:
    chapter = root / "19" / "198"
    write_audio(chapter / "19-198-0000.flac")
    write_audio(chapter / "19-198-0001.flac", seconds=0.1)
    transcript = chapter / "19-198.trans.txt"
    transcript.write_text("19-198-0000 NORTHANGER ABBEY\n19-198-0001 THIS LITTLE WORK WAS FINISHED\n")
    return transcript


def test_read_librispeech(tmp_path):
    write_librispeech(tmp_path)
    split = read_librispeech(tmp_path)
    assert [e.target for e in split.examples] == ["northanger abbey", "this little work was finished"]
    first = split.examples[0]
    assert first.inputs.dtype == np.float32 and first.inputs.shape == (800,)
    assert first.meta["sample_rate"] == 16_000 and first.meta["id"] == "19-198-0000"
    assert abs(float(first.inputs.max()) - 0.5) < 0.01


def test_librispeech_corrupt_audio_and_bad_lines(tmp_path):
    transcript = write_librispeech(tmp_path)
    corrupt = transcript.parent / "19-198-0001.flac"
    corrupt.write_bytes(b"fLaC but not really")
    with pytest.raises(CorpusError, match="corrupt or unreadable audio") as info:
        read_librispeech(tmp_path)
    assert str(info.value).startswith(f"{corrupt}:")
    transcript.write_text(transcript.read_text() + "19-198-0002\n")
    split = read_librispeech(tmp_path, skip_bad=True)
    assert len(split.examples) == 1 and split.skipped == 2
    assert any(reason.startswith(f"{transcript}:3:") for reason in split.skipped_reasons)


def test_librispeech_line_without_an_id_names_the_transcript_and_the_line(tmp_path):
    transcript = write_librispeech(tmp_path)
    transcript.write_text(transcript.read_text() + "THIS LINE LOST ITS ID\n")
    with pytest.raises(CorpusError, match=r"line starts with 'THIS', not an utterance id") as info:
        read_librispeech(tmp_path)
    assert str(info.value).startswith(f"{transcript}:3:") and "data.skip_bad=true" in str(info.value)


def test_librispeech_missing_root_and_wrong_layout(tmp_path):
    with pytest.raises(CorpusError, match="subset folder not found"):
        read_librispeech(tmp_path / "dev-clean")
    write_librispeech(tmp_path / "dev-clean")
    with pytest.raises(CorpusError, match="trans.txt files found"):
        read_librispeech(tmp_path)  # LibriSpeech/ itself, not a subset


def test_read_audio_checks_rate_and_downmixes(tmp_path):
    stereo = write_audio(tmp_path / "s.wav", channels=2)
    assert read_audio(stereo).shape == (800,)
    with pytest.raises(CorpusError, match="8000 Hz, expected 16000"):
        read_audio(write_audio(tmp_path / "r.wav", rate=8_000))


def test_read_manifest(tmp_path):
    write_audio(tmp_path / "wav" / "a.wav")
    write_audio(tmp_path / "b.flac", seconds=0.02)
    manifest = tmp_path / "test.jsonl"
    lines = [
        {"audio": "wav/a.wav", "text": "THE SALE", "speaker": "011"},
        {"audio": str(tmp_path / "b.flac"), "text": "OK"},
    ]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    split = read_manifest(manifest)
    assert [e.target for e in split.examples] == ["the sale", "ok"]
    assert split.examples[0].meta["speaker"] == "011" and split.examples[0].meta["line"] == 1
    assert split.examples[1].inputs.shape == (320,)


def test_manifest_bad_lines_name_the_line(tmp_path):
    write_audio(tmp_path / "a.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVE")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"audio": "a.wav", "text": "yes"}\n{"audio": "a.wav"}\nnot json\n'
        '{"audio": "broken.wav", "text": "x"}\n'
    )
    with pytest.raises(CorpusError, match="missing key\\(s\\) 'text'") as info:
        read_manifest(manifest)
    assert str(info.value).startswith(f"{manifest}:2:")
    split = read_manifest(manifest, skip_bad=True)
    assert len(split.examples) == 1 and split.skipped == 3
    assert split.skipped_reasons[1].startswith(f"{manifest}:3: not valid JSON")
    assert (
        split.skipped_reasons[2].startswith(f"{tmp_path / 'broken.wav'}:")
        and "m.jsonl line 4" in split.skipped_reasons[2]
    )
    with pytest.raises(CorpusError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_truncated_audio_is_refused_by_every_reader(tmp_path, suffix):
    """libsndfile decodes a WAV cut in half without complaint; the readers must not."""
    from multimodel.corpora.speech import read_audio_file

    path = write_audio(tmp_path / f"whole.{suffix}", seconds=1.0)
    assert read_audio_file(path)[0].shape == (16_000,)
    data = path.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    for read in (read_audio_file, lambda p: read_librispeech_audio(p)):
        with pytest.raises(CorpusError, match="truncated|corrupt or unreadable") as info:
            read(cut)
        assert str(info.value).startswith(f"{cut}:")
    transcript = write_librispeech(tmp_path / "libri")
    (transcript.parent / "19-198-0001.flac").unlink()
    write_audio(transcript.parent / "19-198-0001.flac", seconds=1.0)
    data = (transcript.parent / "19-198-0001.flac").read_bytes()
    (transcript.parent / "19-198-0001.flac").write_bytes(data[: len(data) // 2])
    split = read_librispeech(tmp_path / "libri", skip_bad=True)
    assert len(split.examples) == 1 and split.skipped == 1


def read_librispeech_audio(path):
    from multimodel.corpora.librispeech import read_audio

    return read_audio(path)
