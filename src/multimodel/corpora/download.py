"""Fetching the public corpora whose terms allow it: the backend of ``multimodel data download NAME``.

Only corpora that their publishers distribute openly for research are listed in
:data:`CORPORA`; each file has a pinned SHA-256, so a changed or tampered upstream file is
refused instead of trained on. Corpora behind a licence agreement (ImageNet, COCO images at
scale, WSJ, the full Penn Treebank) are not downloaded: their readers take any local path.

:func:`download` is safe to interrupt and rerun:

* bytes go to ``<dest>.part``; a rerun asks the server for the rest with an HTTP ``Range``
  header and appends (a server that ignores ``Range`` answers 200: the file is restarted);
* when the transfer ends, the whole file is checked against its SHA-256; a mismatch deletes the
  partial file (it cannot be resumed into a good one) and raises;
* only a verified file is moved to ``dest``, with an atomic rename, so ``dest`` is either
  absent or complete and verified.

Layout written by :func:`download_corpus`: ``<data_dir>/<name>/<file>``, the same as
``../shared/corpora`` (e.g. ``data/multi30k/train.en.gz``), so the readers take either.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from multimodel.corpora.errors import CorpusError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 16


class DownloadError(CorpusError):
    """A download that failed or did not verify; the message names the file and the URL."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a downloadable corpus."""

    url: str
    """Where to fetch it (HTTPS)."""
    filename: str
    """Name under ``<data_dir>/<corpus>/``."""
    sha256: str
    """Hex SHA-256 of the exact bytes expected."""


@dataclass(frozen=True)
class RemoteCorpus:
    """A corpus that may be downloaded, with where it comes from and on what terms."""

    name: str
    description: str
    terms: str
    """The publisher's terms, printed before downloading."""
    files: tuple[RemoteFile, ...]


_MULTI30K_RAW = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
_MULTI30K_SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}

CORPORA: dict[str, RemoteCorpus] = {
    "multi30k": RemoteCorpus(
        name="multi30k",
        description="Multi30k task 1 raw text, en/de/fr: train 29,000, val 1,014, test 1,000 sentences",
        terms="research use; see github.com/multi30k/dataset (Elliott et al. 2016; Flickr30k captions)",
        files=tuple(RemoteFile(_MULTI30K_RAW + name, name, sha) for name, sha in _MULTI30K_SHA256.items()),
    ),
    "ptb_sample": RemoteCorpus(
        name="ptb_sample",
        description="Penn Treebank WSJ 10% sample (about 3,900 parsed sentences), as distributed with NLTK",
        terms="(C) LDC 1995; non-commercial use, made available by NLTK for illustrating NLP tools",
        files=(
            RemoteFile(
                "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/treebank.zip",
                "treebank.zip",
                "9da92d76c3666cfb6cddeaed0f7e86b344cce0f0928a286d439e555f19c37399",
            ),
        ),
    ),
}
"""The downloadable corpora, by the name ``multimodel data download NAME`` takes."""


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_and_publish(part: Path, dest: Path, sha256: str, url: str) -> Path:
    actual = sha256_of(part)
    if actual != sha256.lower():
        part.unlink()
        raise DownloadError(
            dest,
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}",
            "the partial file was deleted; rerun to fetch it again, and if it keeps failing "
            "the upstream file changed: report it",
        )
    with open(part, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(part, dest)  # atomic: dest is never a partial file
    return dest


def download(
    url: str,
    dest: str | Path,
    sha256: str,
    resume: bool = True,
    *,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Fetch ``url`` into ``dest``, resuming a partial download and verifying its SHA-256.

    Args:
        url: http(s) URL of the file.
        dest: final path; the download goes to ``<dest>.part`` until verified.
        sha256: expected hex SHA-256 of the complete file.
        resume: continue an existing ``<dest>.part`` with an HTTP Range request (False: restart).
        timeout: seconds to wait on the connection before giving up.
        progress: called as ``progress(bytes_so_far, total_bytes_or_None)`` after each chunk.

    Returns:
        ``dest`` (already present and verified, or freshly downloaded and verified).

    Raises:
        DownloadError: HTTP or network failure, a truncated transfer (the partial file is kept
            for resuming), a checksum mismatch, or an existing ``dest`` with the wrong checksum.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        if sha256_of(dest) == sha256.lower():
            return dest
        raise DownloadError(
            dest,
            "file exists but its sha256 is not the expected one",
            "delete it (or move it away) and download again",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not resume and part.exists():
        part.unlink()
    offset = part.stat().st_size if part.exists() else 0

    request = urllib.request.Request(url, headers={"User-Agent": "multimodel-data-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to fetch: the partial file may be complete
            return _verify_and_publish(part, dest, sha256, url)
        raise DownloadError(
            dest,
            f"HTTP {error.code} {error.reason} fetching {url}",
            "check the URL, or fetch the file by hand and put it at this path",
        ) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            dest,
            f"cannot reach {url} ({reason})",
            "check the network (and proxy), or fetch the file by hand and put it at this path",
        ) from error

    with response:
        if offset and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                raise DownloadError(
                    dest,
                    f"server answered range {content_range!r} to a request from byte {offset}",
                    "rerun with resume=False",
                )
            mode = "ab"
        else:  # 200: a fresh download, or a server that ignores Range
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received = offset
        try:
            with open(part, mode) as handle:
                for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                    handle.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, total)
        except (OSError, http.client.HTTPException) as error:  # connection dropped mid-transfer
            raise DownloadError(
                dest,
                f"transfer of {url} interrupted after {received} bytes ({error})",
                "rerun to resume from where it stopped",
            ) from error
    if total is not None and received < total:
        raise DownloadError(
            dest,
            f"transfer of {url} ended after {received} of {total} bytes",
            "rerun to resume from where it stopped",
        )
    return _verify_and_publish(part, dest, sha256, url)


def download_corpus(
    name: str, data_dir: str | Path, resume: bool = True, *, log_fn: Callable[[str], None] = print
) -> list[Path]:
    """Download every file of corpus ``name`` into ``<data_dir>/<name>/``; returns their paths.

    Files already present and verified are not fetched again.

    Raises:
        ValueError: ``name`` is not in :data:`CORPORA` (the message lists the names).
        DownloadError: a file could not be fetched or verified (see :func:`download`).
    """
    if name not in CORPORA:
        raise ValueError(
            f"no downloadable corpus {name!r}; choose one of {', '.join(sorted(CORPORA))} "
            "(other corpora need a licence: fetch them yourself and pass their path)"
        )
    corpus = CORPORA[name]
    folder = Path(data_dir) / corpus.name
    log_fn(f"{corpus.name}: {corpus.description}\nterms: {corpus.terms}")
    paths = []
    for remote in corpus.files:
        dest = folder / remote.filename
        log_fn(f"  {remote.url} -> {dest}")
        paths.append(download(remote.url, dest, remote.sha256, resume=resume))
    return paths
