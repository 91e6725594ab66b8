"""ImageNet-style class folders: the image-classification corpora of MultiModel section 4.

Layout: ``root/<class_name>/<image>.{jpg,jpeg,png,...}``, as in the ImageNet ILSVRC-2012 train
folder after extraction (``root/n01440764/n01440764_10026.JPEG``) and torchvision's
``ImageFolder``. Class index = position of the class folder's name in sorted order, so the
same folders always give the same indices.

Images are decoded with Pillow, converted to RGB (grey and palette images get three equal
channels; alpha is dropped), their shorter side resized to the target size with bilinear
filtering and then centre-cropped to (H, W), so the aspect ratio is kept. Pixels are float32 in
[0, 1], channels first: ``(3, H, W)``.

The reader decodes every image when called, so it suits folders that fit in memory; with
``lazy=True`` it lists the files and decodes each image when its example is read, for folders
that do not (ImageNet: 1.28M images, 190 GB as float32 at 224 x 224).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multimodel.corpora.errors import BadRecords, CorpusError, require_exists
from multimodel.data.example import Example, LazyExamples, Split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp")
"""File suffixes (compared lower-cased) read as images; other files in class folders are ignored."""


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return int(height), int(width)


def load_image(path: str | Path, size: int | tuple[int, int]) -> np.ndarray:
    """Decode one image file into float32 ``(3, H, W)`` in [0, 1] (see the module docstring).

    Args:
        path: image file.
        size: ``S`` for S x S, or ``(H, W)``.

    Raises:
        CorpusError: the file is missing, truncated, or not an image Pillow can decode.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("reading images needs Pillow: pip install Pillow") from error

    path = Path(path)
    height, width = _size_hw(size)
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and names itself
            rgb = image.convert("RGB")
    except FileNotFoundError as error:
        raise CorpusError(
            path, "image file not found", "restore the file or remove it from the corpus"
        ) from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CorpusError(
            path,
            f"corrupt or unreadable image ({error})",
            "re-download the file, delete it, or set data.skip_bad=true",
        ) from error
    return fit_image(rgb, (height, width))


def fit_image(image: Any, size: int | tuple[int, int]) -> np.ndarray:
    """A decoded Pillow image -> float32 ``(3, H, W)`` in [0, 1]: converted to RGB, shorter side
    resized to the target, centre-cropped (see the module docstring). Every image reader ends here."""
    from PIL import Image

    height, width = _size_hw(size)
    if getattr(image, "format", None) == "JPEG" and hasattr(image, "draft"):
        # Decode at the smallest 1/2, 1/4 or 1/8 scale still at least the resized size: a JPEG
        # decodes its DCT blocks at that scale directly, several times faster than in full.
        scale = max(height / image.height, width / image.width)
        image.draft("RGB", (max(width, round(image.width * scale)), max(height, round(image.height * scale))))
    rgb = image.convert("RGB")
    scale = max(height / rgb.height, width / rgb.width)  # shorter side (relative to target) fits
    resized_w, resized_h = max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale))
    rgb = rgb.resize((resized_w, resized_h), Image.Resampling.BILINEAR)
    left, top = (resized_w - width) // 2, (resized_h - height) // 2
    rgb = rgb.crop((left, top, left + width, top + height))
    pixels = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3, H, W)


def class_names(root: str | Path) -> list[str]:
    """Sorted names of the class folders under ``root`` (hidden folders ignored)."""
    root = require_exists(root, "image folder", "pass the folder holding one sub-folder per class")
    if not root.is_dir():
        raise CorpusError(root, "is not a directory", "pass the folder holding one sub-folder per class")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise CorpusError(root, "has no class sub-folders", "lay images out as root/<class_name>/<image>.jpg")
    return names


def read_image_folder(
    root: str | Path,
    size: int | tuple[int, int] = 224,
    limit: int = 0,
    skip_bad: bool = False,
    lazy: bool = False,
    classes: Sequence[str] | None = None,
) -> Split:
    """Read ``root/<class>/<image>`` into a :class:`Split` of classification examples.

    Args:
        root: the folder holding one sub-folder per class.
        size: output size, ``S`` or ``(H, W)``.
        limit: keep at most this many images (0 = all), taken in sorted (class, file) order.
        skip_bad: skip (and count) corrupt images instead of raising.
        lazy: list the files now and decode each image when its example is read
            (:class:`~multimodel.data.example.LazyExamples`); a corrupt image then raises when
            read, whatever ``skip_bad`` says.
        classes: the class names in index order (e.g. those of the training folder, for a
            validation folder missing some classes); None = the sorted class folders of ``root``.
            A class folder not among them is an error.

    Returns:
        Examples with ``inputs`` float32 ``(3, H, W)`` in [0, 1], ``target`` = class index,
        ``references = [target]``, ``meta = {"path": str, "class_name": str}``.
    """
    root = Path(root)
    names = class_names(root)
    if classes is not None:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise CorpusError(root / unknown[0], f"class folder {unknown[0]!r} is not one of the {len(classes)}"
                              " classes", "remove it, or name it in the task's labels")
    index_of = {name: i for i, name in enumerate(classes if classes is not None else names)}
    bad = BadRecords(skip_bad)
    examples: list[Example] = []
    for name in names:
        if limit and len(examples) >= limit:
            break
        index = index_of[name]
        files = sorted(
            p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        for path in files:
            if limit and len(examples) >= limit:
                break
            try:
                pixels = None if lazy else load_image(path, size)
            except CorpusError as error:
                bad.skip(error)
                continue
            examples.append(
                Example(
                    inputs=pixels,
                    target=index,
                    references=[index],
                    meta={"path": str(path), "class_name": name},
                )
            )
    if not examples and not bad.count:
        raise CorpusError(
            root,
            f"has no image files (looked for {', '.join(IMAGE_EXTENSIONS)})",
            "put images in root/<class_name>/",
        )
    if lazy:  # images have no bucketing length
        return bad.split(LazyExamples.deferred(examples, lambda ex: load_image(ex.meta["path"], size),
                                               lengths=[0] * len(examples)), source=root)
    return bad.split(examples, source=root)
