"""download(): resume with HTTP Range, SHA-256 verification, atomic publish, clear errors.

Every test talks to a local http.server on 127.0.0.1 run in a thread; nothing touches the
internet.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multimodel.corpora import download as dl
from multimodel.corpora.download import CORPORA, DownloadError, download, sha256_of

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"
PAYLOAD = bytes(range(256)) * 1000  # 256,000 bytes
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /data.bin (with Range), /norange.bin (ignores Range), /cut.bin
    (advertises the full length, sends half, hangs up); anything else is 404."""

    ranges: list[str | None] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        Handler.ranges.append(self.headers.get("Range"))
        if self.path not in ("/data.bin", "/norange.bin", "/cut.bin"):
            self.send_error(404, "Not Found")
            return
        start = 0
        requested = self.headers.get("Range")
        if requested and self.path == "/data.bin":
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path == "/cut.bin" else body)
        if self.path == "/cut.bin":
            self.close_connection = True


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    Handler.ranges.clear()


def test_fresh_download_verifies_and_publishes(server, tmp_path):
    dest = tmp_path / "sub" / "data.bin"
    seen = []
    assert (
        download(f"{server}/data.bin", dest, PAYLOAD_SHA, progress=lambda n, total: seen.append((n, total)))
        == dest
    )
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "sub" / "data.bin.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert download(f"{server}/data.bin", dest, PAYLOAD_SHA) == dest  # present and verified:
    assert Handler.ranges == [None]  # not fetched again


def test_resume_after_partial_file_uses_range(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:100_000])
    download(f"{server}/data.bin", dest, PAYLOAD_SHA)
    assert Handler.ranges == ["bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_transfer_keeps_part_then_resumes(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="rerun to resume") as info:
        download(f"{server}/cut.bin", dest, PAYLOAD_SHA)
    assert str(info.value).startswith(f"{dest}:") and "128000 of 256000 bytes" in str(info.value)
    part = tmp_path / "data.bin.part"
    assert part.read_bytes() == PAYLOAD[:128_000] and not dest.exists()
    download(f"{server}/data.bin", dest, PAYLOAD_SHA)  # the rerun asks only for the rest
    assert Handler.ranges[-1] == "bytes=128000-" and dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    dest = tmp_path / "norange.bin"
    (tmp_path / "norange.bin.part").write_bytes(b"garbage" * 10)
    download(f"{server}/norange.bin", dest, PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_answered_416_is_verified(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download(f"{server}/data.bin", dest, PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_part_and_never_publishes(server, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        download(f"{server}/data.bin", dest, wrong)
    assert PAYLOAD_SHA in str(info.value) and str(info.value).startswith(f"{dest}:")
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()
    # a corrupt partial file resumes into a bad file: caught the same way
    (tmp_path / "data.bin.part").write_bytes(b"x" * 1000)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{server}/data.bin", dest, PAYLOAD_SHA)
    download(f"{server}/data.bin", dest, PAYLOAD_SHA)  # the rerun starts afresh and succeeds
    assert dest.read_bytes() == PAYLOAD


def test_existing_dest_with_wrong_checksum_is_not_overwritten(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"mine")
    with pytest.raises(DownloadError, match="file exists"):
        download(f"{server}/data.bin", dest, PAYLOAD_SHA)
    assert dest.read_bytes() == b"mine"


def test_http_and_network_errors_are_clear(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(f"{server}/missing.bin", tmp_path / "m.bin", PAYLOAD_SHA)
    assert f"{server}/missing.bin" in str(info.value)
    with pytest.raises(DownloadError, match="cannot reach"):
        download("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", PAYLOAD_SHA, timeout=5)


def test_download_corpus_layout_and_unknown_name(server, tmp_path, monkeypatch):
    fake = dl.RemoteCorpus(
        "toy", "a toy", "public domain", (dl.RemoteFile(f"{server}/data.bin", "a.bin", PAYLOAD_SHA),)
    )
    monkeypatch.setitem(CORPORA, "toy", fake)
    lines = []
    assert dl.download_corpus("toy", tmp_path, log_fn=lines.append) == [tmp_path / "toy" / "a.bin"]
    assert sha256_of(tmp_path / "toy" / "a.bin") == PAYLOAD_SHA and "public domain" in lines[0]
    with pytest.raises(ValueError, match="choose one of multi30k"):
        dl.download_corpus("imagenet", tmp_path)


def test_catalogue_entries_are_well_formed():
    for corpus in CORPORA.values():
        assert corpus.files and corpus.terms
        for remote in corpus.files:
            assert remote.url.startswith("https://") and len(remote.sha256) == 64
            int(remote.sha256, 16)
    assert {f.filename for f in CORPORA["multi30k"].files} >= {
        "train.en.gz",
        "val.de.gz",
        "test_2016_flickr.fr.gz",
    }


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real corpora not found at {SHARED}")
def test_catalogue_checksums_match_the_shared_copies():
    for name in ("multi30k", "ptb_sample"):
        for remote in CORPORA[name].files:
            assert sha256_of(SHARED / name / remote.filename) == remote.sha256, remote.filename
