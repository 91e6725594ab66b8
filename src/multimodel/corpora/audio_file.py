"""Is an audio file whole? A check the decoders do not make.

libsndfile decodes a WAV file cut short without complaint: it returns the samples that are there
and adjusts the frame count, so half a recording would be transcribed, trained on or served as
if it were the whole. A WAV (RIFF) file says how long it is twice, in its RIFF header and in its
``data`` chunk header; a file shorter than either is truncated. Other formats declare their frame
count in their header (FLAC's STREAMINFO), which :func:`missing_frames` compares with what
decoded.
"""

from __future__ import annotations

import struct
from pathlib import Path


def wav_truncation(path: Path) -> str | None:
    """Why the RIFF/WAVE file at ``path`` is cut short, or None (also for files that are not WAV)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        riff_size = struct.unpack("<I", header[4:8])[0]
        if riff_size + 8 > size:
            return f"truncated: its RIFF header declares {riff_size + 8} bytes, the file holds {size}"
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size > available:
                    return f"truncated: its data chunk declares {chunk_size} bytes, {available} are there"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    return "truncated: no data chunk"


def missing_frames(declared: int, decoded: int) -> str | None:
    """Why a decoded file is incomplete (fewer frames than its header declares), or None."""
    if 0 < decoded < declared:
        return f"truncated: its header declares {declared} frames, {decoded} decode"
    return None
