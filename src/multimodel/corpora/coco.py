"""MS-COCO captions: the image-captioning corpus of MultiModel section 4.

Layout (as extracted from the official archives)::

    root/annotations/captions_train2014.json   (or captions_val2014.json, captions_train2017.json, ...)
    root/train2014/COCO_train2014_000000000009.jpg   (2017: root/train2017/000000000009.jpg)

The JSON holds ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``id``,
``caption``). Choices:

* Images are read in increasing image id; captions of an image in increasing annotation id.
* A caption's whitespace is normalised (COCO captions carry stray newlines and double spaces);
  case and punctuation are kept.
* By default one example per image: ``target`` = its first caption, ``references`` = all of
  its captions (for BLEU against several references). With ``per_caption=True``, one example
  per caption (the training view), all sharing the image array and the references.
* An image with no caption, or a caption of an unknown image, is a bad record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multimodel.corpora.errors import BadRecords, CorpusError, require_exists
from multimodel.corpora.image_folder import load_image
from multimodel.data.example import Example, LazyExamples, Split

COCO_YEARS = (2017, 2014)
"""Release years looked for, in order, when ``year`` is not given."""


def coco_annotation_file(root: str | Path, split: str, year: int | None = None) -> Path:
    """The captions JSON of ``split`` (``"train"`` or ``"val"``) under ``root/annotations``."""
    root = require_exists(root, "COCO folder", "pass the folder holding annotations/ and the image folders")
    years = (year,) if year is not None else COCO_YEARS
    for candidate in years:
        path = root / "annotations" / f"captions_{split}{candidate}.json"
        if path.exists():
            return path
    raise CorpusError(
        root / "annotations" / f"captions_{split}{years[0]}.json",
        "COCO captions file not found",
        f"extract annotations_trainval{years[0]}.zip into {root}",
    )


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise CorpusError(
            path, f"invalid JSON ({error.msg})", "re-download the annotation file", line=error.lineno
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise CorpusError(
            path, f"cannot read the file ({error})", "re-download the annotation file"
        ) from error
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise CorpusError(
            path,
            "not a COCO captions file (needs lists 'images' and 'annotations')",
            "pass a captions_<split><year>.json file",
        )
    return data


def read_coco_captions(
    root: str | Path,
    split: str = "train",
    year: int | None = None,
    size: int | tuple[int, int] = 224,
    limit: int = 0,
    skip_bad: bool = False,
    per_caption: bool = False,
    image_dir: str | Path | None = None,
    lazy: bool = False,
) -> Split:
    """Read COCO captions into a :class:`Split` (see the module docstring for the choices).

    Args:
        root: COCO folder holding ``annotations/`` and ``<split><year>/``.
        split: ``"train"`` or ``"val"`` (the official splits).
        year: 2014 or 2017; None = whichever is present (2017 first).
        size: image size ``S`` or ``(H, W)`` (see :func:`~multimodel.corpora.image_folder.load_image`).
        limit: read at most this many images (0 = all).
        skip_bad: skip (and count) bad records and missing or corrupt images instead of raising.
        per_caption: one example per caption instead of one per image.
        image_dir: folder of the images, if not ``root/<split><year>``.
        lazy: check that each image file exists now and decode it when its example is read
            (:class:`~multimodel.data.example.LazyExamples`); a corrupt image then raises when
            read, whatever ``skip_bad`` says.

    Returns:
        Examples with ``inputs`` float32 ``(3, H, W)``, ``target`` = one caption,
        ``references`` = all captions of the image, ``meta = {"image_id", "path"}``.
    """
    annotation_file = coco_annotation_file(root, split, year)
    release = annotation_file.stem.removeprefix("captions_")  # e.g. "train2014"
    images_root = Path(image_dir) if image_dir is not None else Path(root) / release
    require_exists(images_root, "COCO image folder", f"extract {release}.zip into {Path(root)}")
    data = _load_json(annotation_file)
    bad = BadRecords(skip_bad)

    file_names: dict[int, str] = {}
    for position, image in enumerate(data["images"]):
        try:
            file_names[int(image["id"])] = str(image["file_name"])
        except (KeyError, TypeError, ValueError) as error:
            bad.skip(
                CorpusError(
                    annotation_file,
                    f"images[{position}] lacks a valid 'id'/'file_name' ({error!r})",
                    "repair the entry or set data.skip_bad=true",
                )
            )
    captions: dict[int, list[tuple[int, str]]] = {}
    annotation_ids: dict[int, int] = {}  # annotation id -> its first position
    for position, annotation in enumerate(data["annotations"]):
        try:
            image_id, caption = int(annotation["image_id"]), " ".join(str(annotation["caption"]).split())
            order = int(annotation.get("id", position))
            if image_id not in file_names:
                raise KeyError(f"unknown image_id {image_id}")
            if not caption:
                raise ValueError("empty caption")
            if "id" in annotation and order in annotation_ids:
                raise ValueError(f"duplicate annotation id {order} (first at annotations[{annotation_ids[order]}])")
            annotation_ids.setdefault(order, position)
        except (KeyError, TypeError, ValueError) as error:
            bad.skip(
                CorpusError(
                    annotation_file,
                    f"annotations[{position}] is not a usable caption ({error})",
                    "repair the entry or set data.skip_bad=true",
                )
            )
            continue
        captions.setdefault(image_id, []).append((order, caption))

    examples: list[Example] = []
    images_read = 0
    for image_id in sorted(file_names):
        if limit and images_read >= limit:
            break
        path = images_root / file_names[image_id]
        try:
            if image_id not in captions:
                raise CorpusError(
                    annotation_file,
                    f"image {image_id} ({file_names[image_id]}) has no caption",
                    "use the captions file of the same split or set data.skip_bad=true",
                )
            if not path.exists():
                raise CorpusError(
                    path,
                    f"image listed in {annotation_file.name} not found",
                    f"extract {release}.zip into {images_root.parent} or set data.skip_bad=true",
                )
            pixels = None if lazy else load_image(path, size)
        except CorpusError as error:
            bad.skip(error)
            continue
        images_read += 1
        references = [caption for _, caption in sorted(captions[image_id])]
        meta = {"image_id": image_id, "path": str(path)}
        for caption in references if per_caption else references[:1]:
            examples.append(Example(inputs=pixels, target=caption, references=references, meta=meta))
    if lazy:  # images have no bucketing length
        return bad.split(LazyExamples.deferred(examples, lambda ex: load_image(ex.meta["path"], size),
                                               lengths=[0] * len(examples)), source=annotation_file)
    return bad.split(examples, source=annotation_file)
